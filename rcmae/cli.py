"""`rcmae` command line: thin wrappers over the library, one subcommand per stage."""

from __future__ import annotations

import argparse
import math
import sys
import traceback
from pathlib import Path

from rcmae import commands
from rcmae.config import PRESETS
from rcmae.data.download import DATASETS as DOWNLOADABLE
from rcmae.data.download import ZENODO
from rcmae.data.sound_models import MACHINES as TOY_MACHINES
from rcmae.data.synth import LAYOUTS as SYNTH_LAYOUTS
from rcmae.data.synth import PRESETS as SYNTH_PRESETS
from rcmae.detect.fusions import edge_methods
from rcmae.errors import EXIT, one_line, user_error
from rcmae.interrupts import install_handlers
from rcmae.logs import LEVELS
from rcmae.logs import configure as configure_logging
from rcmae.registry import AUGMENTERS, REFERENCES, SCORES
from rcmae.stores import StoreError, check_uri, is_uri


def _add_config_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="config preset (default: the one --config names, else tiny)")
    parser.add_argument("--config", type=local_path, help="YAML config file, laid over the preset it names")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one config value, e.g. --set pretrain.epochs=5 (repeatable)")


def _add_tracking_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tracking", choices=["tensorboard", "mlflow"], default="tensorboard",
                        help="also log to MLflow (TensorBoard event files are always written)")
    parser.add_argument("--tracking-uri", help="the MLflow tracking server, e.g. http://127.0.0.1:5000")


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


def _synth_command(sub) -> list[argparse.ArgumentParser]:
    p = sub.add_parser("synth", help="write the toy-factory data set (DCASE 2020 dev layout, or 2021+ with a "
                                     "target domain)")
    p.add_argument("--out", required=True, type=local_path)
    p.add_argument("--preset", default="small", choices=sorted(SYNTH_PRESETS),
                   help="small: 2 s clips, 3 IDs per type; full: 10 s, DCASE-sized IDs; hard: 4 s clips whose faults "
                        "sound 0.2-2 s from a random onset, over louder impulsive background, with more timing faults "
                        "(default: %(default)s)")
    p.add_argument("--layout", default="dcase2020", choices=SYNTH_LAYOUTS,
                   help="dcase2021: DCASE 2021-2025 names, one section per machine, a source and a shifted "
                        "target domain (3 target train clips per section); dcase2023: one section per type, its "
                        "machines as operating modes named by attributes (..._mode_2), and the target domain; "
                        "folders: a plant's own tree <type>/unit_<ID>/train|test/ of plain names; manifest: "
                        "recordings/rec_NNNNN.wav and clips.csv listing them (pass it as --data)")
    p.add_argument("--clip-seconds", type=float, help="clip length (default: the preset's, small 2 s, full 10 s)")
    p.add_argument("--train-per-id", type=int, help="train clips per machine (default: the preset's, small 30, "
                                                    "full 300); a smaller set's are the first of a larger one's")
    p.add_argument("--additional", action="store_true",
                   help="also write eval_data/<type>/train: other machines' train clips (DCASE 2020's additional "
                        "training set), so stage 2 classifies over both sets' IDs")
    p.add_argument("--types", type=machine_types, default=tuple(TOY_MACHINES),
                   help="comma-separated machine types (default: all six)")
    p.add_argument("--seed", type=count(0), default=0)
    p.set_defaults(func=commands.cmd_synth)
    return [p]


def _data_command(sub) -> list[argparse.ArgumentParser]:
    p = sub.add_parser("data", help="get real data: `rcmae data list`, `rcmae data download dcase2023 --out DIR`")
    data_sub = p.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    d = data_sub.add_parser("download", help="download, verify (md5) and unpack a DCASE data set from Zenodo "
                                             "into the layout rcmae reads; an interrupted download resumes")
    d.add_argument("dataset", choices=sorted(DOWNLOADABLE))
    d.add_argument("--out", required=True, type=local_path)
    d.add_argument("--sets", default="dev,additional,eval",
                   help="comma-separated parts: dev (development train+test), additional (the evaluation machines' "
                        "train clips), eval (their test clips, renamed to the labelled names the year's evaluator "
                        "published); default: %(default)s")
    d.add_argument("--types", help="comma-separated machine types (default: all)")
    d.add_argument("--base-url", default=ZENODO, help="Zenodo or a mirror with its /records/ID/files/NAME paths")
    d.add_argument("--labels-url", help="where to read the eval label list instead (a mirror of the evaluator's "
                                        "eval_data_list_<year>.csv)")
    d.add_argument("--keep-archives", action="store_true", help="keep the zips after unpacking")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.set_defaults(func=commands.cmd_data_download)
    listing = data_sub.add_parser("list", help="the data sets `download` knows: parts, Zenodo records, machine types")
    listing.set_defaults(func=commands.cmd_data_list)
    return [p, d, listing]


def _index_command(sub) -> list[argparse.ArgumentParser]:
    p = sub.add_parser("index", help="index a DCASE-layout data root into a clip table")
    p.add_argument("--data", required=True, type=local_path)
    p.add_argument("--out", type=local_path, help="write the table as Parquet")
    p.add_argument("--lenient", action="store_true", help="skip (and report) files with unknown names")
    p.set_defaults(func=commands.cmd_index)
    return [p]


def _config_command(sub) -> list[argparse.ArgumentParser]:
    p = sub.add_parser("config", help="print a preset's fields with their meaning, or write it as YAML")
    _add_config_args(p)
    p.add_argument("--out", type=local_path)
    p.set_defaults(func=commands.cmd_config)
    return [p]


def _augment_command(sub) -> list[argparse.ArgumentParser]:
    p = sub.add_parser("augment", help="Ray Data: read, augment K variants, log-mel -> Parquet (resumable)")
    _add_config_args(p)
    p.add_argument("--data", required=True, type=local_path)
    p.add_argument("--out", required=True, type=location, help="feature folder, or its s3:// or file:// URI")
    p.add_argument("--augmenter", choices=sorted(AUGMENTERS))
    p.add_argument("--model", help="AudioLDM hub id or local diffusers folder (with --augmenter audioldm)")
    p.add_argument("--variants", type=count(1), help="augmented variants per train clip")
    p.add_argument("--limit", type=count(1), help="only the first N clips (smoke runs)")
    p.add_argument("--force", action="store_true", help="redo a folder made with other settings")
    p.set_defaults(func=commands.cmd_augment)
    return [p]


def _pretrain_command(sub) -> list[argparse.ArgumentParser]:
    p = sub.add_parser("pretrain", help="stage 1: MAE + InfoNCE + VCR on (original, augmented) pairs")
    _add_config_args(p)
    p.add_argument("--features", required=True, type=location, help="feature folder written by `rcmae augment`")
    p.add_argument("--out", required=True, type=location, help="run folder (re-running resumes it)")
    p.add_argument("--force", action="store_true", help="redo a folder made with other settings")
    p.set_defaults(func=commands.cmd_pretrain)
    return [p]


def _finetune_command(sub) -> list[argparse.ArgumentParser]:
    p = sub.add_parser("finetune", help="stage 2: supervised contrastive + cross-entropy over machine IDs")
    _add_config_args(p)
    p.add_argument("--features", required=True, type=location)
    p.add_argument("--pretrained", required=True, type=location, help="stage-1 model folder (PRETRAIN_OUT/model)")
    p.add_argument("--out", required=True, type=location, help="run folder (re-running resumes it)")
    p.add_argument("--force", action="store_true", help="redo a folder made with other settings")
    p.set_defaults(func=commands.cmd_finetune)
    return [p]


def _evaluate_command(sub) -> list[argparse.ArgumentParser]:
    p = sub.add_parser("evaluate", help="score a test split: DCASE CSVs and metrics.json")
    p.add_argument("--checkpoint", required=True, type=location,
                   help="fine-tuned model folder (FINETUNE_OUT/model), or its s3://, gs:// or file:// URI")
    test = p.add_mutually_exclusive_group(required=True)
    test.add_argument("--data", type=local_path, help="DCASE-layout data: its test clips are read and featurised")
    test.add_argument("--features", type=location,
                      help="feature folder from `rcmae augment`: its test rows are scored")
    p.add_argument("--out", required=True, type=location)
    p.add_argument("--method", choices=sorted(SCORES), help="score method (default: the model's)")
    p.set_defaults(func=commands.cmd_evaluate)
    return [p]


def _score_command(sub) -> list[argparse.ArgumentParser]:
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
    p.set_defaults(func=commands.cmd_score)
    return [p]


def _export_command(sub) -> list[argparse.ArgumentParser]:
    p = sub.add_parser("export", help="a fine-tuned model as files rcmae.edge scores with (numpy, onnxruntime, "
                                      "soundfile: no torch, no Ray)")
    p.add_argument("--checkpoint", required=True, type=location, help="a fine-tuned model folder or its URI")
    p.add_argument("--format", choices=["onnx"], default="onnx", help="(default: %(default)s)")
    p.add_argument("--out", required=True, type=local_path, help="the folder to write (replaced whole)")
    p.add_argument("--method", choices=edge_methods(),
                   help="the score the edge computes (default: the model's)")
    p.set_defaults(func=commands.cmd_export)
    return [p]


def _serve_command(sub) -> list[argparse.ArgumentParser]:
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
    p.add_argument("--upload-timeout-s", type=amount(0.0), default=30.0,
                   help="an upload whose body has not arrived this long after its headers gets 408")
    p.add_argument("--allow-origin", action="append", default=[], metavar="URL",
                   help="another site whose web pages may POST here, e.g. https://plant.example (repeatable; "
                        "requests from other pages get 403, the service's own page and non-browser clients pass)")
    p.add_argument("--token-file", type=local_path, metavar="FILE",
                   help="POST /score then needs `Authorization: Bearer <the file's token>` (401 without); use it "
                        "whenever --host is not loopback (GET /healthz and the page stay open)")
    p.set_defaults(func=commands.cmd_serve)
    return [p]


def _baseline_command(sub) -> list[argparse.ArgumentParser]:
    p = sub.add_parser("baseline", help="fit + evaluate a reference: the DCASE 2020 dense AE baseline, or the floor "
                                        "(a per-ID Gaussian on each clip's log-mel mean and standard deviation)")
    _add_config_args(p)
    p.add_argument("--reference", choices=sorted(REFERENCES), default="dcase2020_ae")
    p.add_argument("--features", required=True, type=local_path)
    p.add_argument("--data", required=True, type=local_path)
    p.add_argument("--out", required=True, type=local_path)
    p.set_defaults(func=commands.cmd_baseline)
    return [p]


def _tune_command(sub) -> list[argparse.ArgumentParser]:
    p = sub.add_parser("tune", help="Ray Tune sweep: each trial = stage 1 + stage 2 + evaluation")
    p.add_argument("--space", required=True, type=local_path, help="search space YAML (see tune_spaces/)")
    p.add_argument("--data", required=True, type=local_path, help="DCASE-layout data (its test split is evaluated)")
    p.add_argument("--features", type=location, help="feature folder from `rcmae augment` (made when omitted)")
    p.add_argument("--out", type=location, default=Path("runs/tune"), help="sweep folder, or an s3:// or file:// URI")
    _add_tracking_args(p)
    p.add_argument("--force", action="store_true",
                   help="start the sweep in --out again from nothing (by default an interrupted sweep is resumed)")
    p.set_defaults(func=commands.cmd_tune)
    return [p]


def _ablate_command(sub) -> list[argparse.ArgumentParser]:
    p = sub.add_parser("ablate", help="Table 3: the same model with the configured augmentation and with time/"
                                      "frequency masking, over seeds -> ablation.md")
    _add_config_args(p)
    p.add_argument("--data", required=True, type=local_path, help="DCASE-layout data")
    p.add_argument("--out", required=True, type=local_path)
    p.add_argument("--seeds", type=count(0), nargs="+", default=[0, 1, 2])
    p.add_argument("--augmenter", choices=sorted(name for name, entry in AUGMENTERS.items() if entry.ablation_arm))
    p.add_argument("--model", help="AudioLDM hub id or local diffusers folder")
    p.set_defaults(func=commands.cmd_ablate)
    return [p]


def _run_command(sub) -> list[argparse.ArgumentParser]:
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
    p.add_argument("--register", metavar="NAME", help="with --tracking mlflow: register the detector (logged as "
                                                      "an MLflow Model) as a new version of NAME in the registry")
    p.add_argument("--force", action="store_true",
                   help="redo the toy data, augmentation and stages a previous run made with other settings")
    p.set_defaults(func=commands.cmd_run)
    return [p]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rcmae", description=__doc__, epilog=EXIT_STATUS)
    parser.add_argument("--log-level", choices=LEVELS, default="info",
                        help="progress and warnings shown on stderr (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_synth_command, _data_command, _index_command, _config_command, _augment_command, _pretrain_command,
                _finetune_command, _evaluate_command, _score_command, _export_command, _serve_command,
                _baseline_command, _tune_command,
                _ablate_command, _run_command):
        for command in add(sub):  # --log-level also after the command (jobs/*.py)
            command.add_argument("--log-level", choices=LEVELS, default=argparse.SUPPRESS,
                                 help="as before the command")
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
