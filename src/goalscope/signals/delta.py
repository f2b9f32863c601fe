"""Update signals between checkpoints and the reductions used to read them.

A checkpoint is a state dict (``Params``): stable parameter names mapped to float tensors. The update signal
of a fine-tune is ``Δ = MB − MA`` per parameter; everything here is a pure function over such dicts, so the
same helpers serve signals, controls, heatmaps (non-negative scores) and masks alike.

Whenever a computation draws random numbers or concatenates tensors, keys are visited in sorted order, so
results do not depend on the insertion order of a state dict.

May import: goalscope.errors.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Optional

import numpy as np
import torch

from goalscope.errors import GoalscopeError

Params = dict[str, torch.Tensor]

__all__ = [
    "Params",
    "add_masked",
    "check_compatible",
    "cosine_matrix",
    "cosine_matrix_per_tensor",
    "flatten",
    "jaccard",
    "jaccard_chance",
    "jaccard_chance_stratified",
    "negate",
    "per_layer",
    "per_tensor",
    "per_unit",
    "random_direction_like",
    "random_scores_like",
    "relative_to_control",
    "tensor_enrichment",
    "topk_mask",
    "unflatten",
    "update_signal",
]


def check_compatible(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor],
                     what_a: str = "MA", what_b: str = "MB") -> None:
    """Raise GoalscopeError unless ``a`` and ``b`` have the same keys with the same shapes."""
    missing_in_b = sorted(set(a) - set(b))
    if missing_in_b:
        raise GoalscopeError(f"parameter {missing_in_b[0]!r} is in {what_a} but not in {what_b}")
    missing_in_a = sorted(set(b) - set(a))
    if missing_in_a:
        raise GoalscopeError(f"parameter {missing_in_a[0]!r} is in {what_b} but not in {what_a}")
    for key in sorted(a):
        if tuple(a[key].shape) != tuple(b[key].shape):
            raise GoalscopeError(
                f"parameter {key!r} has shape {tuple(a[key].shape)} in {what_a} "
                f"but {tuple(b[key].shape)} in {what_b}")


def _f32(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(torch.float32)


def update_signal(ma: Params, mb: Params) -> Params:
    """``MB − MA`` per parameter, as fresh float32 tensors detached from any graph."""
    check_compatible(ma, mb)
    return {k: _f32(mb[k]) - _f32(ma[k]) for k in ma}


def negate(ma: Params, delta: Params, alpha: float) -> Params:
    """``MA − alpha·Δ``: step against an update (alpha=1 applied to Δ = MB − MA gives 2·MA − MB)."""
    check_compatible(ma, delta, "MA", "delta")
    return {k: _f32(ma[k]) - alpha * _f32(delta[k]) for k in ma}


def add_masked(ma: Params, delta: Params, mask: Params) -> Params:
    """``MA + mask ⊙ Δ``: graft only the masked part of an update (mask may be bool or float weights)."""
    check_compatible(ma, delta, "MA", "delta")
    check_compatible(ma, mask, "MA", "mask")
    return {k: _f32(ma[k]) + _f32(mask[k]) * _f32(delta[k]) for k in ma}


def random_direction_like(delta: Params, generator: torch.Generator) -> Params:
    """A Gaussian direction with the same per-tensor L2 norm as ``delta``.

    This is the control for negation/grafting: it moves every tensor exactly as far as Δ does, so any
    difference in effect comes from the direction, not from the step size per layer.
    """
    out: Params = {}
    for key in sorted(delta):
        d = _f32(delta[key])
        noise = torch.randn(d.shape, generator=generator, dtype=torch.float32, device=d.device)
        noise_norm = noise.norm()
        # A zero-norm Δ (or an empty tensor) must stay zero rather than become 0/0.
        scale = d.norm() / noise_norm if noise_norm > 0 else torch.zeros((), device=d.device)
        out[key] = noise * scale
    return {k: out[k] for k in delta}


def random_scores_like(params: Params, generator: torch.Generator) -> Params:
    """Uniform [0, 1) scores shaped like ``params``: the chance-level heatmap baseline."""
    out = {key: torch.rand(params[key].shape, generator=generator, dtype=torch.float32,
                           device=params[key].device)
           for key in sorted(params)}
    return {k: out[k] for k in params}


def flatten(params: Params) -> torch.Tensor:
    """Concatenate all tensors (keys in sorted order) into one 1-D vector, keeping their dtype."""
    if not params:
        return torch.zeros(0, dtype=torch.float32)
    return torch.cat([params[k].detach().reshape(-1) for k in sorted(params)])


def unflatten(vec: torch.Tensor, like: Params) -> Params:
    """Inverse of :func:`flatten`: cut ``vec`` into tensors shaped like ``like`` (same key order as ``like``)."""
    total = sum(t.numel() for t in like.values())
    if vec.dim() != 1 or vec.numel() != total:
        raise GoalscopeError(
            f"cannot unflatten a vector of shape {tuple(vec.shape)} into parameters with {total} elements")
    out: Params = {}
    offset = 0
    for key in sorted(like):
        n = like[key].numel()
        out[key] = vec[offset:offset + n].reshape(like[key].shape).clone()
        offset += n
    return {k: out[k] for k in like}


# --- reductions to tidy records -------------------------------------------------------------------------


def _l2(t: torch.Tensor) -> float:
    # float64 so that norms of large tensors do not lose precision in the sum of squares.
    return float(t.detach().double().norm())


def per_tensor(delta: Params, reference: Optional[Params] = None) -> list[dict]:
    """One row per tensor: size, L2, mean and max magnitude, and ‖Δ‖/‖reference‖ when a reference is given."""
    if reference is not None:
        check_compatible(delta, reference, "delta", "reference")
    rows = []
    for key, d in delta.items():
        d = d.detach().double()
        empty = d.numel() == 0
        l2 = float(d.norm())
        if reference is None:
            rel = math.nan
        else:
            ref_l2 = _l2(reference[key])
            rel = l2 / ref_l2 if ref_l2 > 0 else (math.nan if l2 == 0 else math.inf)
        rows.append({
            "param": key,
            "numel": d.numel(),
            "l2": l2,
            "mean_abs": math.nan if empty else float(d.abs().mean()),
            "max_abs": math.nan if empty else float(d.abs().max()),
            "rel_l2": rel,
        })
    return rows


def per_unit(delta: Params) -> list[dict]:
    """One row per output unit (index along dim 0: Linear output unit, conv output channel, bias element)."""
    rows = []
    for key, d in delta.items():
        d = d.detach().double()
        # A 0-d tensor is a single unit; everything else is split along its first dimension.
        units = d.reshape(1, -1) if d.dim() == 0 else d.reshape(d.shape[0], -1)
        l2 = units.norm(dim=1).tolist()
        mean_abs = units.abs().mean(dim=1).tolist() if units.shape[1] > 0 else [math.nan] * units.shape[0]
        rows.extend({"param": key, "unit": i, "l2": l2[i], "mean_abs": mean_abs[i]}
                    for i in range(units.shape[0]))
    return rows


def _layer_name(param: str) -> str:
    return param.rsplit(".", 1)[0] if "." in param else param


def per_layer(delta: Params) -> list[dict]:
    """One row per module (parameter name up to its last '.'), pooling weight, bias, ... of that module."""
    totals: dict[str, list[float]] = {}  # layer -> [numel, sum of squares, sum of |x|]
    for key, d in delta.items():
        d = d.detach().double()
        acc = totals.setdefault(_layer_name(key), [0, 0.0, 0.0])
        acc[0] += d.numel()
        acc[1] += float(d.square().sum())
        acc[2] += float(d.abs().sum())
    return [{"layer": layer, "numel": int(n), "l2": math.sqrt(sq),
             "mean_abs": s / n if n else math.nan}
            for layer, (n, sq, s) in totals.items()]


def relative_to_control(delta: Params, control_drifts: list[Params]) -> list[dict]:
    """Per tensor, ‖Δ‖ divided by the mean ‖control drift‖: how far above pure continued-training drift it moved.

    A ratio near 1 means the reward change moved that tensor no more than retraining on the same reward did.
    """
    if not control_drifts:
        raise GoalscopeError("relative_to_control needs at least one control drift")
    for i, c in enumerate(control_drifts):
        check_compatible(delta, c, "delta", f"control_drifts[{i}]")
    rows = []
    for key, d in delta.items():
        l2 = _l2(d)
        control_l2 = sum(_l2(c[key]) for c in control_drifts) / len(control_drifts)
        ratio = l2 / control_l2 if control_l2 > 0 else (math.nan if l2 == 0 else math.inf)
        rows.append({"param": key, "l2": l2, "control_l2": control_l2, "ratio": ratio})
    return rows


def _check_all_compatible(signals: Mapping[str, Params]) -> list[str]:
    names = list(signals)
    for name in names[1:]:
        check_compatible(signals[names[0]], signals[name], names[0], name)
    return names


def _cosine_rows(matrix: torch.Tensor) -> np.ndarray:
    # Rows with zero norm have no direction; their cosines are NaN rather than a misleading 0.
    norms = matrix.norm(dim=1, keepdim=True)
    unit = matrix / norms
    return (unit @ unit.T).clamp(-1.0, 1.0).numpy()


def cosine_matrix(signals: dict[str, Params]) -> tuple[list[str], np.ndarray]:
    """Pairwise cosine similarity of whole flattened signals; returns (names, k×k matrix) in input order."""
    names = _check_all_compatible(signals)
    if not names:
        return [], np.zeros((0, 0))
    matrix = torch.stack([flatten(signals[n]).double() for n in names])
    return names, _cosine_rows(matrix)


def cosine_matrix_per_tensor(signals: dict[str, Params]) -> tuple[list[str], dict[str, np.ndarray]]:
    """Like :func:`cosine_matrix` but separately per parameter tensor: (names, {param: k×k matrix})."""
    names = _check_all_compatible(signals)
    if not names:
        return [], {}
    first = signals[names[0]]
    return names, {key: _cosine_rows(torch.stack([signals[n][key].detach().double().reshape(-1)
                                                  for n in names]))
                   for key in first}


def topk_mask(scores: Params, fraction: float) -> Params:
    """Bool masks selecting the global top ``fraction`` of all parameters by score, ranked across all tensors.

    Exactly ``max(1, round(fraction · P))`` entries are selected. Ties are broken by position in the
    flattened order (sorted keys, then row-major), so the result is deterministic.
    """
    if not isinstance(fraction, (int, float)) or not 0.0 < fraction <= 1.0:
        raise GoalscopeError(f"fraction must be in (0, 1], got {fraction!r}")
    for key in sorted(scores):
        if torch.isnan(scores[key]).any():
            raise GoalscopeError(f"scores for parameter {key!r} contain NaN")
    flat = flatten(scores)
    total = flat.numel()
    mask = torch.zeros(total, dtype=torch.bool, device=flat.device)
    if total:
        k = min(total, max(1, round(fraction * total)))
        order = torch.sort(flat, descending=True, stable=True).indices
        mask[order[:k]] = True
    return unflatten(mask, scores)


def jaccard(a: torch.Tensor, b: torch.Tensor) -> float:
    """Overlap of two boolean masks (intersection over union); NaN when both are empty."""
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else math.nan


def jaccard_chance(fraction: float) -> float:
    """Expected Jaccard of two independent random top-``fraction`` sets: f² / (2f − f²) = f / (2 − f)."""
    return fraction / (2 - fraction)


def jaccard_chance_stratified(a: Params, b: Params, n_perm: int = 20, seed: int = 0,
                              strata: dict[str, torch.Tensor] | None = None) -> float:
    """Chance Jaccard of two masks when each keeps its count of selected entries *per tensor* but places them at
    random inside the tensor (a permutation within each tensor, averaged over ``n_perm`` draws).

    The whole-network chance f/(2-f) ignores that top-k sets pile into a few tensors; two masks that merely favour
    the same tensors overlap far above it. Shuffling b within a tensor makes its overlap with a hypergeometric
    (drawn here directly, which is the same distribution as shuffling and far cheaper).

    ``strata``: tensor name -> an integer label per entry (shaped like the tensor), e.g. the input plane each
    first-layer weight reads (:func:`goalscope.signals.planes.first_layer`). Entries are then placed at random only
    among those of the same (tensor, label): two masks that merely favour the same input plane overlap far above the
    tensor-stratified level, and only an overlap above this one says more than "they read the same plane"."""
    check_compatible(a, b, "a", "b")
    rng = np.random.default_rng(seed)
    inter = np.zeros(n_perm)
    n_a = n_b = 0
    for key in sorted(a):
        x, y = a[key].reshape(-1).bool(), b[key].reshape(-1).bool()
        if strata is not None and key in strata:
            labels = strata[key].reshape(-1)
            groups = [(x[labels == g], y[labels == g]) for g in torch.unique(labels).tolist()]
        else:
            groups = [(x, y)]
        for gx, gy in groups:
            n, ka, kb = gx.numel(), int(gx.sum()), int(gy.sum())
            n_a, n_b = n_a + ka, n_b + kb
            if ka and kb:
                inter += rng.hypergeometric(ka, n - ka, kb, size=n_perm)
    union = n_a + n_b - inter
    return float(np.mean(np.where(union > 0, inter / np.maximum(union, 1), np.nan))) if n_a + n_b else math.nan


def tensor_enrichment(mask: Params) -> np.ndarray:
    """Per tensor (sorted keys): its share of the selected entries over its share of the parameters. A summary that
    can be compared between independently initialised networks, whose individual units do not line up."""
    keys = sorted(mask)
    sel = np.array([float(mask[k].sum()) for k in keys])
    size = np.array([float(mask[k].numel()) for k in keys])
    total_sel, total = sel.sum(), size.sum()
    return (sel / total_sel) / (size / total) if total_sel > 0 else np.full(len(keys), np.nan)
