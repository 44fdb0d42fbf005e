"""The DCASE result files, both without a header: `anomaly_score_<type>_id_<XX>.csv` (file name, score) and
`decision_result_<type>_id_<XX>.csv` (file name, 0/1) as DCASE 2020's evaluator reads them, and
`anomaly_score_<type>_section_<XX>_test.csv` / `decision_result_<type>_section_<XX>_test.csv` for data named
as DCASE 2021-2025 (`section_XX_...` files), as those years' evaluators read them."""

from __future__ import annotations

import csv
from pathlib import Path


def is_sectioned(file_names: list[str]) -> bool:
    """Files named as DCASE 2021-2025 (`section_XX_...`), whose machine IDs are sections."""
    return bool(file_names) and all(name.startswith("section_") for name in file_names)


def _suffix(machine_id: str, sections: bool) -> str:
    return f"section_{machine_id}_test" if sections else f"id_{machine_id}"


def score_file(out: str | Path, machine_type: str, machine_id: str, sections: bool = False) -> Path:
    return Path(out) / f"anomaly_score_{machine_type}_{_suffix(machine_id, sections)}.csv"


def decision_file(out: str | Path, machine_type: str, machine_id: str, sections: bool = False) -> Path:
    return Path(out) / f"decision_result_{machine_type}_{_suffix(machine_id, sections)}.csv"


def write_rows(path: Path, rows: list[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        csv.writer(handle, lineterminator="\n").writerows(rows)


def write_id_results(out: str | Path, machine_type: str, machine_id: str, files: list[str],
                     scores: list[float], decisions: list[int]) -> None:
    sections = is_sectioned(files)
    write_rows(score_file(out, machine_type, machine_id, sections),
               [(f, repr(float(s))) for f, s in zip(files, scores)])
    write_rows(decision_file(out, machine_type, machine_id, sections), [(f, int(d)) for f, d in zip(files, decisions)])
