"""Turn bronze flows (strings) into silver flows (doubles, normalised labels).

Cleaning policy, applied by :func:`clean_flows` on every path (training and
scoring alike):

- Feature values are parsed as doubles. ``Infinity``, ``-Infinity``, ``NaN`` and
  empty values become 0.0. CICFlowMeter writes them in ``Flow Bytes/s`` and
  ``Flow Packets/s`` when a flow lasts 0 microseconds, where the rate is
  undefined; 0.0 keeps the row and no non-finite value reaches the model.
- Text that is not a number (``abc`` in a numeric column) never reaches
  bronze: ingest quarantines the line, with the column named in the reason.
- ``-1`` in ``Init_Win_bytes_forward``, ``Init_Win_bytes_backward`` and
  ``Flow IAT Min`` is CICFlowMeter's "not available" marker. It is kept as -1,
  a finite value that keeps the "no packet in that direction" signal, and counted.
- Labels are trimmed. The en dash in ``Web Attack – XSS`` arrives as UTF-8, as a
  cp1252 byte decoded to U+FFFD, or as mojibake, and all become ``Web Attack - XSS``.
  ``is_attack`` is 0 for BENIGN (any case) and 1 for every other label.
- For training, exact duplicate rows (same identifiers, features and label) are
  removed and the copy with the smallest (source_file, line_number) is kept.
"""

from __future__ import annotations

import logging
import time

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from pea_spark.config import PeaConfig
from pea_spark.schema import FEATURES, IDENTIFIERS, LABEL
from pea_spark.session import read_table, write_table

__all__ = ["clean_flows", "clean", "flow_key", "PLACEHOLDER_COLUMNS", "SILVER_COLUMNS"]

logger = logging.getLogger(__name__)

PLACEHOLDER_COLUMNS = ["init_win_bytes_forward", "init_win_bytes_backward", "flow_iat_min"]
SILVER_COLUMNS = ["flow_key", "source_file", "line_number", *IDENTIFIERS, *FEATURES, LABEL,
                  "is_attack"]

_NON_FINITE = ["infinity", "+infinity", "-infinity", "inf", "+inf", "-inf", "nan"]
_DASH_VARIANTS = r"\s*(\u2013|\u2014|\ufffd|\u00ef\u00bf\u00bd|\u0096)\s*"


def flow_key(source_file: Column, line_number: Column) -> Column:
    """Stable 64-bit key of a flow: a hash of its source file and line number."""
    return F.xxhash64(source_file, line_number)


def _is_non_finite(raw: Column) -> Column:
    return raw.isNull() | F.lower(raw).isin(_NON_FINITE)


def _feature_value(raw: Column) -> Column:
    # Ingest has quarantined text that is not a number, so the cast succeeds.
    return F.when(_is_non_finite(raw), F.lit(0.0)).otherwise(raw.try_cast("double"))


def normalise_label(raw: Column) -> Column:
    """Trim a label, unify dash variants to ``-`` and spell BENIGN in upper case."""
    text = F.regexp_replace(F.trim(raw), _DASH_VARIANTS, " - ")
    text = F.regexp_replace(text, r"\s+", " ")
    return F.when(F.upper(text) == "BENIGN", F.lit("BENIGN")).otherwise(F.nullif(text, F.lit("")))


def clean_flows(bronze: DataFrame) -> DataFrame:
    """Apply the cleaning policy to bronze rows, without removing duplicates.

    Returns
    -------
    DataFrame
        Rows with :data:`SILVER_COLUMNS`.
    """
    label = normalise_label(F.col(LABEL))
    return bronze.select(
        flow_key(F.col("source_file"), F.col("line_number")).alias("flow_key"),
        "source_file",
        "line_number",
        *[F.col(c) for c in IDENTIFIERS],
        *[_feature_value(F.col(c)).alias(c) for c in FEATURES],
        label.alias(LABEL),
        F.when(label.isNull(), F.lit(None))
        .when(label == "BENIGN", F.lit(0)).otherwise(F.lit(1)).cast("int").alias("is_attack"),
    )


def drop_duplicate_flows(flows: DataFrame) -> DataFrame:
    """Keep one copy of rows equal in identifiers, features and label.

    Notes
    -----
    One shuffle, grouped by every identifier, feature and label column.
    """
    content = [*IDENTIFIERS, *FEATURES, LABEL, "is_attack"]
    first = F.min(F.struct("source_file", "line_number")).alias("_first")
    kept = flows.groupBy(*content).agg(first)
    return kept.select(
        flow_key(F.col("_first.source_file"), F.col("_first.line_number")).alias("flow_key"),
        F.col("_first.source_file").alias("source_file"),
        F.col("_first.line_number").alias("line_number"),
        *content,
    ).select(*SILVER_COLUMNS)


def cleaning_report(bronze: DataFrame, run_id: str) -> DataFrame:
    """Count the values changed by the cleaning policy, one row per feature column."""
    aggregates = []
    for c in FEATURES:
        raw = F.col(c)
        aggregates.append(F.sum(F.when(_is_non_finite(raw), 1).otherwise(0)).alias(f"nf_{c}"))
        if c in PLACEHOLDER_COLUMNS:
            aggregates.append(F.sum(F.when(raw.try_cast("double") == -1, 1).otherwise(0))
                              .alias(f"ph_{c}"))
    row = bronze.agg(*aggregates).first()
    records = [
        (run_id, c, int(row[f"nf_{c}"] or 0),
         int(row[f"ph_{c}"] or 0) if c in PLACEHOLDER_COLUMNS else 0)
        for c in FEATURES
    ]
    spark = bronze.sparkSession
    return spark.createDataFrame(
        records,
        "run_id string, feature string, non_finite_to_zero long, placeholder_minus_one long",
    )


def clean(spark: SparkSession, config: PeaConfig, run_id: str = "") -> dict[str, int]:
    """Clean ``bronze`` into ``silver`` and append the cleaning report.

    Returns
    -------
    dict
        ``bronze``, ``duplicates`` and ``silver`` row counts.
    """
    start = time.monotonic()
    bronze = read_table(spark, config, "bronze")
    report = cleaning_report(bronze, run_id)
    write_table(report, config, "clean_report", mode="append")
    write_table(drop_duplicate_flows(clean_flows(bronze)), config, "silver")
    silver = read_table(spark, config, "silver")
    counts = {"bronze": bronze.count(), "silver": silver.count()}
    counts["duplicates"] = counts["bronze"] - counts["silver"]
    totals = [(r["feature"], r["non_finite_to_zero"], r["placeholder_minus_one"])
              for r in report.collect() if r["non_finite_to_zero"] or r["placeholder_minus_one"]]
    for feature, non_finite, placeholder in totals:
        logger.warning("clean: %s: %d non-finite values set to 0.0, %d placeholder -1 kept",
                       feature, non_finite, placeholder)
    if counts["duplicates"]:
        logger.warning("clean: %d exact duplicate rows removed", counts["duplicates"])
    labels = silver.groupBy("is_attack").count().collect()
    logger.info("clean: %d silver rows (%s) in %.1f s", counts["silver"],
                ", ".join(f"is_attack={r['is_attack']}: {r['count']}" for r in labels),
                time.monotonic() - start)
    return counts
