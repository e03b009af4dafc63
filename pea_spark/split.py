"""Stratified, seeded train/test split and k-fold assignment of the training rows.

The training rows are the silver rows flagged ``training_row``: one row per
distinct labelled feature vector (see :mod:`pea_spark.clean`). Each gets two
pseudo-random numbers in [0, 1) from a hash of its feature values, its label
and the seed. The assignment therefore never depends on partitioning, row
order, or the folder and name of the file a flow came from: the same flows
copied elsewhere get the same split, and so the same selected features.

The split is stratified on the multi-class ``label``, so that every class with
enough rows appears in the test split and per-class recall can be measured.
Within each class, the flows whose first number is at or below that class's
``test_fraction`` quantile form the test split: ceil(test_fraction * n) of the
class's n rows, up to the quantile's relative error (1e-4). The flow with the
class's largest number always stays in train, so a class of one row is
trained on and never tested, and a warning names it. Train flows get a fold
from the quantiles of the second number, again per class.
"""

from __future__ import annotations

import logging
import time

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from pea_spark.config import PeaConfig
from pea_spark.schema import FEATURES, LABEL
from pea_spark.session import read_table, write_table

__all__ = ["assign_splits", "labelled_flows", "split", "splits_fingerprint", "stored_folds",
           "check_splits_unchanged", "SPLIT_COLUMNS"]

logger = logging.getLogger(__name__)

SPLIT_COLUMNS = ["flow_key", LABEL, "is_attack", "split", "fold"]

_QUANTILE_ACCURACY = 10_000  # percentile_approx accuracy: relative error 1 / accuracy
_UNIT = 1 << 53


def _uniform(key: Column, seed: int) -> Column:
    """Deterministic pseudo-random double in [0, 1) from a key and a seed."""
    return F.pmod(F.xxhash64(key, F.lit(seed)), F.lit(_UNIT)) / F.lit(float(_UNIT))


def assign_splits(flows: DataFrame, config: PeaConfig) -> DataFrame:
    """Add ``split`` ("train" or "test") and ``fold`` (0 to folds-1 for train, null for test).

    Parameters
    ----------
    flows : DataFrame
        Labelled flows with the feature columns and ``label``; the split is
        stratified on ``label``.

    Notes
    -----
    Two aggregations grouped by ``label`` compute the per-class quantiles, and
    small broadcast joins attach them; the rows themselves are not shuffled.
    """
    seed = config.seed
    folds = config.split.folds
    content = F.xxhash64(*[F.col(f) for f in FEATURES], F.col(LABEL))
    draws = flows.withColumn("_u", _uniform(content, seed)).withColumn(
        "_v", _uniform(content, seed + 1)
    )
    cut = draws.groupBy(LABEL).agg(
        F.percentile_approx("_u", config.split.test_fraction, _QUANTILE_ACCURACY).alias("_cut"),
        F.max("_u").alias("_max"),
    )
    is_test = (F.col("_u") <= F.col("_cut")) & (F.col("_u") < F.col("_max"))
    marked = draws.join(F.broadcast(cut), LABEL).withColumn(
        "split", F.when(is_test, F.lit("test")).otherwise(F.lit("train"))
    )
    probabilities = [i / folds for i in range(1, folds)]
    edges = (
        marked.filter(F.col("split") == "train").groupBy(LABEL)
        .agg(F.percentile_approx("_v", probabilities, _QUANTILE_ACCURACY).alias("_edges"))
    )
    fold = sum((F.col("_v") >= F.col("_edges")[i]).cast("int") for i in range(folds - 1))
    return (
        marked.join(F.broadcast(edges), LABEL, "left")
        .withColumn("fold", F.when(F.col("split") == "train", fold).cast("int"))
        .drop("_u", "_v", "_cut", "_max", "_edges")
    )


def labelled_flows(spark: SparkSession, config: PeaConfig) -> DataFrame:
    """Return the training rows of silver: one labelled row per distinct feature vector.

    Select, split, train and evaluate all start from these rows.

    Raises
    ------
    ValueError
        When silver has no labelled row.
    """
    silver = read_table(spark, config, "silver")
    labelled = silver.filter(F.col("training_row"))
    if labelled.isEmpty():
        raise ValueError(
            f"table {config.database}.silver has no labelled rows, so there is nothing to "
            "train on: ingest CSV files that have a 'Label' column (BENIGN or an attack "
            "name); unlabelled archives can only be scored, with `pea score --input PATH`"
        )
    return labelled


def _warn_untested_classes(counts: dict[tuple[str, str], int], test_fraction: float) -> None:
    for label in sorted({label for label, _ in counts}):
        if not counts.get((label, "test")):
            logger.warning("split: class %r has %d rows, too few for a test row at "
                           "test_fraction %.2f; all go to train, so its recall cannot be "
                           "measured", label, counts.get((label, "train"), 0), test_fraction)


def split(spark: SparkSession, config: PeaConfig) -> dict[str, int]:
    """Write ``splits`` (:data:`SPLIT_COLUMNS`) for every training row of silver.

    Logs a warning naming each class that gets no test row.

    Returns
    -------
    dict
        Row counts per split and ``is_attack``, keyed like ``train_attack``.
    """
    start = time.monotonic()
    labelled = labelled_flows(spark, config)
    assigned = assign_splits(labelled, config).select(*SPLIT_COLUMNS)
    write_table(assigned, config, "splits")
    rows = (read_table(spark, config, "splits")
            .groupBy(LABEL, "is_attack", "split").count().collect())
    per_class = {(r[LABEL], r["split"]): r["count"] for r in rows}
    _warn_untested_classes(per_class, config.split.test_fraction)
    counts: dict[str, int] = {}
    for r in rows:
        key = f"{r['split']}_{'attack' if r['is_attack'] else 'benign'}"
        counts[key] = counts.get(key, 0) + r["count"]
    logger.info("split: %s in %.1f s; per class: %s",
                ", ".join(f"{k}={v}" for k, v in sorted(counts.items())),
                time.monotonic() - start,
                ", ".join(f"{label} {kind}={n}" for (label, kind), n in sorted(per_class.items())))
    return counts


def splits_fingerprint(spark: SparkSession, config: PeaConfig) -> str:
    """Fingerprint of the ``splits`` table's content: its row count and an order-free hash sum.

    Re-running ``pea split`` with the same rows and settings gives the same
    fingerprint, so only a changed assignment fails the check.
    """
    row_hash = F.xxhash64("flow_key", "split", F.coalesce(F.col("fold"), F.lit(-1)))
    total = read_table(spark, config, "splits").agg(
        F.count("*").alias("rows"), F.sum(row_hash.cast("decimal(38,0)")).alias("hash")).first()
    return f"{total['rows']}:{total['hash'] or 0}"


def check_splits_unchanged(spark: SparkSession, config: PeaConfig, training: dict) -> None:
    """Raise ValueError when ``splits`` changed since a model was trained.

    ``training`` is the model artifact's training record. Models trained before
    the fingerprint was recorded are not checked.
    """
    expected = training.get("splits_fingerprint")
    if expected is not None and splits_fingerprint(spark, config) != expected:
        raise ValueError(
            f"table {config.database}.splits changed after this model was trained, so its "
            "training rows could be scored as test rows: train a new model with `pea train`, "
            "or run `pea split` again with the settings the model was trained with")


def stored_folds(spark: SparkSession, config: PeaConfig) -> int:
    """Number of folds the ``splits`` table assigns to the train split.

    Raises
    ------
    ValueError
        When the folds are not 0 to k - 1 or k differs from ``split.folds``.
    """
    folds = sorted(r["fold"] for r in read_table(spark, config, "splits")
                   .filter(F.col("split") == "train").select("fold").distinct().collect())
    if folds != list(range(len(folds))):
        raise ValueError(f"table {config.database}.splits has train folds {folds}, expected "
                         f"0 to {len(folds) - 1}: run `pea split` again")
    if len(folds) != config.split.folds:
        raise ValueError(
            f"split.folds is {config.split.folds} but table {config.database}.splits has "
            f"{len(folds)} folds: run `pea --set split.folds={config.split.folds} split` and "
            f"train again, or use --set split.folds={len(folds)}")
    return len(folds)
