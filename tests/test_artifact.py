"""The model input transform and the CNN-LSTM, against scikit-learn and Keras."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.preprocessing import QuantileTransformer

from pea_spark.artifact import InputTransform, ModelArtifact, build_model, predict_probabilities

TOLERANCE = 1e-12


@pytest.fixture
def heavy_tailed():
    rng = np.random.default_rng(3)
    rates = np.where(rng.random(2000) < 0.4, 0.0, rng.lognormal(8, 4, 2000))
    windows = rng.choice([-1.0, 0.0, 8192.0, 29200.0, 65535.0], 2000)
    return np.column_stack([rates, windows])


def test_uniform_matches_quantile_transformer(heavy_tailed):
    reference = QuantileTransformer(n_quantiles=500).fit(heavy_tailed)
    transform = InputTransform(quantiles=reference.quantiles_.T.tolist(), median=[0.0, 0.0],
                               scale=[1.0, 1.0])
    probe = heavy_tailed[:300]
    interior = ((probe > heavy_tailed.min(axis=0)) & (probe < heavy_tailed.max(axis=0))).all(1)
    assert interior.sum() > 50
    np.testing.assert_allclose(transform.uniform(probe[interior]),
                               reference.transform(probe[interior]), atol=TOLERANCE)


def test_uniform_maps_runs_to_their_middle(heavy_tailed):
    # 40% of the rates are exactly 0, the minimum: they map to 0.2, the middle of their
    # share, where scikit-learn would map them to 0.
    transform = InputTransform(quantiles=[np.quantile(heavy_tailed[:, 0],
                                                      np.linspace(0, 1, 1001)).tolist()],
                               median=[0.0], scale=[1.0])
    share = (heavy_tailed[:, 0] == 0).mean()
    got = transform.uniform(np.array([[0.0], [-3.0], [1e15]]))
    assert got[0, 0] == pytest.approx(share / 2, abs=1e-3)
    assert got[1, 0] == 0.0
    assert got[2, 0] == 1.0


def test_apply_scales_and_guards_zero_range(heavy_tailed):
    transform = InputTransform(quantiles=[[0.0, 1.0, 2.0], [5.0, 5.0, 5.0]],
                               median=[0.5, 0.5], scale=[0.5, 0.0])
    got = transform.apply(np.array([[2.0, 5.0], [0.0, 4.0]]))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, [[1.0, 0.0], [-1.0, -0.5]])


def test_cnn_lstm_layers_and_parameters():
    model = build_model(15, [32, 64], 3, 128, 0.3)
    kinds = [layer.__class__.__name__ for layer in model.layers]
    assert kinds == ["Conv1D", "Conv1D", "LSTM", "Dense"]
    assert model.layers[0].filters == 32
    assert model.layers[1].filters == 64
    assert model.layers[2].units == 128
    assert model.layers[2].dropout == 0.3
    assert model.layers[3].activation.__name__ == "sigmoid"
    assert model.input_shape == (None, 15, 1)
    assert model.count_params() == 105_281


def test_predict_probabilities_batches_rows():
    model = build_model(3, [4], 3, 8, 0.0)
    artifact = ModelArtifact(
        version=1, features=["a", "b", "c"], display_names=["A", "B", "C"],
        transform=InputTransform([[0.0, 1.0]] * 3, [0.5] * 3, [0.5] * 3), lime_stats={})
    raw = np.random.default_rng(0).random((10, 3))
    whole = predict_probabilities(model, artifact, raw, batch_size=100)
    sliced = predict_probabilities(model, artifact, raw, batch_size=3)
    assert whole.shape == (10,)
    np.testing.assert_allclose(whole, sliced, rtol=1e-5)
    assert ((whole > 0) & (whole < 1)).all()
    assert predict_probabilities(model, artifact, raw[:0], batch_size=3).shape == (0,)
