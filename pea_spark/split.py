"""Stratified, seeded train/test split and k-fold assignment.

Each flow gets two pseudo-random numbers in [0, 1) from a hash of its
``flow_key`` and the seed, so the assignment of a flow never depends on
partitioning or row order. Within each class, the flows whose first number is
below that class's ``test_fraction`` quantile form the test split, which makes
the split stratified on ``is_attack`` up to the quantile's relative error
(1e-4). Train flows get a fold from the quantiles of the second number, again
per class.
"""

from __future__ import annotations

import logging
import time

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from pea_spark.config import PeaConfig
from pea_spark.session import read_table, write_table

__all__ = ["assign_splits", "labelled_flows", "split"]

logger = logging.getLogger(__name__)

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
        Labelled flows with ``flow_key`` and ``is_attack``.

    Notes
    -----
    Two aggregations grouped by ``is_attack`` compute the per-class quantiles;
    the rows themselves are not shuffled.
    """
    seed = config.seed
    folds = config.split.folds
    draws = flows.withColumn("_u", _uniform(F.col("flow_key"), seed)).withColumn(
        "_v", _uniform(F.col("flow_key"), seed + 1)
    )
    cut = draws.groupBy("is_attack").agg(
        F.percentile_approx("_u", config.split.test_fraction, _QUANTILE_ACCURACY).alias("_cut")
    )
    marked = draws.join(F.broadcast(cut), "is_attack").withColumn(
        "split", F.when(F.col("_u") < F.col("_cut"), F.lit("test")).otherwise(F.lit("train"))
    )
    probabilities = [i / folds for i in range(1, folds)]
    edges = (
        marked.filter(F.col("split") == "train").groupBy("is_attack")
        .agg(F.percentile_approx("_v", probabilities, _QUANTILE_ACCURACY).alias("_edges"))
    )
    fold = sum((F.col("_v") >= F.col("_edges")[i]).cast("int") for i in range(folds - 1))
    return (
        marked.join(F.broadcast(edges), "is_attack", "left")
        .withColumn("fold", F.when(F.col("split") == "train", fold).cast("int"))
        .drop("_u", "_v", "_cut", "_edges")
    )


def labelled_flows(spark: SparkSession, config: PeaConfig) -> DataFrame:
    """Silver flows with a label, or ValueError when there are none to train on."""
    silver = read_table(spark, config, "silver")
    labelled = silver.filter(F.col("is_attack").isNotNull())
    if labelled.isEmpty():
        raise ValueError(
            f"table {config.database}.silver has no labelled rows, so there is nothing to "
            "train on: ingest CSV files that have a 'Label' column (BENIGN or an attack "
            "name); unlabelled archives can only be scored, with `pea score --input PATH`"
        )
    return labelled


def split(spark: SparkSession, config: PeaConfig) -> dict[str, int]:
    """Write ``splits`` (flow_key, is_attack, split, fold) for every labelled silver flow.

    Returns
    -------
    dict
        Row counts per split and class, keyed like ``train_attack``.
    """
    start = time.monotonic()
    labelled = labelled_flows(spark, config)
    assigned = assign_splits(labelled, config).select("flow_key", "is_attack", "split", "fold")
    write_table(assigned, config, "splits")
    rows = read_table(spark, config, "splits").groupBy("split", "is_attack").count().collect()
    counts = {
        f"{r['split']}_{'attack' if r['is_attack'] else 'benign'}": r["count"] for r in rows
    }
    logger.info("split: %s in %.1f s", ", ".join(f"{k}={v}" for k, v in sorted(counts.items())),
                time.monotonic() - start)
    return counts
