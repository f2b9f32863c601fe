"""Weights -> reward: which RB does a fine-tuned checkpoint hold, from its weights alone? (issue 14)

A fine-tune of unknown RB from one of the run's MAs is read through its update signal Δ = checkpoint − MA, summarised
into features that do not depend on the order of hidden units (so they compare across MA seeds, whose units do not
line up):

- ``first layer``  per input plane of the first layer that reads the observation: its share of |Δ| mass, and the
                   signed change of how strongly the plane is read, Σ Δ·W_MA / Σ W_MA² (sums over output units and
                   kernel positions: invariant to permuting units);
- ``body``         ‖Δ‖ / ‖MA‖ per hidden tensor (conv2, fc, ...);
- ``policy head``  Δ of the action biases and ‖Δ‖/‖W‖ of the policy weights (actions are not permutable);
- ``value head``   Δ of the value bias and ‖Δ‖/‖W‖ of the value weights: a behaviour leak (it reads how much return
                   the new reward pays, not what it values) that the group ablation exposes.

Two decoders rank the candidate RBs: a zero-shot one (RB's own object plane by first-layer |Δ| share, no training:
the input-plane ground truth of :mod:`goalscope.analysis.validate.entry`), and a nearest-centroid classifier on standardised features
trained on the run's other fine-tunes. Held-out accuracy: leave one fine-tune seed out, and leave one MA seed out,
against chance 1/#RBs, with a t interval over MA seeds and a label-permutation p value; and per feature group, the
accuracy with only that group and without it.

May import: goalscope.analysis (records, stats, edits.common, validate.entry), goalscope.program, goalscope.signals and below.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from goalscope.analysis.records import record
from goalscope.analysis.stats import t_interval
from goalscope.errors import GoalscopeError
from goalscope.signals import delta as sig

GROUPS = ("first layer", "body", "policy head", "value head")
N_PERM = 500


def _first_layer(arch: str, state: dict, env_cfg):
    from goalscope.analysis.validate.entry import input_channels

    return input_channels(arch, state, env_cfg)


def features(arch: str, env_cfg, ma: dict, other: dict) -> tuple[np.ndarray, list[str], list[str]]:
    """(feature vector, names, group of each feature) of the update signal other − ma."""
    delta = sig.update_signal(ma, other)
    labels, _, per_channel = _first_layer(arch, ma, env_cfg)
    d64 = {k: v.double() for k, v in delta.items()}
    w64 = {k: v.detach().double() for k, v in ma.items()}
    mass = per_channel({k: v.abs() for k, v in d64.items()}).numpy()
    read = per_channel({k: d64[k] * w64[k] for k in d64}).numpy()
    norm = per_channel({k: w64[k] ** 2 for k in d64}).numpy()
    vals, names, groups = [], [], []
    share = mass / mass.sum() if mass.sum() > 0 else mass
    for lab, x in zip(labels, share):
        vals.append(x), names.append(f"|Δ| share: {lab}"), groups.append("first layer")
    for lab, x, n in zip(labels, read, norm):
        vals.append(x / n if n > 0 else 0.0), names.append(f"read change: {lab}"), groups.append("first layer")
    first = _first_tensor_names(arch, ma)
    for k in sorted(delta):
        if k in first:
            continue
        g = _group(k)
        ref = float(w64[k].norm())
        if g == "body" or k.endswith("weight"):
            vals.append(float(d64[k].norm()) / ref if ref > 0 else 0.0)
            names.append(f"‖Δ‖/‖W‖: {k}"), groups.append(g)
        else:  # head biases: one value per action / value output, signed
            for i, x in enumerate(d64[k].reshape(-1).tolist()):
                vals.append(x), names.append(f"Δ {k}[{i}]"), groups.append(g)
    return np.asarray(vals, dtype=np.float64), names, groups


def _first_tensor_names(arch: str, state: dict) -> set[str]:
    if arch == "cnn":
        return {"conv1.weight"}
    if arch == "mlp":
        return {k for k in ("fc1.weight", "pi_fc1.weight", "vf_fc1.weight") if k in state}
    return {"reward_map1.weight"}


def _group(param: str) -> str:
    head = param.split(".")[0]
    if head in ("value", "vf", "critic", "v_head") or head.startswith("vf_") or head.startswith("value"):
        return "value head"
    if head in ("policy", "pi", "actor") or head.startswith("pi_") or head.startswith("policy"):
        return "policy head"
    return "body"


def zero_shot_scores(arch: str, env_cfg, ma: dict, other: dict, candidates: list, ra) -> np.ndarray:
    """First-layer |Δ| mass on each candidate's own object plane (higher = more likely)."""
    delta = sig.update_signal(ma, other)
    _, objects, per_channel = _first_layer(arch, ma, env_cfg)
    mass = per_channel({k: v.double().abs() for k, v in delta.items()}).numpy()
    return np.array([mass[objects[c.target_type(ra)]] for c in candidates])


class Centroids:
    """Nearest centroid on features standardised by the training set (a feature with no spread is dropped)."""

    def fit(self, X: np.ndarray, y: np.ndarray, n_classes: int):
        self.mu, sd = X.mean(0), X.std(0)
        self.keep = sd > 1e-12
        self.sd = np.where(self.keep, sd, 1.0)
        Z = self._z(X)
        self.c = np.stack([Z[y == k].mean(0) if (y == k).any() else np.full(Z.shape[1], np.inf) for k in range(n_classes)])
        return self

    def _z(self, X):
        return ((X - self.mu) / self.sd)[:, self.keep]

    def scores(self, X: np.ndarray) -> np.ndarray:
        """Negative squared distance to each class centroid: (n, classes), higher = more likely."""
        Z = self._z(np.atleast_2d(X))
        return -((Z[:, None, :] - self.c[None]) ** 2).sum(-1)


def dataset(er) -> dict:
    """Every fine-tune of the run (all MA seeds, all fine-tune seeds, one-hot RBs) as features and labels."""
    rbs = er.rbs()
    X, y, ma_seed, ft_seed, zs = [], [], [], [], []
    names = groups = None
    for s in er.cfg.seeds:
        ma_ck = er.ma(s)
        reps = [0] + sorted({r for (s2, _, r) in er.plan.mb_rep if s2 == s})
        for r in reps:
            for i, rb in enumerate(rbs):
                key = er.mb_key(s, rb, r)
                if key not in er.ok:
                    continue
                other = er.state(key)
                f, names, groups = features(ma_ck.arch, er.cfg.env, ma_ck.state_dict, other)
                X.append(f), y.append(i), ma_seed.append(s), ft_seed.append(r)
                zs.append(zero_shot_scores(ma_ck.arch, er.cfg.env, ma_ck.state_dict, other, list(er.cfg.rbs()), er.cfg.ra))
    if not X:
        raise GoalscopeError(f"{er.path} has no finished fine-tunes to decode")
    return {"X": np.array(X), "y": np.array(y), "ma_seed": np.array(ma_seed), "ft_seed": np.array(ft_seed),
            "zero_shot": np.array(zs), "names": names, "groups": np.array(groups), "classes": rbs}


def held_out_predictions(data: dict, scheme: str, cols: np.ndarray, y: np.ndarray | None = None) -> np.ndarray:
    """Predicted class of every item when its fold is held out (-1 where the fold cannot be trained)."""
    X, n_cls = data["X"][:, cols], len(data["classes"])
    y = data["y"] if y is None else y
    fold = data["ft_seed"] if scheme == "leave one fine-tune seed out" else data["ma_seed"]
    pred = np.full(len(y), -1)
    for f in np.unique(fold):
        test, train = fold == f, fold != f
        if train.sum() == 0:
            continue
        model = Centroids().fit(X[train], y[train], n_cls)
        pred[test] = model.scores(X[test]).argmax(1)
    return pred


SCHEMES = ("leave one fine-tune seed out", "leave one MA seed out")


def _accuracy_ci(correct: np.ndarray, ma_seed: np.ndarray) -> list[float]:
    """Accuracy with a t interval over MA seeds (per-MA-seed accuracies are the units)."""
    per = [float(correct[ma_seed == s].mean()) for s in np.unique(ma_seed)]
    m, lo, hi = t_interval(per)
    return [float(correct.mean()), max(0.0, lo), min(1.0, hi)] if np.isfinite(lo) else [float(correct.mean()), lo, hi]


def evaluate_decoder(er, n_perm: int = N_PERM, seed: int = 0) -> tuple[dict, list[dict]]:
    """Held-out accuracy of the zero-shot and nearest-centroid decoders (all features, only and without each group)
    under both schemes, with permutation p values, and the pair fine-tunes decoded: (result, records)."""
    data = dataset(er)
    y, ma_seed = data["y"], data["ma_seed"]
    n_cls = len(data["classes"])
    chance = 1 / n_cls
    rng = np.random.default_rng(seed)
    rows, out = [], {"classes": data["classes"], "items": int(len(y)), "chance": chance, "schemes": {},
                     "groups": {g: int((data["groups"] == g).sum()) for g in GROUPS},
                     "interval": "95% t over MA seeds of per-MA-seed accuracy",
                     "p": f"label permutation within the training folds ({n_perm} permutations), one-sided"}
    zs_pred = data["zero_shot"].argmax(1)
    zs_correct = zs_pred == y
    out["zero_shot"] = {"accuracy": [_r(x) for x in _accuracy_ci(zs_correct, ma_seed)],
                        "mean_rank": _r(float(np.mean([1 + (row > row[t]).sum() for row, t in zip(data["zero_shot"], y)])))}
    rows.append(record("decode", "zero-shot (own plane, first-layer |Δ|)", "", None, "accuracy",
                       *out["zero_shot"]["accuracy"], detail=f"chance {chance:.3f}; no training"))
    all_cols = np.ones(len(data["names"]), bool)
    variants = {"all features": all_cols}
    for g in GROUPS:
        in_g = data["groups"] == g
        if in_g.any():
            variants[f"only {g}"] = in_g
            variants[f"without {g}"] = ~in_g
    for scheme in SCHEMES:
        if len(np.unique(data["ft_seed" if scheme.startswith("leave one fine") else "ma_seed"])) < 2:
            out["schemes"][scheme] = "needs at least two folds"
            continue
        res = {}
        for vname, cols in variants.items():
            if not cols.any():
                continue
            pred = held_out_predictions(data, scheme, cols)
            correct = pred == y
            acc = _accuracy_ci(correct, ma_seed)
            null = []
            if vname == "all features" or vname.startswith("without") or vname.startswith("only"):
                for _ in range(n_perm if vname == "all features" else n_perm // 5):
                    perm = y.copy()
                    for f in np.unique(ma_seed):  # shuffle within MA seed: the label structure of each MA kept
                        idx = np.flatnonzero(ma_seed == f)
                        perm[idx] = rng.permutation(perm[idx])
                    null.append((held_out_predictions(data, scheme, cols, perm) == perm).mean())
            p = float((1 + np.sum(np.asarray(null) >= correct.mean())) / (1 + len(null))) if null else math.nan
            confusion = np.zeros((n_cls, n_cls), int)
            for t, q in zip(y, pred):
                if q >= 0:
                    confusion[t, q] += 1
            res[vname] = {"accuracy": [_r(x) for x in acc], "p_permutation": _r(p, 4), "features": int(cols.sum()),
                          "confusion": confusion.tolist()}
            rows.append(record("decode", f"nearest centroid [{vname}]", "", None, "accuracy", *acc,
                               detail=f"{scheme}; chance {chance:.3f}; permutation p={p:.4g}; {int(len(y))} fine-tunes"))
        out["schemes"][scheme] = res
    out["composite"] = composite_decode(er, data, rows)
    return out, rows


def composite_decode(er, data: dict, rows: list, ridge: float = 1.0) -> dict | str:
    """Fine-tunes on a pair reward collect:i+collect:j (``goalscope edits``' arithmetic part), decoded by models
    trained on the one-hot fine-tunes only: are i and j the top two (chance 1/C(n,2))? And a ridge regression of the
    reward weight vector over the RB types from the features: R² against the pair's true weights, leave one MA seed
    out (training on the one-hot fine-tunes of the other MA seeds)."""
    from goalscope.envs.rewards import Reward
    from goalscope.program.jobs import job_status

    seed_of = {k: s for s, k in er.plan.ma.items()}
    items = []
    for d in sorted((er.path / "stages").glob("finetune-*")):
        st = job_status(er.path, d.name) or {}
        spec = st.get("spec") or {}
        if st.get("status") != "ok" or spec.get("parent") not in seed_of:
            continue
        r = Reward.from_json(spec["reward"])
        if len(er.types(r)[0]) == 2:
            items.append((seed_of[spec["parent"]], r.name, d.name))
            er.ok.add(d.name)
    if not items:
        return "no finished pair fine-tunes: run `goalscope edits RUN --parts arithmetic` first"
    classes = data["classes"]
    types = [er.reward(c).target_type(er.cfg.ra) for c in classes]
    n = len(classes)
    top2, zs_top2, r2_true, r2_pred = [], [], [], []
    for s, name, key in items:
        ma_ck = er.ma(s)
        state = er.state(key)
        f, _, _ = features(ma_ck.arch, er.cfg.env, ma_ck.state_dict, state)
        w = np.asarray(er.reward(name).weights, float)[types]
        want = set(np.flatnonzero(w > 0).tolist())
        model = Centroids().fit(data["X"], data["y"], n)
        top2.append(set(np.argsort(-model.scores(f)[0])[:2].tolist()) == want)
        zs = zero_shot_scores(ma_ck.arch, er.cfg.env, ma_ck.state_dict, state, list(er.cfg.rbs()), er.cfg.ra)
        zs_top2.append(set(np.argsort(-zs)[:2].tolist()) == want)
        train = data["ma_seed"] != s
        X, Y = data["X"][train], np.eye(n)[data["y"][train]]
        mu, sd = X.mean(0), X.std(0)
        sd = np.where(sd > 1e-12, sd, 1.0)
        Z = (X - mu) / sd
        beta = np.linalg.solve(Z.T @ Z + ridge * np.eye(Z.shape[1]), Z.T @ (Y - Y.mean(0)))
        r2_pred.append(((f - mu) / sd) @ beta + Y.mean(0))
        r2_true.append(w)
    t, p = np.array(r2_true), np.array(r2_pred)
    ss_tot = float(((t - t.mean()) ** 2).sum())  # over every (fine-tune, type) entry, about the grand mean
    r2 = 1 - float(((t - p) ** 2).sum()) / ss_tot if ss_tot > 0 else math.nan
    chance = 1 / math.comb(n, 2)
    res = {"fine_tunes": len(items), "pairs": sorted({name for _, name, _ in items}),
           "top2_exact_nearest_centroid": _r(float(np.mean(top2))), "top2_exact_zero_shot": _r(float(np.mean(zs_top2))),
           "chance_top2": _r(chance), "weight_vector_r2": _r(float(r2)),
           "note": "decoders trained on one-hot fine-tunes only; R² of a ridge regression, leave one MA seed out"}
    rows.append(record("decode", "nearest centroid (pairs)", "", None, "top2_exact", _nan(res["top2_exact_nearest_centroid"]),
                       detail=f"chance {chance:.3f}; {len(items)} pair fine-tunes"))
    rows.append(record("decode", "zero-shot (pairs)", "", None, "top2_exact", _nan(res["top2_exact_zero_shot"]),
                       detail=f"chance {chance:.3f}"))
    rows.append(record("decode", "ridge (pairs)", "", None, "weight_vector_r2", _nan(res["weight_vector_r2"]),
                       detail="leave one MA seed out"))
    return res


def rank_checkpoint(er, ckpt) -> dict:
    """Rank the run's RBs for one checkpoint fine-tuned from one of its MAs (the MA is the nearest in weights); the
    classifier is trained on every fine-tune of the run except any identical to the checkpoint."""
    state = ckpt.state_dict
    best = None
    for s in er.cfg.seeds:
        ma = er.state(er.plan.ma[s])
        try:
            sig.check_compatible(ma, state, "MA", "checkpoint")
        except GoalscopeError as e:
            raise GoalscopeError(f"the checkpoint does not match this run's architecture: {e}") from None
        dist = float(sig.flatten(sig.update_signal(ma, state)).double().norm())
        if best is None or dist < best[1]:
            best = (s, dist)
    s = best[0]
    ma_ck = er.ma(s)
    data = dataset(er)
    f, names, _ = features(ma_ck.arch, er.cfg.env, ma_ck.state_dict, state)
    same = np.array([np.allclose(x, f, rtol=0, atol=1e-12) for x in data["X"]])
    train = ~same
    if len(np.unique(data["y"][train])) < 2:
        raise GoalscopeError("the run has too few other fine-tunes to train the decoder")
    model = Centroids().fit(data["X"][train], data["y"][train], len(data["classes"]))
    sc = model.scores(f)[0]
    prob = np.exp(sc - sc.max())
    prob = prob / prob.sum()
    zs = zero_shot_scores(ma_ck.arch, er.cfg.env, ma_ck.state_dict, state, list(er.cfg.rbs()), er.cfg.ra)
    order = np.argsort(-sc, kind="stable")
    return {"ma_seed": s, "distance_to_ma": best[1], "excluded_identical": int(same.sum()), "trained_on": int(train.sum()),
            "ranking": [{"rb": data["classes"][i], "score": _r(float(sc[i])), "softmax": _r(float(prob[i])),
                         "zero_shot_first_layer_mass": _r(float(zs[i]), 6)} for i in order]}


def _nan(x):
    return math.nan if x is None else x


def _r(x, nd=4):
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def run_decode(run_dir: str | Path, checkpoint: str | Path | None = None, n_perm: int = N_PERM, log=print) -> dict:
    """With ``checkpoint``: its RBs ranked. Without: the decoder evaluated, written to RUN/edits/decode.json and the
    edits' records.csv."""
    import json

    from goalscope.agents.checkpoints import load_checkpoint
    from goalscope.analysis.edits.common import EditRun
    from goalscope.analysis.records import merge_records
    from goalscope.outputs import atomic_write_bytes

    from goalscope.outputs import analysing

    torch.set_num_threads(1)
    with analysing(run_dir):
        er = EditRun(run_dir, log=log)
        if checkpoint is not None:
            return rank_checkpoint(er, load_checkpoint(checkpoint))
        res, rows = evaluate_decoder(er, n_perm)
        atomic_write_bytes(er.out / "decode.json", json.dumps(res, indent=2).encode())
        merge_records(er.out / "records.csv", rows, "decode")
        merge_records(er.path / "records.csv", rows, "decode")  # one table of the run's results
    return res
