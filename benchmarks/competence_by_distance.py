"""Where does an object-maze agent fail? Success by the shortest-path distance to the rewarded object.

For a checkpoint (a stage directory or checkpoint path) trained on a one-object reward such as ``collect:0``:
``--episodes`` paired evaluation episodes (seed 10000, as ``goalscope eval``), each bucketed by the maze distance
from the agent's start to the nearest rewarded object, with the fraction of episodes in which the agent collected
one, for sampled actions (what goalscope's evaluation uses) and for greedy (argmax) actions. Also how often the
greedy action is the oracle's along the oracle's own paths. Evaluation only, about a minute on one busy core.

    .venv/bin/python benchmarks/competence_by_distance.py runs/sweep9/stages/train-2cec1eff2c77
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from goalscope.agents.checkpoints import load_checkpoint
from goalscope.envs.oracle import _distance_to, oracle_actions
from goalscope.rl.evaluation import model_policy, run_episodes

BUCKETS = ((0, 6), (6, 12), (12, 18), (18, 10**6))


def start_distance(cfg, reward, n: int, seed: int) -> np.ndarray:
    env = cfg.eval_config().make(reward, n, seed=seed)
    env.reset(seed)
    g = env.grid_state()
    ar = np.arange(n)
    targets = g["weights"][ar[:, None, None], g["objects"]] > 0
    return _distance_to(targets, ~g["walls"])[ar, g["pos"][:, 0], g["pos"][:, 1]]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint")
    p.add_argument("--episodes", type=int, default=512)
    p.add_argument("--seed", type=int, default=10_000)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    ck = load_checkpoint(a.checkpoint)
    model, cfg, ra = ck.build().eval(), ck.env, ck.reward
    d0 = start_distance(cfg, ra, a.episodes, a.seed)
    print(f"{a.checkpoint}: {ck.arch} {ck.arch_config}, {cfg.size}x{cfg.size}, RA {ra.name}, {ck.steps:,} steps")
    print("| start distance | episodes | success, sampled | success, greedy |\n|---|---:|---:|---:|")
    succ = {}
    for greedy in (False, True):
        prof = run_episodes(model_policy(model, a.seed, greedy), cfg, ra, a.episodes, a.seed)
        succ[greedy] = prof.returns(ra) > 0
    for lo, hi in BUCKETS:
        m = (d0 >= lo) & (d0 < hi)
        label = f"{lo}-{hi - 1}" if hi < 10**6 else f">= {lo}"
        if m.any():
            print(f"| {label} | {m.sum()} | {succ[False][m].mean():.3f} | {succ[True][m].mean():.3f} |")
    print(f"| all | {a.episodes} | {succ[False].mean():.3f} | {succ[True].mean():.3f} |")
    # The greedy action against the oracle's, in the states the oracle visits (while a rewarded object is left).
    env = cfg.eval_config().make(ra, a.episodes, seed=a.seed + 1)
    obs, ar, agree = env.reset(a.seed + 1), np.arange(a.episodes), []
    with torch.inference_mode():
        for _ in range(cfg.max_steps // 2):
            g = env.grid_state()
            live = (g["weights"][ar[:, None, None], g["objects"]] > 0).reshape(a.episodes, -1).any(1)
            best = oracle_actions(env)
            if live.any():
                agree.append((model(torch.from_numpy(obs))[0].argmax(-1).numpy() == best)[live].mean())
            obs = env.step(best)[0]
    print(f"greedy action = oracle's on the oracle's paths: {np.mean(agree):.3f}")


if __name__ == "__main__":
    main()
