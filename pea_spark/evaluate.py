"""Evaluate a model on the test split and write the metrics table."""

from __future__ import annotations

import logging
import time
import uuid

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from pea_spark.config import PeaConfig
from pea_spark.score import score_flows
from pea_spark.session import read_table, write_table
from pea_spark.train import latest_artifact

__all__ = ["binary_metrics", "evaluate", "METRIC_ORDER"]

logger = logging.getLogger(__name__)

METRIC_ORDER = ["accuracy", "precision", "recall", "f1", "specificity", "roc_auc",
                "average_precision", "true_positives", "false_positives", "true_negatives",
                "false_negatives", "rows"]


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator else 0.0


def binary_metrics(y_true: np.ndarray, probability: np.ndarray,
                   threshold: float = 0.5) -> dict[str, float]:
    """Classification metrics of attack probabilities against 0/1 labels.

    Precision, recall and F1 treat attack (1) as the positive class; an
    undefined ratio (no predicted or no actual positives) is reported as 0.0.
    ROC AUC and average precision are NaN when the labels hold one class only.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y_true = np.asarray(y_true).astype(int)
    predicted = (np.asarray(probability) >= threshold).astype(int)
    tp = int(((predicted == 1) & (y_true == 1)).sum())
    fp = int(((predicted == 1) & (y_true == 0)).sum())
    tn = int(((predicted == 0) & (y_true == 0)).sum())
    fn = int(((predicted == 0) & (y_true == 1)).sum())
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    both_classes = len(np.unique(y_true)) == 2
    return {
        "accuracy": _ratio(tp + tn, len(y_true)),
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "specificity": _ratio(tn, tn + fp),
        "roc_auc": float(roc_auc_score(y_true, probability)) if both_classes else float("nan"),
        "average_precision": (float(average_precision_score(y_true, probability))
                              if both_classes else float("nan")),
        "true_positives": tp,
        "false_positives": fp,
        "true_negatives": tn,
        "false_negatives": fn,
        "rows": len(y_true),
    }


def evaluate(spark: SparkSession, config: PeaConfig, version: int | None = None) -> dict:
    """Score the test split with a model and append its metrics to ``metrics``.

    Metrics are computed at the model's decision threshold and, for comparison
    with models that do not tune it, at 0.5; each row names its threshold.

    Returns
    -------
    dict
        ``model_version``, ``run_id`` and the metrics of :func:`binary_metrics`.

    Notes
    -----
    The attack probability and label of every test flow (16 bytes a flow) are
    collected to the driver, where scikit-learn computes ROC AUC and average
    precision exactly.
    """
    start = time.monotonic()
    artifact = latest_artifact(spark, config, version)
    silver = read_table(spark, config, "silver")
    test = read_table(spark, config, "splits").filter(F.col("split") == "test")
    flows = silver.join(test.select("flow_key"), "flow_key")
    scored = score_flows(flows, artifact, config).join(
        flows.select("flow_key", "is_attack"), "flow_key")
    pairs = scored.select("attack_probability", "is_attack").toPandas()
    if pairs.empty:
        raise ValueError(f"the test split in {config.database}.splits is empty: run `pea split` "
                         "on a silver table with labelled rows")
    y, probability = pairs["is_attack"].to_numpy(), pairs["attack_probability"].to_numpy()
    metrics = binary_metrics(y, probability, artifact.threshold)
    at_half = binary_metrics(y, probability, 0.5)
    run_id = uuid.uuid4().hex[:12]
    rows = [(artifact.version, run_id, "test", threshold, name, float(values[name]))
            for threshold, values in sorted({artifact.threshold: metrics, 0.5: at_half}.items())
            for name in METRIC_ORDER]
    schema = ("model_version int, run_id string, split string, threshold double, metric string, "
              "value double")
    frame = spark.createDataFrame(rows, schema).withColumn("evaluated_at", F.current_timestamp())
    write_table(frame, config, "metrics", mode="append")
    logger.info("evaluate: model v%d on %d test flows: accuracy %.4f, F1 %.4f, ROC AUC %.4f "
                "in %.1f s", artifact.version, metrics["rows"], metrics["accuracy"],
                metrics["f1"], metrics["roc_auc"], time.monotonic() - start)
    return {"model_version": artifact.version, "run_id": run_id,
            "threshold": artifact.threshold, **metrics, "f1_at_0.5": at_half["f1"]}
