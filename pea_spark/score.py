"""Score flows with a trained model in a pandas UDF and write the predictions table."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.functions import pandas_udf

from pea_spark.artifact import ModelArtifact
from pea_spark.clean import clean_flows
from pea_spark.config import PeaConfig
from pea_spark.ingest import find_csv_files, quarantine_rows, read_flows
from pea_spark.session import read_table, table_exists, table_path, write_table
from pea_spark.train import latest_artifact

__all__ = ["load_flows", "attack_probability", "score_flows", "score"]

logger = logging.getLogger(__name__)

PREDICTION_COLUMNS = ["flow_key", "source_file", "line_number", "attack_probability",
                      "is_attack_predicted", "predicted_label", "model_version", "scored_at"]


def load_flows(spark: SparkSession, config: PeaConfig,
               inputs: list[str | Path] | None) -> DataFrame:
    """Flows to score: cleaned rows of the CSV ``inputs``, or the silver table when None.

    CSV rows are cleaned with the same policy as training but duplicates are
    kept, so every input flow gets a prediction. Lines that cannot be parsed go
    to the quarantine table, as in ``pea ingest``.
    """
    if not inputs:
        return read_table(spark, config, "silver")
    parsed = read_flows(spark, find_csv_files(inputs), config.ingest.min_partitions)
    rejected = quarantine_rows(parsed, f"score-{uuid.uuid4().hex[:8]}").cache()
    count = rejected.count()
    if count:
        write_table(rejected, config, "quarantine", mode="append")
        logger.warning("%d input lines cannot be parsed and are not scored; see %s.quarantine",
                       count, config.database)
    rejected.unpersist()
    loaded = parsed.filter(F.col("status") == "loaded").drop("status", "reason", "raw_line")
    return clean_flows(loaded)


def attack_probability(artifact: ModelArtifact, batch_size: int, threads: int = 1) -> Column:
    """Pandas UDF column computing the attack probability from the artifact's features.

    The Keras model is loaded once per Python worker and reused by every task
    that worker runs. Each Arrow batch is scored in slices of ``batch_size``
    rows, and the count of predictions is checked against the rows received.
    """

    @pandas_udf("double")
    def predict(batches: Iterator[pd.DataFrame]) -> Iterator[pd.Series]:
        from pea_spark.artifact import (
            load_keras_model,
            predict_probabilities,
            set_tensorflow_threads,
        )

        set_tensorflow_threads(threads)
        model = load_keras_model(artifact.path)
        for frame in batches:
            raw = frame[artifact.features].to_numpy(np.float64)
            yield pd.Series(predict_probabilities(model, artifact, raw, batch_size))

    return predict(F.struct(*[F.col(f) for f in artifact.features]))


def score_flows(flows: DataFrame, artifact: ModelArtifact, config: PeaConfig) -> DataFrame:
    """Add the prediction columns to flows; returns :data:`PREDICTION_COLUMNS`."""
    missing = [f for f in artifact.features if f not in flows.columns]
    if missing:
        raise ValueError(f"flows lack feature columns {', '.join(missing)} that model "
                         f"v{artifact.version} needs")
    probability = attack_probability(artifact, config.score.batch_size)
    predicted = F.col("attack_probability") >= F.lit(artifact.threshold)
    return (
        flows.withColumn("attack_probability", probability)
        .withColumn("is_attack_predicted", predicted.cast("int"))
        .withColumn("predicted_label",
                    F.when(predicted, F.lit("ATTACK")).otherwise(F.lit("BENIGN")))
        .withColumn("model_version", F.lit(artifact.version))
        .withColumn("scored_at", F.current_timestamp())
        .select(*PREDICTION_COLUMNS)
    )


def upsert(df: DataFrame, config: PeaConfig, name: str, keys: list[str]) -> None:
    """Insert rows into Delta table ``name``, replacing rows with the same ``keys``."""
    from delta.tables import DeltaTable

    if not table_exists(config, name):
        write_table(df, config, name)
        return
    target = DeltaTable.forPath(df.sparkSession, str(table_path(config, name)))
    condition = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    (target.alias("t").merge(df.alias("s"), condition)
     .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())


def score(spark: SparkSession, config: PeaConfig, inputs: list[str | Path] | None = None,
          version: int | None = None) -> dict[str, int]:
    """Score flows (CSV ``inputs`` or silver) into ``predictions``.

    Re-scoring a flow with the same model version replaces its row.

    Returns
    -------
    dict
        ``flows`` scored and ``attacks`` predicted.
    """
    start = time.monotonic()
    artifact = latest_artifact(spark, config, version)
    flows = load_flows(spark, config, inputs)
    predictions = score_flows(flows, artifact, config)
    upsert(predictions, config, "predictions", ["flow_key", "model_version"])
    written = read_table(spark, config, "predictions").filter(
        F.col("model_version") == artifact.version).join(flows.select("flow_key"), "flow_key")
    counts = written.agg(F.count("*").alias("flows"),
                         F.sum("is_attack_predicted").alias("attacks")).first()
    result = {"flows": int(counts["flows"]), "attacks": int(counts["attacks"] or 0)}
    logger.info("score: %d flows scored with model v%d, %d predicted attacks, in %.1f s",
                result["flows"], artifact.version, result["attacks"], time.monotonic() - start)
    return result
