"""The analysis stage: finished jobs in, tidy records and heatmaps out.

Cheap next to training (seconds), so it is recomputed on every run rather than cached. Four parts:

1. performance  every model's behaviour profile, scored under RA and every RB, as a fraction of the oracle
2. signals      Δ_i = MB_i - MA and the control drift: size per layer, relative to MA and to the control, and the
                cosine similarity between all of them (shared drift shows up as cosines well above zero)
3. negation     MB*(alpha) retrained on RA against two controls, with hierarchical bootstrap CIs:
                RB objects collected, the *specific* lean (RB minus the other non-RA types, a difference in
                differences that separates a lean from plain capability loss), RA return kept, selectivity
4. superpose    one heatmap per aggregator and seed (plus the seed mean), per-RB heatmaps, seed stability
                (:mod:`goalscope.analysis.effects.superposition`)

This module owns :func:`analyse` and parts 1-3. May import: goalscope.analysis (stats, records,
effects.competence, effects.superposition), goalscope.program, goalscope.signals and below.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import torch

from goalscope.signals import delta as sig
from goalscope.agents.checkpoints import load_checkpoint
from goalscope.outputs import atomic_write_bytes
from goalscope.analysis.effects.competence import competence
from goalscope.program.config import ExperimentConfig
from goalscope.rl.evaluation import Profile, oracle_profile, run_episodes
from goalscope.envs.rewards import lean_weights
from goalscope.program.jobs import job_status, load_profile, stage_dir
from goalscope.analysis.records import merge_records, record
from goalscope.analysis.effects.superposition import seed_deltas, superpose
from goalscope.analysis.stats import MIN_SEEDS, bootstrap_mean, bootstrap_ratio, holm, seed_means, t_interval, t_test

# The stages of records.csv this analysis writes (and replaces on every run); other commands own the rest.
ANALYSIS_STAGES = ("performance", "signals", "negation", "superpose")


IDENTICAL_COSINE = 0.9999  # update signals of two fine-tunes this alike are one update, not two

def analyse(cfg: ExperimentConfig, plan, run_dir: Path, log=print) -> dict:
    # One thread, always: float reductions depend on the thread count, and a resumed run must reproduce the
    # analysis of an uninterrupted one bit for bit (its jobs, which also set one thread, may never run here).
    """The analysis stage of a run: performance, update signals, negation and superposition records, written to
    records.csv, heatmaps/ and signals/; returns the summary (what summary.json holds)."""
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
    # Rows other commands added (edits, decode, steer) stay: they are derived from finished stages this rerun reuses.
    merge_records(run_dir / "records.csv", rows, ANALYSIS_STAGES)
    log(f"analysis: {len(rows)} records -> {run_dir / 'records.csv'}")
    return summary


# ----------------------------------------------------------------------------------------------------------------
# 1. Performance


def performance_records(cfg, plan, run_dir, ok, rewards, oracles, summary) -> list[dict]:
    """Every finished model's behaviour profile scored under RA and each RB (return, fraction of the oracle, objects
    per type); fills the summary's headline fractions and the competence gate."""
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
    random_counts = None
    if oracles[ra] is None:  # no oracle: MA's gate is its lift over a random policy on the same episodes
        gen = np.random.default_rng(cfg.evaluation.seed)
        random_counts = run_episodes(lambda obs, env: gen.integers(cfg.env.n_actions, size=len(obs)), cfg.env, cfg.ra,
                                     cfg.evaluation.episodes, cfg.evaluation.seed).counts
    summary["competence"] = competence(cfg, plan, run_dir, ok, frac, random_counts)
    return rows


def _mean(xs) -> float | None:
    return float(np.mean(xs)) if xs else None


# ----------------------------------------------------------------------------------------------------------------
# 2. Update signals


def _load_states(plan, run_dir, ok) -> dict[str, dict]:
    keys = [*plan.ma.values(), *plan.mb.values(), *plan.control.values(), *plan.ma_other.values(),
            *plan.mb_rep.values(), *plan.control_rep.values()]
    return {k: load_checkpoint(stage_dir(run_dir, k)).state_dict for k in keys if k in ok}


def signal_records(cfg, plan, states, run_dir, summary) -> list[dict]:
    """Size of each update signal and of the control drift per tensor and layer, and the cosine similarity of every
    pair (written to signals/cosine.json); fills the summary's cosine groups."""
    rows = []
    named: dict[str, dict] = {}
    for s in cfg.seeds:
        deltas, control = seed_deltas(cfg, plan, states, s)
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
    identical = [(a, b) for (i, a), (j, b) in itertools.combinations(enumerate(names), 2)
                 if a.split(" | ")[0] == b.split(" | ")[0] and "control" not in a + b and cos[i, j] > IDENTICAL_COSINE]
    if identical:  # MBs whose RBs never paid: the same rewards, the same seed, the same update
        (a, b), n = identical[0], len(groups["rb_vs_rb_same_seed"])
        summary["degenerate_signals"] = (
            f"degenerate family: {len(identical)} of {n} pairs of different RBs of one MA have identical update "
            f"signals (cosine > {IDENTICAL_COSINE}; e.g. {a} and {b.split(' | ')[1]}): their fine-tunes saw the same "
            "rewards (an RB whose events never happen pays nothing), so nothing can tell those RBs apart")
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
    """MB* = MA − αΔ retrained on RA against MA retrained alike and against random directions: differences with
    hierarchical bootstrap and t intervals, Holm-corrected verdicts (also in the summary's ``negation``)."""
    rows = []
    ra = cfg.ra
    n_boot = cfg.evaluation.bootstrap
    summary["negation"] = []
    family: list = []  # (summary entry, bootstrap CI, seeds) of every verdict, corrected together at the end
    for rb in cfg.rbs():
        # For a one-hot RB: its type's objects, and those minus the mean of the other non-RA types; for a mixture
        # the same weighted by what it pays (goalscope.envs.rewards.lean_weights).
        lean_w = lean_weights(rb, ra)
        raw_w = np.where(np.asarray(ra.weights) > 0, 0.0, np.asarray(rb.weights, dtype=float))
        for alpha in cfg.negate.alphas:
            seeds = [s for s in cfg.seeds if all(k in ok for k in (
                plan.negated.get((s, rb.name, alpha, "delta")), plan.retrain_control.get(s), plan.ma.get(s)))]
            if not seeds:
                continue
            random_keys = {s: [k for (s2, r2, a2, d), k in plan.negated.items()
                               if (s2, r2, a2) == (s, rb.name, alpha) and d.startswith("random")] for s in seeds}
            use_random = all(keys and all(k in ok for k in keys) for keys in random_keys.values())
            star = _stack(run_dir, [plan.negated[(s, rb.name, alpha, "delta")] for s in seeds])
            star0 = _stack(run_dir, [plan.negated[(s, rb.name, alpha, "delta")] for s in seeds], "profile_before_retrain.json")
            ma = _stack(run_dir, [plan.ma[s] for s in seeds])
            controls = {"retrained MA": _stack(run_dir, [plan.retrain_control[s] for s in seeds])}
            n_dirs = min(len(k) for k in random_keys.values())
            if use_random:
                # The control for a seed is the mean, episode by episode, over its fresh random directions: one
                # direction is one draw of "a step of this size", not a control.
                controls["random direction"] = _mean_profile([_stack(run_dir, [random_keys[s][j] for s in seeds])
                                                              for j in range(n_dirs)])

            def rb_count(p):
                return p.counts.astype(float) @ raw_w

            def specific(p):
                return p.counts.astype(float) @ lean_w

            def ra_ret(p):
                return ra.score(p.counts, p.steps)

            model = f"MB*[{rb.name}] a={alpha:g}"
            detail = f"seeds={len(seeds)} episodes={star.counts.shape[1]}"
            if use_random:
                detail += f" random_directions={n_dirs}"
            rows.append(record("negation", model, rb.name, None, "rb_objects", *bootstrap_mean(rb_count(star), n_boot), detail))
            rows.append(record("negation", model, rb.name, None, "rb_objects_before_retrain_minus_ma",
                               *bootstrap_mean(rb_count(star0) - rb_count(ma), n_boot), detail))
            rows.append(record("negation", model, rb.name, None, "ra_return_before_retrain_minus_ma",
                               *bootstrap_mean(ra_ret(star0) - ra_ret(ma), n_boot), detail))
            entry = {"rb": rb.name, "alpha": alpha, "seeds": len(seeds)}
            for cname, c in controls.items():
                tag = cname.replace(" ", "_")
                lean = bootstrap_mean(rb_count(star) - rb_count(c), n_boot)
                spec = bootstrap_mean(specific(star) - specific(c), n_boot) if lean_w.any() else (np.nan,) * 3
                ra_change = bootstrap_mean(ra_ret(star) - ra_ret(c), n_boot)
                # Selectivity: how much more RB behaviour than RA skill the negation removed (>1: selective).
                sel = bootstrap_ratio(rb_count(c) - rb_count(star), ra_ret(c) - ra_ret(star), n_boot)
                rows.append(record("negation", model, rb.name, None, f"rb_objects_vs_{tag}", *lean, detail))
                rows.append(record("negation", model, rb.name, None, f"specific_lean_vs_{tag}", *spec, detail))
                rows.append(record("negation", model, rb.name, None, f"ra_return_vs_{tag}", *ra_change, detail))
                rows.append(record("negation", model, rb.name, None, f"selectivity_vs_{tag}", *sel, detail))
                # The verdict's evidence: a t interval over per-seed means (nominal coverage at 3-5 seeds) and its
                # two-sided p, Holm-corrected below over every negation verdict of the run.
                per_seed = seed_means(specific(star) - specific(c) if lean_w.any() else rb_count(star) - rb_count(c))
                t_ci = t_interval(per_seed)
                rows.append(record("negation", model, rb.name, None, f"lean_t_vs_{tag}", *t_ci,
                                   detail + " t interval over seed means"))
                entry[tag] = {"rb_objects_diff": _ci(lean), "specific_lean": _ci(spec), "ra_return_diff": _ci(ra_change),
                              "lean_t": _ci(t_ci), "p": t_test(per_seed)}
                family.append((entry[tag], spec if lean_w.any() else lean, len(seeds)))
            summary["negation"].append(entry)
    # Holm-Bonferroni over the whole negation family (every RB x alpha x control read by a verdict).
    for (d, boot, n), p_adj in zip(family, holm([d["p"] for d, _, _ in family])):
        d["p_holm"] = None if not np.isfinite(p_adj) else round(float(p_adj), 5)
        d["p"] = None if not np.isfinite(d["p"]) else round(float(d["p"]), 5)
        d["verdict"] = negation_verdict(boot, d["lean_t"], p_adj, n, d["p"])
    summary["negation_family"] = {"tests": len(family), "correction": "Holm-Bonferroni", "level": 0.05,
                                  "interval": "t over per-seed means (verdict), hierarchical bootstrap (shown)",
                                  "min_seeds": MIN_SEEDS}
    for d, _, _ in family:
        rows.append(record("negation", "family", "", None, "holm_p", d["p_holm"] if d["p_holm"] is not None else np.nan,
                           detail=f"{len(family)} tests; {d['verdict']}"))
    return rows


def _mean_profile(profiles: list[Profile]) -> Profile:
    """Episode-by-episode mean of paired profiles (same seeds, same episodes)."""
    return Profile(np.mean([p.counts for p in profiles], axis=0), np.mean([p.steps for p in profiles], axis=0))


def negation_verdict(boot, t_ci, p_holm: float, n_seeds: int, p_raw: float | None = None) -> str:
    """Plain words for a negation effect: both the bootstrap CI and the t interval must exclude 0, and the t test
    must survive Holm within the negation family; below MIN_SEEDS seeds the answer is "underpowered". Where both
    intervals exclude 0 but Holm does not pass, the lean is "not shown after Holm (raw p …)": "no detectable lean"
    would claim an absence the intervals contradict."""
    if n_seeds < MIN_SEEDS:
        return f"underpowered ({n_seeds} seeds, fewer than {MIN_SEEDS})"
    if not (np.isfinite(boot[1]) and np.isfinite(t_ci[1]) and np.isfinite(p_holm)):
        return "not measurable"
    for lean, shown in (("leans toward minimising RB", boot[2] < 0 and t_ci[2] < 0),
                        ("leans toward RB (more, not less)", boot[1] > 0 and t_ci[1] > 0)):
        if shown and p_holm < 0.05:
            return lean
        if shown:
            raw = "" if p_raw is None or not np.isfinite(p_raw) else f"raw p {p_raw:.3g}, "
            return f"{lean.replace('leans', 'lean', 1)}: not shown after Holm ({raw}Holm p {p_holm:.3g})"
    return "no detectable lean (Holm)"


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
