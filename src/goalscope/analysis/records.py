"""Tidy result records: one row per model x reward x seed x metric, saved as CSV.

CSV rather than Parquet keeps the dependency list short; every analysis tool reads it. ``RUN/records.csv`` is one
table for the whole run: each command that adds results (the run's analysis, ``edits``, ``decode``, ``steer``)
replaces only the rows of its own stages, so rerunning one never drops another's.

Reading is strict: a records file that is not UTF-8 text, is empty, lacks a column, ends mid-line (a killed or
truncated copy), has a row of the wrong width or a non-numeric ``value``/``ci_low``/``ci_high`` is one
:class:`~goalscope.errors.GoalscopeError` naming the file and the line, never a traceback or a silently short table.

May import: goalscope.errors, goalscope.outputs.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from goalscope.errors import GoalscopeError
from goalscope.outputs import atomic_write_bytes

MAX_RECORDS_BYTES = 1 << 30  # a run's records are a few MB; a file larger than this is not one

COLUMNS = ["stage", "model", "reward", "seed", "metric", "value", "ci_low", "ci_high", "detail"]


def json_default(o):
    """``json.dumps(default=...)`` for numpy and torch numbers and arrays: anything with ``.tolist()``."""
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(type(o).__name__)


def record(stage: str, model: str, reward: str, seed, metric: str, value: float,
           ci_low: float = math.nan, ci_high: float = math.nan, detail: str = "") -> dict:
    """One tidy row of records.csv (NaN bounds where there is no interval; ``seed`` empty for pooled rows)."""
    def num(x) -> float:  # None (no interval, e.g. a one-seed run) is NaN, like an empty cell
        return math.nan if x is None else float(x)

    return {"stage": stage, "model": model, "reward": reward, "seed": "" if seed is None else seed, "metric": metric,
            "value": num(value), "ci_low": num(ci_low), "ci_high": num(ci_high), "detail": detail}


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
    """The rows of a records CSV, with ``value``, ``ci_low`` and ``ci_high`` as floats (NaN when empty); a damaged
    file is one GoalscopeError naming it and the line."""
    path = Path(path)
    redo = "it is damaged; rerun the command that wrote it (finished stages are reused)"
    try:
        if path.is_dir():
            raise GoalscopeError(f"{path} is a directory where a records file should be")
        size = path.stat().st_size
        if size > MAX_RECORDS_BYTES:
            raise GoalscopeError(f"{path} is {size:,} bytes, more than the {MAX_RECORDS_BYTES:,} goalscope reads")
        raw = path.read_bytes()
    except OSError as e:
        raise GoalscopeError(f"{path} cannot be read ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise GoalscopeError(f"{path} is not UTF-8 text (byte {e.start}); {redo}") from None
    if not text.strip():
        raise GoalscopeError(f"{path} is empty (a killed or truncated write); {redo}")
    if not text.endswith("\n"):
        raise GoalscopeError(f"{path} ends mid-line (truncated); {redo}")
    try:
        reader = csv.reader(io.StringIO(text, newline=""))
        header = next(reader)
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            raise GoalscopeError(f"{path}: the header lacks the column {missing[0]!r} (not a goalscope records file, "
                                 f"or its first line is damaged); {redo}")
        rows = []
        for cells in reader:
            n = reader.line_num
            if len(cells) != len(header):
                raise GoalscopeError(f"{path}, line {n}: {len(cells)} fields where the header has {len(header)}; {redo}")
            r = dict(zip(header, cells))
            for k in ("value", "ci_low", "ci_high"):
                try:
                    r[k] = float(r[k]) if r[k] != "" else math.nan
                except ValueError:
                    raise GoalscopeError(f"{path}, line {n}: {k} {r[k][:40]!r} is not a number; {redo}") from None
            rows.append(r)
    except csv.Error as e:
        raise GoalscopeError(f"{path} is not a readable CSV ({e}); {redo}") from None
    return rows
