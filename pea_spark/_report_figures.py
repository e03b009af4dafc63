"""Matplotlib figures of the model report, drawn on the Agg canvas.

Each function returns a :class:`matplotlib.figure.Figure` built without
``pyplot``, so no global figure state accumulates and no display is needed.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

__all__ = [
    "class_recall_figure",
    "confusion_matrix_figure",
    "fold_figure",
    "grouped_bars_figure",
    "history_figure",
    "influence_figure",
    "lime_figure",
    "png_bytes",
    "pr_figure",
    "roc_figure",
]

# Resolution of the PNG files: a 5.0 x 3.6 inch figure becomes 550 x 396 pixels, the width
# at which the report shows two figures side by side without scaling them.
DPI = 110
WIDTH = 5.0
# LIME bar colours: weight toward the attack class, and toward the benign class.
TOWARD_ATTACK = "#c0392b"
TOWARD_BENIGN = "#27ae60"
SERIES_COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#17becf", "#7f7f7f"]


def new_figure(width: float = WIDTH, height: float = 3.6) -> Figure:
    """Create a figure of ``width`` x ``height`` inches attached to an Agg canvas."""
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Figure) -> bytes:
    """Render ``figure`` as PNG bytes at :data:`DPI`."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    return buffer.getvalue()


def confusion_matrix_figure(tn: int, fp: int, fn: int, tp: int, threshold: float) -> Figure:
    """Draw the 2 x 2 confusion matrix with counts and the share of each actual class."""
    matrix = np.array([[tn, fp], [fn, tp]], dtype=float)
    figure = new_figure(height=3.9)
    axes = figure.add_subplot()
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros_like(matrix), where=totals > 0)
    axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    for row in range(2):
        for column in range(2):
            colour = "white" if shares[row, column] > 0.6 else "black"
            axes.text(column, row, f"{int(matrix[row, column]):,}\n{shares[row, column]:.1%}",
                      ha="center", va="center", color=colour, fontsize=13)
    names = ["BENIGN", "ATTACK"]
    axes.set_xticks([0, 1], [f"predicted {n}" for n in names])
    axes.set_yticks([0, 1], [f"actual {n}" for n in names])
    axes.set_title(f"Confusion matrix at threshold {threshold:.2f}")
    return figure


def roc_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """Draw the ROC curve of each model, with the first model's AUC in the title.

    Parameters
    ----------
    curves : mapping of str to (ndarray, ndarray)
        Per model name, the 0/1 labels and the attack probabilities of the
        same flows. The first entry names the title's model.
    """
    from sklearn.metrics import auc, roc_curve

    figure = new_figure()
    axes = figure.add_subplot()
    areas = {}
    for (name, (labels, probability)), colour in zip(curves.items(), SERIES_COLOURS,
                                                      strict=False):
        fpr, tpr, _ = roc_curve(labels, probability)
        areas[name] = auc(fpr, tpr)
        axes.plot(fpr, tpr, color=colour, label=f"{name} (AUC {areas[name]:.4f})")
    axes.plot([0, 1], [0, 1], color="grey", linestyle=":", label="chance")
    first = next(iter(areas))
    axes.set_title(f"ROC curve, {first}: AUC {areas[first]:.4f}")
    axes.set_xlabel("false positive rate")
    axes.set_ylabel("true positive rate (recall)")
    axes.legend(loc="lower right")
    axes.grid(alpha=0.3)
    return figure


def pr_figure(curves: Mapping[str, tuple[np.ndarray, np.ndarray]]) -> Figure:
    """Draw the precision-recall curve of each model, with the first one's AP in the title.

    AP is scikit-learn's average precision, the step-wise area under the curve.
    """
    from sklearn.metrics import average_precision_score, precision_recall_curve

    figure = new_figure()
    axes = figure.add_subplot()
    scores = {}
    for (name, (labels, probability)), colour in zip(curves.items(), SERIES_COLOURS,
                                                      strict=False):
        precision, recall, _ = precision_recall_curve(labels, probability)
        scores[name] = average_precision_score(labels, probability)
        axes.step(recall, precision, where="post", color=colour,
                  label=f"{name} (AP {scores[name]:.4f})")
    labels = next(iter(curves.values()))[0]
    axes.axhline(float(np.mean(labels)), color="grey", linestyle=":", label="attack share")
    first = next(iter(scores))
    axes.set_title(f"Precision-recall curve, {first}: AP {scores[first]:.4f}")
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_ylim(0.0, 1.02)
    axes.legend(loc="lower left")
    axes.grid(alpha=0.3)
    return figure


def grouped_bars_figure(values: pd.DataFrame, title: str, errors: pd.DataFrame | None = None,
                        xlabel: str = "value") -> Figure:
    """Draw a group of horizontal bars per row of ``values`` and a bar per column, labelled.

    ``errors``, shaped like ``values``, adds error bars (for example a standard
    deviation). The value axis starts at 0, so that bars compare by length.
    """
    return _horizontal_bars(values, title, xlabel, errors)


def _horizontal_bars(values: pd.DataFrame, title: str, xlabel: str,
                     errors: pd.DataFrame | None = None) -> Figure:
    series = max(1, len(values.columns))
    height = min(10.0, 0.24 * len(values.index) * series + 1.4)
    figure = new_figure(height=max(2.6, height))
    axes = figure.add_subplot()
    positions = np.arange(len(values.index))
    width = 0.8 / series
    for number, column in enumerate(values.columns):
        offsets = positions - 0.4 + width * (number + 0.5)
        spread = None if errors is None else errors[column].to_numpy(dtype=float)
        bars = axes.barh(offsets, values[column].to_numpy(dtype=float), width, xerr=spread,
                         capsize=2, label=str(column),
                         color=SERIES_COLOURS[number % len(SERIES_COLOURS)])
        axes.bar_label(bars, fmt="%.3f", fontsize=8, padding=3)
    axes.set_yticks(positions, [str(i) for i in values.index])
    axes.invert_yaxis()
    axes.set_xlim(0.0, 1.18)
    axes.set_xlabel(xlabel)
    axes.set_title(title)
    if series > 1:
        figure.legend(loc="outside lower center", fontsize=8, ncols=min(3, series))
    axes.grid(axis="x", alpha=0.3)
    return figure


def fold_figure(per_fold: pd.DataFrame, title: str) -> Figure:
    """Draw each metric (column) across the folds (index) as a line with markers."""
    figure = new_figure(height=3.8)
    axes = figure.add_subplot()
    for number, column in enumerate(per_fold.columns):
        axes.plot(per_fold.index, per_fold[column].to_numpy(dtype=float), marker="o",
                  label=str(column), color=SERIES_COLOURS[number % len(SERIES_COLOURS)])
    axes.set_xticks(per_fold.index, [f"fold {i}" for i in per_fold.index])
    low = float(np.nanmin(per_fold.to_numpy(dtype=float))) if per_fold.size else 0.0
    axes.set_ylim(max(0.0, min(low - 0.05, 0.9)), 1.005)
    axes.set_ylabel("value")
    axes.set_title(title)
    figure.legend(loc="outside lower center", fontsize=8, ncols=min(5, len(per_fold.columns)))
    axes.grid(alpha=0.3)
    return figure


def class_recall_figure(recall: pd.DataFrame, title: str) -> Figure:
    """Draw a horizontal bar per class (index) and model (column) of recall values."""
    return _horizontal_bars(recall, title, "recall (share of the class's test flows)")


def lime_figure(conditions: Sequence[str], weights: Sequence[float], title: str) -> Figure:
    """Draw one LIME explanation as horizontal bars, the largest weight at the top.

    The layout follows lime's ``Explanation.as_pyplot_figure`` (lime 0.2.0.1),
    but the colours are fixed to the classes: red for a positive weight
    (toward ATTACK) and green for a negative one (toward BENIGN). Lime itself
    colours by sign only, green for positive.
    """
    values = np.asarray(weights, dtype=float)[::-1]
    names = list(conditions)[::-1]
    figure = new_figure(height=max(2.4, 0.36 * len(names) + 1.3))
    axes = figure.add_subplot()
    colours = [TOWARD_ATTACK if v > 0 else TOWARD_BENIGN for v in values]
    axes.barh(np.arange(len(values)), values, color=colours)
    axes.set_yticks(np.arange(len(values)), names, fontsize=9)
    axes.axvline(0.0, color="black", linewidth=0.8)
    axes.set_xlabel("LIME weight")
    legend = [Patch(color=TOWARD_ATTACK, label="toward ATTACK"),
              Patch(color=TOWARD_BENIGN, label="toward BENIGN")]
    figure.legend(handles=legend, loc="outside lower center", ncols=2, fontsize=8)
    # A figure title is centred on the whole figure. An axes title would be centred on
    # the axes, which long condition labels push to the right edge.
    figure.suptitle(title, fontsize=10)
    axes.grid(axis="x", alpha=0.3)
    return figure


def influence_figure(features: Sequence[str], mean_abs_weight: Sequence[float],
                     title: str) -> Figure:
    """Draw the mean absolute LIME weight per feature as horizontal bars, largest first."""
    values = np.asarray(mean_abs_weight, dtype=float)
    figure = new_figure(height=max(2.4, 0.26 * len(values) + 1.1))
    axes = figure.add_subplot()
    bars = axes.barh(np.arange(len(values)), values, color=SERIES_COLOURS[0])
    axes.bar_label(bars, fmt="%.4f", fontsize=8, padding=2)
    axes.set_yticks(np.arange(len(values)), list(features), fontsize=9)
    axes.invert_yaxis()
    axes.set_xlim(0.0, float(values.max()) * 1.25 if values.size and values.max() > 0 else 1.0)
    axes.set_xlabel("mean |LIME weight|")
    axes.set_title(title)
    axes.grid(axis="x", alpha=0.3)
    return figure


def history_figure(history: Mapping[str, Sequence[float]]) -> Figure:
    """Draw the training and validation loss per epoch from a Keras history."""
    figure = new_figure(height=3.4)
    axes = figure.add_subplot()
    for key, label, colour in [("loss", "training loss", SERIES_COLOURS[0]),
                               ("val_loss", "validation loss", SERIES_COLOURS[1])]:
        values = history.get(key) or []
        axes.plot(np.arange(1, len(values) + 1), values, label=label, color=colour)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("epoch")
    axes.set_ylabel("binary cross-entropy")
    axes.set_title("Training history")
    axes.legend()
    axes.grid(alpha=0.3)
    return figure
