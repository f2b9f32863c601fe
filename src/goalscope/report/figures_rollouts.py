"""Rollouts as animated GIFs: MA and one MB (the first finished seed, its first finished RB) each acting in its own
env from the same start state for a short episode, written beside the page and embedded in it.

May import: goalscope.report.run, goalscope.report.common, goalscope.agents.rollouts, goalscope.errors.
"""

from __future__ import annotations

import base64
import warnings
from dataclasses import dataclass

from goalscope.agents.rollouts import encode_gif, rollout_frames
from goalscope.errors import ConfigError
from goalscope.outputs import atomic_write_bytes
from goalscope.report.common import esc
from goalscope.report.run import as_run

ROLLOUT_STEPS = 63  # at most 64 frames: a glance, cheap to roll out and small to embed
FPS = 6.0


@dataclass(frozen=True)
class Rollout:
    """One model's rollout: its label, the GIF's file name in the report folder, the GIF, and its frame count."""
    label: str
    file: str
    gif: bytes
    frames: int


def rollout_models(run) -> list[tuple[str, str, str]]:
    """(label, file stem, job key) of MA and of one MB: the first seed with a finished MA, its first finished RB."""
    run = as_run(run)
    for s in run.cfg.seeds:
        ma = run.plan.ma.get(s)
        if ma not in run.ok:
            continue
        out = [(f"MA (RA = {run.ra.name}), seed {s}", "rollout_MA", ma)]
        mb = next(((rb.name, run.plan.mb[(s, rb.name)]) for rb in run.rbs if run.plan.mb.get((s, rb.name)) in run.ok),
                  None)
        if mb is not None:
            out.append((f"MB[{mb[0]}], seed {s}", "rollout_MB", mb[1]))
        return out
    return []


def rollouts(run) -> list[Rollout]:
    """The rollouts of :func:`rollout_models`, from the evaluation seed's first start state; empty when the env
    cannot render. Made once per run: the page's contents ask before the section draws them."""
    run = as_run(run)
    if "_rollouts" not in run.__dict__:
        run.__dict__["_rollouts"] = _make_rollouts(run)
    return run.__dict__["_rollouts"]


def _make_rollouts(run) -> list[Rollout]:
    out = []
    for label, file, key in rollout_models(run):
        try:
            with warnings.catch_warnings():  # Gymnasium warns of an env without rgb_array: it renders nothing here
                warnings.simplefilter("ignore")
                frames = rollout_frames(run.checkpoint(key), episodes=1, seed=int(run.cfg.evaluation.seed),
                                        max_steps=ROLLOUT_STEPS)
        except ConfigError:  # an env that cannot be made with render_mode="rgb_array"
            return []
        if not frames:
            return []
        out.append(Rollout(label, f"{file}.gif", encode_gif(frames, FPS), len(frames)))
    return out


def rollout_html(page, items: list[Rollout]) -> str:
    """Write each GIF beside the page and return the figure that embeds them side by side."""
    cells = []
    for r in items:
        atomic_write_bytes(page.out / r.file, r.gif)
        b64 = base64.b64encode(r.gif).decode()
        cells.append(f"<div><img class='rollout' src='data:image/gif;base64,{b64}' alt='{esc(r.label)} rollout'>"
                     f"<br><small>{esc(r.label)} &middot; {r.frames} frames &middot; "
                     f"<a href='{esc(r.file)}'>GIF</a></small></div>")
    return f"<figure id='fig-rollouts'><div class='rollouts'>{''.join(cells)}</div>"
