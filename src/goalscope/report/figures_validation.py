"""Figures of validation (scorecard.json from ``goalscope validate``): graft curves against the nulls, the
localisation AUROC of a planted objective, and held-out heatmaps as the number of RBs grows, and the docs' front-page figure (:func:`fig_headline`). The superposition curve is in :mod:`goalscope.report.figures_planted`.

May import: goalscope.report.run, goalscope.report.common, goalscope.analysis.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from goalscope.analysis.validate.heldout import STRUCTURAL_PRIOR
from goalscope.report.common import err_bars, new_figure, write_csv
from goalscope.report.run import as_run, read_scorecard

NULL_NAMES = ("random", "Fisher alone (MA)", "|Δ_ctrl| (RA control drift)", "another RB's |Δ_j|")  # validation.NULLS


def _validation_bands(run) -> dict[str, dict[float, tuple[float, float]]]:
    """ranking -> k -> (min, max over seeds) of the graft recovery, from validation.csv when it is there."""
    from goalscope.analysis.records import read_records

    path = run.path / "validation.csv"
    out: dict = {}
    if not path.exists():
        return out
    for r in read_records(path):
        if r["metric"] == "graft_recovered" and r["detail"].startswith("k="):
            out.setdefault(r["model"], {})[float(r["detail"][2:])] = (r["ci_low"], r["ci_high"])
    return out


def _held_out_panel(ax, curve: dict, cmap, keep=None, colors=None) -> list[dict]:
    """Graft area of held-out heatmaps against the number of other RBs they are built from, beside the nulls
    (horizontal lines: they know no RB, so they do not depend on n) and |Δ_i| itself (the ceiling); ``keep``, a
    predicate on a series' name, leaves the rest out and ``colors`` (name -> colour) overrides the palette (the
    docs' headline figure draws a few series, each its own colour)."""
    keep, colors = keep or (lambda name: True), colors or {}
    rows = []
    for i, (name, by_n) in enumerate(curve["methods"].items()):
        if not keep(name):
            continue
        ns = sorted(by_n, key=int)
        x = np.array([int(n) for n in ns], float)
        m, lo, hi = (np.array([by_n[n][j] for n in ns], float) for j in range(3))
        ax.errorbar(x * (1 + 0.03 * i), m, yerr=err_bars(m, lo, hi), marker="o", ms=4, capsize=2,
                    color=colors.get(name, cmap(i % 10)), label=name)
        rows += [{"panel": "held-out", "ranking": name, "x": a, "y": b, "min_over_seeds": c, "max_over_seeds": d}
                 for a, b, c, d in zip(x, m, lo, hi)]
    styles = {"|Δ_i|": ("0.15", "-")}
    for j, (name, ci) in enumerate([*curve.get("ceiling", {}).items(), *curve.get("nulls", {}).items()]):
        if not keep(name):
            continue
        color, ls = styles.get(name, (("0.45", "0.6", "0.3")[j % 3], "--"))
        # the structural prior is the null a held-out heatmap has to beat: never one grey among the others
        color = colors.get(name, "darkorange" if name == STRUCTURAL_PRIOR else color)
        ax.axhline(ci[0], color=color, ls=ls, lw=1, label=f"{name} (same at every n)")
        rows.append({"panel": "held-out", "ranking": name, "x": "", "y": ci[0], "min_over_seeds": ci[1],
                     "max_over_seeds": ci[2]})
    ax.set_xscale("log", base=2)
    ax.set_xticks(curve["sizes"], [str(n) for n in curve["sizes"]])
    ax.set_xlabel("number of other RBs the heatmap is built from (log)")
    ax.set_ylabel("graft area of the held-out RB's lean")
    ax.set_title("(c) held-out heatmaps as #RBs grows (95% t CI over MA seeds)", fontsize=10)
    return rows


def _graft_panel(ax, run, graft: dict, cmap, keep=None, colors=None) -> list[dict]:
    """Graft curves of every ranking in ``graft`` (``keep``, ``colors``: as in :func:`_held_out_panel`), nulls
    dashed grey, with the min-max band over seeds from validation.csv."""
    keep, colors = keep or (lambda name: True), colors or {}
    rows = []
    ks = [float(k) for k in graft["fractions"]]
    bands = _validation_bands(run)
    for i, (name, ys) in enumerate(graft["curves"].items()):
        if not keep(name):
            continue
        baseline = name in NULL_NAMES or name == "|Δ_i|"
        color = "0.5" if name in NULL_NAMES else ("0.15" if name == "|Δ_i|" else cmap(i % 10))
        color = colors.get(name, color)
        ax.plot(ks, ys, "--" if baseline else "-", marker="o", ms=3, color=color, label=name)
        band = bands.get(name)
        if band and all(k in band for k in ks):
            ax.fill_between(ks, [band[k][0] for k in ks], [band[k][1] for k in ks], color=color, alpha=0.12, lw=0)
        rows += [{"panel": "graft", "ranking": name, "x": k, "y": y,
                  "min_over_seeds": band[k][0] if band and k in band else "",
                  "max_over_seeds": band[k][1] if band and k in band else ""} for k, y in zip(ks, ys)]
    ax.axhline(0.9, color="crimson", lw=0.8, ls=":", label="90% recovered")
    if not np.isfinite(np.asarray([y for ys in graft["curves"].values() for y in ys], dtype=float)).any():
        ax.text(0.5, 0.5, "no graft curve is defined:\nno MB gained RB objects over MA", ha="center",
                va="center", transform=ax.transAxes, fontsize=10, color="0.3")
    ax.set_xlim(min(ks) / 1.5, max(ks) * 1.5)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of parameters grafted (top-k by ranking, log)")
    ax.set_ylabel("fraction of MB's specific lean recovered")
    ax.set_title("(a) graft curves: MA + top-k% of Δ (band: min–max over seeds)", fontsize=10)
    return rows


def _panels(card: dict):
    graft = card.get("graft") if isinstance(card.get("graft"), dict) else None
    loc = card.get("localisation") if isinstance(card.get("localisation"), dict) else None
    curve = card.get("held_out_curve") if isinstance(card.get("held_out_curve"), dict) else None
    return graft, loc, curve


def fig_validation(run, card: dict | None = None, out: Path | None = None):
    """Graft curves (and localisation AUROC when the architecture has a planted objective) from scorecard.json
    (``card``, read from the run when not given); None when there is nothing to draw. With ``out``, writes
    validation_curves.csv there."""
    run = as_run(run)
    if card is None:
        card = read_scorecard(run.path) or {}
    graft, loc, curve = _panels(card)
    panels = [p for p, present in (("graft", graft and graft.get("curves")), ("auroc", loc and loc.get("by_method")),
                                   ("held-out", curve and curve.get("methods"))) if present]
    if not panels:
        return None
    fig = new_figure(6.2 * len(panels) + 1.0, 4.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    rows = []
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    for ax, panel in zip(axes, panels):
        if panel == "graft":
            rows += _graft_panel(ax, run, graft, cmap)
        elif panel == "held-out":
            rows += _held_out_panel(ax, curve, cmap)
        else:
            for i, (name, by_n) in enumerate(loc["by_method"].items()):
                ns = sorted(by_n, key=lambda n: int(n))
                x = np.array([int(n) for n in ns], dtype=float)
                m = np.array([by_n[n]["auroc"][0] for n in ns], dtype=float)
                lo = np.array([by_n[n]["auroc"][1] for n in ns], dtype=float)
                hi = np.array([by_n[n]["auroc"][2] for n in ns], dtype=float)
                err = err_bars(m, lo, hi)
                color = "0.5" if name == "random" else ("0.15" if name.startswith("|Δ|") else cmap(i % 10))
                ax.errorbar(x * (1 + 0.03 * i), m, yerr=err, marker="o", ms=4, capsize=2, color=color, label=name)
                rows += [{"panel": "auroc", "ranking": name, "x": a, "y": b, "min_over_seeds": c, "max_over_seeds": d}
                         for a, b, c, d in zip(x, m, lo, hi)]
            ax.axhline(0.5, color="crimson", lw=0.8, ls=":", label="chance")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("number of RBs superposed (log)")
            ax.set_ylabel("AUROC for the planted parameters")
            ax.set_ylim(0, 1)
            ax.set_title(f"(b) localisation of the planted objective ({loc.get('positives')} of "
                         f"{loc.get('parameters')} parameters), 95% CI", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("Validation (scorecard.json)", fontsize=11)
    write_csv(out, "validation_curves.csv", rows, ["panel", "ranking", "x", "y", "min_over_seeds", "max_over_seeds"])
    return fig


# The headline's series: |Δ_i| against every null, and on held-out RBs a role-aligned heatmap against its plain
# version and the null that knows only the structure (what issue 34's test has to beat); each its own colour, as
# the report's all-grey nulls cannot be told apart in one small picture.
HEADLINE_COLORS = {"|Δ_i|": "black", "random": "0.6", "Fisher alone (MA)": "tab:pink",
                   "|Δ_ctrl| (RA control drift)": "tab:brown", "another RB's |Δ_j|": "tab:olive",
                   STRUCTURAL_PRIOR: "darkorange"}
HEADLINE_HELD_OUT = ("|Δ_i|", STRUCTURAL_PRIOR, "Fisher alone (MA)", "random")


def fig_headline(run, card: dict | None = None):
    """The front page's figure: the graft curves of |Δ_i| against the nulls and, where validate drew it, the
    held-out curve of one role-aligned heatmap and its plain version against the structural prior; None without
    graft curves."""
    run = as_run(run)
    if card is None:
        card = read_scorecard(run.path) or {}
    graft, _, curve = _panels(card)
    if not (graft and graft.get("curves")):
        return None
    methods = list((curve or {}).get("methods") or {})
    pair = next(((m, f"{m} (role-aligned)") for m in methods if f"{m} (role-aligned)" in methods), None)
    fig = new_figure(11.0 if pair else 5.8, 3.9)
    axes = fig.subplots(1, 2 if pair else 1, squeeze=False)[0]
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    _graft_panel(axes[0], run, graft, cmap, keep=lambda n: n == "|Δ_i|" or n in NULL_NAMES, colors=HEADLINE_COLORS)
    axes[0].set_title("(a) MA + the top-k% of MB_i's update, ranked by |Δ_i| or a null", fontsize=10)
    if pair:
        _held_out_panel(axes[1], curve, cmap, keep=lambda n: n in pair or n in HEADLINE_HELD_OUT,
                        colors={**HEADLINE_COLORS, pair[0]: "tab:blue", pair[1]: "tab:red"})
        axes[1].set_title("(b) a heatmap of the other RBs, grafted for a held-out RB", fontsize=10)
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="center right" if ax is axes[-1] and pair else "best")
    return fig


def input_planes_html(entry) -> str:
    """The input-plane ground truth of a scorecard (any agent whose first layer reads the maze planes) as HTML, or
    why it was not run; empty for a scorecard without one."""
    from goalscope.analysis.validate.entry import rank1_count
    from goalscope.report.common import esc, html_table

    if entry is None:
        return ""
    if isinstance(entry, str):
        return f"<h3>Input-plane ground truth</h3><p class='note'>Not run: {esc(entry)}</p>"
    rows = [[esc(n), f"{v['mean_rank']:.2f} ({v['chance_mean_rank']:.2f})",
             esc(", ".join(f"{x:.2f}" for x in v["per_seed_mean_rank"])),
             f"{rank1_count(v)}/{v['pairs']} ({v['chance_rank1']:.2f})"]
            for n, v in entry["by_heatmap"].items()]
    return ("<h3>Input-plane ground truth</h3><p>A one-hot or composite RB changes the value of one object plane, "
            "so the first layer's weights that read RB's own plane are a ground truth in any agent that reads the "
            "planes. Rank 1 = RB's own plane holds the most first-layer mass among the object planes RB leaves "
            "unchanged plus its own (chance in brackets).</p>" + html_table(
                ["heatmap", "mean rank of the own plane (chance)", "per-seed mean rank",
                 "(seed, RB) pairs ranking it first (chance fraction)"], rows, {1, 2, 3}))
