"""The superposition curve of a planted-truth run: localisation AUROC and precision@k vs the number of RBs.

Aggregators are lines with their 95% t intervals over seeds; the nulls (single-RB |Δ_i|, control drift, MA's
Fisher alone, random) do not depend on the number of RBs and are drawn as flat dashed lines with a shaded interval,
so a curve that rises toward the objective can be read against what needs no superposition at all. Drawn whether
or not the curve rises. Also the report's localisation table (:func:`localisation_html`), after the causal gate.

May import: goalscope.analysis.validate.planted, goalscope.report.common.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from goalscope.analysis.validate.planted import BASELINES, GOAL_AUROC
from goalscope.report.common import ci_text, esc, html_table, new_figure, num, write_csv

NULL_STYLE = {"|Δ| (one RB)": "0.15", "control drift |Δ_ctrl|": "tab:brown", "Fisher alone (MA)": "tab:pink",
              "random": "0.55", "|θ_MA|": "goldenrod", "|θ_MA − θ_init|": "teal", "Fisher × θ² (MA)": "0.35"}


def curve_rows(loc: dict) -> list[dict]:
    """One row per (heatmap, metric, number of RBs): mean and 95% interval, from the scorecard's localisation."""
    rows = []
    for name, by_n in loc["by_method"].items():
        for n, v in sorted(by_n.items(), key=lambda kv: int(kv[0])):
            for metric, key in (("auroc", "auroc"), ("precision_at_k", "precision_at_k_ci")):
                m, lo, hi = v.get(key, [np.nan] * 3)
                rows.append({"heatmap": name, "null": name in BASELINES, "metric": metric, "n_rbs": int(n),
                             "mean": m, "ci_low": lo, "ci_high": hi})
    return rows


def fig_superposition_curve(card: dict, out: Path | None = None):
    """Two panels (AUROC, precision@k) vs the number of RBs; with ``out``, writes superposition_curve.csv there.
    None when the run has no planted objective."""
    loc = card.get("localisation")
    if not isinstance(loc, dict) or not loc.get("by_method"):
        return None
    from matplotlib import colormaps

    rows = curve_rows(loc)
    write_csv(out, "superposition_curve.csv", rows, list(rows[0]))
    fig = new_figure(12.4, 4.6)
    axes = fig.subplots(1, 2)
    share = loc["positives"] / loc["parameters"]
    # tab10 without brown, pink and grey, which the nulls use; then tab20's dark shades for longer method lists.
    palette = [colormaps["tab10"](i) for i in (0, 1, 2, 3, 4, 8, 9)] + [colormaps["tab20b"](i) for i in (0, 4, 8, 12, 16)]
    ns = sorted({r["n_rbs"] for r in rows})
    for ax, metric, chance in ((axes[0], "auroc", 0.5), (axes[1], "precision_at_k", share)):
        methods = [name for name in loc["by_method"] if name not in BASELINES]
        for i, name in enumerate(methods):
            pts = [r for r in rows if r["heatmap"] == name and r["metric"] == metric and np.isfinite(r["mean"])]
            if not pts:
                continue
            x = np.array([r["n_rbs"] for r in pts], float) * (1 + 0.02 * (i - len(methods) / 2))
            m = np.array([r["mean"] for r in pts])
            lo, hi = np.array([r["ci_low"] for r in pts]), np.array([r["ci_high"] for r in pts])
            err = np.where(np.isfinite([m - lo, hi - m]), np.abs([m - lo, hi - m]), 0)
            ax.errorbar(x, m, yerr=err, marker="o", ms=4, capsize=2, color=palette[i % len(palette)], label=name)
        for name in BASELINES:
            pts = [r for r in rows if r["heatmap"] == name and r["metric"] == metric]
            if not pts:
                continue
            m, lo, hi = pts[0]["mean"], pts[0]["ci_low"], pts[0]["ci_high"]
            color = NULL_STYLE[name]
            ax.axhline(m, color=color, ls="--", lw=1.2, label=f"{name} (null)")
            if np.isfinite(lo) and np.isfinite(hi):
                ax.axhspan(lo, hi, color=color, alpha=0.07, lw=0)
        ax.axhline(chance, color="crimson", lw=0.8, ls=":", label="chance")
        if metric == "auroc":
            ax.axhline(GOAL_AUROC, color="green", lw=0.8, ls="-.", label=f"goal {GOAL_AUROC}")
            ax.set_ylabel("localisation AUROC")
        else:
            ax.set_ylabel(f"precision@k (k = {loc['positives']})")
        ax.set_ylim(0, 1.02)
        ax.set_xscale("log", base=2)
        ax.set_xticks(ns, [str(n) for n in ns])
        ax.set_xlabel("number of RBs superposed")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"(a) AUROC for the planted objective ({loc['positives']} of {loc['parameters']} "
                      "parameters), 95% t CI over seeds", fontsize=10)
    axes[1].set_title("(b) precision@k: share of the top-k that is objective", fontsize=10)
    axes[1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    goal = loc.get("goal") or {}
    fig.suptitle("Superposition curve" + (f" — {goal['text']}" if goal.get("text") else ""), fontsize=9)
    return fig


def localisation_html(loc: dict) -> str:
    """The report's planted-truth table: the causal gate and both goals first (issue 35), then every heatmap's
    AUROC plain, with never-moved entries left out, and within Fisher strata."""
    def ci(v, key):
        return ci_text(*v[key], fmt=".3f") if key in v else "—"

    trs = [[esc(m), esc(n), ci(v, "auroc"), num(v.get("precision_at_k")), num(v.get("ceiling")),
            ci(v, "auroc_moved"), ci(v, "auroc_strata")]
           for m, by_n in loc.get("by_method", {}).items() for n, v in sorted(by_n.items(), key=lambda kv: int(kv[0]))]
    inert = loc.get("inert_positives")
    note = (f"<p>Planted labels training cannot move (inert in MA's weights), left out of the scoring: "
            f"{esc(', '.join(map(str, inert)))} per seed. The ceiling is the best AUROC each score could reach "
            "given its exact zeros.</p>") if inert else ""
    gate = loc.get("causal_gate")
    if isinstance(gate, dict):  # issue 35: the AUROC counts only where editing the planted part moves behaviour
        note = (f"<p><b>Causal gate {'passed' if gate['passed'] else 'NOT passed'}:</b> {esc(gate['text'])}.</p>"
                + note)
    for key in ("goal_strata", "goal"):
        if isinstance(loc.get(key), dict):
            note += f"<p>{'Goal within Fisher strata' if key == 'goal_strata' else 'Goal (plain AUROC)'}: " \
                    f"{esc(loc[key]['text'])}.</p>"
    return "<h3>Localisation AUROC</h3>" + note + html_table(
        ["heatmap", "RBs", "AUROC [95% CI]", "precision@k", "AUROC ceiling", "never-moved left out",
         f"within {loc.get('n_strata', '')} Fisher strata"], trs, {1, 2, 3, 4, 5, 6})
