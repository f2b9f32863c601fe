"""Hyper-parameter sweeps of MA's training, run as ordinary train jobs through goalscope's executors.

A sweep file is an experiment file (any section, validated as usual) plus a ``[sweep]`` table::

    [sweep]
    seeds = [0]                       # MA seeds per variant (the experiment's ``seeds`` are ignored)
    [[sweep.variant]]                 # named variants: dotted keys over the base experiment
    name = "deep4"
    "agent.config.channels" = [16, 16, 16, 16]
    [sweep.grid]                      # optional: the product of these values, applied on top of every variant
    "ppo.gamma" = [0.95, 0.99]

Every (variant, seed) is one ``train`` job (the same job ``goalscope run`` makes for MA, so the same key: a
sweep directory caches finished work, and adding a seed or a variant reruns nothing else). Results are read back
from each job's evaluation profile (``evaluation.episodes`` paired episodes) as a fraction of the oracle; the table
per variant, with a t interval over seeds, is :mod:`goalscope.analysis.effects.sweep_table` (``goalscope sweep``).

May import: goalscope.errors, goalscope.inputs, goalscope.outputs, goalscope.program.{config,executors,jobs,runner},
goalscope.rl.evaluation.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass
from pathlib import Path

from goalscope.errors import ConfigError
from goalscope.inputs import read_toml
from goalscope.program.config import ExperimentConfig, experiment_from_dict, file_defaults

SWEEP_KEYS = ("seeds", "variant", "grid")


@dataclass(frozen=True)
class Variant:
    """One named point of a sweep: its overrides (dotted key -> value) and the validated experiment they make."""
    name: str
    overrides: dict  # dotted key -> value
    config: ExperimentConfig


def _set_dotted(data: dict, key: str, value) -> None:
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"sweep: bad key {key!r}")
    node = data
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"sweep: {key!r} goes through {p!r}, which is not a table")
    node[parts[-1]] = value


def _label(value) -> str:
    return "x".join(map(str, value)) if isinstance(value, list) else f"{value:g}" if isinstance(value, float) else str(value)


def expand(data: dict) -> tuple[list[int], list[Variant]]:
    """(seeds, variants) of a parsed sweep file; every variant is a validated experiment config."""
    data = copy.deepcopy(data)
    sweep = data.pop("sweep", None)
    if not isinstance(sweep, dict):
        raise ConfigError("a sweep file needs a [sweep] table")
    unknown = set(sweep) - set(SWEEP_KEYS)
    if unknown:
        raise ConfigError(f"unknown key 'sweep.{sorted(unknown)[0]}' (known: {', '.join(SWEEP_KEYS)})")
    seeds = sweep.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds)):
        raise ConfigError("sweep.seeds must be a non-empty list of distinct non-negative integers")
    variants = sweep.get("variant", [{"name": "base"}])
    if not isinstance(variants, list) or not variants:
        raise ConfigError("sweep.variant must be a non-empty array of tables ([[sweep.variant]])")
    grid = sweep.get("grid", {})
    if not isinstance(grid, dict) or not all(isinstance(v, list) and v for v in grid.values()):
        raise ConfigError("sweep.grid must map dotted keys to non-empty lists of values")
    out: list[Variant] = []
    for v in variants:
        if not isinstance(v, dict) or not isinstance(v.get("name"), str) or not v["name"]:
            raise ConfigError("every [[sweep.variant]] needs a name")
        base_over = {k: x for k, x in v.items() if k != "name"}
        for combo in itertools.product(*grid.values()):
            over = {**base_over, **dict(zip(grid, combo))}
            name = v["name"] + "".join(f" {k.rsplit('.', 1)[-1]}={_label(x)}" for k, x in zip(grid, combo))
            d = copy.deepcopy(data)
            for key, value in over.items():
                _set_dotted(d, key, value)
            d["seeds"] = seeds
            try:
                cfg = experiment_from_dict(d)
            except ConfigError as e:
                raise ConfigError(f"sweep variant {name!r}: {e}") from None
            out.append(Variant(name, over, cfg))
    names = [v.name for v in out]
    if len(set(names)) != len(names):
        raise ConfigError(f"sweep: two variants are both named {next(n for n in names if names.count(n) > 1)!r}")
    return seeds, out


def load_sweep(path: str | Path, device: str | None = None, precision: str | None = None) -> tuple[list[int], list[Variant]]:
    """(seeds, variants) of the sweep file at ``path`` (see :func:`expand`); ``device`` and ``precision`` override
    the file's ``ppo.device`` and ``ppo.precision``."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"sweep file {str(path)!r} does not exist")
    data = file_defaults(read_toml(path))
    for key, value in (("device", device), ("precision", precision)):
        if value is not None:
            data.setdefault("ppo", {})[key] = value
    return expand(data)


def select(variants: list[Variant], only: list[str] | None) -> list[Variant]:
    """The variants named in ``only``, in the order asked for (all of them without ``only``); an unknown name is an
    error."""
    if not only:
        return variants
    missing = set(only) - {v.name for v in variants}
    if missing:
        raise ConfigError(f"no sweep variant named {sorted(missing)[0]!r}")
    by_name = {v.name: v for v in variants}
    return [by_name[n] for n in dict.fromkeys(only)]  # in the order asked for


def train_jobs(variant: Variant) -> list:
    """The MA train jobs of a variant, exactly as ``goalscope run`` plans them (so their keys match)."""
    from goalscope.program.runner import plan_experiment

    return [j for j in plan_experiment(variant.config).jobs() if j.kind == "train"]


# What a sweep directory holds; anything else in --out is the user's, and a sweep never writes beside it.
SWEEP_ENTRIES = {"stages", "sweep.json", "sweep.md", ".lock", ".goalscope"}


def check_sweep_dir(out: str | Path) -> Path:
    """``out`` as a sweep directory: new, empty, or an earlier sweep's; anything else is refused with one line."""
    from goalscope.outputs import check_output_path

    out = check_output_path(Path(out), "sweep directory")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; --out takes a sweep directory")
    stranger = sorted(n for n in (p.name for p in out.iterdir()) if n not in SWEEP_ENTRIES
                      and not n.startswith(".lock-")) if out.is_dir() else []
    if stranger:
        raise ConfigError(f"{out / stranger[0]} is not part of a goalscope sweep; choose a new --out (a sweep "
                          "directory holds only stages/, sweep.json and sweep.md)")
    return out


def run_train_jobs(variants: list[Variant], out: str | Path, executor=None) -> list[dict]:
    """Run every (variant, seed) train job not yet finished in the sweep directory ``out``; their statuses."""
    from goalscope.program.executors import LocalExecutor
    from goalscope.program.runner import JobRunner, RunLock

    from goalscope.outputs import confine, make_dir

    out = check_sweep_dir(out)
    jobs = [j for v in variants for j in train_jobs(v)]
    executor = executor or LocalExecutor(1)
    # Locked like a run: two sweeps into one directory never train the same job twice, and a worker orphaned by a
    # killed sweep does not put a result in place. Confined: nothing is written through a link planted in it.
    with confine(out):
        make_dir(out / "stages")
        with RunLock(out) as lock:
            return executor.run(JobRunner(str(out), lock.owner), jobs, "sweep")


def seed_results(variant: Variant, out: Path) -> tuple[dict, list, list]:
    """What has finished of a variant in ``out``: (fraction of the oracle by seed, wall seconds of each finished
    job, seeds whose job failed). Unfinished seeds are left out."""
    from goalscope.program.jobs import job_status, load_profile
    from goalscope.rl.evaluation import oracle_profile

    cfg = variant.config
    oracle = oracle_profile(cfg.env, cfg.ra, cfg.evaluation.episodes, cfg.evaluation.seed)
    o = float(oracle.returns(cfg.ra).mean()) if oracle is not None else float("nan")
    fracs, walls, failed = {}, [], []
    for job in train_jobs(variant):
        st = job_status(out, job.key)
        if st is None:
            continue
        if st["status"] != "ok":
            failed.append(job.spec["seed"])
            continue
        r = load_profile(out, job.key).returns(cfg.ra).mean()
        fracs[job.spec["seed"]] = float(r / o) if abs(o) > 1e-9 else float("nan")
        walls.append(st.get("wall_s", float("nan")))
    return fracs, walls, failed
