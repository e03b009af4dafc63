"""Score flows with a trained model in a pandas UDF and write the predictions table."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
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
    ingested_versions,
    quarantine_rows,
    read_flows,
)
from pea_spark.session import read_table, table_exists, table_path, write_table
from pea_spark.train import latest_artifact

__all__ = ["load_flows", "attack_probability", "score_flows", "score", "check_contents",
           "predicted_contents", "with_source_sha256", "add_missing_columns", "ContentCheck",
           "file_list", "count_files", "require_current_silver"]

logger = logging.getLogger(__name__)

# source_sha256 is the SHA-256 of the file content the line was read from, so that a
# prediction is replaced when its file changes. label is the line's own label as pea
# clean normalises it (NULL in unlabelled captures), so that analysts compare
# predictions with it without joining bronze.
PREDICTION_COLUMNS = ["flow_key", "source_file", "line_number", "source_sha256", "label",
                      "attack_probability", "is_attack_predicted", "predicted_label",
                      "model_version", "scored_at"]


def load_flows(spark: SparkSession, config: PeaConfig,
               inputs: list[str | Path] | None, reuse_bronze: bool = True,
               hashes: dict[str, str] | None = None) -> DataFrame:
    """Flows to score: cleaned rows of the CSV ``inputs``, or the silver table when None.

    CSV rows are cleaned with the same policy as training but duplicates are
    kept, so every input flow gets a prediction. A file that ``pea ingest``
    loaded with the same content (path and SHA-256) is read from ``bronze``,
    which contains exactly its loaded lines, instead of being parsed again. Set
    ``reuse_bronze`` to False to parse every file. ``hashes`` maps file paths to
    SHA-256 values the caller already computed, so large files are read once.
    Lines of parsed files that cannot be loaded go to the quarantine table, as in
    ``pea ingest``.
    """
    if not inputs:
        return read_table(spark, config, "silver")
    files = find_csv_files(inputs)
    ingested: list[str] = []
    if reuse_bronze:
        current = current_files(spark, config)
        ingested = [str(f) for f in files
                    if str(f) in current and current[str(f)] == _sha256_of(f, hashes)]
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


def _sha256_of(path: Path, hashes: dict[str, str] | None) -> str:
    """Return the content hash of ``path`` from ``hashes``, or compute it when absent."""
    if hashes and str(path) in hashes:
        return hashes[str(path)]
    return file_sha256(path)


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
    for column in ("label", "source_sha256"):
        if column not in flows.columns:
            flows = flows.withColumn(column, F.lit(None).cast("string"))
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
    logger.warning("%s.%s gained the columns %s; rows written before contain NULL there until "
                   "they are written again (pea score --rescore)", config.database, name,
                   ", ".join(field.name for field in missing))


def with_source_sha256(flows: DataFrame, hashes: dict[str, str]) -> DataFrame:
    """Add the ``source_sha256`` column: the content hash of each flow's source file."""
    spark = flows.sparkSession
    table = spark.createDataFrame(list(hashes.items()), "source_file string, source_sha256 string")
    return flows.join(F.broadcast(table), "source_file", "left")


def predicted_contents(spark: SparkSession, config: PeaConfig,
                       version: int) -> dict[str, tuple[set[str], datetime]]:
    """Return, for each file with predictions by model ``version``, the content hashes
    they were made from and the time of the last one.

    Predictions written before ``source_sha256`` existed count as the hash ``""``,
    which matches no file.
    """
    if not table_exists(config, "predictions"):
        return {}
    rows = (read_table(spark, config, "predictions").filter(F.col("model_version") == version)
            .groupBy("source_file")
            .agg(F.collect_set(F.coalesce(F.col("source_sha256"), F.lit(""))).alias("hashes"),
                 F.max("scored_at").alias("scored_at"))
            .collect())
    return {r["source_file"]: (set(r["hashes"]), r["scored_at"]) for r in rows}


@dataclass
class ContentCheck:
    """Files whose predictions by one model version were made from other content than
    silver's, split by which of the two matches the file now."""

    predictions_current: list[str]
    silver_current: list[str]

    @property
    def files(self) -> list[str]:
        return sorted(self.predictions_current + self.silver_current)


def check_contents(spark: SparkSession, config: PeaConfig, version: int,
                   ingested: dict[str, tuple[str, datetime]] | None = None) -> ContentCheck:
    """Compare, for each ingested file, the content in silver with the content that
    model ``version``'s predictions were made from, and tell which one is current.

    The file on disk decides. A file scored with ``--input`` after it changed has
    current predictions. A file ingested again, or changed back to its ingested
    content, has a current silver. For a file that is gone, or matches neither,
    the later of its last ingest and its last prediction is current. ``ingested``
    is :func:`ingested_versions`, when the caller has read it already.
    """
    if ingested is None:
        ingested = ingested_versions(spark, config)
    predictions_current, silver_current = [], []
    for path, (hashes, scored_at) in predicted_contents(spark, config, version).items():
        if path not in ingested or hashes == {ingested[path][0]}:
            continue
        silver_sha, ingested_at = ingested[path]
        try:
            now = file_sha256(Path(path))
        except OSError:
            now = None
        if now == silver_sha:
            silver_current.append(path)
        elif now is not None and hashes == {now}:
            predictions_current.append(path)
        elif scored_at > ingested_at:
            predictions_current.append(path)
        else:
            silver_current.append(path)
    return ContentCheck(sorted(predictions_current), sorted(silver_current))


def require_current_silver(spark: SparkSession, config: PeaConfig, stage: str) -> None:
    """Raise ValueError when pea ingest loaded files after the last pea clean.

    Silver then contains the lines from before that ingest, while ingest_audit
    already names the new content, so silver flows cannot be matched with their files.
    """
    if not (table_exists(config, "clean_summary") and table_exists(config, "ingest_audit")):
        return
    cleaned = read_table(spark, config, "clean_summary").agg(F.max("cleaned_at")).first()[0]
    loaded = (read_table(spark, config, "ingest_audit")
              .filter(F.col("status").isin("new", "replaced"))
              .agg(F.max("ingested_at")).first()[0])
    if cleaned is not None and loaded is not None and loaded > cleaned:
        raise ValueError(f"silver is older than bronze: pea ingest loaded new or changed files "
                         f"at {loaded:%Y-%m-%d %H:%M:%S}, after the last pea clean at "
                         f"{cleaned:%Y-%m-%d %H:%M:%S}; run pea clean first, then pea {stage}")


def count_files(count: int) -> str:
    """Write ``count`` files in words: "1 file", "2 files"."""
    return "1 file" if count == 1 else f"{count} files"


def file_list(paths: list[str]) -> str:
    """Name up to five of ``paths`` for a log message, and count the rest."""
    return ", ".join(paths[:5]) + (f" and {len(paths) - 5} more" if len(paths) > 5 else "")


def _delete_replaced(spark: SparkSession, config: PeaConfig, version: int,
                     targets: dict[str, str]) -> None:
    """Delete the predictions by model ``version`` of each file in ``targets`` that were
    made from other content than its target hash, with their explanations.

    Lines that the new content no longer has go with them. The explanations go
    too: their flow keys (path and line number) would name the new content's
    lines while they explain the old content.
    """
    from delta.tables import DeltaTable

    if not targets or not table_exists(config, "predictions"):
        return
    target_hashes = spark.createDataFrame(list(targets.items()),
                                          "source_file string, target string")
    old = (read_table(spark, config, "predictions").filter(F.col("model_version") == version)
           .join(F.broadcast(target_hashes), "source_file")
           .filter(~F.col("source_sha256").eqNullSafe(F.col("target")))
           .select("flow_key").distinct().cache())
    try:
        if not old.count():
            return
        condition = f"t.flow_key = s.flow_key AND t.model_version = {int(version)}"
        for name in ("explanations", "predictions"):
            if table_exists(config, name):
                target = DeltaTable.forPath(spark, str(table_path(config, name)))
                (target.alias("t").merge(old.alias("s"), condition)
                 .whenMatchedDelete().execute())
    finally:
        old.unpersist()


def _input_flows(spark: SparkSession, config: PeaConfig, inputs: list[str | Path],
                 version: int, rescore: bool) -> tuple[dict[str, str], DataFrame | None]:
    """Return the CSV files to score, with their content hashes, and their flows.

    A file is scored when it is new, changed, or ``rescore`` is set. The flows
    are None when no file is to be scored.
    """
    files = find_csv_files(inputs)
    hashes = {str(f): file_sha256(f) for f in files}
    done = predicted_contents(spark, config, version)
    pending = [f for f in files
               if rescore or done.get(str(f), (set(), None))[0] != {hashes[str(f)]}]
    if len(pending) < len(files):
        logger.info("score: skipping %d of %d input files, which model v%d already scored "
                    "with the same content (use --rescore to score them again)",
                    len(files) - len(pending), len(files), version)
    targets = {str(f): hashes[str(f)] for f in pending}
    _delete_replaced(spark, config, version, targets)
    if not pending:
        return targets, None
    return targets, with_source_sha256(load_flows(spark, config, pending, hashes=targets),
                                       targets)


def _silver_flows(spark: SparkSession, config: PeaConfig, version: int,
                  rescore: bool) -> DataFrame:
    """Return the silver flows that have no prediction from their silver content."""
    require_current_silver(spark, config, "score")
    versions = ingested_versions(spark, config)
    check = check_contents(spark, config, version, versions)
    if check.predictions_current:
        logger.warning("score: keeping the predictions of %s scored with --input after a "
                       "change, because they match the files now; silver's earlier lines of "
                       "them are not scored: %s. To score silver's lines, ingest the files "
                       "again and run pea clean first.",
                       count_files(len(check.predictions_current)),
                       file_list(check.predictions_current))
    ingested = {path: sha for path, (sha, _) in versions.items()}
    _delete_replaced(spark, config, version,
                     {path: ingested[path] for path in check.silver_current})
    flows = read_table(spark, config, "silver")
    if check.predictions_current:
        flows = flows.filter(~F.col("source_file").isin(check.predictions_current))
    flows = with_source_sha256(flows, ingested)
    if not rescore and table_exists(config, "predictions"):
        done = read_table(spark, config, "predictions").filter(
            F.col("model_version") == version).select("flow_key")
        flows = flows.join(done, "flow_key", "left_anti")
    return flows


def score(spark: SparkSession, config: PeaConfig, inputs: list[str | Path] | None = None,
          version: int | None = None, rescore: bool = False) -> dict[str, int]:
    """Score flows (CSV ``inputs`` or silver) into ``predictions``, incrementally.

    Each prediction records the SHA-256 of the file content its line came from.
    A CSV file whose predictions by model ``version`` were made from its current
    content is skipped. A changed file has its old predictions and their
    explanations replaced. Silver flows that already have a prediction from
    their silver content are skipped. Files scored with ``--input`` after they
    changed keep those predictions, because they match the file now. ``rescore``
    scores everything else again.

    Returns
    -------
    dict
        ``flows`` with a prediction among the inputs, ``attacks`` among them, and
        ``scored``, the flows scored by this call.
    """
    start = time.monotonic()
    artifact = latest_artifact(spark, config, version)
    files: list[Path] = []
    pending: dict[str, str] = {}
    if inputs:
        files = find_csv_files(inputs)
        pending, flows = _input_flows(spark, config, files, artifact.version, rescore)
    else:
        flows = _silver_flows(spark, config, artifact.version, rescore)
    scored = 0
    if flows is not None:
        # Only the columns that scoring reads are cached, about a fifth of a cleaned flow.
        flows = flows.select("flow_key", "source_file", "line_number", "source_sha256", "label",
                             *artifact.features).cache()
        scored = flows.count()
        if scored:
            upsert(score_flows(flows, artifact, config), config, "predictions",
                   ["flow_key", "model_version"])
        flows.unpersist()
    if pending:
        record = spark.createDataFrame(
            [(path, sha, artifact.version) for path, sha in pending.items()],
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
