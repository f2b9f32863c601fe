"""Shard diagnostics by distance to RB's objects: is MB's RB preference a reflex, and which units track RB?

**Reflex vs pursuit.** At every decision of an evaluation episode (the run's paired episodes), the shortest-path
distance from the agent to the nearest object of each type, and whether the action taken steps closer to it.
``P(step toward type k | distance d)`` for MB_i, MA and the control; MB_i's RB preference at distance d is
``P_MB(toward RB) − P_MA(toward RB)`` minus the same for the other non-RA types (a difference in differences, so a
general rise in wandering does not count). A goal-conditioned *reflex* raises it only at small d; long-horizon
*pursuit* raises it at large d too. Episode-level: P(the RB object is collected | its distance at the start).
Views: the object maze shows the whole grid (``view = full``, and the egocentric window spans the grid), so every
object is always in view and "in view or not" cannot be separated there; env families without a grid state
(``gym_events``) are skipped with a note.

**Units that track RB's objects.** Each unit's correlation with nearness to the nearest object of each type, in MA
and MB_i, and whether the units whose tracking changed are the units Δ_i changed.

The concentration diagnostics and the per-seed shard pass are in :mod:`goalscope.analysis.steering.shards`.

May import: goalscope.analysis.stats, goalscope.rl (evaluation), goalscope.agents (hooks), goalscope.envs (oracle)
and below.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from goalscope.analysis.stats import holm, t_interval, t_test

DISTANCE_BINS = ((1, 1), (2, 2), (3, 4), (5, 7), (8, 99))


def _r(x, n=4):
    return None if x is None or not np.isfinite(x) else round(float(x), n)


def _ci(values) -> list:
    return [_r(x) for x in t_interval(values)]


# ----------------------------------------------------------------------------------------------------------------
# Reflex vs pursuit


def decision_stats(model, env_cfg, reward, episodes: int, seed: int, policy_seed: int | None = None) -> dict | None:
    """Per object type and distance bin: decisions, steps toward the nearest object of the type, the chance of a
    step toward it (share of the four moves that get closer), and per episode the start distance and whether it
    was collected. None for env families without a grid state."""
    from goalscope.envs.oracle import _INF, _distance_to
    from goalscope.rl.evaluation import model_policy, run_episodes

    if getattr(env_cfg, "family", None) != "object_maze":
        return None
    k_types, size = env_cfg.n_types, env_cfg.size
    nb = len(DISTANCE_BINS)
    toward = np.zeros((k_types, nb))
    chance = np.zeros((k_types, nb))
    count = np.zeros((k_types, nb))
    start = {}
    inner = model_policy(model, seed if policy_seed is None else policy_seed)
    moves = np.array([(-1, 0), (0, 1), (1, 0), (0, -1)])
    bins = np.zeros(200, dtype=int) - 1
    for j, (lo, hi) in enumerate(DISTANCE_BINS):
        bins[lo:min(hi, 199) + 1] = j

    def act(obs, env):
        a = inner(obs, env)
        g = env.grid_state()
        walls, objects, pos = g["walls"], g["objects"], g["pos"]
        n = len(pos)
        ar = np.arange(n)
        nxt = pos + moves[a]
        blocked = walls[ar, nxt[:, 0], nxt[:, 1]]
        nxt = np.where(blocked[:, None], pos, nxt)
        for k in range(k_types):
            dist = _distance_to(objects == k, ~walls)
            d_now = dist[ar, pos[:, 0], pos[:, 1]]
            if "d0" not in start.setdefault(k, {}):
                start[k]["d0"] = d_now.copy()
            d_next = dist[ar, nxt[:, 0], nxt[:, 1]]
            closer = np.zeros(n)
            for mv in moves:
                c = pos + mv
                dc = dist[ar, c[:, 0], c[:, 1]]
                closer += (~walls[ar, c[:, 0], c[:, 1]]) & (dc < d_now)
            ok = (d_now > 0) & (d_now < _INF)
            b = bins[np.clip(d_now, 0, 199)]
            ok &= b >= 0
            np.add.at(count[k], b[ok], 1)
            np.add.at(toward[k], b[ok], (d_next < d_now)[ok])
            np.add.at(chance[k], b[ok], closer[ok] / 4)
        return a

    was = model.training
    model.eval()
    try:
        prof = run_episodes(act, env_cfg, reward, episodes, seed)
    finally:
        model.train(was)
    collected = np.zeros((k_types, nb))
    present = np.zeros((k_types, nb))
    for k in range(k_types):
        d0 = start[k]["d0"]
        ok = (d0 > 0) & (d0 < _INF)
        b = bins[np.clip(d0, 0, 199)]
        ok &= b >= 0
        np.add.at(present[k], b[ok], 1)
        np.add.at(collected[k], b[ok], (prof.counts[:, k] > 0)[ok])
    return {"toward": toward.tolist(), "chance": chance.tolist(), "count": count.tolist(),
            "collected": collected.tolist(), "present": present.tolist()}


# ----------------------------------------------------------------------------------------------------------------
# Summary over MA seeds


def summarise_distance(per_seed: list[dict], rows: list, record) -> dict:
    """Distance-conditioned preference over MA seeds (step toward RB per decision, RB collected per episode), with
    the decisions per bin and a plain reading; appends its rows through ``record``."""
    bins = [f"{lo}" if lo == hi else (f"{lo}-{hi}" if hi < 99 else f"{lo}+") for lo, hi in DISTANCE_BINS]
    dd = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bins no decision fell in are NaN, on purpose
        for kind, (what, per) in {"step_toward": ("toward", "count"), "collected": ("collected", "present")}.items():
            dd[kind] = _distance_entry(per_seed, kind, what, per, bins, rows, record)
    # Decisions per bin (how much data each point rests on).
    dd["decisions_per_bin_MB"] = np.sum([[np.asarray(r["shards"]["distance"][f"MB[{rb}]"]["count"][i]).tolist()
                                          for rb, (i, _) in r["targets"].items()] for r in per_seed], axis=(0, 1)).tolist()
    dd["reading"] = _reflex_reading(dd["step_toward"])
    return dd


def _rate(st, k, what, per):
    num, den = np.asarray(st[what][k], float), np.asarray(st[per][k], float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / den, np.nan)


def _distance_entry(per_seed, kind, what, per, bins, rows, record) -> dict:
    """Per distance bin, t intervals over seeds of: MB's and the control's RB preference (difference in
    differences against MA and the other non-RA types), and the raw rates of MB, MA, the control and chance."""
    n = len(per_seed)
    series = {k: [] for k in ("MB preference (did)", "control preference (did)", "control |preference|", "MB", "MA",
                              "control", "chance")}
    for r in per_seed:
        dist = r["shards"]["distance"]
        acc = {k: [] for k in series}
        for rb, (i, others) in r["targets"].items():
            mb, ma, ctrl = dist[f"MB[{rb}]"], dist["MA"], dist["control"]

            def spec(m):
                own = _rate(m, i, what, per)
                return own - np.nanmean([_rate(m, o, what, per) for o in others], 0) if others else own

            acc["MB preference (did)"].append(spec(mb) - spec(ma))
            acc["control preference (did)"].append(spec(ctrl) - spec(ma))
            acc["control |preference|"].append(np.abs(spec(ctrl) - spec(ma)))
            acc["MB"].append(_rate(mb, i, what, per))
            acc["MA"].append(_rate(ma, i, what, per))
            acc["control"].append(_rate(ctrl, i, what, per))
            if kind == "step_toward":
                acc["chance"].append(_rate(ma, i, "chance", "count"))
        for k, v in acc.items():
            if v:
                series[k].append(np.nanmean(v, 0))
    entry = {"bins": bins}
    for name, arr in series.items():
        if arr:
            a = np.array(arr)
            entry[name] = [_ci(a[:, j]) for j in range(len(bins))]
    p = np.atleast_1d(t_test(np.array(series["MB preference (did)"]).T, "greater"))
    entry["p_greater"] = [_r(x, 5) for x in p]
    entry["p_holm"] = [_r(x, 5) for x in holm(p)]
    for j, b in enumerate(bins):
        for name in ("MB preference (did)", "control |preference|", "MB", "MA"):
            detail = (f"p>0={entry['p_greater'][j]} holm={entry['p_holm'][j]} of {len(bins)}; t over {n} seeds"
                      if name.startswith("MB pref") else f"t over {n} seeds")
            rows.append(record("shards", name, "RB", None, f"{kind}_at_distance_{b}", *entry[name][j], detail=detail))
    return entry


def _reflex_reading(entry: dict) -> str:
    """Plain words for the step-toward preference by distance: where its 95% t interval is above 0, and below."""
    did, bins = entry["MB preference (did)"], entry["bins"]
    above = [b for b, ci in zip(bins, did) if ci[1] is not None and ci[1] > 0]
    below = [b for b, ci in zip(bins, did) if ci[2] is not None and ci[2] < 0]
    measured = [b for b, ci in zip(bins, did) if ci[0] is not None]
    if not above:
        return "no distance bin where MB's RB preference is above MA's with 95% confidence (t over seeds, uncorrected)"
    if measured and above[-1] == measured[-1]:
        return (f"pursuit: MB steps toward RB more than MA (beyond the other types) up to the farthest distances "
                f"measured ({', '.join(above)})")
    tail = f"; at {', '.join(below)} it is reversed (below MA)" if below else "; farther away it is not above MA"
    return (f"short-range: MB steps toward RB more than MA (beyond the other types) only at distances "
            f"{', '.join(above)}{tail} — a goal-conditioned reflex more than long-horizon pursuit")


def distance_markdown(d, in_view) -> str:
    """The distance-conditioned preference tables and their reading (or why they were not measured)."""
    def f(ci, fmt="+.3f"):
        if not ci or ci[0] is None:
            return "n/a"
        return f"{ci[0]:{fmt}}" + (f" [{ci[1]:{fmt}}, {ci[2]:{fmt}}]" if ci[1] is not None else "")

    if isinstance(d, str) or d is None:
        return f"Distance-conditioned preference: {d}"
    st = d["step_toward"]
    lines = ["P(a decision steps toward the nearest RB object | its shortest-path distance); preference = "
             "(MB − MA) on RB minus the same on the other non-RA types (mean over RBs; the control, one model for "
             "every RB, averages to exactly 0 there, so its mean abs(preference) per RB is shown as the null):", "",
             "| distance | decisions (MB) | MB | MA | chance | MB preference | control abs(preference) | p>0 (Holm) |",
             "|---|---|---|---|---|---|---|---|"]
    for j, b in enumerate(st["bins"]):
        lines.append(f"| {b} | {int(d['decisions_per_bin_MB'][j])} | {f(st['MB'][j], '.3f')} | {f(st['MA'][j], '.3f')} | "
                     f"{f(st['chance'][j], '.3f')} | {f(st['MB preference (did)'][j])} | "
                     f"{f(st['control |preference|'][j], '.3f')} | {st['p_holm'][j]} |")
    co = d["collected"]
    lines += ["", "P(the RB object is collected in the episode | its distance from the start):", "",
              "| distance | MB | MA | MB preference |", "|---|---|---|---|"]
    for j, b in enumerate(co["bins"]):
        lines.append(f"| {b} | {f(co['MB'][j], '.3f')} | {f(co['MA'][j], '.3f')} | {f(co['MB preference (did)'][j])} |")
    lines += ["", f"Reading: {d['reading']}. In view: {in_view}."]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# Units that track RB's objects (issue 17, item 3)


def _corr_channels(act: torch.Tensor, target: torch.Tensor, valid: torch.Tensor) -> np.ndarray:
    """Pearson correlation per channel of ``act[N, C, ...]`` with ``target[N, ...]`` over the valid entries."""
    a = act.double().flatten(2) if act.dim() > 2 else act.double()[:, :, None]
    t = target.double().reshape(len(target), -1)
    v = valid.reshape(len(valid), -1).double()
    if a.shape[2] != t.shape[1]:
        return np.full(a.shape[1], np.nan)
    w = v[:, None, :]
    n = v.sum()
    ma = (a * w).sum((0, 2)) / n
    mt = (t * v).sum() / n
    da, dt = (a - ma[None, :, None]) * w, (t - mt)[:, None, :] * w
    cov = (da * dt).sum((0, 2))
    den = torch.sqrt((da ** 2).sum((0, 2)) * (dt ** 2).sum((0, 2)))
    return torch.where(den > 0, cov / den, torch.full_like(cov, float("nan"))).numpy()


def tracking(models: dict, obs: torch.Tensor, sites: list, n_types: int) -> dict | None:
    """Per model, site and object type: each unit's correlation with nearness to the nearest object of that type.

    Spatial sites (C, H, W) over the grid: the activation at a cell vs minus the shortest-path distance from that
    cell to the object (walls left out). Flat sites: the unit vs minus the agent's distance to the object. Only for
    full-view object-maze observations (planes: walls, agent, one per type)."""
    from goalscope.agents import hooks
    from goalscope.envs.oracle import _INF, _distance_to

    x = obs.numpy().astype(bool)
    walls = x[:, 0]
    if x.shape[1] < 2 + n_types:
        return None
    pos = np.argwhere(x[:, 1])  # (N, 3): index, row, col
    agent_rc = np.zeros((len(x), 2), int)
    agent_rc[pos[:, 0]] = pos[:, 1:]
    near, ok, near_agent, ok_agent = {}, {}, {}, {}
    ar = np.arange(len(x))
    for k in range(n_types):
        d = _distance_to(x[:, 2 + k], ~walls).astype(np.float64)
        reach = d < _INF
        near[k], ok[k] = torch.from_numpy(-np.where(reach, d, 0)), torch.from_numpy(reach)
        da = d[ar, agent_rc[:, 0], agent_rc[:, 1]]
        near_agent[k], ok_agent[k] = torch.from_numpy(-np.where(da < _INF, da, 0)), torch.from_numpy(da < _INF)
    out = {}
    for name, m in models.items():
        acts = hooks.activations(m, obs, sites)
        out[name] = {}
        for s in sites:
            a = acts[s]
            spatial = a.dim() == 4 and tuple(a.shape[2:]) == tuple(walls.shape[1:])
            out[name][s] = [(_corr_channels(a, near[k], ok[k]) if spatial else
                             _corr_channels(a.flatten(1), near_agent[k], ok_agent[k])).tolist() for k in range(n_types)]
    return out


def tracking_seed(track: dict, targets: dict, deltas: dict, site_params: dict) -> dict:
    """Per site and RB: the best unit's |correlation| with RB nearness in MA and MB_i (and with the other non-RA
    types, the specificity baseline), and whether the units whose tracking of RB changed most are the units Δ_i
    changed most (Spearman over units of |corr_MB| − |corr_MA| with ‖Δ_i‖ of the unit's output row)."""
    res = {}
    for rb, (i, others) in targets.items():
        for s in track["MA"]:
            ma = np.abs(np.asarray(track["MA"][s], float))
            mb = np.abs(np.asarray(track[f"MB[{rb}]"][s], float))
            gain = mb[i] - ma[i]
            gain_other = np.nanmean([mb[o] - ma[o] for o in others], 0) if others else np.zeros_like(gain)
            keys = site_params.get(s, [])
            rows = [deltas[rb][k] for k in keys if deltas[rb][k].dim() and deltas[rb][k].shape[0] == len(gain)]
            dnorm = np.sqrt(sum((r.double().reshape(len(gain), -1) ** 2).sum(1).numpy() for r in rows)) if rows else None
            from goalscope.analysis.stats import spearman

            res.setdefault(s, {})[rb] = {
                "best_ma": float(np.nanmax(ma[i])), "best_mb": float(np.nanmax(mb[i])),
                "best_ma_other": float(np.nanmean([np.nanmax(ma[o]) for o in others])) if others else math.nan,
                "best_mb_other": float(np.nanmean([np.nanmax(mb[o]) for o in others])) if others else math.nan,
                "mean_gain": float(np.nanmean(gain)), "mean_gain_other": float(np.nanmean(gain_other)),
                "spearman_gain_delta": spearman(np.nan_to_num(gain), dnorm) if dnorm is not None else math.nan,
                "top_gain_unit_is_top_delta_unit": bool(dnorm is not None and np.nanargmax(gain) == np.argmax(dnorm)),
                "units": int(len(gain))}
    return res


def summarise_tracking(per_seed: list[dict], rows: list, record) -> dict:
    """Per site, t intervals over MA seeds of the tracking measures (mean over RBs), and whether the gain for RB
    exceeds the gain for the other types (one-sided t); appends its rows through ``record``."""
    n = len(per_seed)
    out = {}
    sites = list(per_seed[0].get("tracking") or {})
    for s in sites:
        e = {}
        for k in ("best_ma", "best_mb", "best_ma_other", "best_mb_other", "mean_gain", "mean_gain_other",
                  "spearman_gain_delta"):
            per = [float(np.nanmean([v[k] for v in r["tracking"][s].values()])) for r in per_seed]
            e[k] = _ci(per)
            rows.append(record("shards", f"tracking:{s}", "RB", None, k, *e[k], detail=f"mean over RBs; t over {n} seeds"))
        spec = [float(np.nanmean([v["mean_gain"] - v["mean_gain_other"] for v in r["tracking"][s].values()]))
                for r in per_seed]
        e["mean_gain_minus_other"] = _ci(spec)
        e["p_gain_specific"] = _r(t_test(spec, "greater"), 5)
        e["top_unit_same"] = _r(float(np.mean([v["top_gain_unit_is_top_delta_unit"] for r in per_seed
                                               for v in r["tracking"][s].values()])))
        e["units"] = next(iter(per_seed[0]["tracking"][s].values()))["units"]
        rows.append(record("shards", f"tracking:{s}", "RB", None, "mean_gain_minus_other", *e["mean_gain_minus_other"],
                           detail=f"p>0={e['p_gain_specific']}; t over {n} seeds"))
        out[s] = e
    return out


def tracking_markdown(t: dict) -> str:
    """The tracking summary as a markdown table, one row per site."""
    def f(ci, fmt=".3f"):
        if not ci or ci[0] is None:
            return "n/a"
        return f"{ci[0]:{fmt}}" + (f" [{ci[1]:{fmt}}, {ci[2]:{fmt}}]" if ci[1] is not None else "")

    lines = ["Units that track RB's objects (|Pearson r| of a unit with nearness to the nearest object: per cell for "
             "conv sites, the agent's distance for flat ones); best unit in MA and MB_i, for RB and for the other "
             "non-RA types; mean change over units; Spearman over units of the tracking change with ‖Δ_i‖ of the "
             "unit's row:", "",
             "| site | units | best RB MA | best RB MB | best other MA | best other MB | mean gain RB − other (p) | "
             "Spearman(gain, ‖Δ‖) | top unit same |", "|---|---|---|---|---|---|---|---|---|"]
    for s, e in t.items():
        lines.append(f"| {s} | {e['units']} | {f(e['best_ma'])} | {f(e['best_mb'])} | {f(e['best_ma_other'])} | "
                     f"{f(e['best_mb_other'])} | {f(e['mean_gain_minus_other'], '+.3f')} (p={e['p_gain_specific']}) | "
                     f"{f(e['spearman_gain_delta'], '+.2f')} | {e['top_unit_same']} |")
    return "\n".join(lines)
