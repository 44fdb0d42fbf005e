"""Reading back the DCASE result files the tests check (the library only writes them)."""

import csv


def read_scores(path) -> dict[str, float]:
    with open(path, newline="") as handle:
        return {name: float(score) for name, score in csv.reader(handle)}


def assert_metrics_match_score_files(evaluation, metrics: dict) -> None:
    """Each ID's AUC and pAUC in metrics.json are sklearn's on the DCASE score file the run wrote (labels from the
    file names), and the means are the per-type means' mean: the numbers are the files', not merely in [0, 1]."""
    from pathlib import Path

    import numpy as np
    import pytest
    from sklearn.metrics import roc_auc_score

    from rcmae.evaluate.dcase_csv import score_file

    assert metrics["per_id"], "no machine ID was scored"
    for row in metrics["per_id"]:
        scores = read_scores(score_file(Path(evaluation), row["machine_type"], row["machine_id"]))
        labels = [name.startswith("anomaly") for name in scores]
        assert row["auc"] == pytest.approx(roc_auc_score(labels, list(scores.values())))
        assert row["pauc"] == pytest.approx(roc_auc_score(labels, list(scores.values()), max_fpr=0.1))
    per_type = {t: np.mean([r["auc"] for r in metrics["per_id"] if r["machine_type"] == t])
                for t in {r["machine_type"] for r in metrics["per_id"]}}
    assert metrics["mean"]["auc"] == pytest.approx(np.mean(list(per_type.values())))
