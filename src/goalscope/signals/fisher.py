"""The diagonal empirical Fisher of a policy: per-parameter sensitivity of log π(a|s), the weight of the ``fisher``
aggregator and one of the nulls validation compares heatmaps with. May import: goalscope.signals.delta,
goalscope.errors, torch.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch.func import functional_call, grad, vmap

from goalscope.errors import GoalscopeError
from goalscope.signals.delta import Params


def fisher_diagonal(model: torch.nn.Module, obs: torch.Tensor, n_samples: Optional[int] = None,
                    generator: Optional[torch.Generator] = None, *, actions: Optional[torch.Tensor] = None,
                    chunk_size: int = 256) -> Params:
    """Diagonal empirical Fisher of ``model``'s policy over observations ``obs``.

    ``model(obs)`` must return ``(logits [B, A], value [B])``. For each observation an action is sampled from
    π(·|s) (or taken from ``actions`` if given, e.g. the agent's own recorded actions) and the result is the
    mean over observations of (∂ log π(a|s) / ∂θ)². ``n_samples`` uses a random subset of that many
    observations (drawn with ``generator``). Keys are ``model.named_parameters()`` names.
    """
    if obs.dim() < 1 or obs.shape[0] == 0:
        raise GoalscopeError(f"fisher_diagonal: obs must be a non-empty batch, got shape {tuple(obs.shape)}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise GoalscopeError(f"fisher_diagonal: chunk_size must be a positive integer, got {chunk_size!r}")
    if actions is not None and tuple(actions.shape) != (obs.shape[0],):
        raise GoalscopeError(f"fisher_diagonal: actions must have shape ({obs.shape[0]},), "
                             f"got {tuple(actions.shape)}")
    if n_samples is not None:
        if isinstance(n_samples, bool) or not isinstance(n_samples, int) or not 1 <= n_samples <= obs.shape[0]:
            raise GoalscopeError(f"fisher_diagonal: n_samples must be an integer in [1, {obs.shape[0]}], "
                                 f"got {n_samples!r}")
        device = generator.device if generator is not None else torch.device("cpu")
        idx = torch.randperm(obs.shape[0], generator=generator, device=device)[:n_samples].to(obs.device)
        obs = obs[idx]
        actions = actions[idx] if actions is not None else None

    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    with torch.no_grad():
        logits, _ = model(obs)
    if logits.dim() != 2 or logits.shape[0] != obs.shape[0]:
        raise GoalscopeError(f"fisher_diagonal: model must return logits of shape [B, A], "
                             f"got {tuple(logits.shape)} for B={obs.shape[0]}")
    if actions is None:
        probs = torch.softmax(logits.to(torch.float32), dim=-1)
        actions = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
    elif actions.min() < 0 or actions.max() >= logits.shape[1]:
        raise GoalscopeError(f"fisher_diagonal: actions must lie in [0, {logits.shape[1]})")
    actions = actions.to(device=obs.device, dtype=torch.long)

    def log_prob(p: Params, single_obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        single_logits, _ = functional_call(model, (p, buffers), (single_obs.unsqueeze(0),))
        return torch.log_softmax(single_logits, dim=-1).gather(-1, action.reshape(1, 1)).squeeze()

    per_sample_grads = vmap(grad(log_prob), in_dims=(None, 0, 0))
    total = {k: torch.zeros_like(v, dtype=torch.float32) for k, v in params.items()}
    # Chunks bound the memory of per-sample gradients (chunk × P floats) on large batches.
    for start in range(0, obs.shape[0], chunk_size):
        grads = per_sample_grads(params, obs[start:start + chunk_size], actions[start:start + chunk_size])
        for k, g in grads.items():
            total[k] += g.to(torch.float32).square().sum(0)
    return {k: v / obs.shape[0] for k, v in total.items()}
