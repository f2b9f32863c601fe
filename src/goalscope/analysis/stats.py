"""Uncertainty: hierarchical bootstrap over training seeds and evaluation episodes.

Models are compared on *paired* episodes (the same evaluation seed gives the same start states), so the unit of
resampling is a seed, then episodes within it. Resampling seeds matters: three training runs of the same recipe
differ more than 256 episodes of one run do, and a CI over episodes alone would be falsely narrow.

May import: nothing from goalscope.
"""

from __future__ import annotations

import functools
import math

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


# ----------------------------------------------------------------------------------------------------------------
# Seed-level tests: what a verdict rests on.
#
# With 3-5 training seeds, a bootstrap over seeds is close to a min/max rule and its 95% interval covers the truth
# far less than 95% of the time when seeds differ (the episode-level resampling cannot see between-seed spread
# that three draws under-sample). A Student t interval over per-seed means keeps its nominal coverage at any seed
# count, because the t quantile pays for estimating the spread from few seeds. Many verdicts read at 95% each also
# need a family-wise correction: Holm-Bonferroni, within each family of verdicts.

MIN_SEEDS = 3  # below this a verdict says "underpowered" rather than "no effect"
LEVEL = 0.95
ALPHA = 0.05  # family-wise level of every Holm family
# The largest standardised effect a verdict counts on: per-seed differences whose mean is this many of their own
# standard deviations (d_z). A one-sided t test over n seeds then has t ≈ d_z·√n (the median of the noncentral t),
# so an effect this large passes about half the time exactly when d_z·√n reaches the critical t. 4 is a very large
# effect; it is a design constant, fixed before looking at data, so "underpowered" depends only on the seed count and
# the family size: at 3 seeds a claim can be Holm-tested against up to 4 nulls (critical t/√3 = 3.58 at α/4) but
# not the 32-36 comparisons one family once held (critical t 17.8-18.9, i.e. d_z 10.3-10.9).
LARGEST_EFFECT = 4.0


def _betacf(a: np.ndarray, b: np.ndarray, x: np.ndarray, iters: int = 300) -> np.ndarray:
    """Continued fraction of the incomplete beta function (modified Lentz), vectorised."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = np.ones_like(x)
    d = 1.0 - qab * x / qap
    d = np.where(np.abs(d) < tiny, tiny, d)
    d = 1.0 / d
    h = d.copy()
    for m in range(1, iters + 1):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = np.where(np.abs(d) < tiny, tiny, d)
            c = 1.0 + aa / c
            c = np.where(np.abs(c) < tiny, tiny, c)
            d = 1.0 / d
            step = d * c
            h = h * step
        if np.all(np.abs(step - 1.0) < 1e-15):
            break
    return h


def betainc(a, b, x) -> np.ndarray:
    """Regularised incomplete beta I_x(a, b) (numpy only; scipy is not a dependency)."""
    a, b, x = np.broadcast_arrays(*(np.asarray(v, dtype=np.float64) for v in (a, b, x)))
    out = np.where(x <= 0, 0.0, 1.0).astype(np.float64)
    inside = (x > 0) & (x < 1)
    if inside.any():
        a_, b_, x_ = a[inside], b[inside], x[inside]
        lbeta = np.vectorize(math.lgamma)(a_ + b_) - np.vectorize(math.lgamma)(a_) - np.vectorize(math.lgamma)(b_)
        front = np.exp(lbeta + a_ * np.log(x_) + b_ * np.log1p(-x_))
        # The continued fraction converges fast for x < (a+1)/(a+b+2); use the symmetry I_x(a,b) = 1 - I_{1-x}(b,a).
        direct = x_ < (a_ + 1) / (a_ + b_ + 2)
        val = np.where(direct, front * _betacf(a_, b_, x_) / a_, 1 - front * _betacf(b_, a_, 1 - x_) / b_)
        out[inside] = val
    return out


def t_cdf(t, df) -> np.ndarray:
    """CDF of Student's t with ``df`` degrees of freedom."""
    t, df = np.broadcast_arrays(np.asarray(t, np.float64), np.asarray(df, np.float64))
    tail = 0.5 * betainc(df / 2, 0.5, df / (df + t * t))
    return np.where(t > 0, 1 - tail, tail)


@functools.lru_cache(maxsize=256)
def t_quantile(p: float, df: float) -> float:
    """Inverse of :func:`t_cdf` by bisection (monotone, so 200 halvings reach float precision)."""
    if not 0 < p < 1:
        raise ValueError(f"p must be in (0, 1), got {p}")
    lo, hi = -1e6, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2
        if float(t_cdf(mid, df)) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def seed_means(values) -> np.ndarray:
    """Per-seed means of ``values[seed, episode, ...]``: the unit a seed-level test rests on."""
    v = np.asarray(values, dtype=np.float64)
    return v.reshape(v.shape[0], -1).mean(axis=1) if v.ndim > 1 else v


def t_interval(per_seed, level: float = LEVEL) -> tuple[float, float, float]:
    """Mean of per-seed values and its Student-t interval (n − 1 df); NaN bounds with fewer than 2 seeds."""
    x = np.asarray(per_seed, dtype=np.float64)
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if len(x) < 2:
        return m, math.nan, math.nan
    half = t_quantile(1 - (1 - level) / 2, len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return m, m - half, m + half


def t_test(per_seed, alternative: str = "two-sided"):
    """p-value of a one-sample t test of mean 0 over per-seed values (last axis; ``greater``: mean > 0, ``less``:
    mean < 0), vectorised over leading axes; NaN values are left out.

    NaN with fewer than 2 seeds. Zero spread with a non-zero mean is p = 0 or 1 (every seed agrees exactly)."""
    if alternative not in ("two-sided", "greater", "less"):
        raise ValueError(f"alternative must be two-sided, greater or less, got {alternative!r}")
    x = np.asarray(per_seed, dtype=np.float64)
    ok = np.isfinite(x)
    n = ok.sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        m = np.where(ok, x, 0).sum(axis=-1) / n
        sd = np.sqrt(np.where(ok, (x - m[..., None]) ** 2, 0).sum(axis=-1) / (n - 1))
        t = np.where(sd > 0, m / (sd / np.sqrt(n)), np.sign(m) * np.inf)
        below = np.where(np.isinf(t), (t > 0).astype(float), t_cdf(np.where(np.isfinite(t), t, 0.0), np.maximum(n - 1, 1)))
    below = np.where((m == 0) & (sd == 0), 0.5, below)
    p = {"greater": 1 - below, "less": below, "two-sided": np.minimum(1.0, 2 * np.minimum(below, 1 - below))}[alternative]
    p = np.where(n >= 2, p, np.nan)
    return float(p) if p.ndim == 0 else p


def holm(pvalues) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, made monotone); NaNs stay NaN and do not count in the family.

    Rejecting where the adjusted p < alpha controls the family-wise error rate at alpha for any dependence."""
    p = np.asarray(pvalues, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    if m == 0:
        return out
    order = idx[np.argsort(p[idx], kind="stable")]
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out[order] = adj
    return out


def ranks(x) -> np.ndarray:
    """Ranks 1..n with ties given their average rank."""
    x = np.asarray(x, dtype=np.float64).ravel()
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(1, len(x) + 1)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inverse, weights=r) / counts)[inverse]


def spearman(a, b) -> float:
    """Spearman rank correlation (Pearson of average ranks); NaN if either side is constant or has NaNs."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if len(a) != len(b) or len(a) < 2 or not (np.isfinite(a).all() and np.isfinite(b).all()):
        return math.nan
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else math.nan


def smallest_reachable_p(n_seeds: int, effect: float = LARGEST_EFFECT) -> float:
    """The one-sided p an effect of ``effect`` seed SDs gives at ``n_seeds`` seeds (t = effect·√n on n − 1 df):
    the smallest p a comparison can be counted on to reach at this seed count. 1 below 2 seeds (no t test)."""
    if n_seeds < 2:
        return 1.0
    return float(1 - t_cdf(effect * math.sqrt(n_seeds), n_seeds - 1))


def holm_reachable(n_seeds: int, m: int, alpha: float = ALPHA, effect: float = LARGEST_EFFECT) -> bool:
    """Whether a Holm family of ``m`` one-sided t tests over ``n_seeds`` seeds can pass at all: its smallest p must
    fall below alpha/m (Holm's first step), and every later step is easier. Never below MIN_SEEDS seeds."""
    return n_seeds >= MIN_SEEDS and m >= 1 and smallest_reachable_p(n_seeds, effect) < alpha / m


def seeds_needed(m: int, alpha: float = ALPHA, effect: float = LARGEST_EFFECT, most: int = 1000) -> int:
    """The fewest seeds at which a Holm family of ``m`` one-sided t tests can pass (see :func:`holm_reachable`)."""
    for n in range(MIN_SEEDS, most + 1):
        if holm_reachable(n, m, alpha, effect):
            return n
    return most


def family_power(n_seeds: int, m: int, alpha: float = ALPHA) -> dict:
    """Can a family of ``m`` tests over ``n_seeds`` seeds decide? The plain numbers a verdict quotes when it cannot."""
    return {"seeds": n_seeds, "tests": m, "threshold": alpha / max(m, 1), "smallest_p": smallest_reachable_p(n_seeds),
            "reachable": holm_reachable(n_seeds, m, alpha), "seeds_needed": seeds_needed(max(m, 1), alpha),
            "effect": LARGEST_EFFECT}


def paired_test(a, b) -> dict:
    """One-sided paired t over seeds that ``a`` exceeds ``b`` (per-seed values; seeds missing on either side are
    left out), with the difference's mean and two-sided 95% t interval for display."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    d = (a - b)[np.isfinite(a) & np.isfinite(b)]
    return {"seeds": int(len(d)), "diff": [round(x, 4) for x in t_interval(d)],
            "p": t_test(d, "greater") if len(d) else math.nan}
