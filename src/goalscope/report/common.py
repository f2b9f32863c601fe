"""Small helpers shared by the figure modules, the sections and the page: a Figure on the Agg canvas, the save
helper that writes PNG/SVG for the page, the :class:`Page` the sections are written into, CSV writing, colours,
number and HTML formatting.

May import: numpy, matplotlib (inside the functions), goalscope.outputs (every file is written through its
atomic, link-refusing writer).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from pathlib import Path

import numpy as np

from goalscope.outputs import atomic_write_bytes

DPI = 110


def new_figure(w: float, h: float):
    """An empty constrained-layout Figure on the Agg canvas (no pyplot state: safe in workers and notebooks)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig, out: Path, name: str) -> bytes:
    """Write ``name``.png and ``name``.svg of ``fig`` in ``out``; return the PNG bytes for embedding in the page."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    png = buf.getvalue()
    atomic_write_bytes(out / f"{name}.png", png)
    svg = io.BytesIO()
    fig.savefig(svg, format="svg", facecolor="white")
    atomic_write_bytes(out / f"{name}.svg", svg.getvalue())
    return png


def write_csv(out: Path | None, name: str, rows: list[dict], columns: list[str] | None = None) -> None:
    """The tidy data behind a figure as ``out/name`` (floats to 6 significant digits); nothing when ``out`` is None."""
    if out is None:
        return
    path = out / name
    columns = columns or (list(rows[0]) if rows else ["empty"])
    f = io.StringIO(newline="")
    w = csv.DictWriter(f, columns, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    atomic_write_bytes(path, f.getvalue().encode())


def type_colors(k: int) -> list:
    """One colour per object type (tab10, tab20 beyond ten types)."""
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(i) for i in range(k)]


def pct(x) -> str:
    """A fraction as a percentage, "n/a" when missing or not finite."""
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.1%}"


def ci_text(m, lo, hi, fmt="+.3f") -> str:
    """``m [lo, hi]`` (just ``m`` without finite bounds, "n/a" without a finite ``m``)."""
    if m is None or not math.isfinite(m):
        return "n/a"
    if lo is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{m:{fmt}}"
    return f"{m:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def err_bars(m, lo, hi) -> np.ndarray:
    """Error-bar lengths below and above ``m`` (never negative; NaN bounds draw no bar)."""
    m, lo, hi = (np.asarray(v, dtype=float) for v in (m, lo, hi))
    return np.nan_to_num(np.clip(np.stack([m - lo, hi - m]), 0.0, None), nan=0.0)


def esc(x) -> str:
    """HTML-escaped text of ``x``."""
    return html.escape(str(x))


def html_table(header: list[str], rows: list[list], num_cols: set[int] = frozenset()) -> str:
    """An HTML table; cells are inserted as given (escape them first), ``num_cols`` right-aligned."""
    out = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td class='num'>{c}</td>" if i in num_cols else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>")
    return "".join(out) + "</table>"


def num(v) -> str:
    """A value for a table cell: floats to 4 significant digits, "—" for None, "n/a" for NaN."""
    if v is None:
        return "—"
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.4g}"
    return esc(v)


class Page:
    """The page being written in ``out``: HTML parts in order, and the figures saved beside it (the frame that
    :mod:`goalscope.report.sections` writes into and :mod:`goalscope.report.page` assembles)."""

    def __init__(self, out: Path):
        self.out = out
        self.parts: list[str] = []
        self.figures: list[str] = []  # names of figures written

    def add(self, s: str) -> None:
        """Append raw HTML."""
        self.parts.append(s)

    def section(self, anchor: str, title: str, question: str) -> None:
        """A section heading and the question it answers."""
        self.add(f"<h2 id='{anchor}'>{esc(title)}</h2><p class='q'>{esc(question)}</p>")

    def figure(self, name: str, fig, caption: str, csvs: list[str] = ()) -> None:
        """Save ``fig`` as name.png/.svg and embed the PNG with its caption and links to its files."""
        png = save_figure(fig, self.out, name)
        self.figures.append(name)
        b64 = base64.b64encode(png).decode()
        links = [f"<a href='{name}.png'>PNG</a>", f"<a href='{name}.svg'>SVG</a>"]
        links += [f"<a href='{c}'>{esc(c)}</a>" for c in csvs if (self.out / c).exists()]
        self.add(f"<figure id='fig-{name}'><img src='data:image/png;base64,{b64}' alt='{esc(caption)}'>"
                 f"<figcaption>{esc(caption)} &middot; {' &middot; '.join(links)}</figcaption></figure>")


def pca_note(run) -> dict | None:
    """summary.json's ``pca_removed_component`` (with its ``note``, a sentence naming PCA) when PCA was among the
    run's aggregators, else None: the analysis measures PCA's removed component whenever a seed has two RBs, but
    the page speaks of it only for a run that ran PCA."""
    pca = run.summary.get("pca_removed_component") or {}
    if "pca" not in run.cfg.superpose.methods or not pca.get("note"):
        return None
    note = str(pca["note"])
    return {**pca, "note": note if "PCA" in note else f"PCA's removed component: {note}"}
