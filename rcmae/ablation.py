"""The paper's Table 3 in one command: the same model trained with the diffusion augmentation and with the
paper's "Baseline" augmentation (random time and frequency masking), over several seeds, evaluated on the
same test split. Writes ablation.md (per type AUC / pAUC of both arms, mean and spread over seeds) and
ablation.json. Without AudioLDM weights (the `tiny` preset's factory-mix), the table says what stood in."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from rcmae.config import Config
from rcmae.errors import ConfigError
from rcmae.evaluate.metrics import Metrics
from rcmae.registry import AUGMENTERS, SCORES
from rcmae.sections import AugmentConfig

log = logging.getLogger(__name__)

MASKING = "masking"  # the paper's Baseline arm: random time and frequency masking


def arm_name(augment: AugmentConfig) -> str:
    if augment.augmenter == MASKING:
        return "Baseline (time and frequency masking)"
    return AUGMENTERS[augment.augmenter].ablation_arm.format(model=getattr(augment.options, "model", None))


def run_ablation(config: Config, data: str | Path, out: str | Path, seeds: tuple[int, ...] = (0, 1, 2)) -> Path:
    from rcmae.distributed.augment_pipeline import run_augment
    from rcmae.distributed.runtime import ensure_ray
    from rcmae.evaluate.results import write_scored
    from rcmae.stages import finetune, pretrain, score_test_split

    out = Path(out).resolve()
    if AUGMENTERS[config.augment.augmenter].ablation_arm is None:
        raise ConfigError("the ablation compares an augmenter against time/frequency masking: configure "
                         "augment.augmenter as audioldm (or factory-mix to stand in for it)")
    arms = {"augmented": config, "masking": config.override({"augment.augmenter": MASKING})}
    ensure_ray()
    results: dict[str, list[Metrics]] = {}
    for key, arm in arms.items():
        run_augment(data, out / key / "augment", arm)
        features = out / key / "augment" / "features"
        results[key] = []
        for seed in seeds:
            seeded = arm.override({"pretrain.seed": seed, "finetune.seed": seed})
            folder = out / key / f"seed_{seed}"
            pretrained = pretrain(seeded, features, folder / "pretrain")
            model = finetune(seeded, features, pretrained, folder / "finetune")
            scored = score_test_split(seeded.scale, model, features)
            results[key].append(write_scored(scored, model, folder / "evaluation"))
            log.info(f"ablate: {arm_name(arm.augment)} seed {seed}: mean AUC {results[key][-1].mean['auc']:.3f}")
    named = {arm_name(arms[key].augment): arm_results for key, arm_results in results.items()}
    (out / "ablation.md").write_text(ablation_table(named, config.score.method, seeds))
    (out / "ablation.json").write_text(json.dumps({name: [metrics.to_json() for metrics in arm_results]
                                                   for name, arm_results in named.items()}, indent=1))
    return out / "ablation.md"


def _cell(values: list[float]) -> str:
    return f"{np.mean(values):.3f}" + (f" ± {np.std(values):.3f}" if len(values) > 1 else "")


def ablation_table(results: dict[str, list[Metrics]], method: str, seeds: tuple[int, ...]) -> str:
    """Markdown: one row per arm, AUC and pAUC per machine type and their mean, mean ± std over seeds."""
    types = sorted(next(iter(results.values()))[0].per_type)
    lines = ["# Augmentation ablation (the paper's Table 3)\n",
             f"Score `{method}` ({SCORES[method].origin}); seeds {', '.join(map(str, seeds))}; mean ± std over "
             f"seeds. pAUC is the DCASE value (max_fpr 0.1).\n",
             "| augmentation | metric | " + " | ".join(types) + " | mean |",
             "|---|---|" + "---|" * (len(types) + 1)]
    for name, runs in results.items():
        for metric in ("auc", "pauc"):
            cells = [_cell([r.per_type[t][metric] for r in runs]) for t in types]
            lines.append(f"| {name} | {metric.upper()} | " + " | ".join(cells)
                         + f" | **{_cell([r.mean[metric] for r in runs])}** |")
    return "\n".join(lines) + "\n"
