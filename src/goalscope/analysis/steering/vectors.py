"""Steering vectors and weight-space edits of one MA seed: the per-seed computations of ``goalscope steer``.

:func:`steer_seed` reads MA, every MB_i and the RA-continuation control on one observation set
(:func:`collect_observations`), takes the steering vectors ``v_i = mean(act_MB_i − act_MA)`` per hook site, and
evaluates every activation intervention (``Δ_i``, ``random``, ``control``, ``patch``, ``control patch``) and weight
edit (MA ± c·Δ_i on a site's parameters) on the run's paired evaluation episodes; :func:`object_vector_seed` is the
cheese-vector analogue inside each MB_i. The whole method, the caching and the summary are described in
:mod:`goalscope.analysis.steering.run`.

May import: goalscope.analysis (stats, steering.shards, steering.shards_distance), goalscope.program, goalscope.signals, goalscope.rl,
goalscope.agents (hooks, checkpoints) and below.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from goalscope.agents import hooks
from goalscope.agents.checkpoints import load_checkpoint
from goalscope.program.jobs import stage_dir
from goalscope.rl.evaluation import evaluate, model_policy, run_episodes
from goalscope.signals import delta as sig
from goalscope.analysis.stats import spearman

SCALES = (1.0, -1.0)
DOSES = (4.0, -4.0)  # larger multiples of the mean vectors (Δ_i and random only): a dose-response
VECTORS = ("Δ_i", "random", "control", "patch", "control patch")
SPACES = ("activation", "weight")
OBS_SEED_OFFSET = 7919

# ----------------------------------------------------------------------------------------------------------------
# Pieces


def collect_observations(models: list, env_cfg, reward, episodes: int, seed: int, max_obs: int = 8192) -> torch.Tensor:
    """Observations met by each model's own rollouts (``episodes`` each, env seed ``seed``), pooled; every model is
    then read on this identical set. Subsampled evenly (deterministically) to at most ``max_obs``."""
    chunks = []
    for j, m in enumerate(models):
        seen = []
        inner = model_policy(m, seed + j)

        def act(obs, env, inner=inner, seen=seen):
            seen.append(obs.copy())
            return inner(obs, env)

        was = m.training
        m.eval()
        try:
            run_episodes(act, env_cfg, reward, episodes, seed)
        finally:
            m.train(was)
        chunks.append(np.concatenate(seen))
    obs = np.concatenate(chunks)
    if len(obs) > max_obs:
        obs = obs[np.linspace(0, len(obs) - 1, max_obs).round().astype(int)]
    return torch.from_numpy(obs)


def lean_of(counts_mean, i_rb: int, others: list[int]) -> float:
    """The specific lean of a profile's mean counts: RB's objects minus the mean of the other non-RA types."""
    c = np.asarray(counts_mean, float)
    return float(c[i_rb] - (c[others].mean() if others else 0.0))


def _rescale(t: torch.Tensor, norm: float) -> torch.Tensor:
    n = float(t.norm())
    return t * (norm / n) if n > 0 else torch.zeros_like(t)


def _unit_norms(t: torch.Tensor) -> np.ndarray:
    """Per output unit (dim 0 of a parameter, dim 0 of one example's activation): L2 over the rest."""
    t = t.detach().double()
    return (t.reshape(1, -1) if t.dim() == 0 else t.reshape(t.shape[0], -1)).norm(dim=1).numpy()


# ----------------------------------------------------------------------------------------------------------------
# One MA seed


def steer_seed(task: dict, log=lambda *a: None) -> dict:
    """Every steering and weight-space intervention, channel agreement and shard diagnostic of one MA seed."""
    from goalscope.analysis.steering import shards, shards_distance

    torch.set_num_threads(task.get("threads", 1))
    run_dir = Path(task["run_dir"])
    episodes, eval_seed = task["episodes"], task["eval_seed"]
    ma_ck = load_checkpoint(stage_dir(run_dir, task["ma"]))
    env, ra = ma_ck.env, ma_ck.reward
    ma = ma_ck.build().eval()
    mb_cks = {rb: load_checkpoint(stage_dir(run_dir, k)) for rb, k in task["mb"].items()}
    mbs = {rb: c.build().eval() for rb, c in mb_cks.items()}
    ctrl_ck = load_checkpoint(stage_dir(run_dir, task["control"]))
    ctrl = ctrl_ck.build().eval()
    scratch = ma_ck.build().eval()
    sites = list(task.get("sites") or hooks.default_sites(ma))
    n_types = env.n_types
    ra_types = set(ra.rewarded_types().tolist())
    targets = {}
    for rb, c in mb_cks.items():
        i = c.reward.target_type(ra)
        targets[rb] = (i, [k for k in range(n_types) if k != i and k not in ra_types])

    t0 = time.time()
    obs = collect_observations([ma, *mbs.values(), ctrl], env, ra, task["obs_episodes"], eval_seed + OBS_SEED_OFFSET,
                               task.get("max_obs", 8192))
    acts_ma = hooks.activations(ma, obs, sites)
    with torch.inference_mode():
        logp_ma = torch.log_softmax(ma(obs)[0], -1)
    act_norm = {s: float(a.flatten(1).norm(dim=1).mean()) for s, a in acts_ma.items()}
    mean_ma = {s: a.mean(0) for s, a in acts_ma.items()}

    def vectors(model):
        return {s: hooks.mean_activation(model, obs, [s])[s] - mean_ma[s] for s in sites}

    v = {rb: vectors(m) for rb, m in mbs.items()}
    v_ctrl = vectors(ctrl)
    ma_sd = {k: t.detach().clone() for k, t in ma_ck.state_dict.items()}
    deltas = {rb: sig.update_signal(ma_ck.state_dict, c.state_dict) for rb, c in mb_cks.items()}
    d_ctrl = sig.update_signal(ma_ck.state_dict, ctrl_ck.state_dict)

    def profile(model) -> dict:
        p = evaluate(model, env, ra, episodes, eval_seed)
        return {"counts": p.mean_counts().tolist(), "ra_return": float(p.returns(ra).mean())}

    def size(model, site) -> tuple[float, float]:
        """(mean KL(π_MA ‖ π_edit) on the observation set, ‖mean site shift‖ / mean ‖site activation‖)."""
        with torch.inference_mode():
            logp = torch.log_softmax(model(obs)[0], -1)
        kl = float((logp_ma.exp() * (logp_ma - logp)).sum(-1).mean())
        if site == "all":
            return kl, math.nan
        a = hooks.activations(model, obs, [site])[site]
        return kl, float((a.mean(0) - mean_ma[site]).norm()) / max(act_norm[site], 1e-12)

    base = {"MA": profile(ma), "control": profile(ctrl), **{f"MB[{rb}]": profile(m) for rb, m in mbs.items()}}
    gen = torch.Generator().manual_seed(task["seed"] * 1_000_003 + 17)
    rows = []

    def add_row(rb, site, space, vector, scale, prof, kl, shift, norm):
        i, others = targets[rb]
        rows.append({"rb": rb, "site": site, "space": space, "vector": vector, "scale": scale,
                     "rb_objects": prof["counts"][i], "lean": lean_of(prof["counts"], i, others),
                     "ra_return": prof["ra_return"], "kl": kl, "site_shift": shift, "norm": norm})

    site_params = {s: hooks.site_parameters(ma, s) for s in sites}
    for rb in mbs:
        for site in sites:
            vi = v[rb][site]
            nv = float(vi.norm())
            acts_vecs = {"Δ_i": vi, "random": _rescale(torch.randn(vi.shape, generator=gen), nv),
                         "control": _rescale(v_ctrl[site], nv)}
            edits = [(name, c, hooks.Add(vec, c)) for name, vec in acts_vecs.items() for c in SCALES]
            edits += [(name, c, hooks.Add(acts_vecs[name], c)) for name in ("Δ_i", "random") for c in DOSES]
            edits += [(name, c, hooks.Toward(src, site, c)) for name, src in (("patch", mbs[rb]), ("control patch", ctrl))
                      for c in SCALES]
            for name, c, edit in edits:
                with hooks.intervene(ma, {site: edit}):
                    prof = profile(ma)
                    kl, shift = size(ma, site)
                add_row(rb, site, "activation", name, c, prof, kl, shift, nv)
        for site in [*sites, "all"]:
            keys = list(ma_sd) if site == "all" else site_params.get(site, [])
            if not keys:
                continue
            dl = {k: deltas[rb][k] for k in keys}
            norm = float(torch.sqrt(sum((t.double() ** 2).sum() for t in dl.values())))
            rnd = sig.random_direction_like(dl, gen)
            ctl = {k: _rescale(d_ctrl[k], float(dl[k].norm())) for k in keys}
            for name, d in {"Δ_i": dl, "random": rnd, "control": ctl}.items():
                for c in SCALES:
                    state = dict(ma_sd)
                    for k in keys:
                        state[k] = ma_sd[k] + c * d[k]
                    scratch.load_state_dict(state)
                    prof = profile(scratch)
                    kl, shift = size(scratch, site)
                    add_row(rb, site, "weight", name, c, prof, kl, shift, norm)
        log(f"steer seed {task['seed']}: {rb} done ({time.time() - t0:.0f}s)")

    # Where: units of v_i vs output rows of Δ_i at the same site (same MA: units line up).
    channels = []
    for rb in mbs:
        for site in sites:
            keys = site_params.get(site, [])
            if not keys or v[rb][site].dim() == 0:
                continue
            n_units = v[rb][site].shape[0]
            rows_of = lambda d: np.sqrt(sum(_unit_norms(d[k]) ** 2 for k in keys if d[k].dim() and d[k].shape[0] == n_units))
            dv, dd, cd, cv = _unit_norms(v[rb][site]), rows_of(deltas[rb]), rows_of(d_ctrl), _unit_norms(v_ctrl[site])
            if np.ndim(dd) == 0 or len(dd) != n_units:
                continue
            channels.append({"rb": rb, "site": site, "units": int(n_units),
                             "spearman_v_delta": spearman(dv, dd), "spearman_v_ctrl_drift": spearman(dv, cd),
                             "spearman_vctrl_ctrl_drift": spearman(cv, cd),
                             "top_unit_same": bool(np.argmax(dv) == np.argmax(dd))})

    track = None
    if (getattr(env, "family", None) == "object_maze" and getattr(env, "view", "full") == "full" and not env.cue
            and getattr(env, "obs", "planes") == "planes"):
        raw = shards_distance.tracking({"MA": ma, **{f"MB[{rb}]": m for rb, m in mbs.items()}}, obs, sites, n_types)
        track = shards_distance.tracking_seed(raw, targets, deltas, site_params) if raw is not None else None
    shard = shards.seed_shards(ma_ck, {rb: c for rb, c in mb_cks.items()}, ctrl_ck, deltas, d_ctrl, v, v_ctrl,
                               sites, targets, episodes, eval_seed, task["seed"])
    return {"seed": task["seed"], "sites": sites, "base": base, "rows": rows, "channels": channels,
            "shards": shard, "tracking": track, "targets": {rb: [i, o] for rb, (i, o) in targets.items()},
            "observations": int(len(obs)), "act_norm": act_norm,
            "v_norm": {rb: {s: float(t.norm()) for s, t in d.items()} for rb, d in v.items()},
            "v_ctrl_norm": {s: float(t.norm()) for s, t in v_ctrl.items()}, "wall_s": round(time.time() - t0, 1)}



# ----------------------------------------------------------------------------------------------------------------
# The cheese-vector analogue: an *object* vector inside one model


def object_vector_seed(task: dict, log=lambda *a: None) -> dict:
    """The cheese-vector recipe on each MB_i (Mini, Turner et al. 2023): at each site, the mean activation of MB_i on
    observations with its RB object present minus the same observations with the RB object's plane cleared,
    ``v_obj``; then MB_i − v_obj (and − 2·v_obj) on the paired evaluation episodes, against a random vector of the
    same norm. Does subtracting "the RB object is there" take MB_i's RB lean away, as the cheese vector took the
    maze agent's cheese-seeking away?"""
    torch.set_num_threads(task.get("threads", 1))
    run_dir = Path(task["run_dir"])
    episodes, eval_seed = task["episodes"], task["eval_seed"]
    ma_ck = load_checkpoint(stage_dir(run_dir, task["ma"]))
    env, ra = ma_ck.env, ma_ck.reward
    if (getattr(env, "family", None) != "object_maze" or getattr(env, "view", "full") != "full"
            or getattr(env, "obs", "planes") != "planes"):  # clearing "the RB object is there" needs its own plane
        return {"seed": task["seed"], "rows": [], "note": "needs full-view object-maze observations (one-hot planes)"}
    ma = ma_ck.build().eval()
    sites = list(task.get("sites") or hooks.default_sites(ma))
    ra_types = set(ra.rewarded_types().tolist())
    gen = torch.Generator().manual_seed(task["seed"] * 1_000_003 + 29)
    t0 = time.time()
    p_ma = evaluate(ma, env, ra, episodes, eval_seed)
    rows = []
    for rb, key in task["mb"].items():
        ck = load_checkpoint(stage_dir(run_dir, key))
        mb = ck.build().eval()
        i = ck.reward.target_type(ra)
        others = [k for k in range(env.n_types) if k != i and k not in ra_types]
        obs = collect_observations([mb], env, ra, task["obs_episodes"], eval_seed + OBS_SEED_OFFSET,
                                   task.get("max_obs", 8192))
        present = obs[:, 2 + i].flatten(1).bool().any(1)
        o = obs[present]
        gone = o.clone()
        gone[:, 2 + i] = 0
        with torch.inference_mode():
            logp_mb = torch.log_softmax(mb(obs)[0], -1)
        p_mb = evaluate(mb, env, ra, episodes, eval_seed)
        base = {"lean_ma": lean_of(p_ma.mean_counts(), i, others), "lean_mb": lean_of(p_mb.mean_counts(), i, others),
                "rb_ma": float(p_ma.mean_counts()[i]), "rb_mb": float(p_mb.mean_counts()[i])}
        for site in sites:
            v = hooks.mean_activation(mb, o, [site])[site] - hooks.mean_activation(mb, gone, [site])[site]
            rnd = _rescale(torch.randn(v.shape, generator=gen), float(v.norm()))
            for name, vec in (("object vector", v), ("random", rnd)):
                for c in (-1.0, -2.0):
                    with hooks.intervene(mb, {site: hooks.Add(vec, c)}):
                        p = evaluate(mb, env, ra, episodes, eval_seed)
                        with torch.inference_mode():
                            logp = torch.log_softmax(mb(obs)[0], -1)
                    kl = float((logp_mb.exp() * (logp_mb - logp)).sum(-1).mean())
                    rows.append({"rb": rb, "site": site, "vector": name, "scale": c, **base,
                                 "lean": lean_of(p.mean_counts(), i, others), "rb_objects": float(p.mean_counts()[i]),
                                 "ra_return": float(p.returns(ra).mean()), "kl": kl, "norm": float(v.norm()),
                                 "present_fraction": float(present.float().mean())})
        log(f"object vector seed {task['seed']}: {rb} done ({time.time() - t0:.0f}s)")
    return {"seed": task["seed"], "sites": sites, "rows": rows, "wall_s": round(time.time() - t0, 1)}
