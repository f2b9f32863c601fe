"""Figures of ``goalscope steer``: activation vs weight interventions per site, and MB's RB preference by distance.

:func:`fig_steering` draws the summary of :func:`goalscope.analysis.steering.run.run_steering` (``RUN/steering/
summary.json``); ``goalscope steer`` saves it as ``RUN/steering/steering.png`` and the report's ``steering`` section
(:mod:`goalscope.report.sections`) embeds it.

May import: goalscope.report.common, goalscope.analysis.
"""

from __future__ import annotations

import numpy as np

from goalscope.report.common import new_figure

COLORS = {"Δ_i": "#d62728", "random": "#7f7f7f", "control": "#1f77b4", "patch": "#9467bd", "control patch": "#17becf"}
MARKERS = {"activation": "o", "weight": "s"}


def _err(ci):
    m, lo, hi = (np.nan if x is None else x for x in ci)
    return m, [[max(m - lo, 0) if np.isfinite(lo) else 0], [max(hi - m, 0) if np.isfinite(hi) else 0]]


def fig_steering(s: dict):
    """Δ specific lean vs MA per site for activation and weight interventions (c = +1, −1) and, when measured, MB's
    RB preference by distance; a matplotlib Figure."""
    sites = [*s["sites"], "all"]
    dist = s.get("shards", {}).get("distance")
    ncols = 3 if isinstance(dist, dict) else 2
    fig = new_figure(5.2 * ncols, 4.2)
    axes = fig.subplots(1, ncols)
    eff = {(e["space"], e["site"], e["vector"], e["scale"]): e for e in s["effects"]}
    for ax, scale in zip(axes[:2], (1.0, -1.0)):
        for vi, vector in enumerate(("Δ_i", "random", "control", "patch", "control patch")):
            for si, space in enumerate(("activation", "weight")):
                for x, site in enumerate(sites):
                    e = eff.get((space, site, vector, scale))
                    if e is None:
                        continue
                    m, err = _err(e["d_lean"])
                    ax.errorbar(x + (vi - 2) * 0.07 + (si - 0.5) * 0.4, m, yerr=err, fmt=MARKERS[space],
                                color=COLORS[vector], ms=4.5, capsize=2,
                                label=f"{space}: {vector}" if x == 0 or (space, sites[0], vector, scale) not in eff else None)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(sites)), sites, fontsize=8)
        ax.set_xlabel("site (all = whole network, weight space only)")
        ax.set_ylabel("Δ specific lean vs MA (objects / episode)")
        ax.set_title(f"MA {'+' if scale > 0 else '−'} intervention (c = {scale:+g})", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    uniq = dict(zip(labels, handles))
    axes[0].legend(uniq.values(), uniq.keys(), fontsize=7, loc="best")
    if ncols == 3:
        ax = axes[2]
        st = dist["step_toward"]
        x = np.arange(len(st["bins"]))
        for name, color in (("MB preference (did)", "#d62728"), ("control |preference|", "#1f77b4")):
            pts = [_err(ci) for ci in st[name]]
            ax.errorbar(x, [p[0] for p in pts], yerr=np.hstack([p[1] for p in pts]), fmt="o-", color=color,
                        capsize=2, label=name.replace(" (did)", "").replace("|preference|", "|preference| (null)"))
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(x, st["bins"])
        ax.set_xlabel("shortest-path distance to the nearest RB object")
        ax.set_ylabel("P(step toward RB) − MA's, minus other types")
        ax.set_title("Reflex or pursuit?", fontsize=10)
        ax.legend(fontsize=7)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(f"Steering vectors vs weight edits of the same Δ_i (mean over RBs, 95% t interval over "
                 f"{s['seed_count']} MA seeds)", fontsize=11)
    return fig
