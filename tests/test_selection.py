"""Feature selection: information gain and VIF against reference computations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from pea_spark.selection import (
    bin_index,
    correlation_matrix,
    greedy_low_vif,
    information_gain,
    variance_inflation,
)

TOLERANCE = 1e-9


def _entropy_bits(labels: np.ndarray) -> float:
    _, counts = np.unique(labels, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log2(p)).sum())


def test_information_gain_matches_reference(spark):
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    informative = np.where(y == 1, rng.normal(3, 1, n), rng.normal(0, 1, n))
    noise = rng.normal(0, 1, n)
    frame = pd.DataFrame({"a": informative, "b": noise, "is_attack": y})
    df = spark.createDataFrame(frame).repartition(3)
    bins = 4
    gains = information_gain(df, ["a", "b"], "is_attack", bins)
    edges = dict(zip(["a", "b"], df.approxQuantile(["a", "b"], [0.25, 0.5, 0.75], 1e-3),
                     strict=True))
    for column in ["a", "b"]:
        binned = np.searchsorted(sorted(set(edges[column])), frame[column].to_numpy(),
                                 side="left")
        conditional = sum((binned == b).mean() * _entropy_bits(y[binned == b])
                          for b in np.unique(binned))
        assert gains[column] == pytest.approx(_entropy_bits(y) - conditional, abs=TOLERANCE)
    assert gains["a"] > 0.4
    assert gains["b"] < 0.05


def test_bin_index_puts_edge_values_low(spark):
    df = spark.createDataFrame([(0.0,), (1.0,), (1.5,), (2.0,), (3.0,)], "x double")
    got = [r[0] for r in df.select(bin_index(F.col("x"), [1.0, 2.0])).collect()]
    assert got == list(np.searchsorted([1.0, 2.0], [0.0, 1.0, 1.5, 2.0, 3.0], side="left"))


def test_variance_inflation_matches_regression(spark):
    rng = np.random.default_rng(1)
    n = 500
    x1 = rng.normal(size=n)
    x2 = 0.8 * x1 + 0.6 * rng.normal(size=n)
    x3 = rng.normal(size=n)
    frame = pd.DataFrame({"x1": x1, "x2": x2, "x3": x3})
    corr = correlation_matrix(spark.createDataFrame(frame), ["x1", "x2", "x3"])
    vif = variance_inflation(corr)
    for i, column in enumerate(frame.columns):
        others = frame.drop(columns=column).to_numpy()
        design = np.column_stack([np.ones(n), others])
        target = frame[column].to_numpy()
        coef, *_ = np.linalg.lstsq(design, target, rcond=None)
        residual = target - design @ coef
        r_squared = 1 - residual.var() / target.var()
        assert vif[i] == pytest.approx(1 / (1 - r_squared), rel=1e-6)


def test_greedy_low_vif_skips_collinear_feature():
    corr = np.array([[1.0, 0.95, 0.1], [0.95, 1.0, 0.1], [0.1, 0.1, 1.0]])
    index = {"a": 0, "b": 1, "c": 2}
    assert greedy_low_vif(["a", "b", "c"], corr, index, top_k=3, vif_max=2.5) == ["a", "c"]
    assert greedy_low_vif(["a", "b", "c"], corr, index, top_k=1, vif_max=2.5) == ["a"]
