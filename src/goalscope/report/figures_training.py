"""Figures of training and behaviour: learning curves of every model, and behaviour profiles (objects collected per
episode by type, with hierarchical bootstrap CIs). Each ``fig_*`` returns a matplotlib Figure; with ``out`` it also
writes the CSV of the data behind it.

May import: goalscope.report.run, goalscope.report.common, goalscope.analysis, goalscope.program.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from goalscope.analysis.stats import bootstrap_means
from goalscope.program.runner import CONTROL_MODELS
from goalscope.report.common import err_bars, new_figure, type_colors, write_csv
from goalscope.report.run import as_run

N_BOOT_MAX = 1000  # bootstrap resamples for the behaviour CIs (the analysis' own CIs are read from records.csv)


MAX_LOG_BYTES = 64 << 20  # a stage's train_log.csv: one row per PPO update, ~1 KB each
MAX_LOG_ROWS = 200_000  # a 3-million-row log once took the report 100 s and 1.9 GB


def _read_log(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(steps, episode returns) of a stage's train_log.csv, streamed with its bytes and rows capped: a log
    past either is a GoalscopeError naming it (the section says so; the rest of the report is drawn)."""
    from goalscope.errors import GoalscopeError

    steps, rets = [], []
    if not path.exists():
        return np.zeros(0), np.zeros(0)
    redo = "retrain that stage (`goalscope run EXPERIMENT --out RUN --force STAGE`)"
    if path.stat().st_size > MAX_LOG_BYTES:
        raise GoalscopeError(f"{path} is {path.stat().st_size:,} bytes, more than the {MAX_LOG_BYTES:,} goalscope "
                             f"reads from a training log; {redo}")
    with open(path, newline="", encoding="utf-8", errors="replace") as f:
        for n, row in enumerate(csv.DictReader(f)):
            if n >= MAX_LOG_ROWS:
                raise GoalscopeError(f"{path} has more than {MAX_LOG_ROWS:,} rows, more than goalscope reads from a "
                                     f"training log; {redo}")
            r = row.get("charts/episode_return", "")
            if r not in ("", None) and row.get("step") not in ("", None):
                steps.append(float(row["step"]))
                rets.append(float(r))
    return np.asarray(steps), np.asarray(rets)


def _pool_curves(curves: list[tuple[np.ndarray, np.ndarray]]):
    """Curves of several runs on the first one's step grid: (steps, mean, min, max, n runs)."""
    curves = [(x, y) for x, y in curves if len(x)]
    if not curves:
        return None
    grid = curves[0][0]
    hi_step = min(x[-1] for x, _ in curves)
    grid = grid[grid <= hi_step] if (grid <= hi_step).any() else grid[:1]
    ys = np.stack([np.interp(grid, x, y) for x, y in curves])
    return grid, ys.mean(0), ys.min(0), ys.max(0), len(curves)


def fig_learning_curves(run, out: Path | None = None):
    """Learning curves of MA, the MBs and controls, and the retrained negations: mean over seeds, band = min–max.
    With ``out``, writes learning_curves.csv there."""
    run = as_run(run)
    p = run.plan
    groups: dict[str, list[tuple[str, list[str]]]] = {"a": [], "b": [], "c": []}
    groups["a"].append((f"MA on RA ({run.ra.name})", [k for k in p.ma.values()]))
    if p.ma_other:
        groups["a"].append(("MA' (other init) on RA", list(p.ma_other.values())))
    for rb in run.rbs:
        groups["b"].append((f"MB[{rb.name}] on its RB", [k for (s, r), k in p.mb.items() if r == rb.name]))
    if p.control:
        groups["b"].append(("control: MA on RA", list(p.control.values())))
    for a in run.cfg.negate.alphas if run.cfg.negate.enabled else []:
        groups["c"].append((f"MB* α={a:g} (all RBs)", [k for (s, r, al, d), k in p.negated.items() if al == a and d == "delta"]))
    if run.cfg.negate.enabled and run.cfg.negate.random_control:
        groups["c"].append(("random directions (all α, RBs)", [k for (s, r, al, d), k in p.negated.items()
                                                               if d.startswith("random")]))
    if p.retrain_control:
        groups["c"].append(("control: MA retrained", list(p.retrain_control.values())))
    titles = {"a": "(a) MA: training from scratch on RA",
              "b": "(b) fine-tuning from MA",
              "c": "(c) retraining on RA after negation"}
    panels = [g for g in "abc" if groups[g]]
    fig = new_figure(5.0 * len(panels), 4.2)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    from matplotlib import colormaps

    rows = []
    for ax, g in zip(axes, panels):
        cmap = colormaps["tab10"]
        for i, (label, keys) in enumerate(groups[g]):
            keys = [k for k in keys if k in run.ok]
            logs = [_read_log(run.stage(k) / "train_log.csv") for k in keys]
            for k, (x, y) in zip(keys, logs):
                rows += [{"panel": g, "model": label, "key": k, "step": float(a), "episode_return": float(b)} for a, b in zip(x, y)]
            pooled = _pool_curves(logs)
            if pooled is None:
                continue
            x, m, lo, hi, n = pooled
            color = "0.35" if label.startswith("control") else ("0.6" if label.startswith("random") else cmap(i % 10))
            style = "--" if label.startswith(("control", "random")) else "-"
            ax.plot(x, m, style, color=color, lw=1.6, label=f"{label} (n={n})", marker="o" if len(x) < 8 else None, ms=3)
            ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)
        ax.set_title(titles[g], fontsize=10)
        ax.set_xlabel("environment steps" + (" since MA" if g != "a" else ""))
        ax.set_ylabel("episode return (training episodes)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
        ax.ticklabel_format(axis="x", style="sci", scilimits=(0, 3))
    fig.suptitle("Learning curves: mean over seeds, band = min–max over runs", fontsize=11)
    write_csv(out, "learning_curves.csv", rows, ["panel", "model", "key", "step", "episode_return"])
    return fig


def behaviour_table(run) -> list[dict]:
    """Objects of each type per episode, per model: mean and 95% CI over seeds x episodes."""
    run = as_run(run)
    from goalscope.program.jobs import load_profile

    by_model: dict[str, dict] = {}
    for group, model, seed, key, fname in run.models():
        if not (run.stage(key) / fname).exists():
            continue
        entry = by_model.setdefault(model, {"group": group, "counts": []})
        entry["counts"].append(load_profile(run.path, key, fname).counts)
    rows = []
    n_boot = min(N_BOOT_MAX, int(run.cfg.evaluation.bootstrap))
    for model, entry in by_model.items():
        e = min(c.shape[0] for c in entry["counts"])
        counts = np.stack([c[:e] for c in entry["counts"]])  # (S, E, K)
        mean, lo, hi = bootstrap_means(counts, n_boot)
        for k in range(counts.shape[2]):
            rows.append({"group": entry["group"], "model": model, "type": k, "type_label": run.type_label(k),
                         "mean": float(mean[k]), "ci_low": float(lo[k]), "ci_high": float(hi[k]),
                         "seeds": counts.shape[0], "episodes": e})
    return rows


def fig_behaviour(run, out: Path | None = None, rows: list[dict] | None = None):
    """Bars of objects collected per episode by type, per model, with 95% CIs (``rows`` from
    :func:`behaviour_table`, computed when not given)."""
    run = as_run(run)
    rows = behaviour_table(run) if rows is None else rows
    K = run.cfg.env.n_types
    colors = type_colors(K)
    models = list(dict.fromkeys(r["model"] for r in rows))
    panels = [("(a) MA, each MB and the controls",
               [m for m in models if m in ("MA", "MA'") or m.startswith("MB[") or m in CONTROL_MODELS])]
    retrained = [m for m in models if m == CONTROL_MODELS[1]]
    star = [m for m in models if m.startswith("MB*[") and not m.endswith("before retrain")]
    rand = [m for m in models if m.startswith("random[") and not m.endswith("before retrain")]
    if star:
        panels.append(("(b) MB* = MA − αΔ after retraining on RA (per RB and α)", retrained + star))
    if rand:
        panels.append(("(c) random direction of the same size, after the same retraining", retrained + rand))
    fig = new_figure(max(8.0, 0.55 * max(len(m) for _, m in panels) * (K + 1) / 3 + 2), 3.4 * len(panels) + 0.6)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    table = {(r["model"], r["type"]): r for r in rows}
    width = 0.8 / K
    for ax, (title, ms) in zip(axes, panels):
        x = np.arange(len(ms))
        for k in range(K):
            vals = [table[(m, k)] for m in ms]
            means = np.array([v["mean"] for v in vals])
            err = err_bars(means, [v["ci_low"] for v in vals], [v["ci_high"] for v in vals])
            ax.bar(x + (k - (K - 1) / 2) * width, means, width, yerr=err, color=colors[k], label=run.type_label(k),
                   error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "0.15"})
        flat = len(ms) <= 14
        ax.set_xticks(x, [m.replace(" a=", "\nα=").replace(": ", ":\n") for m in ms], fontsize=8,
                      rotation=0 if flat else 35, ha="center" if flat else "right")
        ax.set_ylabel("objects collected per episode" if run.event_word == "objects" else f"{run.event_word} per episode")
        ax.set_title(title, fontsize=10, loc="left")
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))
        ax.set_axisbelow(True)
    axes[0].legend(fontsize=8, ncol=min(K, 5), loc="upper right", title="object type", title_fontsize=8)
    fig.suptitle(f"Behaviour profiles: mean objects per evaluation episode ({run.cfg.evaluation.episodes} episodes × "
                 f"{len(run.cfg.seeds)} seeds)\nerror bars: 95% hierarchical bootstrap CI over seeds, then episodes",
                 fontsize=11)
    return fig
