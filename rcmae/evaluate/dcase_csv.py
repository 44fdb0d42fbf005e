"""The DCASE 2020 result files: `anomaly_score_<type>_id_<XX>.csv` (file name, score) and
`decision_result_<type>_id_<XX>.csv` (file name, 0/1), both without a header."""

from __future__ import annotations

import csv
from pathlib import Path


def score_file(out: str | Path, machine_type: str, machine_id: str) -> Path:
    return Path(out) / f"anomaly_score_{machine_type}_id_{machine_id}.csv"


def decision_file(out: str | Path, machine_type: str, machine_id: str) -> Path:
    return Path(out) / f"decision_result_{machine_type}_id_{machine_id}.csv"


def write_rows(path: Path, rows: list[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def write_id_results(out: str | Path, machine_type: str, machine_id: str, files: list[str],
                     scores: list[float], decisions: list[int]) -> None:
    write_rows(score_file(out, machine_type, machine_id), [(f, repr(float(s))) for f, s in zip(files, scores)])
    write_rows(decision_file(out, machine_type, machine_id), [(f, int(d)) for f, d in zip(files, decisions)])


def read_scores(path: str | Path) -> dict[str, float]:
    with open(path, newline="") as handle:
        return {name: float(score) for name, score in csv.reader(handle)}
