"""TensorBoard event files: what `tensorboard --logdir RUN_FOLDER` shows of a run.

Each training stage writes `<stage folder>/tensorboard/`: every epoch's loss terms under the paper's equation
numbers, the learning rate, throughput and the collapse monitor, one step per epoch (a resumed stage goes on at
its next epoch). The evaluation writes `evaluation/tensorboard/`: the final AUC and pAUC, mean and per machine
type (step 0). Under Ray Train only rank 0 writes, into the stage folder (on several nodes, storage every node
sees, as for the checkpoints)."""

from __future__ import annotations

from pathlib import Path

FOLDER = "tensorboard"
# a term's tag: the stage, the term, and the paper's equation for it where it has one
EQUATIONS = {("pretrain", "loss"): "eq8", ("pretrain", "contrastive"): "eq3", ("pretrain", "vcr"): "eq7",
             ("pretrain", "mae"): "eq2", ("finetune", "loss"): "eq10", ("finetune", "supcon"): "eq9"}
NOT_PLOTTED = ("epoch", "seconds")


def tag(stage: str, name: str) -> str:
    equation = EQUATIONS.get((stage, name))
    return f"{stage}/{name}_{equation}" if equation else f"{stage}/{name}"


class EventFiles:
    """A TensorBoard writer for one folder, made when first written to; for no folder (a Ray Train worker of
    rank > 0), writes nothing."""

    def __init__(self, folder: str | Path | None):
        self.folder = Path(folder) if folder is not None else None
        self._writer = None

    def scalars(self, values: dict[str, float], step: int) -> None:
        if self.folder is None:
            return
        if self._writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.folder))
        for name, value in values.items():
            self._writer.add_scalar(name, value, global_step=step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def write_epoch(files: EventFiles, metrics: dict) -> None:
    """One epoch's metrics (`loops.run_stage`'s: stage, epoch, each term, lr, samples_per_second, ...)."""
    stage = metrics["stage"]
    files.scalars({tag(stage, name): float(value) for name, value in metrics.items()
                   if isinstance(value, (int, float)) and name not in NOT_PLOTTED}, step=metrics["epoch"])


def write_final_metrics(folder: str | Path, metrics: dict) -> None:
    """The final AUC/pAUC of a metrics.json: mean and per machine type."""
    values = {f"evaluation/{key}/mean": value for key, value in metrics["mean"].items() if value is not None}
    for machine_type, per_type in metrics["per_type"].items():
        values.update({f"evaluation/{key}/{machine_type}": value for key, value in per_type.items()
                       if value is not None})
    files = EventFiles(Path(folder) / FOLDER)
    try:
        files.scalars(values, step=0)
    finally:
        files.close()
