"""Reward -> weights (issue 14), linearity: MA + t·Δ_i for t in ``T_GRID``, per RB, before and after the negate
stage's short RA retrain, with a random direction of the same per-tensor norms beside it.

The retrained points are ordinary ``negate`` jobs with alpha = -t (MA - alpha·Δ = MA + t·Δ), so they live in
``stages/`` like every other job and the experiment's own alpha = 1 stage is t = -1 here, reused rather than
retrained. t = 0 is MA (before retrain) and the run's retrained-MA control (after). Questions per curve: monotone?
where does capability break? is the negative side the mirror of the positive?

May import: goalscope.analysis (records, stats, edits.common), goalscope.program and below.
"""

from __future__ import annotations

import math

import numpy as np

from goalscope.analysis.edits.common import (BREAK_LEVEL, METRICS, RANDOM_DIRECTIONS, T_GRID, EditRun, add,
                                             mean_profile, metrics, random_like, rounded, seed_ci)
from goalscope.analysis.records import record
from goalscope.analysis.stats import t_test
from goalscope.errors import ConfigError
from goalscope.program.jobs import Job, job_status


def linearity_jobs(er: EditRun, t_grid=T_GRID, rbs=None) -> dict:
    """(seed, rb, t) -> the negate job that puts MA + t·Δ_i through the negate stage's retrain (t != 0)."""
    cfg = er.cfg
    ppo = cfg.ppo_config(cfg.negate.retrain_steps).to_json()
    jobs = {}
    for s in cfg.seeds:
        ma_key = er.plan.ma[s]
        for rb in rbs or er.rbs():
            mb_key = er.plan.mb[(s, rb)]
            for t in t_grid:
                if t == 0:
                    continue
                alpha = float(-t)
                spec = {"ma": ma_key, "mb": mb_key, "alpha": alpha, "direction": "delta", "ppo": ppo,
                        "seed": 2000 + s, "evaluation": er.ev()}
                jobs[(s, rb, t)] = Job("negate", spec, f"linearity {rb} t={t:g} seed {s}", (ma_key, mb_key))
    return jobs


def linearity(er: EditRun, t_grid=T_GRID, retrain: bool = True, workers: int = 1, n_random: int = RANDOM_DIRECTIONS,
              rbs=None) -> tuple[dict, list[dict]]:
    """The curves MA + t·Δ_i per RB (no retrain, random direction, retrained) and their questions: (result, records)."""
    cfg, ra = er.cfg, er.cfg.ra
    rbs = rbs or er.rbs()
    t_grid = tuple(sorted(set(float(t) for t in t_grid) | {0.0}))
    jobs = linearity_jobs(er, t_grid, rbs) if retrain else {}
    if jobs:
        if not cfg.negate.enabled:
            raise ConfigError("the retrained curve needs the negate stage's retrain budget (negate.enabled)")
        er.run_jobs(list(jobs.values()), workers, "linearity retrain")
    curves: dict = {}  # (path, rb, t) -> {metric: per-seed means}
    seeds_used: dict = {}
    for rb in rbs:
        own, others = er.types(er.reward(rb))
        for s in cfg.seeds:
            ma_key, mb_key = er.plan.ma[s], er.plan.mb.get((s, rb))
            if mb_key not in er.ok:
                continue
            ma = er.state(ma_key)
            delta = er.delta(s, rb)
            rnd = [random_like(delta, s, rb, j) for j in range(n_random)]
            for t in t_grid:
                p = er.profile({"edit": "line", "seed": s, "ma": ma_key, "mb": mb_key, "t": t},
                               lambda: add(ma, (t, delta)))
                _acc(curves, ("no retrain", rb, t), s, metrics(p, own, others, ra))
                if n_random:
                    ps = [er.profile({"edit": "line_random", "seed": s, "ma": ma_key, "mb": mb_key, "t": t, "j": j},
                                     lambda d=d: add(ma, (t, d))) for j, d in enumerate(rnd)]
                    _acc(curves, ("random, no retrain", rb, t), s, metrics(mean_profile(ps), own, others, ra))
                if retrain:
                    if t == 0:
                        key = er.plan.retrain_control.get(s)
                    else:
                        key = jobs[(s, rb, t)].key
                    if key in er.ok or (job_status(er.path, key) or {}).get("status") == "ok":
                        p = er.stage_profile(key, s)
                        _acc(curves, ("retrained", rb, t), s, metrics(p, own, others, ra))
            seeds_used.setdefault(rb, []).append(s)
    return summarise_linearity(curves, t_grid, rbs, cfg)


def _acc(store: dict, key, seed, m: dict) -> None:
    d = store.setdefault(key, {})
    for name, v in m.items():
        d.setdefault(name, {})[seed] = float(np.mean(v))


def summarise_linearity(curves: dict, t_grid, rbs, cfg) -> tuple[dict, list[dict]]:
    """Per path, RB, metric and t: a t interval over MA seeds and the paired difference with t = 0."""
    rows = []
    out = {"t": list(t_grid), "paths": {}, "questions": {}, "seeds": cfg.seeds,
           "interval": "95% Student t over MA seeds (per-seed episode means)",
           "retrain_steps": cfg.negate.retrain_steps}
    paths = sorted({k[0] for k in curves}, key=["no retrain", "retrained", "random, no retrain"].index)
    for path in paths:
        for rb in rbs:
            for m in METRICS:
                pts = []
                for t in t_grid:
                    d = curves.get((path, rb, t), {}).get(m, {})
                    ci = seed_ci(list(d.values())) if d else [math.nan] * 3
                    pts.append(ci)
                    base = curves.get((path, rb, 0.0), {}).get(m, {})
                    common = sorted(set(d) & set(base))
                    diff = seed_ci([d[s] - base[s] for s in common]) if common else [math.nan] * 3
                    rows.append(record("linearity", f"MA + t·Δ [{path}]", rb, None, m, *ci,
                                       detail=f"t={t:g}; seeds={len(d)}; t interval over MA seeds"))
                    rows.append(record("linearity", f"MA + t·Δ [{path}]", rb, None, f"{m}_minus_t0", *diff,
                                       detail=f"t={t:g}; paired with t=0 of this path"))
                out["paths"].setdefault(path, {}).setdefault(rb, {})[m] = [[rounded(x) for x in ci] for ci in pts]
            out["questions"].setdefault(path, {})[rb] = linearity_questions(curves, path, rb, t_grid, cfg.seeds)
    return out, rows


def linearity_questions(curves: dict, path: str, rb: str, t_grid, seeds) -> dict:
    """Monotone? Where does capability break? Is the negative side the mirror of the positive?"""
    def per_seed(t, m):
        return curves.get((path, rb, t), {}).get(m, {})

    lean = [np.mean(list(per_seed(t, "specific_lean").values())) if per_seed(t, "specific_lean") else np.nan
            for t in t_grid]
    steps = np.diff(np.asarray(lean))
    finite = steps[np.isfinite(steps)]
    from goalscope.analysis.stats import spearman

    q: dict = {"lean_by_t": [rounded(x) for x in lean],
               "monotone_increasing": bool(len(finite) == len(steps) and (finite >= 0).all()),
               "spearman_t_lean": rounded(spearman(np.asarray(t_grid), np.asarray(lean))),
               "monotone_seeds": None}
    per = []
    for s in seeds:
        vals = [per_seed(t, "specific_lean").get(s) for t in t_grid]
        if all(v is not None for v in vals):
            per.append(bool((np.diff(vals) >= 0).all()))
    q["monotone_seeds"] = f"{sum(per)}/{len(per)}"
    base = per_seed(0.0, "all_objects")
    for side, ts in (("positive", [t for t in t_grid if t > 0]), ("negative", sorted([t for t in t_grid if t < 0], reverse=True))):
        brk = None
        for t in ts:
            d = per_seed(t, "all_objects")
            common = sorted(set(d) & set(base))
            if common and np.mean([d[s] for s in common]) < BREAK_LEVEL * np.mean([base[s] for s in common]):
                brk = t
                break
        q[f"capability_break_{side}"] = brk
    mirror = {}
    base_lean = per_seed(0.0, "specific_lean")
    for t in (x for x in t_grid if x > 0 and -x in t_grid):
        up, down = per_seed(t, "specific_lean"), per_seed(-t, "specific_lean")
        common = sorted(set(up) & set(down) & set(base_lean))
        if not common:
            continue
        gain = np.array([up[s] - base_lean[s] for s in common])
        drop = np.array([base_lean[s] - down[s] for s in common])
        # asymmetry = gain - drop: 0 for a mirror (the lean falls below t=0 as far as it rises above it)
        ratio = float(drop.mean() / gain.mean()) if abs(gain.mean()) > 1e-9 else math.nan
        mirror[f"{t:g}"] = {"gain_at_plus_t": seed_ci(gain), "drop_at_minus_t": seed_ci(drop),
                            "asymmetry_gain_minus_drop": seed_ci(gain - drop), "p_asymmetry": rounded(t_test(gain - drop)),
                            "mirror_ratio": rounded(ratio)}
    q["mirror"] = mirror
    return q
