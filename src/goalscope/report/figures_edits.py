"""Figures and tables of issue 14 (RUN/edits/): linearity curves, arithmetic profiles, targeted edits, decode.

Each figure is drawn from the part's JSON, so the report and ``goalscope edits`` draw the same thing; every figure is
drawn whether its result is positive or not. The report's section 9 (:mod:`goalscope.report.sections`) shows
:func:`found_parts` with their ``CAPTIONS``.

May import: goalscope.analysis (edits.common, validate.planted), the core helpers (errors, inputs, outputs), matplotlib (inside
the functions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from goalscope.analysis.edits.common import EDITS_DIR, METRICS
from goalscope.analysis.validate.planted import md_name

PATH_STYLE = {"no retrain": ("tab:blue", "-"), "retrained": ("tab:orange", "-"),
              "random, no retrain": ("0.5", "--")}
METRIC_LABEL = {"rb_objects": "RB objects / episode", "specific_lean": "specific lean (RB − other non-RA)",
                "ra_return": "RA return", "all_objects": "all objects / episode"}


def _fig(w, h):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _load(run_dir: Path, part: str) -> dict | None:
    from goalscope.errors import GoalscopeError
    from goalscope.inputs import read_json

    p = Path(run_dir) / EDITS_DIR / f"{part}.json"
    if not p.exists():
        return None
    try:
        res = read_json(p)
    except GoalscopeError:
        return None  # damaged: no figure, as if that part had not run (rerunning it rewrites the file)
    return res if isinstance(res, dict) else None


def fig_linearity(res: dict):
    """MA + t·Δ_i: one column per RB, one row per metric, a line per path with its t interval."""
    t = np.asarray(res["t"])
    paths = res["paths"]
    rbs = list(next(iter(paths.values())))
    fig = _fig(3.0 * len(rbs), 2.4 * len(METRICS))
    axes = fig.subplots(len(METRICS), len(rbs), squeeze=False, sharex=True)
    for j, rb in enumerate(rbs):
        for i, m in enumerate(METRICS):
            ax = axes[i, j]
            for path, by_rb in paths.items():
                pts = np.array([[np.nan if x is None else x for x in ci] for ci in by_rb[rb][m]], float)
                color, ls = PATH_STYLE.get(path, ("k", ":"))
                ax.plot(t, pts[:, 0], ls, color=color, marker="o", ms=3, label=path)
                ax.fill_between(t, pts[:, 1], pts[:, 2], color=color, alpha=0.15, lw=0)
            ax.axvline(0, color="0.8", lw=0.8)
            ax.axvline(1, color="0.85", lw=0.8, ls=":")
            if i == 0:
                ax.set_title(rb)
            if j == 0:
                ax.set_ylabel(METRIC_LABEL[m], fontsize=8)
            if i == len(METRICS) - 1:
                ax.set_xlabel("t")
    fig.supxlabel("MA + t·Δ_i: t = 0 is MA, t = 1 is MB_i, t = −1 the seed's negation (α = 1)", fontsize=9)
    axes[0, 0].legend(fontsize=7)
    return fig


def fig_arithmetic(res: dict):
    """Per target (RB or pair): the profile gap to the real fine-tune closed by each edit, rows of three panels."""
    targets = res["targets"]
    ncols = min(3, len(targets))
    nrows = -(-len(targets) // ncols)
    fig = _fig(5.2 * ncols, 3.6 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[len(targets):]:
        ax.set_visible(False)
    for ax, (target, edits) in zip(axes, targets.items()):
        names = list(edits)
        vals = np.array([[np.nan if x is None else x for x in edits[n].get("gap_closed", [np.nan] * 3)] for n in names], float)
        y = np.arange(len(names))
        ax.barh(y, vals[:, 0], color=["0.6" if "random" in n else "tab:blue" for n in names])
        ax.errorbar(vals[:, 0], y, xerr=np.abs(np.stack([vals[:, 0] - vals[:, 1], vals[:, 2] - vals[:, 0]])),
                    fmt="none", ecolor="k", lw=0.8)
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
        ax.axvline(0, color="k", lw=0.6)
        ax.axvline(1, color="0.7", lw=0.6, ls=":")
        ax.set_title(target, fontsize=9)
        ax.set_xlabel("profile gap to the real fine-tune closed", fontsize=8)
    return fig


def fig_targeted(res: dict):
    """Lean recovered, RA kept and lean per unit of weight against k, one line per ranking."""
    ks = np.asarray(res["fractions"]) * 100
    fig = _fig(13, 3.6)
    axes = fig.subplots(1, 3)
    for name, d in res["rankings"].items():
        for ax, m in zip(axes, ("recovered", "ra_kept", "lean_per_weight")):
            pts = np.array([[np.nan if x is None else x for x in ci] for ci in d[m]], float)
            style = "-" if name.startswith("heatmap") else "--"
            ax.plot(ks, pts[:, 0], style, marker="o", ms=3, label=name)
            ax.fill_between(ks, pts[:, 1], pts[:, 2], alpha=0.12, lw=0)
    for ax, lab in zip(axes, ("fraction of MB's specific lean recovered", "RA return / MA's",
                              "lean per unit of weight changed (1 = whole Δ)")):
        ax.set_xscale("log")
        ax.set_xlabel("k (% of parameters of Δ_i applied)")
        ax.set_ylabel(lab, fontsize=8)
        ax.axhline(0 if "recovered" in lab else 1, color="0.7", lw=0.6)
    axes[0].legend(fontsize=7)
    return fig


def fig_decode(res: dict):
    """Held-out decoding accuracy per feature set, one panel per scheme, chance marked."""
    fig = _fig(11, 3.8)
    axes = fig.subplots(1, len(res["schemes"]), squeeze=False)[0]
    for ax, (scheme, by) in zip(axes, res["schemes"].items()):
        if not isinstance(by, dict):
            ax.set_title(f"{scheme}: {by}", fontsize=8)
            continue
        names = ["zero-shot (no training)", *by]
        vals = [res["zero_shot"]["accuracy"], *[v["accuracy"] for v in by.values()]]
        vals = np.array([[np.nan if x is None else x for x in v] for v in vals], float)
        y = np.arange(len(names))
        ax.barh(y, vals[:, 0], color=["tab:green"] + ["tab:blue"] * (len(names) - 1))
        err = np.abs(np.stack([vals[:, 0] - vals[:, 1], vals[:, 2] - vals[:, 0]]))
        ax.errorbar(vals[:, 0], y, xerr=np.nan_to_num(err), fmt="none", ecolor="k", lw=0.8)
        ax.axvline(res["chance"], color="r", ls="--", lw=0.8, label="chance")
        ax.set_yticks(y, names, fontsize=7)
        ax.invert_yaxis()
        ax.set_xlim(0, 1.05)
        ax.set_title(scheme, fontsize=9)
        ax.set_xlabel("held-out accuracy (95% t CI over MA seeds)", fontsize=8)
    axes[0].legend(fontsize=7)
    return fig


DYN = (("lean_gain", "specific-lean gain over MA"), ("cosine_with_final", "cos(Δ(t), Δ)"),
       ("norm_over_final", "‖Δ(t)‖ / ‖Δ‖"), ("own_plane_read_over_final", "own-plane read change / final"),
       ("own_plane_share", "own plane's share of first-layer |Δ(t)|"))


def fig_dynamics(res: dict):
    """The dynamics curves over fine-tune steps, one panel per quantity, one line per RB."""
    fig = _fig(3.2 * len(DYN), 3.2)
    axes = fig.subplots(1, len(DYN))
    for rb, by_q in res["curves"].items():
        for ax, (q, lab) in zip(axes, DYN):
            if q not in by_q:
                continue
            st = np.array([int(x) for x in by_q[q]])
            pts = np.array([[np.nan if x is None else x for x in ci] for ci in by_q[q].values()], float)
            ax.plot(st, pts[:, 0], marker="o", ms=3, label=rb)
            ax.fill_between(st, pts[:, 1], pts[:, 2], alpha=0.12, lw=0)
            ax.set_title(lab, fontsize=8)
            ax.set_xlabel("fine-tune env steps", fontsize=8)
    axes[0].legend(fontsize=7)
    return fig


def dynamics_markdown(res: dict) -> list[str]:
    """Markdown lines: the onsets per RB, then one table per quantity over the snapshot steps."""
    lines = [f"### Dynamics of the fine-tune MA -> MB_i ({res.get('episodes')} paired episodes; {res['interval']}; "
             f"reruns reproduce MB bit for bit: {res['reproduces_mb']}; onset = {res['onset_def']})", "",
             "| RB | onset: lean gain | onset: own-plane read change | onset: ‖Δ(t)‖ | onset: cos with Δ |",
             "|---|---|---|---|---|"]
    for rb, o in res["onset"].items():
        lines.append(f"| {rb} | {o.get('lean_gain')} | {o.get('own_plane_read_over_final')} | {o.get('norm_over_final')} | "
                     f"{o.get('cosine_with_final')} |")
    steps = res["steps"]
    for q, lab in DYN:
        lines += ["", f"{lab}:", "", "| RB | " + " | ".join(str(x) for x in steps) + " |", "|---" * (len(steps) + 1) + "|"]
        for rb, by_q in res["curves"].items():
            lines.append(f"| {rb} | " + " | ".join(_c(by_q[q].get(str(x)), "{:.2f}") for x in steps) + " |")
    return lines + [""]


FIGURES = (("linearity", fig_linearity), ("arithmetic", fig_arithmetic), ("targeted", fig_targeted),
           ("decode", fig_decode), ("dynamics", fig_dynamics))


def write_figures(run_dir) -> list[str]:
    """Write RUN/edits/<part>.png for every part that has a result; returns their paths. Confined to the run
    (never through a symbolic link planted in it)."""
    import io

    from goalscope.outputs import atomic_write_bytes, confine

    out = []
    with confine(Path(run_dir) / EDITS_DIR):
        for part, fn in FIGURES:
            res = _load(run_dir, part)
            if res is None:
                continue
            path = Path(run_dir) / EDITS_DIR / f"{part}.png"
            buf = io.BytesIO()
            try:
                fn(res).savefig(buf, format="png")
            except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
                # a log axis over a tiny run's all-zero values, or a part's JSON damaged inside: the rest stands
                out.append(f"{path} not drawn ({type(e).__name__}: {e})")
                continue
            atomic_write_bytes(path, buf.getvalue())
            out.append(str(path))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Markdown tables (CLI output, README)


def _c(ci, fmt="{:+.3f}") -> str:
    if ci is None or ci[0] is None:
        return "n/a"
    lo, hi = ci[1], ci[2]
    if lo is None or hi is None:
        return fmt.format(ci[0])
    return f"{fmt.format(ci[0])} [{fmt.format(lo)}, {fmt.format(hi)}]"


def linearity_markdown(res: dict) -> list[str]:
    """Markdown lines: the specific lean per path, RB and t, then the questions of each curve."""
    lines = [f"### Linearity: MA + t·Δ_i ({res.get('episodes')} paired episodes, {len(res['seeds'])} MA seeds, "
             f"{res['interval']})", ""]
    t = res["t"]
    for path, by_rb in res["paths"].items():
        lines += [f"Specific lean, {path}:", "", "| RB | " + " | ".join(f"t={x:g}" for x in t) + " |",
                  "|---" * (len(t) + 1) + "|"]
        for rb, d in by_rb.items():
            lines.append(f"| {rb} | " + " | ".join(_c(ci, "{:+.2f}") for ci in d["specific_lean"]) + " |")
        lines.append("")
    lines += ["| path | RB | monotone (seed mean; seeds) | Spearman(t, lean) | capability break t>0 / t<0 | "
              "mirror at t=1: gain, drop [CI], ratio | at t=2 |", "|---|---|---|---|---|---|---|"]
    for path, by_rb in res["questions"].items():
        for rb, q in by_rb.items():
            mir = q.get("mirror", {})

            def m(k):
                if k not in mir:
                    return "n/a"
                v = mir[k]
                return (f"{_c(v['gain_at_plus_t'], '{:+.2f}')}, {_c(v['drop_at_minus_t'], '{:+.2f}')}, "
                        f"{v['mirror_ratio']}")
            lines.append(f"| {path} | {rb} | {'yes' if q['monotone_increasing'] else 'no'} ({q['monotone_seeds']}) | "
                         f"{q['spearman_t_lean']} | {q['capability_break_positive']} / {q['capability_break_negative']} | "
                         f"{m('1')} | {m('2')} |")
    return lines + [""]


def arithmetic_markdown(res: dict) -> list[str]:
    """Markdown lines: one table of edits per target."""
    lines = [f"### Objective arithmetic ({res.get('episodes')} paired episodes; {res['interval']}; gap closed = "
             f"{res['gap_closed']})", ""]
    for target, edits in res["targets"].items():
        lines += [f"**{target}**", "", "| edit | gap closed | RB objects | specific lean | RA return | all objects | "
                  "objects per type |", "|---|---|---|---|---|---|---|"]
        for name, e in edits.items():
            lines.append(f"| {md_name(name)} | {_c(e.get('gap_closed'), '{:+.2f}')} | {_c(e.get('rb_objects'), '{:.2f}')} | "
                         f"{_c(e.get('specific_lean'), '{:+.2f}')} | {_c(e.get('ra_return'), '{:.2f}')} | "
                         f"{_c(e.get('all_objects'), '{:.2f}')} | {e['counts']} |")
        lines.append("")
    return lines


def targeted_markdown(res: dict) -> list[str]:
    """Markdown lines: each ranking's measures per k, then the heatmap-vs-null tests."""
    ks = res["fractions"]
    lines = [f"### Targeted edits: MA + top-k% of Δ_i ({res.get('episodes')} paired episodes; {res['measure']}; "
             f"{len(res['seeds'])} MA seeds, t CI)", "",
             "| ranking | " + " | ".join(f"recovered k={k:.0%}" for k in ks) + " | " +
             " | ".join(f"RA kept k={k:.0%}" for k in ks) + " | " + " | ".join(f"weight moved k={k:.0%}" for k in ks) +
             " | " + " | ".join(f"lean/weight k={k:.0%}" for k in ks) + " |",
             "|---" * (4 * len(ks) + 1) + "|"]
    for name, d in res["rankings"].items():
        cells = [_c(ci, "{:.2f}") for m in ("recovered", "ra_kept", "weight_fraction", "lean_per_weight") for ci in d[m]]
        lines.append(f"| {md_name(name)} | " + " | ".join(cells) + " |")
    fam = res.get("family", {})
    lines += ["", f"Heatmap vs null ({fam.get('tests')} tests, {fam.get('correction')}, {fam.get('test')}):", "",
              "| ranking | null | k | difference [95% t CI] | p | p (Holm) | beaten |", "|---|---|---|---|---|---|---|"]
    for t in res.get("tests", []):
        lines.append(f"| {md_name(t['ranking'])} | {md_name(t['null'])} | {t['k']:.0%} | {_c(t['diff'], '{:+.3f}')} | {t['p']} | "
                     f"{t['p_holm']} | {'yes' if t['beaten'] else 'no'} |")
    return lines + [""]


def decode_markdown(res: dict) -> str:
    """Markdown of the decode result: zero-shot, pair rewards, and accuracy per feature set and scheme."""
    lines = [f"### Decode: which RB from the weights alone ({res['items']} fine-tunes, {len(res['classes'])} candidate "
             f"RBs, chance {res['chance']:.2f}; {res['interval']}; p: {res['p']})", "",
             f"Zero-shot (RB's own plane by first-layer |Δ| mass, no training): accuracy "
             f"{_c(res['zero_shot']['accuracy'], '{:.2f}')}, mean rank of the true RB {res['zero_shot']['mean_rank']}.", "",
             "| features | " + " | ".join(f"{s}: accuracy [CI], p" for s in res["schemes"]) + " |",
             "|---" * (len(res["schemes"]) + 1) + "|"]
    comp = res.get("composite")
    if isinstance(comp, dict):
        lines[2:2] = [f"Pair rewards ({comp['fine_tunes']} fine-tunes on {', '.join(comp['pairs'])}; {comp['note']}): "
                      f"both types ranked top two by the nearest centroid {comp['top2_exact_nearest_centroid']}, "
                      f"zero-shot {comp['top2_exact_zero_shot']} (chance {comp['chance_top2']}); reward-vector R² "
                      f"{comp['weight_vector_r2']}.", ""]
    elif comp:
        lines[2:2] = [f"Pair rewards: {comp}", ""]
    variants = list(dict.fromkeys(v for by in res["schemes"].values() if isinstance(by, dict) for v in by))
    for v in variants:
        cells = []
        for by in res["schemes"].values():
            e = by.get(v) if isinstance(by, dict) else None
            cells.append(f"{_c(e['accuracy'], '{:.2f}')}, p={e['p_permutation']}" if e else "n/a")
        lines.append(f"| {md_name(v)} | " + " | ".join(cells) + " |")
    return "\n".join(lines + [""])


def edits_markdown(results: dict) -> str:
    """Markdown of whichever edit parts are in ``results`` (what ``goalscope edits`` prints)."""
    lines = []
    for part, fn in (("linearity", linearity_markdown), ("arithmetic", arithmetic_markdown),
                     ("targeted", targeted_markdown), ("dynamics", dynamics_markdown)):
        if part in results:
            lines += fn(results[part])
    return "\n".join(lines)


CAPTIONS = {"linearity": "MA + t·Δ_i per RB, without and with the RA retrain, and a random direction of the same "
                          "per-tensor norms; 95% t intervals over MA seeds",
            "arithmetic": "Fraction of the behaviour-profile gap between MA and the real fine-tune closed by each edit",
            "targeted": "MA + top-k% of Δ_i by a heatmap against |Δ|, random, Fisher and control-drift masks",
            "decode": "Held-out accuracy of decoding RB from the update signal, per feature group, against chance",
            "dynamics": "During the fine-tune MA -> MB_i: lean gained, alignment with the final Δ, and the first "
                        "layer's change in reading RB's own plane"}


def found_parts(run_dir) -> list[tuple[str, object, dict]]:
    """(part, its figure function, its result) for each part found in RUN/edits, in page order: what the report's
    section 9 draws (:mod:`goalscope.report.sections`); empty when ``goalscope edits`` / ``decode`` have not run."""
    return [(part, fn, res) for part, fn in FIGURES if (res := _load(run_dir, part)) is not None]
