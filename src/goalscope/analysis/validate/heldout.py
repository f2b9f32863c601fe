"""Held-out superposition as the number of RBs grows: does a heatmap built from *other* rewards find where a new
reward's update does its work, and does it get better the more rewards it is built from?

For each graded RB_i of an MA seed, the other RBs are put in one seeded order and heatmaps are built from the first
n of them (n = 1, 2, 4, 8, 16, ... up to all others; nested, so a curve moves by adding RBs, not by redrawing them).
Each heatmap's top-k% mask grafts Δ_i onto MA (:func:`goalscope.analysis.validate.grafts.graft_tests`), and the graft
area (specific-lean recovery, k < 100%) is compared with nulls that know nothing of RB_i: random, MA's Fisher alone,
the RA-control drift — and, where the env says which input slice carries each object type, **the structural prior**:
random scores inside RB_i's own slice (its type's first-layer weights; for a mixture, every slice of a type it
revalues), ranked above everything else. A held-out heatmap that only reaches the prior transfers *where types
enter*, not a pattern; one that beats it transfers more.

A test that cannot succeed is not a finding (``../shared/reference/measurement-notes.md``): with one-hot RBs, each
objective lives in its own type's input slice, which a heatmap from other types cannot name. Two ways to make the test
fair are built here: RB families whose held-out members reuse what the others teach (``mixture``), and, for one-hot
families, **role alignment** — before aggregating, each Δ_j's input slice of its own type is swapped with that of
RB_i's type, so a heatmap from other types can point at RB_i's slice (``METHOD (role-aligned)``).

Verdicts: at the largest n, one-sided paired t over MA seeds that a heatmap's area exceeds each null, Holm over the
nulls (the ladder of :mod:`goalscope.analysis.validate.validation`); "rises with #RBs": one-sided t over seeds that
the per-seed least-squares slope of area on log2(n) is positive. May import: goalscope.analysis (records, stats,
validate.grafts, validate.reuse, effects.superposition), goalscope.program, goalscope.signals and below.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from goalscope.agents.checkpoints import load_checkpoint
from goalscope.analysis.records import record
from goalscope.analysis.stats import ALPHA, MIN_SEEDS, holm, paired_test, t_interval, t_test
from goalscope.analysis.validate.grafts import (CONTROL_NULL, FISHER_NULL, GRAFT_FRACTIONS, PER_RB, RANDOM, graft_area,
                                                graft_tests, rb_targets)
from goalscope.analysis.validate.reuse import model_evaluator
from goalscope.errors import GoalscopeError
from goalscope.program.jobs import stage_dir
from goalscope.signals import aggregators as agg
from goalscope.signals import delta as sig
from goalscope.signals.planes import first_layer

STRUCTURAL_PRIOR = "structural prior (own slice)"
ALIGNED = " (role-aligned)"
CURVE_NULLS = (RANDOM, FISHER_NULL, CONTROL_NULL, STRUCTURAL_PRIOR)
DEFAULT_METHODS = ("mean_abs", "mean")  # defined for one signal, so the curve starts at n = 1


def curve_sizes(n_others: int) -> list[int]:
    """1, 2, 4, ... up to ``n_others``, with ``n_others`` itself last when it is not a power of two."""
    sizes = [2 ** j for j in range(n_others.bit_length()) if 2 ** j <= n_others]
    return sizes + ([n_others] if n_others and sizes[-1] != n_others else [])


def nested_order(others: list[str], seed: int, rb_index: int) -> list[str]:
    """The order RBs join RB_i's heatmaps: one permutation per (seed, RB), so size n+1 contains size n."""
    rng = np.random.default_rng([seed, rb_index, 7])
    return [others[j] for j in rng.permutation(len(others))]


# ----------------------------------------------------------------------------------------------------------------
# Type slices of the first layer (pure)


def type_masks(layer) -> dict[str, list[torch.Tensor]]:
    """Where each object type enters, from a :class:`goalscope.signals.planes.FirstLayer`: tensor name -> per type, a
    boolean mask of the weights that read that type's input plane."""
    return {name: [channel == c for c in layer.objects] for name, channel in layer.channel.items()}


def align_roles(delta: dict, slices: dict, src: int, dst: int) -> dict:
    """Δ with the first-layer weights of type ``src``'s plane and type ``dst``'s plane swapped (``slices``: from
    :func:`type_masks`): what RB_src's update would look like had its type been ``dst``. Everything else, RA's plane
    included, is left where it is. Both masks select their entries in the same (unit, position) order."""
    if src == dst:
        return delta
    out = dict(delta)
    for name, idx in slices.items():
        t = delta[name].clone()
        t[idx[src]], t[idx[dst]] = delta[name][idx[dst]], delta[name][idx[src]]
        out[name] = t
    return out


def structural_prior(like: dict, slices: dict, own, gen: torch.Generator) -> dict:
    """Random scores that rank every weight of the slices of type(s) ``own`` (``slices``: from :func:`type_masks`)
    first (uniform in [1, 2) there, [0, 1) elsewhere): knows where the types enter and nothing else."""
    out = sig.random_scores_like(like, gen)
    for name, idx in slices.items():
        out[name] = out[name].clone()
        for t in np.atleast_1d(own):
            out[name][idx[int(t)]] = out[name][idx[int(t)]].clamp(max=1.0 - 1e-6) + 1.0
    return out


def changed_types(rb, ra) -> list[int]:
    """The object types whose value RB changes from RA's: a mixture RB's own slices (every one it weighs
    differently), which the structural prior ranks first."""
    return [t for t, (a, b) in enumerate(zip(ra.weights, rb.weights)) if a != b]


def one_hot_type(rb, ra) -> int | None:
    """RB's type when, over the types RA does not reward, it pays for exactly one (a one-hot or composite RB);
    None for a mixture, which has no single slice to align."""
    free = np.asarray(ra.weights, float) <= 0
    w = np.where(free, np.asarray(rb.weights, float), 0.0)
    nz = np.flatnonzero(w)
    return int(nz[0]) if len(nz) == 1 and w[nz[0]] > 0 else None


# ----------------------------------------------------------------------------------------------------------------
# One (seed, RB) task


def curve_rankings(rb: str, order: list[str], deltas: dict, sizes: list[int], methods: list[str], controls: list,
                   fisher: dict, gen: torch.Generator, slices: dict | None = None, types: dict | None = None,
                   shared: bool = False, keep=None) -> dict:
    """(size, name) -> scores for RB ``rb``: each method on the first n RBs of ``order``, role-aligned too where
    ``slices`` and every RB's one type (``types``: an int per one-hot RB; a mixture's is the list of types it
    revalues, which has no one slice to align but is what its structural prior ranks first) are known; plus |Δ_i|
    (the ceiling) and the nulls at size 0.
    ``shared``: leave out what validation's own graft study of RB already grades (|Δ_i|, random, Fisher alone, the
    control drift, and each plain method on all other RBs, its "(held-out)" ranking), so nothing is evaluated twice.
    ``keep``: the sizes below the largest to build (default: all); the largest, whose tests are the curve's primary
    claims, is always built (validate's budget cuts the exploratory points below it, :mod:`.plan`)."""
    out = {}
    if not shared:
        out = {(0, PER_RB): {k: v.abs() for k, v in deltas[rb].items()},
               (0, RANDOM): sig.random_scores_like(deltas[rb], gen), (0, FISHER_NULL): fisher}
        if controls:
            out[(0, CONTROL_NULL)] = {k: v.abs() for k, v in controls[0].items()}
    aligned = slices and types and all(isinstance(types.get(r), int) for r in [rb, *order])
    if slices and types and types.get(rb) is not None:  # a mixture's "type" is the list of types it revalues
        out[(0, STRUCTURAL_PRIOR)] = structural_prior(deltas[rb], slices, types[rb], gen)
    for n in sizes:
        if keep is not None and n not in keep and n != sizes[-1]:
            continue
        pool = [deltas[o] for o in order[:n]]
        variants = [("", pool)] if not (shared and n == len(order)) else []
        if aligned:
            variants.append((ALIGNED, [align_roles(deltas[o], slices, types[o], types[rb]) for o in order[:n]]))
        for m in methods:
            for suffix, signals in variants:
                try:
                    out[(n, m + suffix)] = agg.aggregate(m, signals, controls=controls, fisher=fisher)
                except GoalscopeError:  # e.g. pca at n = 1: left out of the curve at that size
                    continue
    return out


def heldout_task(task: dict) -> dict:
    """Graft areas of every curve ranking for one (seed, RB): a picklable job for the executor."""
    from goalscope.analysis.effects.superposition import ma_fisher

    torch.set_num_threads(1)
    run_dir, s, rb = Path(task["run_dir"]), task["seed"], task["rb"]
    ma = load_checkpoint(stage_dir(run_dir, task["ma"]))
    model = ma.build()
    mbs = {r: load_checkpoint(stage_dir(run_dir, key)) for r, key in task["mb"].items()}
    deltas = {r: sig.update_signal(ma.state_dict, mb.state_dict) for r, mb in mbs.items()}
    control = task.get("control")
    controls = [sig.update_signal(ma.state_dict, load_checkpoint(stage_dir(run_dir, control)).state_dict)] if control else []
    fisher = ma_fisher(ma, task["fisher_samples"], s, run_dir, task["ma"])
    names = list(mbs)
    order = nested_order([r for r in names if r != rb], s, names.index(rb))
    sizes = curve_sizes(len(order))
    env = ma.env
    try:  # role alignment and the structural prior need an input slice per type (an image of the maze has none)
        slices = type_masks(first_layer(ma.arch, ma.state_dict, env))
    except GoalscopeError:
        slices = None
    types = {r: (t if (t := one_hot_type(mb.reward, ma.reward)) is not None else changed_types(mb.reward, ma.reward))
             for r, mb in mbs.items()}
    gen = torch.Generator().manual_seed(20_000 + 1000 * s + names.index(rb))
    keep = task.get("keep_sizes")
    ranked = curve_rankings(rb, order, deltas, sizes, task["methods"], controls, fisher, gen, slices, types,
                            task.get("shared", False), keep)
    labels = {f"{n}|{name}": scores for (n, name), scores in ranked.items()}
    evaluate_state = model_evaluator(model, env, ma.reward, task["episodes"], task["eval_seed"], task)
    res = graft_tests(ma.state_dict, {rb: mbs[rb].state_dict}, {rb: labels}, evaluate_state,
                      {rb: rb_targets(mbs[rb].reward, ma.reward)}, lambda p: float(p.returns(ma.reward).mean()),
                      task.get("graft_fractions", GRAFT_FRACTIONS), ablation_fractions=())
    g = res["graft"][rb]
    fractions = task.get("graft_fractions", GRAFT_FRACTIONS)
    graded = [n for n in sizes if keep is None or n in keep or n == sizes[-1]]
    return {"seed": s, "rb": rb, "gain": g["gain"], "sizes": graded, "evaluations": evaluate_state.counts(),
            "area": {label: graft_area(curve, fractions) for label, curve in g["lean"].items()}}


# ----------------------------------------------------------------------------------------------------------------
# Summary over seeds (pure)


def _per_seed(parts: list[dict], label: str, seeds: list[int]) -> list[float]:
    """Mean over a seed's graded RBs (those whose MB gained a lean) of one ranking's area; NaN where none."""
    out = []
    for s in seeds:
        vals = [p["area"][label] for p in parts if p["seed"] == s and label in p["area"] and np.isfinite(p["area"][label])]
        out.append(float(np.mean(vals)) if vals else math.nan)
    return out


def slope(sizes: list[int], areas: list[float]) -> float:
    """Least-squares slope of area on log2(#RBs) (NaN with fewer than two finite points)."""
    x, y = np.log2(np.asarray(sizes, float)), np.asarray(areas, float)
    ok = np.isfinite(y)
    if ok.sum() < 2:
        return math.nan
    return float(np.polyfit(x[ok], y[ok], 1)[0])


def summarise_curve(parts: list[dict], seeds: list[int]) -> dict:
    """Area per method and size (t interval over MA seeds), the nulls, the primary tests at the largest size
    (Holm over the nulls), and whether each method rises with the number of RBs."""
    if not parts:
        return {}
    sizes = sorted({n for p in parts for n in p["sizes"]})
    labels = {lab for p in parts for lab in p["area"]}
    methods = sorted({lab.split("|", 1)[1] for lab in labels if not lab.startswith("0|")})
    nulls = [n for n in CURVE_NULLS if f"0|{n}" in labels]
    out = {"sizes": sizes, "graded": sorted({(p["seed"], p["rb"]) for p in parts if p["gain"] > 0}, key=str),
           "no_gain": sorted({(p["seed"], p["rb"]) for p in parts if not p["gain"] > 0}, key=str),
           "measure": "graft area of the specific lean (k < 100%), mean over a seed's graded RBs",
           "ceiling": {PER_RB: [round(x, 4) for x in t_interval(_per_seed(parts, f"0|{PER_RB}", seeds))]},
           "nulls": {n: [round(x, 4) for x in t_interval(_per_seed(parts, f"0|{n}", seeds))] for n in nulls},
           "methods": {}, "tests": {}, "rises": {}}
    for m in methods:
        per_n = {n: _per_seed(parts, f"{n}|{m}", seeds) for n in sizes}
        per_n = {n: v for n, v in per_n.items() if np.isfinite(v).any()}
        if not per_n:
            continue
        out["methods"][m] = {n: [round(x, 4) for x in t_interval(v)] for n, v in per_n.items()}
        top = max(per_n)
        tests = [{"null": null, **paired_test(per_n[top], _per_seed(parts, f"0|{null}", seeds))} for null in nulls]
        for t, adj in zip(tests, holm([t["p"] for t in tests])):
            t.update(p_holm=float(adj), beaten=bool(np.isfinite(adj) and adj < ALPHA and t["seeds"] >= MIN_SEEDS))
        out["tests"][m] = {"size": top, "tests": tests, "verdict": curve_verdict(tests, top)}
        slopes = [slope(list(per_n), [per_n[n][j] for n in per_n]) for j in range(len(seeds))]
        finite = [x for x in slopes if np.isfinite(x)]
        p = t_test(np.asarray(finite), "greater") if len(finite) >= 2 else math.nan
        out["rises"][m] = {"slope_per_doubling": [round(x, 4) for x in t_interval(finite)], "p": p,
                           "verdict": ("rises with #RBs" if np.isfinite(p) and p < ALPHA and len(finite) >= MIN_SEEDS
                                       else "not shown to rise with #RBs") + f" (one-sided t over {len(finite)} seeds, p = {p:.3g})"}
    return out


def curve_verdict(tests: list[dict], size: int) -> str:
    """Plain words for one held-out heatmap at its largest size: which nulls it beats after Holm, and where an
    interval excludes 0 without passing Holm, that it is not shown above that null (never "no better")."""
    beaten = [t["null"] for t in tests if t["beaten"]]
    rest = [t for t in tests if not t["beaten"]]
    parts = [f"beats {', '.join(beaten)}" if beaten else "beats no null"]
    for t in rest:
        above = t["diff"][1] > 0
        parts.append(f"{'not shown above' if above else 'not above'} {t['null']} after Holm (raw p {t['p']:.3g})")
    n = min((t["seeds"] for t in tests), default=0)
    head = ("transfers its pattern (beats the structural prior)" if STRUCTURAL_PRIOR in beaten else
            "transfers where the type enters, not a pattern" if beaten and any(t["null"] == STRUCTURAL_PRIOR for t in rest)
            else "held-out locus above every null" if beaten and not rest else
            "held-out locus above some nulls" if beaten else "no held-out transfer shown")
    return f"{head} at {size} RBs ({'; '.join(parts)}; one-sided paired t over {n} seeds, Holm over {len(tests)} nulls)"


# ----------------------------------------------------------------------------------------------------------------
# Over a run


def shared_areas(per_seed: list[dict], seed: int, rb: str, methods: list[str], n_all: int) -> dict:
    """The curve's labels that validation's own graft study of (seed, RB) already measured (see ``shared`` in
    :func:`curve_rankings`): the nulls and |Δ_i| at size 0, each plain method's "(held-out)" at size ``n_all``."""
    from goalscope.analysis.validate.grafts import HELD_OUT

    lean = next((r["graft"][rb]["lean"] for r in per_seed if r["seed"] == seed and rb in r["graft"]), {})
    out = {f"0|{name}": graft_area(lean[name]) for name in (PER_RB, RANDOM, FISHER_NULL, CONTROL_NULL) if name in lean}
    out.update({f"{n_all}|{m}": graft_area(lean[m + HELD_OUT]) for m in methods if m + HELD_OUT in lean})
    return out


def heldout_curve(cfg, plan, run_dir: Path, executor, episodes: int, graded: list[str], rows: list,
                  per_seed: list[dict] | None = None, keep_sizes=None, profiles: dict | None = None,
                  counts: list | None = None) -> dict | str:
    """The held-out curve of a finished run for the graded RBs of every seed (needs >= 2 RBs). ``per_seed``:
    validation's graft results on the same episodes, whose nulls and full-size held-out heatmaps are reused.
    ``keep_sizes``: the exploratory sizes below the largest to grade (default: all; validate's budget); the cut
    ones are said in ``cut``, and "rises with #RBs" is not measured on fewer than 2 sizes. ``profiles``: (seed, RB)
    -> the graft task's evaluations (digest -> Profile), reused exactly; ``counts`` gets each task's evaluations."""
    rbs = [r.name for r in cfg.rbs()]
    if len(rbs) < 2:
        return "a held-out heatmap needs at least 2 RBs"
    methods = [m for m in cfg.superpose.methods if m in DEFAULT_METHODS]
    if not methods:  # its largest size is validation's own held-out heatmap, graded there
        return f"the held-out curve needs {' or '.join(DEFAULT_METHODS)} in superpose.methods"
    tasks = [{"run_dir": str(run_dir), "seed": s, "rb": rb, "ma": plan.ma[s], "control": plan.control.get(s),
              "mb": {r: plan.mb[(s, r)] for r in rbs}, "methods": methods, "fisher_samples": cfg.superpose.fisher_samples,
              "episodes": episodes, "eval_seed": cfg.evaluation.seed, "shared": per_seed is not None,
              "keep_sizes": None if keep_sizes is None else list(keep_sizes), "reuse": profiles is not None,
              "profiles": (profiles or {}).get((s, rb))}
             for s in cfg.seeds for rb in graded]
    # An MB that gained no lean has NaN areas (no recovery is defined), which the per-seed means leave out.
    parts = executor.run(heldout_task, tasks, desc="held-out curve")
    for p in parts if per_seed is not None else []:
        p["area"].update(shared_areas(per_seed, p["seed"], p["rb"], methods, max(p["sizes"])))
    if counts is not None:
        counts += [p.pop("evaluations") for p in parts]
    out = summarise_curve(parts, list(cfg.seeds))
    cut = [n for n in curve_sizes(len(rbs) - 1)[:-1] if keep_sizes is not None and n not in keep_sizes]
    if cut and out:
        out["cut"] = {"sizes": cut, "why": "exploratory points cut by validate's --budget-minutes"}
        for m, r in out["rises"].items():
            r["verdict"] = (f"not measured: n = {', '.join(map(str, cut))} cut by the budget" if len(out["sizes"]) < 2
                            else f"{r['verdict']}; on n = {', '.join(map(str, out['sizes']))} only "
                                 f"(n = {', '.join(map(str, cut))} cut by the budget)")
    for m, by_n in out.get("methods", {}).items():
        for n, ci in by_n.items():
            rows.append(record("validation", m, "", None, f"held_out_area_n{n}", *ci, detail="held-out curve; t over seeds"))
    for n, ci in out.get("nulls", {}).items():
        rows.append(record("validation", n, "", None, "held_out_area_null", *ci, detail="held-out curve; t over seeds"))
    return out


def curve_markdown(curve: dict | str) -> str:
    """The scorecard section for :func:`heldout_curve`."""
    lines = ["## Held-out heatmaps as the number of RBs grows", ""]
    if isinstance(curve, str) or not curve:
        return "\n".join(lines + [curve or "not run", ""])
    sizes = curve["sizes"]
    lines += [f"Graft area (specific lean, k < 100%) of Δ_i grafted through a heatmap built from n *other* RBs; "
              f"{len(curve['graded'])} (seed, RB) pairs" + (f" ({len(curve['no_gain'])} more left out: their MB gained no "
                                                              "lean, so no recovery is defined)" if curve.get("no_gain") else "")
              + "; mean [95% t interval over MA seeds].", "",
              "| heatmap | " + " | ".join(f"n = {n}" for n in sizes) + " | rises with #RBs |",
              "|---|" + "---|" * (len(sizes) + 1)]
    for m, by_n in curve["methods"].items():
        cells = [(f"{by_n[n][0]:.3f} [{by_n[n][1]:.3f}, {by_n[n][2]:.3f}]" if n in by_n else "—") for n in sizes]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {curve['rises'][m]['verdict']} |")
    lines += ["", "| null / ceiling | area |", "|---|---|"]
    for name, ci in [*curve["nulls"].items(), *curve["ceiling"].items()]:
        lines.append(f"| {name} | {ci[0]:.3f} [{ci[1]:.3f}, {ci[2]:.3f}] |")
    lines += [""] + [f"- **{m}**: {t['verdict']}" for m, t in curve["tests"].items()]
    if curve.get("cut"):
        lines += ["", f"Not graded: n = {', '.join(map(str, curve['cut']['sizes']))} ({curve['cut']['why']})."]
    return "\n".join(lines + [""])
