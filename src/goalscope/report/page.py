"""The run report: one self-contained HTML page that answers the experiment's questions with figures and numbers.

``goalscope report runs/NAME`` reads a finished run directory and writes ``runs/NAME/report/``:

    index.html              every figure embedded as a base64 PNG, no external JS, CSS or fonts (opens offline)
    <figure>.png / .svg     each figure on its own, raster and vector
    <figure>.csv            the tidy data behind each figure

Sections (each opens with the question it answers):

    1. learning curves          did MA, the MBs and the controls learn?            train_log.csv of every stage
    2. behaviour profiles       what does each model collect?                      profile.json, 95% hierarchical CIs
    3. update-signal heatmaps   where in the network do the Δs live?               heatmaps/*.safetensors
    4. cosine similarity        are the Δs goal-specific or shared drift?          signals/cosine.json
    5. negate and retrain       does MA − αΔ lean away from RB, beyond controls?   records.csv, summary.json
    6. maze pictures            what do MA, an MB and an MB* actually do?          checkpoints, rolled out here
    7. validation               grafting curves, localisation AUROC                scorecard.json, when present
    8. config and provenance    what was run, with what, and how long it took      experiment.json, meta.json

Nothing here trains or changes the run; the only computation beyond reading files is bootstrapping CIs and rolling
out three policies for the maze pictures. matplotlib is imported inside the functions that draw.
"""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import html
import io
import json
import math
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from goalscope.errors import ConfigError
from goalscope.program.runner import CONTROL_MODELS
from goalscope.analysis.stats import bootstrap_means

REPORT_DIR = "report"
SCORECARD = "scorecard.json"
NULL_NAMES = ("random", "Fisher alone (MA)", "|Δ_ctrl| (RA control drift)", "another RB's |Δ_j|")  # validation.NULLS
N_BOOT_MAX = 1000  # bootstrap resamples for the behaviour CIs (the analysis' own CIs are read from records.csv)
DPI = 110


# ----------------------------------------------------------------------------------------------------------------
# Loading the run


@dataclass
class Run:
    """Everything the report reads from a run directory, with each stage given its role in the experiment."""

    path: Path
    cfg: object  # ExperimentConfig
    plan: object  # runner.Plan
    experiment: dict
    summary: dict
    records: list[dict]
    status: dict[str, dict]  # key -> done.json of every finished stage of the plan
    ok: set[str] = field(default_factory=set)
    _checkpoints: dict = field(default_factory=dict)

    def checkpoint(self, key: str):
        """The stage's checkpoint, loaded once (loading builds the model, which is not free)."""
        from goalscope.agents.checkpoints import load_checkpoint

        if key not in self._checkpoints:
            self._checkpoints[key] = load_checkpoint(self.stage(key))
        return self._checkpoints[key]

    @property
    def ra(self):
        return self.cfg.ra

    @property
    def rbs(self) -> list:
        return self.cfg.rbs()

    def stage(self, key: str) -> Path:
        return self.path / "stages" / key

    def type_label(self, k: int) -> str:
        tags = []
        if k in set(self.ra.rewarded_types().tolist()):
            tags.append("RA")
        tags += [rb.name for rb in self.rbs if len(rb.rewarded_types()) == 1 and rb.rewarded_types()[0] == k]
        return f"type {k}" + (f" ({', '.join(tags)})" if tags else "")

    def models(self) -> list[tuple[str, str, int, str, str]]:
        """(group, model label, seed, job key, profile file) of every model, in display order, finished ones only."""
        return [m for m in self.plan.models() if m[3] in self.ok]


def load_run(run_dir: str | Path) -> Run:
    from goalscope.program.config import experiment_from_dict
    from goalscope.analysis.records import read_records
    from goalscope.program.runner import EXPERIMENT_FILE, plan_experiment

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir} does not exist; run `goalscope run EXPERIMENT --out {run_dir}` first")
    for name in (EXPERIMENT_FILE, "summary.json", "records.csv"):
        if not (run_dir / name).exists():
            raise ConfigError(f"{run_dir} has no {name}; finish the run with `goalscope run EXPERIMENT --out {run_dir}` "
                              "before writing its report")
    try:
        experiment = json.loads((run_dir / EXPERIMENT_FILE).read_text())
        summary = json.loads((run_dir / "summary.json").read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{run_dir}: corrupt JSON: {e}") from None
    cfg = experiment_from_dict(experiment)
    found = {}
    for done in sorted((run_dir / "stages").glob("*/done.json")) if (run_dir / "stages").is_dir() else []:
        try:
            found[done.parent.name] = {**json.loads(done.read_text()), "_mtime": done.stat().st_mtime}
        except json.JSONDecodeError:
            continue
    plan = plan_experiment(cfg)
    if not all(j.key in found for j in plan.jobs()):
        # The run's stage keys are hashes of job specs written by the goalscope that ran it; a later version (a new
        # config field with a default, say) computes other keys. Find each stage's role from its done.json instead.
        plan = roles_from_stages(cfg, found)
    keys = {k for d in (plan.ma, plan.ma_other, plan.mb, plan.control, plan.retrain_control, plan.negated,
                        plan.mb_rep, plan.control_rep) for k in d.values()}
    status = {k: found[k] for k in keys if k in found}
    ok = {k for k, st in status.items() if st.get("status") == "ok"}
    return Run(run_dir, cfg, plan, experiment, summary, read_records(run_dir / "records.csv"), status, ok)


def roles_from_stages(cfg, found: dict[str, dict]):
    """A ``Plan`` (role -> stage key) rebuilt from the stages' own done.json (kind, label, spec).

    MA: a train job with one of the config's seeds (MA': seed + OTHER_SEED_OFFSET). Fine-tunes hang off an MA by their
    ``parent`` key: an RB's reward makes an MB, RA's reward a control (the retrain control is labelled so). Negations
    name their MA and MB. Stages that fit no role of this config are left out; of two candidates the newer wins.
    """
    from goalscope.program.runner import OTHER_SEED_OFFSET, Plan, direction_seed

    plan = Plan()
    rbs = {rb.name for rb in cfg.rbs()}
    alphas = {float(a) for a in cfg.negate.alphas}
    order = sorted(found, key=lambda k: found[k].get("_mtime", 0.0))
    for key in order:
        st = found[key]
        if st.get("kind") != "train":
            continue
        seed = st.get("spec", {}).get("seed")
        if seed in cfg.seeds:
            plan.ma[seed] = key
        elif isinstance(seed, int) and seed - OTHER_SEED_OFFSET in cfg.seeds:
            plan.ma_other[seed - OTHER_SEED_OFFSET] = key
    seed_of = {k: s for s, k in plan.ma.items()}
    for key in order:
        st = found[key]
        spec = st.get("spec", {})
        if st.get("kind") != "finetune" or spec.get("parent") not in seed_of:
            continue
        s, reward = seed_of[spec["parent"]], spec.get("reward", {}).get("name")
        label = str(st.get("label", ""))
        rep = int(label.rsplit(" ft", 1)[1]) if " ft" in label and label.rsplit(" ft", 1)[1].isdigit() else 0
        if reward in rbs and not label.startswith("control"):
            if rep:
                plan.mb_rep[(s, reward, rep)] = key
            else:
                plan.mb[(s, reward)] = key
        elif reward == cfg.ra.name:
            if rep:
                plan.control_rep[(s, rep)] = key
            else:
                (plan.retrain_control if "retrain" in label else plan.control)[s] = key
    rb_of = {k: rb for (s, rb), k in plan.mb.items()}
    for key in order:
        st = found[key]
        spec = st.get("spec", {})
        if st.get("kind") != "negate" or spec.get("ma") not in seed_of or spec.get("mb") not in rb_of:
            continue
        alpha = float(spec.get("alpha", math.nan))
        direction = spec.get("direction", "delta")
        if direction == "random" and "direction_seed" in spec:  # which of the fresh random directions this is
            s, rb = seed_of[spec["ma"]], rb_of[spec["mb"]]
            direction = next((d for d in (f"random{j or ''}" for j in range(64))
                              if direction_seed(s, rb, alpha, d) == spec["direction_seed"]), direction)
        if alpha in alphas:
            plan.negated[(seed_of[spec["ma"]], rb_of[spec["mb"]], alpha, direction)] = key
    return plan


# ----------------------------------------------------------------------------------------------------------------
# Small helpers: figures, CSVs, numbers


def _figure(w: float, h: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig, out: Path, name: str) -> bytes:
    """Write ``name``.png and ``name``.svg; return the PNG bytes for embedding."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    png = buf.getvalue()
    (out / f"{name}.png").write_bytes(png)
    fig.savefig(out / f"{name}.svg", format="svg", facecolor="white")
    return png


def _write_csv(path: Path, rows: list[dict], columns: list[str] | None = None) -> None:
    columns = columns or (list(rows[0]) if rows else ["empty"])
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, columns, lineterminator="\n", extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})


def _type_colors(k: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if k <= 10 else "tab20"]
    return [cmap(i) for i in range(k)]


def _pct(x) -> str:
    return "n/a" if x is None or not math.isfinite(x) else f"{x:.1%}"


def _ci_text(m, lo, hi, fmt="+.3f") -> str:
    if m is None or not math.isfinite(m):
        return "n/a"
    if lo is None or not (math.isfinite(lo) and math.isfinite(hi)):
        return f"{m:{fmt}}"
    return f"{m:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]"


def _err(m, lo, hi) -> np.ndarray:
    """Error-bar lengths below and above ``m`` (never negative; NaN bounds draw no bar)."""
    m, lo, hi = (np.asarray(v, dtype=float) for v in (m, lo, hi))
    return np.nan_to_num(np.clip(np.stack([m - lo, hi - m]), 0.0, None), nan=0.0)


def _read_log(path: Path) -> tuple[np.ndarray, np.ndarray]:
    steps, rets = [], []
    if not path.exists():
        return np.zeros(0), np.zeros(0)
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
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


def fig_learning_curves(run: Run, out: Path):
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
    fig = _figure(5.0 * len(panels), 4.2)
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
    _write_csv(out / "learning_curves.csv", rows, ["panel", "model", "key", "step", "episode_return"])
    return fig


# ----------------------------------------------------------------------------------------------------------------
# 2. Behaviour profiles


def behaviour_table(run: Run) -> list[dict]:
    """Objects of each type per episode, per model: mean and 95% CI over seeds x episodes."""
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


def fig_behaviour(run: Run, out: Path, rows: list[dict]):
    K = run.cfg.env.n_types
    colors = _type_colors(K)
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
    fig = _figure(max(8.0, 0.55 * max(len(m) for _, m in panels) * (K + 1) / 3 + 2), 3.4 * len(panels) + 0.6)
    axes = fig.subplots(len(panels), 1, squeeze=False)[:, 0]
    table = {(r["model"], r["type"]): r for r in rows}
    width = 0.8 / K
    for ax, (title, ms) in zip(axes, panels):
        x = np.arange(len(ms))
        for k in range(K):
            vals = [table[(m, k)] for m in ms]
            means = np.array([v["mean"] for v in vals])
            err = _err(means, [v["ci_low"] for v in vals], [v["ci_high"] for v in vals])
            ax.bar(x + (k - (K - 1) / 2) * width, means, width, yerr=err, color=colors[k], label=run.type_label(k),
                   error_kw={"elinewidth": 0.8, "capsize": 1.5, "ecolor": "0.15"})
        flat = len(ms) <= 14
        ax.set_xticks(x, [m.replace(" a=", "\nα=").replace(": ", ":\n") for m in ms], fontsize=8,
                      rotation=0 if flat else 35, ha="center" if flat else "right")
        ax.set_ylabel("objects collected per episode")
        ax.set_title(title, fontsize=10, loc="left")
        ax.grid(axis="y", alpha=0.3)
        ax.set_ylim(0, max(1.0, ax.get_ylim()[1]))
        ax.set_axisbelow(True)
    axes[0].legend(fontsize=8, ncol=min(K, 5), loc="upper right", title="object type", title_fontsize=8)
    fig.suptitle(f"Behaviour profiles: mean objects per evaluation episode ({run.cfg.evaluation.episodes} episodes × "
                 f"{len(run.cfg.seeds)} seeds)\nerror bars: 95% hierarchical bootstrap CI over seeds, then episodes",
                 fontsize=11)
    return fig


# ----------------------------------------------------------------------------------------------------------------
# 3. Update-signal heatmaps


def _load_heatmap(path: Path) -> dict:
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


def heatmap_figures(run: Run, out: Path) -> list[tuple[str, str, object, str]]:
    """One figure per aggregator, plus per-RB figures: (name, title, figure, caption)."""
    heat_dir = run.path / "heatmaps"
    params = _param_order(run)
    figs, unit_rows, tensor_rows = [], [], []
    methods = [m for m in run.cfg.superpose.methods if (heat_dir / f"{m}.safetensors").exists()]
    heat_summary = run.summary.get("heatmaps", {})
    for method in methods:
        h = _load_heatmap(heat_dir / f"{method}.safetensors")
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
        fig = _figure(13.0, 0.42 * len(ps) + 1.9)
        ax_m, ax_b = fig.subplots(1, 2, width_ratios=[2.6, 1.2], sharey=True)
        _draw_unit_matrix(fig, ax_m, mat, _row_labels(mean, ps), _log_norm(mat), "viridis",
                          "unit mean score / network mean (log)")
        ax_m.set_ylabel("parameter tensor (shape)")
        ax_m.set_title("per output unit / channel", fontsize=10)
        y = np.arange(len(ps))
        pos = enr > 0
        floor = float(min(enr[pos].min(), per_seed[per_seed > 0].min(initial=np.inf))) / 3 if pos.any() else 1e-3
        ax_b.barh(y[pos], enr[pos], color="#3b528b", height=0.6)
        ax_b.errorbar(enr[pos], y[pos], xerr=_err(enr[pos], np.maximum(per_seed.min(0)[pos], floor), per_seed.max(0)[pos]),
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
        fig.suptitle(f"Update-signal heatmap, aggregator '{method}' (mean over {len(seeds)} seeds{jac_txt})", fontsize=11)
        figs.append((f"heatmap_{method}", f"Aggregator: {method}", fig,
                     f"Per-unit and per-tensor score of the '{method}' heatmap; bars show the seed-mean heatmap's "
                     "enrichment, whiskers the range over seeds."))
    _write_csv(out / "heatmap_tensors.csv", tensor_rows,
               ["aggregator", "tensor", "numel", "score_share", "enrichment", "enrichment_seed_min", "enrichment_seed_max"])
    _write_csv(out / "heatmap_units.csv", unit_rows, ["aggregator", "tensor", "unit", "enrichment"])

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
    _write_csv(out / "heatmap_per_rb_tensors.csv", rows)
    ncol = min(len(names), 5)
    nrow = math.ceil(len(names) / ncol)
    fig = _figure(2.9 * ncol + 1.2, (0.3 * len(ps) + 1.3) * nrow + 0.5)
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
        ax.errorbar(m, y, xerr=_err(m, lo, hi), fmt="none", ecolor="0.1", elinewidth=0.9, capsize=1.5)
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
    h = _load_heatmap(path)
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
    _write_csv(out / "heatmap_per_rb_units.csv", rows, ["rb", "tensor", "unit", "mean_abs_delta"])
    norm = _log_norm(np.concatenate([m.ravel() for m, _ in mats.values()]))
    fig = _figure(12.5, (0.3 * len(ps) + 1.0) * len(names) + 0.8)
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


def frozen_units(run: Run) -> list[dict]:
    """Per tensor: how many output units have an update of exactly zero (e.g. dead ReLU units), over seeds x RBs."""
    path = run.path / "heatmaps" / "per_rb.safetensors"
    if not path.exists():
        return []
    counts: dict[str, list[int]] = {}
    sizes: dict[str, int] = {}
    for k, v in _load_heatmap(path).items():
        p = k.rsplit("/", 1)[1]
        u = v.reshape(1, -1) if v.ndim == 0 else v.reshape(v.shape[0], -1)
        counts.setdefault(p, []).append(int((np.abs(u).max(1) == 0).sum()))
        sizes[p] = u.shape[0]
    return [{"tensor": p, "units": sizes[p], "zero_mean": float(np.mean(c)), "zero_min": min(c), "zero_max": max(c),
             "signals": len(c)} for p, c in counts.items()]


# ----------------------------------------------------------------------------------------------------------------
# 4. Cosine similarity


def fig_cosine(run: Run, out: Path):
    path = run.path / "signals" / "cosine.json"
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    names, mat = data["names"], np.asarray(data["matrix"], dtype=float)
    if not names:
        return None
    _write_csv(out / "cosine.csv", [{"a": a, "b": b, "cosine": float(mat[i, j])}
                                    for i, a in enumerate(names) for j, b in enumerate(names)], ["a", "b", "cosine"])
    groups = [r for r in run.records if r["stage"] == "signals" and r["model"] == "cosine"]
    from matplotlib.colors import TwoSlopeNorm

    n = len(names)
    size = max(5.0, 0.42 * n + 2.5)
    fig = _figure(size + (4.2 if groups else 0), size)
    if groups:
        left, right = fig.subfigures(1, 2, width_ratios=[size, 4.2])
        ax = left.subplots(1, 1)
        ax_g, spare = right.subplots(2, 1, height_ratios=[1, 1.6])
        spare.set_visible(False)
    else:
        ax, ax_g = fig.subplots(1, 1), None
    im = ax.imshow(mat, cmap="RdBu_r", norm=TwoSlopeNorm(0.0, -1.0, 1.0), interpolation="nearest")
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
        ax_g.errorbar(m, y, xerr=_err(m, lo, hi), fmt="o", color="#3b528b", capsize=3)
        ax_g.axvline(0, color="k", lw=0.8)
        ax_g.set_yticks(y, [g["metric"].replace("_", " ") for g in groups], fontsize=8)
        ax_g.set_xlim(-1, 1)
        ax_g.set_xlabel("cosine similarity")
        ax_g.set_ylim(-0.6, len(groups) - 0.4)
        ax_g.set_title("summary by pair type\n(dot: mean, bar: min–max over pairs)", fontsize=9)
        ax_g.grid(axis="x", alpha=0.3)
        _write_csv(out / "cosine_groups.csv", [{"pairs": g["metric"], "mean": g["value"], "min": g["ci_low"], "max": g["ci_high"]}
                                               for g in groups])
    fig.suptitle("Cosine similarity between update signals (diverging scale centred at 0)", fontsize=11)
    return fig


# ----------------------------------------------------------------------------------------------------------------
# 5. Negate and retrain


NEG_METRICS = [("rb_objects", "RB objects per episode\n(MB* − control)"),
               ("specific_lean", "specific lean: RB − other non-RA types\n(objects per episode, MB* − control)"),
               ("ra_return", "RA return per episode\n(MB* − control)")]
NEG_CONTROLS = [("retrained_MA", "vs MA retrained alike", "#1f77b4", "o"),
                ("random_direction", "vs random direction, same size", "#ff7f0e", "s")]


def negation_rows(run: Run) -> list[dict]:
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


def fig_negation(run: Run, out: Path, rows: list[dict]):
    from matplotlib.ticker import MaxNLocator

    if not rows:
        return None
    _write_csv(out / "negation.csv", rows)
    entries = list(dict.fromkeys((r["rb"], r["alpha"]) for r in rows))
    table = {(r["rb"], r["alpha"], r["control"], r["metric"]): r for r in rows}
    controls = [c for c in NEG_CONTROLS if any(r["control"] == c[0] for r in rows)]
    fig = _figure(13.5, 0.42 * len(entries) + 2.2)
    axes = fig.subplots(1, len(NEG_METRICS), sharey=True)
    y = np.arange(len(entries))
    for ax, (metric, xlabel) in zip(axes, NEG_METRICS):
        for j, (ctrl, label, color, marker) in enumerate(controls):
            off = (j - (len(controls) - 1) / 2) * 0.22
            pts = [table.get((rb, a, ctrl, metric)) for rb, a in entries]
            m = np.array([p["value"] if p else np.nan for p in pts])
            lo = np.array([p["ci_low"] if p else np.nan for p in pts])
            hi = np.array([p["ci_high"] if p else np.nan for p in pts])
            ax.errorbar(m, y + off, xerr=_err(m, lo, hi), fmt=marker, color=color, ms=4.5, capsize=2, elinewidth=1.2,
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


# ----------------------------------------------------------------------------------------------------------------
# 6. Maze pictures


def rollout(model, env_cfg, reward, env_seed: int, action_seed: int):
    """One evaluation episode of ``model`` from the start state given by ``env_seed``.

    Returns the start grid (walls, objects), the agent's positions (row, col) from the start to the end, and the
    objects collected as (step, type, row, col).
    """
    import torch

    env = env_cfg.eval_config().make(reward, 1, seed=env_seed)
    obs = env.reset(env_seed)
    start = env.grid_state()
    walls, objects = start["walls"][0], start["objects"][0]
    path = [tuple(int(v) for v in start["pos"][0])]
    collected = []
    gen = torch.Generator().manual_seed(action_seed)
    model.eval()
    remaining = objects.copy()
    with torch.inference_mode():
        for t in range(1, env_cfg.max_steps + 1):
            logits, _ = model(torch.from_numpy(obs))
            action = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(-1).numpy()
            obs, _, _, _, info = env.step(action)
            if info:  # the episode ended: the env already shows the next one, the final position is in info
                pos = tuple(int(v) for v in info["final_pos"][0])
            else:
                pos = tuple(int(v) for v in env.grid_state()["pos"][0])
            path.append(pos)
            if remaining[pos] >= 0:
                collected.append((t, int(remaining[pos]), *pos))
                remaining[pos] = -1
            if info:
                break
    return walls, objects, np.asarray(path), collected


def maze_models(run: Run) -> list[tuple[str, str]]:
    """(title, job key): MA, one MB and that MB's negation (α closest to 1), all from the first finished seed."""
    p = run.plan
    for s in run.cfg.seeds:
        ma = p.ma.get(s)
        if ma not in run.ok:
            continue
        out = [(f"MA (RA = {run.ra.name})", ma)]
        for rb in run.rbs:
            mb = p.mb.get((s, rb.name))
            if mb not in run.ok:
                continue
            out.append((f"MB[{rb.name}]", mb))
            alphas = sorted((a for (ss, r, a, d) in p.negated if ss == s and r == rb.name and d == "delta"),
                            key=lambda a: abs(a - 1.0))
            for a in alphas:
                k = p.negated[(s, rb.name, a, "delta")]
                if k in run.ok:
                    out.append((f"MB*[{rb.name}] α={a:g} (retrained)", k))
                    break
            break
        return [(f"{t}, seed {s}", k) for t, k in out]
    return []


def fig_mazes(run: Run, out: Path, n_starts: int = 2):
    from matplotlib.collections import LineCollection
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D

    models = maze_models(run)
    if not models or getattr(run.cfg.env, "family", None) != "object_maze":
        return None  # pictures need the maze's grid state; other env families have no renderer here
    model = run.checkpoint(models[0][1]).build()  # one model, each checkpoint's weights loaded in turn
    built = [(title, run.checkpoint(k).state_dict) for title, k in models]
    K = run.cfg.env.n_types
    colors = _type_colors(K)
    size = run.cfg.env.size
    fig = _figure(3.6 * len(built) + 1.6, 3.7 * n_starts + 0.6)
    axes = fig.subplots(n_starts, len(built), squeeze=False)
    rows = []
    for i in range(n_starts):
        env_seed = int(run.cfg.evaluation.seed) + i
        for j, (title, weights) in enumerate(built):
            model.load_state_dict(weights)
            walls, objects, path, collected = rollout(model, run.cfg.env, run.ra, env_seed, action_seed=env_seed)
            ax = axes[i, j]
            ax.imshow(walls, cmap=ListedColormap(["#f7f7f2", "#3a3a3a"]), vmin=0, vmax=1, interpolation="nearest")
            got = {(r, c): t for t, _, r, c in collected}
            for (r, c), k in np.ndenumerate(objects):
                if k < 0:
                    continue
                was_got = (r, c) in got
                ax.scatter(c, r, s=260, marker="o", color=colors[k], edgecolors="k", linewidths=0.8,
                           alpha=0.35 if was_got else 1.0, zorder=3)
                ax.text(c, r, str(k), ha="center", va="center", fontsize=8, weight="bold", zorder=4,
                        color="k" if was_got else "white")
                if was_got:
                    ax.text(c + 0.42, r - 0.38, f"t{got[(r, c)]}", fontsize=6, color="k", zorder=5, ha="center")
            # Trajectory: light to dark with time, a small offset per step so revisited cells stay readable.
            jitter = np.linspace(-0.12, 0.12, len(path))
            xy = np.stack([path[:, 1] + jitter, path[:, 0] + jitter[::-1]], 1)
            segs = np.stack([xy[:-1], xy[1:]], 1)
            lc = LineCollection(segs, cmap="Greys", norm=None, linewidths=2.0, zorder=5)
            lc.set_array(np.linspace(0.35, 1.0, len(segs)))
            lc.set_clim(0, 1)
            ax.add_collection(lc)
            ax.scatter(*xy[0], marker="s", s=70, color="limegreen", edgecolors="k", zorder=6)
            ax.scatter(*xy[-1], marker="X", s=80, color="crimson", edgecolors="k", zorder=6)
            counts = np.bincount([k for _, k, _, _ in collected], minlength=K)
            ax.set_title(f"{title}\ncollected per type: {' '.join(map(str, counts))}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(f"start state: env seed {env_seed}", fontsize=8)
            ax.set_xlim(-0.5, size - 0.5)
            ax.set_ylim(size - 0.5, -0.5)
            for t, (r, c) in enumerate(path):
                rows.append({"model": title, "env_seed": env_seed, "t": t, "row": int(r), "col": int(c),
                             "collected_type": next((k for tt, k, _, _ in collected if tt == t), "")})
    handles = [Line2D([], [], marker="o", ls="", color=colors[k], mec="k", ms=9, label=run.type_label(k)) for k in range(K)]
    handles += [Line2D([], [], marker="s", ls="", color="limegreen", mec="k", label="start"),
                Line2D([], [], marker="X", ls="", color="crimson", mec="k", label="end"),
                Line2D([], [], color="k", lw=2, label="path (light → dark = time)"),
                Line2D([], [], marker="o", ls="", color="0.7", alpha=0.4, mec="k", ms=9, label="collected at step tN")]
    fig.legend(handles=handles, loc="outside right center", fontsize=7, frameon=False)
    fig.suptitle(f"One evaluation episode per model from the same start state\n({run.cfg.env.max_steps} steps, "
                 "actions sampled with the same seeded generator)", fontsize=10)
    _write_csv(out / "maze_trajectories.csv", rows, ["model", "env_seed", "t", "row", "col", "collected_type"])
    return fig


# ----------------------------------------------------------------------------------------------------------------
# 7. Validation (scorecard.json from `goalscope validate`, when it exists)


def _scalars(d, prefix="") -> list[tuple[str, object]]:
    out = []
    if isinstance(d, dict):
        for k, v in d.items():
            out += _scalars(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(d, (int, float, str, bool)) or d is None:
        out.append((prefix, d))
    elif isinstance(d, list) and d and all(isinstance(x, (str, bool)) for x in d):
        out.append((prefix, ", ".join(map(str, d))))
    return out


def _validation_bands(run: Run) -> dict[str, dict[float, tuple[float, float]]]:
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


def fig_validation(run: Run, card: dict, out: Path):
    """Graft curves (and localisation AUROC when the architecture has a planted objective) from scorecard.json."""
    graft = card.get("graft") if isinstance(card.get("graft"), dict) else None
    loc = card.get("localisation") if isinstance(card.get("localisation"), dict) else None
    panels = [p for p, present in (("graft", graft and graft.get("curves")), ("auroc", loc and loc.get("by_method")))
              if present]
    if not panels:
        return None
    fig = _figure(6.2 * len(panels) + 1.0, 4.4)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    rows = []
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    for ax, panel in zip(axes, panels):
        if panel == "graft":
            ks = [float(k) for k in graft["fractions"]]
            bands = _validation_bands(run)
            for i, (name, ys) in enumerate(graft["curves"].items()):
                baseline = name in NULL_NAMES or name == "|Δ_i|"
                color = "0.5" if name in NULL_NAMES else ("0.15" if name == "|Δ_i|" else cmap(i % 10))
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
        else:
            for i, (name, by_n) in enumerate(loc["by_method"].items()):
                ns = sorted(by_n, key=lambda n: int(n))
                x = np.array([int(n) for n in ns], dtype=float)
                m = np.array([by_n[n]["auroc"][0] for n in ns], dtype=float)
                lo = np.array([by_n[n]["auroc"][1] for n in ns], dtype=float)
                hi = np.array([by_n[n]["auroc"][2] for n in ns], dtype=float)
                err = _err(m, lo, hi)
                color = "0.5" if name == "random" else ("0.15" if name.startswith("|Δ|") else cmap(i % 10))
                ax.errorbar(x * (1 + 0.03 * i), m, yerr=err, marker="o", ms=4, capsize=2, color=color, label=name)
                rows += [{"panel": "auroc", "ranking": name, "x": a, "y": b, "min_over_seeds": c, "max_over_seeds": d}
                         for a, b, c, d in zip(x, m, lo, hi)]
            ax.axhline(0.5, color="crimson", lw=0.8, ls=":", label="chance")
            ax.set_xscale("log", base=2)
            ax.set_xlabel("number of RBs superposed (log)")
            ax.set_ylabel("AUROC for reward-map parameters")
            ax.set_ylim(0, 1)
            ax.set_title(f"(b) localisation of the planted objective ({loc.get('positives')} of "
                         f"{loc.get('parameters')} parameters), 95% CI", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle("Validation (scorecard.json)", fontsize=11)
    _write_csv(out / "validation_curves.csv", rows, ["panel", "ranking", "x", "y", "min_over_seeds", "max_over_seeds"])
    return fig


# ----------------------------------------------------------------------------------------------------------------
# HTML


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1250px;margin:1.5em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}h3{margin-bottom:.3em}
.q{color:#555;font-style:italic;margin-top:-.4em}
figure{margin:1em 0;padding:.5em;border:1px solid #e4e4e4;border-radius:4px;background:#fff}
figure img{max-width:100%;height:auto;display:block;margin:auto}
figcaption{font-size:.85em;color:#555;margin-top:.4em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.key{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}
.key div{background:#f6f8fa;border:1px solid #e1e4e8;border-radius:4px;padding:.5em .8em;min-width:11em}
.key b{display:block;font-size:1.3em}
.answer div{flex:1 1 30em;background:#eef6ee;border-color:#b7d7b7}.answer p{margin:.4em 0}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em .8em}
.err{background:#fdecea;border-left:4px solid #d93025;padding:.5em .8em}
.lean{color:#0b6e2e;font-weight:600}.more{color:#b3261e;font-weight:600}
pre{background:#f6f8fa;border:1px solid #e1e4e8;padding:.7em;overflow-x:auto;font-size:.8em}
nav a{margin-right:1em}
"""


def _e(x) -> str:
    return html.escape(str(x))


def _table(header: list[str], rows: list[list], num_cols: set[int] = frozenset()) -> str:
    out = ["<table><tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td class='num'>{c}</td>" if i in num_cols else f"<td>{c}</td>"
                                    for i, c in enumerate(r)) + "</tr>")
    return "".join(out) + "</table>"


class Page:
    def __init__(self, out: Path):
        self.out = out
        self.parts: list[str] = []
        self.figures: list[str] = []  # names of figures written

    def add(self, s: str) -> None:
        self.parts.append(s)

    def section(self, anchor: str, title: str, question: str) -> None:
        self.add(f"<h2 id='{anchor}'>{_e(title)}</h2><p class='q'>{_e(question)}</p>")

    def figure(self, name: str, fig, caption: str, csvs: list[str] = ()) -> None:
        png = _save(fig, self.out, name)
        self.figures.append(name)
        b64 = base64.b64encode(png).decode()
        links = [f"<a href='{name}.png'>PNG</a>", f"<a href='{name}.svg'>SVG</a>"]
        links += [f"<a href='{c}'>{_e(c)}</a>" for c in csvs if (self.out / c).exists()]
        self.add(f"<figure id='fig-{name}'><img src='data:image/png;base64,{b64}' alt='{_e(caption)}'>"
                 f"<figcaption>{_e(caption)} &middot; {' &middot; '.join(links)}</figcaption></figure>")


# ----------------------------------------------------------------------------------------------------------------
# The report


SECTIONS = [("learning", "1. Learning curves"), ("behaviour", "2. Behaviour profiles"),
            ("heatmaps", "3. Where the update signals live"), ("cosine", "4. Cosine similarity of update signals"),
            ("negation", "5. Negate and retrain"), ("mazes", "6. Maze pictures"), ("validation", "7. Validation"),
            ("provenance", "8. Config and provenance")]


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, *, strict: bool = False, log=print) -> Path:
    """Write the report of the run in ``run_dir`` to ``out_dir`` (default ``run_dir/report``); returns index.html.

    A section that fails to draw is replaced by an error note (the rest of the report is still written) unless
    ``strict``, when the error is raised.
    """
    run = load_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.path / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    page = Page(out)
    _header(run, page)
    sections = [("learning", _section_learning), ("behaviour", _section_behaviour), ("heatmaps", _section_heatmaps),
                ("cosine", _section_cosine), ("negation", _section_negation), ("mazes", _section_mazes),
                ("validation", _section_validation), ("provenance", _section_provenance)]
    for anchor, fn in sections:
        try:
            fn(run, page)
        except Exception as e:
            if strict:
                raise
            log(f"report: section {anchor} failed: {type(e).__name__}: {e}")
            page.add(f"<div class='err'>This section could not be drawn: {_e(type(e).__name__)}: {_e(e)}"
                     f"<pre>{_e(traceback.format_exc())}</pre></div>")
    page.add("</body></html>")
    index = out / "index.html"
    index.write_text("".join(page.parts), encoding="utf-8")
    return index


def _header(run: Run, page: Page) -> None:
    s = run.summary
    title = f"goalscope report: {s.get('experiment', run.cfg.name)}"
    page.add(f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
             f"<style>{CSS}</style></head><body>")
    page.add(f"<h1>{_e(title)}</h1>")
    page.add(f"<p>Run <code>{_e(run.path.resolve())}</code>, report written "
             f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}. RA = <b>{_e(run.ra.name)}</b>; "
             f"RBs = {_e(', '.join(rb.name for rb in run.rbs))}; seeds {_e(run.cfg.seeds)}; "
             f"{len(run.ok)} of {len(run.status)} stages finished OK.</p>")
    page.add("<p>goalscope trains MA on RA, fine-tunes copies on other rewards RB<sub>i</sub> (MB<sub>i</sub>), "
             "takes the update signals Δ<sub>i</sub> = MB<sub>i</sub> − MA, tests them by negating and retraining "
             "(MB* = MA − αΔ retrained on RA, against controls), and superposes them into per-parameter heatmaps.</p>")
    card_path = run.path / SCORECARD
    page.add(answer_cards(run, json.loads(card_path.read_text()) if card_path.exists() else None))
    page.add("<nav>" + "".join(f"<a href='#{a}'>{_e(t)}</a>" for a, t in SECTIONS) + "</nav>")
    if s.get("failed_jobs"):
        page.add(f"<p class='err'>{len(s['failed_jobs'])} jobs failed and are left out: "
                 f"{_e(', '.join(s['failed_jobs'][:10]))}{' …' if len(s['failed_jobs']) > 10 else ''}</p>")
    cards = _competence_cards(run) or [("MA on RA", f"{_pct(s.get('ma_fraction_of_oracle'))} of oracle",
                                        _ma_seed_range(run))]
    neg = s.get("negation") or []
    if neg:
        leans = sum(1 for e in neg if (e.get("retrained_MA") or {}).get("verdict") == "leans toward minimising RB")
        cards.append(("negation leans away from RB", f"{leans} / {len(neg)}", "RB×α vs MA retrained (Holm, t over seeds)"))
    page.add("<div class='key'>" + "".join(f"<div>{_e(a)}<b>{_e(b)}</b><small>{_e(c)}</small></div>" for a, b, c in cards)
             + "</div>")


def _competence_cards(run: Run) -> list[tuple[str, str, str]]:
    """One card per model from the competence gate: fraction of the oracle where the env has one, otherwise the
    preference for its rewarded objects with its interval; a model below the bar says so on its card."""
    cards = []
    for model, c in (run.summary.get("competence") or {}).items():
        m, lo, hi = c["preference"]
        if c.get("fraction_of_oracle") is not None:
            value = f"{_pct(c['fraction_of_oracle'])} of oracle"
        else:
            value = f"{m:+.2f} preference" + (f" [{lo:+.2f}, {hi:+.2f}]" if math.isfinite(lo) else "")
        where = "on RA" if model == "MA" else "on its RB"
        cards.append((f"{model} {where}", value, ("" if c["passes"] else "below the bar: ") + c["verdict"]))
    return cards


def _ma_seed_range(run: Run) -> str:
    vals = [r["value"] for r in run.records if r["stage"] == "performance" and r["model"] == "MA"
            and r["reward"] == run.ra.name and r["metric"] == "fraction_of_oracle"]
    if len(vals) < 2:
        return f"{len(vals)} seed"
    return f"seeds: {min(vals):.1%} – {max(vals):.1%}"


def _family_text(card: dict | None, summary: dict) -> str:
    fams = []
    for name, info in ((card or {}).get("families") or {}).items():
        fams.append(f"{name} ({info.get('tests')} tests)")
    neg = summary.get("negation_family")
    if neg:
        fams.append(f"negation ({neg.get('tests')} tests)")
    return ", ".join(fams)


def answer_cards(run: Run, card: dict | None) -> str:
    """The two cards the page opens with: where the objective is, and how sure we are, in plain words."""
    from goalscope.analysis.stats import MIN_SEEDS
    from goalscope.analysis.validation import HELD_OUT, PER_RB

    s = run.summary
    where, sure, wrong = [], [], []
    if card and card.get("verdicts") and all(isinstance(x, dict) for x in card["verdicts"].values()):
        v = card["verdicts"]
        if PER_RB in v:
            where.append(f"<b>An RB's own most-changed parameters</b> (top-k of |Δ<sub>i</sub>|), grafted into MA: "
                         f"{_e(v[PER_RB]['graft'])}. Ablating them from MB: {_e(v[PER_RB]['ablation'])}.")
        held = {n[:-len(HELD_OUT)]: x["graft"].split(" (")[0] for n, x in v.items() if n.endswith(HELD_OUT)}
        if held:
            where.append("<b>Superposition heatmaps, judged on RBs they were built without</b>: "
                         + "; ".join(f"{_e(m)}: {_e(lab)}" for m, lab in held.items()) + ".")
        area = (card.get("graft") or {}).get("area") or {}
        if PER_RB in area and held:
            best = max(held, key=lambda m: area.get(m + HELD_OUT, -math.inf))
            b_area, d_area = area.get(best + HELD_OUT), area.get(PER_RB)
            if b_area is not None and d_area is not None and b_area <= d_area:
                where.append(f"No aggregator beats plain |Δ<sub>i</sub>|: the best held-out heatmap ({_e(best)}, graft "
                             f"area {b_area:.3f}) recovers less than |Δ<sub>i</sub>| ({d_area:.3f}). An honest null.")
            elif b_area is not None and d_area is not None:
                where.append(f"The best held-out heatmap ({_e(best)}) has a larger graft area than |Δ<sub>i</sub>| "
                             f"({b_area:.3f} vs {d_area:.3f}); see its verdict for whether that beats the nulls.")
    elif card:
        where.append("This run's scorecard was written by an older goalscope without sensitivity-matched nulls; run "
                     f"<code>goalscope validate {_e(run.path)}</code> again for verdicts against them.")
    else:
        where.append(f"Validation has not been run (no {SCORECARD}); run <code>goalscope validate {_e(run.path)}</code> "
                     "for the graft and ablation verdicts against the nulls.")
    neg = s.get("negation") or []
    if neg:
        lean = {c: sum(1 for e in neg if (e.get(c) or {}).get("verdict") == "leans toward minimising RB")
                for c in ("retrained_MA", "random_direction")}
        where.append(f"<b>Negate and retrain</b>: MB* leans away from RB (specific lean, Holm-corrected) in "
                     f"{lean['retrained_MA']} of {len(neg)} (RB, α) against MA retrained alike and in "
                     f"{lean['random_direction']} of {len(neg)} against fresh random directions of the same size.")
    n_seeds = len(run.cfg.seeds)
    sure.append(f"{n_seeds} MA seeds, {run.cfg.finetune.seeds_per_ma} fine-tune seed(s) per RB per MA, "
                f"{run.cfg.negate.random_directions if run.cfg.negate.random_control else 0} random directions per "
                "(seed, RB, α). Verdicts rest on a t test over per-seed means (the bootstrap over 3–5 seeds is close to a "
                f"min/max rule and under-covers); below {MIN_SEEDS} seeds a verdict says “underpowered”.")
    fam = _family_text(card, s)
    if fam:
        sure.append(f"Holm–Bonferroni within each family of verdicts: {_e(fam)}; α = 0.05 family-wise.")
    if card:
        sure.append("Nulls every graft and ablation is compared with: random, MA's Fisher alone (sensitivity, no RB "
                    "information), the RA-control drift |Δ<sub>ctrl</sub>| (where MA moves with no RB), and another RB's "
                    "mask (where fine-tuning on some RB writes). Recovery counts the specific lean (RB objects minus "
                    "the other non-RA types), not raw RB objects.")
        w = ((card.get("stability") or {}).get("within_ma") or {})
        same, diff = w.get("same RB, other fine-tune seed") or {}, w.get("different RBs, same MA") or {}
        if same.get("jaccard") is not None:
            sure.append(f"Within-MA stability of top-1% |Δ| sets: same RB, other fine-tune seed {same['jaccard']:.3f} "
                        f"(tensor-stratified chance {same['chance']:.3f}); different RBs {diff.get('jaccard')} "
                        f"(chance {diff.get('chance')}).")
        elif run.cfg.finetune.seeds_per_ma < 2:
            sure.append("Stability where units line up needs ≥ 2 fine-tune seeds per MA (finetune.seeds_per_ma); "
                        "this run has 1, so no within-MA stability is measured.")
        wrong += [f"{c['check']}: {c['detail']}" for c in card.get("checks") or [] if not c.get("ok")]
    cos = s.get("cosine") or {}
    if cos.get("same_rb_across_seeds") is not None and cos.get("rb_vs_rb_same_seed") is not None \
            and cos["same_rb_across_seeds"] <= cos["rb_vs_rb_same_seed"]:
        wrong.append(f"update signals of the same RB from different MA seeds are less alike (cosine "
                     f"{cos['same_rb_across_seeds']:+.3f}) than different RBs of one MA ({cos['rb_vs_rb_same_seed']:+.3f}): "
                     "units of independently initialised networks do not line up, so this comparison cannot show "
                     "goal-specificity; the within-MA stability above is the one that can")
    for m, h in (s.get("heatmaps") or {}).items():
        if h.get("warning"):
            wrong.append(f"heatmap {m}: {h['warning']}")
    pca = s.get("pca_removed_component") or {}
    if pca.get("note"):
        sure.append(_e(pca["note"]) + ".")
    out = ["<div class='key answer'>",
           "<div><b>Where is the objective?</b>" + "".join(f"<p>{x}</p>" for x in where) + "</div>",
           "<div><b>How sure are we?</b>" + "".join(f"<p>{x}</p>" for x in sure) + "</div></div>"]
    if wrong:
        out.append("<div class='err'><b>Built-in checks that went the wrong way or need a caveat</b><ul>"
                   + "".join(f"<li>{_e(x)}</li>" for x in wrong) + "</ul></div>")
    return "".join(out)


def _section_learning(run: Run, page: Page) -> None:
    page.section("learning", SECTIONS[0][1], "Did MA learn RA, did each MB learn its RB, and how do the controls and "
                 "the negated models recover when retrained on RA?")
    page.figure("learning_curves", fig_learning_curves(run, page.out),
                "Mean return of the training episodes over env steps (each model under the reward it is trained on; "
                + ("training episodes end once every rewarded object is collected, so these run higher than the "
                   "full-length evaluation episodes; " if getattr(run.cfg.env, "end_when_collected", False) else "")
                + "the first point of each run counts only the episodes that ended within the first rollout, which "
                "favours quick successes). Band: min–max over seeds (and RBs where pooled).",
                ["learning_curves.csv"])


def _section_behaviour(run: Run, page: Page) -> None:
    page.section("behaviour", SECTIONS[1][1], "What does each model actually collect? A goal shows up as the object "
                 "type a model goes for; a negated goal as the type MB* avoids compared with the controls.")
    rows = behaviour_table(run)
    _write_csv(page.out / "behaviour.csv", rows)
    page.figure("behaviour", fig_behaviour(run, page.out, rows),
                "Objects of each type collected per evaluation episode (paired start states across models).",
                ["behaviour.csv"])
    s = run.summary
    perf = {}
    for r in run.records:
        if r["stage"] == "performance" and r["metric"] == "fraction_of_oracle":
            perf.setdefault((r["model"], r["reward"]), []).append(r["value"])
    trs = []
    for model, reward in [("MA", run.ra.name), *[(f"MB[{rb.name}]", rb.name) for rb in run.rbs],
                          *[(f"MB[{rb.name}]", run.ra.name) for rb in run.rbs], *[(c, run.ra.name) for c in CONTROL_MODELS]]:
        v = perf.get((model, reward))
        if v:
            trs.append([_e(model), _e(reward), _pct(float(np.mean(v))), f"{_pct(min(v))} – {_pct(max(v))}", len(v)])
    if trs:
        page.add("<h3>Fraction of the oracle's return</h3>" +
                 _table(["model", "scored under", "mean over seeds", "seed range", "seeds"], trs, {2, 3, 4}))
    comp = s.get("competence") or {}
    if comp:
        rows = [[_e(m), _e(c["reward"]), _ci_text(*c["preference"], fmt="+.2f"), c["seeds"],
                 _e(("" if c["passes"] else "below the bar: ") + c["verdict"])] for m, c in comp.items()]
        page.add("<h3>Competence: does each model prefer what it is rewarded for?</h3><p>Preference: objects of "
                 "the rewarded types minus the mean of the other types, per episode, with a t interval over training "
                 "seeds. The oracle decides where the env has one (bar: "
                 f"{run.cfg.evaluation.competence:.0%} of its return).</p>"
                 + _table(["model", "reward", "preference [95% CI]", "seeds", "verdict"], rows, {2, 3}))
    if s.get("ma_fraction_of_oracle") is not None:
        page.add(f"<p>MA reaches <b>{_pct(s['ma_fraction_of_oracle'])}</b> of the oracle on RA.</p>")


def _section_heatmaps(run: Run, page: Page) -> None:
    page.section("heatmaps", SECTIONS[2][1], "Which layers, tensors and units carry the update signals? A tensor "
                 "is 'enriched' when its share of the heatmap's score exceeds its share of the parameters (> 1).")
    figs = heatmap_figures(run, page.out)
    hs = run.summary.get("heatmaps") or {}
    if hs:
        trs = []
        for m, h in hs.items():
            hot = ", ".join(f"{_e(k)} ×{h['enrichment'][k]:.2f}" for k in h.get("hottest_tensors", []))
            j = h.get("seed_jaccard_top1pct")
            trs.append([_e(m), hot, "n/a" if j is None else f"{j:.3f}"])
        page.add("<h3>Hottest tensors per aggregator</h3>" +
                 _table(["aggregator", "hottest tensors (enrichment)", "top-1% overlap across MA seeds (Jaccard)"],
                        trs, {2}))
    diag = [(m, h) for m, h in hs.items() if h.get("spearman_with")]
    if diag:
        refs = list(dict.fromkeys(r for _, h in diag for r in h["spearman_with"]))
        page.add("<h3>What each heatmap is mostly made of</h3><p>Spearman rank correlation of each heatmap with "
                 "references that know no RB; a map at ρ ≥ 0.9 with one of them mostly restates it. Top-1% overlap "
                 "is shown where units line up (another fine-tune seed of the same MA) and across MA seeds, each "
                 "beside its tensor-stratified chance level.</p>" + _table(
                     ["aggregator", *[f"ρ with {r}" for r in refs], "top-1% Jaccard, same MA [chance]",
                      "across MA seeds [chance]", "warning"],
                     [[_e(m), *[_num(h["spearman_with"].get(r)) for r in refs],
                       f"{_num(h.get('within_ma_jaccard_top1pct'))} [{_num(h.get('within_ma_stratified_chance'))}]",
                       f"{_num(h.get('seed_jaccard_top1pct'))} [{_num(h.get('seed_jaccard_stratified_chance'))}]",
                       _e(h.get("warning") or "")] for m, h in diag], set(range(1, len(refs) + 3))))
    pca = run.summary.get("pca_removed_component") or {}
    if pca.get("note"):
        page.add(f"<p class='note'>{_e(pca['note'])} (explained variance {_num(pca.get('explained_variance'))}).</p>")
    frozen = [r for r in frozen_units(run) if r["zero_max"] > 0]
    if frozen:
        page.add("<h3>Units that did not move</h3><p>Output units whose update is exactly zero in an RB's Δ (for "
                 "example ReLU units that are never active): they score 0 in every heatmap and lower their tensor's "
                 "enrichment.</p>" + _table(
                     ["tensor", "units", "units with Δ = 0: mean over seeds × RBs", "range"],
                     [[_e(r["tensor"]), r["units"], f"{r['zero_mean']:.1f} ({r['zero_mean'] / r['units']:.0%})",
                       f"{r['zero_min']} – {r['zero_max']}"] for r in frozen], {1, 2, 3}))
    for m, err in (run.summary.get("heatmap_errors") or {}).items():
        page.add(f"<p class='note'>Aggregator {_e(m)} was not computed: {_e(err)}</p>")
    if not figs:
        page.add("<p class='note'>This run has no heatmaps.</p>")
    for name, title, fig, caption in figs:
        page.add(f"<h3>{_e(title)}</h3>")
        csvs = ["heatmap_tensors.csv", "heatmap_units.csv"] if name.startswith("heatmap_") and "per_rb" not in name \
            else [f"{name}.csv"]
        page.figure(name, fig, caption, csvs)


def _section_cosine(run: Run, page: Page) -> None:
    page.section("cosine", SECTIONS[3][1], "Are the update signals specific to each RB, or mostly a shared drift "
                 "from continued training? Goal-specific signals agree across seeds for the same RB and disagree "
                 "across RBs; shared drift makes every pair similar, the control included.")
    fig = fig_cosine(run, page.out)
    if fig is None:
        page.add("<p class='note'>This run has no signals/cosine.json.</p>")
        return
    page.figure("cosine", fig, "Cosine similarity between every pair of update signals (whole network, flattened).",
                ["cosine.csv", "cosine_groups.csv"])
    groups = [r for r in run.records if r["stage"] == "signals" and r["model"] == "cosine"]
    if groups:
        page.add(_table(["pairs", "mean cosine", "min", "max"],
                        [[_e(g["metric"].replace("_", " ")), f"{g['value']:+.3f}", f"{g['ci_low']:+.3f}",
                          f"{g['ci_high']:+.3f}"] for g in groups], {1, 2, 3}))


def _verdict_html(v: str) -> str:
    cls = "lean" if v == "leans toward minimising RB" else ("more" if v.startswith("leans toward RB") else "")
    return f"<span class='{cls}'>{_e(v)}</span>" if cls else _e(v)


def _section_negation(run: Run, page: Page) -> None:
    page.section("negation", SECTIONS[4][1], "Does moving MA against an update signal (MA − αΔ) and retraining on RA "
                 "make it avoid RB's objects more than MA retrained alike, and more than a random step of the same "
                 "size, while keeping RA?")
    if not run.cfg.negate.enabled:
        page.add("<p class='note'>Negation is disabled in this experiment.</p>")
        return
    rows = negation_rows(run)
    fig = fig_negation(run, page.out, rows)
    if fig is None:
        page.add("<p class='note'>No negation results in records.csv (did the negate stage fail?).</p>")
        return
    page.figure("negation", fig, "Differences MB* − control per RB and α with 95% hierarchical bootstrap CIs over "
                "seeds × paired episodes; the zero line is no effect.", ["negation.csv"])
    trs = []
    for e in run.summary.get("negation") or []:
        for ctrl, label, *_ in NEG_CONTROLS:
            d = e.get(ctrl)
            if not d:
                continue
            trs.append([_e(e["rb"]), f"{e['alpha']:g}", _e(label.replace("vs ", "")), _ci_text(*d["rb_objects_diff"]),
                        _ci_text(*d["specific_lean"]), _ci_text(*d["lean_t"]) if d.get("lean_t") else "—",
                        _num(d.get("p_holm")), _ci_text(*d["ra_return_diff"]), _verdict_html(d["verdict"])])
    fam = run.summary.get("negation_family") or {}
    page.add("<h3>Verdicts (summary.json)</h3><p>MB* minus control, mean [95% CI]; the verdict reads the specific "
             "lean (RB objects minus the other non-RA types, which separates a lean from plain capability loss): its "
             "t interval over per-seed means and the hierarchical bootstrap must both exclude 0, and the t test must "
             f"survive {_e(fam.get('correction', 'Holm-Bonferroni'))} over all {_e(fam.get('tests', len(trs)))} negation "
             f"tests. The random-direction control is the mean over {run.cfg.negate.random_directions} fresh "
             "directions per (seed, RB, α).</p>"
             + _table(["RB", "α", "control", "RB objects", "specific lean (bootstrap)", "specific lean (t over seeds)",
                       "p (Holm)", "RA return", "verdict"], trs, {1, 3, 4, 5, 6, 7}))


def _section_mazes(run: Run, page: Page) -> None:
    page.section("mazes", SECTIONS[5][1], "What do the models do in the maze? The same start state for MA, an MB "
                 "and its negation MB*, each rolled out from its checkpoint.")
    fig = fig_mazes(run, page.out)
    if fig is None:
        family = getattr(run.cfg.env, "family", "object_maze")
        page.add("<p class='note'>" + ("No finished MA checkpoint to roll out." if family == "object_maze" else
                 f"Maze pictures draw the object maze's grid; this run's env ({_e(family)}: "
                 f"{_e(getattr(run.cfg.env, 'id', ''))}) has none.") + "</p>")
        return
    page.figure("mazes", fig, "Walls dark, objects as numbered discs (faded once collected, with the step), the "
                "path from the green square to the red cross.", ["maze_trajectories.csv"])


def _section_validation(run: Run, page: Page) -> None:
    page.section("validation", SECTIONS[6][1], "Does the heatmap localise the objective? Grafting the top-scored "
                 "parameters of MB into MA should carry RB's behaviour across; AUROC scores the localisation.")
    path = run.path / SCORECARD
    if not path.exists():
        page.add(f"<p class='note'>Validation has not been run for this run (no {SCORECARD}); run "
                 f"<code>goalscope validate {_e(run.path)}</code>, then write this report again.</p>")
        return
    card = json.loads(path.read_text())
    fig = fig_validation(run, card, page.out)
    if fig is not None:
        page.figure("validation", fig, "Graft curves: how much of MB's extra RB behaviour MA regains from only the "
                    "top-k% parameters of Δ ranked by each heatmap, against |Δ| and random rankings; localisation: "
                    "AUROC of the heatmap for the parameters that hold the planted objective.", ["validation_curves.csv"])
    _validation_details(run, card, page)
    loc = card.get("localisation")
    if isinstance(loc, dict):
        trs = [[_e(m), _e(n), _ci_text(*v["auroc"], fmt=".3f"), _num(v.get("precision_at_k"))]
               for m, by_n in loc.get("by_method", {}).items() for n, v in sorted(by_n.items(), key=lambda kv: int(kv[0]))]
        page.add("<h3>Localisation AUROC</h3>" + _table(["heatmap", "RBs", "AUROC [95% CI]", "precision@k"], trs, {1, 2, 3}))
        from goalscope.report.figures_planted import fig_superposition_curve

        curve = fig_superposition_curve(card, page.out)
        if curve is not None:
            page.figure("superposition_curve", curve, "Localisation of the planted objective vs the number of RBs "
                        "superposed, per aggregator (95% t CI over seeds), against nulls that need no superposition: "
                        "single-RB |Δ_i|, control drift, MA's Fisher alone, random.", ["superposition_curve.csv"])
        for m, v in (card.get("localisation_verdicts") or {}).items():
            page.add(f"<p><b>{_e(m)}</b>: {_e(v)}</p>")
    elif loc is not None:
        page.add(f"<p class='note'>Localisation: {_e(loc)}</p>")
    rest = {k: v for k, v in card.items() if k not in ("graft", "localisation", "verdicts", "held_out_graft_area",
                                                      "localisation_verdicts", "tests", "families", "stability",
                                                      "ablation", "checks")}
    scalars = _scalars(rest)
    if scalars:
        page.add("<h3>Other scorecard entries</h3>" + _table(["entry", "value"], [[_e(k), _num(v)] for k, v in scalars], {1}))


def _validation_details(run: Run, card: dict, page: Page) -> None:
    """Verdicts with their nulls, every comparison with its Holm p, ablations, stability: the evidence."""
    from goalscope.analysis.validation import PER_RB

    fams = card.get("families") or {}
    # A scorecard from an older goalscope has one verdict string per heatmap: shown as its graft verdict.
    verdicts = {n: v if isinstance(v, dict) else {"graft": v} for n, v in (card.get("verdicts") or {}).items()}
    if verdicts:
        page.add("<h3>Verdicts (graft and ablation families)</h3><p>Each ranking against random, MA's Fisher alone, "
                 "the RA-control drift and another RB's mask; " + _e("; ".join(
                     f"{f}: {i.get('tests')} tests, {i.get('correction')}, {i.get('seeds')} MA seeds"
                     for f, i in fams.items())) + ". Heatmaps are judged on held-out RBs.</p>"
                 + _table(["ranking", "graft verdict", "ablation verdict"],
                          [[_e(n), _e(v.get("graft")), _e(v.get("ablation"))] for n, v in verdicts.items()]))
    g = card.get("graft") or {}
    if g.get("area_ci"):
        roles = g.get("roles") or {}
        ab = (card.get("ablation") or {}).get("lean_lost_ci") or {}
        page.add("<h3>Graft areas (specific lean) and ablation</h3>" + _table(
            ["ranking", "role", "graft area [95% t CI]", "raw-RB graft area", "RA return vs MA", "ablation: lean lost [95% t CI]"],
            [[_e(n), _e(roles.get(n, "")), _ci_text(*a, fmt=".3f"), _num(g.get("raw_area", {}).get(n)),
              _num(g.get("ra_mean", {}).get(n)), _ci_text(*ab[n], fmt=".3f") if n in ab else "—"]
             for n, a in g["area_ci"].items()], {2, 3, 4, 5}))
        page.add(f"<p>MB's specific-lean gain per RB: {_e(g.get('rb_gain'))}; raw RB objects: {_e(g.get('rb_gain_raw'))} "
                 f"(the difference is collecting of every type rising, not a lean). |Δ<sub>i</sub>| is {_e(PER_RB)}.</p>")
    for fam, tests in (card.get("tests") or {}).items():
        page.add(f"<h3>Every {_e(fam)} comparison (one-sided paired t over seeds, Holm over {len(tests)})</h3>" + _table(
            ["ranking", "null", "difference [95% t CI]", "p", "p (Holm)", "beaten"],
            [[_e(t["ranking"]), _e(t["null"]), _ci_text(*t["diff"]), _num(t["p"]), _num(t["p_holm"]),
              "yes" if t["beaten"] else "no"] for t in tests], {2, 3, 4}))
    st = card.get("stability") or {}
    if st.get("within_ma"):
        page.add("<h3>Stability where units line up</h3><p>Top-1% |Δ| sets compared between fine-tune seeds of the "
                 f"same MA; chance: {_e(st.get('chance_method'))}.</p>" + _table(
                     ["pairs (same MA)", "Jaccard", "stratified chance", "ratio", "pairs"],
                     [[_e(n), _num(v.get("jaccard")), _num(v.get("chance")), _num(v.get("ratio_to_chance")), v.get("pairs")]
                      for n, v in st["within_ma"].items()], {1, 2, 3, 4}))
        ac = st.get("across_ma") or {}
        page.add(f"<p>Across MA seeds (units do not line up; {_e(ac.get('measure'))}): same RB {_num(ac.get('same RB'))}, "
                 f"different RBs {_num(ac.get('different RBs'))}.</p>")


def _num(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return "n/a" if not math.isfinite(v) else f"{v:.4g}"
    return _e(v)


def _section_provenance(run: Run, page: Page) -> None:
    page.section("provenance", SECTIONS[7][1], "What exactly was run, with which software, and how long it took.")
    s = run.summary
    versions = {}
    for key in run.ok:
        meta = run.stage(key) / "meta.json"
        if meta.exists():
            versions = json.loads(meta.read_text()).get("versions") or {}
            if versions:
                break
    page.add("<h3>Software</h3>" + _table(["package", "version"], [[_e(k), _e(v)] for k, v in versions.items()]))
    page.add(f"<p>Seeds: {_e(run.cfg.seeds)}; evaluation: {run.cfg.evaluation.episodes} episodes from env seed "
             f"{run.cfg.evaluation.seed}, {run.cfg.evaluation.bootstrap} bootstrap resamples.</p>")
    stage_w, job_w = s.get("stage_wall_s") or {}, s.get("job_wall_s") or {}
    kinds = list(dict.fromkeys([*stage_w, *job_w]))
    counts: dict[str, list] = {}
    for st in run.status.values():
        counts.setdefault(st.get("kind"), []).append(st.get("wall_s", math.nan))
    trs = []
    for k in kinds:
        w = [x for x in counts.get(k, []) if math.isfinite(x)]
        trs.append([_e(k), _e(stage_w.get(k, "")), _e(job_w.get(k, "")), len(counts.get(k, [])) or "",
                    f"{min(w):.1f} – {max(w):.1f}" if w else ""])
    page.add("<h3>Wall time</h3><p>Stage = elapsed time of the stage (jobs run in parallel); jobs = compute summed "
             "over its jobs.</p>" + _table(["stage", "stage wall (s)", "summed job wall (s)", "jobs", "per job (s)"],
                                           trs, {1, 2, 3, 4}))
    rows = [{"key": k, "kind": st.get("kind"), "label": st.get("label"), "status": st.get("status"),
             "wall_s": st.get("wall_s")} for k, st in sorted(run.status.items(), key=lambda kv: str(kv[1].get("label")))]
    _write_csv(page.out / "stages.csv", rows, ["key", "kind", "label", "status", "wall_s"])
    page.add("<p>Every stage: <a href='stages.csv'>stages.csv</a> (key, kind, label, status, wall time).</p>")
    page.add(f"<h3>Experiment config (experiment.json)</h3><pre>{_e(json.dumps(run.experiment, indent=2))}</pre>")
