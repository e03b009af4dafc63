"""Read what the model report shows from the warehouse tables, as small pandas frames.

Each reader returns None when its table is missing or contains no rows for the
model version, so that the report can name the stage to run instead.
Evaluation tables are appended to by every run, so the readers keep the rows
of the newest run (by ``evaluated_at``) of each table.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F

from pea_spark.config import PeaConfig
from pea_spark.session import read_table, table_exists

__all__ = [
    "CNN_LSTM",
    "RANDOM_FOREST",
    "class_rows",
    "cv_rows",
    "evaluation_scores",
    "explained_flows",
    "feature_influence",
    "feature_ranking",
    "input_files",
    "metric_rows",
    "model_record",
    "silver_classes",
    "silver_summary",
]

CNN_LSTM = "cnn_lstm"
RANDOM_FOREST = "random_forest"


def _optional_table(spark: SparkSession, config: PeaConfig, name: str,
                    version: int | None = None) -> DataFrame | None:
    """Read table ``name`` (only ``version``'s rows when given), or None when it is missing."""
    if not table_exists(config, name):
        return None
    frame = read_table(spark, config, name)
    if version is not None and "model_version" in frame.columns:
        frame = frame.filter(F.col("model_version") == version)
    return frame


def _with_model(frame: DataFrame) -> DataFrame:
    # Rows written before the Random Forest baseline existed have no model, or a null one.
    if "model" not in frame.columns:
        return frame.withColumn("model", F.lit(CNN_LSTM))
    return frame.withColumn("model", F.coalesce(F.col("model"), F.lit(CNN_LSTM)))


def _newest_run(frame: DataFrame) -> DataFrame:
    """Keep the rows of the newest run (latest ``evaluated_at``).

    One run for every section keeps numbers shown side by side comparable: a
    later run without the baseline or the ablation shows those as missing
    instead of pairing them with an older run's rows.
    """
    runs = frame.groupBy("run_id").agg(F.max("evaluated_at").alias("_finished"))
    newest = runs.orderBy(F.desc("_finished"), F.desc("run_id")).limit(1).select("run_id")
    return frame.join(newest, "run_id")


def _collect(frame: DataFrame | None) -> pd.DataFrame | None:
    if frame is None:
        return None
    result = frame.toPandas()
    return None if result.empty else result


def _newest_rows(spark: SparkSession, config: PeaConfig, name: str, version: int,
                 columns: list[str]) -> pd.DataFrame | None:
    """Collect ``columns`` of table ``name`` for ``version`` from its newest run, or None."""
    frame = _optional_table(spark, config, name, version)
    if frame is None:
        return None
    return _collect(_newest_run(_with_model(frame)).select(*columns))


def metric_rows(spark: SparkSession, config: PeaConfig, version: int) -> pd.DataFrame | None:
    """Rows of ``metrics`` from the newest evaluate run.

    Columns: ``model``, ``split``, ``threshold``, ``metric``, ``value``,
    ``run_id`` and ``evaluated_at``.
    """
    return _newest_rows(spark, config, "metrics", version,
                        ["model", "split", "threshold", "metric", "value", "run_id",
                         "evaluated_at"])


def evaluation_scores(spark: SparkSession, config: PeaConfig,
                      version: int) -> pd.DataFrame | None:
    """Label and attack probability of every flow of the newest evaluate run.

    Columns: ``model``, ``split``, ``label``, ``is_attack`` and ``probability``.

    Notes
    -----
    Collects one row per evaluated flow and model to the driver, about 40
    bytes a row.
    """
    return _newest_rows(spark, config, "evaluation_predictions", version,
                        ["model", "split", "label", "is_attack", "probability"])


def class_rows(spark: SparkSession, config: PeaConfig, version: int) -> pd.DataFrame | None:
    """Rows of ``class_metrics`` from the newest evaluate run."""
    return _newest_rows(spark, config, "class_metrics", version,
                        ["model", "threshold", "label", "is_attack", "rows", "correct", "recall"])


def cv_rows(spark: SparkSession, config: PeaConfig, version: int) -> pd.DataFrame | None:
    """Rows of ``cv_metrics`` from the newest crossval run."""
    frame = _optional_table(spark, config, "cv_metrics", version)
    if frame is None:
        return None
    return _collect(_newest_run(frame).select("smote", "fold", "epochs", "threshold", "metric",
                                              "value", "run_id"))


def explained_flows(spark: SparkSession, config: PeaConfig, version: int,
                    count: int) -> pd.DataFrame | None:
    """Explanation rows of the ``count`` explained flows with the highest attack probability.

    Ties are broken by ``flow_key``. Where the flow is in ``predictions`` or
    ``silver``, its source file, line number and label are added (null otherwise).
    """
    explanations = _optional_table(spark, config, "explanations", version)
    if explanations is None:
        return None
    top = (explanations.groupBy("flow_key").agg(F.max("attack_probability").alias("top"))
           .orderBy(F.desc("top"), "flow_key").limit(count))
    rows = explanations.join(top.select("flow_key"), "flow_key")
    predictions = _optional_table(spark, config, "predictions", version)
    if predictions is not None:
        origin = predictions.select("flow_key", "source_file", "line_number")
        rows = rows.join(origin, "flow_key", "left")
    silver = _optional_table(spark, config, "silver")
    if silver is not None:
        rows = rows.join(silver.select("flow_key", "label"), "flow_key", "left")
    for name in ("source_file", "line_number", "label"):
        if name not in rows.columns:
            rows = rows.withColumn(name, F.lit(None).cast("string"))
    return _collect(rows.select("flow_key", "rank", "feature", "display_name", "condition",
                                "weight", "attack_probability", "source_file", "line_number",
                                "label"))


def feature_influence(spark: SparkSession, config: PeaConfig,
                      version: int) -> tuple[pd.DataFrame, int] | None:
    """Mean absolute LIME weight per feature over the explained flows, and their count.

    Columns, largest ``mean_abs_weight`` first:

    * ``display_name``
    * ``mean_abs_weight``: the sum of absolute weights over all explained flows
      divided by their count. A flow whose explanation leaves the feature out adds 0.
    * ``flows``: the explained flows that name the feature.
    * ``mean_where_named``: the mean over those flows only, as the
      ``feature_influence`` view computes it.
    """
    explanations = _optional_table(spark, config, "explanations", version)
    if explanations is None:
        return None
    flows = explanations.select("flow_key").distinct().count()
    if flows == 0:
        return None
    influence = (explanations.groupBy("display_name")
                 .agg((F.sum(F.abs("weight")) / F.lit(flows)).alias("mean_abs_weight"),
                      F.countDistinct("flow_key").alias("flows"),
                      F.avg(F.abs("weight")).alias("mean_where_named"))
                 .orderBy(F.desc("mean_abs_weight"), "display_name"))
    return influence.toPandas(), flows


def feature_ranking(spark: SparkSession, config: PeaConfig) -> pd.DataFrame | None:
    """Read ``feature_ranking``, ordered by rank."""
    frame = _optional_table(spark, config, "feature_ranking")
    return None if frame is None else _collect(frame.orderBy("rank"))


def input_files(spark: SparkSession, config: PeaConfig) -> pd.DataFrame | None:
    """Per input file, the ``ingest_audit`` row of the run that last loaded its rows.

    Runs that found a file unchanged loaded nothing, so the newest ``new`` or
    ``replaced`` row describes the rows in ``bronze``.
    """
    audit = _optional_table(spark, config, "ingest_audit")
    if audit is None:
        return None
    loads = audit.filter(F.col("status").isin("new", "replaced"))
    order = Window.partitionBy("source_file").orderBy(F.desc("ingested_at"), F.desc("run_id"))
    newest = (loads.withColumn("_position", F.row_number().over(order))
              .filter(F.col("_position") == 1).orderBy("source_file"))
    return _collect(newest.select("source_file", "status", "dialect", "lines_read",
                                  "rows_loaded", "rows_quarantined", "lines_skipped", "sha256",
                                  "ingested_at"))


def silver_summary(spark: SparkSession, config: PeaConfig) -> dict[str, int] | None:
    """Row counts of ``silver``: all rows, training rows, unlabelled rows, bronze copies."""
    silver = _optional_table(spark, config, "silver")
    if silver is None:
        return None
    row = silver.agg(
        F.count("*").alias("rows"),
        F.sum(F.col("training_row").cast("long")).alias("training_rows"),
        F.sum(F.col("label").isNull().cast("long")).alias("unlabelled_rows"),
        F.sum("copies").alias("bronze_rows"),
    ).first()
    return {name: int(row[name] or 0) for name in row.asDict()}


def silver_classes(spark: SparkSession, config: PeaConfig) -> pd.DataFrame | None:
    """Training rows of ``silver`` per label, with their train and test split counts.

    Columns: ``label``, ``is_attack``, ``training_rows``, ``train`` and ``test``
    (0 where ``splits`` is missing or has no rows of the label).
    """
    silver = _optional_table(spark, config, "silver")
    if silver is None:
        return None
    classes = (silver.filter(F.col("training_row"))
               .groupBy("label", "is_attack").agg(F.count("*").alias("training_rows")))
    splits = _optional_table(spark, config, "splits")
    if splits is not None:
        by_split = splits.groupBy("label").pivot("split", ["train", "test"]).count()
        classes = classes.join(by_split, "label", "left")
    else:
        classes = classes.withColumn("train", F.lit(None)).withColumn("test", F.lit(None))
    result = _collect(classes.orderBy("is_attack", "label"))
    if result is not None:
        result[["train", "test"]] = result[["train", "test"]].fillna(0).astype("int64")
    return result


def model_record(spark: SparkSession, config: PeaConfig, version: int) -> dict[str, Any] | None:
    """Return the ``models`` row of ``version`` as a dict, or None when there is none."""
    models = _optional_table(spark, config, "models", version)
    row = None if models is None else models.first()
    return None if row is None else row.asDict()
