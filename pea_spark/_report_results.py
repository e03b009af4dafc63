"""Result sections of the model report: test metrics, cross-validation, the Random Forest
baseline, per-class recall and LIME explanations."""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession

from pea_spark import _report_data as data
from pea_spark import _report_figures as figures
from pea_spark._report_data import CNN_LSTM, RANDOM_FOREST
from pea_spark._report_html import Page, Section
from pea_spark.artifact import ModelArtifact
from pea_spark.config import PeaConfig

__all__ = [
    "HEADLINE_METRICS",
    "baseline_section",
    "baseline_verdict",
    "class_section",
    "crossval_section",
    "evaluation_section",
    "forest_threshold",
    "lime_section",
    "metric_values",
    ]

HEADLINE_METRICS = ["accuracy", "precision", "recall", "f1", "specificity", "roc_auc",
                    "average_precision"]
COUNT_METRICS = ["true_positives", "false_positives", "true_negatives", "false_negatives",
                 "rows"]
METRIC_LABELS = {
    "accuracy": "accuracy", "precision": "precision", "recall": "recall", "f1": "F1",
    "specificity": "specificity", "roc_auc": "ROC AUC", "average_precision": "AP",
    "log_loss": "log loss", "true_positives": "true positives",
    "false_positives": "false positives", "true_negatives": "true negatives",
    "false_negatives": "false negatives", "rows": "flows",
}
MODEL_LABELS = {CNN_LSTM: "CNN-LSTM", RANDOM_FOREST: "Random Forest"}
# Metrics drawn per fold. The fold table lists the others too.
FOLD_METRICS = ["accuracy", "precision", "recall", "f1", "roc_auc"]
# Flows whose LIME explanation gets its own chart: those with the highest attack probability.
LIME_FLOWS = 4
# Thresholds are stored as doubles, so a tuned threshold is matched within this distance.
_THRESHOLD_TOLERANCE = 1e-9


# Metric lookups ------------------------------------------------------------------------


def metric_values(metrics: pd.DataFrame | None, model: str, split: str,
                  threshold: float) -> dict[str, float] | None:
    """Map metric names to values for one model, split and threshold, or return None."""
    if metrics is None:
        return None
    chosen = metrics[(metrics["model"] == model) & (metrics["split"] == split)
                     & ((metrics["threshold"] - threshold).abs() < _THRESHOLD_TOLERANCE)]
    if chosen.empty:
        return None
    return dict(zip(chosen["metric"], chosen["value"].astype(float), strict=True))


def _metric_cell(name: str, values: Mapping[str, float] | None) -> Any:
    if values is None or name not in values:
        return None
    value = values[name]
    return int(value) if name in COUNT_METRICS and not math.isnan(value) else value


def _metric_table(section: Section, columns: Mapping[str, Mapping[str, float] | None],
                  caption: str) -> None:
    """Add a table with one row per metric and one column per entry of ``columns``."""
    names = [m for m in [*HEADLINE_METRICS, "log_loss", *COUNT_METRICS]
             if any(v is not None and m in v for v in columns.values())]
    rows = [[METRIC_LABELS[m], *[_metric_cell(m, v) for v in columns.values()]] for m in names]
    section.table(["metric", *columns], rows, caption)


def _scores_of(scores: pd.DataFrame | None, model: str,
               split: str = "test") -> tuple[np.ndarray, np.ndarray] | None:
    """Return the 0/1 labels and attack probabilities of one model's flows, or None."""
    if scores is None:
        return None
    chosen = scores[(scores["model"] == model) & (scores["split"] == split)]
    if chosen.empty:
        return None
    return chosen["is_attack"].to_numpy(dtype=int), chosen["probability"].to_numpy(dtype=float)


def _headline_frame(columns: Mapping[str, Mapping[str, float]]) -> pd.DataFrame:
    """Arrange the headline metrics (rows) of each entry of ``columns`` (columns)."""
    return pd.DataFrame({name: [values.get(m, float("nan")) for m in HEADLINE_METRICS]
                         for name, values in columns.items()},
                        index=[METRIC_LABELS[m] for m in HEADLINE_METRICS])


# Test split ----------------------------------------------------------------------------


def evaluation_section(page: Page, artifact: ModelArtifact, metrics: pd.DataFrame | None,
                 scores: pd.DataFrame | None) -> None:
    """Add the test-split metrics, confusion matrix, curves, and the validation metrics."""
    section = page.section("test", "Test split")
    threshold = artifact.threshold
    tuned = metric_values(metrics, CNN_LSTM, "test", threshold)
    if tuned is None:
        section.missing("The model has not been evaluated on the test split: run "
                        "`pea evaluate`.")
    else:
        columns = {"at 0.50": metric_values(metrics, CNN_LSTM, "test", 0.5)}
        columns[f"at the decision threshold {threshold:.2f}"] = tuned
        _metric_table(section, columns, "CNN-LSTM on the test split (attack is the positive "
                                        "class)")
        counts = [int(tuned[k]) for k in ("true_negatives", "false_positives",
                                          "false_negatives", "true_positives")]
        section.figures(
            (figures.confusion_matrix_figure(*counts, threshold), "confusion_matrix.png",
             f"Confusion matrix of the {int(tuned['rows']):,} test flows at the decision "
             f"threshold {threshold:.2f}. The percentages are shares of each actual class."),
            (figures.grouped_bars_figure(_headline_frame({"CNN-LSTM": tuned}),
                                         f"Test metrics at threshold {threshold:.2f}"),
             "test_metrics.png", f"Headline test metrics at the decision threshold "
                                 f"{threshold:.2f}. ROC AUC and AP do not depend on it."),
        )
    _curve_figures(section, scores, tuned)
    section.subheading("Validation split")
    validation = {"at 0.50": metric_values(metrics, CNN_LSTM, "validation", 0.5),
                  f"at the decision threshold {threshold:.2f}":
                      metric_values(metrics, CNN_LSTM, "validation", threshold)}
    if all(v is None for v in validation.values()):
        section.missing("No validation-split metrics are stored for this model: run "
                        "`pea evaluate`.")
    else:
        _metric_table(section, validation, "CNN-LSTM on the validation fold, which chose the "
                                           "decision threshold")


def _curve_figures(section: Section, scores: pd.DataFrame | None,
                   tuned: Mapping[str, float] | None) -> None:
    pairs = _scores_of(scores, CNN_LSTM)
    if pairs is None:
        section.missing("No per-flow test predictions are stored for this model, so the ROC "
                        "and precision-recall curves cannot be drawn: run `pea evaluate`.")
        return
    curves = {"CNN-LSTM": pairs}
    stored = ("" if tuned is None else
              f" The metrics table stores ROC AUC {tuned['roc_auc']:.4f} and AP "
              f"{tuned['average_precision']:.4f}.")
    section.figures(
        (figures.roc_figure(curves), "roc_curve.png",
         f"ROC curve of the CNN-LSTM on {len(pairs[0]):,} test flows.{stored}"),
        (figures.pr_figure(curves), "precision_recall_curve.png",
         "Precision-recall curve of the CNN-LSTM on the same flows. AP is the step-wise "
         "area under it (scikit-learn's average precision)."),
    )


# Cross-validation ----------------------------------------------------------------------


def crossval_section(page: Page, cv: pd.DataFrame | None) -> None:
    """Add the per-fold table and figure, and the SMOTE ablation when both settings ran."""
    section = page.section("crossval", "Cross-validation and SMOTE ablation")
    if cv is None:
        section.missing("Cross-validation has not been run for this model: run "
                        "`pea crossval`.")
        return
    cv = cv.drop_duplicates(["smote", "fold", "threshold", "metric"])
    settings = sorted(cv["smote"].unique(), reverse=True)
    main = bool(settings[0])
    folds = _fold_table(cv[cv["smote"] == main])
    label = "with SMOTE" if main else "without SMOTE"
    section.paragraph(f"Each of the {len(folds)} folds of the training split was evaluated "
                      f"by a model trained {label} on the other folds. Metrics are at "
                      "threshold 0.50, except in the last two columns, which use the "
                      "threshold tuned for the fold.")
    rows = [[int(fold), int(row["epochs"]), *[row[m] for m in folds.columns[1:-2]],
             Decimal(f"{row['tuned threshold']:.2f}"), row["F1 at tuned threshold"]]
            for fold, row in folds.iterrows()]
    section.table(["fold", *folds.columns], rows, f"Per-fold metrics {label}")
    per_fold = folds[[METRIC_LABELS[m] for m in FOLD_METRICS]]
    section.figures((figures.fold_figure(per_fold, f"Cross-validation per fold ({label}, "
                                                   "threshold 0.50)"),
                     "crossval_folds.png", f"Metrics of each fold at threshold 0.50, {label}."))
    section.subheading("SMOTE ablation")
    if len(settings) < 2:
        section.missing("The SMOTE ablation has not been run for this model: run "
                        "`pea --set crossval.ablation=true crossval`, which also trains each "
                        "fold without SMOTE.")
        return
    _ablation(section, cv)


def _fold_table(cv: pd.DataFrame) -> pd.DataFrame:
    """Tabulate each fold's epochs, headline metrics at 0.5, tuned threshold and its F1."""
    at_half = cv[(cv["threshold"] - 0.5).abs() < _THRESHOLD_TOLERANCE]
    table = at_half.pivot(index="fold", columns="metric", values="value")
    table = table[[m for m in HEADLINE_METRICS if m in table.columns]]
    table.columns = [METRIC_LABELS[m] for m in table.columns]
    epochs = cv.groupby("fold")["epochs"].max().astype(int)
    tuned = cv[(cv["threshold"] - 0.5).abs() >= _THRESHOLD_TOLERANCE]
    thresholds = tuned.groupby("fold")["threshold"].first().reindex(table.index).fillna(0.5)
    f1_tuned = (tuned[tuned["metric"] == "f1"].groupby("fold")["value"].first()
                .reindex(table.index).fillna(table["F1"]))
    table.insert(0, "epochs", epochs.reindex(table.index))
    table["tuned threshold"] = thresholds
    table["F1 at tuned threshold"] = f1_tuned
    return table.sort_index()


def _tuned_rows(cv: pd.DataFrame) -> pd.DataFrame:
    """Select the rows at each fold's tuned threshold, which may be 0.5 itself."""
    off_half = (cv["threshold"] - 0.5).abs() >= _THRESHOLD_TOLERANCE
    tuned_folds = set(map(tuple, cv.loc[off_half, ["smote", "fold"]].to_numpy().tolist()))
    keys = list(map(tuple, cv[["smote", "fold"]].to_numpy().tolist()))
    keep = [tuned == ((smote, fold) in tuned_folds) for tuned, (smote, fold)
            in zip(off_half, keys, strict=True)]
    return cv[keep]


def _fold_statistics(rows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Compute mean and sample standard deviation over folds, one row per metric and one
    column per SMOTE setting ("with SMOTE", "without SMOTE")."""
    names = {True: "with SMOTE", False: "without SMOTE"}
    rows = rows[rows["metric"].isin(HEADLINE_METRICS)]
    grouped = rows.assign(setting=rows["smote"].map(names)).groupby(["metric", "setting"])
    columns = list(names.values())
    means = (grouped["value"].mean().unstack("setting").reindex(HEADLINE_METRICS)
             .dropna(how="all")[columns])
    spreads = grouped["value"].std(ddof=1).unstack("setting").reindex(means.index)[columns]
    return means, spreads


def _mean_std(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "n/a"
    # One fold has no sample standard deviation.
    spread = "n/a" if math.isnan(std) else f"{std:.4f}"
    return f"{mean:.4f} ± {spread}"


def _ablation(section: Section, cv: pd.DataFrame) -> None:
    """Add mean and standard deviation over folds, with and without SMOTE, side by side."""
    at_half = cv[(cv["threshold"] - 0.5).abs() < _THRESHOLD_TOLERANCE]
    means, spreads = _fold_statistics(at_half)
    tuned_means, tuned_spreads = _fold_statistics(_tuned_rows(cv))
    folds = at_half.groupby("smote")["fold"].nunique()
    rows = []
    for metric in means.index:
        row = [METRIC_LABELS[metric]]
        for mean, spread in ((means, spreads), (tuned_means, tuned_spreads)):
            row += [_mean_std(mean.loc[metric, c], spread.loc[metric, c]) for c in mean.columns]
            row.append(float(mean.loc[metric, "with SMOTE"] - mean.loc[metric, "without SMOTE"]))
        rows.append(row)
    section.paragraph(f"Mean ± sample standard deviation over {folds[True]} folds with SMOTE "
                      f"and {folds[False]} without, at threshold 0.50 and at each fold's tuned "
                      "threshold. A positive difference means SMOTE raised the mean.")
    section.table(["metric", "with SMOTE, 0.50", "without SMOTE, 0.50", "difference",
                   "with SMOTE, tuned", "without SMOTE, tuned", "difference"], rows,
                  "SMOTE ablation over the cross-validation folds")
    section.figures((figures.grouped_bars_figure(means.rename(index=METRIC_LABELS),
                                                 "SMOTE ablation (threshold 0.50)",
                                                 spreads.rename(index=METRIC_LABELS)),
                     "smote_ablation.png", "Mean of each metric over the folds with and "
                                           "without SMOTE at threshold 0.50. The error bars "
                                           "span one standard deviation."))


# Random Forest baseline ----------------------------------------------------------------


def baseline_verdict(cnn_lstm: Mapping[str, float], forest: Mapping[str, float]) -> str:
    """Say which model has the higher F1 and ROC AUC, and by how much (to 3 decimals).

    Parameters
    ----------
    cnn_lstm, forest : mapping of str to float
        Metrics of each model on the same test flows, with ``f1`` and ``roc_auc``.
    """
    differences = {}
    for metric in ("f1", "roc_auc"):
        values = (cnn_lstm.get(metric, float("nan")), forest.get(metric, float("nan")))
        if any(math.isnan(v) for v in values):
            return (f"The models cannot be compared on {METRIC_LABELS[metric]}, because it "
                    "is undefined for at least one of them.")
        differences[metric] = round(values[0] - values[1], 3)
    names = {1: ("The CNN-LSTM", "the Random Forest baseline"),
             -1: ("The Random Forest baseline", "the CNN-LSTM")}
    signs = {m: int(np.sign(d)) for m, d in differences.items()}
    if signs["f1"] == signs["roc_auc"] != 0:
        winner, loser = names[signs["f1"]]
        return (f"{winner} beats {loser} by {abs(differences['f1']):.3f} F1 and by "
                f"{abs(differences['roc_auc']):.3f} ROC AUC.")
    sentences = []
    for metric, difference in differences.items():
        label = METRIC_LABELS[metric]
        if signs[metric] == 0:
            sentences.append(f"The two models have the same {label} to three decimals "
                             f"({cnn_lstm[metric]:.3f}).")
        else:
            winner, loser = names[signs[metric]]
            sentences.append(f"{winner} beats {loser} by {abs(difference):.3f} {label}.")
    return " ".join(sentences)


def forest_threshold(metrics: pd.DataFrame | None) -> float:
    """Return the decision threshold of the Random Forest's newest test metrics.

    Evaluate stores its metrics at 0.5 and, when it tuned a threshold on the
    validation fold, at that threshold too, which is then returned.
    """
    if metrics is None:
        return 0.5
    rows = metrics[(metrics["model"] == RANDOM_FOREST) & (metrics["split"] == "test")]
    tuned = sorted(t for t in rows["threshold"].unique() if abs(t - 0.5) >= _THRESHOLD_TOLERANCE)
    return float(tuned[0]) if tuned else 0.5


def baseline_section(page: Page, artifact: ModelArtifact, metrics: pd.DataFrame | None,
                     scores: pd.DataFrame | None) -> None:
    """Add the CNN-LSTM against the Random Forest on the test split, with the verdict."""
    section = page.section("baseline", "Random Forest baseline")
    cut = forest_threshold(metrics)
    forest = metric_values(metrics, RANDOM_FOREST, "test", cut)
    if forest is None:
        section.missing("The Random Forest baseline has not been evaluated for this model: "
                        "run `pea --set evaluate.baseline=true evaluate`.")
        return
    threshold = artifact.threshold
    cnn_lstm = metric_values(metrics, CNN_LSTM, "test", threshold)
    if cnn_lstm is None:
        section.missing("The CNN-LSTM has no test metrics to compare with: run `pea evaluate`.")
        return
    section.paragraph(f"Both models are scored on the test split, each at its decision "
                      f"threshold: {threshold:.2f} for the CNN-LSTM and {cut:.2f} for the "
                      "Random Forest.")
    if int(cnn_lstm.get("rows", -1)) != int(forest.get("rows", -2)):
        section.missing(f"The two models were evaluated on different numbers of flows "
                        f"({int(cnn_lstm.get('rows', 0)):,} and "
                        f"{int(forest.get('rows', 0)):,}), so they are not compared on the "
                        "same flows: run `pea evaluate` again.")
    section.paragraph(baseline_verdict(cnn_lstm, forest), "verdict")
    columns = {"CNN-LSTM at 0.50": metric_values(metrics, CNN_LSTM, "test", 0.5),
               f"CNN-LSTM at {threshold:.2f}": cnn_lstm,
               "Random Forest at 0.50": metric_values(metrics, RANDOM_FOREST, "test", 0.5),
               f"Random Forest at {cut:.2f}": forest}
    _metric_table(section, columns, "Test split, attack is the positive class")
    bars = _headline_frame({f"CNN-LSTM at {threshold:.2f}": cnn_lstm,
                            f"Random Forest at {cut:.2f}": forest})
    items = [(figures.grouped_bars_figure(bars, "CNN-LSTM against the Random Forest"),
              "baseline_metrics.png", "Headline test metrics of both models at their "
                                      "decision thresholds.")]
    pairs = {MODEL_LABELS[m]: _scores_of(scores, m) for m in (CNN_LSTM, RANDOM_FOREST)}
    if all(p is not None for p in pairs.values()):
        items += [(figures.roc_figure(pairs), "baseline_roc_curve.png",
                   "ROC curves of both models on the test split."),
                  (figures.pr_figure(pairs), "baseline_precision_recall_curve.png",
                   "Precision-recall curves of both models on the test split.")]
    section.figures(*items)


# Per-class recall ----------------------------------------------------------------------


def class_section(page: Page, artifact: ModelArtifact, classes: pd.DataFrame | None,
                  metrics: pd.DataFrame | None) -> None:
    """Add recall per multi-class label (BENIGN's recall is its specificity) per model."""
    section = page.section("classes", "Recall per class")
    if classes is None:
        section.missing("Per-class recall has not been computed for this model: run "
                        "`pea evaluate`.")
        return
    expected = {CNN_LSTM: artifact.threshold, RANDOM_FOREST: forest_threshold(metrics)}
    recall: dict[str, pd.Series] = {}
    sizes = classes.groupby("label")[["is_attack", "rows"]].first()
    for model in [m for m in (CNN_LSTM, RANDOM_FOREST) if m in set(classes["model"])]:
        rows = classes[classes["model"] == model]
        # The rows at the model's own threshold, else those of the nearest stored one.
        nearest = rows.loc[(rows["threshold"] - expected[model]).abs().idxmin(), "threshold"]
        chosen = rows[rows["threshold"] == nearest].set_index("label")
        recall[f"{MODEL_LABELS[model]} at {nearest:.2f}"] = chosen["recall"]
    frame = pd.DataFrame(recall).reindex(sizes.index)
    order = sorted(frame.index, key=lambda label: (int(sizes.loc[label, "is_attack"]), label))
    frame = frame.loc[order]
    section.paragraph("Share of each class's test flows that the model classifies correctly: "
                      "flagged as an attack for attack classes, not flagged for BENIGN.")
    rows = [[label, "attack" if sizes.loc[label, "is_attack"] else "benign",
             int(sizes.loc[label, "rows"]), *[None if pd.isna(v) else float(v) for v in values]]
            for label, values in zip(frame.index, frame.to_numpy().tolist(), strict=True)]
    section.table(["label", "class", "test flows", *frame.columns], rows,
                  "Recall per label on the test split")
    section.figures((figures.class_recall_figure(frame, "Recall per class (test split)"),
                     "class_recall.png", "Recall of each label on the test split, per model."))


# LIME ----------------------------------------------------------------------------------


def lime_section(page: Page, spark: SparkSession, config: PeaConfig,
                 artifact: ModelArtifact) -> None:
    """Add LIME charts of the flows with the highest attack probability, and global influence."""
    section = page.section("lime", "LIME explanations")
    flows = data.explained_flows(spark, config, artifact.version, LIME_FLOWS)
    if flows is None:
        section.missing(f"No LIME explanations are stored for model v{artifact.version}: run "
                        "`pea explain`.")
        return
    order = (flows.groupby("flow_key")["attack_probability"].max()
             .reset_index().sort_values(["attack_probability", "flow_key"],
                                        ascending=[False, True]))
    section.paragraph(f"The {len(order)} explained flows with the highest attack probability. "
                      "Each bar is one condition of LIME's local linear model: red bars push "
                      "the prediction toward ATTACK, green bars toward BENIGN.")
    items = []
    for number, key in enumerate(order["flow_key"], start=1):
        rows = flows[flows["flow_key"] == key].sort_values("rank")
        first = rows.iloc[0]
        title = f"Flow {number}: attack probability {first['attack_probability']:.4f}"
        items.append((figures.lime_figure(rows["condition"].tolist(), rows["weight"].tolist(),
                                          title),
                      f"lime_flow_{number}.png", _flow_caption(number, key, first)))
    section.figures(*items)
    _influence(section, spark, config, artifact)


def _flow_caption(number: int, key: Any, row: pd.Series) -> str:
    parts = [f"Flow {number}: flow_key {key}"]
    if isinstance(row.get("source_file"), str):
        parts.append(f"from {row['source_file']}, line {int(row['line_number'])}")
    if isinstance(row.get("label"), str):
        parts.append(f"labelled {row['label']}")
    return ", ".join(parts) + f", attack probability {row['attack_probability']:.4f}."


def _influence(section: Section, spark: SparkSession, config: PeaConfig,
               artifact: ModelArtifact) -> None:
    section.subheading("Global feature influence")
    influence, flows = data.feature_influence(spark, config, artifact.version)
    section.paragraph(f"Mean absolute LIME weight of each feature over all {flows:,} explained "
                      "flows, counting 0 for a flow whose explanation leaves the feature out. "
                      "The last column is the mean over the flows that name the feature, as in "
                      f"the `{config.database}.feature_influence` view.")
    section.figures((figures.influence_figure(influence["display_name"].tolist(),
                                              influence["mean_abs_weight"].tolist(),
                                              "Global feature influence (LIME)"),
                     "feature_influence.png",
                     f"Mean |LIME weight| per feature over all {flows:,} explained flows."))
    rows = [[r.display_name, float(r.mean_abs_weight), int(r.flows), float(r.mean_where_named)]
            for r in influence.itertuples()]
    section.table(["feature", "mean |weight| over all flows", "flows naming it",
                   "mean |weight| where named"], rows, "Global feature influence")
