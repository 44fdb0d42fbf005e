"""Do the anomaly maps point at the fault? Measured on a toy-factory run, whose manifest records where each
anomaly's fault sounds (time spans and frequency band).

For every test anomaly whose fault left a trace in some but not all patches of the grid:
- pointing game: is the map's highest patch inside the true region? Beside it, the hit rate of a random patch
  (the region's mean share of the grid).
- patch AUROC: the map's values against the region's patches, pooled over the clips (MVTec AD's pixel AUROC at
  patch resolution).
- faithfulness: the clip's score (the run's method) after the model reconstructs its top-k flagged patches
  from the rest (k = the patch score's top share), against after it reconstructs k random patches. A map that
  points at the fault lowers the score more than random patches do.
Per kind of fault (timing, added-sound), as the family tables split them.

    python benchmarks/localise.py --run runs/main
    python benchmarks/localise.py --run runs/families/hard/seed_0 --data runs/families/hard/data_seed_0
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from sklearn.metrics import roc_auc_score

from rcmae.data.classes import ClipClasses
from rcmae.data.feature_table import machine_keys, specs_from_column
from rcmae.data.sound_models import FAULT_KINDS
from rcmae.detect.detector import anomaly_scores
from rcmae.detect.detector_files import load_detector
from rcmae.detect.encode import encode_all
from rcmae.detect.patches import TOP_SHARE
from rcmae.detect.scores import patch_maps
from rcmae.evaluate.families import clip_key, fault_families, fault_regions
from rcmae.evaluate.maps import region_mask
from rcmae.evaluate.test_split import feature_test_split
from rcmae.features import unpatchify
from rcmae.models.checkpoint import load_checkpoint

RANDOM_DRAWS = 3  # random patch sets per clip, averaged


@torch.no_grad()
def reconstructed(checkpoint, specs: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    """Log-mels with their `hidden` patches (N, rows, cols) replaced by the model's reconstruction from the rest."""
    model, normalizer, features = checkpoint.model.eval(), checkpoint.normalizer, checkpoint.config.features
    normalised = torch.as_tensor(normalizer(specs), dtype=torch.float32)
    flat = torch.as_tensor(hidden.reshape(len(hidden), -1))
    latent, _, ids_restore = model.encode(normalised, hidden=flat)
    predicted = model.decode(latent, ids_restore)
    patches = torch.where(flat[..., None], predicted, model.patchify(normalised))
    replaced = unpatchify(patches, features.grid, features.patch_freq, features.patch_time).numpy()
    return replaced * normalizer.std[:, None] + normalizer.mean[:, None]


def top_k(maps: np.ndarray, k: int) -> np.ndarray:
    flat = maps.reshape(len(maps), -1)
    hidden = np.zeros(flat.shape, dtype=bool)
    np.put_along_axis(hidden, np.argsort(-flat, axis=1)[:, :k], True, axis=1)
    return hidden.reshape(maps.shape)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="an `rcmae run` folder on the toy factory")
    parser.add_argument("--data", type=Path, help="the toy factory the run used (default: RUN/data, where "
                                                  "`rcmae run` synthesises it)")
    parser.add_argument("--method", help="score for faithfulness (default: the model's)")
    args = parser.parse_args()
    data = args.data or args.run / "data"
    model_dir = args.run / "finetune" / "model"
    checkpoint, detector = load_checkpoint(model_dir), load_detector(model_dir)
    config = checkpoint.config
    method = args.method or config.score.method
    regions, families = fault_regions(data), fault_families(data)
    table = pa.concat_tables(feature_test_split(args.run / "augment" / "features"))  # toy data: small
    paths = table["path"].to_pylist()
    masks = {i: region_mask(regions[clip_key(p)], config.features, config.audio.sample_rate)
             for i, p in enumerate(paths) if clip_key(p) in regions}
    rows = [i for i, mask in masks.items() if 0 < mask.sum() < mask.size]
    print(f"{args.run}: {len(masks)} located test anomalies, {len(rows)} with a region covering some but not all "
          f"of the {config.features.grid[0]} x {config.features.grid[1]} patches")
    specs = specs_from_column(table["features"].take(rows), config.features.n_mels, config.features.n_frames)
    keys = [machine_keys(table)[i] for i in rows]
    kinds = np.array([FAULT_KINDS.get(families[clip_key(paths[i])], "unknown") for i in rows])
    truth = np.stack([masks[i] for i in rows])

    encoded = encode_all(checkpoint.model, specs, checkpoint.normalizer)
    maps = patch_maps(encoded, keys, detector)
    k = max(1, int(round(TOP_SHARE * truth[0].size)))

    def rescore(hidden: np.ndarray) -> np.ndarray:
        again = encode_all(checkpoint.model, reconstructed(checkpoint, specs, hidden), checkpoint.normalizer)
        return anomaly_scores(method, again, keys, ClipClasses.of_machines(checkpoint.classes, keys), detector)

    before = anomaly_scores(method, encoded, keys, ClipClasses.of_machines(checkpoint.classes, keys), detector)
    flagged = rescore(top_k(maps, k))
    rng = np.random.default_rng(0)
    random = np.mean([rescore(top_k(rng.random(maps.shape), k)) for _ in range(RANDOM_DRAWS)], axis=0)

    peaks = truth.reshape(len(rows), -1)[np.arange(len(rows)), maps.reshape(len(rows), -1).argmax(axis=1)]
    print(f"faithfulness: `{method}` score after reconstructing the {k} top-flagged vs {k} random patches "
          f"({RANDOM_DRAWS} draws)")
    print("| faults | clips | region share (random hit) | pointing hit rate | patch AUROC | score | after top-k | "
          "after random k | clips lowered more by top-k |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind in ["all"] + sorted(set(kinds)):
        sel = np.ones(len(rows), dtype=bool) if kind == "all" else kinds == kind
        auroc = roc_auc_score(truth[sel].ravel(), maps[sel].ravel())
        print(f"| {kind} | {sel.sum()} | {truth[sel].mean():.3f} | {peaks[sel].mean():.3f} | {auroc:.3f} | "
              f"{np.median(before[sel]):.3g} | {np.median(flagged[sel]):.3g} | {np.median(random[sel]):.3g} | "
              f"{np.mean(flagged[sel] < random[sel]):.3f} |")
    print("(scores: medians over the clips)")


if __name__ == "__main__":
    main()
