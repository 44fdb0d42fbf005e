"""Where a run's numbers go besides its folder: TensorBoard event files (always) and an MLflow run (`rcmae run
--tracking mlflow --tracking-uri URI`).

Each training stage writes `<stage folder>/tensorboard/`: every epoch's loss terms under the paper's equation
numbers, the learning rate, throughput and the collapse monitor, one step per epoch (a resumed stage goes on at
its next epoch). The evaluation writes `evaluation/tensorboard/`: the final AUC and pAUC, mean and per machine
type (step 0). Under Ray Train only rank 0 writes, into the stage folder (on several nodes, storage every node
sees, as for the checkpoints).

With MLflow, `rcmae run` opens one MLflow run for the whole job (experiment `rcmae`, or MLFLOW_EXPERIMENT_NAME;
the server --tracking-uri or MLFLOW_TRACKING_URI names; the run named after the run folder):
the configuration as params, every epoch of both stages as metrics (the same keys and steps as TensorBoard's),
the final AUC/pAUC, and report.md, metrics.json and the model folder as artifacts; the run ends FINISHED, or
FAILED when the job fails."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from rcmae.errors import RcmaeError

FOLDER = "tensorboard"
# a term's tag: the stage, the term, and the paper's equation for it where it has one
EQUATIONS = {("pretrain", "loss"): "eq8", ("pretrain", "contrastive"): "eq3", ("pretrain", "vcr"): "eq7",
             ("pretrain", "mae"): "eq2", ("finetune", "loss"): "eq10", ("finetune", "supcon"): "eq9"}
NOT_PLOTTED = ("epoch", "seconds")


def tag(stage: str, name: str) -> str:
    equation = EQUATIONS.get((stage, name))
    return f"{stage}/{name}_{equation}" if equation else f"{stage}/{name}"


@dataclass(frozen=True)
class MlflowTarget:
    """The MLflow run a job logs to (picklable: it travels to the Ray Train workers)."""

    uri: str
    run_id: str

    def client(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.uri)


_active: MlflowTarget | None = None


def active_mlflow() -> MlflowTarget | None:
    """The MLflow run `mlflow_run` opened in this process, if any."""
    return _active


def flat_params(config: dict, prefix: str = "") -> dict[str, str]:
    """A config as MLflow params: dotted keys, values as text."""
    flat = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flat_params(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def require_mlflow() -> None:
    try:
        import mlflow  # noqa: F401
    except ImportError:
        raise RcmaeError("--tracking mlflow needs MLflow: pip install 'rcmae[mlflow]' (or mlflow)") from None


def experiment_name(default: str = "rcmae") -> str:
    """MLflow's own MLFLOW_EXPERIMENT_NAME when set, else `default`."""
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or default


@contextmanager
def mlflow_run(uri: str, name: str, params: dict[str, str]) -> Iterator[MlflowTarget]:
    """An MLflow run for the block (in `experiment_name()`, made when missing), active in this process."""
    global _active
    require_mlflow()
    from mlflow.entities import Param

    client = MlflowTarget(uri, "").client()
    experiment = client.get_experiment_by_name(experiment_name())
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(experiment_name())
    run = client.create_run(experiment_id, run_name=name)
    target = MlflowTarget(uri, run.info.run_id)
    items = [Param(key, value[:6000]) for key, value in params.items()]
    for start in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
        client.log_batch(target.run_id, params=items[start:start + 100])
    _active, status = target, "FAILED"
    try:
        yield target
        status = "FINISHED"
    finally:
        _active = None
        with contextlib.redirect_stdout(sys.stderr):  # MLflow prints where to view the run: not a result
            client.set_terminated(target.run_id, status)


class Scalars:
    """Where one folder's scalars go: TensorBoard event files (made when first written to) and, when given, an
    MLflow run. For no folder (a Ray Train worker of rank > 0) nothing is written."""

    def __init__(self, folder: str | Path | None, mlflow: MlflowTarget | None = None):
        self.folder = Path(folder) if folder is not None else None
        self.mlflow = mlflow if folder is not None else None
        self._writer = self._client = None

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.folder is None:
            return
        if self.mlflow is not None:
            from mlflow.entities import Metric

            now = int(time.time() * 1000)
            self._client = self._client or self.mlflow.client()
            self._client.log_batch(self.mlflow.run_id, metrics=[
                Metric(key, float(value), now, step) for key, value in values.items()])
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.folder))
        for name, value in values.items():
            self._writer.add_scalar(name, value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def write_epoch(files: Scalars, metrics: dict) -> None:
    """One epoch's metrics (`loops.run_stage`'s: stage, epoch, each term, lr, samples_per_second, ...)."""
    stage = metrics["stage"]
    files.scalars({tag(stage, name): float(value) for name, value in metrics.items()
                   if isinstance(value, (int, float)) and name not in NOT_PLOTTED}, step=metrics["epoch"])


def write_final_metrics(folder: str | Path, metrics) -> None:
    """The final AUC/pAUC of an evaluation (`rcmae.evaluate.metrics.Metrics`): mean and per machine type."""
    values = {f"evaluation/{key}/mean": value for key, value in metrics.mean.items() if value is not None}
    for machine_type, per_type in metrics.per_type.items():
        values.update({f"evaluation/{key}/{machine_type}": value for key, value in per_type.items()
                       if value is not None})
    files = Scalars(Path(folder) / FOLDER, active_mlflow())
    try:
        files.scalars(values, step=0)
    finally:
        files.close()


def log_artifacts(target: MlflowTarget, paths: list[Path]) -> None:
    """Files and folders into the MLflow run's artifacts (a folder under its own name)."""
    client = target.client()
    for path in paths:
        if path.is_dir():
            client.log_artifacts(target.run_id, str(path), artifact_path=path.name)
        elif path.exists():
            client.log_artifact(target.run_id, str(path))
