"""How much search does an experiment's maze need? The shortest-path distance from the agent's start to the
rewarded object, over the evaluation episodes' starts (seed 10000, as `goalscope eval`), per experiment file.

    .venv/bin/python benchmarks/search_depth.py experiments/default.toml experiments/maze9.toml

Prints the mean, quartiles, the share of episodes per distance band and the share that need more than 3 steps (an
agent that only finds what is next to it fails those). Env generation only: a few seconds.
"""

from __future__ import annotations

import argparse

import numpy as np

from competence_by_distance import start_distance
from goalscope.program.config import load_experiment

BANDS = ((0, 3), (3, 5), (5, 8), (8, 12), (12, 10**6))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiments", nargs="+")
    p.add_argument("--episodes", type=int, default=4096)
    p.add_argument("--seed", type=int, default=10_000)
    a = p.parse_args(argv)
    head = " | ".join(f"{lo}-{hi - 1}" if hi < 10**6 else f">= {lo}" for lo, hi in BANDS)
    print(f"| experiment | env | mean | quartiles | {head} | > 3 steps |")
    print("|---|---|---:|---|" + "---:|" * len(BANDS) + "---:|")
    for path in a.experiments:
        cfg = load_experiment(path)
        d = start_distance(cfg.env, cfg.ra, a.episodes, a.seed)
        env = cfg.env
        shares = " | ".join(f"{np.mean((d >= lo) & (d < hi)):.0%}" for lo, hi in BANDS)
        q = np.percentile(d, [25, 50, 75]).astype(int)
        print(f"| {path} | {env.size}x{env.size}, loop_prob {env.loop_prob} | {d.mean():.1f} | {q[0]}, {q[1]}, {q[2]} "
              f"| {shares} | {np.mean(d > 3):.0%} |")


if __name__ == "__main__":
    main()
