"""Attribution of a behaviour change to parameters: integrated gradients along a straight path in weight space.

For a fine-tune MA -> MB, Δ = MB − MA says where the weights moved; attribution says which moves changed the
behaviour. With L(θ) = KL(π_MB ‖ π_θ), the mean over observations (MB's own states) of the KL from MB's policy to
θ's, integrated gradients along θ(t) = start + t·(end − start) give, per parameter,

    IG_p = (end − start)_p · mean over t of ∂L/∂θ_p (θ(t)),   t at the midpoints of ``steps`` equal intervals,

and by completeness Σ_p IG_p ≈ L(end) − L(start) (exact as steps → ∞; the midpoint rule errs as 1/steps²). With
start = MA and end = MB that sum is −KL(π_MB ‖ π_MA): the behaviour change, split over parameters. Starting from
the RA control instead removes what plain continued training wrote. |IG| is a heatmap like |Δ|, and the signed
IG maps are an alternative input to every aggregator (same keys and shapes as Δ). Pure functions of a model and
state dicts. May import: goalscope.signals.delta, goalscope.errors, torch.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch.func import functional_call

from goalscope.errors import GoalscopeError
from goalscope.signals.delta import Params, check_compatible

STEPS = 16  # points on the path: completeness to a few percent on the maze agents


def policy_kl(model: torch.nn.Module, params: Params, obs: torch.Tensor, target_log_probs: torch.Tensor,
              buffers: Optional[Params] = None) -> torch.Tensor:
    """Mean over ``obs`` of KL(target ‖ π_params): ``target_log_probs`` [B, A] are the target policy's log-probs."""
    logits, _ = functional_call(model, (params, buffers or {}), (obs,))
    log_p = torch.log_softmax(logits.to(torch.float32), -1)
    return (target_log_probs.exp() * (target_log_probs - log_p)).sum(-1).mean()


def integrated_gradients(model: torch.nn.Module, start: Params, end: Params, obs: torch.Tensor,
                         target: Optional[Params] = None, steps: int = STEPS,
                         chunk_size: int = 512) -> tuple[Params, dict]:
    """Integrated gradients of L(θ) = KL(π_target ‖ π_θ) on ``obs`` along start -> end (``target`` defaults to
    ``end``, so L(end) = 0). Returns ``(attributions, info)``: a signed attribution per parameter (float32, keys of
    ``model.named_parameters()``; entries of ``start`` that are not parameters are left out) and ``info`` with
    ``l_start``, ``l_end``, ``sum`` (Σ IG, ≈ l_end − l_start), ``steps`` and ``observations``."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise GoalscopeError(f"integrated_gradients: steps must be a positive integer, got {steps!r}")
    if obs.dim() < 1 or obs.shape[0] == 0:
        raise GoalscopeError(f"integrated_gradients: obs must be a non-empty batch, got shape {tuple(obs.shape)}")
    check_compatible(start, end, "start", "end")
    names = [k for k, _ in model.named_parameters()]
    missing = [k for k in names if k not in start]
    if missing:
        raise GoalscopeError(f"integrated_gradients: start has no entry for parameter {missing[0]!r}")
    target = end if target is None else target
    buffers = {k: v.detach() for k, v in model.named_buffers()}
    a = {k: start[k].detach().to(torch.float32) for k in names}
    delta = {k: end[k].detach().to(torch.float32) - a[k] for k in names}
    chunks = [obs[i:i + chunk_size] for i in range(0, obs.shape[0], chunk_size)]
    weights = [c.shape[0] / obs.shape[0] for c in chunks]
    with torch.no_grad():
        target_lp = [torch.log_softmax(functional_call(model, ({k: target[k].to(torch.float32) for k in names},
                                                                buffers), (c,))[0].to(torch.float32), -1)
                     for c in chunks]

    def loss_and_grad(theta: Params) -> tuple[float, Params]:
        theta = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
        total = 0.0
        grads = {k: torch.zeros_like(v) for k, v in theta.items()}
        for c, lp, w in zip(chunks, target_lp, weights):
            loss = policy_kl(model, theta, c, lp, buffers) * w
            g = torch.autograd.grad(loss, list(theta.values()), allow_unused=True)
            for k, gk in zip(theta, g):
                if gk is not None:
                    grads[k] += gk
            total += float(loss.detach())
        return total, grads

    mean_grad = {k: torch.zeros_like(v) for k, v in a.items()}
    for j in range(steps):
        t = (j + 0.5) / steps
        _, g = loss_and_grad({k: a[k] + t * delta[k] for k in names})
        for k in names:
            mean_grad[k] += g[k] / steps
    with torch.no_grad():
        l_start = sum(float(policy_kl(model, a, c, lp, buffers)) * w for c, lp, w in zip(chunks, target_lp, weights))
        l_end = sum(float(policy_kl(model, {k: a[k] + delta[k] for k in names}, c, lp, buffers)) * w
                    for c, lp, w in zip(chunks, target_lp, weights))
    attributions = {k: (delta[k] * mean_grad[k]).detach() for k in names}
    info = {"l_start": l_start, "l_end": l_end, "sum": float(sum(v.sum() for v in attributions.values())),
            "steps": steps, "observations": int(obs.shape[0])}
    return attributions, info


def attribution_heatmap(attributions: Params) -> Params:
    """|IG| per parameter: a non-negative heatmap with the keys and shapes of the attributions."""
    return {k: v.detach().to(torch.float32).abs() for k, v in attributions.items()}
