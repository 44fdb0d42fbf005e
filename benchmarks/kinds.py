"""Shared by the offline feature checks (temporal_stats.py, modulation.py): the mean AUC over machine types, and
the table of each candidate's mean AUC and per-kind AUC averaged over data sets."""

from __future__ import annotations

from collections import defaultdict

import numpy as np
from sklearn.metrics import roc_auc_score


def mean_auc(rows: list[dict], scores: np.ndarray) -> float:
    """Per-ID AUC of all anomalies against the ID's normals, averaged per machine type, then over types."""
    by_type: dict[str, list[float]] = defaultdict(list)
    for key in sorted({(r["machine_type"], r["machine_id"]) for r in rows}):
        mine = [i for i, r in enumerate(rows) if (r["machine_type"], r["machine_id"]) == key]
        labels = [rows[i]["label"] == "anomaly" for i in mine]
        if 0 < sum(labels) < len(labels):
            by_type[key[0]].append(roc_auc_score(labels, scores[mine]))
    return float(np.mean([np.mean(v) for v in by_type.values()]))


def print_table(results: dict[str, list[dict]], first_column: str, sets: int) -> None:
    """`results`: candidate -> one {"mean": AUC, kind: AUC, ...} per data set; printed as a Markdown table."""
    kinds = sorted({k for found in results.values() for row in found for k in row if k != "mean"})
    print(f"\n{sets} data set(s); mean AUC over types, then per kind of fault (mean over data sets)")
    print(f"| {first_column} | mean | " + " | ".join(kinds) + " |")
    print("|---|---:|" + "---:|" * len(kinds))
    for name, found in results.items():
        cells = [f"{np.mean([r.get(k, np.nan) for r in found]):.3f}" for k in ["mean", *kinds]]
        print(f"| {name} | " + " | ".join(cells) + " |")
