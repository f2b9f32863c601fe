"""Input-feature ground truth: where does a reward change enter the network?

In the object maze a reward is a weight per object type, so RB = RA + ``collect:k`` changes the value of exactly
one input plane, that of type k, and RB = ``collect:k`` changes two: type k gains, RA's type loses. Every
architecture that reads the planes has a first layer whose weights are split by input channel, so the first
layer's share of a Δ (or of a heatmap) per channel is a ground truth any agent has, not only the planner: if an
update signal "knows" which reward changed, RB's own plane k should rank first among the object planes whose value
did not change plus k itself (chance: 1/m for rank 1 and mean rank (m+1)/2 with m such planes; m = K for composite
RBs, K − 1 for one-hot ones, whose RA plane changes too and is left out of the comparison).

For each seed and RB this module scores |Δ_i|, the attribution |IG_i| (integrated gradients of the behaviour change
along MA -> MB_i: per input unit, how much of the change each plane's weights carry), MA's Fisher alone where it is
computed, and every aggregator run on that RB alone (where the aggregator is defined for one signal; ``pca`` and
``spread`` are not), and reports the mean rank of the own plane, the fraction of
(seed, RB) pairs where it ranks first, and the mean share of first-layer mass per labelled input channel.

May import: goalscope.agents, goalscope.analysis.validate.planted, goalscope.analysis.records,
goalscope.analysis.effects.superposition, goalscope.errors, goalscope.program, goalscope.signals
(planes: the layer that reads the planes, found from the weights' shapes).
"""

from __future__ import annotations

import numpy as np
import torch

from goalscope.signals import aggregators as agg
from goalscope.signals import delta as sig
from goalscope.errors import GoalscopeError
from goalscope.analysis.validate.planted import md_name
from goalscope.signals.planes import FirstLayer, first_layer, input_channels, plane_labels  # noqa: F401  (this module's API)

ABS_DELTA = "|Δ_i|"
ABS_IG = "|IG_i| (attribution)"  # grafts.ATTRIBUTION
FISHER_ALONE = "Fisher alone (MA)"  # the same map for every RB of a seed: a plane rank that knows no RB


def comparison_types(ra, rb) -> list[int]:
    """RB's target type and every object type whose weight RA and RB share: the planes the own plane is ranked
    against (a type whose value changed, e.g. RA's own under a one-hot RB, is a second true positive, not chance)."""
    own = rb.target_type(ra)
    return [t for t, (a, b) in enumerate(zip(ra.weights, rb.weights)) if t == own or a == b]


def own_plane_rank(mass: torch.Tensor, object_channels: list[int], own: int, among: list[int] | None = None) -> int:
    """Rank (1 = most mass) of object type ``own`` among the object types ``among`` (default: all); ties count
    against it."""
    among = list(range(len(object_channels))) if among is None else among
    m = mass[[object_channels[t] for t in among]]
    return int((m >= mass[object_channels[own]]).sum())


def rb_heatmaps(delta: dict, controls: list, fisher: dict | None, methods: list[str]) -> dict:
    """|Δ_i| and every aggregator that is defined on this one signal (name -> heatmap)."""
    out = {ABS_DELTA: {k: v.abs() for k, v in delta.items()}}
    for m in methods:
        try:
            out[m] = agg.aggregate(m, [delta], controls=controls, fisher=fisher)
        except GoalscopeError:
            continue  # pca / spread / variance_ratio need several signals: not defined for one RB
    return out


def summarise(ranks: dict, masses: dict, labels: list[str], k: int) -> dict:
    """Per heatmap: mean own-plane rank and fraction ranked first, with their chance levels (averaged over the
    (seed, RB) pairs, whose comparison sets differ in size), per-seed mean ranks, and the mean share of first-layer
    mass per labelled channel. ``ranks[name][seed]`` holds (rank, size of the comparison set) pairs."""
    out = {}
    for name, by_seed in ranks.items():
        flat = np.array([r for rs in by_seed.values() for r in rs], dtype=float)
        share = np.mean([m / m.sum() for m in masses[name]], axis=0)
        out[name] = {"mean_rank": round(float(flat[:, 0].mean()), 3),
                     "chance_mean_rank": round(float(((flat[:, 1] + 1) / 2).mean()), 3),
                     "rank1_fraction": round(float((flat[:, 0] == 1).mean()), 3),
                     "rank1_count": int((flat[:, 0] == 1).sum()),
                     "chance_rank1": round(float((1 / flat[:, 1]).mean()), 3),
                     "per_seed_mean_rank": [round(float(np.mean([r for r, _ in rs])), 3) for rs in by_seed.values()],
                     "pairs": len(flat), "mass_share": {lab: round(float(x), 4) for lab, x in zip(labels, share)}}
    return {"object_types": k, "by_heatmap": out}


def entry_ground_truth(cfg, plan, run_dir, rows: list) -> dict | str:
    """The input-plane test on a finished run: for every seed, RB and heatmap, the rank of RB's own object plane
    in the first layer's mass. Returns a plain-words reason instead when the env or architecture has no planes."""
    from goalscope.agents.checkpoints import load_checkpoint
    from goalscope.program.jobs import stage_dir
    from goalscope.analysis.records import record

    if getattr(cfg.env, "family", None) != "object_maze":
        return f"env family {getattr(cfg.env, 'family', '?')!r} has no object planes; the input-plane test needs the object maze"
    from goalscope.analysis.effects.superposition import attribution_maps

    ranks: dict = {}
    masses: dict = {}
    labels: list[str] = []
    for s in cfg.seeds:
        ma = load_checkpoint(stage_dir(run_dir, plan.ma[s]))
        try:
            labels, objects, per_channel = input_channels(cfg.agent.arch, ma.state_dict, cfg.env)
        except GoalscopeError as e:
            return str(e)
        control_key = plan.control.get(s)
        controls = [sig.update_signal(ma.state_dict, load_checkpoint(stage_dir(run_dir, control_key)).state_dict)] if control_key else []
        fisher = None
        if "fisher" in cfg.superpose.methods:
            from goalscope.analysis.effects.superposition import ma_fisher

            fisher = ma_fisher(ma, cfg.superpose.fisher_samples, s, run_dir, plan.ma[s])
        for rb in cfg.rbs():
            own, among = rb.target_type(cfg.ra), comparison_types(cfg.ra, rb)
            if len(among) < 2:  # a dense mixture changes every plane's value: no plane is its own to rank
                continue
            mb = load_checkpoint(stage_dir(run_dir, plan.mb[(s, rb.name)]))
            delta = sig.update_signal(ma.state_dict, mb.state_dict)
            heat = rb_heatmaps(delta, controls, fisher, list(cfg.superpose.methods))
            ig, _ = attribution_maps(run_dir, s, ma, plan.ma[s], {rb.name: (plan.mb[(s, rb.name)], mb)})[rb.name]
            heat = {ABS_DELTA: heat.pop(ABS_DELTA), ABS_IG: {k: v.abs() for k, v in ig.items()},
                    **({FISHER_ALONE: fisher} if fisher is not None else {}), **heat}
            for name, h in heat.items():
                mass = per_channel({k: v.detach().to(torch.float64) for k, v in h.items()})
                ranks.setdefault(name, {}).setdefault(s, []).append((own_plane_rank(mass, objects, own, among), len(among)))
                masses.setdefault(name, []).append(mass.numpy())
    if not ranks:
        return ("no RB here changes the value of a single object plane (a mixture RB changes them all), so no "
                "plane is RB's own to rank; the input-plane test needs one-hot or composite RBs")
    out = summarise(ranks, masses, labels, cfg.env.n_types)
    for name, v in out["by_heatmap"].items():
        rows.append(record("validation", name, "", None, "own_plane_mean_rank", v["mean_rank"],
                           detail=f"chance {v['chance_mean_rank']}; {v['pairs']} (seed, RB) pairs"))
        rows.append(record("validation", name, "", None, "own_plane_rank1_fraction", v["rank1_fraction"],
                           detail=f"chance {v['chance_rank1']}"))
    return out


def rank1_count(v: dict) -> int:
    """(seed, RB) pairs whose own plane ranked first (a scorecard from before the count was kept: from the fraction)."""
    return int(v.get("rank1_count", round(v["rank1_fraction"] * v["pairs"])))


def entry_markdown(entry: dict | str) -> str:
    """The scorecard section for :func:`entry_ground_truth`."""
    lines = ["## Input-plane ground truth (RB's own object plane in the first layer's mass)", ""]
    if isinstance(entry, str):
        return "\n".join(lines + [entry, ""])
    lines += [f"Rank of RB's own plane (1 = most first-layer mass) among those of the {entry['object_types']} object "
              "planes whose value RB leaves unchanged, plus its own (RA's plane is left out for one-hot RBs, whose "
              "reward moves it too). Aggregators run on one RB alone (pca and spread are not defined for one signal).", "",
              "| heatmap | mean rank (chance) | per-seed mean rank | ranked first: pairs (fraction; chance) | (seed, RB) pairs |",
              "|---|---|---|---|---|"]
    for name, v in entry["by_heatmap"].items():
        lines.append(f"| {md_name(name)} | {v['mean_rank']:.2f} ({v['chance_mean_rank']:.2f}) | "
                     f"{', '.join(f'{x:.2f}' for x in v['per_seed_mean_rank'])} | "
                     f"{rank1_count(v)}/{v['pairs']} ({v['rank1_fraction']:.2f}; {v['chance_rank1']:.2f}) | {v['pairs']} |")
    share = entry["by_heatmap"].get(ABS_DELTA, {}).get("mass_share", {})
    if share:
        lines += ["", "First-layer share of |Δ_i| per input channel: " + ", ".join(f"{k} {x:.3f}" for k, x in share.items())]
    return "\n".join(lines + [""])
