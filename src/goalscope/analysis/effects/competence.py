"""The competence gate: is MA (and each MB) good enough at its reward for its "objective" to mean something?

An update signal from a half-trained agent mostly records that it is still learning, so every run states first how
well MA does RA and each MB its RB, and marks the ones below a bar:

- with an oracle (the object maze): mean fraction of the oracle's return over seeds, against
  ``evaluation.competence`` for MA (default 0.9) and ``evaluation.competence_mb`` for each MB (default 0.85), with
  the lower end of its t interval over seeds beside it;
- where no oracle exists (MiniGrid, Crafter, any Gymnasium env): the **lift** of the rewarded events over a
  reference that has the env's base rates, per seed the mean return minus the reference's on the same evaluation
  episodes, with a t interval over training seeds: MA against a uniformly random policy, each MB against its own
  MA (an event that happens five times an episode anyway, like drinking in Crafter, is no evidence of an
  objective; happening more often than under MA is). An interval that does not exclude 0 does not pass;
- always: the **preference** for the rewarded object types, per episode the objects of the rewarded types minus the
  mean of the other types, with a t interval over training seeds (reported beside the gate; it ignores base rates).

Pure functions over behaviour profiles; :func:`competence` reads a finished run's profiles.

May import: goalscope.analysis.stats, goalscope.envs, goalscope.program.
"""

from __future__ import annotations

import numpy as np

from goalscope.envs.rewards import Reward
from goalscope.analysis.stats import t_interval


def preference(counts: np.ndarray, reward: Reward) -> np.ndarray:
    """Per episode: mean count of ``reward``'s rewarded types minus the mean count of the other types."""
    counts = np.asarray(counts, dtype=np.float64)
    paid = np.asarray(reward.weights) > 0
    if not paid.any() or paid.all():
        return np.full(len(counts), np.nan)
    return counts[:, paid].mean(1) - counts[:, ~paid].mean(1)


def lift(model_counts: np.ndarray, reference_counts: np.ndarray, reward: Reward) -> float:
    """Mean return under ``reward`` of a model minus a reference's, from their per-episode event counts (the same
    evaluation episodes): what the model earns beyond the reference's base rates."""
    w = np.asarray(reward.weights, dtype=np.float64)
    return float(np.mean(np.asarray(model_counts, np.float64) @ w) - np.mean(np.asarray(reference_counts, np.float64) @ w))


def verdict(fraction: float | None, pref_ci: tuple[float, float, float], bar: float,
            fraction_low: float = float("nan"), lift_ci: tuple[float, float, float] | None = None,
            reference: str = "") -> tuple[bool, str]:
    """(passes, plain words). The oracle decides where there is one (the mean over seeds against the bar, the lower
    end of its 95% t interval named when there is one); otherwise the lift over ``reference`` does (its t interval
    must exclude 0), and without a reference the preference interval."""
    m, lo, _ = pref_ci
    if fraction is not None and np.isfinite(fraction):
        low = f", 95% CI from {fraction_low:.1%}" if np.isfinite(fraction_low) else ""
        if fraction >= bar:
            return True, f"{fraction:.1%} of the oracle{low} (bar {bar:.0%})"
        return False, (f"only {fraction:.1%} of the oracle{low} (bar {bar:.0%}): its update signals may mostly be "
                       "learning noise")
    if lift_ci is not None:
        lm, llo, lhi = lift_ci
        if not np.isfinite(llo):
            return False, f"lift over {reference} not measurable with one seed ({lm:+.2f} return per episode)"
        words = f"{lm:+.2f} [{llo:+.2f}, {lhi:+.2f}] return per episode over {reference}"
        if llo > 0:
            return True, f"earns {words} (95% CI above 0)"
        return False, f"no significant lift: {words}; its update signals may mostly be learning noise"
    if np.isfinite(lo) and lo > 0:
        return True, f"prefers its rewarded objects by {m:+.2f} per episode (95% CI above 0)"
    if not np.isfinite(lo):
        return False, "preference not measurable (one seed, or a reward that pays for every type)"
    return False, f"no significant preference for its rewarded objects ({m:+.2f} per episode, CI includes 0)"


def competence(cfg, plan, run_dir, ok: set[str], oracle_fraction: dict[tuple[str, str], list[float]],
               random_counts: np.ndarray | None = None) -> dict:
    """``{model: {"reward", "fraction_of_oracle", "preference": [m, lo, hi], "lift": [m, lo, hi] | None, "passes",
    "verdict"}}`` for MA and every MB of a run, from the profiles of its finished jobs. ``random_counts``: a
    uniformly random policy's event counts on the evaluation episodes, MA's reference where there is no oracle."""
    from goalscope.program.jobs import load_profile

    roles = {"MA": cfg.ra, **{f"MB[{rb.name}]": rb for rb in cfg.rbs()}}
    per_seed: dict[str, list[float]] = {}
    lifts: dict[str, list[float]] = {}
    counts = {(model, seed): load_profile(run_dir, key, fname).counts
              for _, model, seed, key, fname in plan.models() if model in roles and key in ok}
    for (model, seed), c in counts.items():
        per_seed.setdefault(model, []).append(float(np.mean(preference(c, roles[model]))))
        reference = random_counts if model == "MA" else counts.get(("MA", seed))
        if reference is not None:
            lifts.setdefault(model, []).append(lift(c, reference, roles[model]))
    out = {}
    for model, reward in roles.items():
        if model not in per_seed:
            continue
        bar = cfg.evaluation.competence if model == "MA" else cfg.evaluation.competence_mb
        fracs = oracle_fraction.get((model, reward.name))
        frac_ci = t_interval(fracs) if fracs else None
        ci = t_interval(per_seed[model])
        lift_ci = t_interval(lifts[model]) if model in lifts and not fracs else None
        passes, words = verdict(frac_ci[0] if frac_ci else None, ci, bar, frac_ci[1] if frac_ci else float("nan"),
                                lift_ci, "a random policy" if model == "MA" else "MA")
        out[model] = {"reward": reward.name, "fraction_of_oracle": frac_ci[0] if frac_ci else None,
                      "fraction_of_oracle_ci": [round(x, 4) for x in frac_ci] if frac_ci else None, "bar": bar,
                      "preference": [round(x, 4) for x in ci], "seeds": len(per_seed[model]), "passes": passes,
                      "lift": [round(x, 4) for x in lift_ci] if lift_ci is not None else None, "verdict": words}
    return out


def below_gate(summary: dict) -> list[str]:
    """The models (MA, MB[...]) a run's summary marks below their competence bar: while there are any, headline
    verdicts are withheld as not interpretable (the report's cards, the top of scorecard.md)."""
    return [m for m, c in (summary.get("competence") or {}).items() if not c.get("passes")]
