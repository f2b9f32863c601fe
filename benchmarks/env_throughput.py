"""Environment throughput: vectorised object-maze env steps per second, observations included.

Measures
  * ``MazeVecEnv`` (the native vectorised env) at each ``--n`` (default 256 and 4096): random actions, every
    ``step`` returns a fresh ``(N, 2+K, H, W)`` uint8 observation array, auto-resets included;
  * ``ObjectMazeVectorEnv`` (the same env through ``gymnasium.vector.VectorEnv``) at the first ``--n``;
  * ``ObjectMazeEnv`` (one Gymnasium env, what a per-env wrapper such as SB3's DummyVecEnv steps), for reference.

Random actions are drawn once up front (a block of ``ACTION_BLOCK`` steps, cycled) so the timing is the env's,
not the random number generator's. One torch thread, though no torch is used in the env.

Goal (issue): >= 2M env-steps/s at N = 256 and 4096 for the default 9x9 maze with 4 object types.
Reference figures from /work/shared/reference/perf-baseline.md (same machine kind):
  plain numpy 9x9 grid with (N, 3, 9, 9) obs: 10M/s at N=256, 17M/s at N=4096;
  MiniGrid raw, SyncVectorEnv(8): 12k env-steps/s.

Run:  .venv/bin/python benchmarks/env_throughput.py            (about 10 s)
      .venv/bin/python benchmarks/env_throughput.py --n 64 256 1024 4096 --seconds 2
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch

from goalscope.envs.gym import ObjectMazeEnv, ObjectMazeVectorEnv
from goalscope.envs.maze import N_ACTIONS, MazeConfig, MazeVecEnv
from goalscope.envs.rewards import parse_reward

GOAL = 2_000_000
NUMPY_GRID = {64: 4.3e6, 256: 10e6, 1024: 14e6, 4096: 17e6}  # perf-baseline.md, plain numpy 9x9 grid
MINIGRID_SYNC = 12_000  # perf-baseline.md, MiniGrid raw SyncVectorEnv(8)
ACTION_BLOCK = 64


def _timed(step, n_envs: int, seconds: float, warmup: int) -> float:
    """Env-steps/s of calling ``step(i)`` repeatedly for about ``seconds`` (after ``warmup`` calls)."""
    for i in range(warmup):
        step(i)
    calls, elapsed, chunk = 0, 0.0, 16
    start = time.perf_counter()
    while elapsed < seconds:
        for i in range(chunk):
            step(calls + i)
        calls += chunk
        elapsed = time.perf_counter() - start
        chunk = min(chunk * 2, 4096)
    return calls * n_envs / elapsed


def bench_vec(cfg: MazeConfig, reward, n: int, seconds: float, seed: int) -> float:
    env = MazeVecEnv(cfg, reward, n, seed=seed)
    actions = np.random.default_rng(seed).integers(N_ACTIONS, size=(ACTION_BLOCK, n))

    def step(i):
        obs, _, _, _, _ = env.step(actions[i % ACTION_BLOCK])
        return obs

    return _timed(step, n, seconds, warmup=2 * cfg.max_steps)


def bench_gym_vector(cfg: MazeConfig, reward_spec: str, n: int, seconds: float, seed: int) -> float:
    env = ObjectMazeVectorEnv(n, cfg, reward_spec)
    env.reset(seed=seed)
    actions = np.random.default_rng(seed).integers(N_ACTIONS, size=(ACTION_BLOCK, n))
    return _timed(lambda i: env.step(actions[i % ACTION_BLOCK]), n, seconds, warmup=2 * cfg.max_steps)


def bench_gym_single(cfg: MazeConfig, reward_spec: str, seconds: float, seed: int) -> float:
    env = ObjectMazeEnv(cfg, reward_spec)
    env.reset(seed=seed)
    actions = np.random.default_rng(seed).integers(N_ACTIONS, size=4096).tolist()

    def step(i):
        obs, _, term, trunc, _ = env.step(actions[i % 4096])
        if term or trunc:  # what any single-env loop (and SB3's DummyVecEnv) does
            env.reset()
        return obs

    return _timed(step, 1, seconds, warmup=2 * cfg.max_steps)


def _fmt(x: float) -> str:
    return f"{x / 1e6:.2f}M" if x >= 1e6 else f"{x / 1e3:.1f}k"


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[256, 4096], help="numbers of envs (default: 256 4096)")
    p.add_argument("--seconds", type=float, default=1.5, help="timed seconds per measurement (default: 1.5)")
    p.add_argument("--reward", default="collect:0", help="reward spec (default: collect:0)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-gym", action="store_true", help="skip the Gymnasium-API measurements")
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    cfg = MazeConfig()
    reward = parse_reward(args.reward, cfg.n_types)
    print(f"env: MazeConfig() = {cfg.size}x{cfg.size} {cfg.layout}, {cfg.n_types} object types x {cfg.n_per_type}, "
          f"max_steps {cfg.max_steps}, obs uint8{cfg.obs_shape}; reward {reward.name}; random actions; "
          f"{args.seconds:g} s per measurement; torch threads {torch.get_num_threads()}; "
          f"numpy {np.__version__}; {platform.processor() or platform.machine()}")
    print()
    header = f"{'env':<33} {'N':>5} {'steps/s':>9} {'/ goal 2M':>10} {'/ numpy grid':>13} {'/ MiniGrid 12k':>15}"
    print(header)
    print("-" * len(header))

    def row(name, n, sps):
        grid = f"{sps / NUMPY_GRID[n]:.2f}x" if n in NUMPY_GRID else "-"
        print(f"{name:<33} {n:>5} {_fmt(sps):>9} {sps / GOAL:>9.2f}x {grid:>13} {sps / MINIGRID_SYNC:>14.0f}x",
              flush=True)

    for n in args.n:
        row("MazeVecEnv", n, bench_vec(cfg, reward, n, args.seconds, args.seed))
    if not args.no_gym:
        n = args.n[0]
        row("ObjectMazeVectorEnv (gym.vector)", n, bench_gym_vector(cfg, args.reward, n, args.seconds, args.seed))
        row("ObjectMazeEnv (single gym env)", 1, bench_gym_single(cfg, args.reward, args.seconds, args.seed))
    print()
    print(f"numpy grid = plain numpy 9x9 grid with (N,3,9,9) obs, 1 thread ({', '.join(f'{k}: {_fmt(v)}' for k, v in NUMPY_GRID.items())}); "
          "MiniGrid = raw SyncVectorEnv(8); both from perf-baseline.md.")


if __name__ == "__main__":
    main()
