"""The competence gate: is MA (and each MB) good enough at its reward for its "objective" to mean something?

An update signal from a half-trained agent mostly records that it is still learning, so every run states first how
well MA does RA and each MB its RB, and marks the ones below a bar:

- with an oracle (the object maze): mean fraction of the oracle's return over seeds, against
  ``evaluation.competence`` for MA (default 0.9) and ``evaluation.competence_mb`` for each MB (default 0.85), with
  the lower end of its t interval over seeds beside it;
- always (and alone where no oracle exists, e.g. MiniGrid): the **preference** for the rewarded object types, per
  episode the objects of the rewarded types minus the mean of the other types, with a t interval over training
  seeds; an agent whose interval does not exclude 0 has shown no preference for what it is rewarded for.

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


def verdict(fraction: float | None, pref_ci: tuple[float, float, float], bar: float,
            fraction_low: float = float("nan")) -> tuple[bool, str]:
    """(passes, plain words). The oracle decides where there is one (the mean over seeds against the bar, the lower
    end of its 95% t interval named when there is one); otherwise the preference interval does."""
    m, lo, _ = pref_ci
    if fraction is not None and np.isfinite(fraction):
        low = f", 95% CI from {fraction_low:.1%}" if np.isfinite(fraction_low) else ""
        if fraction >= bar:
            return True, f"{fraction:.1%} of the oracle{low} (bar {bar:.0%})"
        return False, (f"only {fraction:.1%} of the oracle{low} (bar {bar:.0%}): its update signals may mostly be "
                       "learning noise")
    if np.isfinite(lo) and lo > 0:
        return True, f"prefers its rewarded objects by {m:+.2f} per episode (95% CI above 0)"
    if not np.isfinite(lo):
        return False, "preference not measurable (one seed, or a reward that pays for every type)"
    return False, f"no significant preference for its rewarded objects ({m:+.2f} per episode, CI includes 0)"


def competence(cfg, plan, run_dir, ok: set[str], oracle_fraction: dict[tuple[str, str], list[float]]) -> dict:
    """``{model: {"reward", "fraction_of_oracle", "preference": [m, lo, hi], "passes", "verdict"}}`` for MA and every
    MB of a run, from the profiles of its finished jobs."""
    from goalscope.program.jobs import load_profile

    roles = {"MA": cfg.ra, **{f"MB[{rb.name}]": rb for rb in cfg.rbs()}}
    per_seed: dict[str, list[float]] = {}
    for _, model, _seed, key, fname in plan.models():
        if model in roles and key in ok:
            pref = preference(load_profile(run_dir, key, fname).counts, roles[model])
            per_seed.setdefault(model, []).append(float(np.mean(pref)))
    out = {}
    for model, reward in roles.items():
        if model not in per_seed:
            continue
        bar = cfg.evaluation.competence if model == "MA" else cfg.evaluation.competence_mb
        fracs = oracle_fraction.get((model, reward.name))
        frac_ci = t_interval(fracs) if fracs else None
        ci = t_interval(per_seed[model])
        passes, words = verdict(frac_ci[0] if frac_ci else None, ci, bar, frac_ci[1] if frac_ci else float("nan"))
        out[model] = {"reward": reward.name, "fraction_of_oracle": frac_ci[0] if frac_ci else None,
                      "fraction_of_oracle_ci": [round(x, 4) for x in frac_ci] if frac_ci else None, "bar": bar,
                      "preference": [round(x, 4) for x in ci], "seeds": len(per_seed[model]), "passes": passes,
                      "verdict": words}
    return out
