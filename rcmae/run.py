"""The main job: data -> index -> augment (Ray Data) -> stage 1 -> stage 2 (Ray Train) -> evaluate ->
the floor and the AE baseline -> report.md. With no data it synthesises the toy factory first. Every stage writes into
one run folder and a re-run skips the stages already finished there."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rcmae import tracking
from rcmae.config import Config
from rcmae.data.audio import cropping_note, typical_seconds
from rcmae.data.layout import index_clips
from rcmae.data.run_folder import staged, sync
from rcmae.data.synth import ToyData, toy_data
from rcmae.evaluate.metrics import METRICS_FILE
from rcmae.registry import REFERENCES
from rcmae.stores import is_uri, shared

log = logging.getLogger(__name__)

LONG_CLIP_SECONDS = 5.0  # clips this long lose most of themselves to tiny's 2 s crop


def preset_for_data(data: str | Path) -> str:
    """The preset `rcmae run --data` uses when none is named: `cpu` for clips of 5 s or more (DCASE's 10 s clips
    kept whole), else `tiny`."""
    seconds = typical_seconds(index_clips(data, lenient=True).table["path"].to_pylist())
    if seconds is not None and seconds >= LONG_CLIP_SECONDS:
        log.info(f"run: the clips last ~{seconds:.1f} s: using --preset cpu, which keeps 10 s whole (tiny crops to "
                 f"2 s; --preset chooses)")
        return "cpu"
    return "tiny"


@dataclass(frozen=True)
class RunResult:
    """What the main job reports (run.json): report.md's path, the mean AUC/pAUC of the model's score and of each
    reference it ran, and each step's seconds."""

    report: str
    mean: dict[str, float | None]
    reference_means: dict[str, dict[str, float | None]]  # each reference run (rcmae.registry.REFERENCES)
    timings: dict[str, float]


def run_all(config: Config, out: str | Path, data: str | Path | None = None, toy: ToyData = ToyData(),
            baseline: bool = True, force: bool = False, mlflow_uri: str | None = None,
            register: str | None = None) -> RunResult:
    """The whole job into `out` (a folder, or a store URI: the job runs in its working copy, sent to the store
    after every step) on `data`, else on the `toy` factory synthesised into `out/data`; with `mlflow_uri`, also
    one MLflow run (rcmae.tracking) holding the detector as an MLflow Model, registered under `register` when
    given (rcmae.mlflow_model)."""
    if is_uri(out):
        with staged(str(out), "rcmae run") as local:
            result = run_all(config, local, data, toy, baseline, force, mlflow_uri, register)
            return dataclasses.replace(result, report=shared(result.report))
    if mlflow_uri is None:
        return _run_all(config, out, data, toy, baseline, force)
    from rcmae.mlflow_model import log_detector

    out = Path(out).resolve()
    with tracking.mlflow_run(mlflow_uri, out.name, tracking.flat_params(config.to_dict())) as target:
        result = _run_all(config, out, data, toy, baseline, force)
        tracking.log_artifacts(target, [Path(result.report), out / "evaluation" / METRICS_FILE,
                                        out / "finetune" / "model"])
        model_uri = log_detector(target, out / "finetune" / "model", register)
    log.info(f"run: logged to MLflow at {mlflow_uri} (run {target.run_id}; the detector as the MLflow Model "
             f"{model_uri}{f', registered as {register}' if register else ''})")
    return result


def pace(count: int, seconds: float, unit: str) -> str:
    """How fast a step went: per second, or below one a second (an epoch), the time each took."""
    rate = count / max(seconds, 1e-9)
    return f"{seconds / count:.1f} s each" if 0 < rate < 1 else f"{rate:.1f} {unit}/s"


def _run_all(config: Config, out: str | Path, data: str | Path | None, toy: ToyData, baseline: bool,
             force: bool) -> RunResult:
    from rcmae.baseline import run_reference
    from rcmae.distributed.augment_pipeline import run_augment
    from rcmae.distributed.runtime import ensure_ray
    from rcmae.evaluate.families import fault_families, fault_regions
    from rcmae.evaluate.results import write_scored
    from rcmae.evaluate.run_report import top_anomalies, tsne_sample, write_report
    from rcmae.evaluate.test_split import feature_test_split
    from rcmae.stages import finetune, pretrain, score_test_split

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config.to_yaml(out / "config.yaml")
    timings: dict[str, float] = {}

    def timed(name: str, started: float, count: int | None = None, unit: str = "clips") -> None:
        """One plain line per finished step: its time, and with `count`, what it did and how fast."""
        timings[name] = seconds = time.time() - started
        done = f" ({count} {unit}, {pace(count, seconds, unit)})" if count is not None else ""
        log.info(f"run: {name} finished in {timings[name]:.0f} s{done}")
        sync(out)

    started = time.time()
    if data is None:
        data = toy_data(out / "data", toy, force)
    index = index_clips(data, lenient=True)
    pq.write_table(index.table, out / "index.parquet")
    note = cropping_note(index.table["path"].to_pylist(), config.audio)
    if note:
        log.warning(f"run: warning: {note}")
    timed("data", started, len(index), "clips indexed")

    ensure_ray()
    started = time.time()
    summary = run_augment(data, out / "augment", config, force=force)
    timed("augment", started, summary["clips"])
    features = out / "augment" / "features"

    started = time.time()
    pretrain_dir = pretrain(config, features, out / "pretrain", force=force)
    timed("pretrain", started, config.pretrain.epochs, "epochs")

    started = time.time()
    finetune_dir = finetune(config, features, pretrain_dir, out / "finetune", force=force)
    timed("finetune", started, config.finetune.epochs, "epochs")

    started = time.time()
    families = fault_families(data)
    scored = score_test_split(config.scale, finetune_dir, features)
    metrics = write_scored(scored, finetune_dir, out / "evaluation", families=families)
    timed("evaluate", started, scored.num_rows, "test clips")

    references = {}
    for reference in REFERENCES.values():
        if reference.optional and not baseline:
            continue
        started = time.time()
        references[reference.name] = run_reference(
            reference.name, config.baseline, config.score, features,
            lambda machine_type: feature_test_split(features, machine_type=machine_type), out / reference.folder,
            families)
        timed(reference.folder, started, scored.num_rows, "test clips")

    tsne_rows = tsne_sample(feature_test_split(features))
    chosen = pa.array(top_anomalies(scored, metrics.method))
    map_rows = pa.concat_tables([part.filter(pc.is_in(part["path"], chosen)) for part in feature_test_split(features)])
    report = write_report(out, scored, tsne_rows, metrics, references, pretrain_dir, finetune_dir, summary,
                          timings, map_rows, fault_regions(data))
    result = RunResult(report=str(report), mean=metrics.mean,
                       reference_means={name: found.mean for name, found in references.items()}, timings=timings)
    (out / "run.json").write_text(json.dumps(dataclasses.asdict(result), indent=1))
    log.info(f"run: report at {report}")
    return result
