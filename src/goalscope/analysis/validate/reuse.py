"""Exact reuse of model evaluations inside validation: the same weights are evaluated once.

An evaluation (:func:`goalscope.rl.evaluation.evaluate` on validation's fixed, seeded episodes) is a pure function
of the weights: the envs and the sampling generator are seeded afresh for every call. So a model whose weights were
evaluated before gets that evaluation's profile back, bit for bit, instead of a second run. Where it pays:

- **MA once per seed**: validate evaluates each MA once in its own process (which also times the plan's
  calibration) and hands the profile to every task of that seed, instead of once per (seed, RB) task and again per
  held-out-curve task;
- **identical masks**: two rankings whose top-k% select the same parameters graft the same model (with 2 held-out
  RBs ``mean`` and ``median`` are one heatmap; at n = 1 a held-out ``mean_abs`` is another RB's |Δ_j|);
- **across a (seed, RB)'s two tasks**: the held-out-curve task gets the profiles its graft task measured (MB and
  every graft), so a model graded in both is evaluated once.

The key is a hash of every tensor's name, dtype, shape and bytes (:func:`state_digest`); equal keys are equal
weights. ``benchmarks/validate_reuse.py`` measures the saving; ``tests/test_validate_plan.py`` checks that a
scorecard is byte-identical with and without reuse.

May import: goalscope.rl, torch.
"""

from __future__ import annotations

import hashlib

import torch


def state_digest(state: dict) -> str:
    """A hash of a state dict's names, dtypes, shapes and values (sorted by name): equal digests, equal weights."""
    h = hashlib.blake2b(digest_size=20)
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(state[name].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class Evaluations:
    """``state -> Profile`` through ``evaluate``, counted; with ``reuse``, answered from the profiles of weights
    already evaluated (``known``: digest -> Profile, e.g. MA's from the main process) without running again."""

    def __init__(self, evaluate, reuse: bool = False, known: dict | None = None):
        self._evaluate = evaluate
        self.reuse = reuse
        self.profiles: dict = dict(known or {}) if reuse else {}
        self.requested = 0  # calls, as the plan counts them
        self.run = 0  # evaluations actually made

    def __call__(self, state: dict):
        self.requested += 1
        if not self.reuse:
            self.run += 1
            return self._evaluate(state)
        key = state_digest(state)
        if key not in self.profiles:
            self.run += 1
            self.profiles[key] = self._evaluate(state)
        return self.profiles[key]

    def counts(self) -> dict:
        return {"requested": self.requested, "run": self.run}


def model_evaluator(model: torch.nn.Module, env, reward, episodes: int, eval_seed: int, task: dict) -> Evaluations:
    """A task's evaluator: ``model`` carrying a state, on validation's paired episodes; reuse (and the profiles
    handed in) as ``task["reuse"]`` and ``task["profiles"]`` say (off when absent: a task built by hand evaluates
    everything, as before)."""
    from goalscope.rl.evaluation import evaluate

    def evaluate_state(state):
        model.load_state_dict(state)
        return evaluate(model, env, reward, episodes, eval_seed)

    return Evaluations(evaluate_state, bool(task.get("reuse")), task.get("profiles"))
