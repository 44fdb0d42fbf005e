"""Batch inference with Ray Data over the feature Parquet: the detector is fitted and the test split scored
by a pool of model actors (GPU actors when training uses GPUs), with per-type fitting spread over the cluster
by `groupby`. The driver only receives the fitted detector and one row of scores per test clip."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from rcmae.data.feature_table import META_COLUMNS
from rcmae.detect.apply import fit_machine
from rcmae.detect.detector import Detector
from rcmae.detect.detector_files import load_detector
from rcmae.detect.encode import TableEncoder
from rcmae.distributed.runtime import inference_pool, require_feasible, scaling_plan
from rcmae.errors import DataError
from rcmae.models.checkpoint import load_checkpoint, read_meta
from rcmae.sections import ScaleConfig, ScoreConfig
from rcmae.stores import on_driver, published

ENCODE_BATCH = 64


def usable_rows(features_dir: str | Path, columns: list[str], split: str):
    """A Ray dataset of the feature Parquet's usable rows of `split`, `columns` only."""
    import ray.data
    from ray.data.expressions import col

    # small read tasks: on a 2-core node the train workers already hold most of the CPUs
    dataset = ray.data.read_parquet(on_driver(features_dir), num_cpus=0.25)
    dataset = dataset.select_columns(list(dict.fromkeys(columns + ["error", "split"])))
    return dataset.filter(expr=col("error").is_null() & (col("split") == split)).select_columns(columns)


def _encoded(dataset, model_dir: str | Path, scale: ScaleConfig, with_scores: bool):
    import ray
    import ray.data

    # the model folder read once here: a user error in it (damaged weights, an older detector) is raised as
    # itself, where an actor's failing constructor would reach the driver only as Ray's ActorDiedError text
    load_checkpoint(model_dir)
    if with_scores:
        load_detector(model_dir)
    resources = ray.cluster_resources()
    plan = scaling_plan(scale, resources)
    require_feasible("batch inference", plan.resources_per_worker)
    pool = inference_pool(plan, resources)
    return dataset.map_batches(
        TableEncoder, fn_constructor_kwargs=dict(model_dir=published(Path(model_dir).resolve()),
                                                 with_scores=with_scores, keep_encoded=not with_scores),
        batch_size=ENCODE_BATCH, batch_format="pyarrow", num_cpus=pool.num_cpus, num_gpus=pool.num_gpus,
        compute=pool.strategy())


def _fit_group(group: pa.Table, classes: list[str], score: ScoreConfig, grid: tuple[int, int]) -> pa.Table:
    return pa.table({"detector": [fit_machine(group, classes, score, grid).to_bytes()]})


def fit_detector_ray(model_dir: str | Path, features_dir: str | Path, classes: list[str], score: ScoreConfig,
                     scale: ScaleConfig) -> Detector:
    """The detector of a fine-tuned model, fitted on the train split: encode with actors, fit per machine type."""
    encoded = _encoded(usable_rows(features_dir, META_COLUMNS + ["features"], "train"), model_dir, scale, False)
    grid = read_meta(model_dir).features.grid
    # a group per machine type (few-shot IDs borrow their type's covariance); one partition per type at most:
    # Ray's default (200) costs minutes of task overhead on small clusters
    types = len({key.split("/", 1)[0] for key in classes})
    fitted = encoded.groupby("machine_type", num_partitions=max(1, min(types, 64))).map_groups(
        _fit_group, fn_kwargs=dict(classes=classes, score=score, grid=grid),
        batch_format="pyarrow")
    return Detector.merge([Detector.from_bytes(row["detector"]) for row in fitted.take_all()])


def score_features_ray(model_dir: str | Path, features_dir: str | Path, scale: ScaleConfig) -> pa.Table:
    """Metadata and `score_<method>` of every usable test clip in the feature Parquet."""
    import ray

    scored = _encoded(usable_rows(features_dir, META_COLUMNS + ["features"], "test"), model_dir, scale, True)
    parts = ray.get(scored.to_arrow_refs())
    if not parts:
        raise DataError(f"{features_dir}: no usable test clips to score")
    return pa.concat_tables(parts, promote_options="default")
