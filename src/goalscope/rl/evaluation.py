"""Behaviour profiles: what an agent *does*, recorded so it can be scored under any reward afterwards.

A profile holds, per evaluation episode, how many objects of each type the agent collected and how many steps it
took. The return under any reward is then a dot product, so "does MB* lean towards minimising RB?" is answered
from the same episodes as "how well does it still do RA?".

Evaluation episodes are paired: with the same config and seed, episode ``e`` starts from the same maze, objects
and agent position whatever the policy, so differences between models are not sampling noise in the mazes
(common random numbers). They run the full ``max_steps`` (no early end when the rewarded objects are gone) so
the counts of every type are comparable across rewards.

May import: goalscope.envs, goalscope.errors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from goalscope.envs.oracle import oracle_actions
from goalscope.envs.rewards import Reward
from goalscope.errors import ConfigError

Policy = Callable[[np.ndarray, object], np.ndarray]  # (observations, the vec env) -> actions


@dataclass(frozen=True)
class Profile:
    """Per-episode objects collected per type and steps; the return under any reward is a dot product
    (:meth:`returns`)."""
    counts: np.ndarray  # (episodes, n_types) objects collected per type
    steps: np.ndarray  # (episodes,)
    env_returns: np.ndarray | None = None  # returns under the reward the episodes ran with (needed for cued rewards)

    def returns(self, reward: Reward) -> np.ndarray:
        if reward.cued:  # what a cued reward paid depends on each episode's cue, so only the env knows
            if self.env_returns is None:
                raise ConfigError(f"a profile without recorded returns cannot be scored under {reward.name!r}")
            return self.env_returns
        return reward.score(self.counts, self.steps)

    def mean_counts(self) -> np.ndarray:
        return self.counts.mean(axis=0)

    def to_json(self) -> dict:
        return {"counts": self.counts.tolist(), "steps": self.steps.tolist()}

    @staticmethod
    def from_json(d: dict) -> "Profile":
        return Profile(np.asarray(d["counts"], dtype=np.int64), np.asarray(d["steps"], dtype=np.int64))


def run_episodes(policy: Policy, cfg, reward: Reward, n_episodes: int, seed: int) -> Profile:
    """One episode in each of ``n_episodes`` parallel envs; later episodes of an env are ignored."""
    env = cfg.eval_config().make(reward, n_episodes, seed=seed)
    try:
        obs = env.reset(seed)
        counts = np.zeros((n_episodes, cfg.n_types), dtype=np.int64)
        steps = np.zeros(n_episodes, dtype=np.int64)
        returns = np.zeros(n_episodes)
        finished = np.zeros(n_episodes, dtype=bool)
        for _ in range(cfg.max_steps):  # every env ends its first episode by truncation at max_steps at the latest
            obs, _, _, _, info = env.step(policy(obs, env))
            if info:
                first = ~finished[info["done_idx"]]
                idx = info["done_idx"][first]
                counts[idx], steps[idx], returns[idx] = info["counts"][first], info["steps"][first], info["returns"][first]
                finished[idx] = True
    finally:  # an env may hold worker processes (env.processes)
        getattr(env, "close", lambda: None)()
    if not finished.all():
        raise ConfigError(f"{int((~finished).sum())} evaluation episodes did not end within env.max_steps = "
                          f"{cfg.max_steps}; the env's own step limit must not exceed it")
    return Profile(counts, steps, returns)


def oracle_policy(obs: np.ndarray, env) -> np.ndarray:
    """The shortest-path oracle's actions for every env of a vectorised maze."""
    return oracle_actions(env)


def model_policy(model: torch.nn.Module, seed: int = 0, greedy: bool = False) -> Policy:
    """Sample (or take the argmax of) the model's action distribution, with its own seeded generator."""
    gen = torch.Generator().manual_seed(seed)  # on the CPU wherever the model runs: the same draws on any device
    device = next(model.parameters(), torch.empty(0)).device  # a model without parameters runs on the CPU

    @torch.inference_mode()
    def act(obs: np.ndarray, env) -> np.ndarray:
        logits = model(torch.from_numpy(obs).to(device))[0].float().cpu()
        if greedy:
            return logits.argmax(-1).numpy()
        return torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(-1).numpy()

    return act


def evaluate(model: torch.nn.Module, cfg, reward: Reward, n_episodes: int = 256, seed: int = 10_000) -> Profile:
    """Behaviour profile of ``model`` over ``n_episodes`` seeded evaluation episodes (sampled actions)."""
    was_training = model.training
    model.eval()
    try:
        return run_episodes(model_policy(model, seed), cfg, reward, n_episodes, seed)
    finally:
        model.train(was_training)


def oracle_profile(cfg, reward: Reward, n_episodes: int = 256, seed: int = 10_000) -> Profile | None:
    """The oracle's profile on the same episodes, or None for env families without an oracle."""
    if not cfg.has_oracle:
        return None
    return run_episodes(oracle_policy, cfg, reward, n_episodes, seed)


def summarise(profile: Profile, reward: Reward, oracle: Profile | None = None) -> dict:
    """Mean return under ``reward`` (with a standard error), mean objects per type, and fraction of the oracle."""
    r = profile.returns(reward)
    out = {
        "reward": reward.name,
        "episodes": len(r),
        "return_mean": float(r.mean()),
        "return_sem": float(r.std(ddof=1) / np.sqrt(len(r))) if len(r) > 1 else float("nan"),
        "counts_mean": profile.mean_counts().round(3).tolist(),
        "steps_mean": float(profile.steps.mean()),
    }
    # Envs without an oracle report NaN here rather than leaving the keys out.
    o = float(oracle.returns(reward).mean()) if oracle is not None else float("nan")
    out["oracle_return"] = o
    out["fraction_of_oracle"] = float(r.mean() / o) if abs(o) > 1e-9 else float("nan")
    return out
