"""Shard diagnostics, concentration: is the RB-specific change concentrated in a few units?

From the seed post (objectives as many context-activated heuristics, "shards", rather than one place): per unit (a
module's output unit: a conv channel, a Linear row, weight and bias together), the mass of a non-negative score
(|Δ_i| summed over the unit's parameters; a heatmap's scores; |v_i| of a steering vector over a channel's
positions). Reported as the normalised participation ratio ``PR/N = (Σm)² / (N·Σm²)`` (1: spread evenly over all N
units; 1/N: one unit) and the Gini coefficient (0: even; → 1: one unit), over the whole network and within each
module. Chance levels: the RA-continuation control's drift |Δ_ctrl| (continued training with no new objective) and a
random direction with Δ_i's per-tensor norms (the same layer sizes, no structure). Big units (a Linear row reading
1,568 inputs) carry more mass than small ones whatever happens, which is why both chance levels keep the per-tensor
sizes.

This module also owns the per-seed shard pass of ``goalscope steer`` (:func:`seed_shards`), its summary over MA
seeds and its markdown; the other question, reflex vs pursuit (MB's RB preference by distance), and the units that
track RB's objects are in :mod:`goalscope.analysis.steering.shards_distance`.

May import: goalscope.analysis (stats, records, steering.shards_distance), goalscope.signals and below.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from goalscope.signals import delta as sig
from goalscope.analysis.steering.shards_distance import decision_stats, distance_markdown, summarise_distance
from goalscope.analysis.stats import holm, t_interval, t_test

# ----------------------------------------------------------------------------------------------------------------
# Concentration (pure)


def participation_ratio(mass) -> float:
    """(Σm)² / (N·Σm²) of non-negative masses: 1 when even over all N, 1/N when all in one."""
    m = np.asarray(mass, np.float64).ravel()
    s2 = float((m * m).sum())
    return float(m.sum() ** 2 / (len(m) * s2)) if s2 > 0 else math.nan


def gini(mass) -> float:
    """Gini coefficient of non-negative masses (0 even, (N−1)/N all in one)."""
    m = np.sort(np.asarray(mass, np.float64).ravel())
    n, total = len(m), float(m.sum())
    if n == 0 or total <= 0:
        return math.nan
    return float((2 * np.arange(1, n + 1) - n - 1) @ m / (n * total))


def unit_masses(scores: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """Per module (parameter name up to its last '.'), the mass Σ score over each output unit (dim 0), weight and
    bias of the same unit added together. 0-d parameters are one unit of their own."""
    out: dict[str, np.ndarray] = {}
    for key in sorted(scores):
        t = scores[key].detach().double().abs()
        rows = (t.reshape(1, -1) if t.dim() == 0 else t.reshape(t.shape[0], -1)).sum(1).numpy()
        mod = key.rsplit(".", 1)[0] if "." in key else key
        if mod in out and len(out[mod]) == len(rows):
            out[mod] = out[mod] + rows
        else:
            out[mod if mod not in out else key] = rows
    return out


def concentration(scores: dict[str, torch.Tensor]) -> dict:
    """Whole-network and per-module PR/N and Gini of per-unit mass."""
    by_mod = unit_masses(scores)
    allm = np.concatenate(list(by_mod.values()))
    return {"pr": participation_ratio(allm), "gini": gini(allm), "units": int(len(allm)),
            "modules": {m: {"pr": participation_ratio(x), "gini": gini(x), "units": int(len(x))}
                        for m, x in by_mod.items()}}


def channel_masses(v: torch.Tensor) -> np.ndarray:
    """|v| summed over each channel's positions (dim 0 of one example's activation)."""
    t = v.detach().double().abs()
    return (t.reshape(1, -1) if t.dim() == 0 else t.reshape(t.shape[0], -1)).sum(1).numpy()



# ----------------------------------------------------------------------------------------------------------------
# One MA seed


def seed_shards(ma_ck, mb_cks: dict, ctrl_ck, deltas: dict, d_ctrl: dict, v: dict, v_ctrl: dict, sites: list,
                targets: dict, episodes: int, eval_seed: int, seed: int) -> dict:
    """One MA seed's shard diagnostics: concentration of Δ_i, the control drift and a random direction; per-channel
    PR/N of the steering vectors; step-toward statistics by distance of MA, the control and every MB_i."""
    gen = torch.Generator().manual_seed(seed * 7_919 + 3)
    conc = {"control": _strip(concentration(d_ctrl))}
    for rb, d in deltas.items():
        conc[rb] = _strip(concentration(d))
        conc[f"random[{rb}]"] = _strip(concentration(sig.random_direction_like(d, gen)))
    act = {}
    for site in sites:
        entry = {"control": participation_ratio(channel_masses(v_ctrl[site]))}
        for rb in v:
            entry[rb] = participation_ratio(channel_masses(v[rb][site]))
            entry[f"random[{rb}]"] = participation_ratio(channel_masses(torch.randn(v[rb][site].shape, generator=gen)))
        act[site] = entry
    models = {"MA": ma_ck, "control": ctrl_ck, **{f"MB[{rb}]": c for rb, c in mb_cks.items()}}
    dist = {}
    for name, ck in models.items():
        st = decision_stats(ck.build(), ck.env, ma_ck.reward, episodes, eval_seed)
        if st is None:
            dist = None
            break
        dist[name] = st
    return {"concentration": conc, "activation_pr": act, "distance": dist}


def _strip(c: dict) -> dict:
    return {"pr": c["pr"], "gini": c["gini"], "units": c["units"],
            "module_pr": {m: x["pr"] for m, x in c["modules"].items()},
            "module_gini": {m: x["gini"] for m, x in c["modules"].items()}}


# ----------------------------------------------------------------------------------------------------------------
# Summary over MA seeds


def _r(x, n=4):
    return None if x is None or not np.isfinite(x) else round(float(x), n)


def _ci(values) -> list:
    return [_r(x) for x in t_interval(values)]


def summarise_shards(per_seed: list[dict]) -> tuple[dict, list[dict]]:
    """The shard diagnostics over MA seeds (t intervals, paired tests against the control and random, Holm) and
    their tidy rows (stage ``shards``)."""
    from goalscope.analysis.records import record as _record

    def record(*a, **k):
        a = [math.nan if x is None else x for x in a]
        return _record(*a, **k)

    n = len(per_seed)
    rbs = list(per_seed[0]["targets"])
    rows = []
    # Concentration: per seed, mean over RBs of Δ_i; the control; the random directions. Paired tests over seeds.
    conc = {}
    for metric in ("pr", "gini"):
        real = [np.mean([r["shards"]["concentration"][rb][metric] for rb in rbs]) for r in per_seed]
        ctrl = [r["shards"]["concentration"]["control"][metric] for r in per_seed]
        rnd = [np.mean([r["shards"]["concentration"][f"random[{rb}]"][metric] for rb in rbs]) for r in per_seed]
        sign = "less" if metric == "pr" else "greater"  # more concentrated: lower PR, higher Gini
        conc[metric] = {"Δ_i": _ci(real), "control drift": _ci(ctrl), "random direction": _ci(rnd),
                        "Δ_i minus control": _ci(np.subtract(real, ctrl)),
                        "p_vs_control": _r(t_test(np.subtract(real, ctrl), sign), 5),
                        "p_vs_random": _r(t_test(np.subtract(real, rnd), sign), 5)}
        for name in ("Δ_i", "control drift", "random direction", "Δ_i minus control"):
            rows.append(record("shards", name, "", None, f"unit_{metric}", *conc[metric][name],
                               detail=f"per-unit |Δ| mass over the network; t over {n} seeds"))
    ph = holm([conc["pr"]["p_vs_control"], conc["pr"]["p_vs_random"], conc["gini"]["p_vs_control"],
               conc["gini"]["p_vs_random"]])
    conc["pr"]["p_holm_vs_control"], conc["pr"]["p_holm_vs_random"] = _r(ph[0], 5), _r(ph[1], 5)
    conc["gini"]["p_holm_vs_control"], conc["gini"]["p_holm_vs_random"] = _r(ph[2], 5), _r(ph[3], 5)
    mods = list(per_seed[0]["shards"]["concentration"]["control"]["module_pr"])
    conc["modules"] = {}
    for m in mods:
        real = [np.mean([r["shards"]["concentration"][rb]["module_pr"][m] for rb in rbs]) for r in per_seed]
        ctrl = [r["shards"]["concentration"]["control"]["module_pr"][m] for r in per_seed]
        rnd = [np.mean([r["shards"]["concentration"][f"random[{rb}]"]["module_pr"][m] for rb in rbs]) for r in per_seed]
        units = per_seed[0]["shards"]["concentration"]["control"]["units"]
        conc["modules"][m] = {"Δ_i": _ci(real), "control drift": _ci(ctrl), "random direction": _ci(rnd)}
        for name, v in conc["modules"][m].items():
            rows.append(record("shards", name, "", None, f"module_unit_pr:{m}", *v, detail=f"t over {n} seeds"))
    act = {}
    for site in per_seed[0]["shards"]["activation_pr"]:
        real = [np.mean([r["shards"]["activation_pr"][site][rb] for rb in rbs]) for r in per_seed]
        ctrl = [r["shards"]["activation_pr"][site]["control"] for r in per_seed]
        rnd = [np.mean([r["shards"]["activation_pr"][site][f"random[{rb}]"] for rb in rbs]) for r in per_seed]
        act[site] = {"v_i": _ci(real), "v_ctrl": _ci(ctrl), "random": _ci(rnd)}
        for name, v in act[site].items():
            rows.append(record("shards", name, "", None, f"channel_pr:{site}", *v,
                               detail=f"per-channel |v| mass; t over {n} seeds"))
    out = {"concentration": conc, "activation_pr": act, "seeds": n}
    if any(r["shards"]["distance"] is None for r in per_seed):
        out["distance"] = "not measured: this env family has no grid state to measure distances in"
        return out, rows
    out["distance"] = summarise_distance(per_seed, rows, record)
    out["in_view"] = "not separable: the object maze shows the whole grid, so every object is always in view"
    return out, rows


def shards_markdown(s: dict) -> str:
    """The shard summary as markdown: concentration, heatmaps, steering vectors per channel, distance."""
    def f(ci, fmt="+.3f"):
        if not ci or ci[0] is None:
            return "n/a"
        return f"{ci[0]:{fmt}}" + (f" [{ci[1]:{fmt}}, {ci[2]:{fmt}}]" if ci[1] is not None else "")

    c = s["concentration"]
    lines = [f"## Shard diagnostics ({s['seeds']} MA seeds)", "",
             "Concentration of |Δ| over units (network-wide; lower PR/N and higher Gini = more concentrated):", "",
             "| signal | PR/N | Gini |", "|---|---|---|"]
    for name in ("Δ_i", "control drift", "random direction", "Δ_i minus control"):
        lines.append(f"| {name} | {f(c['pr'][name], '.3f')} | {f(c['gini'][name], '.3f')} |")
    lines += ["", f"Δ_i more concentrated than the control drift: PR p={c['pr']['p_vs_control']} (Holm "
              f"{c['pr']['p_holm_vs_control']}), Gini p={c['gini']['p_vs_control']} (Holm {c['gini']['p_holm_vs_control']}); "
              f"than a random direction: PR Holm {c['pr']['p_holm_vs_random']}, Gini Holm {c['gini']['p_holm_vs_random']}.",
              "", "Within each module (PR/N of per-unit |Δ| mass):", "", "| module | Δ_i | control drift | random |",
              "|---|---|---|---|"]
    for m, v in c["modules"].items():
        lines.append(f"| {m} | {f(v['Δ_i'], '.3f')} | {f(v['control drift'], '.3f')} | {f(v['random direction'], '.3f')} |")
    if s.get("heatmaps"):
        lines += ["", "The run's heatmaps, per-unit mass (per MA seed):", "", "| heatmap | PR/N | Gini |", "|---|---|---|"]
        for m, v in s["heatmaps"].items():
            lines.append(f"| {m} | {f(v['pr'], '.3f')} | {f(v['gini'], '.3f')} |")
    lines += ["", "Steering vectors per channel (PR/N of |v| mass over a site's channels):", "",
              "| site | v_i | v_ctrl | random |", "|---|---|---|---|"]
    for site, v in s["activation_pr"].items():
        lines.append(f"| {site} | {f(v['v_i'], '.3f')} | {f(v['v_ctrl'], '.3f')} | {f(v['random'], '.3f')} |")
    lines += ["", distance_markdown(s.get("distance"), s.get("in_view"))]
    return "\n".join(lines)


def heatmap_concentration(run_dir, seeds: list, rows: list, record) -> dict:
    """PR/N and Gini of per-unit mass of each of the run's heatmaps (per MA seed, t over seeds)."""
    from pathlib import Path

    from goalscope.inputs import read_safetensors

    out = {}
    for path in sorted((Path(run_dir) / "heatmaps").glob("*.safetensors")):
        data = read_safetensors(path, "recompute the heatmaps with `goalscope run EXPERIMENT --out RUN --force analysis`")
        per = {"pr": [], "gini": []}
        for s_ in seeds:
            heat = {k.split("/", 1)[1]: v for k, v in data.items() if k.startswith(f"seed{s_}/")}
            if not heat:
                continue
            c = concentration(heat)
            per["pr"].append(c["pr"])
            per["gini"].append(c["gini"])
        if per["pr"]:
            out[path.stem] = {m: _ci(v) for m, v in per.items()}
            for m, v in out[path.stem].items():
                rows.append(record("shards", f"heatmap:{path.stem}", "", None, f"unit_{m}", *v,
                                   detail=f"per-unit heatmap mass; t over {len(per['pr'])} seeds"))
    return out
