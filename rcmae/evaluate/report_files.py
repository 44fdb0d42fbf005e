"""Write one model's test scores as the DCASE CSVs and metrics.json (shared by RC-MAE and the AE baseline)."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from rcmae.evaluate.dcase_csv import write_id_results
from rcmae.evaluate.metrics import id_metrics, summarize


def write_evaluation(out: str | Path, rows: list[dict], scores: np.ndarray, decisions: np.ndarray,
                     max_fpr: float = 0.1, extra: dict | None = None) -> dict:
    """`rows` hold machine_type, machine_id, file_name and label per scored clip. Writes the CSVs for every
    ID, and metrics for every ID with both normal and anomalous clips; returns (and writes) metrics.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[(row["machine_type"], row["machine_id"])].append(i)
    per_id = []
    for (machine_type, machine_id), idx in sorted(groups.items()):
        write_id_results(out, machine_type, machine_id, [rows[i]["file_name"] for i in idx],
                         [scores[i] for i in idx], [decisions[i] for i in idx])
        labels = np.array([rows[i]["label"] == "anomaly" for i in idx], dtype=int)
        labelled = all(rows[i]["label"] in ("normal", "anomaly") for i in idx)
        if labelled and 0 < labels.sum() < len(labels):
            per_id.append(dict(machine_type=machine_type, machine_id=machine_id,
                               **id_metrics(labels, scores[idx], max_fpr)))
    metrics = summarize(per_id) if per_id else {"per_id": [], "per_type": {}, "mean": {}}
    metrics.update(extra or {})
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    return metrics
