"""Figures of negate-and-retrain: MB* = MA − αΔ retrained on RA, minus each control, per RB and α.

May import: goalscope.report.run, goalscope.report.common.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from goalscope.report.common import err_bars, new_figure, write_csv
from goalscope.report.run import as_run

NEG_METRICS = [("rb_objects", "RB objects per episode\n(MB* − control)"),
               ("specific_lean", "specific lean: RB − other non-RA types\n(objects per episode, MB* − control)"),
               ("ra_return", "RA return per episode\n(MB* − control)")]
NEG_CONTROLS = [("retrained_MA", "vs MA retrained alike", "#1f77b4", "o"),
                ("random_direction", "vs random direction, same size", "#ff7f0e", "s")]


def negation_rows(run) -> list[dict]:
    """The negation records of a run, one row per (MB*, control, metric)."""
    rows = []
    for r in run.records:
        if r["stage"] != "negation":
            continue
        for ctrl, *_ in NEG_CONTROLS:
            if r["metric"].endswith("_vs_" + ctrl):
                rows.append({"model": r["model"], "rb": r["reward"], "alpha": _alpha(r["model"]), "control": ctrl,
                             "metric": r["metric"][: -len("_vs_" + ctrl)], "value": r["value"], "ci_low": r["ci_low"],
                             "ci_high": r["ci_high"], "detail": r["detail"]})
    return rows


def _alpha(model: str) -> float:
    try:
        return float(model.rsplit("a=", 1)[1])
    except (IndexError, ValueError):
        return math.nan


def fig_negation(run, out: Path | None = None, rows: list[dict] | None = None):
    """MB* minus each control per RB and α, with CIs (``rows`` from :func:`negation_rows`, computed when not
    given); None without negation results. With ``out``, writes negation.csv there."""
    run = as_run(run)
    rows = negation_rows(run) if rows is None else rows
    from matplotlib.ticker import MaxNLocator

    if not rows:
        return None
    write_csv(out, "negation.csv", rows)
    entries = list(dict.fromkeys((r["rb"], r["alpha"]) for r in rows))
    table = {(r["rb"], r["alpha"], r["control"], r["metric"]): r for r in rows}
    controls = [c for c in NEG_CONTROLS if any(r["control"] == c[0] for r in rows)]
    fig = new_figure(13.5, 0.42 * len(entries) + 2.2)
    axes = fig.subplots(1, len(NEG_METRICS), sharey=True)
    y = np.arange(len(entries))
    for ax, (metric, xlabel) in zip(axes, NEG_METRICS):
        for j, (ctrl, label, color, marker) in enumerate(controls):
            off = (j - (len(controls) - 1) / 2) * 0.22
            pts = [table.get((rb, a, ctrl, metric)) for rb, a in entries]
            m = np.array([p["value"] if p else np.nan for p in pts])
            lo = np.array([p["ci_low"] if p else np.nan for p in pts])
            hi = np.array([p["ci_high"] if p else np.nan for p in pts])
            ax.errorbar(m, y + off, xerr=err_bars(m, lo, hi), fmt=marker, color=color, ms=4.5, capsize=2, elinewidth=1.2,
                        label=label)
        ax.axvline(0, color="k", lw=1)
        ax.xaxis.set_major_locator(MaxNLocator(5))
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        for i in range(1, len(entries)):
            if entries[i][0] != entries[i - 1][0]:
                ax.axhline(i - 0.5, color="0.7", lw=0.6)
    axes[0].set_yticks(y, [f"{rb}  α={a:g}" for rb, a in entries], fontsize=8)
    axes[0].set_ylabel("RB negated, step size α")
    axes[0].invert_yaxis()
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize=9, frameon=False)
    fig.suptitle("Negate and retrain: MB* = MA − αΔ retrained on RA, minus each control\nmean and 95% hierarchical "
                 "bootstrap CI (left of 0: less than the control)", fontsize=11)
    return fig
