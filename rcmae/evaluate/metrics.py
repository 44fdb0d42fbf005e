"""DCASE metrics: AUC and pAUC per machine ID, averaged per type, then over types (DCASE 2020); for data with
a source and a target domain, DCASE 2021-2025's per-section scores and their harmonic mean (`domain_metrics`).

`pauc` is what the DCASE evaluators compute: sklearn's `roc_auc_score(y, s, max_fpr=p)`, McClish-
standardised so that a random detector scores 0.5 and a perfect one 1. `pauc_eq12` is the paper's
Eq. 12 taken literally: the share of correctly ranked (anomaly, normal) pairs among the floor(p * N-)
highest-scoring normals, i.e. the raw partial ROC area divided by p (random about p/2 = 0.05, perfect 1).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.stats import hmean
from sklearn.metrics import precision_recall_fscore_support, roc_auc_score

METRICS_FILE = "metrics.json"


def auc(labels: np.ndarray, scores: np.ndarray) -> float:
    return float(roc_auc_score(labels, scores))


def pauc_dcase(labels: np.ndarray, scores: np.ndarray, max_fpr: float = 0.1) -> float:
    return float(roc_auc_score(labels, scores, max_fpr=max_fpr))


def pauc_eq12(labels: np.ndarray, scores: np.ndarray, p: float = 0.1) -> float | None:
    """Eq. 12: mean over the floor(p*N-) top-scoring normals x_i- and all anomalies x_j+ of
    H(A(x_j+) - A(x_i-)), with H(0) = 1/2 for ties. None where it is undefined: floor(p*N-) = 0 (fewer than
    1/p normal clips) or no anomaly."""
    labels = np.asarray(labels).astype(bool)
    scores = np.asarray(scores, dtype=float)
    normals = np.sort(scores[~labels])[::-1]
    anomalies = scores[labels]
    count = math.floor(p * len(normals))
    if count == 0 or len(anomalies) == 0:
        return None
    diff = anomalies[None, :] - normals[:count, None]
    return float(np.mean((diff > 0) + 0.5 * (diff == 0)))


def decision_metrics(labels: np.ndarray, decisions: np.ndarray) -> dict:
    """Precision, recall and F1 of the decisions, anomalous the positive class (the figures the DCASE 2021-2025
    evaluators print beside AUC), 0 where undefined (no clip decided anomalous, or none is)."""
    precision, recall, f1, _ = precision_recall_fscore_support(np.asarray(labels).astype(int),
                                                               np.asarray(decisions).astype(int), average="binary",
                                                               zero_division=0)
    return dict(precision=float(precision), recall=float(recall), f1=float(f1))


def id_metrics(labels: np.ndarray, scores: np.ndarray, max_fpr: float = 0.1,
               decisions: np.ndarray | None = None) -> dict:
    """AUC, both pAUCs and the counts of one ID's labelled test clips; with `decisions`, their precision, recall
    and F1 too."""
    labels = np.asarray(labels).astype(int)
    row = dict(auc=auc(labels, scores), pauc=pauc_dcase(labels, scores, max_fpr),
               pauc_eq12=pauc_eq12(labels, scores, max_fpr),
               n_normal=int((labels == 0).sum()), n_anomaly=int((labels == 1).sum()))
    if decisions is not None:
        row.update(decision_metrics(labels, decisions))
    if row["pauc_eq12"] is None:
        row["note"] = (f"pauc_eq12 undefined: Eq. 12 needs at least {math.ceil(1 / max_fpr)} normal clips "
                       f"(floor(p * N-) >= 1), this ID has {row['n_normal']}")
    return row


def _mean(values: list[float | None]) -> float | None:
    """The mean of the defined values (None when none is)."""
    defined = [v for v in values if v is not None]
    return float(np.mean(defined)) if defined else None


@dataclass
class DomainMetrics:
    """DCASE 2021-2025's scores (`summarize_domains`): `per_section` rows (machine_type, section, auc_source,
    auc_target, pauc, n_normal_<domain>; under `rule` dcase2021 pauc_source and pauc_target instead of pauc); per
    machine type and overall the harmonic means of each over the sections, and `hmean` of all of them (the
    official score)."""

    per_section: list[dict] = field(default_factory=list)
    per_type: dict[str, dict[str, float]] = field(default_factory=dict)
    mean: dict[str, float] = field(default_factory=dict)
    rule: str = "dcase2022"  # one of RULES

    @property
    def official(self) -> float:
        return self.mean["hmean"]


@dataclass
class Metrics:
    """An evaluation's results as metrics.json holds them. `per_id` rows: machine_type, machine_id, auc, pauc,
    pauc_eq12, n_normal, n_anomaly (and a `note` where pauc_eq12 is undefined); `per_type` and `mean`: their
    arithmetic means per machine type, then over types (as DCASE 2020). Present where they apply: `method`, the
    score (or reference) the results are of; `methods`, every score method's `mean` (an RC-MAE evaluation);
    `not_evaluated`, the machine IDs left out and why; `domains`, DCASE 2021-2025's per-section scores
    (`summarize_domains`); `families`, results per fault family (`rcmae.evaluate.families`); `train_seconds`, a
    reference's fitting time."""

    per_id: list[dict] = field(default_factory=list)
    per_type: dict[str, dict[str, float | None]] = field(default_factory=dict)
    mean: dict[str, float | None] = field(default_factory=dict)
    not_evaluated: list[dict] = field(default_factory=list)
    domains: DomainMetrics | None = None
    families: dict | None = None
    method: str | None = None
    train_seconds: float | None = None
    methods: dict[str, dict[str, float | None]] = field(default_factory=dict)

    def to_json(self) -> dict:
        """The three summaries, then each part that applies (in the fields' order)."""
        data = dataclasses.asdict(self)
        return {name: value for name, value in data.items()
                if name in ("per_id", "per_type", "mean") or value not in (None, [], {})}

    @classmethod
    def from_json(cls, data: dict) -> "Metrics":
        known = {f.name for f in dataclasses.fields(cls)}
        metrics = cls(**{name: value for name, value in data.items() if name in known})
        if metrics.domains is not None:
            metrics.domains = DomainMetrics(**metrics.domains)
        return metrics

    @classmethod
    def read(cls, path: str | Path) -> "Metrics":
        return cls.from_json(json.loads(Path(path).read_text()))

    def write(self, folder: str | Path) -> None:
        (Path(folder) / METRICS_FILE).write_text(json.dumps(self.to_json(), indent=1))


def summarize(per_id: list[dict]) -> Metrics:
    """`per_id` rows hold machine_type, machine_id, auc, pauc (and more): their means per type and then over
    types (as DCASE 2020)."""
    by_type: dict[str, list[dict]] = defaultdict(list)
    for row in per_id:
        by_type[row["machine_type"]].append(row)
    keys = ("auc", "pauc", "pauc_eq12", "precision", "recall", "f1")
    per_type = {t: {k: _mean([r[k] for r in rows]) for k in keys if k in rows[0]}
                for t, rows in sorted(by_type.items())}
    mean = {k: _mean([v[k] for v in per_type.values()]) for k in keys if all(k in v for v in per_type.values())}
    return Metrics(per_id=per_id, per_type=per_type, mean=mean)


DOMAINS = ("source", "target")
DOMAIN_KEYS = {"dcase2022": ("auc_source", "auc_target", "pauc"),
               "dcase2021": ("auc_source", "auc_target", "pauc_source", "pauc_target")}


RULES = ("dcase2022", "dcase2021")  # how a section's domains are scored: 2022-2025's evaluators, or 2021's


def section_domain_metrics(labels: np.ndarray, scores: np.ndarray, domains: np.ndarray,
                           max_fpr: float = 0.1, rule: str = "dcase2022") -> dict:
    """One section, as the DCASE evaluators score it. 2022-2025: AUC per domain from that domain's normal clips
    against all of the section's anomalous clips, and pAUC over the whole section. 2021 (whose test clips come
    in source_test/ and target_test/ folders): AUC and pAUC per domain over that domain's clips alone."""
    labels, scores, domains = np.asarray(labels).astype(int), np.asarray(scores, float), np.asarray(domains)
    row = {} if rule == "dcase2021" else dict(pauc=pauc_dcase(labels, scores, max_fpr))
    for domain in DOMAINS:
        keep = (domains == domain) if rule == "dcase2021" else (domains == domain) | (labels == 1)
        if (labels[keep] == 0).any() and (labels[keep] == 1).any():
            row[f"auc_{domain}"] = auc(labels[keep], scores[keep])
            if rule == "dcase2021":
                row[f"pauc_{domain}"] = pauc_dcase(labels[keep], scores[keep], max_fpr)
            row[f"n_normal_{domain}"] = int(((domains == domain) & (labels == 0)).sum())
    return row


def summarize_domains(per_section: list[dict], rule: str = "dcase2022") -> DomainMetrics:
    """Per machine type and overall: the harmonic mean of every section's source AUC, target AUC and pAUC (2021:
    its source and target pAUC), the DCASE 2021-2025 official score, and the harmonic mean of each alone."""
    keys = DOMAIN_KEYS[rule]

    def means(rows: list[dict]) -> dict:
        values = {k: [r[k] for r in rows if k in r] for k in keys}
        out = {k: float(hmean(v)) for k, v in values.items() if v}
        out["hmean"] = float(hmean([x for v in values.values() for x in v]))
        return out

    by_type: dict[str, list[dict]] = defaultdict(list)
    for row in per_section:
        by_type[row["machine_type"]].append(row)
    return DomainMetrics(per_section, {t: means(rows) for t, rows in sorted(by_type.items())}, means(per_section),
                         rule)
