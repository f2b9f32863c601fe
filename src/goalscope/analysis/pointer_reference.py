"""The pointer experiment's reference: a cue-blind agent, and "objective as pointer" decided against it.

MA_g follows its cue. So when it is fine-tuned with the cue moved to the new reward, it trains on a task it already
solves, and ‖Δ_cue‖ ≈ the control drift is close to guaranteed. A positive (‖Δ_reward‖ − ‖Δ_cue‖) / ‖Δ_control‖
then says little by itself. The reference is an agent whose ratio has no such reason to be positive:

    MA_ref   the same env as MA_g (the cue planes on, a random cued type every episode), the same architecture, PPO
             settings and seed (so the same initial weights), trained on the fixed reward collect:0. Its cue names a
             random type that never predicts its reward, so it has no reason to read it.

MA_ref is moved from collect:0 to collect:1 by MA_g's three fine-tunes, in the very same envs: the cue kept on
type 0, the cue moved to type 1, and a control on its own task (collect:0, random cues). Its ratio comes from the
same code as MA_g's. The cue is random rather than always type 0 so that MA_ref, like MA_g, has seen every cue in
training. With a constant cue, the cue-change fine-tune would show MA_ref a cue plane it never saw, an input shift
that MA_g's fine-tunes do not have.

If the objective is a pointer in MA_g, a cue change costs MA_g less than a reward change because MA_g reads the cue.
MA_ref, whose cue points at nothing, has to write the new objective into its weights either way. The decision is
a one-sided paired t test over seeds (:func:`reference_verdict`): does MA_g's ratio exceed MA_ref's?

The ``[pointers]`` section of an experiment file (read by ``goalscope pointers`` only) switches the reference and
sets its budget (:class:`PointersSection`).

May import: goalscope.analysis (stats), goalscope.envs, goalscope.errors, goalscope.inputs, goalscope.program.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from goalscope.analysis.stats import ALPHA, t_interval, t_test
from goalscope.envs.events import trust_modules
from goalscope.errors import ConfigError
from goalscope.inputs import MAX_STEPS, int_field, read_toml
from goalscope.program.config import ExperimentConfig, experiment_from_dict, file_defaults

REFERENCE_REWARD = "collect:0"  # MA_ref's reward; its fine-tunes move it to collect:1 like MA_g's
REF_BAR = 0.9  # MA_ref's fraction of the oracle on collect:0, as a run's evaluation.competence for MA
TESTED = ("the goal-conditioned agent's (‖Δ_reward‖ − ‖Δ_cue‖) / ‖Δ_control‖ exceeds a cue-blind agent's (moved "
          "from collect:0 to collect:1 by the same three fine-tunes)")


@dataclass(frozen=True)
class PointersSection:
    """``[pointers]`` of an experiment file: the cue-blind reference's switch and its training budget."""
    reference: bool = True  # train MA_ref and its three fine-tunes, and decide "objective as pointer" against it
    reference_steps: int = 0  # env steps of MA_ref on collect:0; 0 = base.steps (MA_g's budget)


def load_pointers_file(path: str | Path) -> tuple[ExperimentConfig, PointersSection]:
    """An experiment file for ``goalscope pointers``: the experiment (validated like ``load_experiment``) and its
    ``[pointers]`` section (defaults where the file has none)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"experiment file {str(path)!r} does not exist")
    data = file_defaults(read_toml(path))
    raw = data.pop("pointers", {})
    if not isinstance(raw, dict):
        raise ConfigError(f"pointers must be a table, got {raw!r}")
    for key in raw:
        if key not in ("reference", "reference_steps"):
            raise ConfigError(f"unknown key 'pointers.{key}' (known in pointers: reference, reference_steps)")
    if not isinstance(raw.get("reference", True), bool):
        raise ConfigError(f"pointers.reference must be true or false, got {raw['reference']!r}")
    steps = int_field(raw["reference_steps"], "pointers.reference_steps", 1, MAX_STEPS) if "reference_steps" in raw else 0
    env = data.get("env")
    if isinstance(env, dict) and isinstance(env.get("id"), str) and ":" in env["id"]:
        trust_modules([env["id"].split(":", 1)[0]])  # the user's own file, as load_experiment does
    return experiment_from_dict(data), PointersSection(raw.get("reference", True), steps)


def reference_verdict(pointer, reference, alpha: float = ALPHA) -> dict:
    """"Objective as pointer", decided against the cue-blind reference: a one-sided paired t test over seeds that
    the goal-conditioned agent's (‖Δ_reward‖ − ‖Δ_cue‖) / ‖Δ_control‖ (``pointer``, one value per seed) exceeds the
    reference's (``reference``, the same seeds in the same order). A seed missing on either side is left out.

    Returns the test's numbers: the mean difference with its one-sided (1 − alpha) interval [low, ∞), which excludes
    0 exactly when p < alpha, and the verdict in words."""
    a, b = np.asarray(pointer, float), np.asarray(reference, float)
    ok = np.isfinite(a) & np.isfinite(b)
    d = (a - b)[ok]
    m, low, _ = t_interval(d, level=1 - 2 * alpha)  # the lower end of a two-sided 1 − 2·alpha interval
    p = t_test(d, "greater") if len(d) else math.nan
    out = {"test": f"one-sided paired t over seeds that {TESTED}", "seeds": int(len(d)),
           "pointer": round(float(a[ok].mean()), 4) if len(d) else math.nan,
           "reference": round(float(b[ok].mean()), 4) if len(d) else math.nan,
           "difference": round(m, 4), "one_sided_low": round(low, 4), "p": p, "alpha": alpha,
           "passes": bool(len(d) >= 2 and p < alpha)}
    if len(d) < 2:
        out["verdict"] = (f"undecided against the cue-blind reference: {len(d)} seed paired with it, and a t test "
                          "needs two or more")
        return out
    numbers = (f"goal-conditioned {out['pointer']:+.2f}, cue-blind {out['reference']:+.2f}: difference {m:+.2f}, "
               f"one-sided {1 - alpha:.0%} interval [{low:+.2f}, ∞), p = {p:.3f}, paired t over {len(d)} seeds")
    if out["passes"]:
        out["verdict"] = (f"objective as pointer, supported against the cue-blind reference: {TESTED} ({numbers})")
    else:
        out["verdict"] = (f"objective as pointer, not shown against the cue-blind reference: it was tested whether "
                          f"{TESTED}, and the gap between a reward change and a cue change is not reliably larger "
                          f"than in an agent whose cue points at nothing ({numbers})")
    return out
