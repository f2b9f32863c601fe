"""Validation: does a heatmap find the objective? Measured claims against sensitivity-matched nulls.

Run on a finished experiment (``goalscope validate runs/NAME``):

- **localisation** (architectures with a planted objective): AUROC and precision@k of each heatmap for the planted
  parameters as the number of RBs grows (see ``localisation``);
- **graft curve**: MA + mask_k ⊙ Δ_i keeps the top-k% parameters by a ranking; the fraction of MB_i's *specific
  lean* (RB objects minus the mean of the other non-RA types) recovered, with the raw RB count and RA return
  beside it. A graft carries Δ_i's own values, so any mask over behaviour-sensitive parameters recovers much of
  the behaviour: every ranking is therefore compared with nulls that match sensitivity but know nothing of RB_i
  (random; the RA-control drift |Δ_ctrl|; MA's Fisher alone; another RB's mask, top-k of Δ_j grafting Δ_i);
- **ablation**: MB_i with its top-k% parameters reset to MA: specific lean lost vs RA skill kept, same nulls;
- **held-out reward**: heatmaps are judged on RBs they were built without;
- **stability**: top-1% overlap only where units line up (fine-tune seeds of one MA), each beside a
  tensor-stratified chance level; across MA seeds only tensor-level summaries.

Verdicts rest on one-sided paired t tests over MA seeds (the independent units), Holm-Bonferroni within each
family (graft, ablation), and say "underpowered" below ``stats.MIN_SEEDS`` seeds. Vocabulary: RB-specific /
generic fine-tuning locus / sensitivity only / no better than random, always with the nulls beaten and not beaten.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from goalscope.signals import aggregators as agg
from goalscope.signals import delta as sig
from goalscope.signals.delta import jaccard, jaccard_chance
from goalscope.agents.checkpoints import atomic_write_bytes, load_checkpoint
from goalscope.errors import GoalscopeError
from goalscope.rl.evaluation import evaluate
from goalscope.program.jobs import job_status, stage_dir
from goalscope.analysis.records import record, write_records
from goalscope.analysis.stats import MIN_SEEDS, bootstrap_mean, holm, spearman, t_interval, t_test

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
NULLS = (RANDOM, FISHER_NULL, CONTROL_NULL, OTHER_RB_NULL)
HELD_OUT = " (held-out)"
VERDICTS = ("RB-specific", "generic fine-tuning locus", "sensitivity only", "no better than random")


# ----------------------------------------------------------------------------------------------------------------
# Metrics on scores (pure)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve via the Mann-Whitney U statistic, ties given average ranks."""
    scores, labels = np.asarray(scores, float).ravel(), np.asarray(labels, bool).ravel()
    n_pos, n_neg = labels.sum(), (~labels).sum()
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    ranks = (sums / counts)[inverse]  # average rank within ties
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def precision_at_k(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    top = np.argsort(-np.asarray(scores, float).ravel(), kind="stable")[:k]
    return float(np.asarray(labels, bool).ravel()[top].mean())


def graft_area(recovered) -> float:
    """Mean recovery over the k grid (GRAFT_FRACTIONS, roughly log-spaced): 1 = everything recovered at the
    smallest k, 0 = nothing recovered before k = 100%."""
    return float(np.mean(recovered))


def smallest_k(fractions, recovered, level: float = 0.9) -> float:
    for k, r in zip(fractions, recovered):
        if r >= level:
            return k
    return math.nan


# ----------------------------------------------------------------------------------------------------------------
# Behavioural tests for one seed (a picklable job for the executor)


def specific_lean(profile, i_rb: int, others: list[int]) -> float:
    """RB objects minus the mean of the other non-RA types: a lean, not a general rise in collecting."""
    c = np.asarray(profile.counts, dtype=np.float64)
    return float(c[:, i_rb].mean() - (c[:, others].mean() if others else 0.0))


def graft_tests(ma: dict, mbs: dict, rankings: dict, evaluate, targets: dict, ra_return,
                graft_fractions=GRAFT_FRACTIONS, ablation_fractions=ABLATION_FRACTIONS) -> dict:
    """Graft and ablation curves of every ranking, for every RB of one MA (pure given ``evaluate``).

    ``mbs``: RB -> MB state; ``rankings``: RB -> {name: scores}; ``evaluate``: state -> Profile on fixed paired
    episodes; ``targets``: RB -> (its object type, the other non-RA types); ``ra_return``: Profile -> RA return.
    Recovery is measured on the specific lean, (lean(graft) - lean(MA)) / (lean(MB) - lean(MA)), with the raw RB
    count's recovery and RA return (relative to MA) beside it. Grafting 100% of Δ is MB itself, so it is not rerun.
    """
    p_ma = evaluate(ma)
    ra_ma = ra_return(p_ma)
    out = {"graft": {}, "ablation": {}}
    for rb, mb in mbs.items():
        i_rb, others = targets[rb]
        delta = sig.update_signal(ma, mb)
        p_mb = evaluate(mb)
        base, gain = specific_lean(p_ma, i_rb, others), specific_lean(p_mb, i_rb, others) - specific_lean(p_ma, i_rb, others)
        raw_base = float(np.mean(p_ma.counts[:, i_rb]))
        raw_gain = float(np.mean(p_mb.counts[:, i_rb])) - raw_base
        ra_mb = ra_return(p_mb)
        g = {"gain": gain, "raw_gain": raw_gain, "lean": {}, "raw": {}, "ra": {}}
        abl = {}
        for name, scores in rankings[rb].items():
            lean, raw, ra = [], [], []
            for k in graft_fractions:
                p = p_mb if k >= 1 else evaluate(sig.add_masked(ma, delta, sig.topk_mask(scores, k)))
                lean.append((specific_lean(p, i_rb, others) - base) / gain if gain > 0 else math.nan)
                raw.append((float(np.mean(p.counts[:, i_rb])) - raw_base) / raw_gain if raw_gain > 0 else math.nan)
                ra.append(ra_return(p) / ra_ma if ra_ma > 0 else math.nan)
            g["lean"][name], g["raw"][name], g["ra"][name] = lean, raw, ra
            rows = []
            for k in ablation_fractions:
                mask = sig.topk_mask(scores, k)
                p = evaluate({n: torch.where(mask[n], ma[n], v) for n, v in mb.items()})
                rows.append({"k": k,
                             "lean_lost": (gain + base - specific_lean(p, i_rb, others)) / gain if gain > 0 else math.nan,
                             "ra_kept": ra_return(p) / ra_mb if ra_mb > 0 else math.nan})
            abl[name] = rows
        out["graft"][rb] = g
        out["ablation"][rb] = abl
    return out


def validate_seed(task: dict) -> dict:
    """Graft and ablation tests of |Δ_i|, every null and every heatmap built without RB_i (held-out) for one MA
    seed; returns plain numbers. Heatmaps built with RB_i contain Δ_i itself and are not scored here."""
    from goalscope.analysis.negation import ma_fisher

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
    fisher = ma_fisher(ma, task["fisher_samples"], s)

    def evaluate_state(state):
        model.load_state_dict(state)
        return evaluate(model, ma.env, ma.reward, episodes, eval_seed)

    def heat(method, rbs):
        try:
            return agg.aggregate(method, [deltas[r] for r in rbs], controls=controls, fisher=fisher)
        except GoalscopeError:  # e.g. pca with one RB, or an aggregator needing fine-tune seeds: left out
            return None

    gen = torch.Generator().manual_seed(10_000 + s)
    names = list(deltas)
    rankings, targets = {}, {}
    n_types = len(ma.reward.weights)
    ra_types = set(ma.reward.rewarded_types().tolist())
    for idx, rb in enumerate(names):
        i_rb = mbs[rb].reward.target_type(ma.reward)
        targets[rb] = (i_rb, [k for k in range(n_types) if k != i_rb and k not in ra_types])
        r = {PER_RB: {k: v.abs() for k, v in deltas[rb].items()}, RANDOM: sig.random_scores_like(deltas[rb], gen),
             FISHER_NULL: fisher}
        if controls:
            r[CONTROL_NULL] = {k: v.abs() for k, v in controls[0].items()}
        if len(names) > 1:  # the next RB's mask: where fine-tuning on some other objective writes
            r[OTHER_RB_NULL] = {k: v.abs() for k, v in deltas[names[(idx + 1) % len(names)]].items()}
        held = {m + HELD_OUT: h for m in methods if len(names) > 1
                and (h := heat(m, [o for o in names if o != rb])) is not None}
        rankings[rb] = {**r, **held}
    out = graft_tests(ma.state_dict, {rb: mb.state_dict for rb, mb in mbs.items()}, rankings, evaluate_state, targets,
                      lambda p: float(p.returns(ma.reward).mean()), task.get("graft_fractions", GRAFT_FRACTIONS),
                      task.get("ablation_fractions", ABLATION_FRACTIONS))
    out["seed"] = s
    return out


# ----------------------------------------------------------------------------------------------------------------
# The whole validation


def localisation(cfg, plan, run_dir: Path, rows: list, card: dict) -> None:
    """Planted truths. Input planes (any maze agent, :mod:`goalscope.analysis.entry`): RB's own object plane in the first
    layer's mass -> ``card["input_planes"]``. Planted parameters (``planner``, ``needle_planner``): AUROC /
    precision@k as the number of RBs grows, per aggregator, beside single-RB |Δ_i|, control drift, MA's Fisher
    alone and random (see :mod:`goalscope.analysis.planted`) -> ``card["localisation"]``."""
    from goalscope.analysis import planted as planted
    from goalscope.agents.registry import objective_mask
    from goalscope.analysis.negation import ma_fisher
    from goalscope.analysis.entry import entry_ground_truth

    card["input_planes"] = entry_ground_truth(cfg, plan, run_dir, rows)
    ma0 = load_checkpoint(stage_dir(run_dir, plan.ma[cfg.seeds[0]]))
    mask = objective_mask(ma0.build())
    if mask is None:
        card["localisation"] = f"architecture {ma0.arch!r} has no planted objective; see experiments/needle.toml"
        return
    labels = sig.flatten({k: mask[k] for k in ma0.state_dict}).numpy()
    rbs = [r.name for r in cfg.rbs()]
    per_seed, skipped = [], {}
    for s in cfg.seeds:
        ma = load_checkpoint(stage_dir(run_dir, plan.ma[s]))
        deltas = {rb: sig.update_signal(ma.state_dict, load_checkpoint(stage_dir(run_dir, plan.mb[(s, rb)])).state_dict)
                  for rb in rbs}
        control_key = plan.control.get(s)
        controls = [sig.update_signal(ma.state_dict, load_checkpoint(stage_dir(run_dir, control_key)).state_dict)] if control_key else []
        # MA's Fisher depends on the seed only, not on the RB subset: one per seed scores both the `fisher`
        # aggregator and the "Fisher alone" null.
        fisher = ma_fisher(ma, cfg.superpose.fisher_samples, s)
        # Nested fine-tune seeds of the same MA (finetune.seeds_per_ma > 1), for variance_ratio.
        replicates: dict = {}
        for (s_, rb, _), key in sorted(plan.mb_rep.items()):
            if s_ == s and rb in deltas:
                replicates.setdefault(rb, []).append(
                    sig.update_signal(ma.state_dict, load_checkpoint(stage_dir(run_dir, key)).state_dict))
        res, skip = planted.seed_scores(deltas, controls, fisher, list(cfg.superpose.methods), labels, seed=s,
                                        replicates=replicates)
        per_seed.append(res)
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
    card["localisation"] = {
        "positives": k_top, "parameters": int(labels.size), "by_method": by_method, "nulls": list(planted.NULLS),
        "skipped": {m: "; ".join(f"n={n}: {why}" for n, why in sorted(by_n.items())) for m, by_n in skipped.items()},
        "goal": planted.goal(by_method)}


def per_seed_scores(per_seed: list[dict]) -> dict:
    """ranking -> {"graft": [area per seed], "ablation": [lean lost per seed], "raw": [...], "ra": [...]}.

    Each seed's value is the mean over its RBs (RBs whose MB gained no specific lean are left out): seeds, not RBs
    or episodes, are the independent units."""
    names = list(dict.fromkeys(n for res in per_seed for g in res["graft"].values() for n in g["lean"]))
    out = {}
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN seed is NaN, on purpose
        for name in names:
            d = {"graft": [], "ablation": [], "raw": [], "ra": [], "curve": [], "ra_curve": []}
            for res in per_seed:
                gs = [g for g in res["graft"].values() if name in g["lean"]]
                curves = np.array([g["lean"][name] for g in gs], dtype=float)
                d["curve"].append(np.nanmean(curves, axis=0))
                d["ra_curve"].append(np.nanmean(np.array([g["ra"][name] for g in gs], dtype=float), axis=0))
                d["graft"].append(float(np.nanmean([graft_area(c) for c in curves])))
                d["raw"].append(float(np.nanmean([graft_area(g["raw"][name]) for g in gs])))
                d["ra"].append(float(np.nanmean([np.mean(g["ra"][name]) for g in gs])))
                abl = [np.mean([row["lean_lost"] for row in a[name]]) for a in res["ablation"].values() if name in a]
                d["ablation"].append(float(np.nanmean(abl)) if abl else math.nan)
            out[name] = d
    return out


def compare_family(scores: dict, test: str, judged: list[str], nulls=NULLS) -> list[dict]:
    """Every (ranking, null) comparison of one family, with a one-sided paired t test over seeds (ranking > null)
    and Holm-Bonferroni across the family."""
    tests = []
    for name in judged:
        for null in nulls:
            if name not in scores or null not in scores or null == name:
                continue
            a, b = np.asarray(scores[name][test], float), np.asarray(scores[null][test], float)
            d = (a - b)[np.isfinite(a) & np.isfinite(b)]
            tests.append({"ranking": name, "null": null, "seeds": int(len(d)), "diff": [round(x, 4) for x in t_interval(d)],
                          "p": t_test(d, "greater") if len(d) else math.nan})
    for t, adj in zip(tests, holm([t["p"] for t in tests])):
        t["p_holm"] = float(adj)
        t["beaten"] = bool(np.isfinite(adj) and adj < 0.05 and t["diff"][1] > 0)
    return tests


def locus_verdict(tests: list[dict], ranking: str, family_size: int, test_name: str = "graft") -> str:
    """Which nulls a ranking beats, in plain words: RB-specific (every null, another RB's mask included) / generic
    fine-tuning locus (random and Fisher alone, but not the control drift or another RB's mask) / sensitivity only
    (random, not Fisher alone) / no better than random; "underpowered" below MIN_SEEDS seeds."""
    mine = {t["null"]: t for t in tests if t["ranking"] == ranking}
    if not mine:
        return "not measurable"
    n = min(t["seeds"] for t in mine.values())
    how = f"one-sided t over {n} MA seeds, Holm over {family_size} {test_name} tests"
    if n < MIN_SEEDS:
        return f"underpowered ({n} seeds, fewer than {MIN_SEEDS}; {how})"
    beaten = [k for k in NULLS if k in mine and mine[k]["beaten"]]
    not_beaten = [k for k in NULLS if k in mine and not mine[k]["beaten"]]
    if RANDOM not in beaten:
        label = VERDICTS[3]
    elif FISHER_NULL in not_beaten:
        label = VERDICTS[2]
    elif CONTROL_NULL in not_beaten or OTHER_RB_NULL in not_beaten:
        label = VERDICTS[1]
    else:
        label = VERDICTS[0] if not ranking.endswith(HELD_OUT) else "objective locus shared across RBs (held-out)"
    parts = [f"beats {', '.join(beaten)}" if beaten else "beats no null"]
    if not_beaten:
        parts.append(f"not {', '.join(not_beaten)}")
    return f"{label} ({'; '.join(parts)}; {how})"


def verdict(method: list[float], abs_delta: list[float], random: list[float]) -> str:
    """Compare per-seed scores of a method with |Δ| and random (higher = better): one-sided t over seeds, Holm over
    the two comparisons; "underpowered" below MIN_SEEDS seeds."""
    m, d, r = (np.asarray(x, float) for x in (method, abs_delta, random))
    if len(m) == 0 or not np.isfinite(m).any():
        return "not measurable"
    if len(m) < MIN_SEEDS:
        return f"underpowered ({len(m)} seeds, fewer than {MIN_SEEDS})"
    p_d, p_r = holm([t_test(m - d, "greater"), t_test(m - r, "greater")])
    if p_d < 0.05:
        return "localises (beats |Δ| and random)" if p_r < 0.05 else "beats |Δ| but not random"
    if p_r < 0.05:
        return "no better than |Δ|"
    return "no better than random"


def _json_default(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(type(x).__name__)


def summarise_validation(per_seed: list[dict], methods: list[str], rows: list | None = None,
                         fractions=GRAFT_FRACTIONS) -> dict:
    """Curves, per-seed areas, the graft and ablation families with Holm, and one verdict per judged ranking.

    Judged: |Δ_i| (a per-RB ranking) and every heatmap on held-out RBs (built without the RB it is scored on).
    Any other ranking present (e.g. in tests) is shown for reference, without a verdict."""
    rows = rows if rows is not None else []
    scores = per_seed_scores(per_seed)
    judged = [n for n in [PER_RB, *(m + HELD_OUT for m in methods)] if n in scores]
    families = {t: compare_family(scores, t, judged) for t in ("graft", "ablation")}
    verdicts = {n: {t: locus_verdict(families[t], n, len(families[t]), t) for t in families} for n in judged}
    roles = {n: "null" if n in NULLS else ("judged" if n in judged else "reference") for n in scores}
    gains = {}
    for res in per_seed:
        for rb, g in res["graft"].items():
            gains.setdefault(rb, {"lean": [], "raw": []})
            gains[rb]["lean"].append(g["gain"])
            gains[rb]["raw"].append(g["raw_gain"])
    graft = {"fractions": list(fractions), "measure": "specific lean: RB objects minus the mean of the other non-RA types",
             "rb_gain": {rb: round(float(np.mean(v["lean"])), 4) for rb, v in gains.items()},
             "rb_gain_raw": {rb: round(float(np.mean(v["raw"])), 4) for rb, v in gains.items()},
             "curves": {}, "ra_curves": {}, "area": {}, "area_ci": {}, "raw_area": {}, "ra_mean": {}, "smallest_k_90": {},
             "roles": roles, "reference": "Bush 2025 (Craftax GTrXL): 0.01-1% of weights recovered the fined-tuned return"}
    ablation = {"fractions": list(ABLATION_FRACTIONS), "lean_lost": {}, "lean_lost_ci": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        for name, d in scores.items():
            curves = np.array([c for c in d["curve"] if np.isfinite(c).all()] or [np.full(len(fractions), np.nan)])
            graft["curves"][name] = np.round(curves.mean(0), 4).tolist()
            graft["ra_curves"][name] = np.round(np.nanmean(np.array(d["ra_curve"], float), axis=0), 4).tolist()
            graft["area_ci"][name] = [round(x, 4) for x in t_interval(d["graft"])]
            graft["area"][name] = graft["area_ci"][name][0]
            graft["raw_area"][name] = round(float(np.nanmean(d["raw"])), 4)
            graft["ra_mean"][name] = round(float(np.nanmean(d["ra"])), 4)
            graft["smallest_k_90"][name] = _finite_mean([smallest_k(fractions, c) for c in curves])
            ablation["lean_lost_ci"][name] = [round(x, 4) for x in t_interval(d["ablation"])]
            ablation["lean_lost"][name] = ablation["lean_lost_ci"][name][0]
            for k, col in zip(fractions, curves.T):
                rows.append(record("validation", name, "", None, "graft_recovered", float(np.mean(col)),
                                   float(np.min(col)), float(np.max(col)), detail=f"k={k}"))
            rows.append(record("validation", name, "", None, "graft_area", *graft["area_ci"][name],
                               detail=f"{roles[name]}; t over {len(d['graft'])} seeds"))
            rows.append(record("validation", name, "", None, "ablation_lean_lost", *ablation["lean_lost_ci"][name],
                               detail=f"mean over k={list(ABLATION_FRACTIONS)}"))
    for fam, tests in families.items():
        for t in tests:
            rows.append(record("validation", t["ranking"], "", None, f"{fam}_minus_{t['null']}", *t["diff"],
                               detail=f"p={t['p']:.4g} holm={t['p_holm']:.4g} of {len(tests)}"))
    n_seeds = len(per_seed)
    return {"graft": graft, "ablation": ablation, "tests": families, "verdicts": verdicts,
            "families": {f: {"tests": len(t), "correction": "Holm-Bonferroni", "level": 0.05, "seeds": n_seeds,
                             "test": "one-sided paired t over per-seed means (ranking > null)",
                             "min_seeds": MIN_SEEDS} for f, t in families.items()},
            "held_out_graft_area": {n[:-len(HELD_OUT)]: graft["area"][n] for n in judged if n.endswith(HELD_OUT)}}


def run_validation(cfg, run_dir: str | Path, executor=None, episodes: int | None = None, log=print) -> dict:
    from goalscope.program.executors import LocalExecutor
    from goalscope.program.runner import plan_experiment

    torch.set_num_threads(1)  # deterministic reductions, as in the analysis
    run_dir = Path(run_dir)
    plan = plan_experiment(cfg)
    missing = [j.label for j in plan.jobs() if j.kind != "negate" and (job_status(run_dir, j.key) or {}).get("status") != "ok"]
    if missing:
        raise GoalscopeError(f"{run_dir} is not finished ({missing[0]} missing); run `goalscope run` first")
    executor = executor or LocalExecutor(cfg.workers)
    rows: list[dict] = []
    card: dict = {"experiment": cfg.name, "arch": cfg.agent.arch, "seeds": cfg.seeds}
    localisation(cfg, plan, run_dir, rows, card)

    n_episodes = episodes or min(cfg.evaluation.episodes, VALIDATION_EPISODES)
    tasks = [{"run_dir": str(run_dir), "seed": s, "ma": plan.ma[s], "control": plan.control.get(s),
              "mb": {r.name: plan.mb[(s, r.name)] for r in cfg.rbs()}, "methods": list(cfg.superpose.methods),
              "fisher_samples": cfg.superpose.fisher_samples,
              "episodes": n_episodes, "eval_seed": cfg.evaluation.seed} for s in cfg.seeds]
    per_seed = executor.run(validate_seed, tasks, desc="validate")
    card.update(summarise_validation(per_seed, list(cfg.superpose.methods), rows))
    card["episodes"] = n_episodes
    card["stability"] = stability(cfg, plan, run_dir, rows)
    card["checks"] = built_in_checks(card)
    loc = card.get("localisation")
    if isinstance(loc, dict):
        n_max = max(n for n in next(iter(loc["by_method"].values())))
        for m in cfg.superpose.methods:
            if m in loc["by_method"] and n_max in loc["by_method"][m]:
                card.setdefault("localisation_verdicts", {})[m] = _loc_verdict(loc["by_method"], m, n_max)
    write_records(rows, run_dir / "validation.csv")
    atomic_write_bytes(run_dir / "scorecard.json", json.dumps(card, indent=2, default=_json_default).encode())
    atomic_write_bytes(run_dir / "scorecard.md", scorecard_markdown(card).encode())
    log(f"scorecard: {run_dir / 'scorecard.md'}")
    return card


def _finite_mean(xs) -> float | None:
    xs = [x for x in xs if np.isfinite(x)]
    return round(float(np.mean(xs)), 4) if xs else None


def _loc_verdict(by_method: dict, m: str, n: int) -> str:
    """AUROC of ``m`` with ``n`` RBs against every null present (single-RB |Δ|, control drift, Fisher alone,
    random): "localises" needs the lower 95% t bound of the paired per-seed difference above 0 for each of them."""
    from goalscope.analysis.planted import NULLS, paired_lower

    if not np.isfinite(by_method[m][n]["auroc"][0]):
        return "not measurable"
    if len(by_method[m][n].get("per_seed_auroc", [])) < 2:
        return "not testable with one seed"
    nulls = [b for b in NULLS if b in by_method and n in by_method[b]]
    beaten = [b for b in nulls if paired_lower(by_method, m, b, n) > 0]
    if beaten == nulls:
        return f"localises (AUROC above {', '.join(nulls)}; paired t over seeds)"
    missing = [b for b in nulls if b not in beaten]
    if beaten:
        return f"above {', '.join(beaten)}; not above {', '.join(missing)}"
    return "no better than any null (" + ", ".join(nulls) + ")"


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


def built_in_checks(card: dict) -> list[dict]:
    """Checks whose expected direction is known; each says plainly when it went the wrong way."""
    out = []
    st = card.get("stability") or {}
    w = st.get("within_ma") or {}
    same, diff = (w.get("same RB, other fine-tune seed") or {}), (w.get("different RBs, same MA") or {})
    if same.get("jaccard") is not None and diff.get("jaccard") is not None:
        out.append({"check": "top-1% |Δ| sets agree more for the same RB (other fine-tune seed) than for different RBs",
                    "ok": same["jaccard"] > diff["jaccard"],
                    "detail": f"same RB {same['jaccard']:.3f} vs different RBs {diff['jaccard']:.3f} (same MA)"})
    if same.get("jaccard") is not None:
        out.append({"check": "same-RB top-1% overlap exceeds its tensor-stratified chance level",
                    "ok": same["jaccard"] > same["chance"],
                    "detail": f"{same['jaccard']:.3f} vs chance {same['chance']:.3f}"})
    g = card.get("graft") or {}
    area = g.get("area") or {}
    if PER_RB in area and RANDOM in area:
        out.append({"check": "grafting the top of |Δ_i| recovers more specific lean than a random mask",
                    "ok": bool(area[PER_RB] > area[RANDOM]), "detail": f"area {area[PER_RB]:.3f} vs {area[RANDOM]:.3f}"})
    if PER_RB in area and OTHER_RB_NULL in area:
        out.append({"check": "|Δ_i| recovers RB_i better than another RB's mask does",
                    "ok": bool(area[PER_RB] > area[OTHER_RB_NULL]),
                    "detail": f"area {area[PER_RB]:.3f} vs {area[OTHER_RB_NULL]:.3f}"})
    return out


def scorecard_markdown(card: dict) -> str:
    lines = [f"# Scorecard: {card['experiment']} ({card['arch']}, seeds {card['seeds']})", ""]
    # The planted-truth sections are rendered by their own modules (issue 11: planted.py, entry.py).
    from goalscope.analysis.entry import entry_markdown
    from goalscope.analysis.planted import localisation_markdown

    lines += localisation_markdown(card.get("localisation"), card.get("localisation_verdicts", {}))
    if "input_planes" in card:
        lines += ["", entry_markdown(card["input_planes"])]
    g = card["graft"]
    fam = card.get("families", {})
    lines += ["", f"## Graft curves: fraction of MB's specific lean recovered by MA + top-k% of Δ ({card.get('episodes')} "
              "paired episodes per point)", "",
              f"Measure: {g['measure']}. MB's gain per RB (lean): {g['rb_gain']}; raw RB objects: {g['rb_gain_raw']}.", "",
              "| ranking | role | " + " | ".join(f"{k:g}" for k in g["fractions"]) +
              " | area [95% t CI] | raw-RB area | RA return vs MA |",
              "|---" * (len(g["fractions"]) + 5) + "|"]
    for n, c in g["curves"].items():
        a = g["area_ci"][n]
        lines.append(f"| {n} | {g['roles'].get(n, '')} | " + " | ".join(f"{x:.2f}" for x in c) +
                     f" | {a[0]:.3f} [{a[1]:.3f}, {a[2]:.3f}] | {g['raw_area'][n]:.3f} | {g['ra_mean'][n]:.2f} |")
    lines += ["", f"Reference: {g['reference']}.", ""]
    for f_name in ("graft", "ablation"):
        info = fam.get(f_name, {})
        lines += [f"## Verdicts: {f_name} family ({info.get('tests')} tests, {info.get('correction')}, "
                  f"{info.get('seeds')} MA seeds; {info.get('test')})", ""]
        for n, v in card["verdicts"].items():
            lines.append(f"- **{n}**: {v[f_name]}")
        lines += ["", "| ranking | null | difference [95% t CI] | p | p (Holm) | beaten |", "|---|---|---|---|---|---|"]
        for t in card["tests"][f_name]:
            d = t["diff"]
            lines.append(f"| {t['ranking']} | {t['null']} | {d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}] | {t['p']:.3g} | "
                         f"{t['p_holm']:.3g} | {'yes' if t['beaten'] else 'no'} |")
        lines.append("")
    ab = card["ablation"]
    lines += ["## Ablation: MB with its top-k% reset to MA (mean over k = "
              f"{ab['fractions']}): fraction of the specific lean lost", "", "| ranking | lean lost [95% t CI] |", "|---|---|"]
    for n, v in ab["lean_lost_ci"].items():
        lines.append(f"| {n} | {v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}] |")
    st = card["stability"]
    lines += ["", f"## Stability of top-{st['top_fraction']:.0%} |Δ| sets where units line up ({st['seeds_per_ma']} "
              "fine-tune seeds per MA)", "", f"Chance: {st['chance_method']}.", "",
              "| pairs (same MA) | Jaccard | chance | ratio | pairs |", "|---|---|---|---|---|"]
    for n, v in st["within_ma"].items():
        lines.append(f"| {n} | {v['jaccard']} | {v['chance']} | {v.get('ratio_to_chance')} | {v['pairs']} |")
    ac = st["across_ma"]
    lines += ["", f"Across MA seeds ({ac['measure']}): same RB {ac['same RB']}, different RBs {ac['different RBs']}.", ""]
    lines += ["## Built-in checks", ""]
    for c in card.get("checks", []):
        lines.append(f"- {'ok' if c['ok'] else '**WENT THE WRONG WAY**'}: {c['check']} ({c['detail']})")
    lines.append("")
    return "\n".join(lines)
