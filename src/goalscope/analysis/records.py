"""Tidy result records: one row per model x reward x seed x metric, saved as CSV.

CSV rather than Parquet keeps the dependency list short; every analysis tool reads it.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from goalscope.agents.checkpoints import atomic_write_bytes

COLUMNS = ["stage", "model", "reward", "seed", "metric", "value", "ci_low", "ci_high", "detail"]


def record(stage: str, model: str, reward: str, seed, metric: str, value: float,
           ci_low: float = math.nan, ci_high: float = math.nan, detail: str = "") -> dict:
    return {"stage": stage, "model": model, "reward": reward, "seed": "" if seed is None else seed, "metric": metric,
            "value": float(value), "ci_low": float(ci_low), "ci_high": float(ci_high), "detail": detail}


def write_records(rows: list[dict], path: Path) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_bytes(path, buf.getvalue().encode())


def read_records(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        for k in ("value", "ci_low", "ci_high"):
            r[k] = float(r[k]) if r[k] not in ("", None) else math.nan
    return rows
