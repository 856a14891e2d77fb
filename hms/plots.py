"""Figures a user looks at after a CV run: learning curves, confusion matrix, per-class KL, an input montage."""

from __future__ import annotations

import sys

import numpy as np
from matplotlib.figure import Figure

from .constants import CLASSES


def _subplots(*grid, figsize):
    """A figure and its axes drawn without pyplot: no global backend or figure registry is touched."""
    figure = Figure(figsize=figsize)
    return figure, figure.subplots(*grid)


def learning_curves(histories: dict[int, dict[str, list[float]]]):
    """Loss, validation loss and validation KL per epoch, one line per fold."""
    figure, axes = _subplots(1, 3, figsize=(14, 4))
    for fold, history in sorted(histories.items()):
        for axis, key in zip(axes, ("loss", "val_loss", "val_kl")):
            if history.get(key):
                axis.plot(range(1, len(history[key]) + 1), history[key], marker="o", label=f"fold {fold}")
    for axis, key in zip(axes, ("training loss", "validation loss", "validation KL")):
        axis.set_title(key)
        axis.set_xlabel("epoch")
        axis.legend(fontsize="small")
    figure.tight_layout()
    return figure


def confusion_matrix(consensus: np.ndarray, predicted: np.ndarray):
    """Rows: the consensus class (most votes); columns: the predicted class; cells: share of the row."""
    counts = np.zeros((len(CLASSES), len(CLASSES)))
    np.add.at(counts, (consensus, predicted), 1)
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure, axis = _subplots(figsize=(6, 5))
    image = axis.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(CLASSES)):
        for j in range(len(CLASSES)):
            axis.text(j, i, f"{shares[i, j]:.2f}\n({int(counts[i, j])})", ha="center", va="center", fontsize=7)
    axis.set_xticks(range(len(CLASSES)), CLASSES)
    axis.set_yticks(range(len(CLASSES)), CLASSES)
    axis.set_xlabel("predicted")
    axis.set_ylabel("consensus")
    figure.colorbar(image)
    figure.tight_layout()
    return figure


def per_class_kl(y: np.ndarray, p: np.ndarray):
    """Each class's share of the out-of-fold KL: mean over rows of y_c log(y_c / p_c)."""
    p = np.clip(p, 1e-15, 1 - 1e-15)
    terms = np.where(y > 0, y * np.log(np.where(y > 0, y, 1) / p), 0).mean(axis=0)
    figure, axis = _subplots(figsize=(6, 4))
    axis.bar(CLASSES, terms)
    axis.set_ylabel("KL contribution")
    axis.set_title(f"out-of-fold KL {terms.sum():.4f} by class")
    figure.tight_layout()
    return figure


def montage(image: np.ndarray, title: str):
    """One input as the backbone sees it (its first channel: the tiles; the others repeat them, or give the row)."""
    figure, axis = _subplots(figsize=(6, 6 * image.shape[0] / image.shape[1]))
    axis.imshow(image[..., 0], aspect="auto", cmap="magma")  # row 0 at the top, as the backbone sees it
    axis.set_title(title)
    axis.axis("off")
    figure.tight_layout()
    return figure


def save(figure, path) -> None:
    """Write a figure as PNG; a pyplot figure (e.g. Optuna's plots) is closed after, so none accumulate."""
    figure.savefig(path, dpi=90)
    pyplot = sys.modules.get("matplotlib.pyplot")
    if pyplot is not None:  # a no-op for the figures drawn here
        pyplot.close(figure)


def member_weights(labels: list[str], weights: np.ndarray):
    """An ensemble's weight on each candidate run (zero: not a member)."""
    order = np.argsort(-weights)
    figure, axis = _subplots(figsize=(7, 0.4 * len(labels) + 1.5))
    axis.barh([labels[i] for i in order][::-1], weights[order][::-1])
    axis.set_xlabel("weight")
    axis.set_title("ensemble weights per candidate run")
    figure.tight_layout()
    return figure


def candidates_vs_ensemble(labels: list[str], kls: np.ndarray, methods: dict[str, tuple[float, float | None]]):
    """Out-of-fold KL of every candidate run beside each blending method's in-sample and nested KL."""
    names = [*labels, *methods]
    in_sample = [*kls, *(v[0] for v in methods.values())]
    nested = [np.nan] * len(labels) + [np.nan if v[1] is None else v[1] for v in methods.values()]
    figure, axis = _subplots(figsize=(8, 0.4 * len(names) + 2.2))
    positions = np.arange(len(names))[::-1]
    axis.barh(positions + 0.2, in_sample, height=0.4, label="out-of-fold KL (weights fitted on all rows)")
    axis.barh(positions - 0.2, nested, height=0.4, label="nested: each fold blended with weights fitted on the others")
    axis.set_yticks(positions, names)
    axis.set_xlabel("KL divergence (lower is better)")
    axis.set_xlim(0.9 * np.nanmin([*in_sample, *nested]), None)
    axis.legend(fontsize="small", loc="lower center", bbox_to_anchor=(0.5, 1.0))
    figure.tight_layout()
    return figure
