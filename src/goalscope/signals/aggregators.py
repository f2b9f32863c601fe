"""Aggregators: turn several update signals Δ_i = MB_i − MA into one heatmap.

A heatmap is a non-negative score per parameter (same keys and shapes as the state dict); higher means the
parameter is more likely to hold the objective. Every aggregator is an :class:`Aggregator` in the
:data:`AGGREGATORS` registry and is called as ``fn(deltas, controls, fisher, **params)``. Users add their own
with :func:`register`; the built-ins are registered explicitly at the bottom of this module. The diagonal Fisher
that the ``fisher`` aggregator weighs with is computed by :mod:`goalscope.signals.fisher`. May import:
goalscope.signals.delta, goalscope.errors, torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Optional

import torch

from goalscope.errors import GoalscopeError
from goalscope.signals.delta import Params, check_compatible, flatten, topk_mask, unflatten

__all__ = [
    "AGGREGATORS",
    "Aggregator",
    "aggregate",
    "get",
    "per_rb_heatmaps",
    "register",
    "shared_component",
]

AggregatorFn = Callable[..., Params]


@dataclass(frozen=True)
class Aggregator:
    """A named way to combine update signals into a heatmap.

    ``fn(deltas, controls, fisher, **params)`` receives the validated inputs plus ``defaults`` overridden by the
    caller's keyword arguments; only names in ``defaults`` are accepted as parameters. ``requires`` lists the
    optional inputs the method cannot work without (``"controls"``, ``"fisher"``).
    """

    name: str
    fn: AggregatorFn
    description: str
    assumes: str
    reference: str
    defaults: dict = field(default_factory=dict)
    requires: tuple[str, ...] = ()


AGGREGATORS: dict[str, Aggregator] = {}

_KNOWN_REQUIREMENTS = ("controls", "fisher")


def register(agg: Aggregator) -> Aggregator:
    """Add ``agg`` to the registry; a name can be registered only once."""
    if not isinstance(agg, Aggregator):
        raise GoalscopeError(f"register expects an Aggregator, got {type(agg).__name__}")
    if not agg.name or not isinstance(agg.name, str):
        raise GoalscopeError(f"aggregator name must be a non-empty string, got {agg.name!r}")
    if not callable(agg.fn):
        raise GoalscopeError(f"aggregator {agg.name!r}: fn is not callable")
    unknown = [r for r in agg.requires if r not in _KNOWN_REQUIREMENTS]
    if unknown:
        raise GoalscopeError(f"aggregator {agg.name!r}: unknown requirement {unknown[0]!r} "
                             f"(known: {', '.join(_KNOWN_REQUIREMENTS)})")
    if agg.name in AGGREGATORS:
        raise GoalscopeError(f"aggregator {agg.name!r} is already registered")
    AGGREGATORS[agg.name] = agg
    return agg


def get(name: str) -> Aggregator:
    """The registered aggregator called ``name``."""
    try:
        return AGGREGATORS[name]
    except (KeyError, TypeError):
        raise GoalscopeError(
            f"unknown aggregator {name!r}; known: {', '.join(sorted(AGGREGATORS))}") from None


def aggregate(method: str, deltas: Sequence[Params], *, controls: Sequence[Params] = (),
              fisher: Optional[Params] = None, **params) -> Params:
    """Combine ``deltas`` into a non-negative heatmap with the registered aggregator ``method``.

    ``controls`` are drifts of MA fine-tuned on its own reward (pure continued-training drift); ``fisher`` is a
    diagonal Fisher of MA's policy (see :func:`fisher_diagonal`). Extra keyword arguments override the
    aggregator's defaults; any name it does not declare is an error.
    """
    agg = get(method)
    deltas = list(deltas)
    controls = list(controls)
    if not deltas:
        raise GoalscopeError(f"aggregator {method!r} needs at least one delta, got none")
    for i, d in enumerate(deltas[1:], start=1):
        check_compatible(deltas[0], d, "deltas[0]", f"deltas[{i}]")
    for i, c in enumerate(controls):
        check_compatible(deltas[0], c, "deltas[0]", f"controls[{i}]")
    if fisher is not None:
        check_compatible(deltas[0], fisher, "deltas[0]", "fisher")

    for name in params:
        if name not in agg.defaults:
            accepted = ", ".join(sorted(agg.defaults)) or "none"
            raise GoalscopeError(
                f"aggregator {method!r} has no parameter {name!r} (accepted: {accepted})")
    if "controls" in agg.requires and not controls:
        raise GoalscopeError(f"aggregator {method!r} needs controls: pass at least one control drift "
                             "(MA fine-tuned on its own reward, minus MA)")
    if "fisher" in agg.requires and fisher is None:
        raise GoalscopeError(f"aggregator {method!r} needs fisher: pass a diagonal Fisher "
                             "(see fisher_diagonal)")

    heatmap = agg.fn(deltas, controls, fisher, **{**agg.defaults, **params})

    # User aggregators are held to the same contract as the built-ins: same layout, finite, non-negative.
    if not isinstance(heatmap, dict):
        raise GoalscopeError(f"aggregator {method!r} returned {type(heatmap).__name__}, expected a dict")
    check_compatible(deltas[0], heatmap, "deltas[0]", f"output of aggregator {method!r}")
    out: Params = {}
    for key in deltas[0]:
        scores = heatmap[key].detach().to(torch.float32)
        if not torch.isfinite(scores).all():
            raise GoalscopeError(f"aggregator {method!r} returned non-finite scores for {key!r}")
        if (scores < 0).any():
            raise GoalscopeError(f"aggregator {method!r} returned negative scores for {key!r}")
        out[key] = scores
    return out


def per_rb_heatmaps(deltas: dict[str, Params]) -> dict[str, Params]:
    """|Δ_i| for each named signal separately, for per-reward heatmaps before any aggregation."""
    return {name: {k: v.detach().to(torch.float32).abs() for k, v in d.items()}
            for name, d in deltas.items()}


# --- built-in aggregators ---------------------------------------------------------------------------------


def _stack(signals: Sequence[Params], key: str) -> torch.Tensor:
    return torch.stack([s[key].detach().to(torch.float32) for s in signals])


def _mean(deltas, controls, fisher) -> Params:
    """|mean_i Δ_i|.

    Assumes: every RB moves the objective parameters the same way and nothing else is shared, so consistent
    changes survive averaging and noise cancels. Shared continued-training drift is *not* removed: when it is
    large it dominates the score. Reference: plain task-arithmetic averaging (Ilharco et al. 2023).
    """
    return {k: _stack(deltas, k).mean(0).abs() for k in deltas[0]}


def _median(deltas, controls, fisher) -> Params:
    """|elementwise median_i Δ_i| (average of the two middle values for an even count).

    Assumes: as ``mean`` but robust to a minority of outlying RBs. Reference: robust (median) model merging.
    """
    out = {}
    for k in deltas[0]:
        ordered = _stack(deltas, k).sort(dim=0).values
        n = ordered.shape[0]
        out[k] = ((ordered[(n - 1) // 2] + ordered[n // 2]) / 2).abs()
    return out


def _mean_abs(deltas, controls, fisher) -> Params:
    """mean_i |Δ_i|.

    Assumes: the objective parameters move a lot under any reward change, in any direction (signs may
    differ between RBs). Confounded by shared drift like ``mean``. Reference: magnitude-of-update saliency.
    """
    return {k: _stack(deltas, k).abs().mean(0) for k in deltas[0]}


def _ties(deltas, controls, fisher, *, density: float) -> Params:
    """TIES-merging: trim, elect sign, disjoint mean; score = |merged|.

    Each Δ_i is trimmed to its global top ``density`` fraction by magnitude; each parameter's sign is elected
    as the sign of the sum of trimmed values; the merged value is the mean over the trimmed entries that agree
    with it. Assumes: the objective lives in a sparse set of large updates whose sign mostly agrees across RBs;
    small updates are redundant noise. Reference: Yadav et al. 2023, "TIES-Merging: Resolving Interference
    When Merging Models" (NeurIPS).
    """
    if isinstance(density, bool) or not isinstance(density, (int, float)) or not 0 < density <= 1:
        raise GoalscopeError(f"ties: density must be in (0, 1], got {density!r}")
    keeps = [topk_mask({k: v.detach().abs() for k, v in d.items()}, density) for d in deltas]
    out = {}
    for k in deltas[0]:
        trimmed = _stack(deltas, k) * _stack(keeps, k)
        elected = torch.sign(trimmed.sum(0))
        # Trimmed (zero) entries have sign 0, so they never count towards the disjoint mean.
        agree = torch.sign(trimmed) == elected
        count = agree.sum(0).clamp(min=1)
        out[k] = ((trimmed * agree).sum(0) / count).abs()
    return out


def _pca_split(deltas: Sequence[Params], n_shared: int):
    """Flattened Δs (k×P), the top ``n_shared`` right-singular directions, and the singular values."""
    if isinstance(n_shared, bool) or not isinstance(n_shared, int) or n_shared < 1:
        raise GoalscopeError(f"pca: n_shared must be an integer >= 1, got {n_shared!r}")
    k = len(deltas)
    if k < 2:
        raise GoalscopeError(f"pca needs at least 2 signals, got {k}: removing the shared direction of a "
                             "single signal leaves nothing")
    if n_shared >= k:
        raise GoalscopeError(f"pca: n_shared must be smaller than the number of signals ({k}), "
                             f"got {n_shared}: removing {n_shared} directions from {k} signals leaves nothing")
    x = torch.stack([flatten({key: d[key].detach().to(torch.float32) for key in d}) for d in deltas])
    # Uncentred on purpose: a drift shared by all signals is their common mean, i.e. the top direction.
    _, s, vh = torch.linalg.svd(x, full_matrices=False)
    return x, vh[:n_shared], s


def _pca(deltas, controls, fisher, *, n_shared: int) -> Params:
    """RMS over i of the residual Δ_i after projecting out the top ``n_shared`` shared directions.

    Assumes: what all RBs have in common (continued-training drift, optimiser effects) spans a few dominant
    directions, while the reward-specific part of each Δ_i is roughly orthogonal to them. Needs >= 2 signals.
    Reference: low-rank confound removal on task vectors, cf. Gargiulo et al. 2025, "Task Singular Vectors:
    Reducing Task Interference in Model Merging" (CVPR).
    """
    x, shared, _ = _pca_split(deltas, n_shared)
    residual = x - (x @ shared.T) @ shared
    score = residual.square().mean(0).sqrt()
    return unflatten(score, deltas[0])


def shared_component(deltas: Sequence[Params], n_shared: int = 1) -> tuple[Params, float]:
    """The shared part that ``pca`` removes, and the fraction of total variance it explains.

    Returns (mean over i of Δ_i projected onto the top ``n_shared`` directions, explained variance ratio).
    """
    deltas = list(deltas)
    for i, d in enumerate(deltas[1:], start=1):
        check_compatible(deltas[0], d, "deltas[0]", f"deltas[{i}]")
    x, shared, s = _pca_split(deltas, n_shared)
    projected = ((x @ shared.T) @ shared).mean(0)
    total = float(s.double().square().sum())
    ratio = float(s[:n_shared].double().square().sum()) / total if total > 0 else math.nan
    return unflatten(projected, deltas[0]), ratio


def _control_subtracted(deltas, controls, fisher) -> Params:
    """mean_i |Δ_i − mean_c control_c|.

    Assumes: continued-training drift is the same whatever the reward, so the mean of the controls (MA
    fine-tuned on RA itself) estimates the part of each Δ_i that has nothing to do with the reward change.
    Needs >= 1 control. Reference: subtracting a matched control run (same procedure, reward unchanged).
    """
    out = {}
    for k in deltas[0]:
        drift = _stack(controls, k).mean(0)
        out[k] = (_stack(deltas, k) - drift).abs().mean(0)
    return out


def _fisher(deltas, controls, fisher) -> Params:
    """mean_i F ⊙ Δ_i²: second-order estimate of the policy KL change each parameter's update causes.

    Assumes: the policy is near-stationary at MA so KL(π_MA ‖ π_MA+Δ) ≈ ½ Δᵀ F Δ, and the diagonal of F is a
    fair proxy for it; a parameter matters for behaviour in proportion to its share. Needs fisher. Reference:
    Fisher-weighted averaging (Matena & Raffel 2022); EWC (Kirkpatrick et al. 2017).
    """
    out = {}
    for k in deltas[0]:
        f = fisher[k].detach().to(torch.float32)
        if (f < 0).any() or not torch.isfinite(f).all():
            raise GoalscopeError(f"fisher: entries for {k!r} must be finite and non-negative")
        out[k] = (f * _stack(deltas, k).square()).mean(0)
    return out


def _spread(deltas, controls, fisher) -> Params:
    """mean_i |Δ_i − mean_j Δ_j|: how much each parameter's update differs between RBs.

    Assumes: the objective is what *differs* between rewards, while everything every fine-tune does alike
    (continued-training drift, re-tuning of the value scale, optimiser effects) is shared and cancels in the
    deviation from the mean signal. Unlike ``control_subtracted`` it needs no control run: the RBs are each
    other's control. Needs >= 2 signals (with one, every deviation is zero). Reference: between-condition
    dispersion, the numerator of a one-way ANOVA.
    """
    if len(deltas) < 2:
        raise GoalscopeError(f"spread needs at least 2 signals, got {len(deltas)}: one signal has no spread")
    out = {}
    for k in deltas[0]:
        x = _stack(deltas, k)
        out[k] = (x - x.mean(0)).abs().mean(0)
    return out


def _group_indices(groups, n: int) -> list[list[int]]:
    """Indices of the signals of each RB, from one label per signal; every RB needs >= 2 fine-tune seeds."""
    if groups is None:
        raise GoalscopeError("variance_ratio needs groups: one RB label per signal, from several fine-tune seeds "
                             "per RB (nested fine-tune seeds); without them within-RB variance cannot be measured")
    groups = list(groups)
    if len(groups) != n:
        raise GoalscopeError(f"variance_ratio: groups has {len(groups)} labels for {n} signals")
    by_rb: dict = {}
    for i, g in enumerate(groups):
        by_rb.setdefault(g, []).append(i)
    if len(by_rb) < 2:
        raise GoalscopeError(f"variance_ratio needs signals from at least 2 RBs, got {len(by_rb)}")
    thin = [g for g, idx in by_rb.items() if len(idx) < 2]
    if thin:
        raise GoalscopeError(f"variance_ratio needs >= 2 fine-tune seeds per RB (nested fine-tune seeds); "
                             f"RB {thin[0]!r} has one signal")
    return list(by_rb.values())


def _variance_ratio(deltas, controls, fisher, *, groups) -> Params:
    """Between-RB variance of the per-RB mean Δ over the within-RB variance across fine-tune seeds.

    A one-way ANOVA F statistic per parameter: large where updates differ by reward more than they differ by
    fine-tune seed. The within-RB variance is floored at its median over all parameters (the fudge constant of
    SAM, Tusher et al. 2001), so parameters that barely move in any run cannot win by dividing by ~0.
    Assumes: fine-tune seeds share MA, so per-parameter comparisons are meaningful; needs ``groups`` (one RB
    label per signal) with >= 2 RBs and >= 2 signals per RB. Reference: one-way ANOVA; SAM (Tusher et al. 2001).
    """
    idx = _group_indices(groups, len(deltas))
    flat = torch.stack([flatten({key: d[key].detach().to(torch.float32) for key in d}) for d in deltas])
    means = torch.stack([flat[i].mean(0) for i in idx])
    between = means.var(0, unbiased=True)
    within = torch.stack([flat[i].var(0, unbiased=True) for i in idx]).mean(0)
    floor = within.median()
    score = between / (within + floor) if floor > 0 else between
    return unflatten(score, deltas[0])


# --- registration of the built-ins ------------------------------------------------------------------------

for _agg in (
    Aggregator("mean", _mean, "|mean_i Δ_i|",
               assumes="consistent updates across RBs; shared drift is not removed",
               reference="task arithmetic (Ilharco et al. 2023)"),
    Aggregator("median", _median, "|elementwise median_i Δ_i|",
               assumes="consistent updates across most RBs; robust to outlying RBs",
               reference="robust median merging"),
    Aggregator("mean_abs", _mean_abs, "mean_i |Δ_i|",
               assumes="objective parameters move a lot under any reward change, signs may differ",
               reference="update-magnitude saliency"),
    Aggregator("ties", _ties, "TIES-merging: trim to top density, elect sign, disjoint mean; |merged|",
               assumes="sparse, large, sign-consistent updates carry the objective",
               reference="Yadav et al. 2023, TIES-Merging (NeurIPS)",
               defaults={"density": 0.2}),
    Aggregator("pca", _pca, "RMS of Δ_i after removing the top n_shared singular directions",
               assumes="shared drift spans a few dominant directions; reward-specific parts are orthogonal",
               reference="low-rank confound removal; cf. Gargiulo et al. 2025 (Task Singular Vectors)",
               defaults={"n_shared": 1}),
    Aggregator("control_subtracted", _control_subtracted, "mean_i |Δ_i − mean_c control_c|",
               assumes="continued-training drift is reward-independent and estimated by the controls",
               reference="matched control runs (same fine-tuning, reward unchanged)",
               requires=("controls",)),
    Aggregator("fisher", _fisher, "mean_i F ⊙ Δ_i² (second-order KL change per parameter)",
               assumes="diagonal Fisher of MA's policy approximates the KL curvature",
               reference="Fisher merging (Matena & Raffel 2022); EWC (Kirkpatrick et al. 2017)",
               requires=("fisher",)),
    Aggregator("spread", _spread, "mean_i |Δ_i − mean_j Δ_j| (what differs between RBs)",
               assumes="the objective differs between RBs; what every fine-tune does alike cancels",
               reference="between-condition dispersion (one-way ANOVA numerator)"),
    Aggregator("variance_ratio", _variance_ratio,
               "between-RB variance / within-RB variance over fine-tune seeds (floored F statistic)",
               assumes="several fine-tune seeds per RB from one MA; reward-specific change exceeds seed noise",
               reference="one-way ANOVA; SAM fudge constant (Tusher et al. 2001)",
               defaults={"groups": None}),
):
    register(_agg)
del _agg
