"""Crafter through goalscope: env steps per second against Crafter's own single-process step rate, in one run.

Measures, with the env settings of ``--experiment`` (default experiments/crafter.toml: 64x64 frames, episodes of
256 steps, so world generation at every reset counts as it does in training):

  * ``crafter``: Crafter's own API in one process (``crafter.Env.step``), uniformly random actions, resets
    included: the baseline the issue names;
  * ``wrapper``: the same through goalscope's event env (``GymEventsVecEnv``: Gymnasium wrapper, event counts,
    reward), ``n_envs`` envs in this process and in ``env.processes`` worker processes;
  * ``training``: PPO with the experiment's agent and settings (no evaluation), envs in this process and in worker
    processes: what a goalscope job runs at.

Ratios are to ``crafter``; the issue's goal is that the wrapper and trainer cost at most 25% over the env itself on
2 cores (training >= 0.8x). Needs ``pip install 'goalscope[crafter]'``.

Run:  .venv/bin/python benchmarks/crafter_throughput.py                       (about 3 minutes on 2 cores)
      .venv/bin/python benchmarks/crafter_throughput.py --train-steps 8192 --seconds 10
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import time

import numpy as np
import torch

from goalscope.envs.crafter import ACHIEVEMENTS
from goalscope.envs.rewards import parse_reward, type_names
from goalscope.program.config import load_experiment
from goalscope.rl.ppo import PPOConfig, train
from goalscope.agents.registry import build_agent


def crafter_native(kwargs: dict, seconds: float, seed: int = 0) -> float:
    """Steps/s of ``crafter.Env`` itself, random actions, resetting when an episode ends."""
    import crafter

    env = crafter.Env(area=tuple(kwargs.get("area", (64, 64))), size=tuple(kwargs.get("size", (64, 64))),
                      length=kwargs.get("length", 10000), seed=seed)
    env.reset()
    rng = np.random.default_rng(seed)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for a in rng.integers(env.action_space.n, size=64):
            if env.step(int(a))[2]:
                env.reset()
        steps += 64
    return steps / (time.perf_counter() - start)


def wrapper(env_cfg, reward, n_envs: int, seconds: float, seed: int = 0) -> float:
    """Steps/s of goalscope's event env over ``n_envs`` envs, random actions."""
    env = env_cfg.make(reward, n_envs, seed=seed)
    rng = np.random.default_rng(seed)
    try:
        steps, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            env.step(rng.integers(env_cfg.n_actions, size=n_envs))
            steps += n_envs
        return steps / (time.perf_counter() - start)
    finally:
        env.close()


def training(cfg, env_cfg, reward, steps: int, seed: int = 0) -> float:
    """Env steps/s of PPO on the experiment's agent (no evaluation; env creation and worker start-up included)."""
    ppo = PPOConfig.from_json({**cfg.ppo, "total_steps": steps, "eval_every": 0, "eval_episodes": 1})
    torch.manual_seed(seed)
    model = build_agent(cfg.agent.arch, env_cfg.obs_shape, env_cfg.n_actions, cfg.agent.config)
    start = time.perf_counter()
    result = train(model, env_cfg, reward, ppo, seed)
    # the final evaluation is one episode of at most env.max_steps steps: left out of the steps, kept in the time
    return result.steps / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="experiments/crafter.toml")
    p.add_argument("--seconds", type=float, default=20.0, help="timing per env measurement")
    p.add_argument("--train-steps", type=int, default=16384, help="PPO steps per training measurement")
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg = load_experiment(args.experiment)
    env_cfg = cfg.env
    reward = parse_reward(cfg.base.reward, env_cfg.n_types, type_names(env_cfg))
    n = cfg.ppo.get("n_envs", 16)
    local = dataclasses.replace(env_cfg, processes=0)
    print(f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, {cfg.agent.arch}, "
          f"{n} envs, episodes of {env_cfg.kwargs.get('length')} steps, {len(ACHIEVEMENTS)} achievements in Crafter")
    base = crafter_native(env_cfg.kwargs, args.seconds)
    rows = [("crafter.Env, 1 process (baseline)", base)]
    rows.append(("wrapper, envs in this process", wrapper(local, reward, n, args.seconds)))
    rows.append((f"wrapper, envs in {env_cfg.processes} processes", wrapper(env_cfg, reward, n, args.seconds)))
    rows.append(("training, envs in this process", training(cfg, local, reward, args.train_steps)))
    rows.append((f"training, envs in {env_cfg.processes} processes", training(cfg, env_cfg, reward, args.train_steps)))
    print(f"| what | steps/s | vs crafter.Env |\n|---|---|---|")
    for name, rate in rows:
        print(f"| {name} | {rate:,.0f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
