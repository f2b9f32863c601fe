"""Maze pictures: MA, an MB and its negation rolled out from the same start state, drawn on the grid.

May import: goalscope.report.run, goalscope.report.common, torch (inside the functions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from goalscope.report.common import new_figure, type_colors, write_csv
from goalscope.report.run import as_run


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


def maze_models(run) -> list[tuple[str, str]]:
    """(title, job key): MA, one MB and that MB's negation (α closest to 1), all from the first finished seed."""
    run = as_run(run)
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


def fig_mazes(run, out: Path | None = None, n_starts: int = 2):
    """One evaluation episode of MA, an MB and its MB* from the same start states; None for env families without a
    grid to draw. With ``out``, writes maze_trajectories.csv there."""
    run = as_run(run)
    from matplotlib.collections import LineCollection
    from matplotlib.colors import ListedColormap
    from matplotlib.lines import Line2D

    models = maze_models(run)
    if not models or getattr(run.cfg.env, "family", None) != "object_maze":
        return None  # pictures need the maze's grid state; other env families have no renderer here
    model = run.checkpoint(models[0][1]).build()  # one model, each checkpoint's weights loaded in turn
    built = [(title, run.checkpoint(k).state_dict) for title, k in models]
    K = run.cfg.env.n_types
    colors = type_colors(K)
    size = run.cfg.env.size
    fig = new_figure(3.6 * len(built) + 1.6, 3.7 * n_starts + 0.6)
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
    write_csv(out, "maze_trajectories.csv", rows, ["model", "env_seed", "t", "row", "col", "collected_type"])
    return fig
