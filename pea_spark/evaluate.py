"""Evaluate a model and the Random Forest baseline on the test split and the validation fold.

Writes three tables, each keyed by model version and evaluation run:

- ``metrics``: one row per model kind (``cnn_lstm``, ``random_forest``), split
  (``test``, ``validation``), decision threshold and metric;
- ``evaluation_predictions``: the attack probability each model gave each
  evaluated flow, so that any metric can be recomputed in SQL or scikit-learn;
- ``class_metrics``: recall per multi-class label on the test split, so that a
  weak attack class shows even though the model is binary.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from pea_spark.config import PeaConfig
from pea_spark.score import score_flows
from pea_spark.session import read_table, write_table
from pea_spark.split import check_splits_unchanged, labelled_flows
from pea_spark.train import latest_artifact, tuned_threshold

__all__ = ["binary_metrics", "class_recall", "evaluate", "METRIC_ORDER", "CNN_LSTM",
           "RANDOM_FOREST"]

logger = logging.getLogger(__name__)

CNN_LSTM = "cnn_lstm"
RANDOM_FOREST = "random_forest"

METRIC_ORDER = ["accuracy", "precision", "recall", "f1", "specificity", "roc_auc",
                "average_precision", "log_loss", "true_positives", "false_positives",
                "true_negatives", "false_negatives", "rows"]

METRICS_SCHEMA = ("model_version int, run_id string, model string, split string, "
                  "threshold double, metric string, value double")
PREDICTIONS_SCHEMA = ("model_version int, run_id string, model string, split string, "
                      "flow_key long, label string, is_attack int, probability double")
CLASS_SCHEMA = ("model_version int, run_id string, model string, threshold double, "
                "label string, is_attack int, rows long, correct long, recall double")


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def binary_metrics(y_true: np.ndarray, probability: np.ndarray,
                   threshold: float = 0.5) -> dict[str, float]:
    """Classification metrics of attack probabilities against 0/1 labels.

    Precision, recall and F1 treat attack (1) as the positive class; an
    undefined ratio (no predicted or no actual positives) is reported as 0.0.
    ROC AUC and average precision are NaN when the labels hold one class only.
    ``log_loss`` is the mean binary cross-entropy, with probabilities clipped
    to [1e-7, 1 - 1e-7] as Keras clips them.
    """
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    y_true = np.asarray(y_true).astype(int)
    probability = np.asarray(probability, dtype=np.float64)
    predicted = (probability >= threshold).astype(int)
    tp = int(((predicted == 1) & (y_true == 1)).sum())
    fp = int(((predicted == 1) & (y_true == 0)).sum())
    tn = int(((predicted == 0) & (y_true == 0)).sum())
    fn = int(((predicted == 0) & (y_true == 1)).sum())
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    both_classes = len(np.unique(y_true)) == 2
    clipped = np.clip(probability, 1e-7, 1 - 1e-7)
    return {
        "accuracy": _ratio(tp + tn, len(y_true)),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "specificity": _ratio(tn, tn + fp),
        "roc_auc": float(roc_auc_score(y_true, probability)) if both_classes else float("nan"),
        "average_precision": (float(average_precision_score(y_true, probability))
                              if both_classes else float("nan")),
        "log_loss": float(log_loss(y_true, clipped, labels=[0, 1])) if len(y_true) else 0.0,
        "true_positives": tp,
        "false_positives": fp,
        "true_negatives": tn,
        "false_negatives": fn,
        "rows": len(y_true),
    }


def class_recall(labels: np.ndarray, is_attack: np.ndarray, probability: np.ndarray,
                 threshold: float) -> list[dict[str, Any]]:
    """Recall of each multi-class label: the share of its rows given their own binary class.

    For an attack label that is the share predicted as attack; for BENIGN, the
    share predicted as benign (its specificity).
    """
    frame = pd.DataFrame({"label": labels, "is_attack": np.asarray(is_attack).astype(int),
                          "predicted": (np.asarray(probability) >= threshold).astype(int)})
    frame["correct"] = frame["predicted"] == frame["is_attack"]
    rows = []
    for (label, attack), group in frame.groupby(["label", "is_attack"], sort=True):
        correct = int(group["correct"].sum())
        rows.append({"label": str(label), "is_attack": int(attack), "rows": len(group),
                     "correct": correct, "recall": correct / len(group)})
    return rows


def evaluation_flows(spark: SparkSession, config: PeaConfig, validation_fold: int) -> DataFrame:
    """Select silver's training rows in the test split or the validation fold, with a
    ``split`` column (``test`` or ``validation``)."""
    splits = read_table(spark, config, "splits")
    chosen = splits.filter((F.col("split") == "test") | (F.col("fold") == validation_fold))
    named = chosen.select(
        "flow_key",
        F.when(F.col("split") == "test", F.lit("test")).otherwise(F.lit("validation"))
        .alias("split"))
    return labelled_flows(spark, config).join(named, "flow_key")


def _cnn_lstm_predictions(flows: DataFrame, artifact: Any, config: PeaConfig) -> pd.DataFrame:
    scored = score_flows(flows, artifact, config).select("flow_key", "attack_probability")
    frame = scored.join(flows.select("flow_key", "split", "label", "is_attack"), "flow_key")
    return frame.withColumnRenamed("attack_probability", "probability").toPandas()


def _model_results(frame: pd.DataFrame, threshold: float) -> dict[str, dict[float, dict]]:
    """Metrics of one model's predictions, by split and then by threshold."""
    results: dict[str, dict[float, dict]] = {}
    for split_name, part in frame.groupby("split"):
        y, p = part["is_attack"].to_numpy(), part["probability"].to_numpy()
        results[split_name] = {t: binary_metrics(y, p, t) for t in sorted({threshold, 0.5})}
    return results


def _validation_threshold(frame: pd.DataFrame, tune: bool, default: float) -> float:
    validation = frame[frame["split"] == "validation"]
    return tuned_threshold(validation["is_attack"].to_numpy(),
                           validation["probability"].to_numpy(), tune, default)


def _write(spark: SparkSession, config: PeaConfig, name: str, rows: list, schema: str) -> None:
    if rows:
        frame = spark.createDataFrame(rows, schema).withColumn("evaluated_at",
                                                               F.current_timestamp())
        write_table(frame, config, name, mode="append")


def evaluate(spark: SparkSession, config: PeaConfig, version: int | None = None) -> dict:
    """Evaluate a model, and the Random Forest baseline, on the test split and validation fold.

    The CNN-LSTM is judged at its stored decision threshold (chosen on the
    validation fold by ``pea train``) and at 0.5. The Random Forest
    (``evaluate.baseline``) is trained on the same rows with the same features,
    and its threshold is chosen on the same validation fold the same way.

    Returns
    -------
    dict
        ``model_version``, ``run_id``, ``threshold``, the test metrics of
        :func:`binary_metrics` at that threshold, ``f1_at_0.5``, ``validation``
        (metrics at the threshold), ``classes`` (per-label recall) and
        ``baseline`` (the Random Forest's threshold and test metrics, or None).

    Notes
    -----
    The probability and label of every test and validation flow (about 40 bytes
    a flow) are collected to the driver, where scikit-learn computes the metrics.
    """
    start = time.monotonic()
    artifact = latest_artifact(spark, config, version)
    check_splits_unchanged(spark, config, artifact.training)
    # Models trained before the fold was recorded used the configured one.
    validation_fold = artifact.training.get("validation_fold", config.split.validation_fold)
    flows = evaluation_flows(spark, config, validation_fold).cache()
    predictions = {CNN_LSTM: (_cnn_lstm_predictions(flows, artifact, config),
                              artifact.threshold)}
    if not (predictions[CNN_LSTM][0]["split"] == "test").any():
        flows.unpersist()
        raise ValueError(f"the test split in {config.database}.splits is empty: run `pea split` "
                         "on a silver table with labelled rows")
    if config.evaluate.baseline:
        from pea_spark.baseline import random_forest_predictions

        forest = random_forest_predictions(spark, config, artifact.features, flows,
                                            validation_fold)
        predictions[RANDOM_FOREST] = (forest, _validation_threshold(
            forest, config.train.tune_threshold, 0.5))
    flows.unpersist()

    run_id = uuid.uuid4().hex[:12]
    metric_rows, prediction_rows, class_rows = [], [], []
    results: dict[str, dict] = {}
    for model, (frame, threshold) in predictions.items():
        results[model] = _model_results(frame, threshold)
        for split_name, by_threshold in results[model].items():
            for t, values in by_threshold.items():
                metric_rows += [(artifact.version, run_id, model, split_name, float(t), name,
                                 float(values[name])) for name in METRIC_ORDER]
        prediction_rows += [
            (artifact.version, run_id, model, r.split, r.flow_key, r.label, int(r.is_attack),
             float(r.probability)) for r in frame.itertuples(index=False)]
        test = frame[frame["split"] == "test"]
        class_rows += [(artifact.version, run_id, model, float(threshold), c["label"],
                        c["is_attack"], c["rows"], c["correct"], c["recall"])
                       for c in class_recall(test["label"].to_numpy(),
                                             test["is_attack"].to_numpy(),
                                             test["probability"].to_numpy(), threshold)]
    _write(spark, config, "metrics", metric_rows, METRICS_SCHEMA)
    _write(spark, config, "evaluation_predictions", prediction_rows, PREDICTIONS_SCHEMA)
    _write(spark, config, "class_metrics", class_rows, CLASS_SCHEMA)

    threshold = artifact.threshold
    test_metrics = results[CNN_LSTM]["test"][threshold]
    summary = {
        "model_version": artifact.version, "run_id": run_id, "threshold": threshold,
        **test_metrics,
        "f1_at_0.5": results[CNN_LSTM]["test"][0.5]["f1"],
        "validation": results[CNN_LSTM].get("validation", {}).get(threshold),
        "classes": [r[4:] for r in class_rows if r[2] == CNN_LSTM],
        "baseline": None,
    }
    if RANDOM_FOREST in results:
        forest_threshold = predictions[RANDOM_FOREST][1]
        summary["baseline"] = {"threshold": forest_threshold,
                               **results[RANDOM_FOREST]["test"][forest_threshold]}
    logger.info("evaluate: model v%d on %d test flows: accuracy %.4f, F1 %.4f, ROC AUC %.4f "
                "in %.1f s", artifact.version, test_metrics["rows"], test_metrics["accuracy"],
                test_metrics["f1"], test_metrics["roc_auc"], time.monotonic() - start)
    if summary["baseline"]:
        logger.info("evaluate: Random Forest baseline at threshold %.2f: F1 %.4f, ROC AUC %.4f",
                    summary["baseline"]["threshold"], summary["baseline"]["f1"],
                    summary["baseline"]["roc_auc"])
    return summary
