"""Craftax-Classic in JAX against Crafter's own env, and goalscope's trainer against the JAX env, in one run.

Measures at one batch size N (default 256), uniformly random actions, resets included (episodes of at most
``--max-steps`` steps, Craftax's and Crafter's default 10,000, so they end by death as in training):

  * ``craftax``: goalscope's Craftax-Classic batch (:class:`goalscope.envs.craftax.CraftaxVecEnv`: one jitted step
    for all N worlds, optimistic resets, achievements as events, observations to numpy through dlpack), Symbolic
    (and Pixels with ``--pixels``); compile time reported apart, not in the rate;
  * ``crafter``: Crafter's own ``crafter.Env`` (the Python game goalscope/Crafter-v0 wraps), N worlds stepped in
    turn in one process, resets included: the baseline (skipped where ``crafter`` is not installed);
  * ``training``: goalscope's PPO on the Craftax batch with an MLP (no evaluation), env steps per second over the
    whole run, the first compile excluded (the batch is built before the clock starts).

Ratios: craftax / crafter (issue 36's goal: >= 20x) and training / craftax (goal: >= 0.5x). Needs
``pip install 'goalscope[craftax]'``; ``goalscope[crafter]`` for the baseline.

Run:  python benchmarks/craftax_throughput.py                 (about 5 minutes on 2 cores, first compile included)
      python benchmarks/craftax_throughput.py --n-envs 64 --seconds 10 --train-steps 32768 --pixels
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
import torch

from goalscope.agents.registry import build_agent
from goalscope.envs.craftax import PIXELS_ID, SYMBOLIC_ID, CraftaxConfig
from goalscope.envs.rewards import parse_reward
from goalscope.rl.ppo import PPOConfig, train


def craftax_rate(cfg: CraftaxConfig, n: int, seconds: float, seed: int = 0) -> tuple[float, float, int]:
    """(steps/s, seconds to build and compile the batch, episodes ended) of goalscope's Craftax batch."""
    reward = parse_reward("collect:collect_wood", cfg.n_types, cfg.event_names)
    start = time.perf_counter()
    env = cfg.make(reward, n, seed=seed)
    rng = np.random.default_rng(seed)
    env.step(rng.integers(cfg.n_actions, size=n))  # compiles the step
    compile_s = time.perf_counter() - start
    steps, ended, start = 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for _ in range(16):
            _, _, term, trunc, _ = env.step(rng.integers(cfg.n_actions, size=n))
            ended += int((term | trunc).sum())
        steps += 16 * n
    rate = steps / (time.perf_counter() - start)
    env.close()
    return rate, compile_s, ended


def crafter_rate(n: int, max_steps: int, seconds: float, seed: int = 0) -> float | None:
    """Steps/s of ``n`` ``crafter.Env`` worlds stepped in turn in one process (None without crafter)."""
    try:
        import crafter
    except ImportError:
        return None
    envs = [crafter.Env(length=max_steps, seed=seed + i) for i in range(n)]
    for env in envs:
        env.reset()
    rng = np.random.default_rng(seed)
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        for env, a in zip(envs, rng.integers(envs[0].action_space.n, size=n)):
            if env.step(int(a))[2]:
                env.reset()
        steps += n
    return steps / (time.perf_counter() - start)


class _Done(Exception):
    pass


def training_rate(cfg: CraftaxConfig, n: int, steps: int, hidden: tuple[int, ...], n_steps: int,
                  seed: int = 0) -> tuple[float, float]:
    """(env steps/s of PPO on the batch, the share of its wall time spent stepping the env).

    The rate is the trainer's own ``charts/steps_per_s`` after its last update: from the start of ``train``
    (making and resetting the batch included, its compile not: it is built first) to the end of the last update.
    The run is stopped there, before its final evaluation (episodes of ``max_steps`` steps, not training)."""
    reward = parse_reward("collect:collect_wood", cfg.n_types, cfg.event_names)
    env = cfg.make(reward, n, seed=seed)  # reset and step compiled before the clock starts (cached per process)
    env.step(np.zeros(n, dtype=np.int64))
    env.close()
    ppo = PPOConfig.from_json({"total_steps": steps, "n_envs": n, "n_steps": n_steps, "epochs": 2,
                               "minibatch_size": max(64, n * n_steps // 4), "eval_every": 0, "eval_episodes": 1,
                               "threads": torch.get_num_threads(), "save_every": 0})
    from goalscope.envs import craftax as module

    stepping, rows, step = [0.0], [], module.CraftaxVecEnv.step

    def timed(self, actions):
        t = time.perf_counter()
        try:
            return step(self, actions)
        finally:
            stepping[0] += time.perf_counter() - t

    def stop_before_the_evaluation(at, row, model):
        rows.append((row["charts/steps_per_s"], time.perf_counter()))
        if at >= steps:
            raise _Done

    module.CraftaxVecEnv.step = timed
    try:
        torch.manual_seed(seed)
        model = build_agent("mlp", cfg.obs_shape, cfg.n_actions, {"hidden": list(hidden)})
        start = time.perf_counter()
        try:
            train(model, cfg, reward, ppo, seed, callbacks=[stop_before_the_evaluation])
        except _Done:
            pass
    finally:
        module.CraftaxVecEnv.step = step
    rate, end = rows[-1]
    return rate, stepping[0] / (end - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-envs", type=int, default=256)
    p.add_argument("--seconds", type=float, default=20.0, help="timing per env measurement")
    p.add_argument("--max-steps", type=int, default=10000, help="episode limit (Craftax's and Crafter's default)")
    p.add_argument("--train-steps", type=int, default=131072, help="PPO env steps (0: skip the trainer)")
    p.add_argument("--n-steps", type=int, default=64, help="PPO rollout length per env")
    p.add_argument("--hidden", default="64,64", help="the MLP's hidden widths")
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (1: with 2, torch's idle threads spin against XLA's on 2 cores)")
    p.add_argument("--pixels", action="store_true", help="also measure the Pixels env")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    n = args.n_envs
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    import jax

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {load[0]:.1f} "
          f"(1 min) at start, jax {jax.__version__}, torch {torch.__version__}, N = {n}, episodes of at most "
          f"{args.max_steps:,} steps, random actions")
    symbolic = CraftaxConfig(SYMBOLIC_ID, max_steps=args.max_steps)
    rows = []
    rate, compile_s, ended = craftax_rate(symbolic, n, args.seconds)
    rows.append((f"Craftax-Classic Symbolic, goalscope batch (compile {compile_s:.0f} s, {ended} episodes ended)",
                 rate))
    if args.pixels:
        pixels = CraftaxConfig(PIXELS_ID, max_steps=args.max_steps)
        prate, pcompile, pended = craftax_rate(pixels, n, args.seconds)
        rows.append((f"Craftax-Classic Pixels, goalscope batch (compile {pcompile:.0f} s, {pended} ended)", prate))
    base = crafter_rate(n, args.max_steps, args.seconds)
    if base is not None:
        rows.append((f"crafter.Env, {n} worlds in turn, 1 process (baseline)", base))
    train_rate = None
    if args.train_steps:
        hidden = tuple(int(h) for h in args.hidden.split(","))
        train_rate, env_share = training_rate(symbolic, n, args.train_steps, hidden, args.n_steps)
        rows.append((f"goalscope PPO on Craftax Symbolic, mlp {args.hidden}, {args.n_steps} steps x {n} envs "
                     f"(env stepping {env_share:.0%} of its time)", train_rate))
    print("| what | steps/s |\n|---|---|")
    for name, r in rows:
        print(f"| {name} | {r:,.0f} |")
    if base is not None:
        print(f"\nCraftax Symbolic / Crafter: {rate / base:.1f}x" +
              (f"; Pixels / Crafter: {prate / base:.1f}x" if args.pixels else ""))
    if train_rate is not None:
        print(f"training / Craftax env: {train_rate / rate:.2f}x")
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",)
    print(f"# load {load[0]:.1f} (1 min) at the end")


if __name__ == "__main__":
    main()
