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
from pea_spark.ingest import (
    current_files,
    file_sha256,
    find_csv_files,
    quarantine_rows,
    read_flows,
)
from pea_spark.session import read_table, table_exists, table_path, write_table
from pea_spark.train import latest_artifact

__all__ = ["load_flows", "attack_probability", "score_flows", "score", "stale_files",
           "add_missing_columns"]

logger = logging.getLogger(__name__)

# label is the line's own label as pea clean normalises it (NULL in unlabelled captures),
# so that analysts compare predictions with it without joining bronze.
PREDICTION_COLUMNS = ["flow_key", "source_file", "line_number", "label", "attack_probability",
                      "is_attack_predicted", "predicted_label", "model_version", "scored_at"]


def load_flows(spark: SparkSession, config: PeaConfig,
               inputs: list[str | Path] | None, reuse_bronze: bool = True) -> DataFrame:
    """Flows to score: cleaned rows of the CSV ``inputs``, or the silver table when None.

    CSV rows are cleaned with the same policy as training but duplicates are
    kept, so every input flow gets a prediction. A file that ``pea ingest``
    loaded with the same content (path and SHA-256) is read from ``bronze``,
    which contains exactly its loaded lines, instead of being parsed again. Set
    ``reuse_bronze`` to False to parse every file. Lines of parsed files that
    cannot be loaded go to the quarantine table, as in ``pea ingest``.
    """
    if not inputs:
        return read_table(spark, config, "silver")
    files = find_csv_files(inputs)
    ingested: list[str] = []
    if reuse_bronze:
        current = current_files(spark, config)
        ingested = [str(f) for f in files
                    if str(f) in current and current[str(f)] == file_sha256(f)]
    parts = []
    if ingested:
        logger.info("%d of %d input files are read from bronze, where pea ingest loaded them "
                    "with the same content", len(ingested), len(files))
        parts.append(clean_flows(read_table(spark, config, "bronze")
                                 .filter(F.col("source_file").isin(ingested))))
    to_parse = [f for f in files if str(f) not in ingested]
    if to_parse:
        parsed = read_flows(spark, to_parse, config.ingest.min_partitions)
        rejected = quarantine_rows(parsed, f"score-{uuid.uuid4().hex[:8]}").cache()
        count = rejected.count()
        if count:
            write_table(rejected, config, "quarantine", mode="append")
            logger.warning("%d input lines cannot be parsed and are not scored; see "
                           "%s.quarantine", count, config.database)
        rejected.unpersist()
        loaded = parsed.filter(F.col("status") == "loaded").drop("status", "reason", "raw_line")
        parts.append(clean_flows(loaded))
    return parts[0] if len(parts) == 1 else parts[0].unionByName(parts[1])


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
    if "label" not in flows.columns:
        flows = flows.withColumn("label", F.lit(None).cast("string"))
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
    add_missing_columns(df, config, name)
    target = DeltaTable.forPath(df.sparkSession, str(table_path(config, name)))
    condition = " AND ".join(f"t.{k} = s.{k}" for k in keys)
    (target.alias("t").merge(df.alias("s"), condition)
     .whenMatchedUpdateAll().whenNotMatchedInsertAll().execute())


def add_missing_columns(df: DataFrame, config: PeaConfig, name: str) -> None:
    """Add to Delta table ``name`` the columns of ``df`` that it lacks, as NULL in old rows.

    Tables written by an earlier pea-spark, such as predictions without ``label``,
    gain the new columns instead of failing the merge.
    """
    spark = df.sparkSession
    path = str(table_path(config, name))
    existing = set(spark.read.format("delta").load(path).columns)
    missing = [field for field in df.schema.fields if field.name not in existing]
    if not missing:
        return
    columns = ", ".join(f"`{field.name}` {field.dataType.simpleString()}" for field in missing)
    spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({columns})")
    logger.warning("%s.%s gained the columns %s; rows written before hold NULL there until "
                   "they are written again (pea score --rescore)", config.database, name,
                   ", ".join(field.name for field in missing))


def _scored_hashes(spark: SparkSession, config: PeaConfig, version: int) -> dict[str, str]:
    """Content hash each source file had when model ``version`` last scored it."""
    if not table_exists(config, "scored_files"):
        return {}
    rows = (read_table(spark, config, "scored_files").filter(F.col("model_version") == version)
            .groupBy("source_file").agg(F.max_by("sha256", "scored_at").alias("sha256"))
            .collect())
    return {r["source_file"]: r["sha256"] for r in rows}


def stale_files(spark: SparkSession, config: PeaConfig, version: int) -> list[str]:
    """Files that model ``version`` last scored with content other than what ingest loaded.

    Their predictions are of the newer lines, while silver still contains the
    ingested ones under the same flow keys, so silver flows of these files must
    not be matched with their predictions.
    """
    ingested = current_files(spark, config)
    return sorted(path for path, sha in _scored_hashes(spark, config, version).items()
                  if path in ingested and ingested[path] != sha)


def _delete_predictions(spark: SparkSession, config: PeaConfig, version: int,
                        files: list[str]) -> None:
    """Delete the predictions of ``files`` by model ``version``, and their explanations,
    before the files are scored again.

    The explanations go too: their flow keys (path and line number) would name the
    new content's lines while they explain the old content.
    """
    from delta.tables import DeltaTable

    if not files or not table_exists(config, "predictions"):
        return
    old = (F.col("model_version") == version) & F.col("source_file").isin(files)
    if table_exists(config, "explanations"):
        keys = read_table(spark, config, "predictions").filter(old).select("flow_key")
        explanations = DeltaTable.forPath(spark, str(table_path(config, "explanations")))
        condition = f"t.flow_key = s.flow_key AND t.model_version = {int(version)}"
        (explanations.alias("t").merge(keys.distinct().alias("s"), condition)
         .whenMatchedDelete().execute())
    target = DeltaTable.forPath(spark, str(table_path(config, "predictions")))
    target.delete(old)


def score(spark: SparkSession, config: PeaConfig, inputs: list[str | Path] | None = None,
          version: int | None = None, rescore: bool = False) -> dict[str, int]:
    """Score flows (CSV ``inputs`` or silver) into ``predictions``, incrementally.

    CSV files are identified by the SHA-256 of their content: a file that model
    ``version`` already scored with the same content is skipped, and a changed
    file has its old predictions replaced. Silver flows that already have a
    prediction by this model are skipped. ``rescore`` scores everything again.

    Returns
    -------
    dict
        ``flows`` with a prediction among the inputs, ``attacks`` among them, and
        ``scored``, the flows scored by this call.
    """
    start = time.monotonic()
    artifact = latest_artifact(spark, config, version)
    files: list[Path] = []
    if inputs:
        files = find_csv_files(inputs)
        done = {} if rescore else _scored_hashes(spark, config, artifact.version)
        hashes = {str(f): file_sha256(f) for f in files}
        pending = [f for f in files if done.get(str(f)) != hashes[str(f)]]
        if len(pending) < len(files):
            logger.info("score: %d of %d files were already scored by model v%d with the same "
                        "content and are skipped (use --rescore to score them again)",
                        len(files) - len(pending), len(files), artifact.version)
        _delete_predictions(spark, config, artifact.version, [str(f) for f in pending])
        flows = load_flows(spark, config, pending) if pending else None
    else:
        flows = read_table(spark, config, "silver")
        if not rescore and table_exists(config, "predictions"):
            done = read_table(spark, config, "predictions").filter(
                F.col("model_version") == artifact.version).select("flow_key")
            flows = flows.join(done, "flow_key", "left_anti")
    scored = 0
    if flows is not None:
        # Only the columns that scoring reads are cached, about a fifth of a cleaned flow.
        flows = flows.select("flow_key", "source_file", "line_number", "label",
                             *artifact.features).cache()
        scored = flows.count()
        if scored:
            upsert(score_flows(flows, artifact, config), config, "predictions",
                   ["flow_key", "model_version"])
        flows.unpersist()
    if files and pending:
        record = spark.createDataFrame(
            [(str(f), hashes[str(f)], artifact.version) for f in pending],
            "source_file string, sha256 string, model_version int",
        ).withColumn("scored_at", F.current_timestamp())
        write_table(record, config, "scored_files", mode="append")
    result = {**_prediction_counts(spark, config, artifact.version, files), "scored": scored}
    logger.info("score: %d flows scored with model v%d in %.1f s; %d input flows have a "
                "prediction, %d of them attacks", scored, artifact.version,
                time.monotonic() - start, result["flows"], result["attacks"])
    return result


def _prediction_counts(spark: SparkSession, config: PeaConfig, version: int,
                       files: list[Path]) -> dict[str, int]:
    """Count the predictions by model ``version`` of the input files, or of silver."""
    predictions = read_table(spark, config, "predictions").filter(
        F.col("model_version") == version)
    if files:
        predictions = predictions.filter(F.col("source_file").isin([str(f) for f in files]))
    else:
        predictions = predictions.join(
            read_table(spark, config, "silver").select("flow_key"), "flow_key")
    counts = predictions.agg(F.count("*").alias("flows"),
                             F.sum("is_attack_predicted").alias("attacks")).first()
    return {"flows": int(counts["flows"]), "attacks": int(counts["attacks"] or 0)}
