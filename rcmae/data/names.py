"""The DCASE file-name grammars, and what a name says of its clip's machine and attributes. Standard library only:
the edge runtime (`rcmae.edge`) reads names with it too."""

from __future__ import annotations

import re
from pathlib import Path

DCASE2020 = re.compile(r"^(?P<label>normal|anomaly)_id_(?P<id>\d{2})_(?P<num>\d+)$")
DCASE2020_UNLABELLED = re.compile(r"^id_(?P<id>\d{2})_(?P<num>\d+)$")
DCASE2021 = re.compile(
    r"^section_(?P<id>\d{2})_(?P<domain>source|target)_(?P<split>train|test)_"
    r"(?P<label>normal|anomaly)_(?P<num>\d+)(?:_(?P<attrs>.+))?$")
DCASE2021_UNLABELLED = re.compile(
    r"^section_(?P<id>\d{2})(?:_(?P<domain>source|target)_(?P<split>test))?_(?P<num>\d+)$")

EXPECTED_PATTERNS = (
    "{normal,anomaly}_id_XX_NNNNNNNN.wav (DCASE 2020)",
    "id_XX_NNNNNNNN.wav (DCASE 2020 eval test, unlabelled)",
    "section_XX_{source,target}_{train,test}_{normal,anomaly}_NNNN[_attributes].wav (DCASE 2021-2025)",
    "section_XX[_{source,target}_test]_NNNN.wav (DCASE 2021-2025 eval test, unlabelled)",
)


def machine_id_of(file_name: str) -> str | None:
    """The machine ID (DCASE 2021+: section) a DCASE file name carries; None for other names."""
    stem = Path(file_name).stem
    for grammar in (DCASE2020, DCASE2020_UNLABELLED, DCASE2021, DCASE2021_UNLABELLED):
        if match := grammar.match(stem):
            return match["id"]
    return None


def attributes_of(file_name: str) -> str:
    """The attribute string a DCASE 2021-2025 file name carries (`vel_8_loc_A`); "" for other names."""
    match = DCASE2021.match(Path(file_name).stem)
    return (match["attrs"] or "") if match else ""


def dcase_id(machine_id: str | int) -> str:
    """A machine ID as DCASE writes it: a number zero-padded to two digits (7 -> "07"), anything else as given."""
    return f"{int(machine_id):02d}" if str(machine_id).isdigit() else str(machine_id)
