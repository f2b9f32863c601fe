"""The results of a sweep of MA's training (:mod:`goalscope.program.sweep`): run it, then one row per variant with
the fraction of the oracle per seed, its mean with a 95% t interval over seeds, steps and compute time per seed,
written as ``sweep.json`` and ``sweep.md`` in the sweep directory. ``goalscope sweep FILE --out DIR`` runs this.

May import: goalscope.analysis.stats, goalscope.outputs, goalscope.program.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from goalscope.analysis.stats import t_interval
from goalscope.outputs import atomic_write_bytes, confine
from goalscope.program.sweep import Variant, load_sweep, run_train_jobs, seed_results, select


def run_sweep(path: str | Path, out: str | Path, *, executor=None, only: list[str] | None = None,
              device: str | None = None, precision: str | None = None) -> list[dict]:
    """Run every (variant, seed) train job not yet finished in ``out``; return and write the table rows.
    ``device`` and ``precision`` override the file's ``ppo.device`` and ``ppo.precision``."""
    _, variants = load_sweep(path, device=device, precision=precision)
    variants = select(variants, only)
    out = Path(out)
    run_train_jobs(variants, out, executor)
    rows = table(variants, out)
    with confine(out):  # never through a link planted in the sweep directory
        atomic_write_bytes(out / "sweep.json", json.dumps(rows, indent=2).encode())
        atomic_write_bytes(out / "sweep.md", markdown(rows).encode())
    return rows


def table(variants: list[Variant], out: Path) -> list[dict]:
    """One row per variant: fraction of the oracle per seed, mean with a 95% t interval, steps, compute time."""
    rows = []
    for v in variants:
        cfg = v.config
        fracs, walls, failed = seed_results(v, out)
        vals = list(fracs.values())
        m, lo, hi = t_interval(vals) if len(vals) > 1 else (vals[0] if vals else float("nan"), float("nan"), float("nan"))
        rows.append({"variant": v.name, "overrides": v.overrides, "env": f"{cfg.env.size}x{cfg.env.size}",
                     "steps": cfg.base.steps, "seeds": sorted(fracs), "fraction_of_oracle": fracs,
                     "mean": m, "ci95": [lo, hi], "failed_seeds": failed,
                     "wall_s_per_seed": float(np.mean(walls)) if walls else float("nan")})
    return rows


def markdown(rows: list[dict]) -> str:
    """The table rows as a Markdown table (the last column is wall minutes per seed)."""
    lines = ["| variant | env | steps | seeds | fraction of oracle (per seed) | mean [95% t CI] | wall min / seed |",
             "|---|---|---:|---:|---|---|---:|"]
    for r in rows:
        per = ", ".join(f"{r['fraction_of_oracle'][s]:.3f}" for s in r["seeds"]) or "–"
        ci = f" [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]" if np.isfinite(r["ci95"][0]) else ""
        mean = f"{r['mean']:.3f}{ci}" if np.isfinite(r["mean"]) else "–"
        wall = f"{r['wall_s_per_seed'] / 60:.1f}" if np.isfinite(r["wall_s_per_seed"]) else "–"
        fail = f" ({len(r['failed_seeds'])} failed)" if r["failed_seeds"] else ""
        lines.append(f"| {r['variant']} | {r['env']} | {r['steps']:,} | {len(r['seeds'])}{fail} | {per} | {mean} | {wall} |")
    return "\n".join(lines) + "\n"
