"""The analysis stage: finished jobs in, tidy records and heatmaps out.

Cheap next to training (seconds), so it is recomputed on every run rather than cached. Four parts:

1. performance  every model's behaviour profile, scored under RA and every RB, as a fraction of the oracle
2. signals      Δ_i = MB_i - MA and the control drift: size per layer, relative to MA and to the control, and the
                cosine similarity between all of them (shared drift shows up as cosines well above zero)
3. negation     MB*(alpha) retrained on RA against two controls, with hierarchical bootstrap CIs:
                RB objects collected, the *specific* lean (RB minus the other non-RA types, a difference in
                differences that separates a lean from plain capability loss), RA return kept, selectivity
4. superpose    one heatmap per aggregator and seed (plus the seed mean), per-RB heatmaps, seed stability
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save as st_save

from goalscope import aggregate as agg
from goalscope import signals as sig
from goalscope.checkpoints import atomic_write_bytes, load_checkpoint
from goalscope.config import ExperimentConfig
from goalscope.envs.rewards import Reward
from goalscope.errors import GoalscopeError
from goalscope.evaluation import Profile, oracle_profile
from goalscope.jobs import job_status, load_profile, stage_dir
from goalscope.records import record, write_records
from goalscope.stats import bootstrap_mean, bootstrap_ratio

STABILITY_TOP = 0.01  # top-1% parameter sets compared across seeds


def analyse(cfg: ExperimentConfig, plan, run_dir: Path, log=print) -> dict:
    # One thread, always: float reductions depend on the thread count, and a resumed run must reproduce the
    # analysis of an uninterrupted one bit for bit (its jobs, which also set one thread, may never run here).
    torch.set_num_threads(1)
    run_dir = Path(run_dir)
    ok = {j.key for j in plan.jobs() if (job_status(run_dir, j.key) or {}).get("status") == "ok"}
    rewards = [cfg.ra, *cfg.rbs()]
    oracles = {r.name: oracle_profile(cfg.env, r, cfg.evaluation.episodes, cfg.evaluation.seed) for r in rewards}
    rows: list[dict] = []
    summary: dict = {"experiment": cfg.name, "seeds": cfg.seeds, "ra": cfg.ra.name, "rbs": [r.name for r in rewards[1:]],
                     "failed_jobs": sorted(j.label for j in plan.jobs() if j.key not in ok)}

    rows += performance_records(cfg, plan, run_dir, ok, rewards, oracles, summary)
    states = _load_states(plan, run_dir, ok)
    rows += signal_records(cfg, plan, states, run_dir, summary)
    if cfg.negate.enabled:
        rows += negation_records(cfg, plan, run_dir, ok, summary)
    rows += superpose(cfg, plan, states, run_dir, summary)
    write_records(rows, run_dir / "records.csv")
    log(f"analysis: {len(rows)} records -> {run_dir / 'records.csv'}")
    return summary


# ----------------------------------------------------------------------------------------------------------------
# 1. Performance


def performance_records(cfg, plan, run_dir, ok, rewards, oracles, summary) -> list[dict]:
    rows = []
    frac: dict[tuple[str, str], list[float]] = {}
    for _, model, seed, key, fname in plan.models():
        if key not in ok:
            continue
        prof = load_profile(run_dir, key, fname)
        for k, c in enumerate(prof.mean_counts()):
            rows.append(record("performance", model, "", seed, f"objects:{k}", c))
        for r in rewards:
            ret = prof.returns(r).mean()
            rows.append(record("performance", model, r.name, seed, "return", ret))
            if oracles[r.name] is not None:
                f = ret / oracles[r.name].returns(r).mean()
                rows.append(record("performance", model, r.name, seed, "fraction_of_oracle", f))
                frac.setdefault((model, r.name), []).append(f)
    ra = cfg.ra.name
    summary["ma_fraction_of_oracle"] = _mean(frac.get(("MA", ra)))
    summary["mb_fraction_of_oracle_on_rb"] = {rb.name: _mean(frac.get((f"MB[{rb.name}]", rb.name))) for rb in rewards[1:]}
    summary["mb_fraction_of_oracle_on_ra"] = {rb.name: _mean(frac.get((f"MB[{rb.name}]", ra))) for rb in rewards[1:]}
    return rows


def _mean(xs) -> float | None:
    return float(np.mean(xs)) if xs else None


# ----------------------------------------------------------------------------------------------------------------
# 2. Update signals


def _load_states(plan, run_dir, ok) -> dict[str, dict]:
    keys = [*plan.ma.values(), *plan.mb.values(), *plan.control.values(), *plan.ma_other.values()]
    return {k: load_checkpoint(stage_dir(run_dir, k)).state_dict for k in keys if k in ok}


def _deltas(cfg, plan, states, seed) -> tuple[dict[str, dict], dict | None]:
    ma = states.get(plan.ma[seed])
    if ma is None:
        return {}, None
    deltas = {rb.name: sig.update_signal(ma, states[plan.mb[(seed, rb.name)]])
              for rb in cfg.rbs() if plan.mb[(seed, rb.name)] in states}
    control_key = plan.control.get(seed)
    control = sig.update_signal(ma, states[control_key]) if control_key in states else None
    return deltas, control


def signal_records(cfg, plan, states, run_dir, summary) -> list[dict]:
    rows = []
    named: dict[str, dict] = {}
    for s in cfg.seeds:
        deltas, control = _deltas(cfg, plan, states, s)
        ma = states.get(plan.ma[s])
        for name, d in [*deltas.items(), *([("control: RA", control)] if control is not None else [])]:
            named[f"seed {s} | {name}"] = d
            for row in sig.per_tensor(d, reference=ma):
                for m in ("l2", "mean_abs", "rel_l2"):
                    rows.append(record("signals", f"Δ {name}", "", s, m, row[m], detail=row["param"]))
            for row in sig.per_layer(d):
                rows.append(record("signals", f"Δ {name}", "", s, "layer_l2", row["l2"], detail=row["layer"]))
            if control is not None and name != "control: RA":
                for row in sig.relative_to_control(d, [control]):
                    rows.append(record("signals", f"Δ {name}", "", s, "l2_over_control", row["ratio"], detail=row["param"]))
        if s in plan.ma_other and plan.ma_other[s] in states and ma is not None:
            other = sig.update_signal(ma, states[plan.ma_other[s]])
            rows.append(record("signals", "MA' - MA", "", s, "l2", float(sig.flatten(other).norm())))
    names, cos = sig.cosine_matrix(named)
    (run_dir / "signals").mkdir(exist_ok=True)
    atomic_write_bytes(run_dir / "signals" / "cosine.json", json.dumps({"names": names, "matrix": cos.tolist()}).encode())
    # Summaries of the matrix: same seed, different RBs / an RB vs the RA control / same RB, different seeds.
    groups: dict[str, list[float]] = {"rb_vs_rb_same_seed": [], "rb_vs_control_same_seed": [], "same_rb_across_seeds": []}
    for (i, a), (j, b) in itertools.combinations(enumerate(names), 2):
        sa, ra_ = a.split(" | ")
        sb, rb_ = b.split(" | ")
        if sa == sb:
            groups["rb_vs_control_same_seed" if "control" in (ra_ + rb_) else "rb_vs_rb_same_seed"].append(cos[i, j])
        elif ra_ == rb_ and "control" not in ra_:
            groups["same_rb_across_seeds"].append(cos[i, j])
    summary["cosine"] = {}
    for g, vals in groups.items():
        if vals:
            rows.append(record("signals", "cosine", "", None, g, float(np.mean(vals)), float(np.min(vals)), float(np.max(vals)),
                               detail="mean (min, max) over pairs"))
            summary["cosine"][g] = round(float(np.mean(vals)), 4)
    return rows


# ----------------------------------------------------------------------------------------------------------------
# 3. Negate and retrain


def _stack(run_dir, keys, fname="profile.json") -> Profile | None:
    profs = [load_profile(run_dir, k, fname) for k in keys]
    if not profs:
        return None
    return Profile(np.stack([p.counts for p in profs]), np.stack([p.steps for p in profs]))  # (S, E, K), (S, E)


def negation_records(cfg, plan, run_dir, ok, summary) -> list[dict]:
    rows = []
    ra = cfg.ra
    K = cfg.env.n_types
    n_boot = cfg.evaluation.bootstrap
    summary["negation"] = []
    for rb in cfg.rbs():
        i_rb = rb.target_type(ra)
        others = [k for k in range(K) if k != i_rb and k not in set(ra.rewarded_types().tolist())]
        for alpha in cfg.negate.alphas:
            seeds = [s for s in cfg.seeds if all(k in ok for k in (
                plan.negated.get((s, rb.name, alpha, "delta")), plan.retrain_control.get(s), plan.ma.get(s)))]
            use_random = cfg.negate.random_control and all((s, rb.name, alpha, "random") in plan.negated and
                                                           plan.negated[(s, rb.name, alpha, "random")] in ok for s in seeds)
            if not seeds:
                continue
            star = _stack(run_dir, [plan.negated[(s, rb.name, alpha, "delta")] for s in seeds])
            star0 = _stack(run_dir, [plan.negated[(s, rb.name, alpha, "delta")] for s in seeds], "profile_before_retrain.json")
            ma = _stack(run_dir, [plan.ma[s] for s in seeds])
            controls = {"retrained MA": _stack(run_dir, [plan.retrain_control[s] for s in seeds])}
            if use_random:
                controls["random direction"] = _stack(run_dir, [plan.negated[(s, rb.name, alpha, "random")] for s in seeds])

            def rb_count(p):
                return p.counts[..., i_rb].astype(float)

            def specific(p):
                base = p.counts[..., others].mean(-1) if others else 0.0
                return p.counts[..., i_rb] - base

            def ra_ret(p):
                return ra.score(p.counts, p.steps)

            model = f"MB*[{rb.name}] a={alpha:g}"
            detail = f"seeds={len(seeds)} episodes={star.counts.shape[1]}"
            rows.append(record("negation", model, rb.name, None, "rb_objects", *bootstrap_mean(rb_count(star), n_boot), detail))
            rows.append(record("negation", model, rb.name, None, "rb_objects_before_retrain_minus_ma",
                               *bootstrap_mean(rb_count(star0) - rb_count(ma), n_boot), detail))
            rows.append(record("negation", model, rb.name, None, "ra_return_before_retrain_minus_ma",
                               *bootstrap_mean(ra_ret(star0) - ra_ret(ma), n_boot), detail))
            entry = {"rb": rb.name, "alpha": alpha, "seeds": len(seeds)}
            for cname, c in controls.items():
                tag = cname.replace(" ", "_")
                lean = bootstrap_mean(rb_count(star) - rb_count(c), n_boot)
                spec = bootstrap_mean(specific(star) - specific(c), n_boot) if others else (np.nan,) * 3
                ra_change = bootstrap_mean(ra_ret(star) - ra_ret(c), n_boot)
                # Selectivity: how much more RB behaviour than RA skill the negation removed (>1: selective).
                sel = bootstrap_ratio(rb_count(c) - rb_count(star), ra_ret(c) - ra_ret(star), n_boot)
                rows.append(record("negation", model, rb.name, None, f"rb_objects_vs_{tag}", *lean, detail))
                rows.append(record("negation", model, rb.name, None, f"specific_lean_vs_{tag}", *spec, detail))
                rows.append(record("negation", model, rb.name, None, f"ra_return_vs_{tag}", *ra_change, detail))
                rows.append(record("negation", model, rb.name, None, f"selectivity_vs_{tag}", *sel, detail))
                entry[tag] = {"rb_objects_diff": _ci(lean), "specific_lean": _ci(spec), "ra_return_diff": _ci(ra_change),
                              "verdict": verdict(spec if others else lean)}
            summary["negation"].append(entry)
    return rows


def _ci(t) -> list[float]:
    return [round(float(x), 4) for x in t]


def verdict(effect: tuple[float, float, float]) -> str:
    """Plain words for a difference with its CI (negative = fewer RB objects than the control)."""
    _, lo, hi = effect
    if not np.isfinite(lo):
        return "not measurable"
    if hi < 0:
        return "leans toward minimising RB"
    if lo > 0:
        return "leans toward RB (more, not less)"
    return "no detectable lean"


# ----------------------------------------------------------------------------------------------------------------
# 4. Superposition


def collect_observations(model, env_cfg, reward: Reward, n: int, seed: int) -> torch.Tensor:
    """``n`` observations from the agent's own on-policy rollouts (for the Fisher)."""
    n_envs = min(64, n)
    env = env_cfg.make(reward, n_envs, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    obs, out = env.reset(seed), []
    with torch.inference_mode():
        while sum(len(o) for o in out) < n:
            t = torch.from_numpy(obs)
            out.append(t)
            logits, _ = model(t)
            obs = env.step(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(-1).numpy())[0]
    return torch.cat(out)[:n]


def ma_fisher(ma, n_samples: int, seed: int) -> dict:
    """Diagonal Fisher of checkpoint ``ma``'s policy on its own rollouts under its reward (one recipe for the
    analysis, validation and the CLI, so they all score the same Fisher heatmap)."""
    model = ma.build()
    obs = collect_observations(model, ma.env, ma.reward, n_samples, seed=3000 + seed)
    return agg.fisher_diagonal(model, obs, generator=torch.Generator().manual_seed(seed))


def _normalised(h: dict) -> dict:
    total = float(sum(v.sum() for v in h.values()))
    return {k: v / total for k, v in h.items()} if total > 0 else h


def superpose(cfg, plan, states, run_dir, summary) -> list[dict]:
    rows = []
    heat_dir = run_dir / "heatmaps"
    heat_dir.mkdir(exist_ok=True)
    per_method: dict[str, dict[int, dict]] = {m: {} for m in cfg.superpose.methods}
    per_rb: dict[str, torch.Tensor] = {}
    errors: dict[str, str] = {}
    for s in cfg.seeds:
        deltas, control = _deltas(cfg, plan, states, s)
        if not deltas:
            continue
        fisher = None
        if "fisher" in cfg.superpose.methods:
            fisher = ma_fisher(load_checkpoint(stage_dir(run_dir, plan.ma[s])), cfg.superpose.fisher_samples, s)
        for name, h in agg.per_rb_heatmaps(deltas).items():
            per_rb.update({f"seed{s}/{name}/{k}": v for k, v in h.items()})
        for method in cfg.superpose.methods:
            try:
                per_method[method][s] = agg.aggregate(method, list(deltas.values()),
                                                      controls=[control] if control is not None else [], fisher=fisher)
            except GoalscopeError as e:  # e.g. pca with a single RB: reported, the other methods still run
                errors[method] = str(e)
    atomic_write_bytes(heat_dir / "per_rb.safetensors", st_save({k: v.contiguous() for k, v in per_rb.items()}))
    summary["heatmaps"] = {}
    for method, by_seed in per_method.items():
        if not by_seed:
            continue
        mean = {k: torch.stack([_normalised(h)[k] for h in by_seed.values()]).mean(0) for k in next(iter(by_seed.values()))}
        tensors = {f"mean/{k}": v for k, v in mean.items()}
        tensors.update({f"seed{s}/{k}": v for s, h in by_seed.items() for k, v in h.items()})
        atomic_write_bytes(heat_dir / f"{method}.safetensors", st_save({k: v.contiguous() for k, v in tensors.items()}))
        total = float(sum(v.sum() for v in mean.values()))
        n_params = sum(v.numel() for v in mean.values())
        shares = {k: float(v.sum()) / total if total > 0 else 0.0 for k, v in mean.items()}
        # Share of the score over share of the parameters: > 1 means the tensor is hotter than its size explains.
        enrichment = {k: shares[k] / (v.numel() / n_params) for k, v in mean.items()}
        for k in mean:
            rows.append(record("superpose", method, "", None, "score_share", shares[k], detail=k))
            rows.append(record("superpose", method, "", None, "enrichment", enrichment[k], detail=k))
        stab = _stability(list(by_seed.values()))
        if stab is not None:
            rows.append(record("superpose", method, "", None, "seed_jaccard_top1pct", stab, detail=f"chance ~{sig.jaccard_chance(STABILITY_TOP):.4f}"))
        summary["heatmaps"][method] = {"hottest_tensors": sorted(enrichment, key=enrichment.get, reverse=True)[:3],
                                       "enrichment": {k: round(v, 3) for k, v in enrichment.items()},
                                       "seed_jaccard_top1pct": None if stab is None else round(stab, 4)}
    summary["heatmap_errors"] = errors
    return rows


def _stability(heatmaps: list[dict]) -> float | None:
    """Mean Jaccard overlap of the top-1% parameter sets between pairs of seeds."""
    if len(heatmaps) < 2:
        return None
    masks = [sig.flatten(sig.topk_mask(h, STABILITY_TOP)) for h in heatmaps]
    return float(np.mean([sig.jaccard(a, b) for a, b in itertools.combinations(masks, 2)]))
