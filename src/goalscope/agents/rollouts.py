"""Rollouts as pictures: a checkpoint acting in its own env (:meth:`Checkpoint.make_env`, ``render_mode="rgb_array"``),
one frame per step, written as an animated GIF (Pillow, through imageio) or an MP4 (imageio-ffmpeg, an optional
install). ``goalscope video`` and the report's rollout section both come here.

May import: goalscope.agents.checkpoints, goalscope.errors, goalscope.outputs; imageio inside the functions.
"""

from __future__ import annotations

import importlib.util
import io
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from goalscope.errors import ConfigError
from goalscope.outputs import atomic_write_bytes

VIDEO_SUFFIXES = (".gif", ".mp4")
FFMPEG_HINT = "pip install imageio-ffmpeg"


def rollout_frames(ckpt, episodes: int = 1, seed: int = 0, greedy: bool = False,
                   max_steps: int | None = None) -> list[np.ndarray]:
    """``uint8[H, W, 3]`` frames of ``episodes`` episodes of ``ckpt`` in its own env: each episode's start, then
    one frame after every step, up to ``max_steps`` steps an episode (default: the env's ``max_steps``). The env
    is seeded with ``seed`` and actions are drawn from a generator seeded alike, so a seed gives the same video.
    Empty when the env cannot render (``render()`` gives None)."""
    limit = ckpt.env.max_steps if max_steps is None else max_steps
    gen = torch.Generator().manual_seed(seed)
    env = ckpt.make_env(render_mode="rgb_array")
    frames: list[np.ndarray] = []
    try:
        for e in range(episodes):
            obs, _ = env.reset(seed=seed if e == 0 else None)  # later episodes continue the env's seeded stream
            frame = _frame(env.render())
            if frame is None:
                return []
            frames.append(frame)
            for _ in range(limit):
                obs, _, term, trunc, _ = env.step(ckpt.act(obs, greedy=greedy, generator=gen))
                frames.append(_frame(env.render()))
                if term or trunc:
                    break
    finally:
        env.close()
    return frames


def _frame(picture) -> np.ndarray | None:
    """An rgb_array picture as ``uint8[H, W, 3]``, or None for an env that rendered nothing."""
    if picture is None:
        return None
    a = np.asarray(picture)
    if a.ndim != 3 or a.shape[-1] not in (3, 4):
        raise ConfigError(f"the env's render() gave an array of shape {a.shape}, not an RGB picture (H, W, 3)")
    return np.ascontiguousarray(a[..., :3], dtype=np.uint8)


def check_video_path(path: str | Path) -> Path:
    """``path`` if goalscope can write a video there (.gif always, .mp4 with imageio-ffmpeg installed); checked
    before any rollout so a wrong name costs nothing."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ConfigError(f"{path}: a video file ends in {' or '.join(VIDEO_SUFFIXES)}, got {suffix or 'no suffix'!r}")
    if suffix == ".mp4" and not has_ffmpeg():
        raise ConfigError(f"{path}: writing MP4 needs the imageio-ffmpeg package ({FFMPEG_HINT}); or name a .gif")
    return path


def has_ffmpeg() -> bool:
    """Whether imageio-ffmpeg (the ffmpeg binary imageio writes MP4 with) is installed."""
    return importlib.util.find_spec("imageio_ffmpeg") is not None


def encode_gif(frames: list[np.ndarray], fps: float = 8.0) -> bytes:
    """An animated GIF of ``frames`` that loops forever, ``fps`` frames a second (Pillow merges a frame identical to
    the one before into it, so a still agent costs no bytes)."""
    import imageio.v3 as iio

    if not frames:
        raise ConfigError("no frames to write: the env rendered nothing")
    buf = io.BytesIO()
    iio.imwrite(buf, np.stack(frames), extension=".gif", duration=1000.0 / fps, loop=0)
    return buf.getvalue()


def write_video(frames: list[np.ndarray], path: str | Path, fps: float = 8.0) -> Path:
    """Write ``frames`` to ``path`` as a GIF or, for a ``.mp4`` name, an MP4 (see :func:`check_video_path`);
    the file appears whole or not at all."""
    path = check_video_path(path)
    if path.suffix.lower() == ".gif":
        atomic_write_bytes(path, encode_gif(frames, fps))
        return path
    import imageio.v2 as iio2

    if not frames:
        raise ConfigError("no frames to write: the env rendered nothing")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".mp4")
    os.close(fd)
    try:
        iio2.mimwrite(tmp, frames, fps=fps, format="FFMPEG")
        atomic_write_bytes(path, Path(tmp).read_bytes())
    finally:
        Path(tmp).unlink(missing_ok=True)
    return path
