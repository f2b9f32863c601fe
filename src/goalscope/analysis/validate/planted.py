"""Planted ground truth: does superposing more RBs find the objective, and better than the nulls?

For an architecture that plants its objective (``planner``, ``needle_planner``), every heatmap is scored against
the parameter-level labels (:func:`goalscope.agents.objective_mask`) with localisation AUROC and precision@k
(k = number of objective parameters), as the number of superposed RBs grows (1, 2, 4, 8), per aggregator. Beside
them, rankings that carry no information about *which* reward changed:

- ``|Δ| (one RB)``: one update signal alone, |Δ_i|, averaged over i (the thing superposition claims to improve on);
- ``control drift |Δ_ctrl|``: MA fine-tuned on its own reward: where training writes anyway;
- ``Fisher alone (MA)``: MA's diagonal Fisher, where the policy is sensitive (no RB information at all);
- ``random``: a random score (chance: AUROC 0.5, precision@k = the objective's share of parameters);
- RB-agnostic baselines (issue 35): ``|θ_MA|``, MA's own training movement ``|θ_MA − θ_init|`` (init rebuilt from
  the seed) and ``Fisher × θ²`` (rescaling-invariant sensitivity). A factor that rescales the planted pathway makes
  Fisher arbitrarily bad and every Adam-driven ranking good, so these are scored beside Fisher alone.

Each score is read three ways: plain AUROC over the movable entries; with never-moved parameters (Δ = 0 in every
fine-tune and control of the seed) left out on both sides; and *within Fisher strata* (never-moved left out too):
entries binned by MA's Fisher quantile into ``N_STRATA`` strata, each positive compared only with negatives of its
stratum, per-stratum AUROCs combined by a positives-weighted mean. A score equal to Fisher sits at ~0.5 there, so
sensitivity cannot pass it by construction; :func:`goal` reads that one.

These do not depend on the number of RBs, so each is scored once per seed and shown at every n. CIs are Student t
intervals over per-seed means (each seed: the mean over up to ``MAX_SUBSETS`` RB subsets of that size), because a
bootstrap over three seeds is close to a min/max rule.

May import: goalscope.analysis.stats, goalscope.analysis.validate.ranking, goalscope.analysis.validate.causal,
goalscope.errors, goalscope.signals.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch

from goalscope.signals import aggregators as agg
from goalscope.signals import delta as sig
from goalscope.errors import GoalscopeError
from goalscope.analysis.stats import t_interval, t_quantile
from goalscope.analysis.validate.causal import NOT_A_TEST, gate_markdown
from goalscope.analysis.validate.ranking import (auroc, auroc_ceiling, precision_at_k, quantile_strata,
                                                 stratified_auroc)

SINGLE = "|Δ| (one RB)"  # the name the scorecard and report have always used
CONTROL = "control drift |Δ_ctrl|"
FISHER = "Fisher alone (MA)"
RANDOM = "random"
NULLS = (SINGLE, CONTROL, FISHER, RANDOM)  # the paired-verdict family (validation._loc_verdict): kept at 4 for power
THETA = "|θ_MA|"
FROM_INIT = "|θ_MA − θ_init|"
FISHER_THETA = "Fisher × θ² (MA)"
AGNOSTIC = (THETA, FROM_INIT, FISHER_THETA)  # issue 35's RB-agnostic baselines, scored like nulls
BASELINES = NULLS + AGNOSTIC  # every ranking that is not a method: never "best", always a margin to clear
N_STRATA = 50  # Fisher strata for the within-strata AUROC (issue 35: ~7,000 entries, ~140 a stratum)
ATTRIBUTION = "attribution |IG| (one RB)"  # integrated gradients of the behaviour change along MA -> MB_i
ATTRIBUTION_CONTROL = "attribution from control |IG| (one RB)"  # ... along the RA control -> MB_i
OVER_IG = " over IG"  # an aggregator fed the signed IG maps instead of the Δs
SIZES = (1, 2, 4, 8)
MAX_SUBSETS = 6
GOAL_AUROC, GOAL_MARGIN = 0.95, 0.10  # issues 11/25/35: best AUROC >= 0.95, >= 0.10 above every null


def rb_subsets(rbs: list[str], n: int, limit: int = MAX_SUBSETS, seed: int = 0) -> list[tuple[str, ...]]:
    """Up to ``limit`` distinct n-subsets of ``rbs``, drawn at random (seeded) from all combinations.

    Random rather than every k-th combination in lexicographic order: with RBs listed family by family
    (one-hot, then composite) a stride would keep drawing subsets from one family."""
    combos = list(itertools.combinations(rbs, n))
    if len(combos) <= limit:
        return combos
    picked = np.random.default_rng(seed).choice(len(combos), size=limit, replace=False)
    return [combos[i] for i in sorted(picked)]


def score(scores: torch.Tensor | np.ndarray, labels: np.ndarray,
          scored: np.ndarray | None = None, moved: np.ndarray | None = None,
          strata: np.ndarray | None = None) -> tuple[float, ...]:
    """(AUROC, precision@k, AUROC ceiling) of flat ``scores`` for the positives in ``labels``; k = number of
    positives. ``scored`` (bool, same length) keeps only the entries training can move: an inert planted label
    (Δ, gradient and Fisher exactly 0) is left out of the scoring rather than counted as a positive no score can
    rank. The ceiling is the best AUROC this score could reach given its exact zeros (:func:`goalscope.analysis.validate.ranking.auroc_ceiling`).
    With ``moved`` (flat bool, False = never moved in any fine-tune or control) two more numbers follow: the AUROC
    with never-moved entries left out on both sides, and the AUROC within ``strata`` (one stratum index per entry
    that is both scored and moved, :func:`goalscope.analysis.validate.ranking.stratified_auroc`; NaN without)."""
    flat = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels, bool).ravel()
    keep = np.ones(len(flat), bool) if scored is None else np.asarray(scored, bool).ravel()
    out = (auroc(flat[keep], labels[keep]), precision_at_k(flat[keep], labels[keep], int(labels[keep].sum())),
           auroc_ceiling(flat[keep], labels[keep]))
    if moved is None:
        return out
    both = keep & np.asarray(moved, bool).ravel()
    within = math.nan if strata is None else stratified_auroc(flat[both], labels[both], strata)[0]
    return out + (auroc(flat[both], labels[both]), within)


_score = score  # seed_scores shadows the name with its own three-way reading


def never_moved(updates: list) -> np.ndarray:
    """Flat bool: True where every update signal (fine-tunes and controls of one MA) is exactly 0."""
    return np.logical_and.reduce([_flat(d) == 0 for d in updates])


def fisher_strata(fisher: dict, keep: np.ndarray, n_strata: int = N_STRATA) -> np.ndarray:
    """Stratum of each kept entry by MA's Fisher quantile (ties in one stratum), for :func:`score`'s ``strata``."""
    return quantile_strata(_flat(fisher)[np.asarray(keep, bool)], n_strata)


def _flat(h: dict) -> np.ndarray:
    return sig.flatten({k: v.detach().to(torch.float32) for k, v in h.items()}).numpy()


def null_rankings(deltas: dict, controls: list, fisher: dict | None, generator: torch.Generator,
                  ma: dict | None = None, init: dict | None = None) -> dict:
    """Rankings that know nothing about which RB changed: control drift, MA's Fisher, random, and with MA's weights
    ``ma`` |θ_MA| and Fisher × θ², with the rebuilt initial weights ``init`` |θ_MA − θ_init|. One whose input is
    missing is left out (said "not tested" where it matters), never faked."""
    like = next(iter(deltas.values()))
    out = {RANDOM: sig.random_scores_like(like, generator)}
    if controls:
        out[CONTROL] = {k: torch.stack([c[k].abs() for c in controls]).mean(0) for k in like}
    if fisher is not None:
        out[FISHER] = fisher
    if ma is not None:
        out[THETA] = {k: ma[k].detach().abs().to(torch.float32) for k in like}
        if fisher is not None:
            out[FISHER_THETA] = {k: fisher[k].to(torch.float32) * ma[k].detach().to(torch.float32) ** 2 for k in like}
        if init is not None:
            out[FROM_INIT] = {k: (ma[k].detach().to(torch.float32) - init[k].to(torch.float32)).abs() for k in like}
    return out


def _heatmap(m: str, subset: tuple, deltas: dict, replicates: dict, controls: list, fisher: dict | None) -> dict:
    """Aggregator ``m`` over the RBs in ``subset``. Aggregators that take ``groups`` (``variance_ratio``) get every
    fine-tune seed of each RB, labelled by RB; the others get one Δ per RB, so "n RBs" means the same for all."""
    if "groups" in agg.get(m).defaults:
        ds = [d for r in subset for d in [deltas[r], *replicates.get(r, [])]]
        groups = [r for r in subset for _ in range(1 + len(replicates.get(r, [])))]
        return agg.aggregate(m, ds, controls=controls, fisher=fisher, groups=groups)
    return agg.aggregate(m, [deltas[r] for r in subset], controls=controls, fisher=fisher)


def seed_scores(deltas: dict, controls: list, fisher: dict | None, methods: list[str], labels: np.ndarray,
                sizes=SIZES, seed: int = 0, replicates: dict | None = None,
                scored: np.ndarray | None = None, attributions: dict | None = None,
                control_attributions: dict | None = None, ma: dict | None = None,
                init: dict | None = None, info: dict | None = None) -> tuple[dict, dict]:
    """Scores of one seed: ``{(name, n): [(auroc, precision@k, AUROC ceiling) per subset]}`` and ``{method: reason}`` for methods
    that could not be computed at some n (e.g. ``pca`` with one RB, ``variance_ratio`` without fine-tune seeds).

    ``deltas`` maps RB name -> Δ_i (all from one MA); nulls and single-RB |Δ_i| are scored once and repeated at
    every n, so the curve of each aggregator can be read against flat lines. ``replicates`` maps RB name -> Δs of
    further fine-tune seeds of the same MA (nested seeds), used by aggregators that need them. ``scored`` (flat bool)
    keeps only the parameters training can move (see :func:`goalscope.agents.registry.movable_mask`).
    ``attributions`` (RB -> signed IG along MA -> MB_i, :mod:`goalscope.signals.attribution`) adds the
    single-RB |IG| ranking and every aggregator fed the IG maps instead of the Δs ("<method> over IG");
    ``control_attributions`` (IG along control -> MB_i) adds its single-RB |IG|. ``ma`` (MA's weights) and ``init``
    (its rebuilt initial weights) add the RB-agnostic baselines (:func:`null_rankings`).

    Every score is also read with never-moved entries left out (Δ = 0 in every Δ_i, replicate and control) and,
    given ``fisher``, within its ``N_STRATA`` quantile strata: tuples of 5 (see :func:`score`). ``info``, when
    given, receives the counts behind those readings (never-moved entries, strata and positives used)."""
    rbs = list(deltas)
    results: dict = {}
    skipped: dict = {}
    keep = np.ones(len(labels), bool) if scored is None else np.asarray(scored, bool)
    moved = ~never_moved([*deltas.values(), *controls, *(d for ds in (replicates or {}).values() for d in ds)])
    strata = fisher_strata(fisher, keep & moved) if fisher is not None else None
    if info is not None:
        both = keep & moved
        _, used, pos = stratified_auroc(labels[both], labels[both], strata) if strata is not None else (0, 0, 0)
        info.update(never_moved=int((~moved).sum()), never_moved_positives=int((~moved & labels & keep).sum()),
                    strata=used, positives_in_strata=pos, positives_moved=int((both & labels).sum()))

    def score(s, lab, sc):  # every score of this seed, read the three ways
        return _score(s, lab, sc, moved, strata)

    flat_nulls = {name: score(_flat(h), labels, scored) for name, h in
                  null_rankings(deltas, controls, fisher, torch.Generator().manual_seed(10_000 + seed), ma, init).items()}
    single = [score(_flat({k: v.abs() for k, v in d.items()}), labels, scored) for d in deltas.values()]
    flat_nulls[SINGLE] = tuple(float(np.mean(col)) for col in zip(*single))
    for name, maps in ((ATTRIBUTION, attributions), (ATTRIBUTION_CONTROL, control_attributions)):
        if maps:
            per_rb = [score(_flat({k: v.abs() for k, v in maps[r].items()}), labels, scored) for r in rbs if r in maps]
            flat_nulls[name] = tuple(float(np.mean(col)) for col in zip(*per_rb))
    for n in [n for n in sizes if n <= len(rbs)]:
        for name, sc in flat_nulls.items():
            results.setdefault((name, n), []).append(sc)
        for subset in rb_subsets(rbs, n, seed=seed):
            for m in methods:
                try:
                    h = _heatmap(m, subset, deltas, replicates or {}, controls, fisher)
                except GoalscopeError as e:
                    skipped.setdefault(m, {})[n] = str(e)
                    continue
                results.setdefault((m, n), []).append(score(_flat(h), labels, scored))
            if attributions and all(r in attributions for r in subset):
                for m in methods:
                    try:  # the IG maps in Δ's place; aggregators needing controls or fine-tune seeds are left out
                        h = agg.aggregate(m, [attributions[r] for r in subset], fisher=fisher)
                    except (GoalscopeError, TypeError) as e:
                        skipped.setdefault(m + OVER_IG, {})[n] = str(e)
                        continue
                    results.setdefault((m + OVER_IG, n), []).append(score(_flat(h), labels, scored))
    return results, skipped


def summarise(per_seed: list[dict]) -> dict:
    """``{name: {n: {"auroc": [mean, lo, hi], "precision_at_k": mean, "precision_at_k_ci": [mean, lo, hi],
    "per_seed_auroc": [...], "ceiling": mean, "per_seed_ceiling": [...]}}}`` from the per-seed results of
    :func:`seed_scores` (t intervals over seeds; the ceiling is the attainable AUROC given the score's exact
    zeros, averaged over seeds)."""
    keys = list(dict.fromkeys(k for res in per_seed for k in res))
    out: dict = {}
    for name, n in keys:
        au = [float(np.mean([r[0] for r in res[(name, n)]])) for res in per_seed if (name, n) in res]
        pk = [float(np.mean([r[1] for r in res[(name, n)]])) for res in per_seed if (name, n) in res]
        ce = [float(np.mean([r[2] if len(r) > 2 else math.nan for r in res[(name, n)]]))
              for res in per_seed if (name, n) in res]
        # A t interval over 3 seeds can cross the metric's range; both metrics live in [0, 1].
        ci_a, ci_p = (np.clip(t_interval(x), 0.0, 1.0).tolist() for x in (au, pk))
        v = out.setdefault(name, {})[n] = {
            "auroc": [round(x, 4) for x in ci_a], "precision_at_k": round(ci_p[0], 4),
            "precision_at_k_ci": [round(x, 4) for x in ci_p], "per_seed_auroc": [round(x, 4) for x in au],
            "ceiling": round(float(np.mean(ce)), 4) if np.isfinite(ce).all() else None,
            "per_seed_ceiling": [round(x, 4) if np.isfinite(x) else None for x in ce]}
        for j, key in ((3, "auroc_moved"), (4, "auroc_strata")):  # the readings issue 35 added, where measured
            xs = [float(np.nanmean([r[j] if len(r) > j else math.nan for r in res[(name, n)]]))
                  if any(len(r) > j and np.isfinite(r[j]) for r in res[(name, n)]) else math.nan
                  for res in per_seed if (name, n) in res]
            if np.isfinite(xs).any():
                v[key] = [round(x, 4) for x in np.clip(t_interval(xs), 0.0, 1.0).tolist()]
                v["per_seed_" + key] = [round(x, 4) if np.isfinite(x) else None for x in xs]
    return out


def paired_lower(by_method: dict, a: str, b: str, n: int) -> float:
    """Lower 95% t bound of the per-seed AUROC difference a − b at n RBs (seeds paired; NaN if unmeasurable)."""
    x, y = by_method[a][n]["per_seed_auroc"], by_method[b][n]["per_seed_auroc"]
    if len(x) != len(y):
        return math.nan
    return t_interval(np.asarray(x) - np.asarray(y))[1]


def goal(by_method: dict) -> dict:
    """The issues' bar: the best aggregator's AUROC >= 0.95 and >= 0.10 above single-RB |Δ_i| and above MA's
    Fisher alone (a map of where the policy is sensitive, which knows no RB), read at point estimates (stated as
    such), with the CI of the best beside it. Without a Fisher null only the first margin is checked (and said)."""
    best = None
    for name, by_n in by_method.items():
        if name in BASELINES:  # a ranking that knows no RB is a bar to clear, never the best method
            continue
        for n, v in by_n.items():
            if np.isfinite(v["auroc"][0]) and (best is None or v["auroc"][0] > best[2]["auroc"][0]):
                best = (name, n, v)
    if best is None or SINGLE not in by_method:
        return {"met": False, "text": "not measurable: no aggregator produced a heatmap"}
    name, n, v = best
    single = by_method[SINGLE][n]["auroc"][0]
    fisher = by_method[FISHER][n]["auroc"][0] if n in by_method.get(FISHER, {}) else None
    margins = [v["auroc"][0] - single] + ([v["auroc"][0] - fisher] if fisher is not None else [])
    met = bool(v["auroc"][0] >= GOAL_AUROC and min(margins) >= GOAL_MARGIN)
    text = (f"best: {name} with {n} RBs, AUROC {v['auroc'][0]:.3f} [{v['auroc'][1]:.3f}, {v['auroc'][2]:.3f}] vs "
            f"single-RB |Δ_i| {single:.3f} (margin {margins[0]:+.3f})"
            + (f", Fisher alone {fisher:.3f} (margin {margins[1]:+.3f})" if fisher is not None else ", no Fisher null")
            + f"; goal AUROC >= {GOAL_AUROC} and margins >= {GOAL_MARGIN}: {'met' if met else 'NOT met'}")
    return {"met": met, "best": name, "n": n, "auroc": v["auroc"], "single_rb": single, "fisher_alone": fisher,
            "text": text}


def goal_within_strata(by_method: dict, gate: dict | None) -> dict:
    """Issue 35's bar, read on the AUROC within Fisher strata (never-moved entries left out): the best method
    >= GOAL_AUROC; >= GOAL_MARGIN above every baseline at the same n (single-RB |Δ_i| and every RB-agnostic one: a
    baseline not run is "not tested" and the goal is then not met); rising with the number of RBs (its per-seed
    AUROC at that n minus at its smallest n, one-sided 95% t lower bound > 0); and only on agents that pass the
    causal gate (:mod:`goalscope.analysis.validate.causal`). Point estimates, stated as such."""
    key = "auroc_strata"
    cands = [(name, n, v) for name, by_n in by_method.items() if name not in BASELINES
             for n, v in by_n.items() if np.isfinite((v.get(key) or [math.nan])[0])]
    if not cands:
        return {"met": False, "text": "not measurable: no within-strata AUROC (no Fisher, or no method)"}
    name, n, v = max(cands, key=lambda c: c[2][key][0])
    best = v[key][0]
    margins = {b: best - by_method[b][n][key][0] for b in BASELINES
               if n in by_method.get(b, {}) and np.isfinite((by_method[b][n].get(key) or [math.nan])[0])}
    untested = [b for b in BASELINES if b not in margins]
    n0 = min(k for k, w in by_method[name].items() if np.isfinite((w.get(key) or [math.nan])[0]))
    x, y = (np.asarray(by_method[name][k].get("per_seed_" + key, []), float) for k in (n, n0))
    rise = lower = math.nan
    if n != n0 and len(x) == len(y) and len(x) >= 2:
        d = x - y
        rise = float(d.mean())
        lower = float(rise - t_quantile(0.95, len(d) - 1) * d.std(ddof=1) / math.sqrt(len(d)))
    rising = bool(np.isfinite(lower) and lower > 0)
    passed = bool(gate and gate.get("passed"))
    met = bool(best >= GOAL_AUROC and not untested and min(margins.values()) >= GOAL_MARGIN and rising and passed)
    worst = min(margins, key=margins.get) if margins else None
    text = (f"best within Fisher strata: {name} with {n} RBs, {best:.3f} [{v[key][1]:.3f}, {v[key][2]:.3f}]; "
            + (f"smallest margin {margins[worst]:+.3f} over {worst}" if worst else "no baseline")
            + f" ({', '.join(f'{b} {m:+.3f}' for b, m in margins.items())})"
            + (f"; not tested: {', '.join(untested)}" if untested else "")
            + (f"; rise from {n0} to {n} RBs {rise:+.3f} (one-sided 95% lower {lower:+.3f})" if n != n0 else
               f"; best at the smallest n ({n0}): not rising")
            + f"; causal gate {'passed' if passed else 'NOT passed' if gate else 'not run'}"
            + f"; goal AUROC >= {GOAL_AUROC}, margins >= {GOAL_MARGIN}, rising, gate passed: "
            + ("met" if met else "NOT met"))
    return {"met": met, "best": name, "n": n, "auroc_strata": v[key], "margins": margins, "untested": untested,
            "rise": rise, "rise_lower": lower, "gate_passed": passed, "text": text}


def md_name(name: str) -> str:
    """A heatmap name for a Markdown table cell: a bare "|" (as in "|Δ|") would split the cell."""
    return name.replace("|", "\\|")


def _cell(v: list) -> str:
    return "—" if v is None or not np.isfinite(v[0]) else (
        f"{v[0]:.3f}" + (f" [{v[1]:.3f}, {v[2]:.3f}]" if np.isfinite(v[1]) else ""))


def _ceiling_cell(v: dict | None) -> list | None:
    c = (v or {}).get("ceiling")
    return None if c is None else [c, math.nan, math.nan]


def localisation_markdown(loc, verdicts: dict) -> list[str]:
    """The scorecard section: AUROC and precision@k tables (heatmap x number of RBs), the goal, the skips."""
    lines = ["## Localisation against the planted objective"]
    if not isinstance(loc, dict):
        return lines + [str(loc)]
    gate = loc.get("causal_gate")
    if gate is not None:
        lines = gate_markdown(gate) + lines
        if not (isinstance(gate, dict) and gate.get("passed")):
            lines += ["", f"**Every table below is {NOT_A_TEST}**: the planted objective is not shown to drive the "
                      "agents' behaviour (causal gate above), so a high AUROC says where fine-tuning writes, not "
                      "where an objective lives."]
    share = loc["positives"] / loc["parameters"]
    ns = sorted({int(n) for by_n in loc["by_method"].values() for n in by_n})
    seeds = max((len(v.get("per_seed_auroc", [])) for by_n in loc["by_method"].values() for v in by_n.values()), default=0)
    inert = loc.get("inert_positives")
    lines += [f"{loc['positives']} of {loc['parameters']} parameters ({share:.2%}) hold the planted objective "
              f"(chance: AUROC 0.5, precision@k {share:.3f} with k = {loc['positives']})"
              + (f"; of these, {', '.join(map(str, inert))} per seed are inert (training cannot move them: a reward-map "
                 "weight whose ReLU unit is off whenever its object plane is on, W[u,k] + b[u] <= 0 in MA) and are left "
                 "out of the scoring (precision@k then counts k over the movable ones)" if inert and any(inert) else "")
              + ". 95% Student t intervals over "
              f"{seeds} seeds; each seed averages up to {MAX_SUBSETS} random RB subsets of each size. Nulls, the same "
              f"at every n: {', '.join(loc.get('nulls', []))}. MA's diagonal Fisher is scored both alone and inside "
              "the `fisher` aggregator (mean F ⊙ Δ²).", ""]
    st = loc.get("strata_info") or []
    if st:
        lines += [f"Never-moved parameters (Δ = 0 in every fine-tune and control) per seed: "
                  f"{', '.join(str(i['never_moved']) for i in st)} (planted labels among them: "
                  f"{', '.join(str(i['never_moved_positives']) for i in st)}); left out on both sides in the last "
                  f"two tables. Within Fisher strata: MA's Fisher cut at its {N_STRATA}-quantiles (ties kept in one "
                  f"stratum) over the scored, moved entries; strata holding both classes per seed "
                  f"{', '.join(str(i['strata']) for i in st)}, with {', '.join(str(i['positives_in_strata']) for i in st)}"
                  f" of {', '.join(str(i['positives_moved']) for i in st)} moved positives; per-stratum AUROCs "
                  "combined by a positives-weighted mean. A score equal to Fisher sits at ~0.5 there.", ""]
    for metric, key in (("AUROC", "auroc"), ("precision@k", "precision_at_k_ci"),
                        ("AUROC ceiling given exact zeros", "ceiling"),
                        ("AUROC, never-moved left out", "auroc_moved"), ("AUROC within Fisher strata", "auroc_strata")):
        if key in ("auroc_moved", "auroc_strata") and not any(key in v for by_n in loc["by_method"].values()
                                                              for v in by_n.values()):
            continue
        if key == "ceiling" and not any(v.get("ceiling") is not None for by_n in loc["by_method"].values()
                                        for v in by_n.values()):
            continue
        if key == "ceiling":
            lines.append("The best AUROC each score could reach given its exact zeros (ties at the bottom), mean "
                         "over seeds: a score below 1 here cannot rank some planted labels at all.")
        lines += [f"| {metric} | " + " | ".join(f"{n} RB{'s' if n > 1 else ''}" for n in ns) + " |",
                  "|---" * (len(ns) + 1) + "|"]
        for m, by_n in loc["by_method"].items():
            by_int = {int(n): v for n, v in by_n.items()}
            lines.append(f"| {md_name(m)} | " + " | ".join(_cell(_ceiling_cell(by_int.get(n)) if key == "ceiling" else
                                                                  by_int[n].get(key) if n in by_int else None)
                                                            for n in ns) + " |")
        lines.append("")
    if loc.get("goal"):
        lines.append(f"**Goal** (issue 11, plain AUROC): {loc['goal']['text']}.")
    if loc.get("goal_strata"):
        lines.append(f"**Goal** (issue 35, within Fisher strata, on agents that pass the causal gate): "
                     f"{loc['goal_strata']['text']}.")
    for m, why in (loc.get("skipped") or {}).items():
        lines.append(f"- not computed: **{m}**: {why}")
    for m, v in verdicts.items():
        lines.append(f"- **{m}**: {v}")
    return lines
