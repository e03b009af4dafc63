"""Turn bronze flows (strings) into silver flows (doubles, normalised labels).

Cleaning policy, applied by :func:`clean_flows` on every path (training and
scoring alike):

- Feature values are parsed as doubles. Empty values, ``Infinity``,
  ``-Infinity``, ``NaN`` and values beyond the double range (``1e400``) become
  0.0, and are counted per feature in ``clean_report``. CICFlowMeter writes
  ``Infinity`` and ``NaN`` in ``Flow Bytes/s`` and ``Flow Packets/s`` when a
  flow lasts 0 microseconds, where the rate is undefined. 0.0 keeps the row,
  and no non-finite value reaches selection, scaling or the model.
- Text that is not a number (``abc`` in a numeric column) never reaches
  bronze: ingest quarantines the line, with the column named in the reason.
- ``-1`` in ``Init_Win_bytes_forward``, ``Init_Win_bytes_backward`` and
  ``Flow IAT Min`` is CICFlowMeter's "not available" marker. It is kept as -1,
  a finite value that keeps the "no packet in that direction" signal, and
  counted per feature in ``clean_report``.
- Labels are trimmed. The en dash in ``Web Attack – XSS`` arrives as UTF-8, as a
  cp1252 byte decoded to U+FFFD, or as mojibake, and all become ``Web Attack - XSS``.
  ``is_attack`` is 0 for BENIGN (any case) and 1 for every other label.
- Exact duplicate rows (same identifiers, features and label) are stored once
  in silver. The copy with the smallest (source_file, line_number) is kept, and
  ``copies`` is the number of bronze rows it represents.
- Rows without a label stay in silver, so they can be scored, but they are not
  used for training. ``clean_summary`` counts them for every run.

Training rows: select, split, train and evaluate use one silver row per
distinct feature vector (the 76 features, identifiers ignored), flagged by
``training_row``. When copies of one feature vector carry different labels,
the label is chosen by these rules, in order:

1. the label with the most copies (bronze rows);
2. on a tie, an attack label over BENIGN, because a missed attack costs more
   than a false alarm;
3. then the label that sorts first (by code point).

The kept row is the first (source_file, line_number) copy that carries the
chosen label. Each conflicting feature vector is written to
``label_conflicts`` with every label, its copies and its first row. The split
assigns each training row to train or test, so no feature vector is in both.
"""

from __future__ import annotations

import logging
import time
import uuid

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from pea_spark.config import PeaConfig
from pea_spark.schema import FEATURES, IDENTIFIERS, LABEL
from pea_spark.session import read_table, write_table

__all__ = [
    "clean_flows",
    "clean",
    "drop_duplicate_flows",
    "flag_training_rows",
    "flow_key",
    "label_conflicts",
    "label_votes",
    "FLOW_COLUMNS",
    "LABEL_CONFLICT_SCHEMA",
    "PLACEHOLDER_COLUMNS",
    "SILVER_COLUMNS",
]

logger = logging.getLogger(__name__)

PLACEHOLDER_COLUMNS = ["init_win_bytes_forward", "init_win_bytes_backward", "flow_iat_min"]
# Columns of cleaned flows before duplicates are removed (the scoring path).
FLOW_COLUMNS = ["flow_key", "source_file", "line_number", *IDENTIFIERS, *FEATURES, LABEL,
                "is_attack"]
SILVER_COLUMNS = [*FLOW_COLUMNS, "copies", "training_row"]

# Fields of each element of label_votes' ``labels`` array, after the sort keys are removed.
_VOTE_FIELDS = ["label", "is_attack", "copies", "source_file", "line_number"]
# Schema of the label_conflicts table, as label_conflicts() builds it.
LABEL_CONFLICT_SCHEMA = (
    "run_id string, source_file string, line_number long, copies long, "
    "labels array<struct<label: string, is_attack: int, copies: long, source_file: string, "
    "line_number: long>>, chosen_label string, chosen_is_attack int, kept_flow_key long, "
    "dropped_copies long"
)
# One clean_summary row per run; the table adds ``cleaned_at``.
_SUMMARY_SCHEMA = (
    "run_id string, bronze_rows long, duplicate_rows long, silver_rows long, "
    "unlabelled_rows long, training_rows long, label_conflicts long, conflict_rows_dropped long"
)

_DASH_VARIANTS = r"\s*(\u2013|\u2014|\ufffd|\u00ef\u00bf\u00bd|\u0096)\s*"


def flow_key(source_file: Column, line_number: Column) -> Column:
    """Stable 64-bit key of a flow: a hash of its source file and line number."""
    return F.xxhash64(source_file, line_number)


def _is_non_finite(raw: Column) -> Column:
    # Spark's cast reads Infinity, -Infinity, inf and NaN in any case, and turns
    # 1e400 into Infinity. An empty value arrives as null.
    value = raw.try_cast("double")
    return value.isNull() | F.isnan(value) | (F.abs(value) == F.lit(float("inf")))


def _feature_value(raw: Column) -> Column:
    # A failed cast also counts as non-finite, so no feature is ever null. Text that is
    # not a number does not get here, because ingest quarantines its line.
    return F.when(_is_non_finite(raw), F.lit(0.0)).otherwise(raw.try_cast("double"))


def normalise_label(raw: Column) -> Column:
    """Trim a label, unify dash variants to ``-`` and spell BENIGN in upper case."""
    text = F.regexp_replace(F.trim(raw), _DASH_VARIANTS, " - ")
    text = F.regexp_replace(text, r"\s+", " ")
    return F.when(F.upper(text) == "BENIGN", F.lit("BENIGN")).otherwise(F.nullif(text, F.lit("")))


def clean_flows(bronze: DataFrame) -> DataFrame:
    """Apply the cleaning policy to bronze rows, without removing duplicates.

    Bronze columns other than ``source_file``, ``line_number`` and the names in
    :mod:`pea_spark.schema` are ignored.

    Returns
    -------
    DataFrame
        Rows with :data:`FLOW_COLUMNS`.
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

    Returns
    -------
    DataFrame
        :data:`FLOW_COLUMNS` and ``copies`` (long): the number of input rows that
        the kept row represents. The kept row is the copy with the smallest
        (source_file, line_number).

    Notes
    -----
    One shuffle, grouped by every identifier, feature and label column.
    """
    content = [*IDENTIFIERS, *FEATURES, LABEL, "is_attack"]
    first = F.min(F.struct("source_file", "line_number")).alias("_first")
    kept = flows.groupBy(*content).agg(first, F.count("*").alias("copies"))
    return kept.select(
        flow_key(F.col("_first.source_file"), F.col("_first.line_number")).alias("flow_key"),
        F.col("_first.source_file").alias("source_file"),
        F.col("_first.line_number").alias("line_number"),
        *content,
        "copies",
    ).select(*FLOW_COLUMNS, "copies")


def label_votes(flows: DataFrame) -> DataFrame:
    """Group labelled flows by feature vector, with the labels of each vector in rule order.

    Parameters
    ----------
    flows : DataFrame
        :data:`FLOW_COLUMNS` and ``copies``.

    Returns
    -------
    DataFrame
        One row per distinct feature vector of the labelled flows, with one
        column ``labels``: an array of (label, is_attack, copies, source_file,
        line_number) structs, one per label, where the file and line are the
        first copy with that label. ``labels[0]`` is the chosen label.

    Notes
    -----
    Two shuffles, both grouped by the 76 feature columns. Sorting the structs on
    (-copies, -is_attack, label) puts the label with the most copies first, then
    attacks before BENIGN, then labels by code point.
    """
    # NOTE: labels are compared as strings, so a coarse label (WebAttack) and a fine one
    # (Web Attack - XSS) on the same flow count as a conflict and are resolved by these rules.
    labelled = flows.filter(F.col(LABEL).isNotNull())
    per_label = labelled.groupBy(*FEATURES, LABEL, "is_attack").agg(
        F.sum("copies").alias("copies"),
        F.min(F.struct("source_file", "line_number")).alias("first"),
    )
    vote = F.struct(
        (-F.col("copies")).alias("order_copies"),
        (-F.col("is_attack")).alias("order_attack"),
        F.col(LABEL).alias("label"),
        F.col("is_attack").alias("is_attack"),
        F.col("copies").alias("copies"),
        F.col("first.source_file").alias("source_file"),
        F.col("first.line_number").alias("line_number"),
    )
    grouped = per_label.groupBy(*FEATURES).agg(F.sort_array(F.collect_list(vote)).alias("votes"))
    labels = F.transform("votes", lambda v: F.struct(
        *[v[name].alias(name) for name in _VOTE_FIELDS]))
    return grouped.select(labels.alias("labels"))


def flag_training_rows(flows: DataFrame, votes: DataFrame) -> DataFrame:
    """Add ``training_row``: true on the kept row of each labelled feature vector.

    The kept row is the first copy carrying the chosen label, ``labels[0]`` of
    :func:`label_votes`. Rows without a label, and the other rows of a feature
    vector, get false.

    Returns
    -------
    DataFrame
        Rows with :data:`SILVER_COLUMNS`.

    Notes
    -----
    One join on (source_file, line_number), a shuffle of both sides.
    """
    chosen = F.col("labels")[0]
    kept = votes.select(
        chosen["source_file"].alias("source_file"),
        chosen["line_number"].alias("line_number"),
        F.lit(True).alias("training_row"),
    )
    return (flows.join(kept, ["source_file", "line_number"], "left")
            .withColumn("training_row", F.coalesce("training_row", F.lit(False)))
            .select(*SILVER_COLUMNS))


def label_conflicts(votes: DataFrame, run_id: str) -> DataFrame:
    """Select the feature vectors of :func:`label_votes` that carry more than one label.

    Returns
    -------
    DataFrame
        Columns of :data:`LABEL_CONFLICT_SCHEMA`. ``source_file`` and
        ``line_number`` are the first copy of the vector under any label,
        ``copies`` counts its bronze rows, and ``dropped_copies`` those whose
        label was not chosen.
    """
    chosen = F.col("labels")[0]
    first = F.array_min(F.transform("labels", lambda v: F.struct(
        v["source_file"].alias("source_file"), v["line_number"].alias("line_number"))))
    total = F.aggregate("labels", F.lit(0).cast("long"), lambda acc, v: acc + v["copies"])
    return votes.filter(F.size("labels") > 1).select(
        F.lit(run_id).alias("run_id"),
        first["source_file"].alias("source_file"),
        first["line_number"].alias("line_number"),
        total.alias("copies"),
        "labels",
        chosen["label"].alias("chosen_label"),
        chosen["is_attack"].alias("chosen_is_attack"),
        flow_key(chosen["source_file"], chosen["line_number"]).alias("kept_flow_key"),
        (total - chosen["copies"]).alias("dropped_copies"),
    )


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


def _log_report(report: DataFrame) -> None:
    for r in report.collect():
        if r["non_finite_to_zero"] or r["placeholder_minus_one"]:
            logger.warning("clean: %s: %d non-finite values set to 0.0, %d placeholder -1 kept",
                           r["feature"], r["non_finite_to_zero"], r["placeholder_minus_one"])


def _summarise(spark: SparkSession, config: PeaConfig, bronze_rows: int) -> dict[str, int]:
    """Count the rows of the silver and label_conflicts tables just written."""
    silver = read_table(spark, config, "silver")
    row = silver.agg(
        F.count("*").alias("silver"),
        F.sum(F.col(LABEL).isNull().cast("long")).alias("unlabelled"),
        F.sum(F.col("training_row").cast("long")).alias("training"),
        F.sum((F.col("training_row") & (F.col("is_attack") == 1)).cast("long")).alias("attacks"),
    ).first()
    conflicts = read_table(spark, config, "label_conflicts").agg(
        F.count("*").alias("vectors"), F.sum("dropped_copies").alias("dropped")).first()
    return {
        "bronze": bronze_rows,
        "silver": int(row["silver"]),
        "duplicates": bronze_rows - int(row["silver"]),
        "unlabelled": int(row["unlabelled"] or 0),
        "training": int(row["training"] or 0),
        "training_attacks": int(row["attacks"] or 0),
        "label_conflicts": int(conflicts["vectors"]),
        "conflict_rows_dropped": int(conflicts["dropped"] or 0),
    }


def _write_summary(spark: SparkSession, config: PeaConfig, run_id: str,
                   counts: dict[str, int]) -> None:
    record = (run_id, counts["bronze"], counts["duplicates"], counts["silver"],
              counts["unlabelled"], counts["training"], counts["label_conflicts"],
              counts["conflict_rows_dropped"])
    frame = spark.createDataFrame([record], _SUMMARY_SCHEMA)
    write_table(frame.withColumn("cleaned_at", F.current_timestamp()), config, "clean_summary",
                mode="append")


def _log_counts(config: PeaConfig, counts: dict[str, int]) -> None:
    if counts["duplicates"]:
        logger.warning("clean: %d exact duplicate rows removed", counts["duplicates"])
    if counts["unlabelled"]:
        logger.warning("clean: %d silver rows have no label; they stay in silver for scoring "
                       "and are not used for training", counts["unlabelled"])
    if counts["label_conflicts"]:
        logger.warning("clean: %d feature vectors carry more than one label; each keeps the "
                       "label with the most copies (attack on a tie) and %d bronze rows with "
                       "another label are not used for training; see %s.label_conflicts",
                       counts["label_conflicts"], counts["conflict_rows_dropped"],
                       config.database)


def clean(spark: SparkSession, config: PeaConfig, run_id: str = "") -> dict[str, int]:
    """Clean ``bronze`` into ``silver``, write ``label_conflicts``, append the reports.

    ``clean_report`` gets one row per feature and ``clean_summary`` one row for
    the run; ``silver`` and ``label_conflicts`` are replaced.

    Returns
    -------
    dict
        Row counts: ``bronze``, ``duplicates`` (exact duplicates removed),
        ``silver``, ``unlabelled`` (silver rows without a label), ``training``
        (silver rows flagged ``training_row``), ``training_attacks`` (those with
        ``is_attack`` = 1), ``label_conflicts`` (feature
        vectors with more than one label) and ``conflict_rows_dropped`` (bronze
        rows whose label lost).

    Notes
    -----
    The deduplicated rows and the label votes (one small row per feature vector)
    are persisted, in memory then on disk, while silver and label_conflicts are
    written, because each is read twice. Clean holds the warehouse lock while
    it reads bronze, so it never reads an ingest run that is half committed.
    """
    from pea_spark.transaction import WarehouseLock, recover

    with WarehouseLock(config, config.ingest.lock_timeout_s, "clean"):
        recover(spark, config)
        return _clean(spark, config, run_id)


def _clean(spark: SparkSession, config: PeaConfig, run_id: str) -> dict[str, int]:
    start = time.monotonic()
    run_id = run_id or uuid.uuid4().hex[:12]
    bronze = read_table(spark, config, "bronze")
    report = cleaning_report(bronze, run_id)
    write_table(report, config, "clean_report", mode="append")
    deduplicated = drop_duplicate_flows(clean_flows(bronze)).persist()
    votes = label_votes(deduplicated).persist()
    try:
        write_table(flag_training_rows(deduplicated, votes), config, "silver")
        write_table(label_conflicts(votes, run_id), config, "label_conflicts")
    finally:
        votes.unpersist()
        deduplicated.unpersist()
    counts = _summarise(spark, config, bronze.count())
    _write_summary(spark, config, run_id, counts)
    _log_report(report)
    _log_counts(config, counts)
    logger.info("clean: %d silver rows, %d training rows (%d attacks) in %.1f s",
                counts["silver"], counts["training"], counts["training_attacks"],
                time.monotonic() - start)
    return counts
