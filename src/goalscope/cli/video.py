"""CLI command: video (a checkpoint's rollout in its own env, as an animated GIF or an MP4;
:mod:`goalscope.agents.rollouts`).

May import anything below the CLI; heavy modules are imported inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from goalscope.cli.common import bounded_int, non_negative_int, positive_int

MAX_VIDEO_EPISODES = 100  # every frame is held in memory until the file is written
MAX_FPS = 120.0


def _fps(text: str) -> float:
    """argparse type: frames per second, a number above 0 and at most MAX_FPS."""
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of frames per second, got {text!r}") from None
    if not 0 < v <= MAX_FPS:
        raise argparse.ArgumentTypeError(f"expected a number above 0 and at most {MAX_FPS:g}, got {text!r}")
    return v


def add_commands(sub) -> None:
    """The parser of ``goalscope video``."""
    p = sub.add_parser("video", help="render a checkpoint's rollout to an animated GIF (or an MP4)",
                       description="Roll a checkpoint out in the env it was trained in (same settings, same reward) "
                                   "and write one frame per step to a video: the episode's start, then the picture "
                                   "after each action. .gif needs nothing more; .mp4 needs imageio-ffmpeg "
                                   "(pip install imageio-ffmpeg). The same --seed gives the same video: it seeds "
                                   "the env and the sampled actions.\n\n"
                                   "  goalscope video runs/ma --out ma.gif\n"
                                   "  goalscope video runs/demo/stages/finetune-... --out mb.mp4 --episodes 3 --greedy")
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (model.safetensors + meta.json)")
    p.add_argument("--out", type=Path, required=True, help="the video file to write: NAME.gif or NAME.mp4")
    p.add_argument("--episodes", type=bounded_int(MAX_VIDEO_EPISODES), default=1, help="episodes, one after another")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seeds the env and the sampled actions")
    p.add_argument("--greedy", action="store_true", help="take the most likely action instead of sampling one")
    p.add_argument("--fps", type=_fps, default=8.0, help="frames per second")
    p.add_argument("--max-steps", type=positive_int,
                   help="steps per episode at most (default: the env's episode length)")
    p.add_argument("--force", action="store_true", help="replace an existing video goalscope wrote")


def _is_video(path: Path) -> bool:
    """Whether ``path`` holds a GIF or an MP4 (what --force may replace)."""
    with open(path, "rb") as f:
        head = f.read(12)
    return head[:4] == b"GIF8" or head[4:8] == b"ftyp"


def cmd_video(args) -> None:
    """``goalscope video``: roll a checkpoint out and write the frames to --out."""
    from goalscope.agents.checkpoints import load_checkpoint
    from goalscope.agents.rollouts import check_video_path, rollout_frames, write_video
    from goalscope.errors import ConfigError
    from goalscope.outputs import check_output_file

    check_video_path(args.out)  # a wrong suffix or a missing encoder, before any rollout
    check_output_file(args.out, args.force, "video", _is_video)
    ckpt = load_checkpoint(args.checkpoint)
    frames = rollout_frames(ckpt, args.episodes, args.seed, args.greedy, args.max_steps)
    if not frames:
        raise ConfigError(f"{args.checkpoint}: its env ({ckpt.env.to_json().get('id', 'object maze')}) renders no "
                          "rgb_array frames, so there is nothing to put in a video")
    write_video(frames, args.out, args.fps)
    print(f"{len(frames)} frames, {args.episodes} episode(s) -> {args.out}")


COMMANDS = {"video": cmd_video}
