"""The behavioural tests of validation, per seed, and the localisation of a planted objective: grafts (MA plus the
top-k% of Δ by a ranking), ablations (MB with its top-k% reset to MA), the nulls every ranking is compared with,
and AUROC / precision@k against planted labels. :mod:`goalscope.analysis.validate.validation` runs them over a finished
experiment and judges them.

May import: goalscope.analysis (records, validate.planted, validate.causal, validate.entry, validate.reuse,
effects.superposition),
goalscope.program, goalscope.signals and below.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from goalscope.signals import aggregators as agg
from goalscope.signals import delta as sig
from goalscope.agents.checkpoints import load_checkpoint
from goalscope.errors import GoalscopeError
from goalscope.program.jobs import stage_dir
from goalscope.analysis.records import record
from goalscope.analysis.validate.reuse import model_evaluator
from goalscope.envs.rewards import lean_weights

GRAFT_FRACTIONS = (0.001, 0.01, 0.05, 0.25, 1.0)  # 100% is MB itself (not rerun); few points keep validate quick
ABLATION_FRACTIONS = (0.01, 0.05)
STABILITY_FRACTION = 0.01
VALIDATION_EPISODES = 128  # per graft point unless --episodes says otherwise: paired episodes keep this enough

# Rankings every localisation claim is measured against. None of the nulls knows which RB is being grafted, except
# another RB's mask, which knows where fine-tuning on *some* RB writes.
PER_RB = "|Δ_i|"
RANDOM = "random"
FISHER_NULL = "Fisher alone (MA)"
CONTROL_NULL = "|Δ_ctrl| (RA control drift)"
OTHER_RB_NULL = "another RB's |Δ_j|"
ATTRIBUTION = "|IG_i| (attribution)"  # integrated gradients of the behaviour change along MA -> MB_i
ATTRIBUTION_CONTROL = "|IG_i| from control"  # ... along the RA control -> MB_i (what continued training wrote, removed)
NULLS = (RANDOM, FISHER_NULL, CONTROL_NULL, OTHER_RB_NULL)
HELD_OUT = " (held-out)"
MAX_OTHER_RB_MASKS = 4
VERDICTS = ("RB-specific", "generic fine-tuning locus", "sensitivity only", "no better than random")


# ----------------------------------------------------------------------------------------------------------------
# Graft curves (pure)


def graft_area(recovered, fractions=GRAFT_FRACTIONS) -> float:
    """Mean recovery over the k grid's points below 100% (roughly log-spaced): 1 = everything recovered at the
    smallest k, 0 = nothing recovered before k = 100%. The k = 100% point is MB itself for every ranking, so it
    would only add the same constant to every area."""
    r = np.asarray(recovered, float)
    if len(r) != len(fractions):
        raise ValueError(f"{len(r)} recoveries for {len(fractions)} graft fractions")
    return float(np.mean(r[np.asarray(fractions, float) < 1]))


def smallest_k(fractions, recovered, level: float = 0.9) -> float:
    """The smallest fraction below 100% whose recovery reaches ``level`` (NaN when none does): k = 100% is MB
    itself for every ranking, so reaching the level only there says nothing about the ranking."""
    for k, r in zip(fractions, recovered):
        if k < 1 and r >= level:
            return k
    return math.nan


def _mean(rows) -> np.ndarray:
    """Column means over the masks of one ranking (a single mask's own values; NaN stays NaN)."""
    return np.mean(np.asarray(rows, dtype=np.float64), axis=0)


# ----------------------------------------------------------------------------------------------------------------
# Behavioural tests for one seed (a picklable job for the executor)


def specific_lean(profile, lean: np.ndarray) -> float:
    """Mean over episodes of the object counts weighted by ``lean`` (:func:`goalscope.envs.rewards.lean_weights`):
    for a one-hot RB, its objects minus the mean of the other non-RA types — a lean, not a general rise in
    collecting."""
    return float(np.mean(np.asarray(profile.counts, dtype=np.float64) @ np.asarray(lean, dtype=np.float64)))


def rb_targets(rb, ra) -> tuple[np.ndarray, np.ndarray]:
    """What a graft of RB's update is graded on: (its specific-lean weights, its raw weights over the types RA does
    not reward). The raw count of a one-hot RB is its own type's objects."""
    raw = np.where(np.asarray(ra.weights) > 0, 0.0, np.asarray(rb.weights, dtype=float))
    return lean_weights(rb, ra), raw


def graft_tests(ma: dict, mbs: dict, rankings: dict, evaluate, targets: dict, ra_return,
                graft_fractions=GRAFT_FRACTIONS, ablation_fractions=ABLATION_FRACTIONS) -> dict:
    """Graft and ablation curves of every ranking, for every RB of one MA (pure given ``evaluate``).

    ``mbs``: RB -> MB state; ``rankings``: RB -> {name: scores}; ``evaluate``: state -> Profile on fixed paired
    episodes; ``targets``: RB -> (lean weights, raw weights) over object types (:func:`rb_targets`);
    ``ra_return``: Profile -> RA return.
    Recovery is measured on the specific lean, (lean(graft) - lean(MA)) / (lean(MB) - lean(MA)), with the raw RB
    count's recovery and RA return (relative to MA) beside it. Grafting 100% of Δ is MB itself, so it is not rerun.
    A ranking given as a list of scores is a null made of several masks (another RB's mask: each other RB's):
    its graft and ablation numbers are the means over them.
    """
    p_ma = evaluate(ma)
    ra_ma = ra_return(p_ma)
    out = {"graft": {}, "ablation": {}}
    for rb, mb in mbs.items():
        lean, raw_w = targets[rb]
        delta = sig.update_signal(ma, mb)
        p_mb = evaluate(mb)
        base, gain = specific_lean(p_ma, lean), specific_lean(p_mb, lean) - specific_lean(p_ma, lean)
        raw_base = specific_lean(p_ma, raw_w)
        raw_gain = specific_lean(p_mb, raw_w) - raw_base
        ra_mb = ra_return(p_mb)
        g = {"gain": gain, "raw_gain": raw_gain, "lean": {}, "raw": {}, "ra": {}}
        abl = {}

        def recovered(p):  # lean and raw-RB recovery, RA return relative to MA
            return ((specific_lean(p, lean) - base) / gain if gain > 0 else math.nan,
                    (specific_lean(p, raw_w) - raw_base) / raw_gain if raw_gain > 0 else math.nan,
                    ra_return(p) / ra_ma if ra_ma > 0 else math.nan)

        def lost(p):  # lean lost and RA return kept by an ablation
            return ((gain + base - specific_lean(p, lean)) / gain if gain > 0 else math.nan,
                    ra_return(p) / ra_mb if ra_mb > 0 else math.nan)

        for name, scores in rankings[rb].items():
            masks = scores if isinstance(scores, list) else [scores]
            curve = [_mean([recovered(p_mb)]) if k >= 1 else
                     _mean([recovered(evaluate(sig.add_masked(ma, delta, sig.topk_mask(s, k)))) for s in masks])
                     for k in graft_fractions]
            g["lean"][name], g["raw"][name], g["ra"][name] = ([float(c[j]) for c in curve] for j in range(3))
            rows = []
            for k in ablation_fractions:
                lean_lost, ra_kept = _mean([lost(evaluate({n: torch.where(mask[n], ma[n], v) for n, v in mb.items()}))
                                            for mask in (sig.topk_mask(s, k) for s in masks)])
                rows.append({"k": k, "lean_lost": float(lean_lost), "ra_kept": float(ra_kept)})
            abl[name] = rows
        out["graft"][rb] = g
        out["ablation"][rb] = abl
    return out


def null_rankings(rb: str, deltas: dict, controls: list, fisher: dict, gen: torch.Generator) -> dict:
    """|Δ_i| and the nulls it is judged against, for RB ``rb`` of one MA (pure). A null that cannot be built here
    (no RA control; a single RB, so no other RB) is left out, and its verdict says "not tested".

    Another RB's mask is a list, one |Δ_j| per other RB (at most MAX_OTHER_RB_MASKS of them, those after RB in
    the config's order), graded as the mean over them: where fine-tuning on *some* other objective writes, not on
    whichever RB happens to follow in the config."""
    r = {PER_RB: {k: v.abs() for k, v in deltas[rb].items()}, RANDOM: sig.random_scores_like(deltas[rb], gen),
         FISHER_NULL: fisher}
    if controls:
        r[CONTROL_NULL] = {k: v.abs() for k, v in controls[0].items()}
    names = list(deltas)
    i = names.index(rb)
    # The next few RBs after this one (cyclically): with a family of 16 mixtures, 15 masks per graft point would
    # cost 15 evaluations for one null.
    others = [names[(i + j) % len(names)] for j in range(1, min(len(names), MAX_OTHER_RB_MASKS + 1))]
    if others:
        r[OTHER_RB_NULL] = [{k: v.abs() for k, v in deltas[o].items()} for o in others]
    return r


def seed_attributions(run_dir: Path, s: int, ma, ma_key, mbs: dict, control_key=None) -> tuple[dict, dict]:
    """Signed IG maps of one MA seed, cached in the run: ``({rb: IG along MA -> MB}, {rb: IG along control -> MB})``
    (the second empty without an RA control)."""
    from goalscope.analysis.effects.superposition import attribution_maps

    ig = {rb: m for rb, (m, _) in attribution_maps(run_dir, s, ma, ma_key, mbs).items()}
    if not control_key:
        return ig, {}
    ctrl = load_checkpoint(stage_dir(run_dir, control_key))
    return ig, {rb: m for rb, (m, _) in attribution_maps(run_dir, s, ma, ma_key, mbs, start=ctrl,
                                                         start_key=control_key).items()}


def validate_seed(task: dict) -> dict:
    """Graft and ablation tests of |Δ_i|, of the attribution |IG_i| (and from the control, when there is one), every
    null and every heatmap built without RB_i (held-out) for one MA seed (only the RBs in ``task["test"]`` when it is
    given); returns plain numbers. Heatmaps built with RB_i contain Δ_i itself and are not scored here."""
    from goalscope.analysis.effects.superposition import ma_fisher

    torch.set_num_threads(1)
    run_dir, s = Path(task["run_dir"]), task["seed"]
    methods, episodes, eval_seed = task["methods"], task["episodes"], task["eval_seed"]
    ma = load_checkpoint(stage_dir(run_dir, task["ma"]))
    model = ma.build()
    control = task.get("control")
    controls = [sig.update_signal(ma.state_dict, load_checkpoint(stage_dir(run_dir, control)).state_dict)] if control else []
    mbs = {rb: load_checkpoint(stage_dir(run_dir, key)) for rb, key in task["mb"].items()}
    deltas = {rb: sig.update_signal(ma.state_dict, mb.state_dict) for rb, mb in mbs.items()}
    # MA's Fisher is always computed: it is the sensitivity null, whether or not "fisher" is an aggregator here.
    fisher = ma_fisher(ma, task["fisher_samples"], s, run_dir, task["ma"])
    tested = task.get("test") or list(mbs)  # the RBs graded here (validate splits a seed's RBs over workers)
    ig, ig_ctrl = seed_attributions(run_dir, s, ma, task["ma"], {rb: (task["mb"][rb], mbs[rb]) for rb in tested},
                                    control)

    evaluate_state = model_evaluator(model, ma.env, ma.reward, episodes, eval_seed, task)

    def heat(method, rbs):
        try:
            return agg.aggregate(method, [deltas[r] for r in rbs], controls=controls, fisher=fisher)
        except GoalscopeError:  # e.g. pca with one RB, or an aggregator needing fine-tune seeds: left out
            return None

    gen = torch.Generator().manual_seed(10_000 + s)
    names = list(deltas)
    rankings, targets = {}, {}
    for rb in names:
        r = null_rankings(rb, deltas, controls, fisher, gen)  # for every RB: the random stream is the seed's alone
        if rb not in tested:
            continue
        targets[rb] = rb_targets(mbs[rb].reward, ma.reward)
        r[ATTRIBUTION] = {k: v.abs() for k, v in ig[rb].items()}
        if ig_ctrl:
            r[ATTRIBUTION_CONTROL] = {k: v.abs() for k, v in ig_ctrl[rb].items()}
        held = {m + HELD_OUT: h for m in methods if len(names) > 1
                and (h := heat(m, [o for o in names if o != rb])) is not None}
        rankings[rb] = {**r, **held}
    out = graft_tests(ma.state_dict, {rb: mbs[rb].state_dict for rb in tested}, rankings, evaluate_state, targets,
                      lambda p: float(p.returns(ma.reward).mean()), task.get("graft_fractions", GRAFT_FRACTIONS),
                      task.get("ablation_fractions", ABLATION_FRACTIONS))
    out["seed"] = s
    out["evaluations"] = evaluate_state.counts()
    if evaluate_state.reuse:  # handed to this (seed, RB)'s held-out-curve task: what was graded here is not rerun
        out["profiles"] = evaluate_state.profiles
    return out


# ----------------------------------------------------------------------------------------------------------------
# The whole validation


def localisation(cfg, plan, run_dir: Path, rows: list, card: dict) -> None:
    """Planted truths. Input planes (any maze agent, :mod:`goalscope.analysis.validate.entry`): RB's own object plane in the first
    layer's mass -> ``card["input_planes"]``. Planted parameters (``planner``, ``needle_planner``): AUROC /
    precision@k as the number of RBs grows, per aggregator, beside single-RB |Δ_i|, control drift, MA's Fisher
    alone and random (see :mod:`goalscope.analysis.validate.planted`) -> ``card["localisation"]``, read also within
    Fisher strata beside the RB-agnostic baselines, after the causal gate (does editing the planted part change
    the rewarded behaviour? :mod:`goalscope.analysis.validate.causal`) -> ``card["localisation"]["causal_gate"]``."""
    from goalscope.analysis.validate import causal
    from goalscope.analysis.validate import planted as planted
    from goalscope.program.executors import LocalExecutor
    from goalscope.rl.ppo import initial_model
    from goalscope.agents.registry import movable_mask, objective_mask, objective_null_pool
    from goalscope.analysis.effects.superposition import ma_fisher
    from goalscope.analysis.validate.entry import entry_ground_truth

    card["input_planes"] = entry_ground_truth(cfg, plan, run_dir, rows)
    ma0 = load_checkpoint(stage_dir(run_dir, plan.ma[cfg.seeds[0]]))
    model0 = ma0.build()
    mask = objective_mask(model0)
    if mask is None:
        card["localisation"] = f"architecture {ma0.arch!r} has no planted objective; see experiments/needle.toml"
        return
    labels = sig.flatten({k: mask[k] for k in ma0.state_dict}).numpy()
    rbs = [r.name for r in cfg.rbs()]
    # The gate first: an AUROC against labels the agents ignore is no test of objective localisation.
    gate_tasks = [{"run_dir": str(run_dir), "seed": s, "ma": plan.ma[s], "mb": {rb: plan.mb[(s, rb)] for rb in rbs},
                   "episodes": min(cfg.evaluation.episodes, VALIDATION_EPISODES), "eval_seed": cfg.evaluation.seed}
                  for s in cfg.seeds]
    pool = ("the planted layer's other units" if objective_null_pool(model0) is not None else "anywhere")
    gate = causal.gate(LocalExecutor(cfg.workers).run(causal.seed_gate, gate_tasks, desc="causal gate"), pool)
    for t in gate["tests"]:
        if "skipped" not in t:
            rows.append(record("validation", f"causal gate: {t['role']}", "", None, f"effect: {t['edit']}",
                               t["mean"], t["lower"], math.nan,
                               detail=f"one-sided 95% lower bound; p={t['p']:.4g}; passed={t['passed']}; "
                                      f"seeds={t['seeds']}"))
    per_seed, skipped, inert, infos = [], {}, [], []
    for s in cfg.seeds:
        ma = load_checkpoint(stage_dir(run_dir, plan.ma[s]))
        # Labels count only what training can move, judged from this MA's own weights (an inert one is left out).
        movable = movable_mask(ma.build())
        scored = None if movable is None else sig.flatten({k: movable[k] for k in ma.state_dict}).numpy()
        inert.append(0 if scored is None else int((labels & ~scored).sum()))
        mb_cks = {rb: load_checkpoint(stage_dir(run_dir, plan.mb[(s, rb)])) for rb in rbs}
        deltas = {rb: sig.update_signal(ma.state_dict, mb.state_dict) for rb, mb in mb_cks.items()}
        control_key = plan.control.get(s)
        ig, ig_ctrl = seed_attributions(run_dir, s, ma, plan.ma[s], {rb: (plan.mb[(s, rb)], mb) for rb, mb in mb_cks.items()},
                                        control_key)
        controls = [sig.update_signal(ma.state_dict, load_checkpoint(stage_dir(run_dir, control_key)).state_dict)] if control_key else []
        # MA's Fisher depends on the seed only, not on the RB subset: one per seed scores both the `fisher`
        # aggregator and the "Fisher alone" null.
        fisher = ma_fisher(ma, cfg.superpose.fisher_samples, s, run_dir, plan.ma[s])
        # Nested fine-tune seeds of the same MA (finetune.seeds_per_ma > 1), for variance_ratio.
        replicates: dict = {}
        for (s_, rb, _), key in sorted(plan.mb_rep.items()):
            if s_ == s and rb in deltas:
                replicates.setdefault(rb, []).append(
                    sig.update_signal(ma.state_dict, load_checkpoint(stage_dir(run_dir, key)).state_dict))
        # MA's starting point, rebuilt the way train_new seeded it (a fine-tuned or imported MA has none to rebuild).
        with torch.random.fork_rng():
            init = initial_model(ma.arch, ma.arch_config, ma.env, ma.seed).state_dict() if ma.parent is None else None
        info: dict = {}
        res, skip = planted.seed_scores(deltas, controls, fisher, list(cfg.superpose.methods), labels, seed=s,
                                        replicates=replicates, scored=scored, attributions=ig,
                                        control_attributions=ig_ctrl, ma=ma.state_dict, init=init, info=info)
        per_seed.append(res)
        infos.append(info)
        for m, by_n in skip.items():
            skipped.setdefault(m, {}).update(by_n)
    by_method = planted.summarise(per_seed)
    k_top = int(labels.sum())
    for name, by_n in by_method.items():
        for n, v in by_n.items():
            rows.append(record("validation", name, "", None, f"auroc_n{n}", *v["auroc"],
                               detail=f"seeds={len(cfg.seeds)}; t interval over seeds"))
            rows.append(record("validation", name, "", None, f"precision_at_k_n{n}", *v["precision_at_k_ci"],
                               detail=f"k={k_top}; t interval over seeds"))
            for key in ("auroc_moved", "auroc_strata"):
                if key in v:
                    rows.append(record("validation", name, "", None, f"{key}_n{n}", *v[key],
                                       detail=f"seeds={len(cfg.seeds)}; t interval over seeds; strata={planted.N_STRATA}"))
            if v.get("ceiling") is not None:
                rows.append(record("validation", name, "", None, f"auroc_ceiling_n{n}", v["ceiling"],
                                   detail="best AUROC attainable given the score's exact zeros; mean over seeds"))
    card["localisation"] = {
        "positives": k_top, "parameters": int(labels.size), "by_method": by_method, "nulls": list(planted.NULLS),
        "inert_positives": inert, "inert_rule": "left out of the scoring: planted labels training cannot move "
        "(the architecture's movable_mask, from each MA's weights)",
        "skipped": {m: "; ".join(f"n={n}: {why}" for n, why in sorted(by_n.items())) for m, by_n in skipped.items()},
        "goal": planted.goal(by_method), "causal_gate": gate, "strata_info": infos, "n_strata": planted.N_STRATA,
        "baselines": list(planted.BASELINES), "goal_strata": planted.goal_within_strata(by_method, gate)}
