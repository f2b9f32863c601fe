"""Validation: does a heatmap find the objective? Measured claims against sensitivity-matched nulls.

Run on a finished experiment (``goalscope validate runs/NAME``):

- **localisation** (architectures with a planted objective): AUROC and precision@k of each heatmap for the planted
  parameters as the number of RBs grows (see ``localisation``);
- **graft curve**: MA + mask_k ⊙ Δ_i keeps the top-k% parameters by a ranking; the fraction of MB_i's *specific
  lean* (RB objects minus the mean of the other non-RA types) recovered, with the raw RB count and RA return
  beside it. A graft carries Δ_i's own values, so any mask over behaviour-sensitive parameters recovers much of
  the behaviour: every ranking is therefore compared with nulls that match sensitivity but know nothing of RB_i
  (random; the RA-control drift |Δ_ctrl|; MA's Fisher alone; another RB's mask, top-k of Δ_j grafting Δ_i,
  averaged over every other RB j). The area leaves out k = 100%, which is MB itself for every ranking;
- **ablation**: MB_i with its top-k% parameters reset to MA: specific lean lost vs RA skill kept, same nulls;
- **held-out reward**: heatmaps are judged on RBs they were built without;
- **stability**: top-1% overlap only where units line up (fine-tune seeds of one MA), each beside a
  tensor-stratified chance level; across MA seeds only tensor-level summaries.

Verdicts rest on one-sided paired t tests over MA seeds (the independent units). Each claim (a ranking on one
measure: graft area, ablation lean lost, localisation AUROC) is pre-registered as one primary comparison per null,
with Holm-Bonferroni over those few; a null is beaten when its Holm-adjusted p < 0.05, nothing more. Everything
else is shown as exploratory (unadjusted p, no verdict). A claim whose family cannot pass at this seed count (see
:func:`goalscope.analysis.stats.holm_reachable`; always below ``stats.MIN_SEEDS``) says "underpowered at N seeds,
K would do"; a null that was not run is "not tested", never passed. Vocabulary: RB-specific / generic fine-tuning
locus / sensitivity only / no better than random, always with the nulls beaten, not beaten and not tested; where a
null is not beaten but the difference's 95% t interval excludes 0 (it fails only Holm), "not shown above N after
Holm (raw p …)" instead of the rung below: the data do not say "no better".

This module runs validation over a run and judges it (:func:`run_validation`); per-seed tests and localisation are in
:mod:`~goalscope.analysis.validate.grafts`, the checks and scorecard.md in :mod:`~goalscope.analysis.validate.scorecard`.
May import: goalscope.analysis (stats, records, validate.*, effects.superposition), goalscope.program and below.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from goalscope.outputs import atomic_write_bytes
from goalscope.analysis.validate import planted as pl
from goalscope.analysis.validate.grafts import (ABLATION_FRACTIONS, ATTRIBUTION, ATTRIBUTION_CONTROL, CONTROL_NULL,
                                                FISHER_NULL, GRAFT_FRACTIONS, HELD_OUT, NULLS, OTHER_RB_NULL, PER_RB,
                                                RANDOM, VALIDATION_EPISODES, VERDICTS, graft_area,
                                                localisation, smallest_k)
from goalscope.analysis.records import json_default, record, write_records
from goalscope.analysis.validate.heldout import heldout_curve
from goalscope.analysis.validate.stability import stability
from goalscope.analysis.validate.scorecard import (below_competence, built_in_checks, degenerate_signals,
                                                   scorecard_markdown)
from goalscope.analysis.stats import ALPHA, MIN_SEEDS, family_power, holm, paired_test, t_interval


def merge_seed_results(parts: list[dict]) -> list[dict]:
    """validate_seed's results for single RBs, joined into one result per seed (seeds and RBs in the order given)."""
    out: dict[int, dict] = {}
    for part in parts:
        whole = out.setdefault(part["seed"], {"seed": part["seed"], "graft": {}, "ablation": {}})
        whole["graft"].update(part["graft"])
        whole["ablation"].update(part["ablation"])
    return list(out.values())


def per_seed_scores(per_seed: list[dict], fractions=GRAFT_FRACTIONS) -> dict:
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
                d["graft"].append(float(np.nanmean([graft_area(c, fractions) for c in curves])))
                d["raw"].append(float(np.nanmean([graft_area(g["raw"][name], fractions) for g in gs])))
                d["ra"].append(float(np.nanmean([np.mean(g["ra"][name]) for g in gs])))
                abl = [np.mean([row["lean_lost"] for row in a[name]]) for a in res["ablation"].values() if name in a]
                d["ablation"].append(float(np.nanmean(abl)) if abl else math.nan)
            out[name] = d
    return out


def holm_claim(tests: list[dict]) -> list[dict]:
    """Holm over one claim's primary comparisons (one per null). ``beaten`` is exactly the documented rule: the
    Holm-adjusted one-sided p below ALPHA, over at least MIN_SEEDS seeds (a spread estimated from two seeds is
    not one to rest a verdict on); the two-sided interval beside it is for reading, not a second gate."""
    adjusted = holm([t["p"] for t in tests])  # a NaN p (under 2 seeds) stays NaN and out of Holm's count
    for t, adj in zip(tests, adjusted):
        t.update(p_holm=float(adj), family_size=len(tests), role="primary",
                 beaten=bool(np.isfinite(adj) and adj < ALPHA and t["seeds"] >= MIN_SEEDS))
    return tests


def compare_family(scores: dict, test: str, judged: list[str], nulls=NULLS) -> list[dict]:
    """The primary comparisons of every judged ranking on one measure (``test``: graft area or ablation lean lost).

    Each (ranking, measure) is one claim, pre-registered as one comparison per null, and Holm runs over that claim's
    nulls only: a family of every ranking against every null (32-36 tests) could not pass at 3 seeds whatever the
    effect (see :func:`goalscope.analysis.stats.holm_reachable`). A null missing from ``scores`` is not compared."""
    tests = []
    for name in judged:
        claim = [{"ranking": name, "null": null, **paired_test(scores[name][test], scores[null][test])}
                 for null in nulls if name in scores and null in scores and null != name]
        tests += holm_claim(claim)
    return tests


def exploratory_tests(scores: dict, judged: list[str], fractions=GRAFT_FRACTIONS, nulls=NULLS) -> list[dict]:
    """Comparisons outside the pre-registered claims, shown with their unadjusted p and never turned into a
    verdict: |Δ_i| against each null at each graft point below 100%, and each held-out heatmap and each attribution
    ranking against |Δ_i| (graft area and ablation: baselines first)."""
    out = []
    if PER_RB in scores:
        for null in (n for n in nulls if n in scores):
            for j, k in enumerate(fractions):
                if k >= 1:
                    continue
                a, b = ([c[j] for c in scores[x]["curve"]] for x in (PER_RB, null))
                out.append({"ranking": PER_RB, "null": null, "measure": f"graft recovery at k={k:g}", **paired_test(a, b)})
        for name in (n for n in judged if n.endswith(HELD_OUT) or n in (ATTRIBUTION, ATTRIBUTION_CONTROL)):
            for test, measure in (("graft", "graft area"), ("ablation", "ablation lean lost")):
                out.append({"ranking": name, "null": PER_RB, "measure": measure,
                            **paired_test(scores[name][test], scores[PER_RB][test])})
    return [{**t, "role": "exploratory"} for t in out]


# The verdict ladder: the first rung whose null is not beaten names the verdict. A rung whose null was not run
# stops the climb as "not tested" (a missing null is never passed).
LADDER = ((VERDICTS[3], (RANDOM,), "not tested against random"),
          (VERDICTS[2], (FISHER_NULL,), "above random; sensitivity not tested"),
          (VERDICTS[1], (CONTROL_NULL, OTHER_RB_NULL), "above sensitivity; RB-specificity not tested"))


def shown_raw(test: dict) -> bool:
    """Whether a comparison's two-sided 95% t interval lies above 0 (its raw one-sided p below 0.025): the data
    show a difference, whether or not Holm over the claim's nulls lets it through."""
    return bool(np.isfinite(test["diff"][1]) and test["diff"][1] > 0)


def not_shown_text(tests: list[dict]) -> str:
    """'not shown above N after Holm (raw p …)': comparisons whose interval excludes 0 but which Holm does not
    pass. Saying "no better than N" there would claim an absence the interval contradicts."""
    ps = ", ".join(f"{t['p']:.3g}" for t in tests)
    return f"not shown above {', '.join(t['null'] for t in tests)} after Holm (raw p {ps})"


def ladder_label(beaten: list[str], not_beaten: list[str], ranking: str = "", raw: dict | None = None) -> str:
    """The plain-words verdict of a claim from which nulls it beat; any null in neither list was not tested.

    ``raw``: null -> comparison, for the nulls not beaten whose interval nevertheless excludes 0 (:func:`shown_raw`).
    Where every null not beaten at the deciding rung is one of them, the verdict says the effect was not shown after
    Holm instead of naming the rung below ("no better than random" only where the interval includes 0)."""
    raw = raw or {}
    established = ""
    for failed, nulls, untested in LADDER:
        missed = [k for k in nulls if k in not_beaten]
        if missed:
            if all(k in raw for k in missed):
                return established + not_shown_text([raw[k] for k in missed])
            return failed
        if any(k not in beaten for k in nulls):
            return untested
        established = {RANDOM: "above random; ", FISHER_NULL: "above sensitivity; "}.get(nulls[0], established)
    if not ranking.endswith(HELD_OUT):
        return VERDICTS[0]
    # These nulls know nothing of where types enter; the held-out curve judges that (the structural prior).
    return "above every graft null (held-out; against the structural prior: see the held-out curve)"


def _seeds(n: int) -> str:
    return f"{n} seed" if n == 1 else f"{n} seeds"


def underpowered_text(power: dict) -> str:
    """'underpowered at N seeds, K would do': the label when a family cannot pass at this seed count."""
    return f"underpowered at {_seeds(power['seeds'])}, {power['seeds_needed']} would do"


def power_detail(power: dict) -> str:
    """Why a family cannot pass, in numbers: Holm's first threshold against the p a large effect reaches."""
    if power["seeds"] < 2:
        return "a t test needs 2 seeds"
    return (f"Holm over {power['tests']} needs p < {power['threshold']:.3g}; an effect of {power['effect']:g} seed SDs "
            f"reaches p = {power['smallest_p']:.2g} at {_seeds(power['seeds'])}")


def locus_verdict(tests: list[dict], ranking: str, test_name: str = "graft", n_seeds: int | None = None) -> str:
    """Which nulls a ranking beats, in plain words: RB-specific (every null, another RB's mask included) / generic
    fine-tuning locus (random and Fisher alone, but not the control drift or another RB's mask) / sensitivity only
    (random, not Fisher alone) / no better than random; "not shown above N after Holm (raw p …)" where the deciding
    null's interval excludes 0 but Holm does not pass it; "not tested" where a null that decides was not run;
    "underpowered at N seeds, K would do" when this claim's Holm family cannot pass at N seeds. Of ``n_seeds`` MA
    seeds, those whose MBs gained no specific lean have nothing to recover or lose: they are left out, and said so."""
    mine = {t["null"]: t for t in tests if t["ranking"] == ranking}
    if not mine:
        return "not measurable"
    n = min(t["seeds"] for t in mine.values())
    left = f"{n_seeds - n} of {n_seeds} MA seeds left out: their MBs gained no specific lean" if (n_seeds or 0) > n else ""
    if n == 0 and left:
        return f"not measurable ({left}, so there is nothing to recover or lose)"
    how = (f"one-sided t over {n} MA seed{'s' if n != 1 else ''}{f' ({left})' if left else ''}, Holm over its "
           f"{len(mine)} primary {test_name} comparisons")
    beaten = [k for k in NULLS if k in mine and mine[k]["beaten"]]
    not_beaten = [k for k in NULLS if k in mine and not mine[k]["beaten"]]
    untested = [k for k in NULLS if k not in mine]
    power = family_power(n, len(mine))
    raw = {k: mine[k] for k in not_beaten if shown_raw(mine[k])}
    parts = [f"beats {', '.join(beaten)}" if beaten else "beats no null"]
    if not power["reachable"]:  # in a family that cannot pass, a null not beaten is undecided, not a finding
        parts += [f"undecided: {', '.join(not_beaten)}"] if not_beaten else []
    else:
        absent = [k for k in not_beaten if k not in raw]
        parts += [f"not {', '.join(absent)}"] if absent else []
        parts += [not_shown_text(list(raw.values()))] if raw else []
    if untested:
        parts.append(f"not tested: {', '.join(untested)}")
    if not power["reachable"]:
        return f"{underpowered_text(power)} ({'; '.join(parts)}; {power_detail(power)}; {how})"
    return f"{ladder_label(beaten, not_beaten, ranking, raw)} ({'; '.join(parts)}; {how})"


def family_info(tests: list[dict], n_seeds: int) -> dict:
    """How one measure's verdicts were corrected: Holm within each claim (ranking), one primary test per null."""
    size = max((t["family_size"] for t in tests), default=0)
    return {"tests": len(tests), "claims": len({t["ranking"] for t in tests}), "family_size": size,
            "correction": "Holm-Bonferroni within each claim, over its nulls (one primary comparison per null)",
            "level": ALPHA, "seeds": n_seeds, "test": "one-sided paired t over per-seed means (ranking > null)",
            "min_seeds": MIN_SEEDS, "power": family_power(n_seeds, size)}


def summarise_validation(per_seed: list[dict], methods: list[str], rows: list | None = None,
                         fractions=GRAFT_FRACTIONS, n_rbs: int | None = None) -> dict:
    """Curves, per-seed areas, the primary graft and ablation comparisons (Holm within each claim), one verdict per
    judged ranking and measure, and the exploratory comparisons (unadjusted, no verdict).

    Judged: |Δ_i| and the attribution |IG_i| (per-RB rankings; IG also from the RA control when there is one) and
    every heatmap on held-out RBs (built without the RB it is scored on).
    Any other ranking present (e.g. in tests) is shown for reference, without a verdict."""
    rows = rows if rows is not None else []
    n_rbs = n_rbs or len({rb for res in per_seed for rb in res["graft"]})  # the family's RBs, graded or not
    scores = per_seed_scores(per_seed, fractions)
    judged = [n for n in [PER_RB, ATTRIBUTION, ATTRIBUTION_CONTROL, *(m + HELD_OUT for m in methods)] if n in scores]
    families = {t: compare_family(scores, t, judged) for t in ("graft", "ablation")}
    verdicts = {n: {t: locus_verdict(families[t], n, t, len(per_seed)) for t in families} for n in judged}
    for n in [n for n in judged if n.endswith(HELD_OUT) and n_rbs == 2]:  # built without RB_i: from RB_j's Δ alone
        same = OTHER_RB_NULL in scores and np.isfinite(scores[n]["graft"]).any() and all(np.array_equal(
            np.asarray(scores[n][k], float), np.asarray(scores[OTHER_RB_NULL][k], float), equal_nan=True)
            for k in ("curve", "ablation"))
        verdicts[n] = {t: f"same as the other-RB null ({OTHER_RB_NULL}): with 2 RBs, the heatmap built without RB_i "
                          "ranks RB_j's Δ alone; not judged" if same else
                          f"{v} (with 2 RBs, built from the other RB's Δ alone)" for t, v in verdicts[n].items()}
    exploratory = exploratory_tests(scores, judged, fractions)
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
             "roles": roles, "reference": "Bush 2025 (Craftax GTrXL): 0.01-1% of weights recovered the fine-tuned return"}
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
                               detail=f"primary; p={t['p']:.4g} holm={t['p_holm']:.4g} of {t['family_size']}"))
    for t in exploratory:
        rows.append(record("validation", t["ranking"], "", None, f"exploratory: {t['measure']} minus {t['null']}",
                           *t["diff"], detail=f"exploratory, unadjusted; p={t['p']:.4g}"))
    return {"graft": graft, "ablation": ablation, "tests": families, "verdicts": verdicts, "exploratory": exploratory,
            "families": {f: family_info(t, len(per_seed)) for f, t in families.items()},
            "held_out_graft_area": {n[:-len(HELD_OUT)]: graft["area"][n] for n in judged if n.endswith(HELD_OUT)}}


def run_validation(cfg, run_dir: str | Path, executor=None, episodes: int | None = None, log=print,
                   test_rbs: int | None = None, budget_minutes: float | None = None, plan_only: bool = False,
                   reuse: bool = True) -> dict:
    """Validate a finished run: graft and ablation tests per seed (through ``executor``), the held-out curve over
    the number of RBs, localisation, stability and verdicts against the nulls; writes scorecard.json, scorecard.md
    and validation.csv, returns the scorecard. ``test_rbs``: grade only the first N RBs of each seed (every RB still
    builds heatmaps and nulls); a family of 16 mixtures is otherwise 16 graft studies per seed. The plan (counts,
    estimate, what ``budget_minutes`` cuts: :mod:`~goalscope.analysis.validate.plan`) is logged before any worker
    starts; ``plan_only`` returns ``{"plan": ...}`` there. ``reuse=False`` evaluates identical weights again (the
    baseline of benchmarks/validate_reuse.py; the scorecard is the same)."""
    from goalscope.outputs import analysing

    with analysing(run_dir):
        return _run_validation(cfg, Path(run_dir), executor, episodes, log, test_rbs, budget_minutes, plan_only, reuse)


def _run_validation(cfg, run_dir: Path, executor, episodes, log, test_rbs=None, budget_minutes=None,
                    plan_only=False, reuse=True) -> dict:
    from goalscope.analysis.records import read_records
    from goalscope.analysis.effects.superposition import write_attribution_heatmap  # superposition is heavy: only here
    from goalscope.program.executors import LocalExecutor
    from goalscope.program.runner import plan_experiment
    from goalscope.analysis.validate.plan import Pricing, check_finished, plan_text

    start = time.perf_counter()
    if (run_dir / "records.csv").exists():
        read_records(run_dir / "records.csv")  # a truncated or damaged run is said before an hour of grafts

    torch.set_num_threads(1)  # deterministic reductions, as in the analysis
    plan = plan_experiment(cfg)
    check_finished(plan, run_dir)
    executor = executor or LocalExecutor(cfg.workers)
    rows: list[dict] = []
    card: dict = {"experiment": cfg.name, "arch": cfg.agent.arch, "seeds": cfg.seeds}
    card["below_competence"] = below_competence(run_dir)  # verdicts on models below their gate: not interpretable

    n_episodes = episodes or min(cfg.evaluation.episodes, VALIDATION_EPISODES)
    graded = [r.name for r in cfg.rbs()][:test_rbs]
    card["graded_rbs"] = graded
    pricing = Pricing(cfg, plan, run_dir, executor, n_episodes, graded, budget_minutes, reuse)
    pricing.price(cfg, plan, run_dir)  # MA of every seed evaluated here, timed: the rate, and its shared profile
    log(plan_text(pricing.report()))
    if plan_only:
        return {"plan": pricing.report()}
    parts, counts, shared = pricing.run_grafts(plan, run_dir, executor, graded, start, log)
    per_seed = merge_seed_results(parts)
    card["held_out_curve"] = heldout_curve(cfg, plan, run_dir, executor, n_episodes, graded, rows, per_seed,
                                           pricing.keep, shared, counts)
    # After the tasks, which cached MA's Fisher and every IG map in parallel: read back here, not computed serially.
    localisation(cfg, plan, run_dir, rows, card)
    write_attribution_heatmap(cfg, plan, run_dir)
    card.update(summarise_validation(per_seed, list(cfg.superpose.methods), rows, n_rbs=len(cfg.rbs())))
    card["degenerate_signals"] = degenerate_signals(run_dir)
    card["episodes"] = n_episodes
    card["stability"] = stability(cfg, plan, run_dir, rows)
    card["checks"] = built_in_checks(card)
    loc = card.get("localisation")
    if isinstance(loc, dict):
        n_max = max(n for n in next(iter(loc["by_method"].values())))
        attributed = [pl.ATTRIBUTION, pl.ATTRIBUTION_CONTROL, *(m + pl.OVER_IG for m in cfg.superpose.methods)]
        for m in [*cfg.superpose.methods, *attributed]:
            if m in loc["by_method"] and n_max in loc["by_method"][m]:
                card.setdefault("localisation_verdicts", {})[m] = _loc_verdict(loc["by_method"], m, n_max)
    card["plan"] = pricing.finish(time.perf_counter() - start, counts, log)
    write_records(rows, run_dir / "validation.csv")
    atomic_write_bytes(run_dir / "scorecard.json", json.dumps(card, indent=2, default=json_default).encode())
    atomic_write_bytes(run_dir / "scorecard.md", scorecard_markdown(card).encode())
    log(f"scorecard: {run_dir / 'scorecard.md'}")
    return card


def _finite_mean(xs) -> float | None:
    xs = [x for x in xs if np.isfinite(x)]
    return round(float(np.mean(xs)), 4) if xs else None


def _loc_verdict(by_method: dict, m: str, n: int) -> str:
    """AUROC of ``m`` with ``n`` RBs against each planted-truth null (single-RB |Δ|, control drift, Fisher alone,
    random): one primary one-sided paired t over seeds per null, Holm over them. "localises" needs every null run
    and beaten; a null that was not run is "not tested"; a family that cannot pass at this seed count (always below
    MIN_SEEDS) is "underpowered at N seeds, K would do"."""
    if not np.isfinite(by_method[m][n]["auroc"][0]):
        return "not measurable"
    mine = by_method[m][n].get("per_seed_auroc", [])
    runs = [b for b in pl.NULLS if b in by_method and n in by_method[b]
            and len(by_method[b][n].get("per_seed_auroc", [])) == len(mine)]
    tests = holm_claim([{"ranking": m, "null": b, **paired_test(mine, by_method[b][n]["per_seed_auroc"])} for b in runs])
    beaten = [t["null"] for t in tests if t["beaten"]]
    not_beaten = [t["null"] for t in tests if not t["beaten"]]
    untested = [b for b in pl.NULLS if b not in runs]
    power = family_power(len(mine), len(runs))
    how = f"one-sided paired t over {_seeds(len(mine))}, Holm over {len(runs)} nulls"
    raw = [t for t in tests if not t["beaten"] and shown_raw(t)] if power["reachable"] else []
    absent = [b for b in not_beaten if b not in {t["null"] for t in raw}]
    not_above = "not above" if power["reachable"] else "undecided:"  # a family that cannot pass finds nothing absent
    parts = ([f"above {', '.join(beaten)}"] if beaten else []) + ([f"{not_above} {', '.join(absent)}"] if absent else [])
    parts += [not_shown_text(raw)] if raw else []
    parts += [f"not tested: {', '.join(untested)}"] if untested else []
    if not power["reachable"]:
        return f"{underpowered_text(power)} ({'; '.join(parts + [power_detail(power), how])})"
    if not not_beaten and not untested:
        return f"localises (AUROC above {', '.join(beaten)}; {how})"
    if not beaten and not untested and not raw:  # "no better" only where every interval includes 0
        return f"no better than any null ({', '.join(not_beaten)}; {how})"
    return f"{'; '.join(parts)} ({how})"
