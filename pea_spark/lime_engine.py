"""Batch LIME for tabular rows: one set of perturbations explains many rows.

lime 0.2.0.1's ``LimeTabularExplainer`` with ``discretize_continuous=True``
draws the bin of every perturbed sample from the training bin frequencies, and
then a value inside that bin from a truncated normal. Neither draw depends on
the row being explained: row 0 of the neighbourhood is the row itself, and only
the binary representation (1 where a sample falls in the same bin as the row)
depends on the row. One set of perturbations and their model predictions can
therefore serve many rows, and each explanation then costs one weighted ridge
regression and its feature selection instead of ``num_samples`` model calls.

:class:`BatchExplainer` reproduces lime's sampling, exponential kernel,
euclidean distance on the binary representation, ``auto`` feature selection and
``Ridge(alpha=1)`` surrogate, vectorised over rows with numpy. Drawing one
perturbation set per row with that row's random state
(:meth:`BatchExplainer.explain_each`) gives lime's own weights. Sharing one set
among many rows (:meth:`BatchExplainer.explain`) gives each row an explanation
from lime's distribution, but the rows then share their sampling noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np

__all__ = ["BinStats", "Perturbations", "LocalExplanations", "BatchExplainer"]

# lime's defaults: kernel_width = sqrt(n_features) * 0.75, and feature_selection
# "auto" runs forward selection up to 6 features and "highest_weights" above.
KERNEL_WIDTH_FACTOR = 0.75
FORWARD_SELECTION_MAX_FEATURES = 6
# Ridge penalties of lime_base.LimeBase: forward selection, highest_weights, surrogate.
FORWARD_SELECTION_ALPHA = 0.0
HIGHEST_WEIGHTS_ALPHA = 0.01
SURROGATE_ALPHA = 1.0
FEATURE_SELECTIONS = ("auto", "forward_selection", "highest_weights")

# Candidates whose scores (R^2) or selection weights differ by less than this
# are a tie that rounding may break either way, so such rows are refitted with
# scikit-learn exactly as lime fits them.
TIE_TOLERANCE = 1e-9
# Below this weighted sum of squares (relative to the weights and the target's
# magnitude), the target is constant and R^2 is decided by rounding alone.
MIN_TARGET_VARIANCE = 1e-20
# Rows explained together by one vectorised step. Each step keeps two float64
# arrays of chunk_rows * num_samples * n_features values: 9.6 MB each at 16 rows,
# 5,000 samples and 15 features.
DEFAULT_CHUNK_ROWS = 16


@dataclass(frozen=True)
class BinStats:
    """Quartile bins and per-bin moments of each feature, as lime's ``StatsDiscretizer`` reads them.

    Attributes
    ----------
    edges : tuple of ndarray
        Per feature, its sorted distinct bin edges. Bin ``b`` contains the values
        ``x`` with ``edges[b - 1] < x <= edges[b]``.
    values : tuple of ndarray
        Per feature, the bin ids that sampling draws from (lime's ``feature_values``).
    probabilities : tuple of ndarray
        Per feature, the training frequency of each bin id, normalised to sum to 1.
    mins, maxs, means, stds : tuple of ndarray
        Per feature and bin: the bounds, mean and standard deviation that the
        truncated normal inside the bin uses.
    """

    edges: tuple[np.ndarray, ...]
    values: tuple[np.ndarray, ...]
    probabilities: tuple[np.ndarray, ...]
    mins: tuple[np.ndarray, ...]
    maxs: tuple[np.ndarray, ...]
    means: tuple[np.ndarray, ...]
    stds: tuple[np.ndarray, ...]

    @classmethod
    def from_training_stats(cls, stats: Mapping[str, Mapping[Any, Any]]) -> BinStats:
        """Build from lime's ``training_data_stats`` plus ``bins``, keyed by feature position.

        Keys may be integers or their strings, as JSON stores them.

        Raises
        ------
        ValueError
            When a table is missing or does not cover positions ``0 .. n - 1``.
        """
        tables = ["bins", "feature_values", "feature_frequencies", "mins", "maxs", "means",
                  "stds"]
        missing = [name for name in tables if name not in stats]
        if missing:
            raise ValueError(f"LIME training statistics lack {', '.join(missing)}: expected "
                             f"the tables {', '.join(tables)}")
        by_position = {name: {int(k): v for k, v in stats[name].items()} for name in tables}
        count = len(by_position["bins"])
        for name, table in by_position.items():
            if sorted(table) != list(range(count)):
                raise ValueError(f"LIME training statistics table {name!r} has positions "
                                 f"{sorted(table)}: expected 0 to {count - 1}")

        def column(name: str, dtype: Any = np.float64) -> tuple[np.ndarray, ...]:
            return tuple(np.asarray(by_position[name][i], dtype=dtype) for i in range(count))

        # lime divides the integer counts by float(sum(counts)).
        frequencies = by_position["feature_frequencies"]
        probabilities = tuple(np.asarray(frequencies[i]) / float(sum(frequencies[i]))
                              for i in range(count))
        edges = tuple(np.unique(np.asarray(by_position["bins"][i], dtype=np.float64))
                      for i in range(count))
        return cls(edges=edges, values=column("feature_values", np.int64),
                   probabilities=probabilities, mins=column("mins"), maxs=column("maxs"),
                   means=column("means"), stds=column("stds"))

    @property
    def num_features(self) -> int:
        """Number of features."""
        return len(self.edges)

    def discretize(self, rows: np.ndarray) -> np.ndarray:
        """Bin of each value of ``rows``, shape ``(n, features)``, by ``searchsorted`` as lime does.

        A value equal to an edge falls in the lower bin.
        """
        bins = np.empty(rows.shape, dtype=np.int64)
        for j, edges in enumerate(self.edges):
            bins[:, j] = np.searchsorted(edges, rows[:, j])
        return bins

    def condition_labels(self, names: list[str]) -> tuple[tuple[str, ...], ...]:
        """lime's label of each bin of each feature, such as ``3.00 < Flow Duration <= 7.00``."""
        if len(names) != self.num_features:
            raise ValueError(f"got {len(names)} feature names for {self.num_features} features")
        labels = []
        for name, edges in zip(names, self.edges, strict=True):
            inner = [f"{low:.2f} < {name} <= {high:.2f}"
                     for low, high in zip(edges[:-1], edges[1:], strict=True)]
            labels.append((f"{name} <= {edges[0]:.2f}", *inner, f"{name} > {edges[-1]:.2f}"))
        return tuple(labels)


@dataclass(frozen=True)
class Perturbations:
    """Perturbed samples 1 to ``num_samples - 1`` of a lime neighbourhood.

    Sample 0 of a neighbourhood is always the explained row itself, so it is not stored.

    Attributes
    ----------
    bins : ndarray of int, shape (num_samples - 1, features)
        Bin drawn for each sample and feature.
    values : ndarray of float, shape (num_samples - 1, features)
        Raw feature values drawn inside those bins: the model's inputs.
    """

    bins: np.ndarray
    values: np.ndarray

    @property
    def num_samples(self) -> int:
        """Neighbourhood size including the explained row, lime's ``num_samples``."""
        return self.bins.shape[0] + 1


@dataclass(frozen=True)
class LocalExplanations:
    """Local surrogate models of a batch of rows, one entry per row.

    Attributes
    ----------
    features : ndarray of int, shape (rows, m)
        Positions of the selected features, by decreasing absolute weight (ties
        keep lime's order), where ``m = min(num_features, n_features)``.
    weights : ndarray of float, shape (rows, m)
        Surrogate coefficient of each selected feature: lime's explanation weight.
    intercepts, scores, local_predictions : ndarray of float, shape (rows,)
        Surrogate intercept, its weighted R^2 on the neighbourhood, and its
        prediction for the row, as lime's ``Explanation`` stores them.
    refitted : ndarray of bool, shape (rows,)
        Rows fitted one by one with scikit-learn, because a near-tie, a duplicated
        binary column or a constant target left the vectorised result open to rounding.
    """

    features: np.ndarray
    weights: np.ndarray
    intercepts: np.ndarray
    scores: np.ndarray
    local_predictions: np.ndarray
    refitted: np.ndarray

    @classmethod
    def concatenate(cls, parts: list[LocalExplanations]) -> LocalExplanations:
        """Stack the explanations of consecutive batches of rows."""
        return cls(*(np.concatenate([getattr(p, name) for p in parts])
                     for name in ("features", "weights", "intercepts", "scores",
                                  "local_predictions", "refitted")))


class _Moments(NamedTuple):
    """Weighted, centred normal equations of each row's surrogate regression."""

    gram: np.ndarray  # (rows, k, k): Xc' W Xc, with 1 on the diagonal of constant columns
    cross: np.ndarray  # (rows, k): Xc' W yc
    total: np.ndarray  # (rows,): yc' W yc
    x_mean: np.ndarray  # (rows, k): weighted mean of each binary column
    y_mean: np.ndarray  # (rows,): weighted mean of the target
    unstable: np.ndarray  # (rows,) bool: rows the vectorised fit cannot decide


class BatchExplainer:
    """LIME's tabular explanations for many rows, from lime's training statistics.

    Parameters
    ----------
    training_stats : mapping
        ``bins``, ``feature_values``, ``feature_frequencies``, ``mins``,
        ``maxs``, ``means`` and ``stds``, each keyed by feature position: the
        ``training_data_stats`` that ``LimeTabularExplainer`` takes with
        ``discretize_continuous=True``.
    feature_names : list of str
        Names shown in condition labels, one per feature.
    num_features : int
        Features per explanation, lime's ``num_features``.
    kernel_width : float, optional
        Width of the exponential kernel; lime's default ``sqrt(n_features) * 0.75``.
    feature_selection : {"auto", "forward_selection", "highest_weights"}
        lime's feature selection; "auto" uses forward selection for up to 6
        features and "highest_weights" above that.
    """

    def __init__(self, training_stats: Mapping[str, Mapping[Any, Any]], feature_names: list[str],
                 num_features: int = 10, kernel_width: float | None = None,
                 feature_selection: str = "auto") -> None:
        if feature_selection not in FEATURE_SELECTIONS:
            raise ValueError(f"invalid feature_selection {feature_selection!r}: expected one "
                             f"of {', '.join(FEATURE_SELECTIONS)}")
        if num_features < 1:
            raise ValueError(f"invalid num_features {num_features}: expected an integer >= 1")
        self.stats = BinStats.from_training_stats(training_stats)
        self.conditions = self.stats.condition_labels(list(feature_names))
        count = self.stats.num_features
        self.num_features = num_features
        if feature_selection == "auto":
            feature_selection = ("forward_selection"
                                 if num_features <= FORWARD_SELECTION_MAX_FEATURES
                                 else "highest_weights")
        self.feature_selection = feature_selection
        width = np.sqrt(count) * KERNEL_WIDTH_FACTOR if kernel_width is None else kernel_width
        self.kernel_width = float(width)
        # The distance to the row is sqrt(number of features whose bin differs), so
        # the kernel takes only n_features + 1 values: lime's sqrt(exp(-d^2 / w^2)).
        distances = np.sqrt(np.arange(count + 1, dtype=np.float64))
        self._kernel = np.sqrt(np.exp(-(distances ** 2) / self.kernel_width ** 2))

    def sample(self, num_samples: int, random_state: np.random.RandomState) -> Perturbations:
        """Draw a neighbourhood as lime's ``__data_inverse`` does, less its row 0.

        The random state is consumed in lime's order: one ``choice`` of
        ``num_samples`` bins per feature (row 0's draw is discarded, as in lime),
        then one truncated-normal draw per feature for rows 1 onwards.

        Parameters
        ----------
        num_samples : int
            Neighbourhood size including the explained row, at least 2.
        random_state : numpy.random.RandomState
            Source of randomness; a fresh state seeded as lime's gives lime's draws.
        """
        if num_samples < 2:
            raise ValueError(f"invalid num_samples {num_samples}: expected an integer >= 2")
        stats = self.stats
        drawn = np.empty((num_samples, stats.num_features), dtype=np.int64)
        for j in range(stats.num_features):
            drawn[:, j] = random_state.choice(stats.values[j], size=num_samples, replace=True,
                                              p=stats.probabilities[j])
        bins = drawn[1:].copy()
        values = np.empty(bins.shape, dtype=np.float64)
        for j in range(stats.num_features):
            values[:, j] = self._values_in_bins(j, bins[:, j], random_state)
        return Perturbations(bins=bins, values=values)

    def _values_in_bins(self, feature: int, bins: np.ndarray,
                        random_state: np.random.RandomState) -> np.ndarray:
        from scipy.stats import truncnorm

        stats = self.stats
        means = stats.means[feature][bins]
        stds = stats.stds[feature][bins]
        low = (stats.mins[feature][bins] - means) / stds
        high = (stats.maxs[feature][bins] - means) / stds
        spread = low != high
        # NOTE: lime 0.2.0.1 returns the standardised bound (min - mean) / std, not
        # a raw value, for a bin whose min equals its max. This keeps that quirk so
        # that the model receives the same perturbations as under lime.
        values = low.copy()
        values[spread] = truncnorm.rvs(low[spread], high[spread], loc=means[spread],
                                       scale=stds[spread], random_state=random_state)
        return values

    def explain(self, perturbations: Perturbations, predictions: np.ndarray, rows: np.ndarray,
                row_predictions: np.ndarray,
                chunk_rows: int = DEFAULT_CHUNK_ROWS) -> LocalExplanations:
        """Explain every row with one shared neighbourhood, row 0 replaced by the row itself.

        Parameters
        ----------
        perturbations : Perturbations
            Shared samples 1 onwards of the neighbourhood.
        predictions : ndarray, shape (num_samples - 1,)
            Model output for ``perturbations.values``, for the explained label
            (lime's ``predict_fn(...)[:, label]``).
        rows : ndarray, shape (rows, features)
            Raw feature values of the rows to explain.
        row_predictions : ndarray, shape (rows,)
            Model output for ``rows``, for the explained label.
        chunk_rows : int
            Rows explained per vectorised step; memory grows with it (see Notes).

        Notes
        -----
        Each step keeps two float64 arrays of ``chunk_rows * num_samples *
        features`` values. Rows that the vectorised fit cannot decide exactly
        (see :attr:`LocalExplanations.refitted`) are fitted with scikit-learn's
        ``Ridge``, as lime fits them, at lime's cost for the regression part.
        """
        rows = np.asarray(rows, dtype=np.float64)
        predictions = np.asarray(predictions, dtype=np.float64).reshape(-1)
        row_predictions = np.asarray(row_predictions, dtype=np.float64).reshape(-1)
        self._check_shapes(perturbations, predictions, rows, row_predictions)
        if chunk_rows < 1:
            raise ValueError(f"invalid chunk_rows {chunk_rows}: expected an integer >= 1")
        if len(rows) == 0:
            return _blank(0, min(self.num_features, self.stats.num_features))
        row_bins = self.stats.discretize(rows)
        parts = []
        for start in range(0, len(rows), chunk_rows):
            stop = start + chunk_rows
            parts.append(self._explain_chunk(perturbations.bins, predictions,
                                             row_bins[start:stop], row_predictions[start:stop]))
        return LocalExplanations.concatenate(parts)

    def explain_each(self, rows: np.ndarray, predict: Callable[[np.ndarray], np.ndarray],
                     num_samples: int,
                     random_states: Iterable[np.random.RandomState]) -> LocalExplanations:
        """Explain each row with its own neighbourhood: lime's ``explain_instance``, row by row.

        With the random state lime would use for a row, the weights equal lime's.
        This costs one model call of ``num_samples`` rows per row, like lime.

        Parameters
        ----------
        rows : ndarray, shape (rows, features)
            Raw feature values of the rows to explain.
        predict : callable
            Maps raw rows, shape ``(n, features)``, to the model output for the
            explained label, shape ``(n,)``. It receives the row and its
            perturbations in one array, as lime's ``predict_fn`` does.
        num_samples : int
            Neighbourhood size, lime's ``num_samples``.
        random_states : iterable of numpy.random.RandomState
            One per row.
        """
        rows = np.asarray(rows, dtype=np.float64)
        parts = []
        for row, state in zip(rows, random_states, strict=True):
            perturbations = self.sample(num_samples, state)
            outputs = np.asarray(predict(np.vstack([row, perturbations.values])),
                                 dtype=np.float64).reshape(-1)
            parts.append(self.explain(perturbations, outputs[1:], row[None, :], outputs[:1]))
        if not parts:
            return _blank(0, min(self.num_features, self.stats.num_features))
        return LocalExplanations.concatenate(parts)

    def _check_shapes(self, perturbations: Perturbations, predictions: np.ndarray,
                      rows: np.ndarray, row_predictions: np.ndarray) -> None:
        count = self.stats.num_features
        if rows.ndim != 2 or rows.shape[1] != count:
            raise ValueError(f"rows have shape {rows.shape}: expected (n, {count})")
        if perturbations.bins.shape[1] != count:
            raise ValueError(f"perturbations have {perturbations.bins.shape[1]} features: "
                             f"expected {count}")
        if predictions.shape[0] != perturbations.bins.shape[0]:
            raise ValueError(f"got {predictions.shape[0]} predictions for "
                             f"{perturbations.bins.shape[0]} perturbed samples")
        if row_predictions.shape[0] != rows.shape[0]:
            raise ValueError(f"got {row_predictions.shape[0]} row predictions for "
                             f"{rows.shape[0]} rows")

    def _explain_chunk(self, sample_bins: np.ndarray, predictions: np.ndarray,
                       row_bins: np.ndarray, row_predictions: np.ndarray) -> LocalExplanations:
        # The arrays cover samples 1 onwards. Sample 0 is the row itself, which is
        # all ones with kernel weight 1, and _weighted_moments adds it analytically.
        binary = np.equal(sample_bins[None, :, :], row_bins[:, None, :]).astype(np.float64)
        matches = np.rint(binary @ np.ones(binary.shape[2])).astype(np.int64)
        weights = self._kernel[binary.shape[2] - matches]
        moments = _weighted_moments(binary, weights, predictions, row_predictions)
        try:
            if self.feature_selection == "forward_selection":
                used, ties = _forward_selection(moments, self.num_features)
            else:
                used, ties = _highest_weights(moments, self.num_features)
            result = _surrogate(moments, used)
            refit = np.flatnonzero(moments.unstable | ties)
        except np.linalg.LinAlgError:
            # A singular system that the duplicate-column check did not foresee:
            # fit every row of the chunk as lime does.
            result = _blank(len(row_bins), min(self.num_features, row_bins.shape[1]))
            refit = np.arange(len(row_bins))
        for i in refit:
            fitted = _fit_like_lime(
                np.vstack([np.ones(binary.shape[2]), binary[i]]),
                np.concatenate([row_predictions[i:i + 1], predictions]),
                np.concatenate([self._kernel[:1], weights[i]]),
                self.num_features, self.feature_selection)
            for name, value in zip(("features", "weights", "intercepts", "scores",
                                    "local_predictions"), fitted, strict=True):
                getattr(result, name)[i] = value
            result.refitted[i] = True
        return result


def _weighted_moments(binary: np.ndarray, weights: np.ndarray, predictions: np.ndarray,
                      row_predictions: np.ndarray) -> _Moments:
    """Centre each row's regression with weighted means, as scikit-learn's Ridge does.

    ``binary`` and ``weights`` cover samples 1 onwards, shapes ``(rows, n, k)`` and
    ``(rows, n)``. Sample 0 is all ones, with weight 1 and target ``row_predictions``.
    """
    samples = binary.shape[1]
    weighted = binary * weights[:, :, None]
    weight_sum = 1.0 + weights.sum(axis=1)
    # This is the uncentred Gram matrix. A binary column equals its square, so the
    # diagonal contains the weighted column sums.
    gram = np.matmul(weighted.transpose(0, 2, 1), binary) + 1.0
    x_mean = np.diagonal(gram, axis1=1, axis2=2) / weight_sum[:, None]
    gram -= weight_sum[:, None, None] * x_mean[:, :, None] * x_mean[:, None, :]
    y_mean = (row_predictions + weights @ predictions) / weight_sum
    y_centred = predictions[None, :] - y_mean[:, None]
    row_centred = row_predictions - y_mean
    # Weighted centred targets sum to 0, so centring the columns adds nothing here.
    cross = np.matmul(weighted.transpose(0, 2, 1), y_centred[:, :, None])[:, :, 0]
    cross += row_centred[:, None]
    total = (weights * y_centred ** 2).sum(axis=1) + row_centred ** 2
    # A column is constant when every sample shares the row's bin. It gets
    # coefficient 0, as in the minimum-norm least-squares solution that
    # scikit-learn falls back to for the singular system it makes.
    counts = np.rint(np.ones(samples) @ binary).astype(np.int64)
    constant = counts == samples
    rows, features = np.nonzero(constant)
    gram[rows, features, :] = 0.0
    gram[rows, :, features] = 0.0
    gram[rows, features, features] = 1.0
    cross[rows, features] = 0.0
    scale = weight_sum * (1.0 + y_mean ** 2)
    unstable = (total <= MIN_TARGET_VARIANCE * scale) | _duplicate_columns(binary, counts,
                                                                           constant)
    # Unstable rows are refitted with scikit-learn. A dummy system keeps the
    # vectorised solves of the other rows from failing on them.
    gram[unstable] = np.eye(gram.shape[1])
    cross[unstable] = 0.0
    total[unstable] = 1.0
    return _Moments(gram, cross, total, x_mean, y_mean, unstable)


def _duplicate_columns(binary: np.ndarray, counts: np.ndarray,
                       constant: np.ndarray) -> np.ndarray:
    """Rows with two equal non-constant binary columns, which make the fit singular.

    This happens when the row's bins are rare in training, so that no sample
    but the row itself matches them in several features.
    """
    found = np.zeros(binary.shape[0], dtype=bool)
    features = binary.shape[2]
    for j in range(features):
        for k in range(j + 1, features):
            candidates = np.flatnonzero((counts[:, j] == counts[:, k]) & ~constant[:, j])
            if candidates.size:
                same = (binary[candidates, :, j] == binary[candidates, :, k]).all(axis=1)
                found[candidates[same]] = True
    return found


def _solve_subsets(moments: _Moments, index: np.ndarray,
                   alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve the ridge regression of each row on the column subsets ``index``.

    ``index`` has shape ``(rows, c, m)``: ``c`` subsets of ``m`` columns per row.
    Returns the penalised Gram matrices, the cross products and the coefficients
    of the subsets.
    """
    rows = np.arange(index.shape[0])[:, None, None]
    gram = moments.gram[rows[..., None], index[..., :, None], index[..., None, :]]
    cross = moments.cross[rows, index]
    if alpha:
        gram = gram + alpha * np.eye(index.shape[-1])
    return gram, cross, np.linalg.solve(gram, cross[..., None])[..., 0]


def _near_tie(sorted_values: np.ndarray, position: int) -> np.ndarray:
    """Rows whose values at ``position`` and ``position + 1`` of a descending order nearly tie."""
    first, second = sorted_values[:, position], sorted_values[:, position + 1]
    return np.isfinite(second) & (first - second < TIE_TOLERANCE * np.maximum(1.0, np.abs(first)))


def _forward_selection(moments: _Moments, num_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Greedy selection by weighted R^2 of a least-squares fit, as lime's ``forward_selection``.

    Returns the selected positions in selection order and the rows with a near-tie.
    """
    rows, count = moments.cross.shape
    candidates = np.arange(count)
    used = np.empty((rows, 0), dtype=np.int64)
    ties = np.zeros(rows, dtype=bool)
    for step in range(min(num_features, count)):
        index = np.concatenate([np.broadcast_to(used[:, None, :], (rows, count, step)),
                                np.broadcast_to(candidates[None, :, None], (rows, count, 1))],
                               axis=2)
        already_used = (used[:, :, None] == candidates[None, None, :]).any(axis=1)
        # A candidate already used would repeat a column, so it gets a solvable dummy system.
        index[already_used] = np.arange(step + 1)
        _, cross, coef = _solve_subsets(moments, index, FORWARD_SELECTION_ALPHA)
        explained = (coef * cross).sum(axis=2)
        scores = 1.0 - (moments.total[:, None] - explained) / moments.total[:, None]
        scores[already_used] = -np.inf
        # lime keeps the first candidate with the highest score, which argmax does too.
        used = np.column_stack([used, scores.argmax(axis=1)])
        ties |= _near_tie(-np.sort(-scores, axis=1), 0)
    return used, ties


def _highest_weights(moments: _Moments, num_features: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the largest ``Ridge(alpha=0.01)`` weights on all features, as lime's
    ``highest_weights``; also returns the rows with a near-tie at the cut."""
    rows, count = moments.cross.shape
    index = np.broadcast_to(np.arange(count)[None, None, :], (rows, 1, count))
    _, _, coef = _solve_subsets(moments, index, HIGHEST_WEIGHTS_ALPHA)
    # lime ranks coef * (row 0 of the binary representation), and that row is all ones.
    magnitude = np.abs(coef[:, 0, :])
    order = np.argsort(-magnitude, axis=1, kind="stable")
    ties = np.zeros(rows, dtype=bool)
    if num_features < count:
        ranked = np.take_along_axis(magnitude, order, axis=1)
        ties = _near_tie(ranked, num_features - 1)
    return order[:, :num_features], ties


def _surrogate(moments: _Moments, used: np.ndarray) -> LocalExplanations:
    """Fit lime's ``Ridge(alpha=1)`` surrogate on the selected columns of each row."""
    gram, cross, coef = _solve_subsets(moments, used[:, None, :], SURROGATE_ALPHA)
    gram, cross, coef = gram[:, 0], cross[:, 0], coef[:, 0]
    unpenalised = gram - SURROGATE_ALPHA * np.eye(used.shape[1])
    residual = (moments.total - 2.0 * (coef * cross).sum(axis=1)
                + np.einsum("ri,rij,rj->r", coef, unpenalised, coef))
    scores = 1.0 - residual / moments.total
    x_mean = np.take_along_axis(moments.x_mean, used, axis=1)
    intercepts = moments.y_mean - (x_mean * coef).sum(axis=1)
    # The explained row is all ones in the binary representation.
    local = intercepts + coef.sum(axis=1)
    order = np.argsort(-np.abs(coef), axis=1, kind="stable")
    return LocalExplanations(
        features=np.take_along_axis(used, order, axis=1),
        weights=np.take_along_axis(coef, order, axis=1),
        intercepts=intercepts, scores=scores, local_predictions=local,
        refitted=np.zeros(used.shape[0], dtype=bool),
    )


def _blank(rows: int, width: int) -> LocalExplanations:
    """Zero-filled explanations of ``rows`` rows with ``width`` features each."""
    return LocalExplanations(
        features=np.zeros((rows, width), dtype=np.int64),
        weights=np.zeros((rows, width)), intercepts=np.zeros(rows), scores=np.zeros(rows),
        local_predictions=np.zeros(rows), refitted=np.zeros(rows, dtype=bool))


def _fit_like_lime(binary: np.ndarray, targets: np.ndarray, weights: np.ndarray,
                   num_features: int, method: str) -> tuple[Any, ...]:
    """Select and fit one row with scikit-learn's Ridge, in the steps lime_base takes."""
    from sklearn.linear_model import Ridge

    count = binary.shape[1]
    if method == "forward_selection":
        used: list[int] = []
        for _ in range(min(num_features, count)):
            # lime starts from a score of -1e8 and keeps the first strictly better one.
            best, best_score = 0, -1e8
            for feature in range(count):
                if feature in used:
                    continue
                columns = binary[:, used + [feature]]
                model = Ridge(alpha=FORWARD_SELECTION_ALPHA, fit_intercept=True)
                model.fit(columns, targets, sample_weight=weights)
                score = model.score(columns, targets, sample_weight=weights)
                if score > best_score:
                    best, best_score = feature, score
            used.append(best)
    else:
        model = Ridge(alpha=HIGHEST_WEIGHTS_ALPHA, fit_intercept=True)
        model.fit(binary, targets, sample_weight=weights)
        used = [int(i) for i in np.argsort(-np.abs(model.coef_ * binary[0]),
                                           kind="stable")[:num_features]]
    columns = binary[:, used]
    model = Ridge(alpha=SURROGATE_ALPHA, fit_intercept=True)
    model.fit(columns, targets, sample_weight=weights)
    score = model.score(columns, targets, sample_weight=weights)
    local = float(model.predict(columns[:1])[0])
    order = np.argsort(-np.abs(model.coef_), kind="stable")
    return (np.asarray(used)[order], model.coef_[order], float(model.intercept_), score, local)
