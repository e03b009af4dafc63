"""Feature selection: information gain ranking under a variance inflation factor limit.

Both statistics are computed with Spark aggregations on the training rows. Only
small summaries reach the driver: bin counts, and the correlation matrix of the
candidate features.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from pyspark.ml.feature import VectorAssembler
from pyspark.ml.stat import Correlation
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from pea_spark.config import PeaConfig
from pea_spark.schema import DISPLAY_NAMES, FEATURES
from pea_spark.session import read_table, write_table
from pea_spark.split import assign_splits, labelled_flows

__all__ = ["information_gain", "variance_inflation", "select_features", "select"]

logger = logging.getLogger(__name__)

# Features whose sample variance is below this are treated as constant and never selected.
_MIN_VARIANCE = 1e-12


def bin_index(value: Column, edges: list[float]) -> Column:
    """Bin of ``value`` between sorted ``edges``: the count of edges strictly below it.

    This is ``numpy.searchsorted(edges, value, side="left")``, the rule LIME's
    discretizers use, so a value equal to an edge falls in the lower bin.
    """
    if not edges:
        return F.lit(0)
    return sum((value > F.lit(float(e))).cast("int") for e in edges)


def quantile_edges(df: DataFrame, columns: list[str], probabilities: list[float],
                   relative_error: float = 1e-3) -> dict[str, list[float]]:
    """Distinct approximate quantiles of each column, in one pass over ``df``."""
    if df.isEmpty():
        raise ValueError("cannot compute quantiles of an empty DataFrame: no training rows")
    quantiles = df.approxQuantile(columns, probabilities, relative_error)
    return {c: sorted(set(q)) for c, q in zip(columns, quantiles, strict=True)}


def information_gain(df: DataFrame, features: list[str], label: str, bins: int) -> dict[str, float]:
    """Information gain (bits) of each feature about ``label``, after quantile binning.

    Parameters
    ----------
    df : DataFrame
        Rows with the numeric ``features`` and an integer ``label`` column.
    bins : int
        Number of quantile bins per feature; equal quantiles merge bins.

    Notes
    -----
    One pass for the quantiles, one aggregation of (feature, bin, label) counts;
    the counts reaching the driver number at most ``len(features) * bins * classes``.
    """
    probabilities = [i / bins for i in range(1, bins)]
    edges = quantile_edges(df, features, probabilities)
    cells = F.array(*[
        F.struct(F.lit(i).alias("feature"), bin_index(F.col(f), edges[f]).alias("bin"))
        for i, f in enumerate(features)
    ])
    counts = (
        df.select(F.explode(cells).alias("cell"), F.col(label).alias("y"))
        .groupBy("cell.feature", "cell.bin", "y").count().collect()
    )
    table: dict[int, dict[tuple[int, int], int]] = {}
    for row in counts:
        table.setdefault(row["feature"], {})[(row["bin"], row["y"])] = row["count"]
    gains = {}
    for i, feature in enumerate(features):
        gains[feature] = _gain(table.get(i, {}))
    return gains


def _entropy(counts: np.ndarray) -> float:
    total = counts.sum()
    if total == 0:
        return 0.0
    p = counts[counts > 0] / total
    return float(-(p * np.log2(p)).sum())


def _gain(cells: dict[tuple[int, int], int]) -> float:
    if not cells:
        return 0.0
    bins = sorted({b for b, _ in cells})
    labels = sorted({y for _, y in cells})
    matrix = np.array([[cells.get((b, y), 0) for y in labels] for b in bins], dtype=float)
    total = matrix.sum()
    conditional = sum(row.sum() / total * _entropy(row) for row in matrix)
    return _entropy(matrix.sum(axis=0)) - conditional


def correlation_matrix(df: DataFrame, features: list[str]) -> np.ndarray:
    """Pearson correlation matrix of ``features``, computed by Spark ML."""
    assembled = VectorAssembler(inputCols=features, outputCol="_v").transform(df.select(*features))
    return np.array(Correlation.corr(assembled, "_v").head()[0].toArray())


def variance_inflation(corr: np.ndarray) -> np.ndarray:
    """VIF of each variable from their correlation matrix: the diagonal of its inverse."""
    return np.diag(np.linalg.inv(corr))


def greedy_low_vif(ranked: list[str], corr: np.ndarray, index: dict[str, int], top_k: int,
                   vif_max: float) -> list[str]:
    """Walk features by rank and keep each one whose addition keeps every VIF below
    ``vif_max``, until ``top_k`` are kept."""
    chosen: list[str] = []
    for feature in ranked:
        trial = [index[f] for f in [*chosen, feature]]
        sub = corr[np.ix_(trial, trial)]
        if np.linalg.cond(sub) > 1e12:
            continue
        if variance_inflation(sub).max() < vif_max:
            chosen.append(feature)
        if len(chosen) == top_k:
            break
    return chosen


def vif_against(selected: list[str], corr: np.ndarray, index: dict[str, int]) -> dict[str, float]:
    """VIF of every feature regressed on the selected ones (for a selected feature, on
    the other selected ones)."""
    result = {}
    for feature, i in index.items():
        others = [index[f] for f in selected if f != feature]
        if not others:
            result[feature] = 1.0
            continue
        r = corr[np.ix_(others, [i])]
        r_squared = float((r.T @ np.linalg.solve(corr[np.ix_(others, others)], r))[0, 0])
        result[feature] = float("inf") if r_squared >= 1 else 1.0 / (1.0 - r_squared)
    return result


def select_features(train: DataFrame, config: PeaConfig) -> list[dict]:
    """Rank features by information gain and keep the top ones with low VIF.

    Returns
    -------
    list of dict
        One entry per feature, by rank: ``rank``, ``feature``, ``display_name``,
        ``information_gain``, ``vif`` (against the selected set; null for constant
        features) and ``selected``.
    """
    variances = train.agg(*[F.var_samp(f).alias(f) for f in FEATURES]).first().asDict()
    constant = [f for f in FEATURES if (variances[f] or 0.0) < _MIN_VARIANCE]
    if constant:
        logger.warning("select: %d constant features never selected: %s", len(constant),
                       ", ".join(constant))
    candidates = [f for f in FEATURES if f not in constant]
    gains = information_gain(train, candidates, "is_attack", config.select.bins)
    ranked = sorted(candidates, key=lambda f: (-gains[f], f))
    corr = correlation_matrix(train, candidates)
    index = {f: i for i, f in enumerate(candidates)}
    chosen = greedy_low_vif(ranked, corr, index, config.select.top_k, config.select.vif_max)
    if len(chosen) < config.select.top_k:
        logger.warning("select: only %d features keep VIF below %.2f (asked for %d)",
                       len(chosen), config.select.vif_max, config.select.top_k)
    vifs = vif_against(chosen, corr, index)
    order = ranked + sorted(constant)
    return [
        {
            "rank": position + 1,
            "feature": f,
            "display_name": DISPLAY_NAMES[f],
            "information_gain": float(gains.get(f, 0.0)),
            "vif": vifs.get(f),
            "selected": f in chosen,
        }
        for position, f in enumerate(order)
    ]


def select(spark: SparkSession, config: PeaConfig) -> list[str]:
    """Rank silver's features on the rows the split assigns to training; write
    ``feature_ranking``.

    Returns
    -------
    list of str
        The selected features, by rank.
    """
    start = time.monotonic()
    labelled = labelled_flows(spark, config)
    train = assign_splits(labelled, config).filter(F.col("split") == "train").cache()
    try:
        ranking = select_features(train, config)
    finally:
        train.unpersist()
    schema = ("rank int, feature string, display_name string, information_gain double, "
              "vif double, selected boolean")
    write_table(spark.createDataFrame(ranking, schema), config, "feature_ranking")
    chosen = [r["feature"] for r in ranking if r["selected"]]
    logger.info("select: kept %d of %d features in %.1f s: %s", len(chosen), len(ranking),
                time.monotonic() - start, ", ".join(chosen))
    return chosen


def selected_features(spark: SparkSession, config: PeaConfig) -> list[str]:
    """Read the selected features, by rank, from ``feature_ranking``."""
    ranking = read_table(spark, config, "feature_ranking")
    rows = ranking.filter("selected").orderBy("rank").select("feature").collect()
    return [r["feature"] for r in rows]
