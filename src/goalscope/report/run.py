"""The Python API for notebooks: a finished run as one object, its pieces by role.

    import goalscope
    run = goalscope.load_run("runs/demo")
    run.summary["competence"]                 # how good MA and the MBs are, first
    run.records                               # every metric, a pandas DataFrame (seed as int)
    run.models                                # a DataFrame: role, RB, seed, stage key, finished?
    ma = run.checkpoint("MA", seed=0)         # a goalscope Checkpoint; ma.build() is the nn.Module
    mb = run.checkpoint("MB", seed=0, rb="collect:1")
    delta = run.delta(seed=0, rb="collect:1")         # MB - MA, {parameter name: tensor}
    heat = run.heatmap("ties")                # seed mean; run.heatmap("ties", seed=1) for one seed
    run.scorecard                             # validate's results, once `goalscope validate` has run

This is the one loader of a run directory: :func:`read_run` gives the report's :class:`Run` (every stage with its
role in the experiment), :func:`load_run` the notebook's :class:`RunView` over it, and the figure functions of
:mod:`goalscope.report` take either, so the notebook, the report and the CLI always agree on which stage is which
model. May import: goalscope.analysis, goalscope.program and below.
"""

from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch

from goalscope.errors import ConfigError, GoalscopeError, import_failure
from goalscope.inputs import check_type, read_json

__all__ = ["ROLES", "SCORECARD", "Run", "read_run", "check_finished", "check_summary", "read_scorecard",
           "roles_from_stages", "as_run", "RunView", "load_run"]

ROLES = ("MA", "MA'", "MB", "control", "retrain_control", "MB*")
SCORECARD = "scorecard.json"


@dataclass
class Run:
    """Everything the report reads from a run directory, with each stage given its role in the experiment."""

    path: Path
    cfg: object  # ExperimentConfig
    plan: object  # runner.Plan
    experiment: dict
    summary: dict
    records: list[dict]
    status: dict[str, dict]  # key -> done.json of every finished stage of the plan
    ok: set[str] = field(default_factory=set)
    _checkpoints: dict = field(default_factory=dict)

    def checkpoint(self, key: str):
        """The stage's checkpoint, loaded once (loading builds the model, which is not free)."""
        from goalscope.agents.checkpoints import load_checkpoint

        if key not in self._checkpoints:
            self._checkpoints[key] = load_checkpoint(self.stage(key))
        return self._checkpoints[key]

    @property
    def ra(self):
        return self.cfg.ra

    @property
    def rbs(self) -> list:
        return self.cfg.rbs()

    def stage(self, key: str) -> Path:
        return self.path / "stages" / key

    def type_name(self, k: int) -> str:
        """Event type ``k`` by the env's own name for it (``env.event_types``), else ``type k``."""
        names = getattr(self.cfg.env, "event_names", None)
        return names[k] if names and k < len(names) else f"type {k}"

    @property
    def event_word(self) -> str:
        """What the env's events are: objects collected in the maze, else the env's own word (``env.event_word``,
        e.g. Crafter's "achievements") or "events"."""
        if getattr(self.cfg.env, "family", "object_maze") == "object_maze":
            return "objects"
        return getattr(self.cfg.env, "event_word", "") or "events"

    def type_label(self, k: int) -> str:
        tags = []
        if k in set(self.ra.rewarded_types().tolist()):
            tags.append("RA")
        tags += [rb.name for rb in self.rbs if len(rb.rewarded_types()) == 1 and rb.rewarded_types()[0] == k]
        return self.type_name(k) + (f" ({', '.join(tags)})" if tags else "")

    def models(self) -> list[tuple[str, str, int, str, str]]:
        """(group, model label, seed, job key, profile file) of every model, in display order, finished ones only."""
        return [m for m in self.plan.models() if m[3] in self.ok]


def read_run(run_dir: str | Path) -> Run:
    """The run in ``run_dir`` with each stage given its role (what the report and :class:`RunView` read)."""
    from goalscope.program.config import experiment_from_dict
    from goalscope.analysis.records import read_records
    from goalscope.program.runner import EXPERIMENT_FILE, plan_experiment

    run_dir = Path(run_dir)
    check_finished(run_dir)
    rewrite = f"rewrite it with `goalscope run EXPERIMENT --out {run_dir}` (finished stages are reused)"
    experiment = read_json(run_dir / EXPERIMENT_FILE, advice="restore it from a backup", error=ConfigError)
    if not isinstance(experiment, dict):
        raise ConfigError(f"{run_dir / EXPERIMENT_FILE} is damaged (not a table); restore it from a backup")
    summary = check_summary(read_json(run_dir / "summary.json", advice=rewrite), run_dir / "summary.json", rewrite)
    cfg = experiment_from_dict(experiment)
    found = {}
    for done in sorted((run_dir / "stages").glob("*/done.json")) if (run_dir / "stages").is_dir() else []:
        try:
            status = read_json(done)
        except GoalscopeError:
            continue  # damaged: that stage counts as not finished
        if isinstance(status, dict):
            found[done.parent.name] = {**status, "_mtime": done.stat().st_mtime}
    plan = plan_experiment(cfg)
    if not all(j.key in found for j in plan.jobs()):
        # The run's stage keys are hashes of job specs written by the goalscope that ran it; a later version (a new
        # config field with a default, say) computes other keys. Find each stage's role from its done.json instead.
        plan = roles_from_stages(cfg, found)
    keys = {k for d in (plan.ma, plan.ma_other, plan.mb, plan.control, plan.retrain_control, plan.negated,
                        plan.mb_rep, plan.control_rep) for k in d.values()}
    status = {k: found[k] for k in keys if k in found}
    ok = {k for k, st in status.items() if st.get("status") == "ok"}
    return Run(run_dir, cfg, plan, experiment, summary, read_records(run_dir / "records.csv"), status, ok)


def check_finished(run_dir: Path) -> None:
    """ConfigError unless ``run_dir`` holds the files of a finished run (reads none of them); UnsafePathError when
    a symbolic link is planted anywhere inside it (nothing is read through one)."""
    from goalscope.confinement import refuse_links
    from goalscope.program.runner import check_finished as check

    check(run_dir, "writing its report")
    refuse_links(run_dir)


# The types of summary.json's fields that the report and `goalscope results` read (a field may be absent).
SUMMARY_TYPES = {"experiment": str, "ra": str, "rbs": list, "seeds": list, "competence": dict, "cosine": dict,
                 "negation": list, "heatmaps": dict, "heatmap_errors": dict, "failed_jobs": list, "stage_wall_s": dict,
                 "job_wall_s": dict}
SUMMARY_ITEM_TYPES = {"competence": dict, "negation": dict, "heatmaps": dict}  # the type of each entry


def check_summary(summary, path: Path, advice: str) -> dict:
    """``summary`` if its fields have the types the readers expect; one-line GoalscopeError naming the field."""
    if not isinstance(summary, dict):
        raise GoalscopeError(f"{path} is damaged (not a table); {advice}")
    for key, kind in SUMMARY_TYPES.items():
        value = summary.get(key)
        if value is None:
            continue
        if not isinstance(value, kind):
            raise GoalscopeError(f"{path} is damaged: {key!r} is a {type(value).__name__}, not a "
                                 f"{kind.__name__}; {advice}")
        item = SUMMARY_ITEM_TYPES.get(key)
        if item is not None:
            items = value.values() if isinstance(value, dict) else value
            if not all(isinstance(v, item) for v in items):
                raise GoalscopeError(f"{path} is damaged: an entry of {key!r} is not a {item.__name__}; {advice}")
    return summary


# The types of scorecard.json's fields that the report and the API read (a field may be absent).
# A part validate could not compute (localisation without a planted objective, say) is a sentence saying why.
SCORECARD_TYPES = {"verdicts": dict, "graft": dict, "localisation": (dict, str), "held_out_curve": (dict, str),
                   "families": dict, "localisation_verdicts": dict}


def read_scorecard(run_dir: Path) -> dict | None:
    """``RUN/scorecard.json`` (written by ``goalscope validate``), bounded and type-checked, or None before
    validation has run. A damaged one is a one-line GoalscopeError naming it and ``goalscope validate``, which
    rewrites it (never summary.json, which it does not come from)."""
    path, advice = Path(run_dir) / SCORECARD, f"rewrite it with `goalscope validate {run_dir}`"
    if path.is_symlink():
        raise GoalscopeError(f"{path} is a symbolic link; goalscope never reads through one: remove it and {advice}")
    if not path.exists():
        return None
    card = read_json(path, advice=advice)
    if not isinstance(card, dict):
        raise GoalscopeError(f"{path} is damaged (not a table); {advice}")
    for key, kind in SCORECARD_TYPES.items():
        value = card.get(key)
        if value is not None and not isinstance(value, kind):
            raise GoalscopeError(f"{path} is damaged: {key!r} is a {type(value).__name__}, not a "
                                 f"{getattr(kind, '__name__', 'dict')}; {advice}")
    return card


def roles_from_stages(cfg, found: dict[str, dict]):
    """A ``Plan`` (role -> stage key) rebuilt from the stages' own done.json (kind, label, spec).

    MA: a train job with one of the config's seeds (MA': seed + OTHER_SEED_OFFSET). Fine-tunes hang off an MA by their
    ``parent`` key: an RB's reward makes an MB, RA's reward a control (the retrain control is labelled so). Negations
    name their MA and MB. Stages that fit no role of this config are left out; of two candidates the newer wins.
    """
    from goalscope.program.runner import OTHER_SEED_OFFSET, Plan, direction_seed

    plan = Plan()
    rbs = {rb.name for rb in cfg.rbs()}
    alphas = {float(a) for a in cfg.negate.alphas}
    order = sorted(found, key=lambda k: found[k].get("_mtime", 0.0))
    for key in order:
        st = found[key]
        if st.get("kind") != "train":
            continue
        seed = st.get("spec", {}).get("seed")
        if seed in cfg.seeds:
            plan.ma[seed] = key
        elif isinstance(seed, int) and seed - OTHER_SEED_OFFSET in cfg.seeds:
            plan.ma_other[seed - OTHER_SEED_OFFSET] = key
    seed_of = {k: s for s, k in plan.ma.items()}
    for key in order:
        st = found[key]
        spec = st.get("spec", {})
        if st.get("kind") != "finetune" or spec.get("parent") not in seed_of:
            continue
        s, reward = seed_of[spec["parent"]], spec.get("reward", {}).get("name")
        label = str(st.get("label", ""))
        rep = int(label.rsplit(" ft", 1)[1]) if " ft" in label and label.rsplit(" ft", 1)[1].isdigit() else 0
        if reward in rbs and not label.startswith("control"):
            if rep:
                plan.mb_rep[(s, reward, rep)] = key
            else:
                plan.mb[(s, reward)] = key
        elif reward == cfg.ra.name:
            if rep:
                plan.control_rep[(s, rep)] = key
            else:
                (plan.retrain_control if "retrain" in label else plan.control)[s] = key
    rb_of = {k: rb for (s, rb), k in plan.mb.items()}
    for key in order:
        st = found[key]
        spec = st.get("spec", {})
        if st.get("kind") != "negate" or spec.get("ma") not in seed_of or spec.get("mb") not in rb_of:
            continue
        alpha = float(spec.get("alpha", math.nan))
        direction = spec.get("direction", "delta")
        if direction == "random" and "direction_seed" in spec:  # which of the fresh random directions this is
            s, rb = seed_of[spec["ma"]], rb_of[spec["mb"]]
            direction = next((d for d in (f"random{j or ''}" for j in range(64))
                              if direction_seed(s, rb, alpha, d) == spec["direction_seed"]), direction)
        if alpha in alphas:
            plan.negated[(seed_of[spec["ma"]], rb_of[spec["mb"]], alpha, direction)] = key
    return plan


def as_run(run) -> Run:
    """The :class:`Run` of a Run or of a :class:`RunView` (what ``goalscope.load_run`` returns)."""
    return run._run if isinstance(run, RunView) else run


class RunView:
    """A finished run directory, read lazily: constructing one only checks that the directory holds a finished run
    (experiment.json, summary.json and records.csv exist); the config, summary and roles are read on first use of
    any of them, records, checkpoints and heatmaps when asked for. So a run whose env id names a module
    (``module:Env-v0``) can be opened before that module is trusted; the first read needs it trusted
    (:func:`load_run`'s ``trust_modules``) and otherwise raises the ConfigError that says how."""

    def __init__(self, path: str | Path):
        self._path = Path(path)
        check_finished(self._path)

    @cached_property
    def _run(self) -> Run:
        return read_run(self._path)

    @property
    def path(self) -> Path:
        """The run directory (as given to :func:`load_run`)."""
        return self._path

    @property
    def cfg(self):
        """The run's :class:`~goalscope.program.config.ExperimentConfig`, rebuilt from its experiment.json: RA
        (``cfg.ra``), the RBs (``cfg.rbs()``), the seeds, and every stage's settings as run."""
        return self._run.cfg

    @property
    def summary(self) -> dict:
        """summary.json as a dict: the run's headline results (``competence``, ``cosine``, ``negation`` verdicts,
        ``heatmaps`` statistics, stage wall times, failed jobs), as ``goalscope results`` prints them."""
        return self._run.summary

    def __repr__(self) -> str:
        try:
            cfg = self.cfg
        except GoalscopeError as e:  # a repr never raises: say why the run cannot be read yet
            return f"<goalscope run at {self.path}, not readable yet: {e}>"
        return (f"<goalscope run {cfg.name!r} at {self.path}: RA {cfg.ra.name}, "
                f"RBs {', '.join(r.name for r in cfg.rbs())}, seeds {cfg.seeds}>")

    @cached_property
    def records(self):
        """Every metric of ``records.csv`` as a DataFrame (``seed`` an integer, NaN where a row has none)."""
        pd = _pandas()
        frame = pd.DataFrame(self._run.records)
        frame["seed"] = pd.to_numeric(frame["seed"], errors="coerce").astype("Int64")
        return frame

    @cached_property
    def models(self):
        """One row per model of the experiment: role, rb, alpha, direction, seed, stage key, finished."""
        pd = _pandas()
        p = self._run.plan
        rows = [("MA", None, None, None, s, k) for s, k in p.ma.items()]
        rows += [("MA'", None, None, None, s, k) for s, k in p.ma_other.items()]
        rows += [("MB", rb, None, None, s, k) for (s, rb), k in p.mb.items()]
        rows += [("control", None, None, None, s, k) for s, k in p.control.items()]
        rows += [("retrain_control", None, None, None, s, k) for s, k in p.retrain_control.items()]
        rows += [("MB*", rb, a, d, s, k) for (s, rb, a, d), k in p.negated.items()]
        return pd.DataFrame([(*r, r[-1] in self._run.ok) for r in rows],
                            columns=["role", "rb", "alpha", "direction", "seed", "key", "finished"])

    def stage_key(self, role: str, seed: int, rb: str | None = None, alpha: float | None = None,
                  direction: str = "delta") -> str:
        """The stage key (the directory name under ``RUN/stages/``) of one model: ``role`` is one of
        :data:`ROLES`; an MB needs ``rb``, an MB* ``rb``, ``alpha`` and ``direction`` (``"delta"``, or
        ``"random"``, ``"random1"``... for the random-direction controls). ConfigError naming what the run has
        when it has no such model."""
        check_type(seed, "seed", int)
        check_type(rb, "rb", (str, type(None)))
        check_type(alpha, "alpha", (int, float, type(None)))
        check_type(direction, "direction", str)
        p = self._run.plan
        table = {"MA": (p.ma, seed), "MA'": (p.ma_other, seed), "control": (p.control, seed),
                 "retrain_control": (p.retrain_control, seed), "MB": (p.mb, (seed, rb)),
                 "MB*": (p.negated, (seed, rb, alpha, direction))}
        if role not in table:
            raise ConfigError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        mapping, key = table[role]
        if key not in mapping:
            raise ConfigError(f"this run has no {role} for {key!r} (seeds {self.cfg.seeds}, "
                              f"RBs {[r.name for r in self.cfg.rbs()]})")
        return mapping[key]

    def checkpoint(self, role: str = "MA", seed: int | None = None, rb: str | None = None,
                   alpha: float | None = None, direction: str = "delta"):
        """The checkpoint of one model (loaded once and cached)."""
        key = self.stage_key(role, self.cfg.seeds[0] if seed is None else seed, rb, alpha, direction)
        if key not in self._run.ok:
            raise GoalscopeError(f"{role} {rb or ''} seed {seed} did not finish; see {self.path / 'stages' / key}")
        return self._run.checkpoint(key)

    def delta(self, seed: int | None = None, rb: str | None = None) -> dict[str, torch.Tensor]:
        """This run's Δ = MB − MA for ``rb`` (or the RA control's drift when ``rb`` is None) from the checkpoints of
        MA seed ``seed`` (default: the first seed), as {parameter name: tensor}. For two checkpoints of your own,
        :func:`goalscope.update_signal` (``update_signal(ma.state_dict, mb.state_dict)``) computes the same."""
        from goalscope.signals.delta import update_signal

        ma = self.checkpoint("MA", seed)
        other = self.checkpoint("MB", seed, rb) if rb is not None else self.checkpoint("control", seed)
        return update_signal(ma.state_dict, other.state_dict)

    def update_signal(self, seed: int | None = None, rb: str | None = None) -> dict[str, torch.Tensor]:
        """Deprecated name of :meth:`delta` (it shared its name with :func:`goalscope.update_signal`, which takes
        two state dicts)."""
        warnings.warn("RunView.update_signal(seed=, rb=) is renamed RunView.delta(seed=, rb=); "
                      "goalscope.update_signal(ma, mb) is the function of two state dicts", DeprecationWarning,
                      stacklevel=2)
        return self.delta(seed, rb)

    def heatmap(self, method: str, seed: int | None = None) -> dict[str, torch.Tensor]:
        """An aggregator's heatmap: the seed mean, or one seed's."""
        from goalscope.inputs import read_safetensors

        check_type(seed, "seed", (int, type(None)))
        if not isinstance(method, str) or not method or "/" in method or "\\" in method or method[0] == ".":
            raise ConfigError(f"method must be an aggregator's name such as 'ties', got {method!r}")
        path = self.path / "heatmaps" / f"{method}.safetensors"
        if not path.exists():
            have = sorted(p.stem for p in (self.path / "heatmaps").glob("*.safetensors"))
            raise ConfigError(f"no heatmap {method!r} in {self.path / 'heatmaps'} (have: {', '.join(have)})")
        prefix = "mean/" if seed is None else f"seed{seed}/"
        data = read_safetensors(path, "recompute the heatmaps with `goalscope run EXPERIMENT --out RUN --force analysis`")
        heat = {k[len(prefix):]: v for k, v in data.items() if k.startswith(prefix)}
        if not heat:
            raise ConfigError(f"{path} has no entries for {'the seed mean' if seed is None else f'seed {seed}'}")
        return heat

    @property
    def scorecard(self) -> dict | None:
        """``scorecard.json`` of ``goalscope validate``, or None before it has run (GoalscopeError naming it when
        it is damaged)."""
        return read_scorecard(self.path)


def load_run(path: str | Path, trust_modules: list[str] | tuple[str, ...] = ()) -> RunView:
    """A finished run directory (``goalscope run EXPERIMENT --out PATH``) for use from Python, read lazily (see
    :class:`RunView`): a missing directory or an unfinished run is a ConfigError here, anything else on first use.

    A run whose env id is ``module:Env-v0`` names code; a run directory is data, so that module is imported (to
    register its env, event source or observation adapter) only once it is trusted: ``trust_modules=["module"]``
    (as ``goalscope --trust-module module`` does on the command line). Trusting it later works too:
    ``goalscope.envs.events.trust_modules(["module"])`` before the run's first read."""
    if not isinstance(path, (str, os.PathLike)):
        raise ConfigError(f"load_run: path must be a run directory (a str or Path), got {path!r}")
    if isinstance(trust_modules, str):
        trust_modules = [trust_modules]
    if not isinstance(trust_modules, (list, tuple)) or not all(isinstance(m, str) for m in trust_modules):
        raise ConfigError(f"load_run: trust_modules must be a list of module names, got {trust_modules!r}")
    if trust_modules:
        from goalscope.envs.events import trust_modules as trust

        trust(list(trust_modules))
    return RunView(path)


def _pandas():
    try:
        import pandas as pd
    except ImportError as e:
        raise GoalscopeError(import_failure("pandas", "tables in the Python API are pandas DataFrames",
                                            "pip install pandas", e)) from None
    return pd
