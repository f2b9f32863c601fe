"""Objectives as pointers: when the goal is read from the observation, where does an update signal land?

A goal-conditioned agent (MA_g) is trained with a cue in its observation naming the rewarded object type (a new
random type every episode, reward ``cued``). Then, per seed:

    reward changes, cue does not   MA_g fine-tuned on collect:j while the cue keeps showing type i   (Δ_reward)
    cue changes with the reward    MA_g fine-tuned on collect:j with the cue showing type j          (Δ_cue)
    control                        MA_g fine-tuned on its own task (random cues) for the same budget (Δ_control)

If the objective is a pointer, following a new cue needs no new objective in the weights: ‖Δ_cue‖ should look like
continued-training drift, while ignoring the cue in favour of a fixed reward has to write an objective into the
weights (‖Δ_reward‖ well above the control). Retargeting measures the pointer directly: with the cue set to type
j, how often is the first object collected of type j (among episodes that collect anything; chance 1/K), by
distance from the start to the nearest one.

May import: goalscope.agents, goalscope.analysis.records, goalscope.analysis.stats, goalscope.envs,
goalscope.errors, goalscope.outputs, goalscope.rl, goalscope.signals.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from goalscope.signals import delta as sig
from goalscope.agents.checkpoints import save_checkpoint
from goalscope.outputs import atomic_write_bytes
from goalscope.envs.maze import MazeConfig, MazeVecEnv
from goalscope.envs.oracle import _distance_to
from goalscope.envs.rewards import parse_reward
from goalscope.errors import ConfigError
from goalscope.rl.evaluation import model_policy
from goalscope.analysis.records import record, write_records
from goalscope.analysis.stats import bootstrap_mean
from goalscope.rl.ppo import PPOConfig, finetune, train_new

DISTANCE_BINS = ((1, 3), (4, 6), (7, 10), (11, 99))


def retargeting(model, cfg: MazeConfig, cue: int, episodes: int, seed: int) -> dict:
    """With the cue fixed to ``cue``: fraction of episodes whose first collected object is of that type, overall
    and by the shortest-path distance from the start to the nearest object of that type."""
    env = MazeVecEnv(dataclasses.replace(cfg, fixed_cue=cue).eval_config(), parse_reward("cued", cfg.n_types), episodes, seed)
    obs = env.reset(seed)
    g = env.grid_state()
    dist = _distance_to(g["objects"] == cue, ~g["walls"])[np.arange(episodes), g["pos"][:, 0], g["pos"][:, 1]]
    first = np.full(episodes, -1)
    policy = model_policy(model, seed)
    for _ in range(cfg.max_steps):
        obs, _, _, _, info = env.step(policy(obs, env))
        if info:
            first[info["done_idx"]] = info["first"]
    # Among episodes where anything was collected, a cue-blind agent picks the cued type first 1/K of the time.
    any_ = first >= 0
    hit = (first == cue).astype(float)
    out = {"cue": cue, "first_is_cued": float(hit[any_].mean()) if any_.any() else float("nan"),
           "collected_any": float(any_.mean()), "chance": 1.0 / cfg.n_types, "by_distance": {}}
    for lo, hi in DISTANCE_BINS:
        sel = (dist >= lo) & (dist <= hi) & any_
        if sel.any():
            out["by_distance"][f"{lo}-{hi}"] = {"first_is_cued": float(hit[sel].mean()), "episodes": int(sel.sum())}
    return out


def run_pointer_experiment(out: str | Path, *, env: MazeConfig | None = None, arch: str = "cnn",
                           seeds=(0, 1, 2), base_steps: int = 200_000, finetune_steps: int = 50_000,
                           episodes: int = 256, ppo: dict | None = None, log=print) -> dict:
    """Train a goal-conditioned (cued) agent and compare update signals when the reward changes without the cue, with
    it, and a control; measures retargeting by the cue. Writes records.csv and summary.json in ``out``; returns the
    summary."""
    out = Path(out)
    env = env or MazeConfig(size=7, n_types=3, n_per_type=1, max_steps=32, loop_prob=0.2)
    env = dataclasses.replace(env, cue=True, fixed_cue=-1)
    if env.n_types < 2:
        raise ConfigError("the pointer experiment needs at least 2 object types")
    ppo = ppo or {}
    i, j = 0, 1  # the cue keeps showing i while the reward moves to j
    rows, summary = [], {"env": env.to_json(), "arch": arch, "seeds": list(seeds), "per_seed": []}
    norms = {"reward changes, cue fixed": [], "cue changes with reward": [], "control": []}
    for s in seeds:
        log(f"pointers: seed {s}: training the goal-conditioned MA")
        ma = train_new(arch, {}, env, parse_reward("cued", env.n_types), PPOConfig(total_steps=base_steps, **ppo), s)
        save_checkpoint(ma, out / f"seed{s}" / "ma")
        model = ma.build()
        retarget = [retargeting(model, env, c, episodes, 10_000 + s) for c in range(env.n_types)]
        ft = PPOConfig(total_steps=finetune_steps, **ppo)
        variants = {
            "reward changes, cue fixed": (parse_reward(f"collect:{j}", env.n_types), dataclasses.replace(env, fixed_cue=i)),
            "cue changes with reward": (parse_reward(f"collect:{j}", env.n_types), dataclasses.replace(env, fixed_cue=j)),
            "control": (parse_reward("cued", env.n_types), env),
        }
        seed_out = {"seed": s, "ma_fraction_of_oracle": ma.extra["final_eval"]["fraction_of_oracle"], "retargeting": retarget}
        for name, (reward, env_v) in variants.items():
            log(f"pointers: seed {s}: fine-tune '{name}'")
            mb = finetune(ma, reward, ft, 1000 + s, env_cfg=env_v)
            delta = sig.update_signal(ma.state_dict, mb.state_dict)
            norm = float(sig.flatten(delta).norm())
            norms[name].append(norm)
            seed_out[name] = {"delta_l2": norm, "rb_fraction_of_oracle": mb.extra["final_eval"]["fraction_of_oracle"],
                              "layer_l2": {r["layer"]: r["l2"] for r in sig.per_layer(delta)}}
            rows.append(record("pointers", name, reward.name, s, "delta_l2", norm))
            for r in sig.per_layer(delta):
                rows.append(record("pointers", name, reward.name, s, "layer_l2", r["l2"], detail=r["layer"]))
        for r in retarget:
            rows.append(record("pointers", "MA_g", f"cue:{r['cue']}", s, "first_is_cued", r["first_is_cued"], detail=f"chance {r['chance']:.3f}"))
            for b, v in r["by_distance"].items():
                rows.append(record("pointers", "MA_g", f"cue:{r['cue']}", s, "first_is_cued_by_distance", v["first_is_cued"], detail=f"distance {b}, n={v['episodes']}"))
        summary["per_seed"].append(seed_out)

    control = np.array(norms["control"])
    ratios = {name: bootstrap_mean((np.array(v) / control)[:, None], 1000) for name, v in norms.items() if name != "control"}
    for name, ci in ratios.items():
        rows.append(record("pointers", name, "", None, "delta_l2_over_control", *ci, detail="CI over seeds"))
    summary["delta_l2_over_control"] = {k: [round(x, 4) for x in v] for k, v in ratios.items()}
    summary["retargeting_first_is_cued"] = float(np.mean([r["first_is_cued"] for s in summary["per_seed"] for r in s["retargeting"]]))
    summary["verdict"] = pointer_verdict(ratios["cue changes with reward"], ratios["reward changes, cue fixed"])
    write_records(rows, out / "records.csv")
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    return summary


def pointer_verdict(cue_ratio, reward_ratio) -> str:
    """Do the update signals tell 'the cue moved' apart from 'the objective moved'? (ratios to control drift)"""
    if reward_ratio[1] > cue_ratio[2]:
        return ("distinguishable: following a new cue moves the weights less than overriding it with a new reward "
                f"({cue_ratio[0]:.2f}x vs {reward_ratio[0]:.2f}x the control drift)")
    return (f"not distinguishable by update size: cue change {cue_ratio[0]:.2f}x, reward change {reward_ratio[0]:.2f}x "
            "the control drift (CIs overlap)")
