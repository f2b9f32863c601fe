"""Uncertainty: hierarchical bootstrap over training seeds and evaluation episodes.

Models are compared on *paired* episodes (the same evaluation seed gives the same start states), so the unit of
resampling is a seed, then episodes within it. Resampling seeds matters: three training runs of the same recipe
differ more than 256 episodes of one run do, and a CI over episodes alone would be falsely narrow.
"""

from __future__ import annotations

import numpy as np


def bootstrap_means(values: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95):
    """Mean over (seed, episode) of ``values[S, E, ...]`` and a percentile CI from resampling seeds, then episodes
    within each seed; vectorised over trailing axes (e.g. one call for every object type)."""
    v = np.asarray(values, dtype=np.float64)
    s, e = v.shape[:2]
    rng = np.random.default_rng(seed)
    seeds = rng.integers(s, size=(n_boot, s))
    episodes = rng.integers(e, size=(n_boot, s, e))
    boots = v[seeds[..., None], episodes].mean(axis=(1, 2))
    alpha = (1 - level) / 2
    lo, hi = np.quantile(boots, [alpha, 1 - alpha], axis=0)
    return v.mean(axis=(0, 1)), lo, hi


def bootstrap_mean(values: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float, float]:
    """Mean of ``values[seed, episode]`` (or ``values[episode]``) with its hierarchical-bootstrap CI."""
    values = np.asarray(values, dtype=np.float64)
    m, lo, hi = bootstrap_means(values[None, :] if values.ndim == 1 else values, n_boot, seed, level)
    return float(m), float(lo), float(hi)


def bootstrap_ratio(num: np.ndarray, den: np.ndarray, n_boot: int = 2000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float, float]:
    """Ratio of means ``mean(num) / mean(den)`` with the same paired hierarchical resampling for both.

    NaN when the denominator's own CI includes 0: the ratio is then unbounded and its interval meaningless."""
    num, den = np.atleast_2d(np.asarray(num, float)), np.atleast_2d(np.asarray(den, float))
    s, e = num.shape
    rng = np.random.default_rng(seed)
    seeds = rng.integers(s, size=(n_boot, s))
    episodes = rng.integers(e, size=(n_boot, s, e))
    n = num[seeds[..., None], episodes].mean(axis=(1, 2))
    d = den[seeds[..., None], episodes].mean(axis=(1, 2))
    alpha = (1 - level) / 2
    d_lo, d_hi = np.quantile(d, [alpha, 1 - alpha])
    if d_lo <= 0 <= d_hi:
        return float("nan"), float("nan"), float("nan")
    with np.errstate(divide="ignore", invalid="ignore"):
        boots = n / d
        point = num.mean() / den.mean()
    boots = boots[np.isfinite(boots)]
    if not np.isfinite(point) or len(boots) < n_boot // 2:
        return float("nan"), float("nan"), float("nan")
    lo, hi = np.quantile(boots, [alpha, 1 - alpha])
    return float(point), float(lo), float(hi)
