"""The superposition part of the analysis stage: many update signals into one heatmap per aggregator and seed (and
the seed mean), per-RB heatmaps, what each heatmap is mostly made of (rank correlation with references that know no
RB), the component PCA removes, and seed stability. Also MA's diagonal Fisher on its own observations.

May import: goalscope.signals, goalscope.program, goalscope.rl and below, goalscope.analysis.stats/records.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import torch
from safetensors.torch import save as st_save

from goalscope.signals import aggregators as agg
from goalscope.signals.fisher import fisher_diagonal
from goalscope.signals.attribution import STEPS as IG_STEPS, integrated_gradients
from goalscope.signals import delta as sig
from goalscope.agents.checkpoints import HEATMAP_FORMAT, load_checkpoint
from goalscope.outputs import atomic_write_bytes
from goalscope.envs.rewards import Reward
from goalscope.errors import GoalscopeError
from goalscope.analysis.records import record
from goalscope.analysis.stats import spearman
from goalscope.program.jobs import stage_dir

HEATMAP = {"format": HEATMAP_FORMAT}  # never mistaken for weights (same names and shapes)
STABILITY_TOP = 0.01  # top-1% parameter sets compared across seeds


def seed_deltas(cfg, plan, states, seed, rep: int = 0) -> tuple[dict[str, dict], dict | None]:
    """Update signals of MA seed ``seed`` from its fine-tune seed ``rep`` (0: the MBs used everywhere)."""
    ma = states.get(plan.ma[seed])
    if ma is None:
        return {}, None
    mb = {rb.name: plan.mb[(seed, rb.name)] if rep == 0 else plan.mb_rep.get((seed, rb.name, rep)) for rb in cfg.rbs()}
    deltas = {rb: sig.update_signal(ma, states[k]) for rb, k in mb.items() if k in states}
    control_key = plan.control.get(seed) if rep == 0 else plan.control_rep.get((seed, rep))
    control = sig.update_signal(ma, states[control_key]) if control_key in states else None
    return deltas, control


def collect_observations(model, env_cfg, reward: Reward, n: int, seed: int) -> torch.Tensor:
    """``n`` observations from the agent's own on-policy rollouts (for the Fisher)."""
    n_envs = min(64, n)
    env = env_cfg.make(reward, n_envs, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    try:
        obs, out = env.reset(seed), []
        with torch.inference_mode():
            while sum(len(o) for o in out) < n:
                t = torch.from_numpy(obs)
                out.append(t)
                logits, _ = model(t)
                obs = env.step(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(-1).numpy())[0]
    finally:  # an env may hold worker processes (env.processes)
        getattr(env, "close", lambda: None)()
    return torch.cat(out)[:n]


FISHER_FORMAT = "goalscope-fisher/1"


def ma_fisher(ma, n_samples: int, seed: int, run_dir=None, ma_key: str | None = None) -> dict:
    """Diagonal Fisher of checkpoint ``ma``'s policy on its own rollouts under its reward (one recipe for the
    analysis, validation and the CLI, so they all score the same Fisher heatmap).

    Given the run and MA's job key it is cached in RUN/signals/: the analysis stage, every validate task of the
    seed and the planted scoring then share one computation instead of each making its own."""
    path = identity = None
    if run_dir is not None and ma_key is not None:
        identity = f"{FISHER_FORMAT}|{ma_key}|{_fingerprint(ma.state_dict)}|{n_samples}|{seed}"
        path = _signals_path(run_dir, f"fisher_seed{seed}", identity)
        cached = _read_cached(path, ma.state_dict)
        if cached is not None:
            return cached[0]
    model = ma.build()
    obs = collect_observations(model, ma.env, ma.reward, n_samples, seed=3000 + seed)
    fisher = fisher_diagonal(model, obs, generator=torch.Generator().manual_seed(seed))
    if path is not None:
        _write_cached(path, fisher, {}, FISHER_FORMAT, identity)
    return fisher


ATTRIBUTION_OBS = 256  # MB's own states the behaviour change is measured on (per RB)
ATTRIBUTION_FORMAT = "goalscope-attribution/1"


def _fingerprint(state: dict) -> str:
    """A hash of the weights themselves: a job retrained under the same key (``--force``) invalidates its caches."""
    import hashlib

    h = hashlib.sha1()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().contiguous().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def _signals_path(run_dir, stem: str, identity: str):
    """RUN/signals/<stem>_<hash of identity>.safetensors: a changed recipe or input gets a new name."""
    import hashlib
    from pathlib import Path

    return Path(run_dir) / "signals" / f"{stem}_{hashlib.sha1(identity.encode()).hexdigest()[:12]}.safetensors"


def _read_cached(path, like: dict) -> tuple[dict, dict] | None:
    """(tensors named and shaped as ``like``, info) from a cache file; None when it is missing, damaged or foreign
    (recomputed by the caller)."""
    from goalscope.inputs import read_safetensors

    if not path.exists():
        return None
    try:
        cached = read_safetensors(path)
        out = {k: cached[k] for k in like}
    except (GoalscopeError, KeyError):
        return None
    if any(out[k].shape != like[k].shape for k in like):
        return None
    return out, {k[len("__info__/"):]: float(v) for k, v in cached.items() if k.startswith("__info__/")}


def _write_cached(path, tensors: dict, info: dict, fmt: str, identity: str) -> None:
    path.parent.mkdir(exist_ok=True)
    body = {**{k: v.contiguous() for k, v in tensors.items()},
            **{f"__info__/{k}": torch.tensor(float(v)) for k, v in info.items()}}
    atomic_write_bytes(path, st_save(body, metadata={"format": fmt, "identity": identity}))


def attribution_maps(run_dir, seed: int, ma, ma_key: str, mbs: dict, start=None, start_key: str | None = None,
                     n_obs: int = ATTRIBUTION_OBS, steps: int = IG_STEPS) -> dict:
    """Integrated gradients of the behaviour change of each fine-tune of MA seed ``seed``: ``{rb: (IG, info)}``.

    ``mbs`` maps RB -> (job key, checkpoint). The path runs from MA (or from ``start``, the RA control, keyed
    ``start_key``) to MB_i, with L = KL(π_MB ‖ π_θ) on ``n_obs`` of MB's own states (see
    :func:`goalscope.signals.attribution.integrated_gradients`). Each (seed, RB, path) is cached in
    RUN/signals/ under a name that carries the job keys, steps and observations, so a rerun reuses it and a
    changed recipe or a damaged file recomputes it."""
    model = ma.build()
    like = {k: ma.state_dict[k] for k, _ in model.named_parameters()}
    base = start.state_dict if start is not None else ma.state_dict
    out = {}
    for rb, (mb_key, mb) in mbs.items():
        identity = (f"{ATTRIBUTION_FORMAT}|{ma_key}|{start_key or ma_key}|{mb_key}|{steps}|{n_obs}|"
                    f"{_fingerprint(base)}|{_fingerprint(mb.state_dict)}")
        slug = "".join(c if c.isalnum() else "_" for c in rb)[:40]
        path = _signals_path(run_dir, f"attribution_seed{seed}_{slug}", identity)
        cached = _read_cached(path, like)
        if cached is None:
            obs = collect_observations(mb.build(), mb.env, mb.reward, n_obs, seed=4000 + seed)
            cached = integrated_gradients(model, base, mb.state_dict, obs, steps=steps)
            _write_cached(path, *cached, ATTRIBUTION_FORMAT, identity)
        out[rb] = cached
    return out


def write_attribution_heatmap(cfg, plan, run_dir) -> None:
    """heatmaps/attribution.safetensors: per seed the mean over RBs of |IG_i| (the behaviour change's attribution
    along MA -> MB_i, read from the run's cache), and their seed mean, laid out like every aggregator's heatmap so
    ``run.heatmap("attribution")`` and the report read it alike."""
    from pathlib import Path

    by_seed = {}
    for s in cfg.seeds:
        ma = load_checkpoint(stage_dir(run_dir, plan.ma[s]))
        mbs = {rb.name: (plan.mb[(s, rb.name)], load_checkpoint(stage_dir(run_dir, plan.mb[(s, rb.name)])))
               for rb in cfg.rbs()}
        maps = [ig for ig, _ in attribution_maps(run_dir, s, ma, plan.ma[s], mbs).values()]
        by_seed[s] = {k: torch.stack([m[k].abs() for m in maps]).mean(0) for k in maps[0]}
    first = next(iter(by_seed.values()))
    tensors = {f"mean/{k}": torch.stack([_normalised(h)[k] for h in by_seed.values()]).mean(0) for k in first}
    tensors.update({f"seed{s}/{k}": v for s, h in by_seed.items() for k, v in h.items()})
    atomic_write_bytes(Path(run_dir) / "heatmaps" / "attribution.safetensors",
                       st_save({k: v.contiguous() for k, v in tensors.items()}, metadata=HEATMAP))


def _normalised(h: dict) -> dict:
    total = float(sum(v.sum() for v in h.values()))
    return {k: v / total for k, v in h.items()} if total > 0 else h


def superpose(cfg, plan, states, run_dir, summary) -> list[dict]:
    """One heatmap per aggregator and seed plus the seed mean (heatmaps/<method>.safetensors), per-RB heatmaps, what
    each is mostly made of and seed stability; returns the records (the summary gets ``heatmaps``)."""
    rows = []
    heat_dir = run_dir / "heatmaps"
    heat_dir.mkdir(exist_ok=True)
    per_method: dict[str, dict[int, dict]] = {m: {} for m in cfg.superpose.methods}
    per_rb: dict[str, torch.Tensor] = {}
    errors: dict[str, str] = {}
    diagnostics: dict[str, dict[str, list[float]]] = {}
    within_ma: dict[str, list[tuple[float, float, float | None]]] = {}
    pca_removed: list[dict] = []
    strata = plane_strata(cfg, plan, states)
    for s in cfg.seeds:
        deltas, control = seed_deltas(cfg, plan, states, s)
        if not deltas:
            continue
        # MA's Fisher is always computed: besides the fisher aggregator it is the sensitivity reference every
        # heatmap is compared with (a map that is mostly Fisher carries little RB information).
        fisher = ma_fisher(load_checkpoint(stage_dir(run_dir, plan.ma[s])), cfg.superpose.fisher_samples, s, run_dir,
                           plan.ma[s])
        controls = [control] if control is not None else []
        for name, h in agg.per_rb_heatmaps(deltas).items():
            per_rb.update({f"seed{s}/{name}/{k}": v for k, v in h.items()})
        references = heatmap_references(deltas, control, fisher)
        for method in cfg.superpose.methods:
            try:
                per_method[method][s] = agg.aggregate(method, list(deltas.values()), controls=controls, fisher=fisher)
            except GoalscopeError as e:  # e.g. pca with a single RB: reported, the other methods still run
                errors[method] = str(e)
                continue
            for ref, rho in heatmap_diagnostics(per_method[method][s], references).items():
                diagnostics.setdefault(method, {}).setdefault(ref, []).append(rho)
            # Within-MA stability: the same method on another fine-tune seed's Δs of this MA (units line up).
            for rep in range(1, cfg.finetune.seeds_per_ma):
                d_rep, c_rep = seed_deltas(cfg, plan, states, s, rep)
                if len(d_rep) != len(deltas):
                    continue
                try:
                    other = agg.aggregate(method, list(d_rep.values()), controls=[c_rep] if c_rep is not None else [],
                                          fisher=fisher)
                except GoalscopeError:
                    continue
                a, b = sig.topk_mask(per_method[method][s], STABILITY_TOP), sig.topk_mask(other, STABILITY_TOP)
                within_ma.setdefault(method, []).append((
                    sig.jaccard(sig.flatten(a), sig.flatten(b)), sig.jaccard_chance_stratified(a, b, seed=s),
                    None if strata is None else sig.jaccard_chance_stratified(a, b, seed=s, strata=strata)))
        if len(deltas) >= 2:
            pca_removed.append(pca_removed_component(list(deltas.values()), control))
    atomic_write_bytes(heat_dir / "per_rb.safetensors", st_save({k: v.contiguous() for k, v in per_rb.items()}, metadata=HEATMAP))
    summary["heatmaps"] = {}
    for method, by_seed in per_method.items():
        if not by_seed:
            continue
        mean = {k: torch.stack([_normalised(h)[k] for h in by_seed.values()]).mean(0) for k in next(iter(by_seed.values()))}
        tensors = {f"mean/{k}": v for k, v in mean.items()}
        tensors.update({f"seed{s}/{k}": v for s, h in by_seed.items() for k, v in h.items()})
        atomic_write_bytes(heat_dir / f"{method}.safetensors", st_save({k: v.contiguous() for k, v in tensors.items()}, metadata=HEATMAP))
        total = float(sum(v.sum() for v in mean.values()))
        n_params = sum(v.numel() for v in mean.values())
        shares = {k: float(v.sum()) / total if total > 0 else 0.0 for k, v in mean.items()}
        # Share of the score over share of the parameters: > 1 means the tensor is hotter than its size explains.
        enrichment = {k: shares[k] / (v.numel() / n_params) for k, v in mean.items()}
        for k in mean:
            rows.append(record("superpose", method, "", None, "score_share", shares[k], detail=k))
            rows.append(record("superpose", method, "", None, "enrichment", enrichment[k], detail=k))
        stab = _stability(list(by_seed.values()), strata)
        if stab is not None:
            # Across MA seeds units do not line up: this overlap is only a tensor-size effect unless it clearly
            # exceeds the tensor-stratified chance level beside it, and only "they read the same input plane"
            # unless it exceeds the tensor-and-plane chance too.
            plane = "" if stab[2] is None else f"; tensor-and-input-plane-stratified chance {stab[2]:.4f}"
            rows.append(record("superpose", method, "", None, "seed_jaccard_top1pct", stab[0],
                               detail=f"across MA seeds; tensor-stratified chance {stab[1]:.4f}{plane}"))
        diag = {ref: round(float(np.mean(v)), 4) for ref, v in diagnostics.get(method, {}).items()}
        for ref, v in diag.items():
            rows.append(record("superpose", method, "", None, f"spearman_with: {ref}", v, detail="mean over seeds"))
        within = within_ma.get(method)
        within_plane = None if not within or within[0][2] is None else round(float(np.mean([w[2] for w in within])), 4)
        if within:
            plane = "" if within_plane is None else f"; tensor-and-input-plane-stratified chance {within_plane:.4f}"
            rows.append(record("superpose", method, "", None, "within_ma_jaccard_top1pct", float(np.mean([w[0] for w in within])),
                               detail=f"other fine-tune seed of the same MA; stratified chance {np.mean([w[1] for w in within]):.4f}{plane}"))
        summary["heatmaps"][method] = {
            "hottest_tensors": sorted(enrichment, key=enrichment.get, reverse=True)[:3],
            "enrichment": {k: round(v, 3) for k, v in enrichment.items()},
            "seed_jaccard_top1pct": None if stab is None else round(stab[0], 4),
            "seed_jaccard_stratified_chance": None if stab is None else round(stab[1], 4),
            "seed_jaccard_plane_stratified_chance": None if stab is None or stab[2] is None else round(stab[2], 4),
            "within_ma_jaccard_top1pct": None if not within else round(float(np.mean([w[0] for w in within])), 4),
            "within_ma_stratified_chance": None if not within else round(float(np.mean([w[1] for w in within])), 4),
            "within_ma_plane_stratified_chance": within_plane,
            "spearman_with": diag, "warning": mostly_warning(diag)}
    if pca_removed:
        summary["pca_removed_component"] = {k: round(float(np.mean([p[k] for p in pca_removed if np.isfinite(p[k])])), 4)
                                            if any(np.isfinite(p[k]) for p in pca_removed) else None
                                            for k in pca_removed[0]}
        summary["pca_removed_component"]["note"] = pca_note(summary["pca_removed_component"])
    summary["heatmap_errors"] = errors
    return rows


MOSTLY = 0.9  # a heatmap whose rank correlation with a reference reaches this is "mostly" that reference


def heatmap_references(deltas: dict, control: dict | None, fisher: dict) -> dict:
    """What a heatmap could be mostly made of without knowing any RB: MA's sensitivity, the control drift, and
    the plain mean size of the updates."""
    refs = {"Fisher alone (MA)": fisher,
            "mean |Δ|": {k: torch.stack([d[k].abs() for d in deltas.values()]).mean(0) for k in next(iter(deltas.values()))}}
    if control is not None:
        refs["|Δ_ctrl|"] = {k: v.abs() for k, v in control.items()}
    return refs


def heatmap_diagnostics(heatmap: dict, references: dict) -> dict[str, float]:
    """Spearman rank correlation of a heatmap with each reference, over every parameter."""
    h = sig.flatten(heatmap).double().numpy()
    return {name: spearman(h, sig.flatten(ref).double().numpy()) for name, ref in references.items()}


def mostly_warning(diag: dict[str, float]) -> str | None:
    """Plain words when a heatmap's ranking is mostly one of its references."""
    hits = [f"{ref} (ρ = {v:.2f})" for ref, v in diag.items() if v is not None and np.isfinite(v) and v >= MOSTLY]
    return f"this map is mostly {' and '.join(hits)}: its ranking adds little beyond it" if hits else None


def pca_removed_component(deltas: list[dict], control: dict | None) -> dict[str, float]:
    """Cosine of the component PCA removes with the control drift and with the mean Δ: does it remove optimiser
    drift (the control) or simply what all RBs share?"""
    shared, ratio = agg.shared_component(deltas, 1)
    v = sig.flatten(shared).double()
    mean = torch.stack([sig.flatten(d).double() for d in deltas]).mean(0)

    def cos(a, b):
        den = float(a.norm() * b.norm())
        return float(a @ b) / den if den > 0 else math.nan

    return {"cosine_with_mean_delta": cos(v, mean),
            "cosine_with_control_drift": cos(v, sig.flatten(control).double()) if control is not None else math.nan,
            "explained_variance": ratio}


def pca_note(p: dict) -> str:
    """A sentence on what PCA's removed component resembles more: the mean Δ or the control drift."""
    c, m = p.get("cosine_with_control_drift"), p.get("cosine_with_mean_delta")
    if m is None:
        return "not measurable"
    if c is None or abs(m) > abs(c) + 0.2:
        return (f"PCA's removed component is mostly the mean Δ (cosine {m:.2f}"
                + (f"; with the control drift only {c:.2f}" if c is not None else "")
                + "): it removes what all RBs share, not optimiser drift")
    return f"PCA's removed component aligns with the control drift (cosine {c:.2f}; with the mean Δ {m:.2f})"


def plane_strata(cfg, plan, states) -> dict | None:
    """The input plane each first-layer weight reads (:func:`goalscope.signals.planes.first_layer`, the same
    finder as the input-plane ground truth), as strata for a chance level; None where no layer reads planes."""
    from goalscope.signals.planes import first_layer

    ma = next((states[plan.ma[s]] for s in cfg.seeds if plan.ma.get(s) in states), None)
    if ma is None:
        return None
    try:
        return first_layer(cfg.agent.arch, ma, cfg.env).channel
    except GoalscopeError:
        return None


def _stability(heatmaps: list[dict], strata: dict | None = None) -> tuple[float, float, float | None] | None:
    """Mean Jaccard overlap of the top-1% parameter sets between pairs of seeds, its tensor-stratified chance, and
    its chance stratified by tensor and input plane (None without ``strata``)."""
    if len(heatmaps) < 2:
        return None
    masks = [sig.topk_mask(h, STABILITY_TOP) for h in heatmaps]
    pairs = list(itertools.combinations(masks, 2))
    plane = None if strata is None else float(np.mean([sig.jaccard_chance_stratified(a, b, seed=i, strata=strata)
                                                      for i, (a, b) in enumerate(pairs)]))
    return (float(np.mean([sig.jaccard(sig.flatten(a), sig.flatten(b)) for a, b in pairs])),
            float(np.mean([sig.jaccard_chance_stratified(a, b, seed=i) for i, (a, b) in enumerate(pairs)])), plane)
