"""Stratified k-fold cross-validation of a model's recipe, with and without SMOTE.

The split stage already assigns every train-split row to one of ``split.folds``
folds, stratified by label. For each fold ``i``, a model is trained exactly as
``pea train`` trains one (input transform fitted on its training rows, SMOTE,
the CNN-LSTM under Horovod, early stopping, a threshold chosen for F1):

- fold ``i`` is held out and evaluated;
- fold ``i + 1`` (mod k) is the early-stopping and threshold fold;
- the other ``k - 2`` folds are trained on.

So no fold's score has seen its own rows in training, early stopping or the
threshold. With ``crossval.ablation``, every fold is trained a second time
without SMOTE on the same rows. All the models train in one ``horovod.spark.run``.
The test split is never read.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import uuid
from typing import Any

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pea_spark.artifact import build_model, predict_probabilities
from pea_spark.config import PeaConfig
from pea_spark.evaluate import METRIC_ORDER, binary_metrics
from pea_spark.session import write_table
from pea_spark.split import check_splits_unchanged, stored_folds
from pea_spark.train import (
    balance_with_smote,
    fit_transform,
    latest_artifact,
    run_horovod_jobs,
    scale_rows,
    training_rows,
    tuned_threshold,
)

__all__ = ["crossval", "summarise_folds", "SUMMARY_METRICS"]

logger = logging.getLogger(__name__)

# The metrics whose mean and standard deviation over folds the summary reports.
SUMMARY_METRICS = ["accuracy", "precision", "recall", "f1", "roc_auc", "log_loss"]

CV_SCHEMA = ("model_version int, run_id string, smote boolean, fold int, epochs int, "
             "threshold double, metric string, value double")


def summarise_folds(per_fold: list[dict[str, float]]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof=1) of each summary metric over folds."""
    summary = {}
    for name in SUMMARY_METRICS:
        values = np.array([fold[name] for fold in per_fold], dtype=np.float64)
        summary[f"{name}_mean"] = float(values.mean())
        summary[f"{name}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return summary


def crossval(spark: SparkSession, config: PeaConfig, version: int | None = None) -> dict:
    """Cross-validate the recipe of a model (its features, the train settings) on the
    train split and append the per-fold metrics to ``cv_metrics``.

    Returns
    -------
    dict
        ``model_version``, ``run_id``, ``folds``, and for each arm (``smote``,
        and ``no_smote`` with ``crossval.ablation``) the per-fold metrics at the
        fold's tuned threshold and their mean and standard deviation.

    Notes
    -----
    The driver collects the train split's selected features (15 doubles a row)
    to score the held-out folds.
    """
    # NOTE: the train split is collected to the driver, about 130 bytes a row. Tens of
    # millions of training rows need a Spark-side scorer here.
    start = time.monotonic()
    artifact = latest_artifact(spark, config, version)
    check_splits_unchanged(spark, config, artifact.training)
    features = artifact.features
    folds = stored_folds(spark, config)
    if folds < 3:
        raise ValueError(f"cross-validation needs at least 3 folds, and {config.database}.splits "
                         f"has {folds}: each fold trains on the folds that are neither held out "
                         "nor used for early stopping. Run `pea --set split.folds=5 split` and "
                         "train again")
    arms = [True, False] if config.crossval.ablation else [True]
    rows = training_rows(spark, config, features).cache()

    pairs, plan = [], []
    for fold in range(folds):
        early = (fold + 1) % folds
        fit_rows = rows.filter(~F.col("fold").isin(fold, early))
        val_rows = rows.filter(F.col("fold") == early)
        transform = fit_transform(fit_rows, features, config.train.quantiles)
        for smote in arms:
            if smote:
                train_df, _ = balance_with_smote(fit_rows, features, transform, config)
            else:
                train_df = scale_rows(fit_rows, features, transform)
            pairs.append((train_df, scale_rows(val_rows, features, transform)))
            plan.append((fold, early, smote, transform))
    logger.info("crossval: training %d models (%d folds%s) in one Horovod run", len(pairs),
                folds, ", with and without SMOTE" if len(arms) == 2 else "")
    results = run_horovod_jobs(spark, config, pairs, len(features))
    frame = rows.select("fold", *features, "is_attack").toPandas()
    rows.unpersist()

    run_id = uuid.uuid4().hex[:12]
    table_rows: list[tuple] = []
    per_arm: dict[str, list[dict[str, Any]]] = {}
    for (fold, early, smote, transform), ranks in zip(plan, results, strict=True):
        model = build_model(len(features), config.train.conv_filters, config.train.kernel_size,
                            config.train.lstm_units, config.train.dropout)
        model.set_weights(ranks[0]["weights"])
        fold_artifact = dataclasses.replace(artifact, transform=transform)

        def probabilities(part, model=model, fold_artifact=fold_artifact):
            return predict_probabilities(model, fold_artifact,
                                         part[features].to_numpy(np.float64),
                                         config.score.batch_size)

        held_out = frame[frame["fold"] == fold]
        early_rows = frame[frame["fold"] == early]
        threshold = tuned_threshold(early_rows["is_attack"].to_numpy(), probabilities(early_rows),
                                    config.train.tune_threshold, config.train.threshold)
        y, p = held_out["is_attack"].to_numpy(), probabilities(held_out)
        epochs = len(ranks[0]["history"]["loss"])
        by_threshold = {t: binary_metrics(y, p, t) for t in sorted({0.5, threshold})}
        for t, values in by_threshold.items():
            table_rows += [(artifact.version, run_id, smote, fold, epochs, float(t), name,
                            float(values[name])) for name in METRIC_ORDER]
        arm = "smote" if smote else "no_smote"
        per_arm.setdefault(arm, []).append(
            {"fold": fold, "epochs": epochs, "threshold": threshold, **by_threshold[threshold]})
        logger.info("crossval: fold %d %s SMOTE: %d epochs, threshold %.2f, F1 %.4f, "
                    "ROC AUC %.4f", fold, "with" if smote else "without", epochs, threshold,
                    by_threshold[threshold]["f1"], by_threshold[threshold]["roc_auc"])
    frame_out = spark.createDataFrame(table_rows, CV_SCHEMA).withColumn(
        "evaluated_at", F.current_timestamp())
    write_table(frame_out, config, "cv_metrics", mode="append")

    summary: dict[str, Any] = {"model_version": artifact.version, "run_id": run_id,
                               "folds": folds}
    for arm, per_fold in per_arm.items():
        summary[arm] = {"folds": per_fold, **summarise_folds(per_fold)}
        logger.info("crossval: %s: F1 %.4f ± %.4f, accuracy %.4f ± %.4f over %d folds", arm,
                    summary[arm]["f1_mean"], summary[arm]["f1_std"],
                    summary[arm]["accuracy_mean"], summary[arm]["accuracy_std"], folds)
    logger.info("crossval: %d models in %.1f s", len(pairs), time.monotonic() - start)
    return summary
