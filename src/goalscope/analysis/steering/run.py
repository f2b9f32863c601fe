"""Steering vectors from the experiment's own MA/MB pairs, side by side with weight-space edits of the same Δ_i.

``goalscope steer RUN`` works on a finished run, per MA seed (the independent unit):

1. An observation set: rollouts of MA, every MB_i and the RA-continuation control on episodes *disjoint* from the
   evaluation episodes (seed ``eval_seed + 7919``). Every model is read on these identical observations.
2. Per hook site (:func:`goalscope.agents.hooks.default_sites`), the steering vector ``v_i = mean(act_MB_i − act_MA)``
   (full activation shape: a conv site's vector is a (C, H, W) map, like the cheese vector), and the control's
   ``v_ctrl = mean(act_control − act_MA)``.
3. Interventions, each evaluated as a behaviour profile on the run's paired evaluation episodes (same seed as every
   other profile of the run), at scales c = +1 and −1:

   - activation, ``Δ_i``: MA + c·v_i at one site (a fixed vector; also c = ±4, a dose); nulls: a random Gaussian
     vector with ‖·‖ = ‖v_i‖ (also at ±4) and v_ctrl rescaled to ‖v_i‖;
   - activation, ``patch``: MA's site moved by c times MB_i's *own* difference on each observation,
     ``out + c·(act_MB(obs) − out)`` (c = +1 is activation patching; it carries everything MB changed upstream of
     the site, and its mean shift is v_i); null: the same with the control (``control patch``);
   - weight, ``Δ_i``: MA + c·Δ_i on the site's own parameters (site ``all``: the whole network, so c = +1 is MB_i
     and c = −1 the negation MA − Δ_i before retraining); nulls: a random direction with Δ_i's per-tensor norms,
     Δ_ctrl rescaled to them per tensor.

4. Where: per (site, RB) the Spearman correlation over the site's units of |v_i| per channel with ‖Δ_i‖ of the
   module's output rows (units line up: same MA), beside the same with the control drift.

Shard diagnostics of the same models (:mod:`goalscope.analysis.steering.shards`, :mod:`goalscope.analysis.steering.shards_distance`)
are computed in the same pass. Per-seed results are written atomically to ``RUN/steering/seed<S>.json`` under a key
of everything they depend on, so a rerun (or a resumed, killed run) reuses finished seeds. The summary (t intervals
over MA seeds, Holm within each family) goes to ``RUN/steering/summary.json``, tidy rows to
``RUN/steering/records.csv`` and, as stages ``steering`` and ``shards``, into ``RUN/records.csv``.

This module owns the orchestration: the tasks per seed, their cache, and the files written. The per-seed work is in
:mod:`goalscope.analysis.steering.vectors`, the summary in :mod:`goalscope.analysis.steering.summary`, the figure in
:mod:`goalscope.report.figures_steering` (passed in as ``figure``: the analysis does not draw) and the command in
:mod:`goalscope.cli.steer`.

May import: goalscope.analysis (records, steering.vectors, steering.summary, steering.shards,
steering.shards_distance),
goalscope.program, goalscope.outputs, goalscope.errors and below.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from pathlib import Path

from goalscope.errors import ConfigError, GoalscopeError
from goalscope.inputs import read_json
from goalscope.outputs import atomic_write_bytes
from goalscope.program.jobs import job_status
from goalscope.analysis.records import json_default
from goalscope.analysis.steering.summary import summarise, summarise_object_vector, summary_markdown
from goalscope.analysis.steering.vectors import OBS_SEED_OFFSET, object_vector_seed, steer_seed

VERSION = 1  # bump when steer_seed computes something new: cached seeds under another version are redone
STEER_DIR = "steering"


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------------
# The whole run


def _run_config(run_dir: Path, plan=None):
    """The run's experiment config and plan (role -> stage key); ``plan`` as given, or planned from the config."""
    from goalscope.program.config import experiment_from_dict
    from goalscope.program.runner import EXPERIMENT_FILE, check_finished, plan_experiment

    check_finished(run_dir, "steering")
    try:
        cfg = experiment_from_dict(json.loads((run_dir / EXPERIMENT_FILE).read_text()))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{run_dir}: corrupt JSON: {e}") from None
    return cfg, (plan_experiment(cfg) if plan is None else plan)


def steer_tasks(run_dir: Path, episodes: int | None = None, obs_episodes: int = 32, sites=None, seeds=None,
                max_obs: int = 8192, threads: int = 1, plan=None):
    """The run's config and one task per MA seed (its stage keys, settings and cache key); every stage it needs
    must be finished. ``plan``: the run's roles (default: planned from its experiment.json)."""
    cfg, plan = _run_config(run_dir, plan)
    if not cfg.controls.continue_ra:
        raise ConfigError(f"{run_dir}: steering compares with the RA-continuation control; this run has none "
                          "(controls.continue_ra = false)")
    seeds = list(cfg.seeds if seeds is None else seeds)
    tasks = []
    for s in seeds:
        if s not in plan.ma:
            raise ConfigError(f"{run_dir} has no MA seed {s} (seeds {cfg.seeds})")
        # A plan read from a damaged run can lack a role (its done.json unreadable): say which, not KeyError.
        missing = [role for role, there in (("the RA control", s in plan.control),
                                            *((f"MB {r.name}", (s, r.name) in plan.mb) for r in cfg.rbs())) if not there]
        if missing:
            raise GoalscopeError(f"{run_dir}: {missing[0]} of seed {s} is missing or its done.json is damaged; run "
                                 "`goalscope run` on the experiment again to rebuild it")
        keys = {"ma": plan.ma[s], "control": plan.control[s], "mb": {r.name: plan.mb[(s, r.name)] for r in cfg.rbs()}}
        for k in [keys["ma"], keys["control"], *keys["mb"].values()]:
            if (job_status(run_dir, k) or {}).get("status") != "ok":
                raise GoalscopeError(f"{run_dir}: stage {k} (seed {s}) is not finished; run `goalscope run` first")
        task = {"run_dir": str(run_dir), "seed": s, **keys, "episodes": episodes or cfg.evaluation.episodes,
                "eval_seed": cfg.evaluation.seed, "obs_episodes": obs_episodes, "max_obs": max_obs,
                "sites": list(sites) if sites else None, "threads": threads}
        task["key"] = _key({**{k: v for k, v in task.items() if k not in ("run_dir", "threads")}, "version": VERSION})
        tasks.append(task)
    return cfg, tasks


def run_steering(run_dir: str | Path, *, episodes: int | None = None, obs_episodes: int = 32, sites=None,
                 seeds=None, force: bool = False, log=print, threads: int = 1, plan=None,
                 figure: Callable[[dict], object] | None = None) -> dict:
    """Steer (cached per seed), summarise, write ``RUN/steering/`` and the ``steering``/``shards`` rows of
    ``RUN/records.csv``. Returns the summary.

    ``plan``: the run's roles (role -> stage key; default: planned from its experiment.json; ``goalscope steer``
    passes the one :func:`goalscope.report.run.read_run` finds). ``figure``: a function of the summary returning a
    matplotlib Figure, saved as ``RUN/steering/steering.png`` (``goalscope steer`` passes
    :func:`goalscope.report.figures_steering.fig_steering`; without it no figure is written)."""
    from goalscope.outputs import analysing

    args = (Path(run_dir), episodes, obs_episodes, sites, seeds)
    with analysing(run_dir):
        try:
            return _steer_once(*args, force, log, threads, plan, figure)
        except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
            if force:
                raise
            # A cached seed file that parses but is damaged inside (a hand edit, an old format): treated as missing.
            log(f"steer: a cached result in {Path(run_dir) / STEER_DIR} is damaged ({type(e).__name__}: {e}); "
                "recomputing every seed")
            return _steer_once(*args, True, log, threads, plan, figure)


def _steer_once(run_dir: Path, episodes, obs_episodes, sites, seeds, force, log, threads, plan, figure) -> dict:
    from goalscope.analysis.records import merge_records, write_records
    from goalscope.outputs import make_dir, remove_stale_tmp

    from goalscope.inputs import read_safetensors

    _cfg, tasks = steer_tasks(run_dir, episodes, obs_episodes, sites, seeds, threads=threads, plan=plan)
    for path in sorted((run_dir / "heatmaps").glob("*.safetensors")):  # read at the end: checked before the work
        read_safetensors(path, "recompute the heatmaps with `goalscope run EXPERIMENT --out RUN --force analysis`")
    out = run_dir / STEER_DIR
    make_dir(out)
    remove_stale_tmp(out)
    per_seed = [_cached(out / f"seed{t['seed']}.json", t, steer_seed, force, log, f"steer seed {t['seed']}")
                for t in tasks]
    object_seeds = [_cached(out / f"object_vector_seed{t['seed']}.json", t, object_vector_seed, force, log,
                            f"object vector seed {t['seed']}") for t in tasks]
    from goalscope.analysis.steering import shards, shards_distance
    from goalscope.analysis.steering.shards import summarise_shards

    summary, rows = summarise(per_seed)
    shard_summary, shard_rows = summarise_shards(per_seed)
    summary["shards"] = shard_summary
    from goalscope.analysis.records import record as _rec

    shard_summary["heatmaps"] = shards.heatmap_concentration(
        run_dir, [t["seed"] for t in tasks], shard_rows, lambda *a, **k: _rec(*[math.nan if x is None else x for x in a], **k))
    if all(r.get("tracking") for r in per_seed):
        from goalscope.analysis.records import record as _record

        summary["tracking"] = shards_distance.summarise_tracking(per_seed, rows, lambda *a, **k: _record(
            *[math.nan if x is None else x for x in a], **k))
    summary["settings"] = {k: tasks[0][k] for k in ("episodes", "eval_seed", "obs_episodes", "max_obs", "sites")}
    summary["settings"]["obs_seed"] = tasks[0]["eval_seed"] + OBS_SEED_OFFSET
    summary["settings"]["observations_per_seed"] = [r["observations"] for r in per_seed]
    rows += shard_rows
    summary["object_vector"] = summarise_object_vector(object_seeds, rows)
    write_records(rows, out / "records.csv")
    # Into the run's records.csv as stages "steering" and "shards" (replacing earlier ones): one table of results.
    merge_records(run_dir / "records.csv", rows, ("steering", "shards"))
    atomic_write_bytes(out / "summary.json", json.dumps(summary, indent=1, default=json_default).encode())
    try:
        fig = figure(summary) if figure is not None else None
        if fig is not None:
            import io
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=110)
            atomic_write_bytes(out / "steering.png", buf.getvalue())
    except ImportError:
        log("steer: matplotlib is not installed; no figure")
    atomic_write_bytes(out / "summary.md", summary_markdown(summary).encode())
    return summary


def _cached(path: Path, task: dict, compute, force: bool, log, what: str):
    """``compute(task)``'s result, from ``path`` when it holds one for the same task key (a damaged file is redone)."""
    if path.exists() and not force:
        try:
            cached = read_json(path)
            digest = cached.get("digest")
            if cached.get("key") == task["key"] and (digest is None or digest == _digest(cached["result"])):
                log(f"{what}: reused {path}")
                return cached["result"]
        except (GoalscopeError, KeyError, AttributeError, TypeError, ValueError):
            pass  # damaged: computed again
    log(f"{what}: running")
    res = json.loads(json.dumps(compute(task, log=log), default=json_default))  # as a reuse would read it
    atomic_write_bytes(path, json.dumps({"key": task["key"], "digest": _digest(res), "result": res}).encode())
    return res


def _digest(result) -> str:
    """A checksum of a cached result, so a file damaged inside (yet still JSON) is recomputed, not trusted."""
    return hashlib.sha256(json.dumps(result, sort_keys=True).encode()).hexdigest()
