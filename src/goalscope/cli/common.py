"""Helpers shared by the command groups: argument types and the object-maze options.

May import: goalscope.envs and the core helpers (the heavy modules are imported inside the functions).
"""

from __future__ import annotations

import argparse
import math

from goalscope.inputs import MAX_SEED, MAX_STEPS


def positive_int(text: str) -> int:
    """argparse type: an integer from 1 to MAX_STEPS (underscores allowed: 50_000)."""
    try:
        v = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if not 1 <= v <= MAX_STEPS:
        raise argparse.ArgumentTypeError(f"expected an integer from 1 to {MAX_STEPS:,}, got {text!r}")
    return v


def positive_float(text: str) -> float:
    """argparse type: a finite number above 0 (a budget in minutes)."""
    try:
        v = float(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise argparse.ArgumentTypeError(f"expected a finite number above 0, got {text!r}")
    return v


MAX_EPISODES = 100_000  # evaluation episodes, as evaluation.episodes in an experiment file


def bounded_int(hi: int):
    """argparse type: an integer from 1 to ``hi`` (a count that sizes memory: episodes, samples, permutations)."""
    def parse(text: str) -> int:
        v = positive_int(text)
        if v > hi:
            raise argparse.ArgumentTypeError(f"expected an integer from 1 to {hi:,}, got {text!r}")
        return v

    parse.__name__ = "integer"
    return parse


def add_env_args(p: argparse.ArgumentParser) -> None:
    # Defaults are those of experiments/default.toml, so `train` makes the MA the default experiment would.
    """The object-maze options (--size, --n-types, ...), with the default experiment's values."""
    g = p.add_argument_group("environment (object maze)")
    g.add_argument("--size", type=int, default=7, help="grid side including outer walls, odd for mazes")
    g.add_argument("--n-types", type=int, default=5, help="object types K")
    g.add_argument("--n-per-type", type=int, default=1, help="objects of each type per episode")
    g.add_argument("--max-steps", type=int, default=32, help="episode step limit")
    g.add_argument("--layout", choices=["maze", "open"], default="maze", help="corridor maze or one open room")
    g.add_argument("--loop-prob", type=float, default=0.2, help="fraction of maze walls knocked out to make loops")


def non_negative_int(text: str) -> int:
    """argparse type: an integer from 0 to MAX_SEED (seeds are 32-bit; nothing else needs more)."""
    try:
        v = int(text.replace("_", ""))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if not 0 <= v <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected an integer from 0 to {MAX_SEED:,}, got {text!r}")
    return v


def env_config(args):
    """The MazeConfig of parsed object-maze options."""
    from goalscope.envs.maze import MazeConfig

    return MazeConfig(size=args.size, n_types=args.n_types, n_per_type=args.n_per_type, max_steps=args.max_steps,
                      layout=args.layout, loop_prob=args.loop_prob)


def fmt_ci(ci) -> str:
    """``mean [low, high]`` of a (mean, low, high) triple, "n/a" when the mean is not finite."""
    m, lo, hi = ci
    return "n/a" if not math.isfinite(m) else f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"
