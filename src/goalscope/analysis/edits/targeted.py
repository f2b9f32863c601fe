"""Reward -> weights (issue 14), targeted edits: MA + mask_k ⊙ Δ_i with the top-k% of a heatmap (the run's own and
one rebuilt without RB_i), against the same k% by |Δ_i|, at random, by MA's Fisher alone and by the RA control's
drift; the specific lean recovered, RA return kept, and lean per unit of weight changed (relative to the whole Δ_i).
MA's Fisher is cached in ``RUN/edits/fisher/``.

May import: goalscope.analysis (records, stats, edits.common, effects.superposition,
validate.validation), goalscope.signals and
below.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from goalscope.analysis.edits.common import EDIT_FRACTIONS, EditRun, add, direction_seed, metrics, rounded, seed_ci
from goalscope.analysis.records import record
from goalscope.analysis.stats import MIN_SEEDS, holm
from goalscope.errors import GoalscopeError
from goalscope.outputs import atomic_write_bytes
from goalscope.signals import delta as sig


def targeted(er: EditRun, fractions=EDIT_FRACTIONS, heatmap: str = "ties") -> tuple[dict, list[dict]]:
    """MA + top-k% of Δ_i by each ranking, per MA seed and RB; each heatmap judged against every null: (result,
    records)."""
    from goalscope.analysis.validate.validation import compare_family
    from goalscope.inputs import read_safetensors
    from goalscope.signals import aggregators as agg

    cfg, ra = er.cfg, er.cfg.ra
    heat_path = er.path / "heatmaps" / f"{heatmap}.safetensors"
    heat_file = read_safetensors(heat_path, "recompute the heatmaps with `goalscope run EXPERIMENT --out RUN --force "
                                            "analysis`") if heat_path.exists() else {}
    names = {"heatmap": f"heatmap {heatmap} (all RBs)", "held": f"heatmap {heatmap} (without RB_i)",
             "abs": "|Δ_i|", "random": "random", "fisher": "Fisher alone (MA)", "control": "|Δ_ctrl| (RA control drift)"}
    res: dict = {}  # (ranking, rb, k) -> {"recovered": {s}, "ra_kept": {s}, "weight_fraction": {s}, ...}
    gains: dict = {}
    for s in cfg.seeds:
        ma_ck = er.ma(s)
        ma = ma_ck.state_dict
        ma_key = er.plan.ma[s]
        deltas = {rb: er.delta(s, rb) for rb in er.rbs() if er.plan.mb.get((s, rb)) in er.ok}
        ctrl_key = er.plan.control.get(s)
        control = sig.update_signal(ma, er.state(ctrl_key)) if ctrl_key in er.ok else None
        fisher = _cached_fisher(er, ma_ck, s)
        seed_heat = {k[len(f"seed{s}/"):]: v for k, v in heat_file.items() if k.startswith(f"seed{s}/")}
        for idx, (rb, delta) in enumerate(deltas.items()):
            own, others = er.types(er.reward(rb))
            mb_key = er.plan.mb[(s, rb)]
            p_ma = er.profile({"edit": "line", "seed": s, "ma": ma_key, "mb": mb_key, "t": 0.0}, lambda: ma)
            p_mb = er.profile({"edit": "line", "seed": s, "ma": ma_key, "mb": mb_key, "t": 1.0},
                              lambda: add(ma, (1.0, delta)))
            m_ma, m_mb = metrics(p_ma, own, others, ra), metrics(p_mb, own, others, ra)
            gain = float(m_mb["specific_lean"].mean() - m_ma["specific_lean"].mean())
            ra_ma = float(m_ma["ra_return"].mean())
            gains.setdefault(rb, {})[s] = gain
            full = float(sig.flatten(delta).double().norm())
            rankings = {names["abs"]: {k: v.abs() for k, v in delta.items()},
                        names["random"]: sig.random_scores_like(delta, torch.Generator().manual_seed(
                            direction_seed("edits-random-mask", s, rb))),
                        names["fisher"]: fisher}
            if control is not None:
                rankings[names["control"]] = {k: v.abs() for k, v in control.items()}
            if seed_heat:
                rankings[names["heatmap"]] = seed_heat
            rest = [d for r, d in deltas.items() if r != rb]
            if rest:
                try:
                    rankings[names["held"]] = agg.aggregate(heatmap, rest, controls=[control] if control is not None else [],
                                                            fisher=fisher)
                except GoalscopeError:
                    pass
            for rname, scores in rankings.items():
                for k in fractions:
                    mask = sig.topk_mask(scores, k)
                    p = er.profile({"edit": "targeted", "seed": s, "ma": ma_key, "mb": mb_key, "ranking": rname,
                                    "k": k, "heatmap": heatmap},
                                   lambda: sig.add_masked(ma, delta, mask))
                    m = metrics(p, own, others, ra)
                    moved = float(sig.flatten({n: mask[n].float() * delta[n] for n in delta}).double().norm())
                    rec = (float(m["specific_lean"].mean() - m_ma["specific_lean"].mean()) / gain if gain > 0 else math.nan)
                    d = res.setdefault((rname, rb, k), {})
                    d.setdefault("recovered", {})[s] = rec
                    d.setdefault("ra_kept", {})[s] = float(m["ra_return"].mean()) / ra_ma if ra_ma > 0 else math.nan
                    d.setdefault("weight_fraction", {})[s] = moved / full if full > 0 else math.nan
                    d.setdefault("lean_per_weight", {})[s] = rec / (moved / full) if moved > 0 else math.nan
    # Per seed: the mean over RBs whose MB gained a specific lean; seeds are the units.
    out = {"fractions": list(fractions), "heatmap": heatmap, "rankings": {}, "mb_lean_gain": {
        rb: rounded(np.mean(list(v.values()))) for rb, v in gains.items()}, "seeds": cfg.seeds,
        "measure": "fraction of MB_i's specific-lean gain recovered by MA + mask ⊙ Δ_i (mean over RBs per seed)",
        "lean_per_weight": "recovered fraction / (‖mask ⊙ Δ_i‖ / ‖Δ_i‖): 1 = as much lean per unit of weight "
                           "change as the whole update"}
    rows = []
    per_seed: dict = {}
    rnames = list(dict.fromkeys(r for r, _, _ in res))
    for rname in rnames:
        for k in fractions:
            for m in ("recovered", "ra_kept", "weight_fraction", "lean_per_weight"):
                vals = []
                for s in cfg.seeds:
                    xs = [res[(rname, rb, k)][m].get(s) for rb in er.rbs() if (rname, rb, k) in res
                          and gains.get(rb, {}).get(s, 0) > 0]
                    xs = [x for x in xs if x is not None and np.isfinite(x)]
                    vals.append(float(np.mean(xs)) if xs else math.nan)
                ci = seed_ci(vals)
                out["rankings"].setdefault(rname, {}).setdefault(m, []).append([rounded(x) for x in ci])
                per_seed.setdefault(rname, {})[f"{m}@{k:g}"] = vals
                rows.append(record("targeted", rname, "", None, m, *ci, detail=f"k={k:g}; t over {len(vals)} MA seeds"))
            for rb in er.rbs():
                if (rname, rb, k) in res:
                    d = res[(rname, rb, k)]["recovered"]
                    rows.append(record("targeted", rname, rb, None, "recovered", *seed_ci(list(d.values())), detail=f"k={k:g}"))
    # Verdicts: each heatmap ranking against every null, one-sided paired t over MA seeds, Holm over the family.
    judged = [n for n in (names["heatmap"], names["held"]) if n in per_seed]
    nulls = [n for n in (names["abs"], names["random"], names["fisher"], names["control"]) if n in per_seed]
    tests = []
    for k in fractions:
        scores = {n: {"test": per_seed[n][f"recovered@{k:g}"]} for n in per_seed}
        for t in compare_family(scores, "test", judged, nulls=nulls):
            tests.append({**t, "k": k})
    for t, adj in zip(tests, holm([t["p"] for t in tests])):
        t["p_holm"] = rounded(adj, 5)
        t["p"] = rounded(t["p"], 5)
        t["beaten"] = bool(t["p_holm"] is not None and t["p_holm"] < 0.05 and t["diff"][1] > 0)
        rows.append(record("targeted", t["ranking"], "", None, f"recovered_minus_{t['null']}", *t["diff"],
                           detail=f"k={t['k']:g}; p={t['p']} holm={t['p_holm']} of {len(tests)}"))
    out["tests"] = tests
    out["family"] = {"tests": len(tests), "correction": "Holm-Bonferroni", "seeds": len(cfg.seeds),
                     "test": "one-sided paired t over per-seed means (heatmap > null)", "min_seeds": MIN_SEEDS}
    return out, rows


def _cached_fisher(er: EditRun, ma_ck, s: int) -> dict:
    from safetensors.torch import save

    from goalscope.analysis.effects.superposition import ma_fisher
    from goalscope.inputs import read_safetensors

    path = er.out / "fisher" / f"{er.plan.ma[s]}-{er.cfg.superpose.fisher_samples}.safetensors"
    if path.exists():
        try:
            return read_safetensors(path)
        except GoalscopeError:
            pass  # a damaged cache entry is missing: computed again below
    f = ma_fisher(ma_ck, er.cfg.superpose.fisher_samples, s)
    atomic_write_bytes(path, save({k: v.contiguous() for k, v in f.items()}))
    return f
