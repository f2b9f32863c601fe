"""The Python API for notebooks: a finished run as one object, its pieces by role.

    import goalscope
    run = goalscope.load_run("runs/demo")
    run.summary["competence"]                 # how good MA and the MBs are, first
    run.records                               # every metric, a pandas DataFrame (seed as int)
    run.models                                # a DataFrame: role, RB, seed, stage key, finished?
    ma = run.checkpoint("MA", seed=0)         # a goalscope Checkpoint; ma.build() is the nn.Module
    mb = run.checkpoint("MB", seed=0, rb="collect:1")
    delta = run.update_signal(seed=0, rb="collect:1")   # MB - MA, {parameter name: tensor}
    heat = run.heatmap("ties")                # seed mean; run.heatmap("ties", seed=1) for one seed
    run.scorecard                             # validate's results, once `goalscope validate` has run

The run's roles come from the report's loader (:func:`goalscope.report.load_run`), so the notebook, the report and
the CLI always agree on which stage is which model.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch

from goalscope.errors import ConfigError, GoalscopeError

ROLES = ("MA", "MA'", "MB", "control", "retrain_control", "MB*")


class RunView:
    """A finished run directory, read lazily: nothing is loaded until asked for."""

    def __init__(self, path: str | Path):
        from goalscope.report.page import load_run as _load

        self._run = _load(path)
        self.path = self._run.path
        self.cfg = self._run.cfg
        self.summary = self._run.summary

    def __repr__(self) -> str:
        return (f"<goalscope run {self.cfg.name!r} at {self.path}: RA {self.cfg.ra.name}, "
                f"RBs {', '.join(r.name for r in self.cfg.rbs())}, seeds {self.cfg.seeds}>")

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

    def update_signal(self, seed: int | None = None, rb: str | None = None) -> dict[str, torch.Tensor]:
        """Δ = MB − MA for ``rb`` (or the RA control's drift when ``rb`` is None)."""
        from goalscope.signals.delta import update_signal

        ma = self.checkpoint("MA", seed)
        other = self.checkpoint("MB", seed, rb) if rb is not None else self.checkpoint("control", seed)
        return update_signal(ma.state_dict, other.state_dict)

    def heatmap(self, method: str, seed: int | None = None) -> dict[str, torch.Tensor]:
        """An aggregator's heatmap: the seed mean, or one seed's."""
        from safetensors.torch import load_file

        path = self.path / "heatmaps" / f"{method}.safetensors"
        if not path.exists():
            have = sorted(p.stem for p in (self.path / "heatmaps").glob("*.safetensors"))
            raise ConfigError(f"no heatmap {method!r} in {self.path / 'heatmaps'} (have: {', '.join(have)})")
        prefix = "mean/" if seed is None else f"seed{seed}/"
        heat = {k[len(prefix):]: v for k, v in load_file(path).items() if k.startswith(prefix)}
        if not heat:
            raise ConfigError(f"{path} has no entries for {'the seed mean' if seed is None else f'seed {seed}'}")
        return heat

    @property
    def scorecard(self) -> dict | None:
        """``scorecard.json`` of ``goalscope validate``, or None before it has run."""
        from goalscope.inputs import read_json

        path = self.path / "scorecard.json"
        return read_json(path) if path.exists() else None


def load_run(path: str | Path) -> RunView:
    """A finished run directory (``goalscope run EXPERIMENT --out PATH``) for use from Python."""
    return RunView(path)


def _pandas():
    try:
        import pandas as pd
    except ImportError:
        raise GoalscopeError("tables in the Python API are pandas DataFrames: pip install pandas") from None
    return pd
