"""goalscope PPO vs Stable-Baselines3 PPO with the *same CNN* (``goalscope.agents.sb3.GoalscopeCNN``) on 9x9 mazes.

Two measurements in one process, one torch thread, CPU, the project's rollout settings (n_envs 64, n_steps 32,
3 epochs, minibatch 512, lr 1e-3 annealed linearly, gamma 0.95, GAE 0.9, clip 0.2, ent 0.01, the same value-loss
weight: SB3's ``vf_coef`` is half of goalscope's because SB3's value loss has no 0.5 factor):

1. **Throughput** (``--throughput-steps`` per trainer, steady state from the end of the first update to the end of
   the last, as in ``train_throughput.py``): goalscope fp32, goalscope bf16 autocast, SB3 on a thin ``VecEnv``
   adapter over the native vectorised env (``goalscope.agents.sb3.MazeSB3VecEnv``), SB3 on
   ``make_vec_env(ObjectMazeEnv, vec_env_cls=DummyVecEnv)`` (what a user would write). Also each one's fraction
   of the network's compute ceiling (``train_throughput.ceiling``).
2. **Wall time to a fraction of the oracle**: goalscope fp32 and SB3 (native env) trained from the same seed for up
   to ``--budget`` steps, both evaluated every ``--eval-every`` steps on the same 256 paired episodes
   (goalscope's ``evaluate``, sampled actions, seed 10000). Evaluation time is excluded from the wall clock.
   A run stops once it reaches ``--target``; the table gives each trainer's training wall time and steps to the
   first evaluation at or above the target, and, when a trainer never got there, to the highest level that both
   reached.

    .venv/bin/python benchmarks/sb3_cnn.py                                   # ~25 min on a busy 2-core machine
    .venv/bin/python benchmarks/sb3_cnn.py --skip-curves                     # throughput only, ~3 min
    .venv/bin/python benchmarks/sb3_cnn.py --channels 16 16 16 16 --budget 1000000 --target 0.9
    # the competent recipe (experiments/maze9.toml's rcnn), both curves at once on 2 cores, ~40 min:
    .venv/bin/python benchmarks/sb3_cnn.py --arch rcnn --skip-throughput --budget 1200000 --eval-every 100000 --workers 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))

from goalscope.agents.registry import build_agent  # noqa: E402
from goalscope.envs.maze import N_ACTIONS, MazeConfig  # noqa: E402
from goalscope.envs.rewards import parse_reward  # noqa: E402
from goalscope.rl.evaluation import evaluate, oracle_profile, summarise  # noqa: E402
from goalscope.rl.ppo import PPOConfig, train  # noqa: E402

ENV = MazeConfig(size=9, n_types=5, n_per_type=1, max_steps=48, layout="maze", loop_prob=0.2)
REWARD = "collect:0"


def _ppo(args, steps: int, precision: str = "fp32") -> PPOConfig:
    return PPOConfig(total_steps=steps, n_envs=64, n_steps=32, epochs=3, minibatch_size=512, lr=1e-3,
                     gamma=args.gamma, ent_coef=0.01, eval_episodes=64, precision=precision)


def _arch(args) -> dict:
    channels = list(args.channels or ((16,) if args.arch == "rcnn" else (16, 32)))
    if args.arch == "rcnn":
        return {"channels": channels, "width": args.width, "iterations": args.iterations, "hidden": args.hidden}
    return {"channels": channels, "hidden": args.hidden}


def _sb3_model(args, env_kind: str, ppo: PPOConfig, seed: int):
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    from goalscope.envs.gym import ObjectMazeEnv
    from goalscope.agents.sb3 import policy_kwargs, rcnn_policy_kwargs, sb3_ppo_kwargs, sb3_vec_env

    if env_kind == "dummy":
        venv = make_vec_env(ObjectMazeEnv, n_envs=ppo.n_envs, seed=seed, vec_env_cls=DummyVecEnv,
                            env_kwargs={"config": ENV, "reward": REWARD})
    else:
        venv = sb3_vec_env(ENV, REWARD, ppo.n_envs, seed)
    kwargs = rcnn_policy_kwargs(**_arch(args)) if args.arch == "rcnn" else policy_kwargs(**_arch(args))
    return PPO("MlpPolicy", venv, policy_kwargs=kwargs, seed=seed, device="cpu",
               verbose=0, **sb3_ppo_kwargs(ppo))


# ----------------------------------------------------------------------------------------------------------------
# 1. throughput


def goalscope_sps(args, precision: str, seed: int = 0) -> float:
    ppo = _ppo(args, args.throughput_steps, precision)
    torch.manual_seed(seed)
    model = build_agent(args.arch, ENV.obs_shape, N_ACTIONS, _arch(args))
    rows = [r for r in train(model, ENV, parse_reward(REWARD, ENV.n_types), ppo, seed).history
            if "charts/steps_per_s" in r]
    elapsed = [r["step"] / r["charts/steps_per_s"] for r in rows]
    return (rows[-1]["step"] - rows[0]["step"]) / (elapsed[-1] - elapsed[0])


def sb3_sps(args, env_kind: str, seed: int = 0) -> float:
    from stable_baselines3.common.callbacks import BaseCallback

    ppo = _ppo(args, args.throughput_steps)
    model = _sb3_model(args, env_kind, ppo, seed)

    class Timer(BaseCallback):
        starts: list = []
        end = 0.0

        def _on_rollout_start(self):
            self.starts.append(time.perf_counter())

        def _on_step(self):
            return True

        def _on_training_end(self):
            self.end = time.perf_counter()

    timer = Timer()
    timer.starts = []
    model.learn(ppo.total_steps, callback=timer)
    return (len(timer.starts) - 1) * ppo.batch_size / (timer.end - timer.starts[1])


# ----------------------------------------------------------------------------------------------------------------
# 2. wall time to a fraction of the oracle


class _Curve:
    """Evaluations at fixed step marks, with the training wall time (evaluations excluded) at each."""

    def __init__(self, args, name: str = ""):
        self.name = name
        self.reward = parse_reward(REWARD, ENV.n_types)
        self.oracle = oracle_profile(ENV, self.reward, 256, 10_000)
        self.every, self.target = args.eval_every, args.target
        self.next = self.every
        self.points: list[dict] = []
        self.start = time.perf_counter()
        self.paused = 0.0

    def maybe_eval(self, step: int, model) -> bool:
        """Evaluate if a mark was passed; True once the target is reached (stop)."""
        if step < self.next:
            return False
        t0 = time.perf_counter()
        frac = summarise(evaluate(model, ENV, self.reward, 256, 10_000), self.reward, self.oracle)["fraction_of_oracle"]
        self.points.append({"step": step, "train_s": t0 - self.start - self.paused, "fraction": frac})
        print(f"    {self.name}: {step:>9,} steps  {t0 - self.start - self.paused:7.1f} s  {frac:.3f} of oracle", flush=True)
        self.paused += time.perf_counter() - t0
        while self.next <= step:
            self.next += self.every
        return frac >= self.target


def goalscope_curve(args, seed: int) -> list[dict]:
    ppo = _ppo(args, args.budget)
    torch.manual_seed(seed)
    model = build_agent(args.arch, ENV.obs_shape, N_ACTIONS, _arch(args))
    curve = _Curve(args, "goalscope")
    train(model, ENV, curve.reward, ppo, seed, callbacks=[lambda step, row, m: not curve.maybe_eval(step, m)])
    return curve.points


def sb3_curve(args, seed: int, env_kind: str = "native") -> list[dict]:
    from stable_baselines3.common.callbacks import BaseCallback

    from goalscope.agents.sb3 import SB3Policy

    ppo = _ppo(args, args.budget)
    model = _sb3_model(args, env_kind, ppo, seed)
    curve = _Curve(args, f"SB3 {env_kind}")
    wrapped = SB3Policy(model.policy)

    class Eval(BaseCallback):
        stop = False

        def _on_rollout_start(self):  # after each update (and before the first rollout, at 0 steps)
            self.stop = curve.maybe_eval(self.num_timesteps, wrapped)

        def _on_step(self):
            return not self.stop

        def _on_training_end(self):
            curve.maybe_eval(self.num_timesteps, wrapped)

    curve.start = time.perf_counter()
    model.learn(ppo.total_steps, callback=Eval())
    return curve.points


CURVES = {"goalscope fp32": lambda args: goalscope_curve(args, args.seed),
          "SB3, native VecEnv adapter": lambda args: sb3_curve(args, args.seed),
          "SB3, DummyVecEnv": lambda args: sb3_curve(args, args.seed, "dummy")}
TRAINERS = {"goalscope": "goalscope fp32", "sb3": "SB3, native VecEnv adapter", "sb3-dummy": "SB3, DummyVecEnv"}


def _curve_task(task) -> list[dict]:
    """One trainer's curve in its own process (one torch thread), so trainers run side by side under one load."""
    name, args = task
    torch.set_num_threads(1)
    print(f"  {name}: started", flush=True)
    return CURVES[name](args)


def first_at(points: list[dict], level: float) -> dict | None:
    return next((p for p in points if p["fraction"] >= level), None)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", choices=["cnn", "rcnn"], default="cnn", help="goalscope's cnn, or the recurrent rcnn "
                                                                           "(experiments/maze9.toml's)")
    p.add_argument("--channels", type=int, nargs="+", help="input conv channels (default: 16 32 for cnn, 16 for rcnn)")
    p.add_argument("--width", type=int, default=8, help="rcnn: recurrent channels")
    p.add_argument("--iterations", type=int, default=0, help="rcnn: recurrent steps (0 = twice the side)")
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--gamma", type=float, default=0.95)
    p.add_argument("--throughput-steps", type=int, default=16_384)
    p.add_argument("--budget", type=int, default=600_000, help="max env steps per trainer for the time-to-target runs")
    p.add_argument("--eval-every", type=int, default=50_000)
    p.add_argument("--target", type=float, default=0.9, help="fraction of the oracle")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trainers", nargs="+", choices=list(TRAINERS), default=["goalscope", "sb3"],
                   help="whose curves to run")
    p.add_argument("--workers", type=int, default=1, help="curves run in this many processes at once")
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-curves", action="store_true")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    units = [f for f in ("amx_bf16", "avx512_bf16") if f in flags]
    print(f"machine: {os.cpu_count()} cores, bf16 units: {', '.join(units) or 'none'}, load average "
          f"{os.getloadavg()[0]:.2f}; torch {torch.__version__}, 1 thread")
    print(f"env: {ENV.size}x{ENV.size} maze, {ENV.n_types} types x {ENV.n_per_type}, {ENV.max_steps} steps, "
          f"loop_prob {ENV.loop_prob}; RA {REWARD}; {args.arch} {_arch(args)}; gamma {args.gamma}")
    out: dict = {"args": vars(args)}
    if not args.skip_throughput:
        from train_throughput import ceiling

        ppo = _ppo(args, args.throughput_steps)
        ceil = ceiling(args.arch, _arch(args), ENV, parse_reward(REWARD, ENV.n_types), ppo, 0, 3)["steps_per_s"]
        rates = {"goalscope fp32": goalscope_sps(args, "fp32"), "goalscope bf16": goalscope_sps(args, "bf16"),
                 "SB3, native VecEnv adapter": sb3_sps(args, "native"), "SB3, DummyVecEnv": sb3_sps(args, "dummy")}
        base = rates["goalscope fp32"]
        print(f"\nthroughput ({args.throughput_steps:,} steps each; load average {os.getloadavg()[0]:.2f})\n")
        print("| trainer | steps/s | goalscope fp32 ÷ this | fraction of ceiling |\n|---|---:|---:|---:|")
        for name, r in rates.items():
            print(f"| {name} | {r:,.0f} | {base / r:.2f}× | {r / ceil:.0%} |")
        print(f"| compute ceiling (network only, fp32) | {ceil:,.0f} | – | 100% |")
        out["throughput"] = {**rates, "ceiling": ceil}
    if not args.skip_curves:
        print(f"\ntime to {args.target:.0%} of the oracle (budget {args.budget:,} steps, eval every {args.eval_every:,})")
        from goalscope.program.executors import LocalExecutor

        names = [TRAINERS[t] for t in args.trainers]
        curves = dict(zip(names, LocalExecutor(args.workers).run(_curve_task, [(n, args) for n in names], "curves")))
        out["curves"] = curves
        common = min(max(p["fraction"] for p in c) for c in curves.values())
        levels = [args.target] + ([] if common >= args.target else [np.floor(common * 100) / 100])
        print(f"\nload average {os.getloadavg()[0]:.2f}\n")
        print("| trainer | level | env steps to level | training wall s to level | best fraction (steps) |")
        print("|---|---:|---:|---:|---:|")
        for name, c in curves.items():
            best = max(c, key=lambda q: q["fraction"])
            for level in levels:
                hit = first_at(c, level)
                where = f"{hit['step']:,} | {hit['train_s']:.0f}" if hit else "not reached | –"
                print(f"| {name} | {level:.0%} | {where} | {best['fraction']:.3f} ({best['step']:,}) |")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
