"""Reward -> weights (issue 14), dynamics (asked for by name only): the fine-tune MA -> MB_i rerun with the weights
kept after a few updates (the same job spec, so its end point is MB_i bit for bit): when the RB lean appears, when
the first layer's reading of RB's own plane appears, cos(Δ(t), Δ), and whether the own-plane part moves before the
rest. Snapshots are cached in ``RUN/edits/dynamics/<MB key>/``.

May import: goalscope.analysis (records, edits.common, validate.entry), goalscope.program, goalscope.rl, goalscope.envs and
below.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from goalscope.analysis.edits.common import SNAPSHOT_UPDATES, EditRun, metrics, rounded, seed_ci
from goalscope.analysis.records import record
from goalscope.outputs import atomic_write_bytes
from goalscope.program.jobs import job_status
from goalscope.signals import delta as sig


def _dynamics_snapshots(er: EditRun, s: int, rb: str, updates=SNAPSHOT_UPDATES) -> dict[int, dict]:
    """{env step: state} of the fine-tune MA -> MB_i (fine-tune seed 0) rerun with snapshots, cached under
    RUN/edits/dynamics/<MB key>/ (written whole, then renamed into place)."""
    import os
    import shutil

    from safetensors.torch import load_file, save_file

    from goalscope.envs.rewards import Reward
    from goalscope.rl.ppo import PPOConfig, finetune

    key = er.plan.mb[(s, rb)]
    final = er.out / "dynamics" / key
    if not (final / "done.json").exists():
        spec = (job_status(er.path, key) or {})["spec"]
        ppo = PPOConfig.from_json(spec["ppo"])
        keep = {u * ppo.batch_size for u in updates}
        tmp = er.out / "dynamics" / f".partial-{key}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)

        def snap(step, row, model):
            if step in keep:
                save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()},
                          tmp / f"step{step}.safetensors")

        ckpt = finetune(er.ma(s), Reward.from_json(spec["reward"]), ppo, spec["seed"], callbacks=[snap])
        same = all(torch.equal(ckpt.state_dict[k], er.state(key)[k]) for k in ckpt.state_dict)
        atomic_write_bytes(tmp / "done.json", json.dumps({"reproduces_mb": same, "steps": ckpt.steps}).encode())
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    return {int(p.stem[4:]): load_file(p) for p in sorted(final.glob("step*.safetensors"))}


def dynamics(er: EditRun, rbs=None, updates=SNAPSHOT_UPDATES) -> tuple[dict, list[dict]]:
    """Curves over the fine-tune's snapshots (lean gain, cos with the final Δ, own-plane read change...) and the
    onset of each: (result, records)."""
    from goalscope.analysis.validate.entry import input_channels

    cfg, ra = er.cfg, er.cfg.ra
    rbs = rbs or er.rbs()
    curves: dict = {}  # (rb, quantity) -> {step: {seed: value}}
    reproduced = []
    for s in cfg.seeds:
        ma_key = er.plan.ma[s]
        ma = er.state(ma_key)
        labels, objects, per_channel = input_channels(er.ma(s).arch, ma, cfg.env)
        for rb in rbs:
            if er.plan.mb.get((s, rb)) not in er.ok:
                continue
            own, others = er.types(er.reward(rb))
            snaps = _dynamics_snapshots(er, s, rb, updates)
            reproduced.append(json.loads((er.out / "dynamics" / er.plan.mb[(s, rb)] / "done.json").read_text())["reproduces_mb"])
            final = er.delta(s, rb)
            f_flat = sig.flatten(final).double()
            m_ma = metrics(er.profile({"edit": "line", "seed": s, "ma": ma_key, "mb": er.plan.mb[(s, rb)], "t": 0.0},
                                      lambda: ma), own, others, ra)
            own_final = per_channel({k: (v.double() * ma[k].double()) for k, v in final.items()})
            for step, state in sorted(snaps.items()):
                d = sig.update_signal(ma, state)
                flat = sig.flatten(d).double()
                p = er.profile({"edit": "dynamics", "seed": s, "mb": er.plan.mb[(s, rb)], "step": step}, lambda: state)
                m = metrics(p, own, others, ra)
                mass = per_channel({k: v.double().abs() for k, v in d.items()})
                read = per_channel({k: v.double() * ma[k].double() for k, v in d.items()})
                obj = mass[[objects[t] for t in range(cfg.env.n_types)]]
                vals = {
                    "lean_gain": float(m["specific_lean"].mean() - m_ma["specific_lean"].mean()),
                    "cosine_with_final": float(flat @ f_flat / (flat.norm() * f_flat.norm())),
                    "norm_over_final": float(flat.norm() / f_flat.norm()),
                    "own_plane_share": float(mass[objects[own[0]]] / obj.sum()),
                    "own_plane_rank": int((obj >= mass[objects[own[0]]]).sum()),
                    "own_plane_read_over_final": float(read[objects[own[0]]] / own_final[objects[own[0]]])
                    if abs(float(own_final[objects[own[0]]])) > 0 else math.nan,
                }
                for q, v in vals.items():
                    curves.setdefault((rb, q), {}).setdefault(step, {})[s] = v
    rows, out = [], {"steps": sorted({st for d in curves.values() for st in d}), "curves": {}, "onset": {},
                     "reproduces_mb": f"{sum(reproduced)}/{len(reproduced)}", "seeds": cfg.seeds,
                     "interval": "95% Student t over MA seeds",
                     "onset_def": "first snapshot step where the seed mean reaches half its value at the end"}
    for (rb, q), by_step in curves.items():
        pts = {st: seed_ci(list(v.values())) for st, v in sorted(by_step.items())}
        out["curves"].setdefault(rb, {})[q] = {str(st): [rounded(x) for x in ci] for st, ci in pts.items()}
        for st, ci in pts.items():
            rows.append(record("dynamics", f"MB[{rb}] during fine-tuning", rb, None, q, *ci, detail=f"step={st}"))
        if q in ("lean_gain", "norm_over_final", "own_plane_read_over_final", "cosine_with_final"):
            steps = sorted(pts)
            end = pts[steps[-1]][0]
            onset = next((st for st in steps if np.isfinite(pts[st][0]) and np.isfinite(end) and end != 0
                          and pts[st][0] / end >= 0.5), None)
            out["onset"].setdefault(rb, {})[q] = onset
    return out, rows
