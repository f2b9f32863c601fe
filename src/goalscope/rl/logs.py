"""Training logs: scalars under CleanRL's namespaced tags to ``train_log.csv``, TensorBoard and (optionally) Weights &
Biases, the run's name, and the progress bar. The PPO loop hands each update's row here and knows nothing else.

May import: torch (TensorBoard's writer), tqdm; wandb only when asked for.
"""

from __future__ import annotations

import csv
import os
import time
from pathlib import Path


def run_name(env_cfg, experiment: str, seed: int) -> str:
    """``{env}__{exp}__{seed}__{time}``: the name a run's TensorBoard (and W&B) logs go under."""
    env = getattr(env_cfg, "id", None) or getattr(env_cfg, "family", "env")
    slug = "".join(c if c.isalnum() or c in "-_." else "_" for c in experiment)  # no ':' (breaks paths on Windows)
    return f"{env.replace('/', '-')}__{slug}__{seed}__{int(time.time())}"


class ScalarLog:
    """Scalars under namespaced tags (``charts/``, ``losses/``, ``eval/``) to ``train_log.csv`` and TensorBoard
    event files under ``log_dir/tb/<run name>``, and to Weights & Biases when ``GOALSCOPE_WANDB=1`` and the
    ``wandb`` package is installed (never required)."""

    def __init__(self, log_dir: Path | None, name: str = "run", config: dict | None = None):
        self.rows: list[dict] = []
        self.log_dir = Path(log_dir) if log_dir else None
        self._tb = self._wandb = None
        if self.log_dir:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(self.log_dir / "tb" / name))
                self._hparams(config or {})
            except ImportError:  # tensorboard is optional; the CSV always exists
                self._tb = None
        if os.environ.get("GOALSCOPE_WANDB") == "1":
            try:
                import wandb
            except ImportError:
                wandb = None
            if wandb is not None:
                self._wandb = wandb.init(project=os.environ.get("WANDB_PROJECT", "goalscope"), name=name,
                                         config=config or {}, reinit=True)

    def _hparams(self, config: dict) -> None:
        """The run's settings in TensorBoard's HPARAMS tab (flattened: ``ppo/lr``...), as CleanRL shows them."""
        from torch.utils.tensorboard.summary import hparams

        flat = {}
        for key, value in config.items():
            for k, v in (value.items() if isinstance(value, dict) else [("", value)]):
                if isinstance(v, (int, float, str, bool)):
                    flat[f"{key}/{k}" if k else key] = v
        for summary in hparams(flat, {"eval/return": float("nan")}):
            self._tb.file_writer.add_summary(summary)

    def write(self, step: int, scalars: dict) -> None:
        self.rows.append({"step": step, **scalars})
        if self._tb is not None:
            for k, v in scalars.items():
                self._tb.add_scalar(k, v, step)
        if self._wandb is not None:
            self._wandb.log(scalars, step=step)
        self._write_csv()  # as it goes, so a long run can be watched (a few hundred rows: rewriting is cheap)

    def _write_csv(self) -> None:
        if not (self.log_dir and self.rows):
            return
        keys = sorted({k for r in self.rows for k in r} - {"step"})
        tmp = self.log_dir / ".train_log.csv.tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, ["step", *keys])
            w.writeheader()
            w.writerows(self.rows)
        os.replace(tmp, self.log_dir / "train_log.csv")

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
        self._write_csv()


def eval_scalars(s: dict) -> dict:
    """The ``eval/`` scalars of an evaluation summary (see :func:`goalscope.rl.evaluation.summarise`)."""
    return {"eval/return": s["return_mean"], "eval/fraction_of_oracle": s["fraction_of_oracle"]}


def progress_bar(total: int, enabled: bool, desc: str):
    """A tqdm bar over ``total`` env steps (disabled unless ``enabled``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="step", unit_scale=True, leave=False)
