"""Write a self-contained HTML report of one model, with every figure also as a PNG file.

The report covers one model version. It shows the data the model was trained
on (input files, silver and class counts, SMOTE) and the feature ranking. Then
come test and validation metrics with their curves, cross-validation and the
SMOTE ablation, the Random Forest baseline, per-class recall, and LIME
explanations. Every number comes from the warehouse tables and the model
artifact. A section whose table is missing says which command writes it.
"""

from __future__ import annotations

import logging
import math
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import SparkSession

from pea_spark import _report_data as data
from pea_spark import _report_figures as figures
from pea_spark._report_data import CNN_LSTM, RANDOM_FOREST
from pea_spark._report_html import Page, Section
from pea_spark._report_results import (
    baseline_section,
    baseline_verdict,
    class_section,
    crossval_section,
    evaluation_section,
    forest_threshold,
    lime_section,
    metric_values,
)
from pea_spark.artifact import ModelArtifact
from pea_spark.config import PeaConfig
from pea_spark.session import read_table, table_exists, table_path

__all__ = ["write_report", "baseline_verdict", "REPORT_FILE"]

logger = logging.getLogger(__name__)

REPORT_FILE = "report.html"


def write_report(spark: SparkSession, config: PeaConfig, output: str | Path | None = None,
                 version: int | None = None) -> dict[str, Any]:
    """Write ``report.html`` and one PNG file per figure for a model version.

    Parameters
    ----------
    output : str or Path, optional
        Folder to write into; default ``<warehouse>/<database>/_reports/v<N>``.
        PNG files of an earlier report there are replaced or removed.
    version : int, optional
        Model version; default the newest in ``models``.

    Returns
    -------
    dict
        ``html`` (Path of the report), ``figures`` (Paths of the PNG files, in
        page order) and ``model_version``.

    Raises
    ------
    FileNotFoundError
        When the warehouse has no trained model.
    ValueError
        When ``version`` is not in ``models``.

    Notes
    -----
    The label and attack probability of every evaluated flow are collected to
    the driver for the ROC and precision-recall curves, and the explanation
    rows of the charted flows. Other reads are aggregations.
    """
    start = time.monotonic()
    artifact = _load_model(spark, config, version)
    folder = (Path(output) if output is not None
              else table_path(config, "_reports") / f"v{artifact.version}")
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"report output {folder} is a file, not a folder: pass --output with "
                         "a new or existing folder")
    made_at = datetime.now(UTC)
    page = Page(
        title=f"pea-spark model report: CNN-LSTM v{artifact.version}",
        subtitle=(f"Made {made_at:%Y-%m-%d %H:%M:%S} UTC from warehouse "
                  f"`{config.warehouse_path}`, database `{config.database}`."),
    )
    metrics = data.metric_rows(spark, config, artifact.version)
    scores = data.evaluation_scores(spark, config, artifact.version)
    _summary_section(page, artifact, metrics)
    _data_section(page, spark, config, artifact, made_at)
    _ranking_section(page, data.feature_ranking(spark, config))
    evaluation_section(page, artifact, metrics, scores)
    crossval_section(page, data.cv_rows(spark, config, artifact.version))
    baseline_section(page, artifact, metrics, scores)
    class_section(page, artifact, data.class_rows(spark, config, artifact.version), metrics)
    lime_section(page, spark, config, artifact)
    html_path, figure_paths = _write_files(page, folder)
    logger.info("report: model v%d, %d figures, written to %s in %.1f s", artifact.version,
                len(figure_paths), html_path, time.monotonic() - start)
    return {"html": html_path, "figures": figure_paths, "model_version": artifact.version}


def _load_model(spark: SparkSession, config: PeaConfig, version: int | None) -> ModelArtifact:
    """Load the artifact of ``version`` (default the newest), naming the fix when absent."""
    from pea_spark.train import latest_artifact

    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise TypeError(f"version must be an int or None, got {type(version).__name__}")
    where = f"warehouse {config.warehouse_path}, database {config.database}"
    if not table_exists(config, "models"):
        raise FileNotFoundError(f"no model to report on in {where}: table models not found "
                                "(run `pea train` first)")
    rows = read_table(spark, config, "models").select("model_version").distinct().collect()
    versions = sorted(int(r[0]) for r in rows)
    if not versions:
        raise FileNotFoundError(f"no model to report on in {where}: table models is empty "
                                "(run `pea train` first)")
    if version is not None and version not in versions:
        raise ValueError(f"model version {version} not found in {where}: available versions "
                         f"are {', '.join(map(str, versions))}")
    return latest_artifact(spark, config, version)


def _write_files(page: Page, folder: Path) -> tuple[Path, list[Path]]:
    """Write the PNG files and then the HTML (through a temporary file) into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for figure in page.figures:
        path = folder / figure.file_name
        path.write_bytes(figure.png)
        paths.append(path)
    current = {p.name for p in paths}
    # Figure names are fixed per kind. Left over from an earlier report are only LIME charts
    # beyond this report's count and figures of sections whose table is now missing.
    for stale in [*folder.glob("lime_flow_*.png"),
                  *(folder / name for name in _FIXED_FIGURES)]:
        if stale.name not in current and stale.is_file():
            stale.unlink()
    html_path = folder / REPORT_FILE
    partial = folder / f".{REPORT_FILE}.partial"
    partial.write_text(page.render(), encoding="utf-8")
    os.replace(partial, html_path)
    return html_path, paths


_FIXED_FIGURES = [
    "training_history.png", "confusion_matrix.png", "test_metrics.png", "roc_curve.png",
    "precision_recall_curve.png", "crossval_folds.png", "smote_ablation.png",
    "baseline_metrics.png", "baseline_roc_curve.png", "baseline_precision_recall_curve.png",
    "class_recall.png", "feature_influence.png",
]


def _summary_section(page: Page, artifact: ModelArtifact, metrics: pd.DataFrame | None) -> None:
    section = page.section("summary", "Summary")
    texts = [f"Model v{artifact.version} flags a flow as an attack when its attack probability "
             f"is at least {artifact.threshold:.2f}, the threshold "
             f"{_threshold_origin(artifact)}."]
    test = metric_values(metrics, CNN_LSTM, "test", artifact.threshold)
    if test is not None:
        texts.append(f"On the {int(test.get('rows', 0)):,} flows of the test split it reaches "
                     f"accuracy {test['accuracy']:.4f}, precision {test['precision']:.4f}, "
                     f"recall {test['recall']:.4f}, F1 {test['f1']:.4f} and ROC AUC "
                     f"{test['roc_auc']:.4f}.")
        forest = metric_values(metrics, RANDOM_FOREST, "test", forest_threshold(metrics))
        if forest is not None:
            texts.append(baseline_verdict(test, forest))
    section.box(texts, "summary")
    if test is None:
        section.missing("The model has not been evaluated on the test split: run "
                        "`pea evaluate`.")


def _threshold_origin(artifact: ModelArtifact) -> str:
    f1 = artifact.training.get("validation_f1")
    if f1 is None:
        return "set by `train.threshold` (not tuned)"
    if isinstance(f1, float) and math.isnan(f1):
        return "set by `train.threshold`, because the validation fold had one class only"
    return f"that maximised F1 on the validation fold (F1 {f1:.4f})"


def _data_section(page: Page, spark: SparkSession, config: PeaConfig, artifact: ModelArtifact,
                  made_at: datetime) -> None:
    section = page.section("data", "Data and model")
    section.subheading("Input files")
    files = data.input_files(spark, config)
    if files is None:
        section.missing("No ingest audit is stored in this warehouse: run `pea ingest`.")
    else:
        rows = [[r.source_file, r.status, r.dialect, int(r.lines_read), int(r.rows_loaded),
                 int(r.rows_quarantined), int(r.lines_skipped), r.sha256[:12],
                 f"{r.ingested_at:%Y-%m-%d %H:%M}"] for r in files.itertuples()]
        rows.append(["total", "", "", int(files["lines_read"].sum()),
                     int(files["rows_loaded"].sum()), int(files["rows_quarantined"].sum()),
                     int(files["lines_skipped"].sum()), "", ""])
        section.table(["file", "status", "dialect", "lines read", "rows loaded",
                       "rows quarantined", "lines skipped", "SHA-256 (start)",
                       "ingested at (UTC)"], rows, "The run that last loaded each file "
                                                   "(ingest_audit)")
    _silver_tables(section, spark, config)
    _smote_table(section, artifact)
    _model_table(section, spark, config, artifact, made_at)
    history = artifact.training.get("history")
    if history and history.get("loss"):
        fold = artifact.training.get("validation_fold", config.split.validation_fold)
        section.figures((figures.history_figure(history), "training_history.png",
                         f"Training and validation loss per epoch (validation: fold {fold} "
                         "of the training split)."))
    section.subheading("Package versions")
    section.table(["package", "version"], sorted(artifact.packages.items()),
                  "Versions recorded in the model artifact at training time")


def _silver_tables(section: Section, spark: SparkSession, config: PeaConfig) -> None:
    section.subheading("Silver table and classes after cleaning")
    summary = data.silver_summary(spark, config)
    if summary is None:
        section.missing("No silver table is stored in this warehouse: run `pea clean`.")
        return
    section.table(["count", "rows"], [
        ["bronze rows represented (sum of copies)", summary["bronze_rows"]],
        ["silver rows (distinct flows)", summary["rows"]],
        ["training rows (one per distinct labelled feature vector)", summary["training_rows"]],
        ["rows without a label", summary["unlabelled_rows"]],
    ], "Row counts of silver")
    classes = data.silver_classes(spark, config)
    if classes is not None:
        rows = [[r.label, "attack" if r.is_attack else "benign", int(r.training_rows),
                 int(r.train), int(r.test)] for r in classes.itertuples()]
        rows.append(["total", "", int(classes["training_rows"].sum()),
                     int(classes["train"].sum()), int(classes["test"].sum())])
        section.table(["label", "class", "training rows", "train split", "test split"], rows,
                      "Training rows of silver per label, and their split")


def _smote_table(section: Section, artifact: ModelArtifact) -> None:
    section.subheading("Classes before and after SMOTE")
    training = artifact.training
    before = training.get("class_counts_before_smote")
    after = training.get("class_counts_after_smote")
    if before and after:
        rows = [[name, int(before.get(name, 0)), int(after.get(name, 0))]
                for name in ("benign", "attack")]
        rows.append(["total", int(sum(before.values())), int(sum(after.values()))])
        section.table(["class", "before SMOTE", "after SMOTE"], rows,
                      "Rows that trained the model (training split without the validation "
                      "fold)")
        return
    section.paragraph(f"The model trained on {int(training.get('rows', 0)):,} rows, "
                      f"{int(training.get('rows_after_smote', 0)):,} after SMOTE. This "
                      "artifact does not record the counts per class.")


def _model_table(section: Section, spark: SparkSession, config: PeaConfig,
                 artifact: ModelArtifact, made_at: datetime) -> None:
    section.subheading("Model")
    training = artifact.training
    record = data.model_record(spark, config, artifact.version) or {}
    created = record.get("created_at")
    rows = [
        ["model version", artifact.version],
        ["trained at", f"{created:%Y-%m-%d %H:%M:%S} UTC" if created else None],
        ["decision threshold", f"{artifact.threshold:.2f}"],
        ["epochs trained", training.get("epochs")],
        ["best validation loss", training.get("best_val_loss")],
        ["validation rows", training.get("validation_rows")],
        ["Horovod ranks", training.get("num_proc")],
        ["SMOTE k", training.get("smote_k")],
        ["seed", training.get("seed")],
        ["features (model input order)", ", ".join(artifact.display_names)],
        ["architecture", ", ".join(f"{k} {v}" for k, v in artifact.architecture.items())],
        ["artifact", artifact.path],
        ["report made at", f"{made_at:%Y-%m-%d %H:%M:%S} UTC"],
    ]
    section.table(["setting", "value"], rows, "Model artifact and training run",
                  align_numbers=False)


def _ranking_section(page: Page, ranking: pd.DataFrame | None) -> None:
    section = page.section("features", "Feature ranking")
    if ranking is None:
        section.missing("No feature ranking is stored in this warehouse: run `pea select`.")
        return
    selected = int(ranking["selected"].sum())
    reasons = ranking["dropped_reason"].dropna().value_counts()
    section.paragraph(
        f"{selected} of {len(ranking)} features are selected by information gain under the "
        f"VIF limit. Not selected: " + ", ".join(f"{n} {reason}" for reason, n in
                                                 reasons.items()) + ".")
    rows = [[int(r.rank), r.feature, r.display_name, r.information_gain,
             None if pd.isna(r.vif) else float(r.vif), bool(r.selected),
             r.dropped_reason or ""] for r in ranking.itertuples()]
    section.table(["rank", "feature", "CICFlowMeter name", "information gain (bits)", "VIF",
                   "selected", "dropped reason"], rows, "feature_ranking", scroll=True)
