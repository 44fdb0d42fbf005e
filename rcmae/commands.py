"""What each `rcmae` subcommand does with its parsed arguments (`rcmae.cli` parses them): thin wrappers over the
library that print results on stdout and return the exit status."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rcmae.config import describe, load_config
from rcmae.config_input import load_yaml
from rcmae.data.download import DATASETS as DOWNLOADABLE
from rcmae.data.run_folder import sync, writing
from rcmae.data.synth import ToyData
from rcmae.errors import EXIT, ConfigError, RcmaeError
from rcmae.stores import reading, shared


def config_from(args: argparse.Namespace):
    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        parsed = load_yaml(value, f"--set {key}")
        if isinstance(parsed, str):  # YAML 1.1 reads "3e-4" as a string
            try:
                parsed = float(parsed)
            except ValueError:
                pass
        overrides[key] = parsed
    return load_config(args.preset, args.config, overrides)


def cmd_synth(args: argparse.Namespace) -> int:
    from rcmae.data.synth import synthesize

    root = synthesize(args.out, preset=args.preset, seed=args.seed, types=args.types, additional=args.additional,
                      layout=args.layout, clip_seconds=args.clip_seconds, train_per_id=args.train_per_id)
    print(f"wrote {root} and {Path(args.out) / 'manifest.json'}")
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from rcmae.data.download import download

    dataset = DOWNLOADABLE[args.dataset]
    types = tuple(args.types.split(",")) if args.types else dataset.types
    folders = download(dataset, args.out, tuple(args.sets.split(",")), types, base_url=args.base_url,
                       progress=not args.no_progress, keep_archives=args.keep_archives, labels_url=args.labels_url)
    for folder in folders:
        print(f"wrote {folder}")
    print(f"next: rcmae run --data {args.out}")
    return 0


def cmd_data_list(args: argparse.Namespace) -> int:
    for name, dataset in DOWNLOADABLE.items():
        print(f"{name}: {dataset.title}")
        for part_name, part in dataset.parts.items():
            print(f"  {part_name:<10} zenodo.org/records/{part.record} -> {part.into}/: {', '.join(part.types)}")
        if dataset.labels is not None:
            print(f"  {'labels':<10} {dataset.labels.url}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from rcmae.data.layout import LAYOUTS, index_clips, reject_summary

    index = index_clips(args.data, lenient=args.lenient)
    for line in reject_summary(index.skipped):
        print(f"skipped: {line}", file=sys.stderr)
    if args.out:
        pq.write_table(index.table, args.out)
    counts = index.table.group_by(["machine_type", "split", "label"]).aggregate([("path", "count")])
    for row in sorted(counts.to_pylist(), key=lambda r: (r["machine_type"], r["split"], r["label"])):
        print(f"{row['machine_type']:12s} {row['split']:5s} {row['label']:8s} {row['path_count']}")
    print(f"{len(index)} clips" + (f", {len(index.skipped)} skipped" if index.skipped else "")
          + f", read as {LAYOUTS[index.layout]}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    config = config_from(args)
    if args.out:
        config.to_yaml(args.out)
        print(f"wrote {args.out}")
    else:
        print(describe(config))
    return 0


def cmd_augment(args: argparse.Namespace) -> int:
    from rcmae.distributed.augment_pipeline import run_augment

    overrides = {k: v for k, v in (("augment.augmenter", args.augmenter), ("augment.model", args.model),
                                   ("augment.variants", args.variants)) if v is not None}
    config = config_from(args).override(overrides)
    with writing(args.out, "rcmae augment") as out:
        run_augment(args.data, out, config, limit=args.limit, force=args.force)
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from rcmae.stages import pretrain

    config = config_from(args)
    with reading(args.features) as features, writing(args.out, "rcmae pretrain") as out:
        model_dir = shared(pretrain(config, features, out, force=args.force))
    print(f"stage 1 done: {model_dir}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from rcmae.stages import finetune

    config = config_from(args)
    with (reading(args.features) as features, reading(args.pretrained) as pretrained,
          writing(args.out, "rcmae finetune") as out):
        model_dir = shared(finetune(config, features, pretrained, out, force=args.force))
    print(f"stage 2 done: {model_dir} (pass it to `rcmae evaluate --checkpoint` / `rcmae score --checkpoint`)")
    return 0


def print_metrics(metrics) -> None:
    """A `rcmae.evaluate.metrics.Metrics`' AUC and pAUC per machine type and their mean."""
    for machine_type, values in metrics.per_type.items():
        print(f"{machine_type:12s} AUC {values['auc']:.4f}  pAUC {values['pauc']:.4f}")
    if metrics.mean.get("auc") is None:
        print("no labelled test clips (an evaluation set): every clip scored and decided, no AUC or pAUC")
    else:
        print(f"{'mean':12s} AUC {metrics.mean['auc']:.4f}  pAUC {metrics.mean['pauc']:.4f}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rcmae.evaluate.results import evaluate_checkpoint

    with reading(args.features) as features, writing(args.out, "rcmae evaluate") as out:
        metrics = evaluate_checkpoint(args.checkpoint, args.data, out, method=args.method, features_dir=features)
    print_metrics(metrics)
    for method, mean in metrics.methods.items():
        if mean.get("auc") is None:
            continue
        print(f"score method {method:10s} mean AUC {mean.get('auc', float('nan')):.4f}  "
              f"pAUC {mean.get('pauc', float('nan')):.4f}")
    print(f"wrote DCASE CSVs and metrics.json to {args.out}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    import csv

    from rcmae.evaluate.recordings import score_recordings

    if args.out is not None and args.out.is_dir():
        raise RcmaeError(f"--out {args.out} is a folder: name the CSV file to write")
    if args.windows is not None and args.windows.is_dir():
        raise RcmaeError(f"--windows {args.windows} is a folder: name the CSV file to write")
    if args.explain is not None and args.explain.exists() and not args.explain.is_dir():
        raise RcmaeError(f"--explain {args.explain} is a file: name a folder for the maps")
    result = score_recordings(args.checkpoint, [str(p) for p in args.audio], args.machine_type, args.machine_id,
                              args.method, aggregate=args.aggregate, explain=args.explain)
    if args.windows is not None:
        with open(args.windows, "w", newline="") as handle:
            windows = csv.DictWriter(handle, fieldnames=["file", "start_s", "end_s", "score"], lineterminator="\n")
            windows.writeheader()
            windows.writerows(result.windows)
    handle = open(args.out, "w", newline="") if args.out else sys.stdout
    writer = csv.DictWriter(handle, fieldnames=["file", "machine_type", "machine_id", "score", "decision"],
                            lineterminator="\n")
    writer.writeheader()
    writer.writerows(result.rows)
    if args.out:
        handle.close()
        print(f"wrote {args.out}")
    for failure in result.failures:
        print(f"not scored: {failure['file']}: {failure['reason']}", file=sys.stderr)
    if result.failures:
        print(f"{len(result.rows)} scored, {len(result.failures)} not scored", file=sys.stderr)
        return EXIT.not_all_scored
    return EXIT.anomaly_found if any(row["decision"] for row in result.rows) else EXIT.ok


def cmd_serve(args: argparse.Namespace) -> int:
    from rcmae.serve.app import ServiceArgs, run_service

    service = ServiceArgs(checkpoint=str(args.checkpoint), method=args.method, aggregate=args.aggregate,
                          max_batch_size=args.max_batch_size, batch_wait_s=args.batch_wait_ms / 1000,
                          max_upload_mb=args.max_upload_mb, max_seconds=args.max_seconds,
                          upload_timeout_s=args.upload_timeout_s, allow_origins=args.allow_origin,
                          token_file=str(args.token_file) if args.token_file else None)
    run_service(service.settings(), args.host, args.port, args.replicas)
    return EXIT.ok


def cmd_baseline(args: argparse.Namespace) -> int:
    from rcmae.baseline import run_reference
    from rcmae.evaluate.families import fault_families
    from rcmae.evaluate.test_split import data_test_split

    config = config_from(args)
    def test_rows(machine_type: str):
        return data_test_split(args.data, config.audio, config.features, machine_type)

    metrics = run_reference(args.reference, config.baseline, config.score, args.features, test_rows, args.out,
                            fault_families(args.data))
    print_metrics(metrics)
    print(f"wrote DCASE CSVs and metrics.json to {args.out}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from rcmae.export import export_edge
    from rcmae.stores import fetched

    folder = export_edge(fetched(args.checkpoint), args.out, args.method)
    size = sum(path.stat().st_size for path in folder.iterdir())
    print(f"wrote {folder} ({size / 2 ** 20:.1f} MiB): score with rcmae.edge.load({str(folder)!r})")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from rcmae.distributed.runtime import ensure_ray
    from rcmae.distributed.tune import base_config, load_space
    from rcmae.sweep import run_sweep

    space = load_space(args.space)  # every value a trial can draw checked before anything starts
    tracking_uri = mlflow_uri(args)
    ensure_ray()
    with reading(args.features) as features, writing(args.out, "rcmae tune") as out:
        if features is None:
            from rcmae.distributed.augment_pipeline import run_augment

            run_augment(args.data, out / "augment", base_config(space))
            features = out / "augment" / "features"
            sync(out)  # the trials read it from the store
        folder = shared(run_sweep(args.space, features, args.data, out, force=args.force, mlflow_uri=tracking_uri))
    print(f"wrote {folder}/trials.csv, {folder}/trials.parquet and {folder}/comparison.png")
    return 0


def mlflow_uri(args: argparse.Namespace) -> str | None:
    """With --tracking mlflow, the MLflow server: --tracking-uri, else MLflow's own MLFLOW_TRACKING_URI."""
    if args.tracking != "mlflow":
        if args.tracking_uri is not None:
            raise RcmaeError("--tracking-uri URI needs --tracking mlflow (TensorBoard files are always written)")
        return None
    uri = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if not uri:
        raise RcmaeError("--tracking mlflow needs the MLflow server: --tracking-uri URI, or MLFLOW_TRACKING_URI")
    return uri


def cmd_ablate(args: argparse.Namespace) -> int:
    from rcmae.ablation import run_ablation

    overrides = {k: v for k, v in (("augment.augmenter", args.augmenter), ("augment.model", args.model))
                 if v is not None}
    report = run_ablation(config_from(args).override(overrides), args.data, args.out, tuple(args.seeds))
    print(report.read_text())
    print(f"wrote {report}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from rcmae.run import preset_for_data, run_all

    tracking_uri = mlflow_uri(args)
    if args.register and tracking_uri is None:
        raise RcmaeError("--register NAME registers the model in MLflow's registry: add --tracking mlflow")
    if args.preset is None and args.config is None and args.data is not None:
        args.preset = preset_for_data(args.data)
    overrides = {k: v for k, v in (("augment.augmenter", args.augmenter), ("augment.model", args.model))
                 if v is not None}
    config = config_from(args).override(overrides)
    result = run_all(config, args.out, args.data, ToyData(args.synth_preset, types=args.synth_types),
                     baseline=not args.no_baseline, force=args.force, mlflow_uri=tracking_uri,
                     register=args.register)
    if result.mean:
        print(f"mean AUC {result.mean['auc']:.4f}  pAUC {result.mean['pauc']:.4f}  -> {result.report}")
    else:
        print(f"unlabelled test split: scores and decisions written, no metrics -> {result.report}")
    return 0
