"""`rcmae` command line: thin wrappers over the library, one subcommand per stage."""

from __future__ import annotations

import argparse
import math
import sys
import traceback
from pathlib import Path

from rcmae.config import PRESETS, describe, load_config
from rcmae.config_input import load_yaml
from rcmae.data.download import DATASETS as DOWNLOADABLE
from rcmae.data.download import ZENODO
from rcmae.data.run_folder import sync, writing
from rcmae.data.sound_models import MACHINES as TOY_MACHINES
from rcmae.data.synth import PRESETS as SYNTH_PRESETS
from rcmae.data.synth import ToyData
from rcmae.errors import EXIT, ConfigError, RcmaeError, one_line, user_error
from rcmae.interrupts import install_handlers
from rcmae.logs import LEVELS
from rcmae.logs import configure as configure_logging
from rcmae.registry import AUGMENTERS, REFERENCES, SCORES
from rcmae.stores import StoreError, check_uri, is_uri, reading, shared


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="config preset (default: the one --config names, else tiny)")
    parser.add_argument("--config", type=local_path, help="YAML config file, laid over the preset it names")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set pretrain.epochs=5 (repeatable)")


def _config_from(args: argparse.Namespace):
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


# ---------------------------------------------------------------- subcommands
def cmd_synth(args: argparse.Namespace) -> int:
    from rcmae.data.synth import synthesize

    root = synthesize(args.out, preset=args.preset, seed=args.seed, types=args.types, additional=args.additional,
                      layout=args.layout, clip_seconds=args.clip_seconds)
    print(f"wrote {root} and {Path(args.out) / 'manifest.json'}")
    return 0


def cmd_data_download(args: argparse.Namespace) -> int:
    from rcmae.data.download import download

    dataset = DOWNLOADABLE[args.dataset]
    types = tuple(args.types.split(",")) if args.types else dataset.types
    folders = download(dataset, args.out, tuple(args.sets.split(",")), types, base_url=args.base_url,
                       progress=not args.no_progress, keep_archives=args.keep_archives)
    for folder in folders:
        print(f"wrote {folder}")
    print(f"next: rcmae run --data {args.out}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    import pyarrow.parquet as pq

    from rcmae.data.layout import index_clips, reject_summary

    index = index_clips(args.data, lenient=args.lenient)
    for line in reject_summary(index.skipped):
        print(f"skipped: {line}", file=sys.stderr)
    if args.out:
        pq.write_table(index.table, args.out)
    counts = index.table.group_by(["machine_type", "split", "label"]).aggregate([("path", "count")])
    for row in sorted(counts.to_pylist(), key=lambda r: (r["machine_type"], r["split"], r["label"])):
        print(f"{row['machine_type']:12s} {row['split']:5s} {row['label']:8s} {row['path_count']}")
    print(f"{len(index)} clips" + (f", {len(index.skipped)} skipped" if index.skipped else ""))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    config = _config_from(args)
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
    config = _config_from(args).override(overrides)
    with writing(args.out, "rcmae augment") as out:
        run_augment(args.data, out, config, limit=args.limit, force=args.force)
    return 0


def cmd_pretrain(args: argparse.Namespace) -> int:
    from rcmae.stages import pretrain

    config = _config_from(args)
    with reading(args.features) as features, writing(args.out, "rcmae pretrain") as out:
        model_dir = shared(pretrain(config, features, out, force=args.force))
    print(f"stage 1 done: {model_dir}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from rcmae.stages import finetune

    config = _config_from(args)
    with (reading(args.features) as features, reading(args.pretrained) as pretrained,
          writing(args.out, "rcmae finetune") as out):
        model_dir = shared(finetune(config, features, pretrained, out, force=args.force))
    print(f"stage 2 done: {model_dir} (pass it to `rcmae evaluate --checkpoint` / `rcmae score --checkpoint`)")
    return 0


def _print_metrics(metrics: dict) -> None:
    for machine_type, values in metrics["per_type"].items():
        print(f"{machine_type:12s} AUC {values['auc']:.4f}  pAUC {values['pauc']:.4f}")
    if metrics["mean"]:
        print(f"{'mean':12s} AUC {metrics['mean']['auc']:.4f}  pAUC {metrics['mean']['pauc']:.4f}")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from rcmae.evaluate.results import evaluate_checkpoint

    with reading(args.features) as features, writing(args.out, "rcmae evaluate") as out:
        metrics = evaluate_checkpoint(args.checkpoint, args.data, out, method=args.method, features_dir=features)
    _print_metrics(metrics)
    for method, mean in metrics["methods"].items():
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
    from rcmae.serve.app import ServiceSettings, origins, run_service
    from rcmae.serve.uploads import Limits

    settings = ServiceSettings(str(args.checkpoint), args.method, args.aggregate, args.max_batch_size,
                               args.batch_wait_ms / 1000, Limits(int(args.max_upload_mb * 2**20), args.max_seconds),
                               origins(args.allow_origin))
    run_service(settings, args.host, args.port, args.replicas)
    return EXIT.ok


def cmd_baseline(args: argparse.Namespace) -> int:
    from rcmae.baseline import run_reference
    from rcmae.evaluate.families import fault_families
    from rcmae.evaluate.test_split import data_test_split

    config = _config_from(args)
    def test_rows(machine_type: str):
        return data_test_split(args.data, config.audio, config.features, machine_type)

    metrics = run_reference(args.reference, config.baseline, config.score, args.features, test_rows, args.out,
                            fault_families(args.data))
    _print_metrics(metrics)
    print(f"wrote DCASE CSVs and metrics.json to {args.out}")
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from rcmae.distributed.runtime import ensure_ray
    from rcmae.distributed.tune import base_config, load_space, run_tune

    space = load_space(args.space)  # every value a trial can draw checked before anything starts
    mlflow_uri = _mlflow_uri(args)
    ensure_ray()
    with reading(args.features) as features, writing(args.out, "rcmae tune") as out:
        if features is None:
            from rcmae.distributed.augment_pipeline import run_augment

            run_augment(args.data, out / "augment", base_config(space))
            features = out / "augment" / "features"
            sync(out)  # the trials read it from the store
        folder = shared(run_tune(args.space, features, args.data, out, force=args.force, mlflow_uri=mlflow_uri))
    print(f"wrote {folder}/trials.csv, {folder}/trials.parquet and {folder}/comparison.png")
    return 0


def _mlflow_uri(args: argparse.Namespace) -> str | None:
    if (args.tracking == "mlflow") != (args.tracking_uri is not None):
        raise RcmaeError("--tracking mlflow and --tracking-uri URI go together (TensorBoard files are always written)")
    return args.tracking_uri


def _add_tracking_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking", choices=["tensorboard", "mlflow"], default="tensorboard",
                        help="also log to MLflow (TensorBoard event files are always written)")
    parser.add_argument("--tracking-uri", help="the MLflow tracking server, e.g. http://127.0.0.1:5000")


def cmd_ablate(args: argparse.Namespace) -> int:
    from rcmae.ablation import run_ablation

    overrides = {k: v for k, v in (("augment.augmenter", args.augmenter), ("augment.model", args.model))
                 if v is not None}
    report = run_ablation(_config_from(args).override(overrides), args.data, args.out, tuple(args.seeds))
    print(report.read_text())
    print(f"wrote {report}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from rcmae.run import preset_for_data, run_all

    if args.preset is None and args.config is None and args.data is not None:
        args.preset = preset_for_data(args.data)
    overrides = {k: v for k, v in (("augment.augmenter", args.augmenter), ("augment.model", args.model))
                 if v is not None}
    config = _config_from(args).override(overrides)
    result = run_all(config, args.out, args.data, ToyData(args.synth_preset, types=args.synth_types),
                     baseline=not args.no_baseline, force=args.force, mlflow_uri=_mlflow_uri(args))
    if result["mean"]:
        print(f"mean AUC {result['mean']['auc']:.4f}  pAUC {result['mean']['pauc']:.4f}  -> {result['report']}")
    else:
        print(f"unlabelled test split: scores and decisions written, no metrics -> {result['report']}")
    return 0


# ---------------------------------------------------------------- parser
WINDOW_AGGREGATES = ("max", "mean")  # rcmae.evaluate.recordings.AGGREGATES, named without importing torch
EXIT_STATUS = (f"exit status, every command: {EXIT.ok} done; {EXIT.anomaly_found} an anomaly found (score); "
               f"{EXIT.user_error} a user error (bad usage, config, data, folders, downloads, checkpoints, missing "
               f"weights, a full disk: one line, the traceback with --log-level debug); {EXIT.not_all_scored} some "
               f"inputs not scored (score, listed with the reason); {EXIT.internal_error} an internal error (a bug: "
               f"the traceback is printed); 130 interrupted")
def local_path(text: str) -> Path:
    """An argparse type: a local (or mounted) path; object-store URIs are refused by name, not taken as folders."""
    if is_uri(text):
        raise argparse.ArgumentTypeError(
            f"{text}: object-store URIs are taken by the run folders (--out) of run, augment, pretrain, finetune, "
            f"evaluate and tune, by --features, --pretrained and --checkpoint; here give a folder on storage every "
            f"node mounts at the same path (NFS, EFS, a ReadWriteMany volume)")
    return Path(text)


def location(text: str) -> Path | str:
    """An argparse type: a local (or mounted) path, or an s3://, gs:// or file:// URI (kept as text)."""
    if not is_uri(text):
        return Path(text)
    try:
        return check_uri(text)
    except StoreError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def machine_types(text: str) -> tuple[str, ...]:
    """An argparse type: comma-separated toy-factory machine types."""
    types = tuple(name.strip() for name in text.split(",") if name.strip())
    unknown = sorted(set(types) - set(TOY_MACHINES))
    if unknown or not types:
        raise argparse.ArgumentTypeError(f"{text!r}: machine types of the toy factory are {', '.join(TOY_MACHINES)}")
    return types


def count(minimum: int, maximum: int | None = None):
    """An argparse type: a whole number in [minimum, maximum], else a usage error naming the value."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"{value} is outside {minimum}..{maximum}" if maximum is not None
                                             else f"{value} is below {minimum}")
        return value
    return parse


def amount(minimum: float, inclusive: bool = False):
    """An argparse type: a finite number above `minimum` (or equal to it, `inclusive`): NaN and infinity are
    refused, as they would switch a limit off or stall a wait."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value) or value < minimum or (value == minimum and not inclusive):
            raise argparse.ArgumentTypeError(f"{text} must be a finite number {'>=' if inclusive else '>'} "
                                             f"{minimum:g}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rcmae", description=__doc__, epilog=EXIT_STATUS)
    parser.add_argument("--log-level", choices=LEVELS, default="info",
                        help="progress and warnings shown on stderr (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("synth", help="write the toy-factory data set (DCASE 2020 dev layout, or 2021+ with a "
                                     "target domain)")
    p.add_argument("--out", required=True, type=local_path)
    p.add_argument("--preset", default="small", choices=sorted(SYNTH_PRESETS),
                   help="small: 2 s clips, 3 IDs per type; full: 10 s, DCASE-sized IDs; hard: 4 s clips whose faults "
                        "sound 0.2-2 s from a random onset, over louder impulsive background, with more timing faults "
                        "(default: %(default)s)")
    p.add_argument("--layout", default="dcase2020", choices=["dcase2020", "dcase2021"],
                   help="dcase2021: DCASE 2021-2025 names, one section per machine, a source and a shifted "
                        "target domain (3 target train clips per section)")
    p.add_argument("--clip-seconds", type=float, help="clip length (default: the preset's, small 2 s, full 10 s)")
    p.add_argument("--additional", action="store_true",
                   help="also write eval_data/<type>/train: other machines' train clips (DCASE 2020's additional "
                        "training set), so stage 2 classifies over both sets' IDs")
    p.add_argument("--types", type=machine_types, default=tuple(TOY_MACHINES),
                   help="comma-separated machine types (default: all six)")
    p.add_argument("--seed", type=count(0), default=0)
    p.set_defaults(func=cmd_synth)

    p = sub.add_parser("data", help="get real data: `rcmae data download dcase2020 --out DIR`")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    d = data_sub.add_parser("download", help="download, verify (md5) and unpack a DCASE data set from Zenodo "
                                             "into the layout rcmae reads; an interrupted download resumes")
    d.add_argument("dataset", choices=sorted(DOWNLOADABLE))
    d.add_argument("--out", required=True, type=local_path)
    d.add_argument("--sets", default="dev,additional,eval",
                   help="comma-separated parts: dev (development train+test), additional (more train IDs), "
                        "eval (evaluation test, unlabelled); default: %(default)s")
    d.add_argument("--types", help="comma-separated machine types (default: all)")
    d.add_argument("--base-url", default=ZENODO, help="Zenodo or a mirror with its /records/ID/files/NAME paths")
    d.add_argument("--keep-archives", action="store_true", help="keep the zips after unpacking")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_data_download)

    p = sub.add_parser("index", help="index a DCASE-layout data root into a clip table")
    p.add_argument("--data", required=True, type=local_path)
    p.add_argument("--out", type=local_path, help="write the table as Parquet")
    p.add_argument("--lenient", action="store_true", help="skip (and report) files with unknown names")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("config", help="print a preset's fields with their meaning, or write it as YAML")
    _add_config_args(p)
    p.add_argument("--out", type=local_path)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("augment", help="Ray Data: read, augment K variants, log-mel -> Parquet (resumable)")
    _add_config_args(p)
    p.add_argument("--data", required=True, type=local_path)
    p.add_argument("--out", required=True, type=location, help="feature folder, or its s3:// or file:// URI")
    p.add_argument("--augmenter", choices=sorted(AUGMENTERS))
    p.add_argument("--model", help="AudioLDM hub id or local diffusers folder (with --augmenter audioldm)")
    p.add_argument("--variants", type=count(1), help="augmented variants per train clip")
    p.add_argument("--limit", type=count(1), help="only the first N clips (smoke runs)")
    p.add_argument("--force", action="store_true", help="redo a folder made with other settings")
    p.set_defaults(func=cmd_augment)

    p = sub.add_parser("pretrain", help="stage 1: MAE + InfoNCE + VCR on (original, augmented) pairs")
    _add_config_args(p)
    p.add_argument("--features", required=True, type=location, help="feature folder written by `rcmae augment`")
    p.add_argument("--out", required=True, type=location, help="run folder (re-running resumes it)")
    p.add_argument("--force", action="store_true", help="redo a folder made with other settings")
    p.set_defaults(func=cmd_pretrain)

    p = sub.add_parser("finetune", help="stage 2: supervised contrastive + cross-entropy over machine IDs")
    _add_config_args(p)
    p.add_argument("--features", required=True, type=location)
    p.add_argument("--pretrained", required=True, type=location, help="stage-1 model folder (PRETRAIN_OUT/model)")
    p.add_argument("--out", required=True, type=location, help="run folder (re-running resumes it)")
    p.add_argument("--force", action="store_true", help="redo a folder made with other settings")
    p.set_defaults(func=cmd_finetune)

    p = sub.add_parser("evaluate", help="score a test split: DCASE CSVs and metrics.json")
    p.add_argument("--checkpoint", required=True, type=location,
                   help="fine-tuned model folder (FINETUNE_OUT/model), or its s3://, gs:// or file:// URI")
    test = p.add_mutually_exclusive_group(required=True)
    test.add_argument("--data", type=local_path, help="DCASE-layout data: its test clips are read and featurised")
    test.add_argument("--features", type=location,
                      help="feature folder from `rcmae augment`: its test rows are scored")
    p.add_argument("--out", required=True, type=location)
    p.add_argument("--method", choices=sorted(SCORES), help="score method (default: the model's)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("score", help="score recordings of any length (folders: their .wav files): CSV of file, "
                                     "machine_type, machine_id, score, decision; exit 0 all scored and normal, 1 an "
                                     "anomaly found, 3 some not scored (listed on stderr with the reason)")
    p.add_argument("--checkpoint", required=True, type=location, help="a fine-tuned model folder or its URI")
    p.add_argument("audio", nargs="+", type=local_path)
    p.add_argument("--machine-type", help="for file names outside the DCASE grammar")
    p.add_argument("--machine-id", help="for file names outside the DCASE grammar (e.g. 00)")
    p.add_argument("--method", choices=sorted(SCORES))
    p.add_argument("--out", type=local_path, help="write the CSV here instead of standard output")
    p.add_argument("--explain", type=local_path, metavar="DIR",
                   help="write each recording's anomaly maps here: NAME.npy (windows x frequency rows x time "
                        "columns of the patch grid) and NAME.png (the highest-scoring window's log-mel under its map)")
    p.add_argument("--aggregate", choices=WINDOW_AGGREGATES, default="mean",
                   help="a recording longer than the model's clip is scored in clip-long windows half a clip apart; "
                        "its score is their mean or max (default: %(default)s; benchmarks/long_recordings.py "
                        "compares them)")
    p.add_argument("--windows", type=local_path, help="also write every window's score: file, start_s, end_s, score")
    p.set_defaults(func=cmd_score)

    p = sub.add_parser("serve", help="a live scoring service on Ray Serve: POST /score (a WAV file), GET /healthz, "
                                     "GET / (a web page); runs until Ctrl-C")
    p.add_argument("--checkpoint", required=True, type=location, help="a fine-tuned model folder or its URI (each "
                                                                      "replica fetches it)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s, this machine "
                                                       "only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=count(1, 65535), default=8000)
    p.add_argument("--replicas", type=count(1), help="a fixed number of replicas (default: autoscaling from 1 to "
                                                     "one per GPU, or per CPU without GPUs)")
    p.add_argument("--method", choices=sorted(SCORES))
    p.add_argument("--aggregate", choices=WINDOW_AGGREGATES, default="mean")
    p.add_argument("--max-batch-size", type=count(1), default=8, help="requests scored together (1: no batching)")
    p.add_argument("--batch-wait-ms", type=amount(0.0, inclusive=True), default=5.0,
                   help="how long a batch waits to fill")
    p.add_argument("--max-upload-mb", type=amount(0.0), default=32.0, help="larger uploads get 413")
    p.add_argument("--max-seconds", type=amount(0.0), default=600.0, help="longer recordings get 413")
    p.add_argument("--allow-origin", action="append", default=[], metavar="URL",
                   help="another site whose web pages may POST here, e.g. https://plant.example (repeatable; "
                        "requests from other pages get 403, the service's own page and non-browser clients pass)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("baseline", help="fit + evaluate a reference: the DCASE 2020 dense AE baseline, or the floor "
                                        "(a per-ID Gaussian on each clip's log-mel mean and standard deviation)")
    _add_config_args(p)
    p.add_argument("--reference", choices=sorted(REFERENCES), default="dcase2020_ae")
    p.add_argument("--features", required=True, type=local_path)
    p.add_argument("--data", required=True, type=local_path)
    p.add_argument("--out", required=True, type=local_path)
    p.set_defaults(func=cmd_baseline)

    p = sub.add_parser("tune", help="Ray Tune sweep: each trial = stage 1 + stage 2 + evaluation")
    p.add_argument("--space", required=True, type=local_path, help="search space YAML (see tune_spaces/)")
    p.add_argument("--data", required=True, type=local_path, help="DCASE-layout data (its test split is evaluated)")
    p.add_argument("--features", type=location, help="feature folder from `rcmae augment` (made when omitted)")
    p.add_argument("--out", type=location, default=Path("runs/tune"), help="sweep folder, or an s3:// or file:// URI")
    _add_tracking_args(p)
    p.add_argument("--force", action="store_true",
                   help="start the sweep in --out again from nothing (by default an interrupted sweep is resumed)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("ablate", help="Table 3: the same model with the configured augmentation and with time/"
                                      "frequency masking, over seeds -> ablation.md")
    _add_config_args(p)
    p.add_argument("--data", required=True, type=local_path, help="DCASE-layout data")
    p.add_argument("--out", required=True, type=local_path)
    p.add_argument("--seeds", type=count(0), nargs="+", default=[0, 1, 2])
    p.add_argument("--augmenter", choices=sorted(set(AUGMENTERS) - {"specaugment", "masking"}))
    p.add_argument("--model", help="AudioLDM hub id or local diffusers folder")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser("run", help="the whole job: (synth) -> augment -> pretrain -> finetune -> evaluate -> report")
    _add_config_args(p)
    p.add_argument("--data", type=local_path, help="DCASE-layout data (default: synthesise the toy factory)")
    p.add_argument("--out", type=location, default=Path("runs/main"),
                   help="run folder, or an s3:// or file:// URI (default: %(default)s)")
    p.add_argument("--synth-preset", default="small", choices=sorted(SYNTH_PRESETS))
    p.add_argument("--synth-types", type=machine_types, default=tuple(TOY_MACHINES),
                   help="without --data: the machine types to synthesise (comma-separated; default: all six)")
    p.add_argument("--augmenter", choices=sorted(AUGMENTERS))
    p.add_argument("--model", help="AudioLDM hub id or local diffusers folder")
    p.add_argument("--no-baseline", action="store_true", help="skip the DCASE 2020 AE baseline")
    _add_tracking_args(p)
    p.add_argument("--force", action="store_true",
                   help="redo the toy data, augmentation and stages a previous run made with other settings")
    p.set_defaults(func=cmd_run)

    for command in [*sub.choices.values(), *data_sub.choices.values()]:  # also after the command (jobs/*.py)
        command.add_argument("--log-level", choices=LEVELS, default=argparse.SUPPRESS, help="as before the command")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level)
    install_handlers()
    try:
        return args.func(args)
    except KeyboardInterrupt as interrupt:
        why = f" ({interrupt})" if str(interrupt) else ""
        print(f"rcmae {args.command}: interrupted{why}; re-run the same command to continue", file=sys.stderr)
        return EXIT.interrupted
    except Exception as error:  # every failure ends here: one line for a user error, the traceback for a bug
        return report_failure(args.command, error, debug=args.log_level == "debug")


def report_failure(command: str, error: BaseException, debug: bool) -> int:
    fixable = user_error(error)
    if fixable is None:
        traceback.print_exception(error)
        print(f"rcmae {command}: internal error ({type(error).__name__}): this is a bug in rcmae; please report "
              f"it with the traceback above", file=sys.stderr)
        return EXIT.internal_error
    if debug:
        traceback.print_exception(error)
    print(f"rcmae {command}: error: {one_line(fixable)}", file=sys.stderr)
    return EXIT.user_error


if __name__ == "__main__":
    sys.exit(main())
