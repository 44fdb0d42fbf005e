"""`rcmae score`: anomaly scores and decisions for single recordings, each failure listed with its reason."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from rcmae.config import Config
from rcmae.data.feature_table import META_COLUMNS, machine_keys
from rcmae.data.layout import SCHEMA as CLIP_SCHEMA
from rcmae.data.layout import LayoutError, parse_clip_name
from rcmae.detect.apply import score_rows
from rcmae.detect.encode import score_column, score_values
from rcmae.evaluate.results import decisions
from rcmae.evaluate.test_split import featurized_rows
from rcmae.models.checkpoint import read_meta


@dataclass
class ScoredRecordings:
    rows: list[dict]      # file, machine_type, machine_id, score, decision: one per scored recording
    failures: list[dict]  # file, reason: one per recording that could not be scored


def recordings(paths: list[str]) -> list[str]:
    """The paths given, a folder standing for the .wav files under it."""
    found = []
    for path in paths:
        if Path(path).is_dir():
            found += sorted(str(p) for p in Path(path).rglob("*") if p.suffix.lower() == ".wav" and p.is_file())
        else:
            found.append(path)
    return found


def score_recordings(checkpoint_dir: str | Path, paths: list[str], machine_type: str | None = None,
                     machine_id: str | None = None, method: str | None = None) -> ScoredRecordings:
    """Scores every readable recording of a machine the model knows; the others are listed with their reason
    (not found, name outside the DCASE grammar, unreadable audio, unknown machine); a folder stands for its .wav
    files. The machine comes from the
    DCASE file name, or from `machine_type` / `machine_id` (a number, zero-padded as DCASE's) for other names."""
    meta = read_meta(checkpoint_dir)
    config = Config.from_dict(meta["config"])
    method = method or config.score.method
    if machine_id is not None and machine_id.isdigit():
        machine_id = f"{int(machine_id):02d}"
    clips, failures = [], []
    for path in recordings(paths):
        if not Path(path).is_file():
            failures.append(dict(file=str(path), reason="not found"))
        elif machine_type and machine_id:
            clips.append(dict(path=str(path), file_name=Path(path).name, machine_type=machine_type,
                              machine_id=machine_id, split="test", label="unknown", domain="unknown", attributes=""))
        else:
            try:
                clips.append(parse_clip_name(Path(path)))
            except LayoutError as error:
                failures.append(dict(file=str(path), reason=f"{error} (or pass --machine-type and --machine-id)"))
    readable = list(featurized_rows(pa.Table.from_pylist(clips, schema=CLIP_SCHEMA), config, failures=failures))
    rows = []
    if readable:
        scored = score_rows(checkpoint_dir, readable)
        unknown = pc.is_null(scored[score_column(method)])
        known_keys = ", ".join(meta.get("classes", []))
        failures += [dict(file=p, reason=f"unknown machine {k} (this model knows {known_keys})")
                     for p, k in zip(scored.filter(unknown)["path"].to_pylist(), machine_keys(scored.filter(unknown)))]
        scored = scored.filter(pc.invert(unknown))
        flags = decisions(scored, method, meta["detector"]["thresholds"])
        rows = [dict(file=m["path"], machine_type=m["machine_type"], machine_id=m["machine_id"], score=float(s),
                     decision=int(d))
                for m, s, d in zip(scored.select(META_COLUMNS).to_pylist(), score_values(scored, method),
                                   flags)]
    return ScoredRecordings(rows, failures)
