"""Metrics of a ranking against known labels (pure): AUROC with ties at their average rank, the best AUROC a
non-negative score can reach given its exact zeros, and precision@k.

Both planted-truth localisation (:mod:`goalscope.analysis.validate.planted`) and validation's grafts
(:mod:`goalscope.analysis.validate.grafts`) score rankings with these; they live here, below both, so neither imports
the other for them. May import: numpy only.
"""

from __future__ import annotations

import math

import numpy as np


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic, ties given average ranks."""
    scores, labels = np.asarray(scores, float).ravel(), np.asarray(labels, bool).ravel()
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]  # average rank within ties
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def auroc_ceiling(scores: np.ndarray, labels: np.ndarray) -> float:
    """The best AUROC a non-negative score can reach given its exact zeros: every non-zero entry reordered at will
    (positives first), the zeros left tied at the bottom, where a zero positive earns half a pair against each zero
    negative and nothing against the rest. 1.0 without zero positives; NaN for a score with negative entries or
    labels of one class. A planted label the score cannot move (Δ = 0, gradient 0, Fisher 0) caps it here."""
    scores, labels = np.asarray(scores, float).ravel(), np.asarray(labels, bool).ravel()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0 or (scores < 0).any():
        return math.nan
    zero = scores == 0
    p0, n0 = int((zero & labels).sum()), int((zero & ~labels).sum())
    return float(((n_pos - p0) * n_neg + p0 * n0 / 2) / (n_pos * n_neg))


def precision_at_k(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of the ``k`` highest-scored entries that are labelled positive."""
    top = np.argsort(-np.asarray(scores, float).ravel(), kind="stable")[:k]
    return float(np.asarray(labels, bool).ravel()[top].mean())
