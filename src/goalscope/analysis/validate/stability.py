"""Stability of top-1% |Δ| sets: where units line up (fine-tune seeds of one MA) per parameter, each Jaccard beside
its tensor-stratified chance level; across MA seeds, whose units do not line up, only tensor-level summaries.

May import: goalscope.analysis (records, stats, validate.grafts), goalscope.program, goalscope.signals and below.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np

from goalscope.agents.checkpoints import load_checkpoint
from goalscope.analysis.records import record
from goalscope.analysis.stats import spearman
from goalscope.analysis.validate.grafts import STABILITY_FRACTION
from goalscope.program.jobs import stage_dir
from goalscope.signals import delta as sig
from goalscope.signals.delta import jaccard


def _finite_mean(xs) -> float | None:
    xs = [x for x in xs if np.isfinite(x)]
    return round(float(np.mean(xs)), 4) if xs else None


def stability(cfg, plan, run_dir: Path, rows: list) -> dict:
    """Stability of top-1% |Δ| sets where units line up, each Jaccard beside its tensor-stratified chance level.

    Within an MA (fine-tune seeds share MA's units): same RB across fine-tune seeds, different RBs, RB vs the RA
    control, control vs control. Across MA seeds units do not line up, so only tensor-level summaries are compared:
    the rank correlation of per-tensor enrichment (share of the top-1% over share of parameters)."""
    f = STABILITY_FRACTION
    masks: dict = {}
    for s in cfg.seeds:
        ma = load_checkpoint(stage_dir(run_dir, plan.ma[s])).state_dict
        keys = {(r.name, 0): plan.mb[(s, r.name)] for r in cfg.rbs()}
        keys.update({(rb, r): k for (s2, rb, r), k in plan.mb_rep.items() if s2 == s})
        if s in plan.control:
            keys[("control", 0)] = plan.control[s]
        keys.update({("control", r): k for (s2, r), k in plan.control_rep.items() if s2 == s})
        for (name, r), key in keys.items():
            d = sig.update_signal(ma, load_checkpoint(stage_dir(run_dir, key)).state_dict)
            masks[(s, name, r)] = sig.topk_mask({k: v.abs() for k, v in d.items()}, f)
    rbs = [r.name for r in cfg.rbs()]
    groups: dict[str, list] = {"same RB, other fine-tune seed": [], "different RBs, same MA": [],
                               "RB vs RA control, same MA": [], "control vs control, other fine-tune seed": []}
    for s in cfg.seeds:
        reps = sorted({r for (s2, n, r) in masks if s2 == s})
        for a, b in itertools.combinations(reps, 2):
            groups["same RB, other fine-tune seed"] += [(masks[(s, rb, a)], masks[(s, rb, b)]) for rb in rbs
                                                       if (s, rb, a) in masks and (s, rb, b) in masks]
            if (s, "control", a) in masks and (s, "control", b) in masks:
                groups["control vs control, other fine-tune seed"].append((masks[(s, "control", a)], masks[(s, "control", b)]))
        groups["different RBs, same MA"] += [(masks[(s, a, 0)], masks[(s, b, 0)]) for a, b in itertools.combinations(rbs, 2)]
        if (s, "control", 0) in masks:
            groups["RB vs RA control, same MA"] += [(masks[(s, rb, 0)], masks[(s, "control", 0)]) for rb in rbs]
    within = {}
    for name, pairs in groups.items():
        if not pairs:
            within[name] = {"jaccard": None, "chance": None, "pairs": 0}
            continue
        j = [jaccard(sig.flatten(a), sig.flatten(b)) for a, b in pairs]
        c = [sig.jaccard_chance_stratified(a, b, seed=i) for i, (a, b) in enumerate(pairs)]
        within[name] = {"jaccard": round(float(np.mean(j)), 4), "chance": round(float(np.mean(c)), 4), "pairs": len(pairs),
                        "ratio_to_chance": round(float(np.mean(j) / np.mean(c)), 3) if np.mean(c) > 0 else None}
        rows.append(record("validation", "|Δ|", "", None, f"jaccard: {name}", within[name]["jaccard"],
                           detail=f"tensor-stratified chance {within[name]['chance']:.4f}; {len(pairs)} pairs"))
    # Across MA seeds: per-tensor enrichment of the top-1% set, rank-correlated between seeds.
    enrich = {(s, rb): sig.tensor_enrichment(masks[(s, rb, 0)]) for s in cfg.seeds for rb in rbs}
    same = [spearman(enrich[(a, rb)], enrich[(b, rb)]) for rb in rbs for a, b in itertools.combinations(cfg.seeds, 2)]
    diff = [spearman(enrich[(a, r1)], enrich[(b, r2)]) for r1, r2 in itertools.permutations(rbs, 2)
            for a, b in itertools.combinations(cfg.seeds, 2)]
    across = {"same RB": _finite_mean(same), "different RBs": _finite_mean(diff),
              "measure": "Spearman correlation of per-tensor enrichment of the top-1% |Δ| set between MA seeds"}
    for k in ("same RB", "different RBs"):
        if across[k] is not None:
            rows.append(record("validation", "|Δ|", "", None, f"tensor_enrichment_spearman_across_ma: {k}", across[k]))
    return {"top_fraction": f, "seeds_per_ma": cfg.finetune.seeds_per_ma, "within_ma": within, "across_ma": across,
            "chance_method": "tensor-stratified: each tensor keeps its count of top entries, placed at random within it"}
