"""What the env itself can tell before any training: how often a random policy makes each reward's events.

An RB whose events a random policy almost never makes (UnlockPickup's box: 0 in 200 episodes) gives an MB that
learns nothing, and the run's verdicts then describe noise; that used to show only in the report, after every job
had run. :func:`rare_event_warnings` measures the rates with a short random rollout and returns one line per
reward too rare to learn from at its budget; the runner logs them before the first job starts.

May import: goalscope.envs, goalscope.program.config.
"""

from __future__ import annotations

import time

import numpy as np

from goalscope.envs.rewards import Reward
from goalscope.program.config import ExperimentConfig

# Fewer events than this expected over a stage's budget at a random policy's rate: too rare to learn from. PPO
# needs the reward to happen before it can be reinforced, and an MB starts from MA, which has no reason to make an
# RB's events more often than chance.
RARE_EVENTS = 10
ROLLOUT_ENVS, ROLLOUT_STEPS = 16, 256  # 4,096 random steps: about 2 s on MiniGrid
ROLLOUT_SECONDS = 20.0  # or fewer, where a step costs milliseconds (Crafter: ~56 s for 4,096 on 2 busy cores)


def random_event_counts(env_cfg, n_envs: int = ROLLOUT_ENVS, steps: int = ROLLOUT_STEPS, seed: int = 0,
                        seconds: float = ROLLOUT_SECONDS):
    """Events of each type made by a uniformly random policy over ``n_envs * steps`` env steps, or as many as
    ``seconds`` allow (finished and unfinished episodes alike), and the number of steps taken."""
    env = env_cfg.make(Reward("random", (0.0,) * env_cfg.n_types), n_envs, seed=seed)
    rng = np.random.default_rng(seed)
    total = np.zeros(env_cfg.n_types, dtype=np.int64)
    deadline, done = time.monotonic() + seconds, 0
    try:
        while done < steps and (done == 0 or time.monotonic() < deadline):
            _, _, _, _, info = env.step(rng.integers(env_cfg.n_actions, size=n_envs))
            done += 1
            if info:
                total += info["counts"].sum(0)
        total += env.counts.sum(0)
    finally:
        getattr(env, "close", lambda: None)()
    return total, n_envs * done


def rare_event_warnings(cfg: ExperimentConfig, counts=None, n_steps: int | None = None) -> list[str]:
    """One line per reward (RA at ``base.steps``, each RB at ``finetune.steps``) whose rewarded events a random
    policy would make fewer than :data:`RARE_EVENTS` times over its budget; ``counts``/``n_steps`` from
    :func:`random_event_counts` (measured here if not given)."""
    if counts is None:
        counts, n_steps = random_event_counts(cfg.env)
    names = cfg.env.event_names if hasattr(cfg.env, "event_names") else None
    out = []
    for role, reward, steps, key in [("RA", cfg.ra, cfg.base.steps, "base.steps"),
                                     *(("RB", rb, cfg.finetune.steps, "finetune.steps") for rb in cfg.rbs())]:
        paid = np.flatnonzero(reward.vector() > 0)
        if not len(paid):
            continue  # only avoidances or a step cost: nothing has to happen for it to be learned
        seen = int(counts[paid].sum())
        expected = seen / n_steps * steps
        if expected >= RARE_EVENTS:
            continue
        what = ", ".join(names[k] if names else f"type {k}" for k in paid)
        model = "MA" if role == "RA" else "its MB"
        out.append(f"warning: {role} {reward.name}: a random policy made its events ({what}) {seen:,} times in "
                   f"{n_steps:,} steps, ~{expected:.1f} in {key} = {steps:,}: too rare to learn from (fewer than "
                   f"{RARE_EVENTS}), so {model} may learn nothing; raise {key} or reward an event that happens")
    return out
