"""Ray Tune sweeps: one trial = stage 1 + stage 2 + evaluation, each stage a `TorchTrainer` built inside
the trial function (the Train V2 pattern), with `TuneReportCallback` forwarding every epoch's metrics
and the trial reporting mean and per-type AUC/pAUC at its end.

A search space is YAML:

    name: paper_grid          # the Tune experiment name (and folder)
    preset: tiny              # base config preset (or `config: path.yaml`)
    num_samples: 1            # samples per grid point / random draws
    set: {pretrain.epochs: 5} # fixed overrides for every trial
    normalize_weights: true   # rescale pretrain.lambda_con/vcr/mae to sum to 1 (Eq. 8)
    search: basic             # basic: every grid point, random draws; optuna: TPE (seeded) on the final AUC
    seed: 0                   # optuna's sampler seed
    params:                   # dotted config keys -> grid | choice | uniform | loguniform
      model.mask_ratio: {grid: [0.5, 0.75]}
      pretrain.tau: {loguniform: [0.03, 0.2]}

With `search: optuna`, `num_samples` is the budget (trials in all) and each trial reports only its final AUC
(TPE learns from nothing else, and Tune requires the searched metric in every result); with `basic`, every epoch's
losses are reported too.

Every trial's stages, checkpoints, evaluation and model live in `<out>/<name>/trials/<trial id>/`, beside
Tune's own experiment files (so `trials.csv` and `best.json` point inside --out and stay valid after `ray stop`;
on several nodes --out must be storage every node sees, or a store URI: then the sweep's folder is a working copy,
Tune writes its files to `<name>/ray_results/` in the store and each trial keeps its folder in the store, as a
working copy of its own on the trial's node). `rcmae tune` on a folder holding an interrupted sweep
restores it (`Tuner.restore`): finished trials are kept, unfinished ones continue from their stages' last
checkpoints, errored ones are run again; a space file changed since is refused, naming what changed.

Scheduling is FIFO on purpose: a trial's figure of merit (AUC) exists only after stage 2, and stage-1
losses are not comparable across trials whose loss weights differ, so ASHA would stop trials on noise.
"""

from __future__ import annotations

import json
import logging
import math
import re
from pathlib import Path
from typing import Callable

from rcmae.config import Config, load_config
from rcmae.config_input import load_yaml
from rcmae.errors import ConfigError, RcmaeError, bounded, one_line
from rcmae.evaluate.metrics import Metrics
from rcmae.interrupts import sweep_interrupts
from rcmae.sections import ScaleConfig
from rcmae.stores import clear, is_uri, mirror_of, shared
from rcmae.tracking import experiment_name

log = logging.getLogger(__name__)

WEIGHTS = ("pretrain.lambda_con", "pretrain.lambda_vcr", "pretrain.lambda_mae")
SAMPLERS = ("grid", "choice", "uniform", "loguniform")
SEARCHES = ("basic", "optuna")
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


def load_space(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: search space not found")
    space = load_yaml(path.read_text(), str(path)) or {}
    if not isinstance(space, dict):
        raise ConfigError(f"{path}: a search space is a mapping (name, preset, params, ...)")
    if not isinstance(space.get("params") or {}, dict):
        raise ConfigError(f"{path}: params is a mapping of dotted config keys to samplers, got "
                          f"{bounded(space['params'])}")
    for key, spec in (space.get("params") or {}).items():
        if not isinstance(spec, dict) or len(spec) != 1 or next(iter(spec)) not in SAMPLERS:
            raise ConfigError(f"{path}: param {key!r} must be one of {SAMPLERS} with its values, got {bounded(spec)}")
    for key, kind in (("num_samples", int), ("max_concurrent_trials", int), ("seed", int),
                      ("normalize_weights", bool)):
        value = space.get(key)
        if value is not None and (type(value) is not kind or (kind is int and key != "seed" and value < 1)):
            wanted = "true or false" if kind is bool else ("an integer" if key == "seed" else "a positive integer")
            raise ConfigError(f"{path}: {key} must be {wanted}, got {bounded(value)}")
    space.setdefault("name", path.stem)
    search = space.setdefault("search", "basic")
    if search not in SEARCHES:
        raise ConfigError(f"{path}: search must be one of {SEARCHES}, got {bounded(search)}")
    if search == "optuna" and any("grid" in spec for spec in (space.get("params") or {}).values()):
        raise ConfigError(f"{path}: search optuna draws its own points: use choice, uniform or loguniform, not grid")
    if not isinstance(space["name"], str) or not PLAIN_NAME.fullmatch(space["name"]):
        raise ConfigError(f"{path}: name {bounded(space['name'])} must be a plain name (letters, digits, '.', '_', "
                          f"'-'; no path): it names the sweep's folder under --out")
    check_samples(space, path)
    return space


def check_samples(space: dict, path: Path) -> None:
    """Every value a trial can draw, through the same config validation a run uses, before any trial starts: each
    grid or choice value, and both ends of each range, with the other parameters at the base config's values."""
    base = base_config(space)  # the preset and the fixed overrides
    normalize = bool(space.get("normalize_weights", True))
    for key, spec in (space.get("params") or {}).items():
        kind, values = next(iter(spec.items()))
        if kind in ("grid", "choice"):
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{path}: param {key!r}: {kind} takes a non-empty list of values, got "
                                  f"{bounded(values)}")
        elif (not isinstance(values, list) or len(values) != 2
              or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)
              or not values[0] < values[1] or (kind == "loguniform" and values[0] <= 0)):
            low = "0 < low < high" if kind == "loguniform" else "low < high"
            raise ConfigError(f"{path}: param {key!r}: {kind} takes [low, high], two finite numbers with {low}, got "
                              f"{bounded(values)}")
        for value in values:
            try:
                trial_config(base, {key: value}, normalize)
            except ConfigError as error:
                raise ConfigError(f"{path}: param {key!r} can draw {bounded(value)}, which a run refuses: {error}") \
                    from None


def base_config(space: dict) -> Config:
    return load_config(space.get("preset"), space.get("config"), space.get("set") or {})


def param_space(space: dict) -> dict:
    from ray import tune

    samplers = {"grid": tune.grid_search, "choice": tune.choice,
                "uniform": lambda v: tune.uniform(*v), "loguniform": lambda v: tune.loguniform(*v)}
    return {key: samplers[kind](values) for key, spec in (space.get("params") or {}).items()
            for kind, values in spec.items()}


def trial_config(base: Config, params: dict, normalize_weights: bool = True) -> Config:
    """The base config with a trial's parameters; Eq. 8's weights rescaled to sum to 1."""
    config = base.override(params)
    if normalize_weights:
        weights = [getattr(config.pretrain, key.split(".")[1]) for key in WEIGHTS]
        total = sum(weights)
        config = config.override({key: w / total for key, w in zip(WEIGHTS, weights)})
    return config


def flat_metrics(metrics: Metrics) -> dict:
    """mean and per-type AUC/pAUC as flat keys: auc, pauc, auc_fan, pauc_fan, ..."""
    flat = {"auc": metrics.mean["auc"], "pauc": metrics.mean["pauc"]}
    for machine_type, values in metrics.per_type.items():
        flat[f"auc_{machine_type}"] = values["auc"]
        flat[f"pauc_{machine_type}"] = values["pauc"]
    return flat


def epoch_reporters() -> tuple[Callable[[dict], None], tuple]:
    """How a trial's epochs reach Tune: in the trial's process, Tune's report; from Ray Train's workers, its
    callback."""
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    return ray.tune.report, (TuneReportCallback(),)


def report_trial(metrics: Metrics, model: str | Path) -> None:
    """A trial's last result: its mean and per-type AUC/pAUC and where its model is."""
    import ray.tune

    ray.tune.report(dict(flat_metrics(metrics), stage="evaluated", model=shared(model)))


def trial_folder(trials_dir: str) -> str | Path:
    """The running trial's folder (the same one when the sweep is restored)."""
    import ray.tune

    trial_id = ray.tune.get_context().get_trial_id()
    return f"{trials_dir}/{trial_id}" if is_uri(trials_dir) else Path(trials_dir) / trial_id


def concurrent_trials(scale: ScaleConfig, resources: dict) -> int:
    """As many trials as the cluster fits at once: GPUs per trial, or the CPUs a trial holds at its peak, the
    detector fit after stage 2: its inference actors (as many as train workers) and beside them the trial's own
    process, the Parquet reads and the per-type shuffle (whose aggregator reserves CPU too). Trials that together
    ask for more than the cluster has wait on each other's actors and can stall for good."""
    from rcmae.distributed.runtime import scaling_plan

    plan = scaling_plan(scale, resources)
    if plan.use_gpu:
        return max(1, int(resources.get("GPU", 0)) // max(1, plan.num_workers))
    per_trial = plan.num_workers * scale.cpus_per_worker + 1.0
    return max(1, int(float(resources.get("CPU", 1)) // per_trial))


SPACE_RECORD = "space.json"  # the space a sweep folder was started with: a resume must use the same


def space_settings(space: dict) -> dict:
    """The space as compared on resume: its top-level keys, with `set` and `params` one entry per config key."""
    flat = {key: value for key, value in space.items() if key not in ("set", "params")}
    for group in ("set", "params"):
        flat.update({f"{group}.{key}": value for key, value in (space.get(group) or {}).items()})
    return json.loads(json.dumps(flat))


def search_algorithm(space: dict):
    """None (Tune's own: every grid point, random draws) or Optuna's TPE, seeded, maximising the final AUC."""
    if space["search"] == "basic":
        return None
    from optuna.samplers import TPESampler
    from ray.tune.search.optuna import OptunaSearch

    seed = int(space.get("seed", 0))
    return OptunaSearch(metric="auc", mode="max", sampler=TPESampler(seed=seed))


def mlflow_callbacks(uri: str | None, name: str) -> list:
    """Ray's own MLflow logger: one MLflow run per trial (a restored sweep keeps the callbacks it started with)."""
    if uri is None:
        return []
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    from rcmae.tracking import require_mlflow

    require_mlflow()
    return [MLflowLoggerCallback(tracking_uri=uri, experiment_name=experiment_name(f"rcmae-tune-{name}"),
                                 tags={"rcmae.sweep": name})]


def run_tune(trial: Callable[..., None], space_path: str | Path, features_dir: str | Path, data_dir: str | Path,
             out_dir: str | Path, force: bool = False, mlflow_uri: str | None = None) -> Path:
    """Runs the sweep, each trial by `trial` (`rcmae.sweep.run_trial`, which the keyword arguments below are
    passed to with the trial's `params`), or resumes the interrupted one in out_dir/<name> (`force`: starts it again
    from nothing); writes trials.csv, trials.parquet, comparison.png and best.json there. With `mlflow_uri`, every
    trial is also an MLflow run (its parameters, each reported result, in the experiment `rcmae-tune-<name>`)."""
    import shutil

    import ray
    from ray import tune

    from rcmae.data.run_folder import check_settings

    space = load_space(space_path)
    base = base_config(space)
    out_dir = Path(out_dir).resolve()
    experiment = out_dir / space["name"]
    # in a store's folder, Tune's own files go to <name>/ray_results in the store (Tune writes them there itself;
    # a local sweep keeps them beside rcmae's), and every trial keeps its folder in the store
    in_store = mirror_of(experiment) is not None
    tune_storage = shared(experiment / "ray_results") if in_store else str(out_dir)
    tune_experiment = f"{tune_storage}/{space['name']}" if in_store else str(experiment)
    if force:
        clear(experiment / "ray_results")
        shutil.rmtree(experiment, ignore_errors=True)
    trainable = tune.with_parameters(
        tune.with_resources(trial, {"CPU": 0.1}), base=base.to_dict(),
        normalize_weights=bool(space.get("normalize_weights", True)),
        features_dir=shared(Path(features_dir).resolve()), data_dir=str(Path(data_dir).resolve()),
        trials_dir=shared(experiment / "trials"), report_epochs=space["search"] == "basic")
    limit = space.get("max_concurrent_trials") or concurrent_trials(base.scale, ray.cluster_resources())
    recorded = experiment / SPACE_RECORD
    if recorded.exists():
        check_settings(json.loads(recorded.read_text()), space_settings(space), experiment)
    if tune.Tuner.can_restore(tune_experiment):
        log.info(f"tune: resuming {space['name']} from {shared(experiment)} (finished trials are kept)")
        tuner = tune.Tuner.restore(tune_experiment, trainable, resume_unfinished=True, restart_errored=True,
                                   param_space=param_space(space))
    else:
        experiment.mkdir(parents=True, exist_ok=True)
        recorded.write_text(json.dumps(space_settings(space), indent=1))
        tuner = tune.Tuner(
            trainable, param_space=param_space(space),
            # no metric here: epochs report losses through TuneReportCallback and only the last result has AUC
            tune_config=tune.TuneConfig(num_samples=int(space.get("num_samples", 1)), max_concurrent_trials=limit,
                                        search_alg=search_algorithm(space)),
            run_config=tune.RunConfig(name=space["name"], storage_path=tune_storage,
                                      callbacks=mlflow_callbacks(mlflow_uri, space["name"])))
        log.info(f"tune: {space['name']} with up to {limit} concurrent trial(s); results in {shared(experiment)}")
    with sweep_interrupts() as interrupted:
        results = tuner.fit()
    if interrupted.is_set():
        finished = sum(1 for result in results if result.error is not None or "auc" in (result.metrics or {}))
        raise KeyboardInterrupt(f"the sweep stopped with {finished} of {len(results)} started trial(s) finished; "
                                f"its state is saved in {shared(experiment)}")
    return export_results(results, experiment, list((space.get("params") or {}).keys()))


def export_results(results, folder: Path, params: list[str]) -> Path:
    import pandas as pd

    from rcmae.evaluate.maps import pyplot

    plt = pyplot()

    rows = []
    for result in results:  # one row per trial, failed ones with their error
        metrics = result.metrics or {}
        row = {"trial_id": metrics.get("trial_id") or Path(result.path).name}
        row.update({f"config/{p}": (result.config or {}).get(p) for p in params})
        row.update({k: v for k, v in metrics.items() if k.startswith(("auc", "pauc")) or k == "model"})
        row["error"] = one_line(result.error) if result.error is not None else None
        rows.append(row)
    frame = pd.DataFrame(rows)
    if "auc" not in frame.columns:
        frame["auc"] = float("nan")
    frame = frame.sort_values("auc", ascending=False, na_position="last")
    folder.mkdir(parents=True, exist_ok=True)
    frame.to_csv(folder / "trials.csv", index=False)
    frame.to_parquet(folder / "trials.parquet", index=False)
    failed = frame["error"].notna()
    if failed.any():
        log.warning(f"tune: {int(failed.sum())} of {len(frame)} trial(s) failed; their errors are in "
                    f"{folder / 'trials.csv'}")
    frame = frame[frame["auc"].notna()]
    if frame.empty:
        raise RcmaeError(f"every trial failed ({len(rows)}); the first: {rows[0]['error']}; all errors in "
                         f"{folder / 'trials.csv'}")
    labels = [", ".join(f"{p.split('.')[-1]}={row[f'config/{p}']:.3g}" for p in params
                        if f"config/{p}" in frame.columns) or row["trial_id"] for _, row in frame.iterrows()]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(frame) + 1.5))
    positions = range(len(frame))
    ax.barh([p - 0.2 for p in positions], frame["auc"], height=0.4, label="AUC")
    ax.barh([p + 0.2 for p in positions], frame["pauc"], height=0.4, label="pAUC (p=0.1)")
    ax.set_yticks(list(positions), labels, fontsize=8)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.legend()
    ax.set_title("Trials: mean AUC / pAUC over machine types")
    fig.tight_layout()
    fig.savefig(folder / "comparison.png", dpi=120)
    plt.close(fig)
    best = frame.iloc[0].to_dict()
    (folder / "best.json").write_text(json.dumps(best, indent=1, default=str))
    log.info(f"tune: best trial {best['trial_id']} AUC {best['auc']:.4f} pAUC {best['pauc']:.4f}; "
          f"wrote {folder / 'trials.csv'}")
    return folder
