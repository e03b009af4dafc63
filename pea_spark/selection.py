"""Feature selection: information gain ranking under a variance inflation factor limit.

Both statistics are computed with Spark aggregations on the training rows. Only
small summaries reach the driver: bin counts, and the correlation matrix of the
candidate features. Features with one value on every training row (the bulk-rate
features of CICIDS2017, for example) are dropped before either statistic. Each
feature that is not selected gets a ``dropped_reason`` in ``feature_ranking``.
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

__all__ = ["constant_features", "information_gain", "variance_inflation", "select_features",
           "select", "RANKING_SCHEMA"]

logger = logging.getLogger(__name__)

# Values of feature_ranking.dropped_reason: why a feature is not selected.
CONSTANT = "constant"  # one value on every training row
VIF_LIMIT = "vif_limit"  # adding it would raise some VIF to vif_max or above, or to infinity
NOT_REACHED = "not_reached"  # ranked below the point where top_k features were kept

RANKING_SCHEMA = ("rank int, feature string, display_name string, information_gain double, "
                  "vif double, selected boolean, dropped_reason string")


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


def constant_features(train: DataFrame, features: list[str]) -> list[str]:
    """Features with a single value (minimum equal to maximum) on every row of ``train``.

    Such a feature carries no information, makes the correlation matrix
    undefined, and gives the RobustScaler a zero range. An exact test keeps
    every feature that varies at all, however little.

    Notes
    -----
    One aggregation pass over ``train``.
    """
    bounds = train.agg(*[F.min(f).alias(f"lo_{i}") for i, f in enumerate(features)],
                       *[F.max(f).alias(f"hi_{i}") for i, f in enumerate(features)]).first()
    return [f for i, f in enumerate(features) if bounds[f"lo_{i}"] == bounds[f"hi_{i}"]]


def _dropped_reasons(ranked: list[str], chosen: list[str], constant: list[str],
                     top_k: int) -> dict[str, str | None]:
    """Reason each feature is not selected; None for the selected ones."""
    # greedy_low_vif stops at the feature that completes top_k; later ones are never tried.
    last_tried = ranked.index(chosen[-1]) if chosen and len(chosen) == top_k else len(ranked) - 1
    reasons: dict[str, str | None] = {f: CONSTANT for f in constant}
    for position, feature in enumerate(ranked):
        if feature in chosen:
            reasons[feature] = None
        elif position <= last_tried:
            reasons[feature] = VIF_LIMIT
        else:
            reasons[feature] = NOT_REACHED
    return reasons


def select_features(train: DataFrame, config: PeaConfig) -> list[dict]:
    """Rank features by information gain and keep the top ones with low VIF.

    Features that are constant on ``train`` are dropped first, logged by name,
    and never reach information gain, VIF, scaling or LIME.

    Returns
    -------
    list of dict
        One entry per feature, by rank: ``rank``, ``feature``, ``display_name``,
        ``information_gain``, ``vif`` (against the selected set; null for constant
        features), ``selected`` and ``dropped_reason`` (null when selected, else
        :data:`CONSTANT`, :data:`VIF_LIMIT` or :data:`NOT_REACHED`).

    Raises
    ------
    ValueError
        When every feature is constant on ``train``.
    """
    constant = constant_features(train, FEATURES)
    if constant:
        logger.warning("select: %d features are constant on the training rows and are "
                       "dropped before ranking, scaling and LIME: %s", len(constant),
                       ", ".join(constant))
    candidates = [f for f in FEATURES if f not in constant]
    if not candidates:
        raise ValueError(f"all {len(FEATURES)} features are constant on the training rows, so "
                         "no feature can be selected: ingest more flows, with both classes")
    gains = information_gain(train, candidates, "is_attack", config.select.bins)
    ranked = sorted(candidates, key=lambda f: (-gains[f], f))
    corr = correlation_matrix(train, candidates)
    index = {f: i for i, f in enumerate(candidates)}
    chosen = greedy_low_vif(ranked, corr, index, config.select.top_k, config.select.vif_max)
    if len(chosen) < config.select.top_k:
        logger.warning("select: only %d features keep VIF below %.2f (asked for %d)",
                       len(chosen), config.select.vif_max, config.select.top_k)
    vifs = vif_against(chosen, corr, index)
    reasons = _dropped_reasons(ranked, chosen, constant, config.select.top_k)
    order = ranked + sorted(constant)
    return [
        {
            "rank": position + 1,
            "feature": f,
            "display_name": DISPLAY_NAMES[f],
            "information_gain": float(gains.get(f, 0.0)),
            "vif": vifs.get(f),
            "selected": f in chosen,
            "dropped_reason": reasons[f],
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
    write_table(spark.createDataFrame(ranking, RANKING_SCHEMA), config, "feature_ranking")
    chosen = [r["feature"] for r in ranking if r["selected"]]
    logger.info("select: kept %d of %d features in %.1f s: %s", len(chosen), len(ranking),
                time.monotonic() - start, ", ".join(chosen))
    return chosen


def selected_features(spark: SparkSession, config: PeaConfig) -> list[str]:
    """Read the selected features, by rank, from ``feature_ranking``."""
    ranking = read_table(spark, config, "feature_ranking")
    rows = ranking.filter("selected").orderBy("rank").select("feature").collect()
    return [r["feature"] for r in rows]
