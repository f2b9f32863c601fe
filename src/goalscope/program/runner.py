"""The experiment runner: an experiment config becomes waves of jobs, cached by key, then an analysis.

    wave 1  train     MA per seed (and MA' from another seed, if asked)
    wave 2  finetune  MB_i per seed and RB_i; controls: MA on RA for the same budget, MA on RA for the retrain budget
    wave 3  negate    MB*(alpha) = MA - alpha*Δ_i and the random-direction control, each retrained on RA
    then    analysis  update signals, negation effects with CIs, superposition heatmaps -> records.csv, heatmaps/

Jobs in a wave are independent and go to the executor together. Finished jobs are found by key and skipped, so a
killed run resumes where it stopped when the same command is run again.

May import: goalscope.errors, goalscope.inputs, goalscope.outputs, goalscope.program.config,
goalscope.program.executors, goalscope.program.jobs, goalscope.program.preflight.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from goalscope.outputs import atomic_write_bytes
from goalscope.program.config import ExperimentConfig, experiment_from_dict
from goalscope.errors import ConfigError, GoalscopeError
from goalscope.inputs import read_json
from goalscope.program.jobs import KINDS, Job, job_status, run_job
from goalscope.outputs import Lock, check_output_path, confine, remove_stale_tmp, remove_tree

EXPERIMENT_FILE = "experiment.json"
CONTROL_MODELS = ("control: MA on RA", "control: MA retrained")
OTHER_SEED_OFFSET = 1000


@dataclass
class Plan:
    """Every job of an experiment, and which role each plays (keys by seed, reward name, alpha)."""

    waves: list[list[Job]] = field(default_factory=list)
    ma: dict = field(default_factory=dict)  # seed -> key
    ma_other: dict = field(default_factory=dict)  # seed -> key of MA' (another init seed)
    mb: dict = field(default_factory=dict)  # (seed, rb) -> key
    control: dict = field(default_factory=dict)  # seed -> key: MA continued on RA for the fine-tune budget
    retrain_control: dict = field(default_factory=dict)  # seed -> key: MA retrained on RA for the retrain budget
    negated: dict = field(default_factory=dict)  # (seed, rb, alpha, "delta"|"random"|"random<j>") -> key
    # Further fine-tune seeds of the same MA (finetune.seeds_per_ma > 1), for within-MA stability only:
    mb_rep: dict = field(default_factory=dict)  # (seed, rb, r) -> key, r >= 1 (r = 0 is ``mb``)
    control_rep: dict = field(default_factory=dict)  # (seed, r) -> key, r >= 1 (r = 0 is ``control``)

    def jobs(self) -> list[Job]:
        return [j for wave in self.waves for j in wave]

    def models(self) -> list[tuple[str, str, int, str, str]]:
        """(group, model label, seed, job key, profile file) of every evaluated model, in display order."""
        out = [("MA", "MA", s, k, "profile.json") for s, k in self.ma.items()]
        out += [("MA'", "MA'", s, k, "profile.json") for s, k in self.ma_other.items()]
        out += [("MB", f"MB[{rb}]", s, k, "profile.json") for (s, rb), k in self.mb.items()]
        out += [("control", CONTROL_MODELS[0], s, k, "profile.json") for s, k in self.control.items()]
        out += [("control", CONTROL_MODELS[1], s, k, "profile.json") for s, k in self.retrain_control.items()]
        for (s, rb, a, d), k in self.negated.items():
            # Random directions after the first are labelled r1, r2, ... so each model label has one row per seed.
            name = f"MB*[{rb}] a={a:g}" if d == "delta" else f"random[{rb}] a={a:g}" + (d[6:] and f" r{d[6:]}")
            group = "MB*" if d == "delta" else "random"
            out += [(group, name, s, k, "profile.json"),
                    (f"{group} before retrain", f"{name} before retrain", s, k, "profile_before_retrain.json")]
        return out


FINETUNE_SEED_STRIDE = 7919  # fine-tune seed r of MA seed s is 1000 + s + r * stride: distinct for one MA


def check_finished(run_dir: Path, before: str) -> None:
    """ConfigError unless ``run_dir`` is a directory with the files of a finished run (experiment.json,
    summary.json, records.csv), saying what it is needed for (``before``: "steering", ...); reads none of them."""
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} does not exist; run `goalscope run EXPERIMENT --out {run_dir}` first")
    for name in (EXPERIMENT_FILE, "summary.json", "records.csv"):
        if not (run_dir / name).exists():
            raise ConfigError(f"{run_dir} has no {name}; finish the run with `goalscope run EXPERIMENT --out {run_dir}` "
                              f"before {before}")


def direction_seed(seed: int, rb: str, alpha: float, direction: str) -> int:
    """The generator seed of one random negation direction: a hash of everything that names it."""
    blob = f"{seed}|{rb}|{alpha!r}|{direction}".encode()
    return int(hashlib.sha256(blob).hexdigest()[:15], 16)


def plan_experiment(cfg: ExperimentConfig) -> Plan:
    """Every job of ``cfg`` in waves (train, finetune, negate), keyed by the hash of its inputs, with the role of
    each in the experiment."""
    plan = Plan()
    env, ra = cfg.env.to_json(), cfg.ra
    arch = {"arch": cfg.agent.arch, "arch_config": cfg.to_json()["agent"]["config"]}
    ev = {"episodes": cfg.evaluation.episodes, "seed": cfg.evaluation.seed}

    def ppo(steps: int) -> dict:
        return cfg.ppo_config(steps).to_json()

    # Only MAs planted by training have this (so every other run keeps its job keys).
    pretrain = {"pretrain": {"reward": cfg.pretrain.to_json(), "ppo": ppo(cfg.base.pretrain_steps)}} if cfg.pretrain else {}
    wave1, wave2, wave3 = [], [], []
    for s in cfg.seeds:
        ma = Job("train", {**arch, "env": env, "reward": ra.to_json(), "ppo": ppo(cfg.base.steps), "seed": s,
                           "evaluation": ev, **pretrain}, f"MA seed {s}")
        plan.ma[s] = ma.key
        wave1.append(ma)
        if cfg.controls.other_seed:
            other = Job("train", {**ma.spec, "seed": s + OTHER_SEED_OFFSET}, f"MA' seed {s + OTHER_SEED_OFFSET}")
            plan.ma_other[s] = other.key
            wave1.append(other)

        def fine(reward, steps, seed, label):
            return Job("finetune", {"parent": ma.key, "reward": reward.to_json(), "ppo": ppo(steps), "seed": seed,
                                    "evaluation": ev}, label, (ma.key,))

        for r in range(cfg.finetune.seeds_per_ma):
            # Fine-tune seed r of this MA; r = 0 keeps the seed (and so the job keys) of single-seed experiments.
            ft_seed, tag = 1000 + s + FINETUNE_SEED_STRIDE * r, f" ft{r}" if r else ""
            for rb in cfg.rbs():
                job = fine(rb, cfg.finetune.steps, ft_seed, f"MB {rb.name} seed {s}{tag}")
                if r == 0:
                    plan.mb[(s, rb.name)] = job.key
                else:
                    plan.mb_rep[(s, rb.name, r)] = job.key
                wave2.append(job)
            if cfg.controls.continue_ra:
                job = fine(ra, cfg.finetune.steps, ft_seed, f"control: MA on RA seed {s}{tag}")
                if r == 0:
                    plan.control[s] = job.key
                else:
                    plan.control_rep[(s, r)] = job.key
                wave2.append(job)
        if cfg.negate.enabled:
            job = fine(ra, cfg.negate.retrain_steps, 2000 + s, f"control: MA retrained seed {s}")
            plan.retrain_control[s] = job.key
            wave2.append(job)
            for rb in cfg.rbs():
                mb_key = plan.mb[(s, rb.name)]
                for alpha in cfg.negate.alphas:
                    n_random = cfg.negate.random_directions if cfg.negate.random_control else 0
                    for direction in ["delta", *(f"random{j or ''}" for j in range(n_random))]:
                        spec = {"ma": ma.key, "mb": mb_key, "alpha": alpha, "direction": direction[:6],
                                "ppo": ppo(cfg.negate.retrain_steps), "seed": 2000 + s, "evaluation": ev}
                        if direction != "delta":
                            # A fresh direction per (seed, RB, alpha, j): one direction reused for every RB and
                            # alpha would make the "random" controls one sample, not a control.
                            spec["direction_seed"] = direction_seed(s, rb.name, alpha, direction)
                        job = Job("negate", spec, f"MB* {rb.name} a={alpha:g} {direction} seed {s}", (ma.key, mb_key))
                        plan.negated[(s, rb.name, alpha, direction)] = job.key
                        wave3.append(job)
    plan.waves = [w for w in (wave1, wave2, wave3) if w]
    return plan


# ----------------------------------------------------------------------------------------------------------------
# Run directory: lock, config check, forced stages


def RunLock(run_dir: Path, reentrant: bool = False) -> Lock:  # noqa: N802 (reads as the class it was)
    """An exclusive lock on a run directory, so two runs cannot interleave their writes (``reentrant``: taken
    again by the analysis that already holds it, :func:`goalscope.outputs.analysing`)."""
    return Lock(Path(run_dir) / ".lock", reentrant=reentrant)


def _check_same_experiment(run_dir: Path, cfg: ExperimentConfig, reconfigure: bool) -> None:
    path = run_dir / EXPERIMENT_FILE
    if not path.exists():
        if run_dir.exists() and any(p for p in run_dir.iterdir() if p.name != ".lock"):
            raise ConfigError(f"{run_dir} exists and is not a goalscope run; choose another --out")
        return
    old = read_json(path, advice="it records the config this run was made with; restore it from a backup, or use a "
                                  "new --out", error=ConfigError)
    if not isinstance(old, dict):
        raise ConfigError(f"{path} is damaged (not a table); restore it from a backup, or use a new --out")
    new = cfg.to_json()
    try:  # a run made before a config field existed recorded no value for it: compare with the default filled in
        old = experiment_from_dict(old).to_json()
    except GoalscopeError:
        pass
    # Where the network runs is not what the experiment computes. Copies: cfg.to_json() shares cfg's own ppo dict.
    old, new = ({**d, "ppo": {k: v for k, v in d["ppo"].items() if k != "device"}}
                if isinstance(d.get("ppo"), dict) else d for d in (old, new))
    if old != new and not reconfigure:
        was, now = (d["ppo"].get("precision", "fp32") if isinstance(d.get("ppo"), dict) else None for d in (old, new))
        # ppo.precision = "auto" resolved otherwise on this machine: say so, and how to go on
        if None not in (was, now) and was != now and _without_precision(old) == _without_precision(new):
            emulated = " (emulated on this CPU: about half as fast)" if was == "bf16" else ""
            raise ConfigError(f"{run_dir} computed in {was} and ppo.precision resolves to {now} here; continue it in "
                              f"{was} with `--precision {was}`{emulated}, or use another --out")
        diff = next(k for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
        envs = [d.get("env") if isinstance(d.get("env"), dict) else {} for d in (old, new)]
        if diff == "env" and {**envs[0], "count": None} == {**envs[1], "count": None}:
            raise ConfigError(f"{run_dir} counted every occurrence of an event (env.count = "
                              f"{envs[0].get('count', 'every')!r}) and this file's env.count is "
                              f"{envs[1].get('count')!r} (the default for an event source since issue 38); continue "
                              f"the run with `count = \"{envs[0].get('count', 'every')}\"` under [env], or use another --out")
        raise ConfigError(f"{run_dir} was run with a different experiment ({diff!r} differs); use another --out, or "
                          "--reconfigure to reuse its finished stages with the new config")


def _without_precision(d: dict) -> dict:
    return {**d, "ppo": {k: v for k, v in d["ppo"].items() if k != "precision"}}


def _check_force(kind: str | None) -> None:
    if kind is not None and kind not in (*KINDS, "analysis", "all"):
        raise ConfigError(f"--force takes one of {', '.join((*KINDS, 'analysis', 'all'))}, got {kind!r}")


def _force(run_dir: Path, plan: Plan, kind: str) -> int:
    """Delete the finished jobs of ``kind`` and of every later kind (they were built on them)."""
    if kind == "analysis":
        return 0  # analysis always reruns
    doomed = KINDS if kind == "all" else KINDS[KINDS.index(kind):]
    n = 0
    for job in plan.jobs():
        if job.kind in doomed and (run_dir / "stages" / job.key).exists():
            remove_tree(run_dir / "stages" / job.key)
            n += 1
    return n


def run_stages(cfg: ExperimentConfig, run_dir: str | Path, *, analyse, executor=None, force: str | None = None,
               reconfigure: bool = False, log=print) -> dict:
    """Run (or resume) every stage of ``cfg`` in ``run_dir``, then ``analyse(cfg, plan, run_dir, log=log)`` under
    the run's lock; returns the summary. The analysis is passed in because it sits above the program in the stack
    (:func:`goalscope.analysis.effects.experiment.run_experiment` is the whole program with the analysis)."""
    from goalscope.program.executors import LocalExecutor

    run_dir = check_output_path(Path(run_dir), "run directory")
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"{run_dir} is a file, not a run directory")
    _check_force(force)  # before anything is written
    executor = executor or LocalExecutor(cfg.workers)
    _check_same_experiment(run_dir, cfg, reconfigure)
    plan = plan_experiment(cfg)
    pending = {j.kind for j in plan.jobs() if (job_status(run_dir, j.key) or {}).get("status") != "ok"}
    earlier = _earlier_walls(run_dir)
    if pending & {"train", "finetune"}:  # a finished run's re-analysis trains nothing: no rollout to pay for
        from goalscope.program.preflight import rare_event_warnings

        for line in rare_event_warnings(cfg):  # before any training: a run that cannot learn says so first
            log(line)
    timings = {}
    with confine(run_dir), RunLock(run_dir) as lock:
        for d in (run_dir, run_dir / "heatmaps", run_dir / "signals"):  # what a killed run left half-written
            remove_stale_tmp(d)
        atomic_write_bytes(run_dir / EXPERIMENT_FILE, json.dumps(cfg.to_json(), indent=2).encode())
        keys = {j.key for j in plan.jobs()}
        for leftover in (run_dir / "stages").glob(".partial-*") if (run_dir / "stages").exists() else []:
            if leftover.name[len(".partial-"):] not in keys:  # a killed job of another config: never resumed
                remove_tree(leftover)
        if force:
            log(f"--force {force}: removed {_force(run_dir, plan, force)} finished jobs")
            pending |= set(KINDS if force == "all" else KINDS[KINDS.index(force):] if force in KINDS else ())
        if getattr(executor, "in_order", False):
            timings.update(run_pipelined(run_dir, plan.waves, executor, lock.owner, log))
            _check_some_ma(run_dir, plan)
        else:  # an executor that may start jobs in any order (Ray): stage by stage
            for wave in plan.waves:
                kind = wave[0].kind
                start = time.perf_counter()
                run_wave(run_dir, wave, executor, lock.owner, log)
                timings[kind] = round(time.perf_counter() - start, 2)
                if kind == "train":
                    _check_some_ma(run_dir, plan)
        start = time.perf_counter()
        summary = analyse(cfg, plan, run_dir, log=log)
        timings["analysis"] = round(time.perf_counter() - start, 2)
        summary["job_wall_s"] = _job_times(run_dir, plan)
        for kind in set(timings) - pending - {"analysis"}:  # done in an earlier session: its wall, not this one's 0
            timings[kind] = earlier.get(kind, summary["job_wall_s"].get(kind, 0.0))
        summary["stage_wall_s"] = timings
        atomic_write_bytes(run_dir / "summary.json", json.dumps(summary, indent=2).encode())
    return summary


def _earlier_walls(run_dir: Path) -> dict:
    """Stage walls of the session that last finished this run (its summary.json); a run killed before one did
    has none, and its finished stages fall back to their jobs' summed compute time."""
    try:
        walls = json.loads((run_dir / "summary.json").read_text()).get("stage_wall_s")
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: v for k, v in walls.items() if isinstance(v, (int, float))} if isinstance(walls, dict) else {}


def _check_some_ma(run_dir: Path, plan: Plan) -> None:
    if not any((job_status(run_dir, k) or {}).get("status") == "ok" for k in plan.ma.values()):
        first = job_status(run_dir, next(iter(plan.ma.values())))
        raise GoalscopeError(f"every MA training job failed ({first['label']}: {first.get('error')}); "
                             "nothing builds on them")


def _pending(run_dir: Path, wave: list[Job], log) -> list[Job]:
    todo = [j for j in wave if (job_status(run_dir, j.key) or {}).get("status") != "ok"]
    log(f"stage {wave[0].kind}: {len(wave)} jobs, {len(wave) - len(todo)} already done")
    return todo


def _log_failures(run_dir: Path, statuses: list[dict], log) -> None:
    skipped = sum(bool(st.get("skipped")) for st in statuses)
    if skipped:
        log(f"  {skipped} jobs not run: a job they read failed (listed above); the next run retries them")
    for st in statuses:
        if st["status"] != "ok" and not st.get("skipped"):
            first = (st.get("error") or "").strip().splitlines()[:1] or ["no error message"]
            log(f"  job {st['label']} failed: {first[0]}  (details: {Path(run_dir) / 'stages' / st['key'] / 'done.json'})")


def run_wave(run_dir: Path, wave: list[Job], executor, owner: str, log=print) -> list[dict]:
    """Run the jobs of ``wave`` (one kind) not yet finished in ``run_dir`` through ``executor``, as the holder
    ``owner`` of the run's lock; one line per failed job with the path of its full record. Their statuses."""
    statuses = executor.run(JobRunner(str(run_dir), owner), _pending(run_dir, wave, log), desc=wave[0].kind)
    _log_failures(run_dir, statuses, log)
    return statuses


def _wait_for(run_dir: Path, keys, graph: dict[str, tuple[str, ...]]) -> dict | None:
    """Block until every job of ``keys`` has finished or will not run; the status of the first that failed (None
    if all are ok). A job of ``graph`` whose own inputs failed is never run (and writes nothing), so it is resolved
    through them instead of waited for."""
    for key in keys:
        while (status := job_status(run_dir, key)) is None:
            upstream = _wait_for(run_dir, graph.get(key, ()), graph)
            if upstream is not None:
                return upstream
            time.sleep(0.1)
        if status["status"] != "ok":
            return status
    return None


def run_pipelined(run_dir: Path, waves: list[list[Job]], executor, owner: str, log=print) -> dict[str, float]:
    """Every wave's unfinished jobs in one call of an executor that starts items in order (``in_order``), each job
    waiting only for the jobs it reads: a seed's fine-tunes start as soon as its MA is done, instead of when the
    last MA is (three MAs on two workers used to leave one idle for a whole MA). Returns wall seconds per kind, from
    the previous kind's last job to this kind's last job (they add up to the whole)."""
    todo = [j for wave in waves for j in _pending(run_dir, wave, log)]
    for j in todo:  # a failed attempt's status must not answer for its retry to the jobs waiting on it
        if job_status(run_dir, j.key) is not None:
            remove_tree(run_dir / "stages" / j.key)
    start = time.time()
    statuses = executor.run(JobRunner(str(run_dir), owner, graph={j.key: j.deps for j in todo}), todo, desc="jobs")
    _log_failures(run_dir, statuses, log)
    timings, last = {}, start
    for wave in waves:
        kind = wave[0].kind
        end = max((st["finished_at"] for st in statuses if st.get("kind") == kind), default=last)
        timings[kind] = round(max(end - last, 0.0), 2)
        last = max(last, end)
    return timings


class JobRunner:
    """A picklable ``job -> status`` for executors; ``owner`` is the run's lock, which a finished job must still
    see held before it puts its result in place (a worker orphaned by a killed run must not write). With ``graph``
    (key -> the keys it reads, for the jobs given together to an executor that starts items in order), a job first
    waits until what it reads has finished; if any of it failed, the job is not run and nothing is written."""

    def __init__(self, run_dir: str, owner: str | None = None, graph: dict[str, tuple[str, ...]] | None = None):
        self.run_dir = run_dir
        self.owner = owner
        self.graph = graph

    def __call__(self, job: Job) -> dict:
        if self.graph is not None:
            failed = _wait_for(Path(self.run_dir), job.deps, self.graph)
            if failed is not None:  # the next run retries it after what it reads
                return {"key": job.key, "kind": job.kind, "label": job.label, "status": "failed", "skipped": True,
                        "error": f"not run: {failed['label']} failed", "finished_at": time.time()}
        return {**run_job(job, self.run_dir, lock_owner=self.owner), "finished_at": time.time()}


def _job_times(run_dir: Path, plan: Plan) -> dict:
    """Compute time per kind summed over jobs (what the work costs, independent of parallelism)."""
    out: dict = {}
    for job in plan.jobs():
        st = job_status(run_dir, job.key)
        if st:
            out[job.kind] = round(out.get(job.kind, 0.0) + st.get("wall_s", 0.0), 2)
    return out
