"""The Ray Data augmentation pipeline: clip table -> read + validate -> K augmented variants -> log-mel ->
Parquet shards, through an actor pool (one GPU per actor when the cluster has GPUs, CPU actors otherwise).

Output folder:
- features/*.parquet  one row per clip: metadata, `error`, log-mel `features`, K `augmented` log-mels and
                      their `provenance` (JSON list: prompt, S, seed, t0, guidance, model, ...)
- rejects.parquet     path + reason for every clip that could not be used (bad name, bad audio, failed augment)
- summary.json        counts and the augmenter used
Re-running on the same folder processes only the clips no finished shard holds yet.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rcmae.augment.featurize import Augmentation, Featurizer, read_batch
from rcmae.config import Config, recorded_section
from rcmae.data.layout import ClipIndex, index_clips, reject_summary
from rcmae.data.run_folder import check_settings, owned
from rcmae.distributed.runtime import ensure_ray, nodes_for, pool_plan, reachable_gpus, require_feasible
from rcmae.errors import DataError, disk_full_named
from rcmae.registry import AUGMENTERS
from rcmae.sections import AugmentConfig
from rcmae.stores import Relocated, on_driver, relocated

log = logging.getLogger(__name__)

FEATURES, REJECTS, SUMMARY = "features", "rejects.parquet", "summary.json"
CONTENT_NAME = re.compile(r"clips-[0-9a-f]{20}\.parquet")  # `name_by_content`


def augmentation(augment: AugmentConfig, sample_rate: int, splits: tuple[str, ...] = ("train",),
                 device: str = "cpu") -> Augmentation | None:
    """The configured augmenter (from the registry) with its variants and seed; None for one applied per
    training step (nothing to write)."""
    entry = AUGMENTERS[augment.augmenter]
    if entry.per_step:
        return None
    augmenter = entry.load()(augment.options, sample_rate=sample_rate, device=device)
    return Augmentation(augmenter, augment.variants, augment.seed, splits)


class AugmentActor:
    """One pool member: loads its augmenter once, then reads, augments and featurises batches."""

    def __init__(self, config_dict: dict, augment_splits: tuple[str, ...], source: Relocated | None = None):
        import os
        import socket

        import ray
        import torch

        config, self.source = Config.from_dict(config_dict), source
        self.audio = config.audio
        device = "cuda" if torch.cuda.is_available() else "cpu"
        self.featurizer = Featurizer(config.features, config.audio.sample_rate,
                                     augmentation(config.augment, config.audio.sample_rate, augment_splits, device),
                                     device, tag={"worker": f"{socket.gethostname()}:{os.getpid()}",
                                                  "node": ray.get_runtime_context().get_node_id(), "device": device})

    def __call__(self, batch):
        return self.featurizer(read_batch(batch, self.audio, self.source))


def finished_paths(features_dir: Path) -> set[str]:
    """Clips already held by a readable shard; a shard an interrupted run left unreadable is removed."""
    done: set[str] = set()
    for shard in sorted(features_dir.glob("*.parquet")) if features_dir.exists() else []:
        try:
            done.update(pq.read_table(shard, columns=["path"])["path"].to_pylist())
        except Exception as error:  # a partly written file: its clips are processed again
            log.warning(f"augment: removing unreadable shard {shard.name} ({error})")
            shard.unlink()
    return done


def augment_settings(config: Config) -> dict:
    """What each clip's features depend on: a re-run with other values would mix two data sets. (`--limit`
    is not one: a limited run resumed without it extends the same set.)"""
    return {name: getattr(config, name).outcome() for name in ("augment", "audio", "features")}


def run_augment(data_dir: str | Path, out_dir: str | Path, config: Config, limit: int | None = None,
                augment_splits: tuple[str, ...] = ("train",), force: bool = False) -> dict:
    """Augment and featurise every clip under `data_dir` into `out_dir` (one writer at a time); a re-run
    resumes, a re-run with other settings stops unless `force` redoes the folder."""
    if config.augment.augmenter == "audioldm":
        from rcmae.augment.audioldm import require_model

        require_model(config.augment.options.model)  # before Ray and any actor starts: no silent fallback
    ensure_ray()
    with owned(out_dir, "rcmae augment"):
        summary_path = Path(out_dir) / SUMMARY
        settings = augment_settings(config)
        if force:
            shutil.rmtree(Path(out_dir) / FEATURES, ignore_errors=True)
            summary_path.unlink(missing_ok=True)
        elif summary_path.exists():
            recorded = json.loads(summary_path.read_text()).get("settings", {})
            check_settings({name: recorded_section(name, values).outcome() for name, values in recorded.items()},
                           settings, out_dir)
        return _augment(data_dir, Path(out_dir), config, limit, augment_splits, settings)


def _augment(data_dir: str | Path, out_dir: Path, config: Config, limit: int | None,
             augment_splits: tuple[str, ...], settings: dict) -> dict:
    import ray

    features_dir = out_dir / FEATURES
    features_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / SUMMARY).unlink(missing_ok=True)  # written again, last, when every clip is in
    index: ClipIndex = index_clips(data_dir, lenient=True)
    clips = index.table if limit is None else index.table.slice(0, limit)
    done = finished_paths(features_dir)
    foreign = sorted(done - set(index.table["path"].to_pylist()))
    if foreign:
        raise DataError(f"{out_dir}: its features hold {len(foreign)} clips that are not under {data_dir} (e.g. "
                        f"{foreign[0]}): the data moved since, or (a store's run folder) the working copy is not where "
                        f"the run began (RCMAE_STORE_CACHE); use the same paths, or --force to make the features again")
    todo = clips.filter(pc.invert(pc.is_in(clips["path"], pa.array(sorted(done), pa.string()))))
    # a seeded random order: every block, and so every shard and training batch, mixes machine IDs
    todo = todo.take(pa.array(np.random.default_rng(config.augment.seed).permutation(todo.num_rows)))
    resources = ray.cluster_resources()
    plan = pool_plan(config.augment, resources, reachable_gpus(resources))
    require_feasible("augmentation actor", {"CPU": plan.num_cpus, "GPU": plan.num_gpus})
    if config.augment.augmenter == "factory-mix":
        log.info("augment: using factory-mix, the weight-free prompt-driven noise mixer (no AudioLDM model given; "
              "--augmenter audioldm --model HUB_ID_OR_DIR for diffusion augmentation)")
    started = time.time()
    making = (f"{config.augment.augmenter} x{config.augment.variants}" if config.augment.variants_written else
              f"log-mels only ({config.augment.augmenter} is applied to every training batch)")
    log.info(f"augment: {clips.num_rows} clips, {len(done)} already done, {todo.num_rows} to process: {making}, on "
             f"{plan.sizes} actor(s)")
    if todo.num_rows:
        batch = config.augment.batch_size
        blocks = [todo.slice(start, batch) for start in range(0, todo.num_rows, batch)]
        dataset = ray.data.from_arrow(blocks)  # one block per batch: actors share work without a shuffle stage
        # start once the whole pool is up, so the first actor ready (AudioLDM loads take a while) does not
        # take every block while the others are still loading their model; the dataset's own copy of the
        # context, shared by the datasets derived from it, so the process's other Ray Data work is untouched
        dataset.context.wait_for_min_actors_s = 600
        dataset = dataset.map_batches(
            AugmentActor, fn_constructor_kwargs=dict(config_dict=config.to_dict(), augment_splits=augment_splits,
                                                     source=relocated(data_dir)),  # data in a working copy
            batch_size=batch, batch_format="pandas", num_cpus=plan.num_cpus, num_gpus=plan.num_gpus,
            compute=plan.strategy())
        with nodes_for(plan), disk_full_named(features_dir, "writing features (a re-run keeps the shards already "
                                                                     "written)"):
            dataset.write_parquet(on_driver(features_dir), ray_remote_args={"num_cpus": 0.25})
    return finalize(out_dir, index, clips, config.augment, time.time() - started, settings)


def name_by_content(features_dir: Path) -> None:
    """Each shard named after the clips it holds (their paths below the folder all of them share): Ray's write names
    files by random IDs, and readers list shards by name, so two runs that wrote the same shards, from the same data
    wherever it lies, read them in the same order only under such names."""
    shards = {shard: pq.read_table(shard, columns=["path"])["path"].to_pylist()
              for shard in sorted(features_dir.glob("*.parquet")) if not CONTENT_NAME.fullmatch(shard.name)}
    every = [path for paths in shards.values() for path in paths]
    if not every:
        return
    root = os.path.commonpath(every) if len(every) > 1 else os.path.dirname(every[0])
    for shard, paths in shards.items():
        below = "\n".join(os.path.relpath(path, root) for path in paths)
        shard.rename(features_dir / f"clips-{hashlib.sha256(below.encode(errors='surrogateescape')).hexdigest()[:20]}"
                                    ".parquet")


def finalize(out_dir: Path, index: ClipIndex, clips: pa.Table, augment: AugmentConfig, seconds: float,
             settings: dict) -> dict:
    """rejects.parquet and summary.json from what the shards hold; checks every clip is there once."""
    name_by_content(out_dir / FEATURES)
    table = pq.read_table(out_dir / FEATURES, columns=["path", "error", "split", "provenance"])
    paths = table["path"].to_pylist()
    if len(paths) != len(set(paths)):
        raise RuntimeError(f"{out_dir}: a clip appears in more than one shard")
    missing = set(clips["path"].to_pylist()) - set(paths)
    if missing:
        raise RuntimeError(f"{out_dir}: {len(missing)} clips missing from the output, e.g. {sorted(missing)[:3]}")
    failed = table.filter(pc.invert(pc.is_null(table["error"])))
    rejects = [{"path": p, "reason": r} for p, r in zip(failed["path"].to_pylist(), failed["error"].to_pylist())]
    rejects += [{"path": p, "reason": r} for p, r in index.skipped]
    pq.write_table(pa.Table.from_pylist(rejects, schema=pa.schema([("path", pa.string()), ("reason", pa.string())])),
                   out_dir / REJECTS)
    records = [record for cell in table["provenance"].to_pylist() for record in json.loads(cell)]
    variants = len(records)
    summary = dict(clips=len(paths), usable=len(paths) - failed.num_rows, rejected=len(rejects),
                   augmented_variants=variants, actors=len({record.get("worker") for record in records}),
                   augmenter=augment.augmenter, variants_per_clip=augment.variants_written,
                   seconds=round(seconds, 2), settings=settings)
    (out_dir / SUMMARY).write_text(json.dumps(summary, indent=1))
    for line in reject_summary([(reject["path"], reject["reason"]) for reject in rejects]):
        log.warning(f"augment: rejected {line} (all in {out_dir / REJECTS})")
    log.info(f"augment: {summary['clips']} clips ({summary['usable']} usable, {summary['rejected']} rejected), "
             f"{variants} augmented variants by {summary['actors']} actor(s), in {seconds:.1f} s "
             f"({len(paths) / max(seconds, 1e-9):.1f} clips/s); {out_dir / SUMMARY}")
    return summary
