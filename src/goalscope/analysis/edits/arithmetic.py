"""Reward -> weights (issue 14), objective arithmetic and transfer: MA + t·Δ_i (scaling), the mean of Δ_i over the
two fine-tune seeds of one MA, Δ_i taken from *another MA seed* (units do not line up: the expected failure), and
MA + Δ_i + Δ_j against MA fine-tuned on ``collect:i+collect:j`` (a new ``finetune`` job per pair and MA seed), each
against a random direction of the same per-tensor norms; as behaviour profiles and the fraction of the real
fine-tune's profile gap closed.

May import: goalscope.analysis (records, edits.common), goalscope.program, goalscope.rl, goalscope.envs and below.
"""

from __future__ import annotations

import math

import numpy as np

from goalscope.analysis.edits.common import (METRICS, RANDOM_DIRECTIONS, EditRun, add, mean_profile,
                                             metrics, random_like, rounded, seed_ci)
from goalscope.analysis.records import record
from goalscope.errors import ConfigError, GoalscopeError
from goalscope.program.jobs import Job
from goalscope.rl.evaluation import Profile


def pair_rewards(er: EditRun, pairs) -> list:
    """[(reward, [its two RB names])] for each pair reward text; each must add two RB types over RA."""
    from goalscope.envs.rewards import parse_reward

    out = []
    for text in pairs:
        r = parse_reward(text, er.cfg.env.n_types)
        own, _ = er.types(r)
        if len(own) != 2:
            raise ConfigError(f"pair {text!r}: expected two object types that RA does not reward, got {own}")
        names = [f"collect:{k}" for k in own]
        missing = [n for n in names if n not in er.rbs()]
        if missing:
            raise ConfigError(f"pair {text!r}: {missing[0]} is not an RB of this run ({', '.join(er.rbs())})")
        out.append((r, names))
    return out


def default_pairs(er: EditRun, most: int = 2) -> tuple[str, ...]:
    """The pairs ``edits`` fine-tunes on when ``--pairs`` is not given, from the run's own RBs: its single-type
    RBs (``collect:k`` of a type RA does not reward) two by two in order, at most ``most`` pairs, none when it has
    fewer than two (``collect:1+collect:2``, ``collect:3+collect:4`` on the default 5-type run)."""
    from goalscope.envs.rewards import parse_reward

    singles = []
    for name in er.rbs():
        try:
            own, _ = er.types(parse_reward(name, er.cfg.env.n_types))
        except GoalscopeError:
            continue  # an RB by the env's own type names: pairs of those are named with --pairs
        if len(own) == 1 and name == f"collect:{own[0]}":
            singles.append(name)
    return tuple(f"{a}+{b}" for a, b in zip(singles[0::2], singles[1::2]))[:most]


def pair_jobs(er: EditRun, pairs) -> dict:
    """(seed, pair name) -> a finetune job: MA on collect:i+collect:j for the fine-tune budget, fine-tune seed 0."""
    ppo = er.cfg.ppo_config(er.cfg.finetune.steps).to_json()
    jobs = {}
    for s in er.cfg.seeds:
        ma_key = er.plan.ma[s]
        for r, _ in pair_rewards(er, pairs):
            jobs[(s, r.name)] = Job("finetune", {"parent": ma_key, "reward": r.to_json(), "ppo": ppo, "seed": 1000 + s,
                                                 "evaluation": er.ev()}, f"MB {r.name} seed {s}", (ma_key,))
    return jobs


def profile_gap_closed(edit: np.ndarray, ma: np.ndarray, target: np.ndarray) -> float:
    """1 - L1(edit, target) / L1(MA, target) over mean objects per type: 1 = the target's profile, 0 = no closer
    than MA, negative = further away than MA."""
    d0 = float(np.abs(ma - target).sum())
    return 1 - float(np.abs(edit - target).sum()) / d0 if d0 > 0 else math.nan


def arithmetic(er: EditRun, pairs=None, workers: int = 1, scales=(0.5, 1.0, 2.0),
               n_random: int = RANDOM_DIRECTIONS) -> tuple[dict, list[dict]]:
    """Scaling, fine-tune-seed means, transfer across MA seeds and pair sums against real fine-tunes (``pairs``:
    reward texts, None for :func:`default_pairs`): (result, records)."""
    cfg, ra = er.cfg, er.cfg.ra
    pairs = default_pairs(er) if pairs is None else pairs
    jobs = pair_jobs(er, pairs) if pairs else {}
    if jobs:
        er.run_jobs(list(jobs.values()), workers, "arithmetic fine-tunes")
    table: dict = {}  # (target, edit) -> {"counts": {seed: mean counts}, "gap": {seed}, metric: {seed}}
    seeds = cfg.seeds

    def put(target, edit, s, p: Profile, own, others, ma_counts, target_counts):
        d = table.setdefault((target, edit), {})
        counts = np.asarray(p.counts, float).mean(0)
        d.setdefault("counts", {})[s] = counts
        d.setdefault("gap_closed", {})[s] = profile_gap_closed(counts, ma_counts, target_counts)
        for m, v in metrics(p, own, others, ra).items():
            d.setdefault(m, {})[s] = float(np.mean(v))
        if len(own) > 1:  # pairs: how evenly it collects the two new types
            d.setdefault("pair_min_objects", {})[s] = float(np.asarray(p.counts, float)[:, own].mean(0).min())

    for rb in er.rbs():
        own, others = er.types(er.reward(rb))
        for idx, s in enumerate(seeds):
            ma_key, mb_key = er.plan.ma[s], er.plan.mb.get((s, rb))
            if mb_key not in er.ok:
                continue
            ma = er.state(ma_key)
            delta = er.delta(s, rb)
            p_ma = er.profile({"edit": "line", "seed": s, "ma": ma_key, "mb": mb_key, "t": 0.0}, lambda: ma)
            p_mb = er.profile({"edit": "line", "seed": s, "ma": ma_key, "mb": mb_key, "t": 1.0},
                              lambda: add(ma, (1.0, delta)))
            c_ma, c_mb = p_ma.counts.mean(0), p_mb.counts.mean(0)
            put(rb, "MA", s, p_ma, own, others, c_ma, c_mb)
            put(rb, "MB (real fine-tune)", s, p_mb, own, others, c_ma, c_mb)
            for t in scales:
                if t == 1.0:
                    continue
                p = er.profile({"edit": "line", "seed": s, "ma": ma_key, "mb": mb_key, "t": float(t)},
                               lambda t=t: add(ma, (t, delta)))
                put(rb, f"MA + {t:g}·Δ", s, p, own, others, c_ma, c_mb)
            rep_key = er.mb_key(s, rb, 1)
            if rep_key in er.ok:
                d1 = er.delta(s, rb, 1)
                p = er.profile({"edit": "stage", "seed": s, "key": rep_key}, lambda: add(ma, (1.0, d1)))
                put(rb, "MA + Δ (other fine-tune seed) = its MB", s, p, own, others, c_ma, c_mb)
                p = er.profile({"edit": "ft_mean", "seed": s, "ma": ma_key, "mb": [mb_key, rep_key]},
                               lambda: add(ma, (0.5, delta), (0.5, d1)))
                put(rb, "MA + mean Δ of 2 fine-tune seeds", s, p, own, others, c_ma, c_mb)
            other_s = seeds[(idx + 1) % len(seeds)]
            if other_s != s and er.plan.mb.get((other_s, rb)) in er.ok:
                d_other = er.delta(other_s, rb)
                p = er.profile({"edit": "cross_ma", "seed": s, "ma": ma_key, "mb": er.plan.mb[(other_s, rb)],
                                "ma_other": er.plan.ma[other_s]}, lambda: add(ma, (1.0, d_other)))
                put(rb, "MA + Δ from another MA seed", s, p, own, others, c_ma, c_mb)
            if n_random:
                ps = [er.profile({"edit": "line_random", "seed": s, "ma": ma_key, "mb": mb_key, "t": 1.0, "j": j},
                                 lambda j=j: add(ma, (1.0, random_like(delta, s, rb, j)))) for j in range(n_random)]
                put(rb, "MA + random (norms of Δ)", s, mean_profile(ps), own, others, c_ma, c_mb)
    for r, (i, j) in pair_rewards(er, pairs) if pairs else []:
        own, others = er.types(r)
        for s in seeds:
            ma_key, key = er.plan.ma[s], jobs[(s, r.name)].key
            if key not in er.ok or any(er.plan.mb.get((s, x)) not in er.ok for x in (i, j)):
                continue
            ma = er.state(ma_key)
            di, dj = er.delta(s, i), er.delta(s, j)
            p_ma = er.profile({"edit": "line", "seed": s, "ma": ma_key, "mb": er.plan.mb[(s, i)], "t": 0.0}, lambda: ma)
            p_real = er.stage_profile(key, s)
            c_ma, c_real = p_ma.counts.mean(0), p_real.counts.mean(0)
            put(r.name, "MA", s, p_ma, own, others, c_ma, c_real)
            put(r.name, "MB (real fine-tune on the pair)", s, p_real, own, others, c_ma, c_real)
            for name, coef in (("MA + Δ_i + Δ_j", 1.0), ("MA + (Δ_i + Δ_j)/2", 0.5)):
                p = er.profile({"edit": "sum", "seed": s, "ma": ma_key, "mb": [er.plan.mb[(s, i)], er.plan.mb[(s, j)]],
                                "coef": coef}, lambda c=coef: add(ma, (c, di), (c, dj)))
                put(r.name, name, s, p, own, others, c_ma, c_real)
            for name, single in (("MA + Δ_i alone", di), ("MA + Δ_j alone", dj)):
                p = er.profile({"edit": "line", "seed": s, "ma": ma_key,
                                "mb": er.plan.mb[(s, i if single is di else j)], "t": 1.0},
                               lambda d=single: add(ma, (1.0, d)))
                put(r.name, name, s, p, own, others, c_ma, c_real)
            if n_random:
                both = {k: di[k] + dj[k] for k in di}
                ps = [er.profile({"edit": "sum_random", "seed": s, "ma": ma_key,
                                  "mb": [er.plan.mb[(s, i)], er.plan.mb[(s, j)]], "j": q},
                                 lambda q=q: add(ma, (1.0, random_like(both, s, r.name, q)))) for q in range(n_random)]
                put(r.name, "MA + random (norms of Δ_i + Δ_j)", s, mean_profile(ps), own, others, c_ma, c_real)
    return summarise_arithmetic(table, cfg)


def summarise_arithmetic(table: dict, cfg) -> tuple[dict, list[dict]]:
    """Per target and edit: mean counts per type and a t interval over MA seeds of each measure."""
    rows, out = [], {"targets": {}, "interval": "95% Student t over MA seeds", "seeds": cfg.seeds,
                     "gap_closed": "1 - L1(edit, real fine-tune) / L1(MA, real fine-tune) over mean objects per type"}
    for (target, edit), d in table.items():
        entry = {"seeds": len(d["counts"]),
                 "counts": np.round(np.mean(list(d["counts"].values()), axis=0), 3).tolist()}
        for m in ("gap_closed", *METRICS, "pair_min_objects"):
            if m in d:
                ci = seed_ci(list(d[m].values()))
                entry[m] = [rounded(x) for x in ci]
                rows.append(record("arithmetic", edit, target, None, m, *ci,
                                   detail=f"seeds={len(d[m])}; t interval over MA seeds"))
        out["targets"].setdefault(target, {})[edit] = entry
    return out, rows
