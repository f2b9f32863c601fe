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


def quantile_strata(values: np.ndarray, n_strata: int) -> np.ndarray:
    """Stratum index (0 .. n_strata − 1) of each entry by the quantiles of ``values``: equal counts where values
    differ, and tied values always in one stratum (so strata can be fewer, and unequal, when many entries tie)."""
    v = np.asarray(values, float).ravel()
    if n_strata < 1:
        raise ValueError(f"n_strata must be >= 1, got {n_strata}")
    if len(v) == 0:
        return np.zeros(0, dtype=np.int64)
    inner = np.quantile(v, np.arange(1, n_strata) / n_strata)
    return np.searchsorted(np.unique(inner), v, side="right").astype(np.int64)


def stratified_auroc(scores: np.ndarray, labels: np.ndarray, strata: np.ndarray) -> tuple[float, int, int]:
    """AUROC within strata: each positive is compared only with negatives of its own stratum (matched on what
    defined the strata, e.g. MA's Fisher), the per-stratum AUROCs combined by a mean weighted by positives. Returns
    (AUROC, strata used, positives used); strata with no positive or no negative are left out, so their positives
    are not counted (NaN when none is left)."""
    scores, labels = np.asarray(scores, float).ravel(), np.asarray(labels, bool).ravel()
    strata = np.asarray(strata).ravel()
    total, weight, used = 0.0, 0, 0
    for s in np.unique(strata):
        inside = strata == s
        n_pos = int(labels[inside].sum())
        if n_pos == 0 or n_pos == int(inside.sum()):
            continue
        total += n_pos * auroc(scores[inside], labels[inside])
        weight += n_pos
        used += 1
    return (total / weight if weight else math.nan), used, weight
