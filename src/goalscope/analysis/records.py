"""Tidy result records: one row per model x reward x seed x metric, saved as CSV.

CSV rather than Parquet keeps the dependency list short; every analysis tool reads it. ``RUN/records.csv`` is one
table for the whole run: each command that adds results (the run's analysis, ``edits``, ``decode``, ``steer``)
replaces only the rows of its own stages, so rerunning one never drops another's.

May import: goalscope.outputs.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from goalscope.outputs import atomic_write_bytes

COLUMNS = ["stage", "model", "reward", "seed", "metric", "value", "ci_low", "ci_high", "detail"]


def record(stage: str, model: str, reward: str, seed, metric: str, value: float,
           ci_low: float = math.nan, ci_high: float = math.nan, detail: str = "") -> dict:
    """One tidy row of records.csv (NaN bounds where there is no interval; ``seed`` empty for pooled rows)."""
    return {"stage": stage, "model": model, "reward": reward, "seed": "" if seed is None else seed, "metric": metric,
            "value": float(value), "ci_low": float(ci_low), "ci_high": float(ci_high), "detail": detail}


def write_records(rows: list[dict], path: Path) -> None:
    """Write ``rows`` as CSV to ``path`` atomically (floats to 6 significant digits)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_bytes(path, buf.getvalue().encode())


def merge_records(path: Path, rows: list[dict], stages) -> None:
    """Write ``rows`` into the records file ``path``, replacing its rows of ``stages`` and keeping every other row
    (what another command wrote there), atomically."""
    stages = {stages} if isinstance(stages, str) else set(stages)
    kept = [{k: r.get(k, "") for k in COLUMNS} for r in (read_records(path) if path.exists() else [])
            if r["stage"] not in stages]
    write_records(kept + rows, path)


def read_records(path: Path) -> list[dict]:
    """The rows of a records CSV, with ``value``, ``ci_low`` and ``ci_high`` as floats (NaN when empty)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("value", "ci_low", "ci_high"):
            r[k] = float(r[k]) if r[k] not in ("", None) else math.nan
    return rows
