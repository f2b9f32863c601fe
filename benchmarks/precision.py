"""fp32 vs bf16 autocast (vs torch.compile) for PPO training, on the default experiment's MA settings.

Two measurements, both with one torch thread per process:

1. **Throughput**: env steps/s of the full trainer (rollout + GAE + updates) in each mode, interleaved repeats in one
   process, median reported with the ratio to fp32. ``compile`` wraps the model in ``torch.compile`` (the first
   repeat, which pays for compilation, is discarded).
2. **Equivalence**: does bf16 learn the same agent? MA trained from the same seeds in fp32 and in bf16 (the default
   experiment's budget), final fraction of the oracle on 256 paired episodes, and the paired difference with a t
   interval over seeds. A speed-up that changes what the agent learns is not a speed-up.

    .venv/bin/python benchmarks/precision.py                       # about 6 min on 2 cores
    .venv/bin/python benchmarks/precision.py --seeds 0 1 2 3 4 --steps 150000
    .venv/bin/python benchmarks/precision.py --skip-curves         # throughput only, about 1 min
    python benchmarks/precision.py --skip-curves --device cuda --experiment experiments/maze9.toml  # on a GPU box
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import time

import numpy as np
import torch

from goalscope.agents.registry import build_agent
from goalscope.program.config import load_experiment
from goalscope.program.executors import LocalExecutor
from goalscope.analysis.stats import t_interval
from goalscope.rl.ppo import bf16_units, resolve_precision, train


def _setting(experiment: str = "experiments/default.toml", device: str = "cpu"):
    cfg = load_experiment(experiment)
    return cfg, dataclasses.replace(cfg.ppo_config(cfg.base.steps), device=device)


def _throughput(mode: str, steps: int, repeats: int, experiment: str, device: str) -> list[float]:
    cfg, ppo = _setting(experiment, device)
    ppo = dataclasses.replace(ppo, total_steps=steps, eval_episodes=8, anneal_lr=False,
                              precision="bf16" if "bf16" in mode else "fp32")
    rates = []
    for r in range(repeats + ("compile" in mode)):
        torch.manual_seed(r)
        model = build_agent(cfg.agent.arch, cfg.env.obs_shape, cfg.env.n_actions, cfg.agent.config)
        net = torch.compile(model) if "compile" in mode else model
        start = time.perf_counter()
        result = train(net, cfg.env, cfg.ra, ppo, seed=r)
        rates.append(result.steps / (time.perf_counter() - start))
    return rates[1:] if "compile" in mode else rates


def _learn(task: tuple[str, int, int, str, str]) -> float:
    precision, seed, steps, experiment, device = task
    torch.set_num_threads(1)
    cfg, ppo = _setting(experiment, device)
    ppo = dataclasses.replace(ppo, total_steps=steps, precision=precision)
    torch.manual_seed(seed)
    model = build_agent(cfg.agent.arch, cfg.env.obs_shape, cfg.env.n_actions, cfg.agent.config)
    return train(model, cfg.env, cfg.ra, ppo, seed=seed).final_eval["fraction_of_oracle"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", nargs="+", default=["fp32", "bf16", "fp32+compile"],
                   help="fp32, bf16, fp32+compile, bf16+compile")
    p.add_argument("--throughput-steps", type=int, default=16_384, help="env steps per timed repeat")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per mode, interleaved")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--steps", type=int, help="training budget for the equivalence test (default: the default "
                                               "experiment's base.steps)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--skip-curves", action="store_true")
    p.add_argument("--experiment", default="experiments/default.toml", help="whose MA setting to train")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (ppo.device; the envs stay on the CPU)")
    args = p.parse_args()
    torch.set_num_threads(1)
    cfg, ppo = _setting(args.experiment, args.device)
    units = bf16_units()
    print(f"machine: {os.cpu_count()} cores, bf16 units: {', '.join(units) or 'none'} (ppo.precision = \"auto\" "
          f"resolves to {resolve_precision('auto', ppo.device.partition(':')[0])}), torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.2f}")
    gpu = torch.cuda.get_device_name(ppo.device) if ppo.device != "cpu" else "none used"
    print(f"device: {ppo.device} (GPU: {gpu})")
    print(f"setting: {args.experiment} MA ({cfg.agent.arch} {cfg.agent.config}, {cfg.env.size}x{cfg.env.size} "
          f"maze, n_envs {ppo.n_envs} x n_steps {ppo.n_steps}, {ppo.epochs} epochs, minibatch {ppo.minibatch_size})")

    rates: dict[str, list[float]] = {m: [] for m in args.modes}
    for _ in range(args.repeats):  # interleaved, so drifting load hits every mode alike
        for mode in args.modes:
            try:
                rates[mode] += _throughput(mode, args.throughput_steps, 1, args.experiment, args.device)
            except Exception as e:  # torch.compile needs a working C++ toolchain; report, do not hide
                rates[mode] = [float("nan")]
                print(f"  {mode}: failed ({type(e).__name__}: {str(e).splitlines()[0][:120]})")
    base = statistics.median(rates["fp32"]) if "fp32" in rates else float("nan")
    print(f"\nthroughput ({args.repeats} interleaved repeats of {args.throughput_steps:,} steps, median)")
    print(f"  {'mode':<16}{'steps/s':>10}{'vs fp32':>9}")
    for mode, r in rates.items():
        med = statistics.median(r)
        print(f"  {mode:<16}{med:>10,.0f}{med / base:>8.2f}x")

    if args.skip_curves:
        return
    steps = args.steps or cfg.base.steps
    tasks = [(prec, s, steps, args.experiment, args.device) for s in args.seeds for prec in ("fp32", "bf16")]
    start = time.perf_counter()
    out = LocalExecutor(args.workers).run(_learn, tasks, desc="fp32 vs bf16")
    got = {(prec, s): f for (prec, s, *_), f in zip(tasks, out)}
    fp32 = np.array([got[("fp32", s)] for s in args.seeds])
    bf16 = np.array([got[("bf16", s)] for s in args.seeds])
    print(f"\nequivalence: MA trained {steps:,} steps per seed, fraction of oracle on 256 paired episodes "
          f"({time.perf_counter() - start:.0f} s with {args.workers} workers)")
    print(f"  {'seed':<6}{'fp32':>8}{'bf16':>8}")
    for s, a, b in zip(args.seeds, fp32, bf16):
        print(f"  {s:<6}{a:>8.3f}{b:>8.3f}")
    for name, v in (("fp32", fp32), ("bf16", bf16), ("bf16 - fp32", bf16 - fp32)):
        m, lo, hi = t_interval(v)
        print(f"  {name:<12} {m:+.3f} [{lo:+.3f}, {hi:+.3f}] (95% t interval over {len(v)} seeds)")


if __name__ == "__main__":
    main()
