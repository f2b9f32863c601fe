"""Reward -> weights (issue 14), the part every measurement shares: a finished run opened for edits
(:class:`EditRun`: config, plan, checkpoints loaded once, the profile cache, the run's job machinery), the edit
algebra (MA + Σ t·Δ, random directions of the same per-tensor norms), the behaviour metrics of a profile, and the
records file. The measurements are :mod:`~goalscope.analysis.edits.linearity`,
:mod:`~goalscope.analysis.edits.arithmetic`, :mod:`~goalscope.analysis.edits.targeted` and
:mod:`~goalscope.analysis.edits.dynamics`; :mod:`goalscope.analysis.edits.run` runs them.

Every evaluation runs on the run's paired episodes (same evaluation seed: same mazes for every model) and is cached
in ``RUN/edits/profiles/<hash of what was evaluated>.json`` (written atomically), so a rerun evaluates nothing
twice; the jobs are cached by key in ``stages/``. Intervals are Student t over MA seeds (the independent units),
each seed's value being its mean over episodes (and RBs where stated); paired comparisons are Holm-corrected within a
family. Results: ``RUN/edits/<part>.json`` and tidy rows in ``RUN/edits/records.csv`` (the columns of records.csv).

May import: goalscope.analysis (records, stats), goalscope.program, goalscope.rl, goalscope.signals, goalscope.envs,
goalscope.agents and the core helpers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from goalscope.agents.checkpoints import load_checkpoint
from goalscope.analysis.stats import t_interval
from goalscope.errors import ConfigError, GoalscopeError
from goalscope.inputs import read_json
from goalscope.outputs import atomic_write_bytes
from goalscope.program.jobs import Job, job_status, stage_dir
from goalscope.rl.evaluation import Profile, evaluate
from goalscope.signals import delta as sig

T_GRID = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)
EDIT_FRACTIONS = (0.01, 0.05, 0.20)
DEFAULT_PAIRS = ("collect:1+collect:2", "collect:3+collect:4")  # default_pairs of the default 5-type run
RANDOM_DIRECTIONS = 3
EDITS_DIR = "edits"
PARTS = ("linearity", "arithmetic", "targeted", "dynamics")
DEFAULT_PARTS = PARTS[:3]  # dynamics retrains every fine-tune with snapshots: asked for by name
SNAPSHOT_UPDATES = (1, 2, 3, 5, 8, 12, 18, 25)  # PPO updates after which a dynamics fine-tune keeps its weights
METRICS = ("rb_objects", "specific_lean", "ra_return", "all_objects")
BREAK_LEVEL = 0.5  # capability "breaks" where all objects collected fall below this fraction of MA's


# ----------------------------------------------------------------------------------------------------------------
# A finished run, its states and a profile cache


class EditRun:
    """A finished run opened for edits: config, plan, checkpoints (loaded once) and the profile cache."""

    def __init__(self, run_dir: str | Path, episodes: int | None = None, log=print):
        from goalscope.program.config import experiment_from_dict
        from goalscope.program.runner import EXPERIMENT_FILE, plan_experiment

        self.path = Path(run_dir)
        exp = self.path / EXPERIMENT_FILE
        if not exp.exists():
            raise ConfigError(f"{self.path} is not a goalscope run (no {EXPERIMENT_FILE})")
        self.cfg = experiment_from_dict(read_json(exp))
        self.plan = plan_experiment(self.cfg)
        self.ok = {j.key for j in self.plan.jobs() if (job_status(self.path, j.key) or {}).get("status") == "ok"}
        missing = [s for s in self.cfg.seeds if self.plan.ma[s] not in self.ok]
        if missing:
            raise GoalscopeError(f"{self.path}: MA seed {missing[0]} did not finish; run `goalscope run` first")
        self.episodes = episodes or self.cfg.evaluation.episodes
        self.eval_seed = self.cfg.evaluation.seed
        self.log = log
        self.out = self.path / EDITS_DIR
        self._ckpt: dict = {}
        self._models: dict = {}
        self.evaluated = 0  # evaluations run (not found in the cache) by this object

    # --- checkpoints and signals

    def ckpt(self, key: str):
        if key not in self._ckpt:
            if (job_status(self.path, key) or {}).get("status") != "ok":
                raise GoalscopeError(f"stage {key} of {self.path} did not finish")
            self._ckpt[key] = load_checkpoint(stage_dir(self.path, key))
        return self._ckpt[key]

    def state(self, key: str) -> dict:
        return self.ckpt(key).state_dict

    def ma(self, s: int):
        return self.ckpt(self.plan.ma[s])

    def mb_key(self, s: int, rb: str, rep: int = 0) -> str | None:
        return self.plan.mb.get((s, rb)) if rep == 0 else self.plan.mb_rep.get((s, rb, rep))

    def delta(self, s: int, rb: str, rep: int = 0) -> dict:
        return sig.update_signal(self.state(self.plan.ma[s]), self.state(self.mb_key(s, rb, rep)))

    def rbs(self) -> list[str]:
        return [r.name for r in self.cfg.rbs()]

    def reward(self, name: str):
        from goalscope.envs.rewards import parse_reward

        for r in self.cfg.rbs():
            if r.name == name:
                return r
        return parse_reward(name, self.cfg.env.n_types)

    def types(self, reward) -> tuple[list[int], list[int]]:
        """(the types ``reward`` adds over RA, the other non-RA types): what a lean is measured between."""
        ra = self.cfg.ra
        ra_types = set(ra.rewarded_types().tolist())
        w = np.asarray(reward.weights, float) - np.asarray(ra.weights, float)
        own = [int(k) for k in np.flatnonzero(w > 0) if int(k) not in ra_types] or [reward.target_type(ra)]
        others = [k for k in range(self.cfg.env.n_types) if k not in own and k not in ra_types]
        return own, others

    # --- the profile cache

    def profile(self, what: dict, make_state) -> Profile:
        """The behaviour profile of the state ``make_state()`` builds, on the run's paired episodes; ``what`` names
        it (stage keys and edit parameters) and is the cache key together with the episodes."""
        blob = json.dumps({**what, "episodes": self.episodes, "eval_seed": self.eval_seed}, sort_keys=True)
        name = hashlib.sha256(blob.encode()).hexdigest()[:20]
        path = self.out / "profiles" / f"{name}.json"
        if path.exists():
            try:
                return Profile.from_json(read_json(path))
            except (GoalscopeError, KeyError, TypeError, ValueError):
                pass  # damaged: evaluated again below
        ma = self.ma(what.get("seed", self.cfg.seeds[0]))
        model = self._models.get(ma.arch)
        if model is None:
            model = self._models[ma.arch] = ma.build()
        model.load_state_dict(make_state())
        prof = evaluate(model, ma.env, ma.reward, self.episodes, self.eval_seed)
        atomic_write_bytes(path, json.dumps({**prof.to_json(), "what": what}).encode())
        self.evaluated += 1
        return prof

    def stage_profile(self, key: str, seed: int, fname: str = "profile.json") -> Profile:
        """A finished stage's own profile when it ran on these episodes; otherwise its checkpoint re-evaluated."""
        from goalscope.program.jobs import load_profile

        if self.episodes == self.cfg.evaluation.episodes:
            return load_profile(self.path, key, fname)
        if fname != "profile.json":
            raise GoalscopeError(f"{fname} exists only at the run's own episode count ({self.cfg.evaluation.episodes})")
        return self.profile({"stage": key, "seed": seed}, lambda: self.state(key))

    # --- jobs (retrains, new fine-tunes) through the run's job machinery

    def run_jobs(self, jobs: list[Job], workers: int = 1, desc: str = "edits") -> None:
        from goalscope.program.executors import LocalExecutor
        from goalscope.program.runner import RunLock, JobRunner

        todo = [j for j in jobs if (job_status(self.path, j.key) or {}).get("status") != "ok"]
        self.log(f"{desc}: {len(jobs)} jobs, {len(jobs) - len(todo)} already done")
        self.ok.update({j.key for j in jobs} - {j.key for j in todo})  # finished by an earlier call: used on a resume
        if not todo:
            return
        with RunLock(self.path, reentrant=True) as lock:  # held by run_edits for the whole call
            statuses = LocalExecutor(workers).run(JobRunner(str(self.path), lock.owner), todo, desc=desc)
        for st in statuses:
            if st["status"] == "ok":
                self.ok.add(st["key"])
            else:
                self.log(f"  job {st['label']} failed: {(st.get('error') or '').strip()[:200]}")

    def ev(self) -> dict:
        return {"episodes": self.cfg.evaluation.episodes, "seed": self.cfg.evaluation.seed}


def direction_seed(*parts) -> int:
    """A reproducible 60-bit seed from ``parts`` (random directions and random masks of the edits)."""
    return int(hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:15], 16)


def random_like(delta: dict, *parts) -> dict:
    """A Gaussian direction with the per-tensor norms of ``delta``, seeded by ``parts`` (reproducible)."""
    return sig.random_direction_like(delta, torch.Generator().manual_seed(direction_seed("edits", *parts)))


def add(ma: dict, *terms: tuple[float, dict]) -> dict:
    """MA + Σ coef·Δ over ``terms`` (float32 copies; ``ma`` is left as it is)."""
    out = {k: v.detach().float().clone() for k, v in ma.items()}
    for coef, d in terms:
        for k in out:
            out[k] += coef * d[k].float()
    return out


# ----------------------------------------------------------------------------------------------------------------
# Metrics of a profile (per episode; paired with other profiles on the same episodes)


def metrics(p: Profile, own: list[int], others: list[int], ra) -> dict[str, np.ndarray]:
    """Per episode: RB objects (mean over ``own``), specific lean (minus the mean over ``others``), RA return, all
    objects collected."""
    c = np.asarray(p.counts, dtype=np.float64)
    rb = c[:, own].mean(-1)
    base = c[:, others].mean(-1) if others else 0.0
    return {"rb_objects": rb, "specific_lean": rb - base, "ra_return": ra.score(p.counts, p.steps).astype(float),
            "all_objects": c.sum(-1)}


def seed_ci(per_seed) -> list[float]:
    """[mean, low, high]: the 95% Student t interval over per-seed values."""
    return [float(x) for x in t_interval(per_seed)]


def rounded(x, nd=4):
    """``x`` rounded to ``nd`` places for JSON; None when missing or not finite."""
    return None if x is None or not np.isfinite(x) else round(float(x), nd)


def mean_profile(profiles: list[Profile]) -> Profile:
    """The episode-wise mean of profiles on the same paired episodes (the random directions of one edit)."""
    return Profile(np.mean([p.counts for p in profiles], axis=0), np.mean([p.steps for p in profiles], axis=0))


# ----------------------------------------------------------------------------------------------------------------
# Records and JSON


def json_default(x):
    """``json.dumps(default=...)`` for numpy scalars and arrays."""
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(type(x).__name__)
