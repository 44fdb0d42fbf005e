"""Results per fault family: data whose anomalies are labelled with the fault that made them (the toy
factory's manifest.json) get AUC/pAUC per machine type and family, and per kind of fault ("timing" against
"added-sound", `rcmae.data.sound_models.FAULT_KINDS`), each family's anomalies against all of the ID's
normal test clips."""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from rcmae.data.paths import path_text
from rcmae.data.sound_models import FAULT_KINDS
from rcmae.evaluate.metrics import auc, pauc_dcase

MANIFEST = "manifest.json"


def clip_key(path: str | Path) -> str:
    """One spelling of a clip's path for the manifest's clips and the scored rows alike."""
    return path_text(os.path.normpath(Path(path).resolve()))


def manifest_records(data_dir: str | Path | None, field: str) -> dict[str, object]:
    """Absolute clip path -> `field` of every clip record of the data's manifest that has it; empty for data
    without a manifest (real recordings). The manifest sits at the data root, at or above `data_dir`."""
    if data_dir is None:
        return {}
    folder = Path(data_dir).resolve()
    for root in [folder, *folder.parents][:4]:
        if (root / MANIFEST).is_file():
            clips = json.loads((root / MANIFEST).read_text()).get("clips", {})
            return {clip_key(root / relative): record[field] for relative, record in clips.items() if field in record}
    return {}


def fault_families(data_dir: str | Path | None) -> dict[str, str]:
    """Absolute clip path -> fault family for every anomalous clip the toy factory's manifest labels."""
    return manifest_records(data_dir, "family")


def fault_regions(data_dir: str | Path | None) -> dict[str, dict]:
    """Absolute clip path -> where its fault sounds (`spans` in seconds, `band_hz`) for every anomalous clip the
    toy factory's manifest locates."""
    return manifest_records(data_dir, "region")


def family_metrics(rows: list[dict], scores: np.ndarray, families: dict[str, str], max_fpr: float = 0.1) -> dict:
    """`per_family`: per machine type and family, the mean over the type's IDs of AUC/pAUC of that family's
    anomalies against the ID's normals; `per_kind`: the mean of those rows per kind of fault."""
    by_id: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        by_id[(row["machine_type"], row["machine_id"])].append(i)
    cells: dict[tuple[str, str], list[tuple[float, float, int]]] = defaultdict(list)
    for (machine_type, _), idx in sorted(by_id.items()):
        normals = [i for i in idx if rows[i]["label"] == "normal"]
        found = defaultdict(list)
        for i in idx:
            family = families.get(clip_key(rows[i]["path"]))
            if rows[i]["label"] == "anomaly" and family is not None:
                found[family].append(i)
        for family, anomalies in found.items():
            if not normals:
                continue
            labels = np.array([0] * len(normals) + [1] * len(anomalies))
            values = scores[normals + anomalies]
            cells[(machine_type, family)].append((auc(labels, values), pauc_dcase(labels, values, max_fpr),
                                                 len(anomalies)))
    per_family = [dict(machine_type=machine_type, family=family, kind=FAULT_KINDS.get(family, "unknown"),
                       auc=float(np.mean([c[0] for c in found])), pauc=float(np.mean([c[1] for c in found])),
                       n_anomaly=int(sum(c[2] for c in found)))
                  for (machine_type, family), found in sorted(cells.items())]
    per_kind = {}
    for kind in sorted({row["kind"] for row in per_family}):
        of_kind = [row for row in per_family if row["kind"] == kind]
        per_kind[kind] = dict(auc=float(np.mean([r["auc"] for r in of_kind])),
                              pauc=float(np.mean([r["pauc"] for r in of_kind])), families=len(of_kind))
    return {"per_family": per_family, "per_kind": per_kind}
