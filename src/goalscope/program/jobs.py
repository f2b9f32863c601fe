"""Jobs: the unit of work an executor runs, each a pure recipe from its spec to a stage directory.

A job's spec is plain JSON data that fully determines its output (configs, reward, seed, and the *keys* of the
jobs it builds on). Its key is a hash of that spec, so a rerun finds finished work by key and a changed input gets
a new key instead of stale results. A job works in ``stages/.partial-<key>/`` (where training leaves resumable
snapshots, so a killed job continues where it stopped) that is renamed into place when complete: a stage
directory either exists whole or not at all.

Kinds:
    train      MA: a fresh agent trained on RA                       -> checkpoint + profile
    finetune   MB: a parent fine-tuned on a reward (also controls)   -> checkpoint + profile
               (optionally in another env of the parent's family, e.g. a fixed cue)
    negate     MB*: MA - alpha*direction, evaluated, retrained on RA -> checkpoint + profile before/after retrain

May import: goalscope.agents, goalscope.envs, goalscope.errors, goalscope.inputs, goalscope.outputs, goalscope.rl,
goalscope.signals.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import torch

from goalscope.agents.checkpoints import load_checkpoint, save_checkpoint
from goalscope.outputs import atomic_write_bytes
from goalscope.envs import env_from_json
from goalscope.envs.rewards import Reward
from goalscope.errors import GoalscopeError
from goalscope.rl.evaluation import Profile, evaluate
from goalscope.inputs import read_json
from goalscope.outputs import confine, guard, holds_lock
from goalscope.rl.ppo import PPOConfig, finetune, train_new

KINDS = ("train", "finetune", "negate")
DONE = "done.json"
RESUME = "resume"  # training snapshots inside a job's partial directory
PRETRAINED = "pretrained"  # an MA planted by training keeps its pretrained model here


@dataclass(frozen=True)
class Job:
    """One cached unit of work: its kind, the spec its key is hashed from, a label, and the jobs it reads."""
    kind: str
    spec: dict
    label: str  # for people: "MB collect:1 seed 0"
    deps: tuple[str, ...] = field(default=())  # keys of jobs whose outputs this one reads

    @property
    def key(self) -> str:
        # How often training snapshots itself changes nothing in the result, so it must not change the key; nor
        # does where the network ran (a sweep begun on a GPU box is finished on a laptop, a CPU result is reused by a
        # GPU rerun), nor how many processes stepped the envs, nor the report's word for events. A setting at the
        # value it had before the setting existed (fp32) keeps old runs' keys.
        spec = {**self.spec, "ppo": {k: v for k, v in self.spec["ppo"].items()
                                     if k not in ("save_every", "save_every_s", "device")
                                     and (k, v) != ("precision", "fp32")}}
        if isinstance(spec.get("env"), dict):
            spec["env"] = {k: v for k, v in spec["env"].items() if k not in ("processes", "event_word")}
        blob = json.dumps({"kind": self.kind, "spec": spec}, sort_keys=True).encode()
        return f"{self.kind}-{hashlib.sha256(blob).hexdigest()[:12]}"


def stage_dir(run_dir: Path, key: str) -> Path:
    """Where the finished job ``key`` of a run lives."""
    return Path(run_dir) / "stages" / key


def partial_dir(run_dir: Path, key: str) -> Path:
    """Where job ``key`` is built before it is moved into place."""
    return Path(run_dir) / "stages" / f".partial-{key}"


def job_status(run_dir: Path, key: str) -> dict | None:
    """The ``done.json`` of a finished job (``status`` is ``ok`` or ``failed``), or None if it has not finished.

    A failed job is reported in the results (never averaged in) and retried by the next run."""
    p = stage_dir(run_dir, key) / DONE
    if not p.exists():
        return None
    try:
        status = read_json(p)
    except GoalscopeError as e:  # damaged: treated as failed, so the next run redoes the job
        return {"key": key, "status": "failed", "error": str(e), "label": key}
    if not isinstance(status, dict) or status.get("status") not in ("ok", "failed"):
        return {"key": key, "status": "failed", "error": f"{p} is damaged", "label": key}
    return status


def load_profile(run_dir: Path, key: str, name: str = "profile.json") -> Profile:
    """A finished job's behaviour profile (``name`` in its stage directory); a damaged file says how to redo it."""
    path = stage_dir(run_dir, key) / name
    redo = f"delete {path.parent} and rerun `goalscope run` to recompute it"
    data = read_json(path, advice=redo)
    try:
        return Profile.from_json(data)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise GoalscopeError(f"{path} is damaged ({type(e).__name__}: {e}); {redo}") from None


def run_job(job: Job, run_dir: str | Path, lock_owner: str | None = None) -> dict:
    """Execute ``job`` unless it already finished; returns its status. Safe to call in a worker process.

    With ``lock_owner``, the result is put in place only while the run's lock is still held by that owner: a job
    that outlives its run (orphaned by a kill) leaves its partial directory for the next run and writes nothing."""
    run_dir = Path(run_dir)
    done = job_status(run_dir, job.key)
    if done is not None and done["status"] == "ok":
        return done
    with confine(run_dir, walk=False):  # in a worker too: every write below the run follows no link
        return _run_job(job, run_dir, lock_owner, done)


def _run_job(job: Job, run_dir: Path, lock_owner: str | None, done: dict | None) -> dict:
    torch.set_num_threads(1)
    final = stage_dir(run_dir, job.key)
    tmp = partial_dir(run_dir, job.key)
    for p in (final, tmp):  # in a worker too: nothing is written or removed through a link planted in the run
        guard(p, run_dir)
    if done is not None:  # a failed attempt is retried (a fixed bug or input); a deterministic failure recurs
        shutil.rmtree(final, ignore_errors=True)
    tmp.mkdir(parents=True, exist_ok=True)  # may hold a killed attempt's snapshot, which training continues
    start = time.perf_counter()
    status = {"key": job.key, "kind": job.kind, "label": job.label, "spec": job.spec}
    try:
        for dep in job.deps:
            dep_status = job_status(run_dir, dep)
            if dep_status is None or dep_status["status"] != "ok":
                raise GoalscopeError(f"depends on {dep}, which did not finish successfully")
        _EXECUTE[job.kind](job.spec, run_dir, tmp, job.label)
        status["status"] = "ok"
    except GoalscopeError as e:  # e.g. training diverged: recorded as a failed stage, never averaged in
        status.update(status="failed", error=str(e))
    except Exception as e:  # a bug: keep the traceback for the report, mark the stage failed
        status.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc())
    status["wall_s"] = round(time.perf_counter() - start, 3)
    shutil.rmtree(tmp / RESUME, ignore_errors=True)
    atomic_write_bytes(tmp / DONE, json.dumps(status, indent=2).encode())
    if lock_owner is not None and not holds_lock(Path(run_dir) / ".lock", lock_owner):
        status.update(status="failed", error="its run ended before it finished; the next run resumes it")
        return status
    guard(final, run_dir)
    if final.exists():  # another process finished the same job first; its result is identical by construction
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        os.replace(tmp, final)
    return status


# ----------------------------------------------------------------------------------------------------------------
# Executing each kind


def _ppo(spec: dict) -> PPOConfig:
    return PPOConfig.from_json(spec["ppo"])


def _save_profile(profile: Profile, out: Path, name: str = "profile.json") -> None:
    atomic_write_bytes(out / name, json.dumps(profile.to_json()).encode())


def _evaluate(model, spec: dict, env, reward: Reward) -> Profile:
    ev = spec["evaluation"]
    return evaluate(model, env, reward, ev["episodes"], ev["seed"])


def _train(spec: dict, run_dir: Path, out: Path, label: str = "MA") -> None:
    env = env_from_json(spec["env"])
    reward = Reward.from_json(spec["reward"])
    if "pretrain" in spec:
        ckpt = _plant_by_training(spec, env, reward, out, label)
    else:
        ckpt = train_new(spec["arch"], spec["arch_config"], env, reward, _ppo(spec), spec["seed"], log_dir=out,
                         resume_dir=out / RESUME, name=label)
    save_checkpoint(ckpt, out)
    _save_profile(_evaluate(ckpt.build(), spec, env, reward), out)


def _plant_by_training(spec: dict, env, reward: Reward, out: Path, label: str):
    """MA with its objective planted by training (``base.pretrain_reward``): the architecture is pretrained on a
    reward with no type preference, then trained on RA with only its planted part free to move. The pretrained
    model is kept in ``pretrained/`` beside MA, so a job killed after it resumes there, and MA - pretrained can be
    checked."""
    from goalscope.agents.registry import objective_mask

    pre_dir = out / PRETRAINED
    if (pre_dir / DONE).exists():
        pre = load_checkpoint(pre_dir)
    else:
        pre = train_new(spec["arch"], spec["arch_config"], env, Reward.from_json(spec["pretrain"]["reward"]),
                        PPOConfig.from_json(spec["pretrain"]["ppo"]), spec["seed"], log_dir=out,
                        resume_dir=out / RESUME / PRETRAINED, name=f"{label} pretrain")
        save_checkpoint(pre, pre_dir)
        atomic_write_bytes(pre_dir / DONE, b"{}")
    return finetune(pre, reward, _ppo(spec), spec["seed"], log_dir=out, resume_dir=out / RESUME, name=label,
                    free=objective_mask(pre.build()))


def _finetune(spec: dict, run_dir: Path, out: Path, label: str = "MB") -> None:
    parent = load_checkpoint(stage_dir(run_dir, spec["parent"]))
    reward = Reward.from_json(spec["reward"])
    # An "env" in the spec fine-tunes in another env of the same family (the pointer experiment fixes the cue);
    # specs without one, as every run's, keep their keys.
    env = env_from_json(spec["env"]) if "env" in spec else parent.env
    ckpt = finetune(parent, reward, _ppo(spec), spec["seed"], parent_path=spec["parent"], log_dir=out,
                    resume_dir=out / RESUME, name=label, env_cfg=env)
    save_checkpoint(ckpt, out)
    _save_profile(_evaluate(ckpt.build(), spec, env, reward), out)


def _negate(spec: dict, run_dir: Path, out: Path, label: str = "MB*") -> None:
    from goalscope.signals.delta import negate, random_direction_like, update_signal

    ma = load_checkpoint(stage_dir(run_dir, spec["ma"]))
    mb = load_checkpoint(stage_dir(run_dir, spec["mb"]))
    delta = update_signal(ma.state_dict, mb.state_dict)
    if spec["direction"] == "random":
        # Older specs have no direction_seed: they drew their direction from the retrain seed.
        delta = random_direction_like(delta, torch.Generator().manual_seed(spec.get("direction_seed", spec["seed"])))
    start = ma.build()
    start.load_state_dict(negate(ma.state_dict, delta, spec["alpha"]))
    _save_profile(_evaluate(start, spec, ma.env, ma.reward), out, "profile_before_retrain.json")
    ma.state_dict = start.state_dict()
    ckpt = finetune(ma, ma.reward, _ppo(spec), spec["seed"], parent_path=spec["ma"], log_dir=out,
                    resume_dir=out / RESUME, name=label)
    save_checkpoint(ckpt, out)
    _save_profile(_evaluate(ckpt.build(), spec, ma.env, ma.reward), out)


_EXECUTE = {"train": _train, "finetune": _finetune, "negate": _negate}
