"""Figures of the update signals: per-aggregator heatmaps (per unit and per tensor enrichment), per-RB |Δ|, units that
did not move, and the cosine similarity of the signals. Each figure function returns a matplotlib Figure; with
``out`` it also writes the CSV of the data behind it.

May import: goalscope.report.run, goalscope.report.common, goalscope.inputs, goalscope.errors.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from goalscope.report.common import err_bars, new_figure, write_csv
from goalscope.report.run import Run, as_run


def load_heatmap(path: Path) -> dict:
    """A heatmap safetensors file as float64 numpy arrays by key."""
    from safetensors.torch import load_file

    return {k: v.double().numpy() for k, v in load_file(str(path)).items()}


def _param_order(run: Run) -> list[str]:
    """Parameter names in the model's own order (that of the first MA checkpoint's state dict)."""
    for k in run.plan.ma.values():
        if k in run.ok:
            return list(run.checkpoint(k).state_dict)
    return []


def _units(t: np.ndarray) -> np.ndarray:
    """Per output unit (dim 0) mean of a score tensor."""
    return t.reshape(1, -1).mean(1) if t.ndim == 0 else t.reshape(t.shape[0], -1).mean(1)


def _unit_matrix(heat: dict[str, np.ndarray], params: list[str]) -> np.ndarray:
    """rows = tensors, columns = output units; value = unit mean score / network mean score (NaN = no such unit)."""
    total = sum(float(heat[p].sum()) for p in params)
    n = sum(heat[p].size for p in params)
    global_mean = total / n if n else 0.0
    width = max(_units(heat[p]).size for p in params)
    m = np.full((len(params), width), np.nan)
    for i, p in enumerate(params):
        u = _units(heat[p])
        m[i, : u.size] = u / global_mean if global_mean > 0 else 0.0
    return m


def _tensor_enrichment(heat: dict[str, np.ndarray], params: list[str]) -> np.ndarray:
    total = sum(float(heat[p].sum()) for p in params)
    n = sum(heat[p].size for p in params)
    if total <= 0:
        return np.zeros(len(params))
    return np.array([float(heat[p].sum()) / total / (heat[p].size / n) for p in params])


def _row_labels(heat: dict[str, np.ndarray], params: list[str]) -> list[str]:
    return [f"{p} ({'×'.join(map(str, heat[p].shape)) or '1'})" for p in params]


def _draw_unit_matrix(fig, ax, m: np.ndarray, labels: list[str], norm, cmap, cbar_label: str, cbar=True):
    from matplotlib import colormaps

    cm = colormaps[cmap].with_extremes(bad="#eeeeee", under=colormaps[cmap](0.0))
    shown = np.where(np.isfinite(m), np.maximum(m, norm.vmin), np.nan)
    im = ax.imshow(shown, aspect="auto", interpolation="nearest", cmap=cm, norm=norm)
    ax.set_yticks(range(len(labels)), labels, fontsize=7)
    ax.set_xlabel("output unit / channel index (grey: tensor has fewer units)")
    if cbar:
        fig.colorbar(im, ax=ax, label=cbar_label, extend="min", shrink=0.9, aspect=30)
    return im


def _log_axis(ax) -> None:
    """A log x axis with plain-number labels on the major ticks only (no crowded minor labels)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    axis = ax.xaxis
    axis.set_major_locator(LogLocator(base=10, subs=(1.0, 3.0) if hi / max(lo, 1e-300) < 300 else (1.0,), numticks=8))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _log_norm(values: np.ndarray, span: float = 1e3):
    from matplotlib.colors import LogNorm

    v = values[np.isfinite(values) & (values > 0)]
    if not v.size:
        return LogNorm(1e-3, 1.0)
    hi = float(v.max())
    lo = max(float(v.min()), hi / span)
    return LogNorm(lo, hi if hi > lo else lo * 10)


def heatmap_figures(run, out: Path | None = None) -> list[tuple[str, str, object, str]]:
    """One figure per aggregator, plus per-RB figures: (name, title, figure, caption). With ``out``, writes the
    heatmap CSVs there."""
    run = as_run(run)
    heat_dir = run.path / "heatmaps"
    params = _param_order(run)
    figs, unit_rows, tensor_rows = [], [], []
    # "attribution" (|IG_i| of the behaviour change, written by `goalscope validate`) is drawn beside the aggregators
    methods = [m for m in [*run.cfg.superpose.methods, "attribution"] if (heat_dir / f"{m}.safetensors").exists()]
    heat_summary = run.summary.get("heatmaps", {})
    for method in methods:
        h = load_heatmap(heat_dir / f"{method}.safetensors")
        mean = {k.split("/", 1)[1]: v for k, v in h.items() if k.startswith("mean/")}
        seeds = sorted({k.split("/", 1)[0] for k in h if k.startswith("seed")}, key=lambda s: int(s[4:]))
        ps = [p for p in params if p in mean] or list(mean)
        mat = _unit_matrix(mean, ps)
        enr = _tensor_enrichment(mean, ps)
        per_seed = np.stack([_tensor_enrichment({k.split("/", 1)[1]: v for k, v in h.items() if k.startswith(s + "/")}, ps)
                             for s in seeds]) if seeds else enr[None]
        for i, p in enumerate(ps):
            tensor_rows.append({"aggregator": method, "tensor": p, "numel": int(mean[p].size), "enrichment": float(enr[i]),
                                "enrichment_seed_min": float(per_seed[:, i].min()), "enrichment_seed_max": float(per_seed[:, i].max()),
                                "score_share": float(mean[p].sum() / sum(mean[q].sum() for q in ps))})
            for u, v in enumerate(mat[i][np.isfinite(mat[i])]):
                unit_rows.append({"aggregator": method, "tensor": p, "unit": u, "enrichment": float(v)})
        fig = new_figure(13.0, 0.42 * len(ps) + 1.9)
        ax_m, ax_b = fig.subplots(1, 2, width_ratios=[2.6, 1.2], sharey=True)
        _draw_unit_matrix(fig, ax_m, mat, _row_labels(mean, ps), _log_norm(mat), "viridis",
                          "unit mean score / network mean (log)")
        ax_m.set_ylabel("parameter tensor (shape)")
        ax_m.set_title("per output unit / channel", fontsize=10)
        y = np.arange(len(ps))
        pos = enr > 0
        floor = float(min(enr[pos].min(), per_seed[per_seed > 0].min(initial=np.inf))) / 3 if pos.any() else 1e-3
        ax_b.barh(y[pos], enr[pos], color="#3b528b", height=0.6)
        ax_b.errorbar(enr[pos], y[pos], xerr=err_bars(enr[pos], np.maximum(per_seed.min(0)[pos], floor), per_seed.max(0)[pos]),
                      fmt="none", ecolor="0.1", elinewidth=1, capsize=2)
        ax_b.axvline(1.0, color="crimson", lw=1, ls="--")
        ax_b.set_xlim(left=floor)
        for yy in y[~pos]:
            ax_b.text(floor * 1.1, yy, "0 (no score)", va="center", fontsize=7, color="0.3")
        _log_axis(ax_b)
        ax_b.set_xlabel("enrichment: score share / parameter share")
        ax_b.set_title(f"per tensor\n(whiskers: min–max over {len(seeds)} seeds; red: 1)", fontsize=9)
        ax_b.grid(axis="x", alpha=0.3)
        ax_b.tick_params(labelleft=False)
        jac = heat_summary.get(method, {}).get("seed_jaccard_top1pct")
        jac_txt = f"; top-1% overlap across seeds (Jaccard) {jac:.3f}, chance ≈ 0.005" if jac is not None else ""
        what = ("Attribution heatmap: mean over RBs of |IG_i|, the behaviour change MA -> MB_i by parameter"
                if method == "attribution" else f"Update-signal heatmap, aggregator '{method}'")
        fig.suptitle(f"{what} (mean over {len(seeds)} seeds{jac_txt})", fontsize=11)
        figs.append((f"heatmap_{method}", f"Aggregator: {method}", fig,
                     f"Per-unit and per-tensor score of the '{method}' heatmap; bars show the seed-mean heatmap's "
                     "enrichment, whiskers the range over seeds."))
    write_csv(out, "heatmap_tensors.csv", tensor_rows,
               ["aggregator", "tensor", "numel", "score_share", "enrichment", "enrichment_seed_min", "enrichment_seed_max"])
    write_csv(out, "heatmap_units.csv", unit_rows, ["aggregator", "tensor", "unit", "enrichment"])

    # Per RB: |Δ_i| per tensor (from records, control drift included) and per unit (from per_rb.safetensors).
    layer_fig = _fig_per_rb_tensors(run, out, params)
    if layer_fig is not None:
        figs.append(("heatmap_per_rb_tensors", "Each RB separately: |Δ| per tensor", layer_fig,
                     "Mean |Δ| per parameter in each tensor for each RB's update signal and for the control drift "
                     "(MA trained on RA for the same budget); bars = seed mean, whiskers = min–max over seeds."))
    unit_fig = _fig_per_rb_units(run, out, params)
    if unit_fig is not None:
        figs.append(("heatmap_per_rb_units", "Each RB separately: |Δ| per unit", unit_fig,
                     "Per-unit mean |Δ_i| (seed mean) of each RB's update signal on one shared log colour scale."))
    return figs


def _fig_per_rb_tensors(run: Run, out: Path, params: list[str]):
    vals: dict[str, dict[str, list[float]]] = {}
    for r in run.records:
        if r["stage"] == "signals" and r["metric"] == "mean_abs" and r["model"].startswith("Δ "):
            vals.setdefault(r["model"][2:], {}).setdefault(r["detail"], []).append(r["value"])
    if not vals:
        return None
    names = [rb.name for rb in run.rbs if rb.name in vals] + [n for n in vals if n not in {rb.name for rb in run.rbs}]
    ps = [p for p in params if p in vals[names[0]]] or list(vals[names[0]])
    rows = [{"signal": n, "tensor": p, "mean_abs_seed_mean": float(np.mean(vals[n][p])), "seed_min": float(np.min(vals[n][p])),
             "seed_max": float(np.max(vals[n][p])), "seeds": len(vals[n][p])} for n in names for p in ps if p in vals[n]]
    write_csv(out, "heatmap_per_rb_tensors.csv", rows)
    ncol = min(len(names), 5)
    nrow = math.ceil(len(names) / ncol)
    fig = new_figure(2.9 * ncol + 1.2, (0.3 * len(ps) + 1.3) * nrow + 0.5)
    axes = fig.subplots(nrow, ncol, squeeze=False, sharex=True, sharey=True)
    y = np.arange(len(ps))
    for i, ax in enumerate(axes.flat):
        if i >= len(names):
            ax.set_visible(False)
            continue
        n = names[i]
        m = np.array([np.mean(vals[n].get(p, [np.nan])) for p in ps])
        lo = np.array([np.min(vals[n].get(p, [np.nan])) for p in ps])
        hi = np.array([np.max(vals[n].get(p, [np.nan])) for p in ps])
        is_control = "control" in n
        ax.barh(y, m, color="0.55" if is_control else "#21918c", height=0.6)
        ax.errorbar(m, y, xerr=err_bars(m, lo, hi), fmt="none", ecolor="0.1", elinewidth=0.9, capsize=1.5)
        ax.set_xscale("log")
        ax.set_title(("Δ " if not is_control else "drift ") + n, fontsize=9)
        ax.grid(axis="x", alpha=0.3, which="both")
        ax.set_yticks(y, ps, fontsize=7)
        ax.invert_yaxis() if i == 0 else None
        if i % ncol == 0:
            ax.set_ylabel("parameter tensor")
        if i >= len(names) - ncol:
            ax.set_xlabel("mean |Δ| per parameter (log)")
    fig.suptitle("Per-RB update signals |Δ_i| = |MB_i − MA| per tensor (grey: control drift, MA on RA)\n"
                 "whiskers = min–max over seeds", fontsize=10)
    return fig


def _fig_per_rb_units(run: Run, out: Path, params: list[str]):
    path = run.path / "heatmaps" / "per_rb.safetensors"
    if not path.exists():
        return None
    h = load_heatmap(path)
    by_rb: dict[str, dict[str, list[np.ndarray]]] = {}
    for k, v in h.items():
        seed, rest = k.split("/", 1)
        rb, p = rest.rsplit("/", 1)
        by_rb.setdefault(rb, {}).setdefault(p, []).append(v)
    if not by_rb:
        return None
    names = [rb.name for rb in run.rbs if rb.name in by_rb] + [n for n in by_rb if n not in {rb.name for rb in run.rbs}]
    ps = [p for p in params if p in by_rb[names[0]]] or list(by_rb[names[0]])
    mats, rows = {}, []
    for n in names:
        mean = {p: np.mean(by_rb[n][p], axis=0) for p in ps}
        width = max(_units(mean[p]).size for p in ps)
        m = np.full((len(ps), width), np.nan)
        for i, p in enumerate(ps):
            u = _units(mean[p])
            m[i, : u.size] = u
            rows += [{"rb": n, "tensor": p, "unit": j, "mean_abs_delta": float(x)} for j, x in enumerate(u)]
        mats[n] = (m, _row_labels(mean, ps))
    write_csv(out, "heatmap_per_rb_units.csv", rows, ["rb", "tensor", "unit", "mean_abs_delta"])
    norm = _log_norm(np.concatenate([m.ravel() for m, _ in mats.values()]))
    fig = new_figure(12.5, (0.3 * len(ps) + 1.0) * len(names) + 0.8)
    axes = fig.subplots(len(names), 1, squeeze=False, sharex=True)[:, 0]
    im = None
    for ax, n in zip(axes, names):
        m, labels = mats[n]
        im = _draw_unit_matrix(fig, ax, m, labels, norm, "magma", "", cbar=False)
        ax.set_title(f"|Δ| for RB = {n}", fontsize=9, loc="left")
        if ax is not axes[-1]:
            ax.set_xlabel("")
    fig.colorbar(im, ax=list(axes), label="mean |Δ| per parameter of the unit (log)", extend="min", shrink=0.6)
    fig.suptitle("Per-RB heatmaps: mean |MB_i − MA| per output unit / channel, seed mean", fontsize=11)
    return fig


def frozen_units(run) -> list[dict]:
    """Per tensor: how many output units have an update of exactly zero (e.g. dead ReLU units), over seeds x RBs."""
    run = as_run(run)
    path = run.path / "heatmaps" / "per_rb.safetensors"
    if not path.exists():
        return []
    counts: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}
    for k, v in load_heatmap(path).items():
        p = k.rsplit("/", 1)[1]
        u = v.reshape(1, -1) if v.ndim == 0 else v.reshape(v.shape[0], -1)
        counts.setdefault(p, []).append(int((np.abs(u).max(1) == 0).sum()))
        sizes[p] = u.shape[0]
    return [{"tensor": p, "units": sizes[p], "zero_mean": float(np.mean(c)), "zero_min": min(c), "zero_max": max(c),
             "signals": len(c)} for p, c in counts.items()]


MAX_FIGURE_INCHES = 30.0  # the cosine matrix's side: at most 3,000 pixels, however many signals
MAX_LABELLED = 64  # signals named on the matrix's axes; beyond, the names are in cosine.csv


def read_cosine(path: Path) -> tuple[list[str], np.ndarray]:
    """``signals/cosine.json`` as (names, n x n matrix), bounded like every JSON file of a run (bytes and values,
    :func:`goalscope.inputs.read_json`: at most ~440 signals) and shape-checked; a damaged one is one
    GoalscopeError naming it."""
    from goalscope.errors import GoalscopeError
    from goalscope.inputs import read_json

    redo = "recompute it with `goalscope run EXPERIMENT --out RUN --force analysis`"
    data = read_json(path, advice=redo)
    names = data.get("names") if isinstance(data, dict) else None
    rows = data.get("matrix") if isinstance(data, dict) else None
    n = len(names) if isinstance(names, list) else -1
    if (n < 0 or not all(isinstance(x, str) for x in names) or not isinstance(rows, list) or len(rows) != n
            or not all(isinstance(r, list) and len(r) == n for r in rows)):
        raise GoalscopeError(f"{path} is damaged (not a list of names and a square matrix of as many rows); {redo}")
    try:
        return names, np.asarray(rows, dtype=float).reshape(n, n)
    except (TypeError, ValueError):
        raise GoalscopeError(f"{path} is damaged (a cosine that is not a number); {redo}") from None


def fig_cosine(run, out: Path | None = None):
    """Cosine similarity of every pair of update signals, and a summary by pair type; None without
    signals/cosine.json. With ``out``, writes cosine.csv and cosine_groups.csv there."""
    run = as_run(run)
    path = run.path / "signals" / "cosine.json"
    if not path.exists():
        return None
    names, mat = read_cosine(path)
    if not names:
        return None
    write_csv(out, "cosine.csv", [{"a": a, "b": b, "cosine": float(mat[i, j])}
                                    for i, a in enumerate(names) for j, b in enumerate(names)], ["a", "b", "cosine"])
    groups = [r for r in run.records if r["stage"] == "signals" and r["model"] == "cosine"]
    from matplotlib.colors import TwoSlopeNorm

    n = len(names)
    size = min(max(5.0, 0.42 * n + 2.5), MAX_FIGURE_INCHES)  # 400 signals once asked for 13 GB of canvas
    fig = new_figure(size + (4.2 if groups else 0), size)
    if groups:
        left, right = fig.subfigures(1, 2, width_ratios=[size, 4.2])
        ax = left.subplots(1, 1)
        ax_g, spare = right.subplots(2, 1, height_ratios=[1, 1.6])
        spare.set_visible(False)
    else:
        ax, ax_g = fig.subplots(1, 1), None
    im = ax.imshow(mat, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -1.0, 1.0), interpolation="nearest")
    if n <= MAX_LABELLED:
        ax.set_xticks(range(n), names, rotation=60, ha="right", fontsize=7)
        ax.set_yticks(range(n), names, fontsize=7)
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, f"{mat[i, j]:.2f}", ha="center", va="center", fontsize=6,
                        color="white" if abs(mat[i, j]) > 0.6 else "black")
    seeds = [nm.split(" | ")[0] for nm in names]
    for i in range(1, n):
        if seeds[i] != seeds[i - 1]:
            ax.axhline(i - 0.5, color="k", lw=0.8)
            ax.axvline(i - 0.5, color="k", lw=0.8)
    (ax.figure if groups else fig).colorbar(im, ax=ax, label="cosine similarity of update signals", shrink=0.8)
    ax.set_title("Δ_i = MB_i − MA and the control drift, all pairs (lines separate seeds)", fontsize=9)
    if ax_g is not None:
        y = np.arange(len(groups))
        m = np.array([g["value"] for g in groups])
        lo, hi = np.array([g["ci_low"] for g in groups]), np.array([g["ci_high"] for g in groups])
        ax_g.errorbar(m, y, xerr=err_bars(m, lo, hi), fmt="o", color="#3b528b", capsize=3)
        ax_g.axvline(0, color="k", lw=0.8)
        ax_g.set_yticks(y, [g["metric"].replace("_", " ") for g in groups], fontsize=8)
        ax_g.set_xlim(-1, 1)
        ax_g.set_xlabel("cosine similarity")
        ax_g.set_ylim(-0.6, len(groups) - 0.4)
        ax_g.set_title("summary by pair type\n(dot: mean, bar: min–max over pairs)", fontsize=9)
        ax_g.grid(axis="x", alpha=0.3)
        write_csv(out, "cosine_groups.csv", [{"pairs": g["metric"], "mean": g["value"], "min": g["ci_low"], "max": g["ci_high"]}
                                               for g in groups])
    fig.suptitle("Cosine similarity between update signals (diverging scale centred at 0)", fontsize=11)
    return fig
