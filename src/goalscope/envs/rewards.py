"""Rewards as data.

A reward in the object maze is a weight per object type plus an optional per-step cost, so swapping the objective
never touches the dynamics: fine-tuning on RB is training in the same env with another vector. Rewards are parsed
from short strings that name their meaning:

    collect:0                 +1 per type-0 object collected
    avoid:2                   -1 per type-2 object
    0.5*collect:0+collect:3   weighted sum of terms
    collect:goal              by name, in an env that names its event types (``env.event_types``)
    step:0.01                 a cost of 0.01 per step (added as a term)
    1,0,-1,0                  a raw weight vector (must have one entry per object type)
    cued                      +1 for the type the observation cues (envs with ``cue = true``)

Families generate lists of RBs from one word (``finetune.rewards``): ``one_hot`` (each other type alone),
``composite`` (RA plus each other type) and ``mixture[:N[:SEED]]`` / ``mixture+[:N[:SEED]]`` (N dense random
weight vectors over all types, signed / non-negative; see :func:`mixture_family`).

May import: goalscope.errors.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from goalscope.errors import ConfigError

_NUMBER = r"[-+]?\d*\.?\d+(?:e[-+]?\d+)?"
_TERM = re.compile(rf"^\s*(?:(?P<coef>{_NUMBER})\s*\*\s*)?(?P<verb>collect|avoid|step):(?P<arg>{_NUMBER}|[A-Za-z_][\w.:-]*)\s*$")


@dataclass(frozen=True)
class Reward:
    """Weights over object types plus a step cost; the return of an episode is ``counts @ weights - steps*cost``."""

    name: str
    weights: tuple[float, ...]
    step_cost: float = 0.0
    cued: bool = False  # pays 1 for the type the observation cues (env.cue), whatever the weights say

    def __post_init__(self):
        if not all(math.isfinite(w) for w in (*self.weights, self.step_cost)):
            raise ConfigError(f"reward {self.name!r} has a NaN or infinite weight; rewards must be finite numbers")

    @property
    def n_types(self) -> int:
        return len(self.weights)

    def vector(self) -> np.ndarray:
        return np.asarray(self.weights, dtype=np.float32)

    def score(self, counts: np.ndarray, steps: np.ndarray) -> np.ndarray:
        """Return under this reward of episodes summarised by their object counts ``(E, K)`` and lengths ``(E,)``."""
        counts = np.asarray(counts, dtype=np.float64)
        if counts.shape[-1] != self.n_types:
            raise ConfigError(f"reward {self.name!r} has {self.n_types} weights but the profile has {counts.shape[-1]} object types")
        return counts @ np.asarray(self.weights, dtype=np.float64) - self.step_cost * np.asarray(steps, dtype=np.float64)

    def rewarded_types(self) -> np.ndarray:
        return np.flatnonzero(np.asarray(self.weights) > 0)

    def target_type(self, base: "Reward | None" = None) -> int:
        """The object type this reward adds most weight to relative to ``base`` (RA): for a one-hot RB its type,
        for a composite "RA + collect:i" the new component i. It is the type a negated MB* would avoid."""
        w = np.asarray(self.weights, dtype=float)
        if base is not None:
            w = w - np.asarray(base.weights, dtype=float)
        return int(np.argmax(w))

    def to_json(self) -> dict:
        return {"name": self.name, "weights": list(self.weights), "step_cost": self.step_cost, "cued": self.cued}

    @staticmethod
    def from_json(d: dict) -> "Reward":
        return Reward(str(d["name"]), tuple(float(w) for w in d["weights"]), float(d.get("step_cost", 0.0)),
                      bool(d.get("cued", False)))


def parse_reward(spec: str, n_types: int, names=None) -> Reward:
    """Parse a reward string (see module docstring) for an env with ``n_types`` object types; ``names`` (one per
    type, e.g. ``["key", "door", "goal"]``) lets terms name a type instead of giving its index."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"reward must be a non-empty string such as 'collect:0', got {spec!r}")
    text = spec.strip()
    if text == "cued":
        return Reward("cued", (0.0,) * n_types, cued=True)
    if ":" not in text:  # a raw weight vector
        try:
            weights = tuple(float(x) for x in text.split(","))
        except ValueError:
            raise ConfigError(
                f"reward {spec!r}: expected terms such as 'collect:0' or a comma-separated weight vector"
            ) from None
        if len(weights) != n_types:
            raise ConfigError(f"reward {spec!r} has {len(weights)} weights but the env has {n_types} object types")
        return Reward(text.replace(" ", ""), weights)
    weights = np.zeros(n_types)
    step_cost = 0.0
    for term in text.split("+"):
        m = _TERM.match(term)
        if not m:
            raise ConfigError(
                f"reward {spec!r}: cannot read term {term.strip()!r}; expected e.g. 'collect:0', 'avoid:2', "
                "'0.5*collect:1', 'step:0.01' or a vector '1,0,0,0'"
            )
        coef = float(m["coef"]) if m["coef"] else 1.0
        verb, arg = m["verb"], m["arg"]
        if verb == "step":
            if not re.fullmatch(_NUMBER, arg):
                raise ConfigError(f"reward {spec!r}: 'step:' takes a cost per step, e.g. 'step:0.01', got {arg!r}")
            step_cost += coef * float(arg)
            continue
        weights[_type_index(spec, arg, n_types, names)] += coef if verb == "collect" else -coef
    return Reward(text.replace(" ", ""), tuple(float(w) for w in weights), step_cost)


def _type_index(spec: str, arg: str, n_types: int, names) -> int:
    if re.fullmatch(r"\d+", arg) and int(arg) < n_types:
        return int(arg)
    if names and arg in names:
        return list(names).index(arg)
    if re.fullmatch(_NUMBER, arg):
        raise ConfigError(f"reward {spec!r}: object type {arg!r} does not exist (the env has types 0..{n_types - 1})")
    if not names:
        raise ConfigError(f"reward {spec!r}: this env does not name its event types, so {arg!r} means nothing; use "
                          f"an index 0..{n_types - 1} (or name the types with env.event_types)")
    raise ConfigError(f"reward {spec!r}: the env has no event type {arg!r} (its types: {', '.join(names)})")


def type_names(env) -> list[str] | None:
    """The names an env config gives its K event types (``env.event_names``), or None when it gives none."""
    names = getattr(env, "event_names", None)
    return list(names) if names else None


# Reward families: named generators of RB lists, the registry experiments draw from.
def one_hot_family(n_types: int, exclude: Reward | None = None, names=None) -> list[Reward]:
    """``collect:i`` for every object type, minus the types ``exclude`` already rewards (orthogonal RBs); in an env
    that names its types (``names``), ``collect:NAME``."""
    skip = set(exclude.rewarded_types().tolist()) if exclude is not None else set()
    return [parse_reward(f"collect:{names[i] if names else i}", n_types, names) for i in range(n_types)
            if i not in skip]


def composite_family(base: Reward, n_types: int, weight: float = 1.0, names=None) -> list[Reward]:
    """"RA plus a new component": ``base + weight*collect:i`` for each type that ``base`` does not reward."""
    out = []
    for r in one_hot_family(n_types, exclude=base, names=names):
        i = int(r.rewarded_types()[0])
        w = np.asarray(base.weights, dtype=float)
        w[i] += weight
        out.append(Reward(f"{base.name}+{weight:g}*collect:{names[i] if names else i}", tuple(w.tolist()),
                          base.step_cost))
    return out


MIXTURE_SPEC = re.compile(r"^mixture(?P<positive>\+)?(?::(?P<n>\d+))?(?::(?P<seed>\d+))?$")
MIXTURE_DEFAULT_N = 8
MAX_MIXTURES = 256


def mixture_family(n_types: int, n: int = MIXTURE_DEFAULT_N, seed: int = 0, positive: bool = False) -> list[Reward]:
    """``n`` dense random rewards over all K types, so that every type a held-out RB values is also valued by the
    RBs a heatmap is built from (a one-hot family cannot do that: each RB owns a type no other RB touches).

    Each weight is drawn uniform in [-1, 1] (in [0, 1] with ``positive``) from numpy's PCG64 seeded with ``seed``,
    the vector is scaled so its largest |weight| is 1 and its sign flipped where needed so that largest-magnitude
    weight is positive: every RB pays for at least one type. Negative weights are costs the agent must walk
    around, which makes a signed mixture a harder task than a one-hot RB (unlearning RA's type when it turns
    negative); a positive mixture only re-weights what to collect. Weights are rounded to 2 decimals and the
    reward's name is its weight vector (``0.42,-0.13,...``), which parses back to the same reward. Draws that repeat
    an earlier vector are redrawn."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_MIXTURES:
        raise ConfigError(f"reward family 'mixture': the number of RBs must be in 1..{MAX_MIXTURES}, got {n!r}")
    if n_types < 2:
        raise ConfigError(f"reward family 'mixture' needs at least 2 object types, the env has {n_types}")
    rng = np.random.default_rng(seed)
    out: dict[tuple, Reward] = {}
    while len(out) < n:
        w = rng.uniform(0.0 if positive else -1.0, 1.0, n_types)
        w = w / np.abs(w).max()
        w = np.round(w * np.sign(w[np.argmax(np.abs(w))]), 2) + 0.0  # + 0.0 turns -0.0 into 0.0
        key = tuple(float(x) for x in w)
        out.setdefault(key, Reward(",".join(f"{x:g}" for x in key), key))
    return list(out.values())


def parse_mixture(spec: str) -> tuple[int, int, bool] | None:
    """``mixture[+][:N[:SEED]]`` -> (N, SEED, positive); None for any other spec."""
    m = MIXTURE_SPEC.match(spec.strip()) if isinstance(spec, str) else None
    if not m:
        return None
    return int(m["n"] or MIXTURE_DEFAULT_N), int(m["seed"] or 0), bool(m["positive"])


def lean_weights(rb: Reward, base: Reward) -> np.ndarray:
    """The *specific lean* of RB over RA as weights on the per-type object counts.

    Over the types RA does not reward (RA's own type moves under every RB, by devaluation, and is not what makes
    one RB differ from another) RB's weights are centred, so collecting more of everything scores 0, and scaled so
    the largest entry is 1. For a one-hot ``collect:k`` this is exactly "type-k objects minus the mean of the other
    non-RA types"; for a mixture it is the same contrast weighted by what RB pays. Zero where RB is flat there."""
    w = np.asarray(rb.weights, dtype=float)
    free = np.asarray(base.weights, dtype=float) <= 0
    out = np.zeros_like(w)
    if free.sum() < 1:
        return out
    out[free] = w[free] - w[free].mean()
    top = out.max()
    return out / top if top > 1e-12 else np.zeros_like(w)


REWARD_FAMILIES = {"one_hot": one_hot_family, "composite": composite_family, "mixture": mixture_family}
