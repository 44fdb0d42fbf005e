"""report.md for a run: per-type AUC/pAUC, the AE baseline beside RC-MAE, ROC curves per machine type,
t-SNE of test embeddings after each stage (the paper's Figures 3-4) and the loss curves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from sklearn.manifold import TSNE
from sklearn.metrics import roc_curve

from rcmae.data.classes import class_by_of, machines_of
from rcmae.data.feature_table import machine_keys, specs_from_column
from rcmae.detect.detector import MIN_OWN_CLIPS
from rcmae.detect.encode import TableEncoder, encode_all, map_values, score_values
from rcmae.detect.fusions import FUSIONS
from rcmae.errors import DataError
from rcmae.evaluate.families import clip_key
from rcmae.evaluate.maps import plot_map, pyplot, region_mask
from rcmae.evaluate.metrics import DOMAIN_KEYS, METRICS_FILE, Metrics
from rcmae.evaluate.results import not_evaluated_line
from rcmae.models.checkpoint import load_checkpoint, read_meta
from rcmae.registry import AUGMENTERS, REFERENCES, SCORES
from rcmae.sections import AugmentConfig

PAPER_SCORE = "id_logprob"
NOT_LOSSES = ("epoch", "lr", "seconds", "stage", "accuracy", "samples_per_second")
TSNE_CLIPS = 2000  # t-SNE of more test clips than this uses a random sample of them


def plot_roc(scored: pa.Table, method: str, path: Path) -> None:
    plt = pyplot()
    types = np.array(scored["machine_type"].to_pylist())
    label_names = np.array(scored["label"].to_pylist())
    labels = label_names == "anomaly"
    scores = score_values(scored, method)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for machine_type in sorted(set(types)):
        idx = (types == machine_type) & np.isin(label_names, ["normal", "anomaly"])  # labelled clips only
        if len(set(labels[idx])) < 2:
            continue
        fpr, tpr, _ = roc_curve(labels[idx], scores[idx])
        ax.plot(fpr, tpr, label=machine_type)
    ax.plot([0, 1], [0, 1], "k:", lw=0.8)
    ax.axvline(0.1, color="grey", lw=0.6, ls="--")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC per machine type (IDs pooled)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_tsne(model_dir: Path, test: pa.Table, title: str, path: Path, seed: int = 0) -> None:
    """t-SNE of the embeddings of `test` (feature-table rows: metadata and log-mels)."""
    plt = pyplot()
    checkpoint = load_checkpoint(model_dir)
    features = checkpoint.features
    specs = specs_from_column(test["features"], features.n_mels, features.n_frames)
    embeddings = encode_all(checkpoint.model, specs, checkpoint.normalizer).embeddings
    points = TSNE(n_components=2, perplexity=min(30, len(embeddings) - 1), init="pca",
                  random_state=seed).fit_transform(embeddings)
    keys, labels = np.array(machine_keys(test)), np.array(test["label"].to_pylist())
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    colours = plt.get_cmap("tab20")
    for k, key in enumerate(sorted(set(keys))):
        for label, marker in (("normal", "o"), ("anomaly", "x")):
            idx = (keys == key) & (labels == label)
            ax.scatter(points[idx, 0], points[idx, 1], s=12, marker=marker, color=colours(k % 20),
                       label=key if label == "normal" else None)
    ax.set_title(f"{title} (o normal, x anomaly)")
    ax.legend(fontsize=6, ncol=2, markerscale=1.2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_losses(histories: dict[str, list[dict]], path: Path) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, len(histories), figsize=(5.5 * len(histories), 4))
    for ax, (stage, history) in zip(np.atleast_1d(axes), histories.items()):
        epochs = [h["epoch"] for h in history]
        for term in [k for k in history[0] if k not in NOT_LOSSES]:
            ax.plot(epochs, [h[term] for h in history], label=term)
        ax.set(title=f"{stage}", xlabel="epoch")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _metrics_table(rows: dict[str, Metrics]) -> str:
    rows = {name: metrics for name, metrics in rows.items() if metrics.per_type}
    if not rows:
        return ("The test split is unlabelled (evaluation mode): no AUC or pAUC. Every clip's score and decision "
                "are in `evaluation/anomaly_score_*.csv` and `evaluation/decision_result_*.csv`.")
    types = sorted(next(iter(rows.values())).per_type)
    head = ("| model | " + " | ".join(f"{t} AUC / pAUC" for t in types)
            + " | mean AUC / pAUC | decisions: precision / recall / F1 |")
    lines = [head, "|" + "---|" * (len(types) + 3)]
    for name, metrics in rows.items():
        cells = [f"{metrics.per_type[t]['auc']:.3f} / {metrics.per_type[t]['pauc']:.3f}" for t in types]
        decided = (" / ".join(f"{metrics.mean[k]:.3f}" for k in ("precision", "recall", "f1"))
                   if "f1" in metrics.mean else "-")
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | **{metrics.mean['auc']:.3f} / {metrics.mean['pauc']:.3f}** | {decided} |")
    return "\n".join(lines)


def _domain_table(rows: dict[str, Metrics]) -> str:
    """DCASE 2021-2025's scores, for data with a target domain: per machine type the harmonic means over its
    sections of the source AUC, the target AUC and the pAUC, and the official score (their harmonic mean)."""
    rows = {name: metrics.domains for name, metrics in rows.items() if metrics.domains}
    if not rows:
        return ""
    types = sorted(next(iter(rows.values())).per_type)

    rule = next(iter(rows.values())).rule

    def cell(values: dict) -> str:
        return " / ".join(f"{values[k]:.3f}" if k in values else "-" for k in DOMAIN_KEYS[rule])

    how = ("source AUC / target AUC / source pAUC / target pAUC (DCASE 2021's rule, for test clips in source_test/ "
           "and target_test/: each domain's clips alone)" if rule == "dcase2021" else
           "source AUC / target AUC / pAUC (a domain's AUC uses that domain's normal clips against all of the "
           "section's anomalies, the pAUC all of the section's clips)")
    lines = ["## Domain shift (DCASE 2021-2025 scores)", "",
             f"Per machine type: {how}, each the harmonic mean over its sections. The official score is the "
             "harmonic mean of all of them. Per section: `domains` in `evaluation/metrics.json`.", "",
             "| model | " + " | ".join(types) + " | official score (harmonic mean) |", "|" + "---|" * (len(types) + 2)]
    for name, domains in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(domains.per_type[t]) for t in types)
                     + f" | **{domains.official:.3f}** |")
    return "\n".join(lines) + "\n"


def _family_table(rows: dict[str, Metrics]) -> str:
    """AUC per machine type and fault family for every model with per-family results, then the means per kind
    of fault; the floor's column is what the others must beat."""
    rows = {name: metrics.families for name, metrics in rows.items() if metrics.families}
    if not rows:
        return ""
    names = list(rows)
    cells = {name: {(r["machine_type"], r["family"]): r for r in families["per_family"]}
             for name, families in rows.items()}
    keys = sorted({key for per_name in cells.values() for key in per_name}, key=lambda k: (k[0].lower(), k[1]))
    lines = ["## Per fault family", "",
             "AUC of each fault family's anomalies against the ID's normal test clips, averaged over the type's IDs "
             "(AUC / pAUC per family: `families` in each metrics.json). Timing faults change when or how regularly "
             "the machine sounds; added-sound faults add a sound of their own.", "",
             "| machine type | family | kind | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 3)]
    for machine_type, family in keys:
        kind = next(c[(machine_type, family)]["kind"] for c in cells.values() if (machine_type, family) in c)
        values = [f"{c[(machine_type, family)]['auc']:.3f}" if (machine_type, family) in c else "-"
                  for c in cells.values()]
        lines.append(f"| {machine_type} | {family} | {kind} | " + " | ".join(values) + " |")
    for kind in sorted({kind for families in rows.values() for kind in families["per_kind"]}):
        values = [f"**{families['per_kind'][kind]['auc']:.3f}**" if kind in families["per_kind"] else "-"
                  for families in rows.values()]
        lines.append(f"| mean | {kind} | | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


MAPS_PER_TYPE = 3  # report.md shows the anomaly maps of this many highest-scoring test anomalies per machine type


def top_anomalies(scored: pa.Table, method: str, per_type: int = MAPS_PER_TYPE) -> list[str]:
    """Paths of the `per_type` highest-scoring labelled anomalies of each machine type."""
    anomalies = scored.filter(pc.equal(scored["label"], "anomaly"))
    values, types = score_values(anomalies, method), np.array(anomalies["machine_type"].to_pylist())
    paths = np.array(anomalies["path"].to_pylist())
    chosen = []
    for machine_type in sorted(set(types)):
        rows = np.flatnonzero((types == machine_type) & ~np.isnan(values))
        chosen += paths[rows[np.argsort(-values[rows], kind="stable")[:per_type]]].tolist()
    return chosen


def plot_top_maps(rows: pa.Table, finetune_dir: Path, method: str, regions: dict[str, dict], plots: Path) -> str:
    """Anomaly-map PNGs of feature-table `rows` (the clips `top_anomalies` chose), each with its fault's region
    outlined where the data say where it is; the report's section that shows them."""
    if not rows.num_rows:
        return ""
    encoder = TableEncoder(finetune_dir, with_scores=True, keep_encoded=False, with_maps=True)
    features, audio = encoder.checkpoint.features, encoder.checkpoint.audio
    scored = encoder(rows)
    maps, values = map_values(scored, features.grid), score_values(scored, method)
    specs = specs_from_column(rows["features"], features.n_mels, features.n_frames)
    folder = plots / "maps"
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    paths, types = rows["path"].to_pylist(), rows["machine_type"].to_pylist()
    for i in sorted(range(rows.num_rows), key=lambda i: (types[i].lower(), -values[i])):
        path, machine_type = paths[i], types[i]
        region = regions.get(clip_key(path))
        mask = region_mask(region, features, audio.sample_rate) if region else None
        name = f"{machine_type}_{Path(path).stem}.png"
        plot_map(folder / name, specs[i], maps[i], features, audio.sample_rate,
                 f"{machine_type} {Path(path).name}: {method} {values[i]:.3g}", region=mask)
        lines.append(f"![{machine_type} {Path(path).name}](plots/maps/{name})")
    outlined = "; the fault's true region (toy factory) is outlined in cyan" if regions else ""
    return (f"## Where the anomalies sound\n\nAnomaly maps of the {MAPS_PER_TYPE} highest-scoring test anomalies per "
            f"machine type: each patch's distance from its machine's normal patches of that frequency row "
            f"(standardised on the train clips), over the clip's log-mel{outlined}. `rcmae score --explain DIR` "
            f"writes such maps for any recording.\n\n" + "\n".join(lines) + "\n")


def provenance_line(preset: str, augment: AugmentConfig, method: str) -> str:
    """What made the run (its preset, augmenter and score method), each part marked as the paper's or rcmae's."""
    whose = "the paper's settings" if preset == "paper" else "rcmae's, scaled down from the paper's"
    augmenter = AUGMENTERS[augment.augmenter].provenance
    return (f"Preset `{preset}` ({whose}); augmenter `{augment.augmenter}` ({augmenter}); score "
            f"`{method}` ({SCORES[method].origin}).")


def classes_line(classes: list[str]) -> str:
    """Which classes stage 2 learnt (`finetune.classes`): the paper's machine IDs or the file names' attributes."""
    machines = machines_of(classes)
    if class_by_of(classes) == "attributes":
        return (f"Stage 2 classified {len(classes)} attribute classes (type/section/attributes, from the file names) "
                f"of {len(machines)} machine sections: `id_logprob` reads the clip's attribute class.")
    return f"Stage 2 classified {len(classes)} machine IDs (the paper's classes)."


def _fusion_note(method: str) -> str:
    """For a fused score: what it is made of, and where to read what the model adds."""
    fusion = FUSIONS.get(method)
    if fusion is None:
        return ""
    parts = ", ".join(f"`{member}`" for member in fusion.members)
    rule = "largest" if fusion.rule == "max" else "mean"
    return (f"\n`{method}` is the {rule} of {parts}, each as its log standardised per machine ID by held-out "
            f"train clips; each part's own result is in the rows below it. `stats` reads what the floor reads (each "
            f"band's mean and deviation over time): what the trained model adds is the fused score's margin over "
            f"`stats`.\n")


def tsne_sample(test_rows, limit: int = TSNE_CLIPS, seed: int = 0) -> pa.Table:
    """A uniform sample of up to `limit` rows from a stream of feature-table batches: each row gets a random
    key and the `limit` smallest keys are kept (bottom-k sampling), so memory holds `limit` rows and a batch."""
    rng, pool = np.random.default_rng(seed), None
    for table in test_rows:
        table = table.append_column("_key", pa.array(rng.random(table.num_rows)))
        pool = table if pool is None else pa.concat_tables([pool, table])
        if pool.num_rows > limit:
            pool = pool.take(pa.array(np.argsort(pool["_key"].to_numpy())[:limit]))
    if pool is None:
        raise DataError("no test clips to plot")
    return pool.drop_columns(["_key"])


def write_report(out: Path, scored: pa.Table, tsne_rows: pa.Table, metrics: Metrics, references: dict[str, Metrics],
                 pretrain_dir: Path, finetune_dir: Path, summary: dict, timings: dict, map_rows: pa.Table,
                 regions: dict[str, dict]) -> Path:
    """report.md: RC-MAE's results beside the references' (`references`: reference name -> its metrics), with
    the anomaly maps of `map_rows` (feature rows of the `top_anomalies`; their true `regions` where known)."""
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    maps_section = plot_top_maps(map_rows, finetune_dir, metrics.method, regions, plots)
    plot_roc(scored, metrics.method, plots / "roc.png")
    plot_tsne(pretrain_dir, tsne_rows, "t-SNE after pre-training (stage 1)", plots / "tsne_pretrain.png")
    plot_tsne(finetune_dir, tsne_rows, "t-SNE after fine-tuning (stage 2)", plots / "tsne_finetune.png")
    finetuned = read_meta(finetune_dir)
    histories = {"pre-training": read_meta(pretrain_dir).history, "fine-tuning": finetuned.history}
    plot_losses(histories, plots / "losses.png")
    rows = {f"RC-MAE, `{metrics.method}` score ({SCORES[metrics.method].origin})": metrics}
    fusion = FUSIONS.get(metrics.method)
    for member in fusion.members if fusion else ():  # what each part of the fused score hears on its own
        other = out / "evaluation" / "other_methods" / member / METRICS_FILE
        if other.exists():
            rows[f"&nbsp;&nbsp;its part `{member}`"] = Metrics.read(other)
    paper_file = out / "evaluation" / "other_methods" / PAPER_SCORE / METRICS_FILE
    if metrics.method != PAPER_SCORE and paper_file.exists():
        rows[f"RC-MAE, `{PAPER_SCORE}` score ({SCORES[PAPER_SCORE].origin})"] = Metrics.read(paper_file)
    for name, found in references.items():
        rows[REFERENCES[name].label] = found
    family_rows = dict(rows)  # every score of the model: the per-family table is where they differ
    for method in metrics.methods:
        other = out / "evaluation" / "other_methods" / method / METRICS_FILE
        if method not in (metrics.method, PAPER_SCORE, *(fusion.members if fusion else ())) and other.exists():
            family_rows[f"RC-MAE, `{method}`"] = Metrics.read(other)
    methods = "\n".join(f"- `{m}` ({SCORES[m].origin}): mean AUC {v['auc']:.3f}, pAUC {v['pauc']:.3f}"
                        for m, v in metrics.methods.items() if v)
    unlabelled = sorted(set(machine_keys(scored.filter(pc.invert(
        pc.is_in(scored["label"], pa.array(["normal", "anomaly"])))))))
    if unlabelled:
        methods += (f"\n\nUnlabelled test clips (scored, written to the CSVs, not in the metrics): machines "
                    f"{', '.join(unlabelled)}.")
    if metrics.not_evaluated:
        methods += f"\n\n{not_evaluated_line(metrics.not_evaluated)}."
    few_shot = finetuned.detector.few_shot if finetuned.detector else []
    if few_shot:
        methods += (f"\n\nFew-shot machines (under {MIN_OWN_CLIPS} train clips), scored with their own mean and "
                    f"their machine type's pooled covariance and thresholds: {', '.join(few_shot)}.")
    timing = "\n".join(f"- {stage}: {seconds:.0f} s" for stage, seconds in timings.items())
    text = f"""# RC-MAE run report

{provenance_line(finetuned.preset, finetuned.augment, metrics.method)}
{classes_line(finetuned.classes)}
{_fusion_note(metrics.method)}

pAUC is the DCASE value (`roc_auc_score(..., max_fpr=0.1)`, McClish-standardised: random = 0.5);
the paper's Eq. 12 value is `pauc_eq12` in `evaluation/metrics.json`.

## Detection per machine type

{_metrics_table(rows)}

{_domain_table(rows)}
{_family_table(family_rows)}
Score methods of the same model (the paper's is `id_logprob`, -log p(true class | clip), Section 2.5.2;
the others are rcmae extensions):
{methods}

{maps_section}
## Data and augmentation

{summary.get('clips')} clips indexed, {summary.get('rejected')} rejected (see `augment/rejects.parquet`);
augmenter `{summary.get('augmenter')}`, {summary.get('variants_per_clip')} variant(s) per train clip
({summary.get('augmented_variants')} in all).

## Plots

![ROC per machine type](plots/roc.png)

![t-SNE after stage 1](plots/tsne_pretrain.png)

![t-SNE after stage 2](plots/tsne_finetune.png)

![Loss curves](plots/losses.png)

## Time per stage

{timing}
"""
    path = out / "report.md"
    path.write_text(text)
    return path
