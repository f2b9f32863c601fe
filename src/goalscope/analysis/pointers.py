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

The competence gate comes first: a goal-conditioned MA that has not learned to read its cue says nothing about
pointers, so the summary states how often MA_g's first object is the cued type as a fraction of how often the
oracle's is on the same episodes (t interval over seeds) against a bar (default 0.9), and how well each fine-tune does its reward (fraction of the oracle against
0.8), and the verdict carries the warning when MA_g is below its bar.

The reference (:mod:`goalscope.analysis.pointer_reference`): a cue-blind agent MA_ref (same env, architecture and
seed, trained on collect:0 with cues that never predict its reward) is moved to collect:1 by the same three
fine-tunes, and its ratio (‖Δ_reward‖ − ‖Δ_cue‖) / ‖Δ_control‖ comes from the same code as MA_g's. "Objective as
pointer" is decided against it (a one-sided paired t test over seeds that MA_g's ratio exceeds MA_ref's).

The trainings are cached jobs of the experiment machine (:mod:`goalscope.program.jobs`), in waves through an
executor like ``goalscope run``: ``OUT/stages/<key>`` per job, so a killed or extended experiment (more seeds)
retrains nothing that finished. ``OUT/records.csv`` and ``OUT/summary.json`` describe the last call.

May import: goalscope.agents, goalscope.analysis (records, stats, effects.competence, pointer_reference),
goalscope.envs, goalscope.errors, goalscope.outputs, goalscope.program, goalscope.rl, goalscope.signals.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from goalscope.agents.checkpoints import load_checkpoint
from goalscope.agents.registry import arch_config as arch_config_of, arch_config_to_json
from goalscope.analysis.effects.competence import preference, verdict
from goalscope.analysis.pointer_reference import REF_BAR, REFERENCE_REWARD, reference_verdict
from goalscope.analysis.records import record, write_records
from goalscope.analysis.stats import bootstrap_mean, t_interval
from goalscope.envs.maze import MazeConfig, MazeVecEnv
from goalscope.envs.oracle import _distance_to
from goalscope.envs.rewards import parse_reward
from goalscope.errors import ConfigError, GoalscopeError
from goalscope.inputs import check_ppo_sizes
from goalscope.outputs import MARKER, atomic_write_bytes, check_output_path, confine
from goalscope.program.jobs import Job, job_status, load_profile, stage_dir
from goalscope.rl.evaluation import model_policy, oracle_policy
from goalscope.rl.ppo import PPOConfig
from goalscope.signals import delta as sig

DISTANCE_BINS = ((1, 3), (4, 6), (7, 10), (11, 99))
VARIANTS = ("reward changes, cue fixed", "cue changes with reward", "control")
ENTRIES = {"stages", "records.csv", "summary.json", ".lock", MARKER}  # what a pointers directory may hold
CUE_BAR = 0.9  # MA_g must reach the cued type first in this fraction of the episodes the oracle does
RB_BAR = 0.8  # each fine-tune's fraction of the oracle on its reward, as a run's evaluation.competence
EVAL_SEED = 10_000


def retargeting(model, cfg: MazeConfig, cue: int, episodes: int, seed: int) -> dict:
    """With the cue fixed to ``cue``: how often the first collected object is of that type, overall and by the
    shortest-path distance from the start to the nearest object of that type. ``first_is_cued`` counts among
    episodes that collect anything (a cue-blind agent scores 1/K); ``reached_cued_first`` among all episodes.

    ``oracle_reached_cued_first`` is the oracle's rate on the same episodes: where the only route to the cued
    object crosses another one (always, in a perfect maze, when one lies on it), even a perfect agent collects that
    one first, so the agent's rate is judged as a fraction of the oracle's (``fraction_of_oracle``)."""
    firsts = {}
    for who in ("model", "oracle"):
        env = MazeVecEnv(dataclasses.replace(cfg, fixed_cue=cue).eval_config(), parse_reward("cued", cfg.n_types),
                         episodes, seed)
        obs = env.reset(seed)
        if who == "model":
            g = env.grid_state()
            dist = _distance_to(g["objects"] == cue, ~g["walls"])[np.arange(episodes), g["pos"][:, 0], g["pos"][:, 1]]
        first = np.full(episodes, -1)
        policy = model_policy(model, seed) if who == "model" else oracle_policy
        for _ in range(cfg.max_steps):
            obs, _, _, _, info = env.step(policy(obs, env))
            if info:
                first[info["done_idx"]] = info["first"]
        firsts[who] = first
    first = firsts["model"]
    any_ = first >= 0
    hit = (first == cue).astype(float)
    oracle = float((firsts["oracle"] == cue).mean())
    out = {"cue": cue, "first_is_cued": float(hit[any_].mean()) if any_.any() else float("nan"),
           "reached_cued_first": float(hit.mean()), "oracle_reached_cued_first": oracle,
           "fraction_of_oracle": float(hit.mean()) / oracle if oracle > 0 else float("nan"),
           "collected_any": float(any_.mean()), "chance": 1.0 / cfg.n_types, "by_distance": {}}
    for lo, hi in DISTANCE_BINS:
        sel = (dist >= lo) & (dist <= hi) & any_
        if sel.any():
            out["by_distance"][f"{lo}-{hi}"] = {"first_is_cued": float(hit[sel].mean()), "episodes": int(sel.sum())}
    return out


# ----------------------------------------------------------------------------------------------------------------
# The jobs


@dataclass
class PointerPlan:
    """The pointer experiment's jobs in waves, and the role of each: MA_g per seed, a fine-tune per (seed, variant);
    the cue-blind reference's MA_ref and fine-tunes alike (empty when it is switched off)."""
    waves: list[list[Job]] = field(default_factory=list)
    ma: dict = field(default_factory=dict)  # seed -> key
    ft: dict = field(default_factory=dict)  # (seed, variant) -> key
    rewards: dict = field(default_factory=dict)  # variant -> Reward
    ref: dict = field(default_factory=dict)  # seed -> key of MA_ref
    ref_ft: dict = field(default_factory=dict)  # (seed, variant) -> key
    ref_rewards: dict = field(default_factory=dict)  # variant -> Reward (the control's is collect:0)


def plan_pointers(env: MazeConfig, arch: str, arch_config: dict, seeds, base_steps: int, finetune_steps: int,
                  episodes: int, ppo: dict, reference_steps: int | None = None) -> PointerPlan:
    """MA_g (reward ``cued``, a random cue per episode) per seed, then its three fine-tunes: the reward moves from
    type i = 0 to j = 1 while the cue keeps showing i, the cue moves with it, and a control on its own task.

    With ``reference_steps``, the cue-blind reference too: MA_ref per seed (collect:0 in the same env, random cues,
    for ``reference_steps``) and the same three fine-tunes of it, its control on collect:0. They are added after
    MA_g's jobs, whose keys do not change."""
    i, j = 0, 1
    k = env.n_types
    plan = PointerPlan(rewards={VARIANTS[0]: parse_reward(f"collect:{j}", k), VARIANTS[1]: parse_reward(f"collect:{j}", k),
                                VARIANTS[2]: parse_reward("cued", k)})
    plan.ref_rewards = {**plan.rewards, VARIANTS[2]: parse_reward(REFERENCE_REWARD, k)}
    envs = {VARIANTS[0]: dataclasses.replace(env, fixed_cue=i), VARIANTS[1]: dataclasses.replace(env, fixed_cue=j),
            VARIANTS[2]: env}
    ev = {"episodes": episodes, "seed": EVAL_SEED}
    wave1, wave2 = [], []

    def agent(s, reward, steps, label, keys, ft_keys, rewards, ft_label=""):
        ma = Job("train", {"arch": arch, "arch_config": arch_config, "env": env.to_json(), "reward": reward.to_json(),
                           "ppo": PPOConfig(total_steps=steps, **ppo).to_json(), "seed": s, "evaluation": ev},
                 f"{label} seed {s}")
        keys[s] = ma.key
        wave1.append(ma)
        for name in VARIANTS:
            job = Job("finetune", {"parent": ma.key, "env": envs[name].to_json(), "reward": rewards[name].to_json(),
                                   "ppo": PPOConfig(total_steps=finetune_steps, **ppo).to_json(), "seed": 1000 + s,
                                   "evaluation": ev}, f"{ft_label}{name} seed {s}", (ma.key,))
            ft_keys[(s, name)] = job.key
            wave2.append(job)

    for s in seeds:
        agent(s, plan.rewards["control"], base_steps, "MA_g", plan.ma, plan.ft, plan.rewards)
    for s in seeds if reference_steps else ():
        agent(s, plan.ref_rewards["control"], reference_steps, "MA_ref", plan.ref, plan.ref_ft, plan.ref_rewards,
              "MA_ref: ")
    plan.waves = [wave1, wave2]
    return plan


def check_pointers_dir(out: str | Path) -> Path:
    """``out`` as a pointers directory: new, empty, or an earlier pointer experiment's; anything else is refused."""
    out = check_output_path(Path(out), "pointers directory")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; --out takes a directory")
    stranger = sorted(p.name for p in out.iterdir() if p.name not in ENTRIES and not p.name.startswith(".lock-")) \
        if out.is_dir() else []
    if stranger and (out / MARKER).exists():
        raise ConfigError(f"{out} holds a pointer experiment of an older goalscope ({stranger[0]}), which this one "
                          "does not resume; choose a new --out")
    if stranger:
        raise ConfigError(f"{out / stranger[0]} is not goalscope's (a pointers directory holds only stages/, "
                          "records.csv and summary.json); choose a new --out")
    return out


def run_pointer_experiment(out: str | Path, *, env: MazeConfig | None = None, arch: str = "cnn",
                           arch_config: dict | None = None, seeds=(0, 1, 2), base_steps: int = 200_000,
                           finetune_steps: int = 50_000, episodes: int = 256, ppo: dict | None = None,
                           cue_bar: float = CUE_BAR, reference: bool = True, reference_steps: int | None = None,
                           executor=None, log=print) -> dict:
    """Train (or reuse) the goal-conditioned agents and their fine-tunes as cached jobs in ``out/stages``, then compare
    their update signals and measure retargeting. With ``reference`` the cue-blind reference too (MA_ref trained for
    ``reference_steps``, default ``base_steps``), and "objective as pointer" decided against it. Writes records.csv
    and summary.json in ``out``; returns the summary."""
    from goalscope.program.executors import LocalExecutor
    from goalscope.program.runner import RunLock, run_wave

    env = env or MazeConfig(size=7, n_types=3, n_per_type=1, max_steps=32, loop_prob=0.2)
    if not isinstance(env, MazeConfig):
        raise ConfigError(f"the pointer experiment needs the object maze (its cue planes), not env family "
                          f"{getattr(env, 'family', type(env).__name__)!r}")
    env = dataclasses.replace(env, cue=True, fixed_cue=-1)
    if env.n_types < 2:
        raise ConfigError("the pointer experiment needs at least 2 object types")
    if not 0 < cue_bar <= 1:
        raise ConfigError(f"the competence bar must be in (0, 1], got {cue_bar}")
    reference_steps = (reference_steps or base_steps) if reference else None
    arch_json = arch_config_to_json(arch_config_of(arch, arch_config))  # a bad name or option fails here, not in a job
    out = check_pointers_dir(out)
    plan = plan_pointers(env, arch, arch_json, list(seeds), base_steps, finetune_steps, episodes, ppo or {},
                         reference_steps)
    for job in (j for wave in plan.waves for j in wave):  # sizes bounded before any job allocates a rollout
        check_ppo_sizes(job.spec["ppo"], env.obs_shape)
    executor = executor or LocalExecutor(0)
    with confine(out), RunLock(out) as lock:  # never through a link planted in the directory
        for wave in plan.waves:
            run_wave(out, wave, executor, lock.owner, log)
        failed = [j.label for wave in plan.waves for j in wave if (job_status(out, j.key) or {}).get("status") != "ok"]
        if failed:
            raise GoalscopeError(f"{len(failed)} pointer jobs did not finish ({failed[0]}, ...); rerun the same "
                                 "command to retry them (finished jobs are reused)")
        summary, rows = analyse_pointers(out, plan, env, episodes, cue_bar, log)
        write_records(rows, out / "records.csv")
        atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=2).encode())
    return summary


# ----------------------------------------------------------------------------------------------------------------
# The analysis


def analyse_pointers(out: Path, plan: PointerPlan, env: MazeConfig, episodes: int, cue_bar: float, log=print):
    """(summary, records rows) of a pointer experiment whose jobs all finished."""
    seeds = list(plan.ma)
    rows, summary = [], {"env": env.to_json(), "seeds": seeds, "per_seed": []}
    acc = {what: {name: [] for name in VARIANTS} for what in ("delta_l2", "fraction", "preference")}
    reached, of_oracle = [], []
    for s in seeds:
        ma = load_checkpoint(stage_dir(out, plan.ma[s]))
        summary["arch"] = ma.arch
        retarget = [retargeting(ma.build(), env, c, episodes, EVAL_SEED + s) for c in range(env.n_types)]
        reached.append(float(np.mean([r["reached_cued_first"] for r in retarget])))
        oracle = float(np.mean([r["oracle_reached_cued_first"] for r in retarget]))
        of_oracle.append(reached[-1] / oracle if oracle > 0 else math.nan)
        seed_out = {"seed": s, "ma_fraction_of_oracle": ma.extra["final_eval"]["fraction_of_oracle"],
                    "reached_cued_first": reached[-1], "oracle_reached_cued_first": oracle,
                    "cued_first_fraction_of_oracle": of_oracle[-1], "retargeting": retarget}
        fine_tunes(out, ma, s, plan.ft, plan.rewards, "", seed_out, acc, rows)
        rows.append(record("pointers", "MA_g", "cued", s, "reached_cued_first", reached[-1],
                           detail=f"mean over cues; chance {1 / env.n_types:.3f} if it always collects"))
        rows.append(record("pointers", "MA_g", "cued", s, "cued_first_fraction_of_oracle", of_oracle[-1],
                           detail=f"the oracle reaches the cued type first in {oracle:.3f}"))
        for r in retarget:
            rows.append(record("pointers", "MA_g", f"cue:{r['cue']}", s, "first_is_cued", r["first_is_cued"], detail=f"chance {r['chance']:.3f}"))
            for b, v in r["by_distance"].items():
                rows.append(record("pointers", "MA_g", f"cue:{r['cue']}", s, "first_is_cued_by_distance", v["first_is_cued"], detail=f"distance {b}, n={v['episodes']}"))
        summary["per_seed"].append(seed_out)

    gate = {"MA_g": cue_gate(reached, of_oracle, cue_bar, env.n_types,
                             float(np.mean([p["oracle_reached_cued_first"] for p in summary["per_seed"]])))}
    for name in VARIANTS[:2]:
        gate[f"MB[{name}]"] = rb_gate(acc["fraction"][name], acc["preference"][name])
    summary["competence"] = gate
    ratios, paired, per_seed = update_ratios(acc["delta_l2"], "", rows)
    summary["delta_l2_over_control"] = {k: [round(x, 4) for x in v] for k, v in ratios.items()}
    summary["retargeting_first_is_cued"] = float(np.mean([r["first_is_cued"] for s in summary["per_seed"] for r in s["retargeting"]]))
    summary["reward_minus_cue_over_control"] = [round(x, 4) for x in paired]
    summary["per_seed_reward_minus_cue_over_control"] = per_seed
    summary["verdict"] = pointer_verdict(ratios["cue changes with reward"], ratios["reward changes, cue fixed"], paired)
    if not gate["MA_g"]["passes"]:
        summary["verdict"] += ("; but MA_g is below its competence bar (it does not follow its cue), so this says "
                               "little about objectives as pointers")
    if plan.ref:
        summary["reference"] = analyse_reference(out, plan, rows)
        decision = reference_verdict(per_seed, summary["reference"]["per_seed_reward_minus_cue_over_control"])
        below = [m for m, g in {**gate, **summary["reference"]["competence"]}.items() if not g["passes"]]
        if below:
            decision["verdict"] += (f"; but below the competence bar: {', '.join(below)}, so this says little about "
                                    "objectives as pointers")
    else:
        decision = {"passes": False, "verdict": "undecided: the cue-blind reference is switched off ([pointers] "
                                                "reference = false, or --no-reference)"}
    summary["objective_as_pointer"] = decision
    for model, g in {**gate, **summary.get("reference", {}).get("competence", {})}.items():
        log(f"pointers: competence: {model}: {g['verdict']}")
        rows.append(record("pointers", model, "", None, "competence_passes", float(g["passes"]), detail=g["verdict"]))
    rows.append(record("pointers", "MA_g vs MA_ref", "", None, "objective_as_pointer", float(decision["passes"]),
                       detail=decision["verdict"]))
    return summary, rows


def fine_tunes(out: Path, ma, s: int, keys: dict, rewards: dict, who: str, seed_out: dict, acc: dict,
               rows: list) -> None:
    """Seed ``s``'s three fine-tunes of ``ma``: each one's update signal (L2 overall and per layer) and competence
    into ``seed_out`` and ``rows``, and appended to ``acc`` (delta_l2, fraction and preference per variant);
    ``who`` prefixes the records' model names."""
    for name in VARIANTS:
        key = keys[(s, name)]
        mb = load_checkpoint(stage_dir(out, key))
        delta = sig.update_signal(ma.state_dict, mb.state_dict)
        norm = float(sig.flatten(delta).norm())
        frac = mb.extra["final_eval"]["fraction_of_oracle"]
        seed_out[name] = {"delta_l2": norm, "rb_fraction_of_oracle": frac,
                          "layer_l2": {r["layer"]: r["l2"] for r in sig.per_layer(delta)}}
        reward = rewards[name]
        acc["delta_l2"][name].append(norm)
        acc["fraction"][name].append(frac)
        acc["preference"][name].append(float(np.mean(preference(load_profile(out, key).counts, reward))))
        rows.append(record("pointers", who + name, reward.name, s, "delta_l2", norm))
        rows.append(record("pointers", who + name, reward.name, s, "fraction_of_oracle", frac))
        for r in sig.per_layer(delta):
            rows.append(record("pointers", who + name, reward.name, s, "layer_l2", r["l2"], detail=r["layer"]))


def update_ratios(norms: dict, who: str, rows: list):
    """(‖Δ‖ / ‖Δ_control‖ per variant with a bootstrap CI over seeds, the paired (‖Δ_reward‖ − ‖Δ_cue‖) /
    ‖Δ_control‖ with its t interval, and that difference per seed): the same code for MA_g and MA_ref."""
    control = np.array(norms["control"])
    ratios = {name: bootstrap_mean((np.array(v) / control)[:, None], 1000) for name, v in norms.items() if name != "control"}
    if len(control) < 2:  # a bootstrap over one seed is a point, not an interval: no verdict from it
        ratios = {k: (v[0], math.nan, math.nan) for k, v in ratios.items()}
    for name, ci in ratios.items():
        rows.append(record("pointers", who + name, "", None, "delta_l2_over_control", *ci, detail="CI over seeds"))
    # The decision is paired by seed (each seed's reward-change ratio minus its cue-change ratio, t interval): two
    # overlapping intervals can still differ reliably seed by seed.
    per_seed = np.array(norms["reward changes, cue fixed"]) / control - np.array(norms["cue changes with reward"]) / control
    return ratios, t_interval(per_seed), [float(x) for x in per_seed]


def analyse_reference(out: Path, plan: PointerPlan, rows: list) -> dict:
    """The cue-blind reference's part of the summary: MA_ref's three update signals, ratios and competence."""
    acc = {what: {name: [] for name in VARIANTS} for what in ("delta_l2", "fraction", "preference")}
    fractions, prefs, per_seed = [], [], []
    for s, key in plan.ref.items():
        ref = load_checkpoint(stage_dir(out, key))
        fractions.append(ref.extra["final_eval"]["fraction_of_oracle"])
        prefs.append(float(np.mean(preference(load_profile(out, key).counts, ref.reward))))
        seed_out = {"seed": s, "ma_fraction_of_oracle": fractions[-1]}
        fine_tunes(out, ref, s, plan.ref_ft, plan.ref_rewards, "MA_ref: ", seed_out, acc, rows)
        per_seed.append(seed_out)
    ratios, paired, diffs = update_ratios(acc["delta_l2"], "MA_ref: ", rows)
    gate = {"MA_ref": rb_gate(fractions, prefs, REF_BAR)}
    for name in VARIANTS[:2]:
        gate[f"MB_ref[{name}]"] = rb_gate(acc["fraction"][name], acc["preference"][name])
    return {"agent": f"cue-blind: trained on {REFERENCE_REWARD} in MA_g's env (a random cued type every episode, "
                     "never predicting its reward), the same architecture and seeds; moved to collect:1 by MA_g's "
                     "three fine-tunes, its control on collect:0",
            "steps": int(ref.steps), "per_seed": per_seed, "competence": gate,
            "delta_l2_over_control": {k: [round(x, 4) for x in v] for k, v in ratios.items()},
            "reward_minus_cue_over_control": [round(x, 4) for x in paired],
            "per_seed_reward_minus_cue_over_control": diffs}


def cue_gate(reached: list[float], of_oracle: list[float], bar: float, n_types: int, oracle: float) -> dict:
    """The gate on MA_g: per seed, how often its first object is the cued type as a fraction of how often the
    oracle's is (``of_oracle``), against ``bar``; the raw rate (``reached``) and the oracle's are stated with it."""
    m, lo, hi = t_interval(of_oracle)
    ci = f" [{lo:.0%}, {hi:.0%}]" if math.isfinite(lo) else " (one seed, no interval)"
    passes = bool(m >= bar)
    words = (f"reaches the cued type first at {m:.0%}{ci} of the oracle's rate (bar {bar:.0%}): in "
             f"{float(np.mean(reached)):.0%} of episodes, the oracle in {oracle:.0%} (an object on the only route "
             f"is collected first), a cue-blind agent {1 / n_types:.0%} at most")
    if not passes:
        words += ": it does not reliably follow its cue"
    return {"cued_first_fraction_of_oracle": [m, lo, hi], "reached_cued_first": float(np.mean(reached)),
            "oracle_reached_cued_first": oracle, "bar": bar, "passes": passes, "verdict": words}


def rb_gate(fractions: list[float], prefs: list[float], bar: float = RB_BAR) -> dict:
    """The gate on a fine-tune (or MA_ref): its fraction of the oracle on its reward (mean over seeds) against
    ``bar``."""
    m, pref = float(np.mean(fractions)), t_interval(prefs)
    passes, words = verdict(m, pref, bar)
    return {"fraction_of_oracle": m, "preference": list(pref), "bar": bar, "passes": passes, "verdict": words}


def pointer_verdict(cue_ratio, reward_ratio, paired=None) -> str:
    """Do the update signals tell 'the cue moved' apart from 'the objective moved'? (ratios to control drift; the
    decision is the paired difference reward − cue over seeds, ``paired`` = (mean, lo, hi), when given)."""
    if paired is None:
        paired = (reward_ratio[0] - cue_ratio[0], reward_ratio[1] - cue_ratio[2], math.nan)
    if not math.isfinite(paired[1]):
        return (f"undecided: cue change {cue_ratio[0]:.2f}x, reward change {reward_ratio[0]:.2f}x the control drift, "
                "with no interval (one seed); run two or more")
    diff = f"paired difference {paired[0]:+.2f} [{paired[1]:+.2f}, {paired[2]:+.2f}] over seeds"
    if paired[1] > 0:
        return ("distinguishable: following a new cue moves the weights less than overriding it with a new reward "
                f"({cue_ratio[0]:.2f}x vs {reward_ratio[0]:.2f}x the control drift; {diff})")
    return (f"not distinguishable by update size: cue change {cue_ratio[0]:.2f}x, reward change {reward_ratio[0]:.2f}x "
            f"the control drift ({diff})")
