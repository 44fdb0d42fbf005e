"""A model's test scores as result files: the DCASE CSVs and metrics.json (`write_evaluation`, shared by
RC-MAE and the AE baseline), and for RC-MAE every score method's (`write_scored`).

Scoring produces a small table (clip metadata and one `score_<method>` column per score method); everything
here works from that table, whether it was scored in-process (`rcmae.detect.apply`) or by Ray Data batch
inference (`rcmae.distributed.inference`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rcmae.data.classes import machines_of
from rcmae.data.feature_table import META_COLUMNS, machine_keys
from rcmae.data.layout import DCASE2021_TEST_FOLDERS
from rcmae.data.run_folder import written_aside
from rcmae.detect.apply import score_rows
from rcmae.detect.encode import score_column, score_values
from rcmae.errors import DataError
from rcmae.evaluate.dcase_csv import write_id_results
from rcmae.evaluate.families import family_metrics, fault_families
from rcmae.evaluate.metrics import Metrics, id_metrics, section_domain_metrics, summarize, summarize_domains
from rcmae.evaluate.test_split import data_test_split, feature_test_split
from rcmae.models.checkpoint import CheckpointMeta, read_meta
from rcmae.registry import SCORES
from rcmae.stores import fetched
from rcmae.tracking import write_final_metrics

log = logging.getLogger(__name__)


def write_evaluation(out: str | Path, rows: list[dict], scores: np.ndarray, decisions: np.ndarray,
                     max_fpr: float = 0.1, method: str | None = None, train_seconds: float | None = None,
                     families: dict[str, str] | None = None,
                     expected: list[str] | None = None) -> Metrics:
    """`rows` hold path, machine_type, machine_id, file_name, label and domain per scored clip. Writes the CSVs
    for every ID (or section), and metrics for every one with both normal and anomalous clips; for data with a
    target domain also DCASE 2021-2025's per-domain scores (`domains`); with `families` (clip path -> fault
    family), results per fault family (`families`); IDs that cannot be scored (clips of one kind only, or, of the
    `expected` machine keys, none at all) are listed with the reason (`not_evaluated`). Returns (and writes)
    metrics.json."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    groups: dict[tuple[str, str], list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        groups[(row["machine_type"], row["machine_id"])].append(i)
    per_id, per_section, not_evaluated = [], [], []
    rule = "dcase2021" if any(Path(row["path"]).parent.name in DCASE2021_TEST_FOLDERS for row in rows
                              if row.get("path")) else "dcase2022"
    for (machine_type, machine_id), idx in sorted(groups.items()):
        write_id_results(out, machine_type, machine_id, [rows[i]["file_name"] for i in idx],
                         [scores[i] for i in idx], [decisions[i] for i in idx])
        labels = np.array([rows[i]["label"] == "anomaly" for i in idx], dtype=int)
        labelled = all(rows[i]["label"] in ("normal", "anomaly") for i in idx)
        if labelled and labels.sum() in (0, len(labels)):  # AUC needs both: said, never dropped in silence
            not_evaluated.append(dict(machine_type=machine_type, machine_id=machine_id, reason=(
                f"its {len(labels)} test clip(s) are all {'anomalous' if labels.sum() else 'normal'}: "
                f"AUC and pAUC need both kinds")))
        if labelled and 0 < labels.sum() < len(labels):
            key = dict(machine_type=machine_type, machine_id=machine_id)
            per_id.append(dict(key, **id_metrics(labels, scores[idx], max_fpr, np.asarray(decisions)[idx])))
            domains = np.array([rows[i].get("domain", "source") for i in idx])
            if "target" in domains:
                per_section.append(dict(key, **section_domain_metrics(labels, scores[idx], domains, max_fpr,
                                                                                rule)))
    for key in sorted(set(expected or ()) - {f"{t}/{i}" for t, i in groups}):
        machine_type, machine_id = key.split("/", 1)
        not_evaluated.append(dict(machine_type=machine_type, machine_id=machine_id, reason="no test clips"))
    metrics = summarize(per_id)
    metrics.not_evaluated, metrics.method, metrics.train_seconds = not_evaluated, method, train_seconds
    if per_section:
        metrics.domains = summarize_domains(per_section, rule)
    if families:
        by_family = family_metrics(rows, np.asarray(scores, dtype=float), families, max_fpr)
        metrics.families = by_family if by_family["per_family"] else None
    metrics.write(out)
    return metrics


def not_evaluated_line(not_evaluated: list[dict]) -> str:
    """One line naming the machine IDs left out of the metrics and why."""
    return (f"{len(not_evaluated)} machine ID(s) left out of the metrics and their means: "
            + "; ".join(f"{row['machine_type']}/{row['machine_id']} ({row['reason']})" for row in not_evaluated))


def known_rows(scored: pa.Table) -> pa.Table:
    """Rows whose machine the model knows; the others are reported and left out."""
    nulls = [pc.is_null(scored[score_column(method)]) for method in SCORES]
    unknown = nulls[0]
    for null in nulls[1:]:
        unknown = pc.and_(unknown, null)
    for key in sorted(set(machine_keys(scored.filter(unknown)))):
        log.warning(f"skipped: machine {key} was not seen in training")
    return scored.filter(pc.invert(unknown))


def decisions(scored: pa.Table, method: str, meta: CheckpointMeta) -> np.ndarray:
    per_key = meta.thresholds(method)
    scores = score_values(scored, method)
    return np.array([int(s > per_key[k]) for k, s in zip(machine_keys(scored), scores)])


def write_scored(scored: pa.Table, model_dir: str | Path, out_dir: str | Path, method: str | None = None,
                 families: dict[str, str] | None = None) -> Metrics:
    """DCASE CSVs and metrics.json of `method` (the model's configured one by default) in `out_dir`, the
    other methods' under `out_dir/other_methods/`; metrics.json's `methods` compares their means (and, with
    `families`, every method's results per fault family)."""
    meta = read_meta(model_dir)
    score_config = meta.score
    method = method or score_config.method
    scored = known_rows(scored)
    if scored.num_rows == 0:
        raise DataError("no test clip of a machine the model knows")
    rows = scored.select(META_COLUMNS).to_pylist()
    comparison = {}
    with written_aside(out_dir, replace_whole=False) as staging:
        for other in SCORES:
            if other != method:
                comparison[other] = write_evaluation(
                    staging / "other_methods" / other, rows, score_values(scored, other),
                    decisions(scored, other, meta), score_config.max_fpr, families=families).mean
        metrics = write_evaluation(staging, rows, score_values(scored, method),
                                   decisions(scored, method, meta), score_config.max_fpr,
                                   method=method, families=families, expected=machines_of(meta.classes))
        metrics.methods = {method: metrics.mean, **comparison}
        if metrics.not_evaluated:
            log.warning("evaluation: %s", not_evaluated_line(metrics.not_evaluated))
        metrics.write(staging)
        write_final_metrics(staging, metrics)
    return metrics


def evaluate_checkpoint(checkpoint_dir: str | Path, data_dir: str | Path | None, out_dir: str | Path,
                        method: str | None = None, features_dir: str | Path | None = None) -> Metrics:
    """In-process: scores the test clips (from `features_dir`'s Parquet, else read from `data_dir`) and
    writes the DCASE CSVs and metrics.json to `out_dir` (with per-family results for labelled faults)."""
    checkpoint_dir = fetched(checkpoint_dir)  # a store URI: its local copy
    if features_dir is not None:
        rows = feature_test_split(features_dir)
    elif data_dir is not None:
        meta = read_meta(checkpoint_dir)
        rows = data_test_split(data_dir, meta.audio, meta.features)
    else:
        raise DataError("evaluate needs test clips: a data folder or a feature folder")
    return write_scored(score_rows(checkpoint_dir, rows), checkpoint_dir, out_dir, method,
                        families=fault_families(data_dir))
