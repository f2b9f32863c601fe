"""The summary of ``goalscope steer`` over MA seeds: effects with t intervals, the tests against the nulls (Holm
within each family), activation vs weight, layer and channel agreement, the cheese-vector analogue; and the
markdown of ``RUN/steering/summary.md``.

Inputs are the per-seed results of :mod:`goalscope.analysis.steering.vectors`; the shard diagnostics are summarised
by :mod:`goalscope.analysis.steering.shards` and :mod:`goalscope.analysis.steering.shards_distance`.

May import: goalscope.analysis (stats, records, steering.shards, steering.shards_distance,
steering.vectors) and below.
"""

from __future__ import annotations

import math

import numpy as np

from goalscope.analysis.stats import holm, spearman, t_interval, t_test
from goalscope.analysis.steering.vectors import SCALES, SPACES, VECTORS, lean_of

# ----------------------------------------------------------------------------------------------------------------
# Summary over MA seeds


def _r(x, n=4):
    return None if x is None or not np.isfinite(x) else round(float(x), n)


def _ci(values) -> list:
    return [_r(x) for x in t_interval(values)]


def summarise(per_seed: list[dict]) -> tuple[dict, list[dict]]:
    """Per (space, site, vector, scale): effect on RB objects / specific lean / RA relative to MA, as a fraction of
    MB's own gain, and the intervention's size; seed means of the per-seed mean over RBs, t intervals over seeds.
    Tests: Δ_i against each null (one-sided paired t over seeds), Holm within each space; activation vs weight per
    site (two-sided); layer agreement."""
    from goalscope.analysis.records import record as _record

    def record(*a, **k):
        a = [math.nan if x is None else x for x in a]
        return _record(*a, **k)

    seeds = [r["seed"] for r in per_seed]
    rbs = list(per_seed[0]["targets"])
    sites = per_seed[0]["sites"]
    gain = {}  # (seed, rb) -> MB's lean gain and RB-object gain over MA
    for r in per_seed:
        ma = r["base"]["MA"]
        for rb, (i, o) in r["targets"].items():
            mb = r["base"][f"MB[{rb}]"]
            gain[(r["seed"], rb)] = (lean_of(mb["counts"], i, o) - lean_of(ma["counts"], i, o),
                                     mb["counts"][i] - ma["counts"][i])
    # effect[(space, site, vector, scale)] -> {metric: [per-seed mean over RBs]}
    # abs_d_lean: mean over RBs of |Δ lean|. The mean of a signed lean over RBs is 0 by construction for any model
    # that is the same for every RB (the control, the control patch) when the RBs are all the non-RA types: the four
    # specific leans of one profile sum to zero. |Δ lean| shows how far such a null moves each RB's lean.
    metrics = ("d_lean", "abs_d_lean", "d_rb", "frac_lean", "d_ra", "kl", "site_shift", "lean_per_kl")
    eff: dict = {}
    per_rb: dict = {}
    for r in per_seed:
        ma = r["base"]["MA"]
        by_key: dict = {}
        for row in r["rows"]:
            i, o = r["targets"][row["rb"]]
            g, _ = gain[(r["seed"], row["rb"])]
            d_lean = row["lean"] - lean_of(ma["counts"], i, o)
            vals = {"d_lean": d_lean, "abs_d_lean": abs(d_lean), "d_rb": row["rb_objects"] - ma["counts"][i],
                    "frac_lean": d_lean / g if g > 0 else math.nan, "d_ra": row["ra_return"] - ma["ra_return"],
                    "kl": row["kl"], "site_shift": row["site_shift"],
                    "lean_per_kl": d_lean / row["kl"] if row["kl"] > 1e-3 else math.nan}
            k = (row["space"], row["site"], row["vector"], row["scale"])
            by_key.setdefault(k, []).append(vals)
            per_rb.setdefault((*k, row["rb"]), {}).setdefault(r["seed"], vals)
        for k, lst in by_key.items():
            d = eff.setdefault(k, {m: [] for m in metrics})
            for m in metrics:
                xs = [x[m] for x in lst if np.isfinite(x[m])]
                d[m].append(float(np.mean(xs)) if xs else math.nan)
    rows, table = [], []
    n = len(seeds)
    for (space, site, vector, scale), d in eff.items():
        entry = {"space": space, "site": site, "vector": vector, "scale": scale}
        for m in metrics:
            entry[m] = _ci(d[m])
        table.append(entry)
        for m in ("d_lean", "abs_d_lean", "d_rb", "frac_lean", "d_ra", "kl", "site_shift"):
            rows.append(record("steering", f"{space}:{site}", vector, None, f"{m}_c{scale:+g}", *entry[m],
                               detail=f"mean over RBs; t interval over {n} MA seeds"))
    for (space, site, vector, scale, rb), by_seed in per_rb.items():
        if vector == "Δ_i":
            rows.append(record("steering", f"{space}:{site}", rb, None, f"d_lean_c{scale:+g}",
                               *t_interval([v["d_lean"] for v in by_seed.values()]),
                               detail=f"one RB; t interval over {n} MA seeds"))
    # Tests: does Δ_i (the patch) move the lean beyond each null? (c > 0: more lean than the null; c < 0: less.)
    scales = sorted({k[3] for k in eff}, key=lambda c: (abs(c), -c))
    pairs = (("Δ_i", "random"), ("Δ_i", "control"), ("patch", "control patch"))
    tests = {}
    for space in SPACES:
        fam = []
        for site in [*sites, "all"]:
            for scale in scales:
                for vector, null in pairs:
                    real, other = eff.get((space, site, vector, scale)), eff.get((space, site, null, scale))
                    if real is None or other is None:
                        continue
                    diff = np.array(real["d_lean"]) - np.array(other["d_lean"])
                    p = t_test(diff, "greater" if scale > 0 else "less")
                    fam.append({"site": site, "scale": scale, "vector": vector, "null": null, "diff": _ci(diff),
                                "p": _r(p, 5)})
        ph = holm([t["p"] if t["p"] is not None else math.nan for t in fam])
        for t, h in zip(fam, ph):
            t["p_holm"] = _r(h, 5)
            t["beaten"] = bool(np.isfinite(h) and h < 0.05)
            rows.append(record("steering", f"{space}:{t['site']}", t["vector"], None,
                               f"d_lean_c{t['scale']:+g}_minus_{t['null']}", *t["diff"],
                               detail=f"p={t['p']} holm={t['p_holm']} of {len(fam)}; one-sided paired t, {n} seeds"))
        tests[space] = fam
    # Activation vs weight at each site: which moves the lean more, raw and per nat of KL (two-sided).
    versus = []
    for site in sites:
        for scale in SCALES:
            for vector in ("Δ_i", "patch"):
                a, w = eff.get(("activation", site, vector, scale)), eff.get(("weight", site, "Δ_i", scale))
                if a is None or w is None:
                    continue
                for m in ("d_lean", "lean_per_kl"):
                    diff = np.array(a[m]) - np.array(w[m])
                    versus.append({"site": site, "scale": scale, "vector": vector, "metric": m,
                                   "activation": _ci(a[m]), "weight": _ci(w[m]), "diff": _ci(diff),
                                   "p": _r(t_test(diff), 5)})
    ph = holm([v["p"] if v["p"] is not None else math.nan for v in versus])
    for v, h in zip(versus, ph):
        v["p_holm"] = _r(h, 5)
        rows.append(record("steering", f"activation_minus_weight:{v['site']}", v["vector"], None,
                           f"{v['metric']}_c{v['scale']:+g}", *v["diff"],
                           detail=f"p={v['p']} holm={v['p_holm']} of {len(versus)}; two-sided paired t, {n} seeds"))
    # Layer agreement: per (seed, RB), the site where +v_i moves the lean most vs where +Δ_i|site does.
    agree, rhos = [], []
    for r in per_seed:
        for rb in rbs:
            best = {}
            for space in SPACES:
                xs = {row["site"]: row["lean"] for row in r["rows"] if row["rb"] == rb and row["space"] == space
                      and row["vector"] == "Δ_i" and row["scale"] == 1.0 and row["site"] in sites}
                best[space] = xs
            common = [s for s in sites if s in best["activation"] and s in best["weight"]]
            if len(common) >= 2:
                a = [best["activation"][s] for s in common]
                w = [best["weight"][s] for s in common]
                agree.append(common[int(np.argmax(a))] == common[int(np.argmax(w))])
                rhos.append(spearman(a, w))
    chance = 1 / max(1, len(sites))
    layer = {"agree_fraction": _r(float(np.mean(agree))) if agree else None, "pairs": len(agree),
             "chance": _r(chance), "spearman_over_sites": _ci([x for x in rhos if np.isfinite(x)]),
             "best_site_activation": _mode_best(per_seed, "activation", sites),
             "best_site_weight": _mode_best(per_seed, "weight", sites)}
    rows.append(record("steering", "layer_agreement", "", None, "best_site_same_fraction",
                       layer["agree_fraction"] if layer["agree_fraction"] is not None else math.nan,
                       detail=f"{len(agree)} (seed, RB) pairs; chance {chance:.3g}"))
    # Channel agreement (within a seed, units line up).
    chan = {}
    for site in sites:
        cs = [c for r in per_seed for c in r["channels"] if c["site"] == site]
        if not cs:
            continue
        per = {k: [float(np.nanmean([c[k] for c in r["channels"] if c["site"] == site])) for r in per_seed]
               for k in ("spearman_v_delta", "spearman_v_ctrl_drift", "spearman_vctrl_ctrl_drift")}
        chan[site] = {k: _ci(v) for k, v in per.items()}
        chan[site]["units"] = cs[0]["units"]
        chan[site]["top_unit_same"] = _r(float(np.mean([c["top_unit_same"] for c in cs])))
        for k, v in chan[site].items():
            if isinstance(v, list):
                rows.append(record("steering", f"channels:{site}", "", None, k, *v,
                                   detail=f"Spearman over {chan[site]['units']} units; t over {n} seeds"))
    base = {}
    for r in per_seed:
        for name, b in r["base"].items():
            base.setdefault(name, []).append(b)
    gains = {"lean": _ci([np.mean([gain[(s, rb)][0] for rb in rbs]) for s in seeds]),
             "rb_objects": _ci([np.mean([gain[(s, rb)][1] for rb in rbs]) for s in seeds])}
    summary = {"seeds": seeds, "rbs": rbs, "sites": sites, "scales": list(SCALES), "effects": table,
               "tests": tests, "activation_vs_weight": versus, "layer_agreement": layer, "channels": chan,
               "mb_gain": gains, "seed_count": n,
               "correction": "Holm-Bonferroni within each family (activation nulls, weight nulls, activation vs "
                             "weight); one-sided paired t over MA seeds for Δ_i vs nulls",
               "base_counts": {k: np.mean([b["counts"] for b in v], 0).round(3).tolist() for k, v in base.items()},
               "wall_s": [r["wall_s"] for r in per_seed]}
    return summary, rows


def _mode_best(per_seed, space, sites):
    from collections import Counter

    c = Counter()
    for r in per_seed:
        for rb in r["targets"]:
            xs = {row["site"]: row["lean"] for row in r["rows"] if row["rb"] == rb and row["space"] == space
                  and row["vector"] == "Δ_i" and row["scale"] == 1.0 and row["site"] in sites}
            if xs:
                c[max(xs, key=xs.get)] += 1
    return dict(c)


# ----------------------------------------------------------------------------------------------------------------
# Text


def _fmt(ci, f="+.3f") -> str:
    if not ci or ci[0] is None:
        return "n/a"
    if ci[1] is None:
        return format(ci[0], f)
    return f"{ci[0]:{f}} [{ci[1]:{f}}, {ci[2]:{f}}]"


def summary_markdown(s: dict) -> str:
    """``RUN/steering/summary.md``: the summary's tables (effects, tests, activation vs weight, agreement, shards)."""
    from goalscope.analysis.steering.shards import shards_markdown

    n = s["seed_count"]
    lines = [f"# Steering vectors vs weight-space edits ({n} MA seeds, RBs {', '.join(s['rbs'])})", "",
             f"MB's own gain over MA (mean over RBs): specific lean {_fmt(s['mb_gain']['lean'])}, RB objects "
             f"{_fmt(s['mb_gain']['rb_objects'])} per episode. Episodes per profile: {s['settings']['episodes']} "
             f"(paired, seed {s['settings']['eval_seed']}); observation set: {s['settings']['observations_per_seed']} "
             f"per seed from rollouts on seed {s['settings']['obs_seed']}.", "",
             "Change in the specific lean relative to MA (objects per episode; mean over RBs, 95% t interval over "
             "MA seeds), and the policy change it cost (mean KL(π_MA‖π_edit), nats). A model that is the same for "
             "every RB (control, control patch) has a mean Δ lean of exactly 0 when the RBs are all the non-RA types "
             "(one profile's specific leans sum to zero); its mean abs(Δ lean) is the size of that null:", "",
             "| space | site | vector | c | Δ lean | mean over RBs of abs(Δ lean) | fraction of MB's gain | Δ RA return "
             "| KL | site shift |", "|---|---|---|---|---|---|---|---|---|---|"]
    for e in sorted(s["effects"], key=lambda e: (e["space"], s["sites"].index(e["site"]) if e["site"] in s["sites"]
                                                 else 99, VECTORS.index(e["vector"]), abs(e["scale"]), -e["scale"])):
        lines.append(f"| {e['space']} | {e['site']} | {e['vector']} | {e['scale']:+g} | {_fmt(e['d_lean'])} | "
                     f"{_fmt(e['abs_d_lean'], '.3f')} | "
                     f"{_fmt(e['frac_lean'], '+.2f')} | {_fmt(e['d_ra'])} | {_fmt(e['kl'], '.3f')} | "
                     f"{_fmt(e['site_shift'], '.2f')} |")
    for space, fam in s["tests"].items():
        lines += ["", f"Δ_i against the nulls, {space} space ({len(fam)} tests, Holm, one-sided paired t over {n} "
                  "seeds; c=+1: more lean than the null, c=−1: less):", "",
                  "| site | c | vector | null | difference | p | p (Holm) | beaten |", "|---|---|---|---|---|---|---|---|"]
        for t in fam:
            lines.append(f"| {t['site']} | {t['scale']:+g} | {t['vector']} | {t['null']} | {_fmt(t['diff'])} | {t['p']} | "
                         f"{t['p_holm']} | {'yes' if t['beaten'] else 'no'} |")
    lines += ["", f"Activation minus weight at the same site ({len(s['activation_vs_weight'])} tests, two-sided, Holm):",
              "", "| site | c | activation vector | metric | activation | weight | difference | p (Holm) |",
              "|---|---|---|---|---|---|---|---|"]
    for v in s["activation_vs_weight"]:
        lines.append(f"| {v['site']} | {v['scale']:+g} | {v['vector']} | {v['metric']} | {_fmt(v['activation'])} | {_fmt(v['weight'])} "
                     f"| {_fmt(v['diff'])} | {v['p_holm']} |")
    la = s["layer_agreement"]
    lines += ["", f"Layer agreement: the site where +v_i raises the lean most is the site where grafting Δ_i's "
              f"parameters of that site raises it most in {la['agree_fraction']} of {la['pairs']} (seed, RB) pairs "
              f"(chance {la['chance']}); Spearman over sites {_fmt(la['spearman_over_sites'])}; best sites, "
              f"activation {la['best_site_activation']}, weight {la['best_site_weight']}.", "",
              "Channel agreement (Spearman over a site's units of |v_i| with ‖Δ_i‖ of the module's output rows; "
              "t over seeds):", "", "| site | units | v_i vs Δ_i | v_i vs Δ_ctrl | v_ctrl vs Δ_ctrl | top unit same |",
              "|---|---|---|---|---|---|"]
    for site, c in s["channels"].items():
        lines.append(f"| {site} | {c['units']} | {_fmt(c['spearman_v_delta'], '+.2f')} | "
                     f"{_fmt(c['spearman_v_ctrl_drift'], '+.2f')} | {_fmt(c['spearman_vctrl_ctrl_drift'], '+.2f')} | "
                     f"{c['top_unit_same']} |")
    if s.get("object_vector"):
        lines += ["", object_vector_markdown(s["object_vector"])]
    lines += ["", shards_markdown(s["shards"]), ""]
    if s.get("tracking"):
        from goalscope.analysis.steering.shards_distance import tracking_markdown

        lines += [tracking_markdown(s["tracking"]), ""]
    return "\n".join(lines)



def summarise_object_vector(per_seed: list[dict], rows_out: list) -> dict | None:
    """Per (site, vector, c): the fraction of MB_i's lean gain over MA that subtracting the vector removes, and the
    raw change in RB objects; t over MA seeds; object vector vs random, one-sided paired t, Holm over sites x c."""
    from goalscope.analysis.records import record as _record

    def record(*a, **k):
        return _record(*[math.nan if x is None else x for x in a], **k)

    if not per_seed or not all(r["rows"] for r in per_seed):
        return None
    n = len(per_seed)
    eff: dict = {}
    for r in per_seed:
        by: dict = {}
        for row in r["rows"]:
            gain = row["lean_mb"] - row["lean_ma"]
            by.setdefault((row["site"], row["vector"], row["scale"]), []).append({
                "removed": (row["lean_mb"] - row["lean"]) / gain if gain > 0 else math.nan,
                "d_lean": row["lean"] - row["lean_mb"], "d_rb": row["rb_objects"] - row["rb_mb"], "kl": row["kl"]})
        for k, lst in by.items():
            d = eff.setdefault(k, {m: [] for m in ("removed", "d_lean", "d_rb", "kl")})
            for m in d:
                xs = [x[m] for x in lst if np.isfinite(x[m])]
                d[m].append(float(np.mean(xs)) if xs else math.nan)
    table = []
    for (site, vector, c), d in eff.items():
        e = {"site": site, "vector": vector, "scale": c, **{m: _ci(v) for m, v in d.items()}}
        table.append(e)
        for m in ("removed", "d_lean", "d_rb", "kl"):
            rows_out.append(record("steering", f"object_vector:{site}", vector, None, f"{m}_c{c:+g}", *e[m],
                                   detail=f"MB_i + c*v_obj; mean over RBs; t over {n} seeds"))
    tests = []
    for (site, vector, c), d in eff.items():
        if vector != "object vector" or (site, "random", c) not in eff:
            continue
        diff = np.array(d["d_lean"]) - np.array(eff[(site, "random", c)]["d_lean"])
        tests.append({"site": site, "scale": c, "diff": _ci(diff), "p": _r(t_test(diff, "less"), 5)})
    for t, h in zip(tests, holm([t["p"] if t["p"] is not None else math.nan for t in tests])):
        t["p_holm"] = _r(h, 5)
        rows_out.append(record("steering", f"object_vector:{t['site']}", "object vector", None,
                               f"d_lean_c{t['scale']:+g}_minus_random", *t["diff"],
                               detail=f"p={t['p']} holm={t['p_holm']} of {len(tests)}; one-sided paired t, {n} seeds"))
    return {"effects": table, "tests": tests, "seeds": n,
            "present_fraction": _r(float(np.mean([row["present_fraction"] for r in per_seed for row in r["rows"]])))}


def object_vector_markdown(o: dict) -> str:
    """The cheese-vector analogue's tables (effects and the tests against a random vector), as markdown."""
    lines = [f"Cheese-vector analogue ({o['seeds']} MA seeds): MB_i + c·v_obj, v_obj = MB_i's mean activation with "
             f"its RB object present minus the same observations with it removed ({o['present_fraction']} of the "
             "observations had it); fraction of MB_i's lean gain over MA removed, change in RB objects, KL from MB_i:",
             "", "| site | vector | c | lean gain removed | Δ RB objects | KL |", "|---|---|---|---|---|---|"]
    for e in o["effects"]:
        lines.append(f"| {e['site']} | {e['vector']} | {e['scale']:+g} | {_fmt(e['removed'], '+.2f')} | "
                     f"{_fmt(e['d_rb'])} | {_fmt(e['kl'], '.3f')} |")
    lines += ["", "| site | c | object vector − random (Δ lean) | p | p (Holm) |", "|---|---|---|---|---|"]
    for t in o["tests"]:
        lines.append(f"| {t['site']} | {t['scale']:+g} | {_fmt(t['diff'])} | {t['p']} | {t['p_holm']} |")
    return "\n".join(lines)
