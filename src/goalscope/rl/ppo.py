"""Proximal Policy Optimisation over the vectorised maze, readable top to bottom.

One call of :func:`train` runs ``total_steps`` environment steps: collect a rollout of ``n_steps`` from ``n_envs``
envs, compute advantages with GAE, then ``epochs`` passes of clipped-objective minibatch updates. Fine-tuning is
the same call on an already trained model with another reward.

Determinism: the torch generator and the env are seeded from ``seed``; with one thread on a CPU the same seed
gives bit-identical weights. Training uses one torch thread by default because small networks gain nothing from a
second one and lose ~3x when the other core is busy; run independent jobs in parallel processes instead.
"""

from __future__ import annotations

import csv
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch import nn

from goalscope.agents.registry import build_agent
from goalscope.agents.checkpoints import Checkpoint
from goalscope.envs.rewards import Reward
from goalscope.errors import ConfigError, TrainingDiverged, check_fields
from goalscope.rl.evaluation import evaluate, oracle_profile, summarise


PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class PPOConfig:
    total_steps: int = 300_000
    n_envs: int = 64
    n_steps: int = 32  # rollout length per env; batch = n_envs * n_steps
    epochs: int = 3
    minibatch_size: int = 512
    lr: float = 1e-3
    anneal_lr: bool = True
    gamma: float = 0.95
    gae_lambda: float = 0.9
    clip: float = 0.2
    ent_coef: float = 0.01
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    eval_every: int = 0  # env steps between evaluations (0: only at the end)
    eval_episodes: int = 256
    threads: int = 1
    save_every: int = 100_000  # env steps between resumable snapshots (needs a resume_dir; 0 = never)
    # "bf16": forward and backward passes under torch.autocast in bfloat16 (~2x faster on CPUs with AMX/AVX-512
    # bf16 and on GPUs); weights, Adam state, losses and everything saved stay fp32. "fp32" (default) is
    # bit-reproducible; bf16 is deterministic on one machine too, but its numbers differ from fp32's.
    precision: str = "fp32"

    def __post_init__(self):
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type in ("int", int) and (not isinstance(v, int) or isinstance(v, bool)):
                raise ConfigError(f"ppo.{f.name} must be an integer, got {v!r}")
            if f.type in ("float", float) and (not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v)):
                raise ConfigError(f"ppo.{f.name} must be a number, got {v!r}")
        for name in ("total_steps", "n_envs", "n_steps", "epochs", "minibatch_size", "eval_episodes", "threads"):
            if getattr(self, name) < 1:
                raise ConfigError(f"ppo.{name} must be positive, got {getattr(self, name)}")
        for name in ("eval_every", "save_every"):
            if getattr(self, name) < 0:
                raise ConfigError(f"ppo.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.lr < 1:
            raise ConfigError(f"ppo.lr must be in (0, 1), got {self.lr}")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"ppo.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"ppo.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def autocast(self, device: str = "cpu"):
        """The context the network's passes run in: bf16 autocast, or nothing for fp32."""
        return torch.autocast(device, dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @property
    def batch_size(self) -> int:
        return self.n_envs * self.n_steps

    @staticmethod
    def from_json(d: dict) -> "PPOConfig":
        return PPOConfig(**check_fields(PPOConfig, d, "ppo"))

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    steps: int
    history: list[dict]  # one row per update: losses, episode stats, evaluations
    final_eval: dict
    wall_s: float


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


def _log_probs(logits: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)


def _check_finite(model: nn.Module, loss: torch.Tensor, step: int) -> None:
    if not torch.isfinite(loss):
        raise TrainingDiverged(f"training diverged at step {step}: loss is {loss.item()}; lower ppo.lr or ppo.max_grad_norm")
    for name, p in model.named_parameters():
        if not torch.isfinite(p).all():
            raise TrainingDiverged(f"training diverged at step {step}: parameter {name!r} has NaN/inf")


def train(
    model: nn.Module,
    env_cfg,
    reward: Reward,
    ppo: PPOConfig,
    seed: int,
    *,
    log_dir: Path | None = None,
    progress: bool = False,
    resume_dir: Path | None = None,
    name: str | None = None,
    callbacks: Sequence[Callable[[int, dict, nn.Module], bool | None]] = (),
) -> TrainResult:
    """Train ``model`` in place with PPO on ``reward``; returns the per-update history and a final evaluation.

    With ``resume_dir``, a snapshot (weights, optimiser, RNG and env state) is written there every
    ``ppo.save_every`` env steps, and a snapshot found there is continued from: a run killed mid-way ends with
    the same weights as one that was never interrupted.

    ``callbacks`` (Stable-Baselines3 style) are called after every update as ``callback(step, row, model)``, with
    the row of scalars just logged; one returning ``False`` stops training there (the final evaluation still runs).
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    torch.set_num_threads(ppo.threads)
    torch.manual_seed(seed)
    start = time.perf_counter()
    env = env_cfg.make(reward, ppo.n_envs, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=ppo.lr, eps=1e-5)
    oracle = oracle_profile(env_cfg, reward, ppo.eval_episodes)
    log = ScalarLog(log_dir, run_name(env_cfg, name or reward.name, seed), {"ppo": ppo.to_json(), "reward": reward.name})
    try:

        T, N = ppo.n_steps, ppo.n_envs
        obs_buf = torch.zeros((T, N, *env_cfg.obs_shape), dtype=torch.uint8)
        act_buf = torch.zeros((T, N), dtype=torch.long)
        logp_buf = torch.zeros((T, N))
        rew_buf = torch.zeros((T, N))
        done_buf = torch.zeros((T, N))
        val_buf = torch.zeros((T, N))

        n_updates = math.ceil(ppo.total_steps / ppo.batch_size)  # whole rollouts, at least the budget asked for
        obs = torch.from_numpy(env.reset(seed))
        ep_returns: list[float] = []
        ep_lengths: list[float] = []  # not in snapshots: a resumed run's first length average covers fewer episodes
        next_eval = ppo.eval_every or None
        step, first_update = 0, 0
        fingerprint = {"ppo": ppo.to_json(), "seed": seed, "reward": reward.to_json(), "env": env_cfg.to_json()}
        snapshot = _load_snapshot(resume_dir, fingerprint) if resume_dir else None
        if snapshot is not None:
            first_update, step, next_eval, obs = _restore(snapshot, model, optimizer, env, log, ep_returns)
        can_snapshot = resume_dir is not None and ppo.save_every > 0 and hasattr(env, "get_state")
        next_save = (step // ppo.save_every + 1) * ppo.save_every if can_snapshot else None
        bar = _progress(n_updates * ppo.batch_size, progress, f"PPO {reward.name}")
        bar.update(step)
        for update in range(first_update, n_updates):
            if ppo.anneal_lr:
                optimizer.param_groups[0]["lr"] = ppo.lr * (1.0 - update / n_updates)

            # 1. Rollout: act in all envs at once.
            with torch.inference_mode():
                for t in range(T):
                    obs_buf[t] = obs
                    with ppo.autocast():
                        logits, value = model(obs)
                    logits, value = logits.float(), value.float()
                    if not torch.isfinite(logits).all():
                        raise TrainingDiverged(f"training diverged at step {step}: the policy outputs NaN/inf")
                    action = torch.multinomial(torch.softmax(logits, -1), 1).squeeze(-1)
                    logp_buf[t] = _log_probs(logits, action)
                    val_buf[t] = value
                    act_buf[t] = action
                    next_obs, r, term, trunc, info = env.step(action.numpy())
                    rew_buf[t] = torch.from_numpy(r)
                    done_buf[t] = torch.from_numpy(term | trunc)
                    if info:
                        ep_returns.extend(info["returns"].tolist())
                        ep_lengths.extend(info["steps"].tolist())
                    obs = torch.from_numpy(next_obs)
                with ppo.autocast():
                    next_value = model(obs)[1].float()

                # 2. Generalised advantage estimation, backwards through the rollout.
                adv = torch.zeros((T, N))
                last = torch.zeros(N)
                for t in reversed(range(T)):
                    nv = next_value if t == T - 1 else val_buf[t + 1]
                    nonterminal = 1.0 - done_buf[t]
                    delta = rew_buf[t] + ppo.gamma * nv * nonterminal - val_buf[t]
                    last = delta + ppo.gamma * ppo.gae_lambda * nonterminal * last
                    adv[t] = last
                ret = adv + val_buf
            step += ppo.batch_size

            # 3. Clipped-objective updates on shuffled minibatches.
            b_obs, b_act, b_logp = obs_buf.flatten(0, 1), act_buf.flatten(), logp_buf.flatten()
            b_adv, b_ret = adv.flatten(), ret.flatten()
            stats = []
            for _ in range(ppo.epochs):
                for idx in torch.randperm(ppo.batch_size).split(ppo.minibatch_size):
                    with ppo.autocast():
                        logits, value = model(b_obs[idx])
                    logits, value = logits.float(), value.float()  # losses in fp32 whatever the passes ran in
                    logp_all = torch.log_softmax(logits, -1)
                    logp = logp_all.gather(-1, b_act[idx].unsqueeze(-1)).squeeze(-1)
                    ratio = torch.exp(logp - b_logp[idx])
                    mb_adv = b_adv[idx]
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                    pg_loss = torch.max(-mb_adv * ratio, -mb_adv * ratio.clamp(1 - ppo.clip, 1 + ppo.clip)).mean()
                    v_loss = 0.5 * (value - b_ret[idx]).pow(2).mean()
                    entropy = -(logp_all.exp() * logp_all).sum(-1).mean()
                    loss = pg_loss + ppo.vf_coef * v_loss - ppo.ent_coef * entropy
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    nn.utils.clip_grad_norm_(model.parameters(), ppo.max_grad_norm)
                    optimizer.step()
                    with torch.no_grad():
                        approx_kl = ((ratio - 1) - (logp - b_logp[idx])).mean()
                        clipfrac = ((ratio - 1).abs() > ppo.clip).float().mean()
                    stats.append(torch.stack([loss.detach(), pg_loss.detach(), v_loss.detach(), entropy.detach(),
                                              approx_kl, clipfrac]))
            _check_finite(model, torch.stack(stats).sum(), step)
            s = torch.stack(stats).mean(0).tolist()
            var_ret = float(b_ret.var())  # how much of the return the value head explains (1 = all, <= 0 = none)
            explained = 1.0 - float((b_ret - val_buf.flatten()).var()) / var_ret if var_ret > 0 else float("nan")
            row = {"losses/total": s[0], "losses/policy": s[1], "losses/value": s[2], "losses/entropy": s[3],
                   "losses/approx_kl": s[4], "losses/clipfrac": s[5], "losses/explained_variance": explained,
                   "charts/lr": optimizer.param_groups[0]["lr"],
                   "charts/steps_per_s": step / (time.perf_counter() - start)}
            if ep_returns:
                row["charts/episode_return"] = float(np.mean(ep_returns))
                row["charts/episode_length"] = float(np.mean(ep_lengths)) if ep_lengths else float("nan")
                ep_returns.clear()
                ep_lengths.clear()
            if next_eval is not None and step >= next_eval and update < n_updates - 1:
                row.update(_eval_scalars(summarise(evaluate(model, env_cfg, reward, ppo.eval_episodes), reward, oracle)))
                next_eval += ppo.eval_every
            log.write(step, row)
            if next_save is not None and step >= next_save and update < n_updates - 1:
                _save_snapshot(resume_dir, fingerprint, model, optimizer, env, obs, update + 1, step, next_eval, log, ep_returns)
                next_save += ppo.save_every
            bar.update(ppo.batch_size)
            bar.set_postfix_str(f"return {row.get('charts/episode_return', float('nan')):.2f}")
            if any(cb(step, row, model) is False for cb in callbacks):
                break
        bar.close()

        final = summarise(evaluate(model, env_cfg, reward, ppo.eval_episodes), reward, oracle)
        log.write(step, _eval_scalars(final))
        return TrainResult(step, log.rows, final, time.perf_counter() - start)
    finally:  # on divergence or a kill too: flush the logs, release the env's resources
        log.close()
        getattr(env, "close", lambda: None)()


# ----------------------------------------------------------------------------------------------------------------
# Resumable snapshots: tensors in safetensors, the rest in JSON (nothing is pickled). The JSON names the tensors'
# hash and is written last, so a snapshot cut short by a kill is recognised and ignored.

SNAPSHOT_TENSORS, SNAPSHOT_META = "snapshot.safetensors", "snapshot.json"


def _save_snapshot(directory: Path, fingerprint: dict, model, optimizer, env, obs, update, step, next_eval, log,
                   ep_returns) -> None:
    import hashlib

    from safetensors.torch import save as st_save

    from goalscope.agents.checkpoints import atomic_write_bytes

    arrays, rng_state = env.get_state()
    tensors = {f"model/{k}": v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    for i, state in optimizer.state_dict()["state"].items():
        tensors.update({f"adam/{i}/{k}": v.detach().clone().reshape(-1) if v.dim() == 0 else v.detach().clone()
                        for k, v in state.items()})
    tensors["torch_rng"] = torch.get_rng_state()
    tensors["obs"] = obs.clone().contiguous()
    tensors.update({f"env/{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
    blob = st_save(tensors)
    meta = {"fingerprint": fingerprint, "update": update, "step": step, "next_eval": next_eval,
            "rows": log.rows, "ep_returns": ep_returns, "env_rng": rng_state,
            "sha256": hashlib.sha256(blob).hexdigest()}
    Path(directory).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(directory) / SNAPSHOT_TENSORS, blob)
    atomic_write_bytes(Path(directory) / SNAPSHOT_META, json.dumps(meta).encode())


def _load_snapshot(directory: Path, fingerprint: dict) -> dict | None:
    import hashlib

    from safetensors.torch import load as st_load

    meta_path, tensor_path = Path(directory) / SNAPSHOT_META, Path(directory) / SNAPSHOT_TENSORS
    if not meta_path.exists() or not tensor_path.exists():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        blob = tensor_path.read_bytes()
    except (OSError, json.JSONDecodeError):
        return None
    if meta.get("fingerprint") != fingerprint or meta.get("sha256") != hashlib.sha256(blob).hexdigest():
        return None  # another job's or a half-written snapshot: start from the beginning
    meta["tensors"] = st_load(blob)
    return meta


def _restore(snap: dict, model, optimizer, env, log, ep_returns):
    t = snap["tensors"]
    model.load_state_dict({k[len("model/"):]: v for k, v in t.items() if k.startswith("model/")})
    opt = optimizer.state_dict()
    for key, v in t.items():
        if key.startswith("adam/"):
            _, i, name = key.split("/")
            opt["state"].setdefault(int(i), {})[name] = v.reshape(()) if name == "step" else v
    optimizer.load_state_dict(opt)
    torch.set_rng_state(t["torch_rng"])
    env.set_state({k[len("env/"):]: v.numpy() for k, v in t.items() if k.startswith("env/")}, snap["env_rng"])
    log.rows.extend(snap["rows"])
    ep_returns.extend(snap["ep_returns"])
    return snap["update"], snap["step"], snap["next_eval"], t["obs"]


def _eval_scalars(s: dict) -> dict:
    return {"eval/return": s["return_mean"], "eval/fraction_of_oracle": s["fraction_of_oracle"]}


def _progress(total: int, enabled: bool, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, desc=desc, unit="step", unit_scale=True, leave=False)


# ----------------------------------------------------------------------------------------------------------------
# Jobs: a checkpoint in, a checkpoint out (what the CLI and the experiment runner call)


def train_new(arch: str, arch_config: dict, env_cfg, reward: Reward, ppo: PPOConfig, seed: int, *,
              log_dir: Path | None = None, progress: bool = False, resume_dir: Path | None = None,
              name: str | None = None, callbacks=()) -> Checkpoint:
    """Initialise ``arch`` from ``seed`` and train it on ``reward`` (this is how MA is made)."""
    torch.manual_seed(seed)
    model = build_agent(arch, env_cfg.obs_shape, env_cfg.n_actions, arch_config)
    result = train(model, env_cfg, reward, ppo, seed, log_dir=log_dir, progress=progress, resume_dir=resume_dir,
                   name=name, callbacks=callbacks)
    return Checkpoint(arch, arch_config, env_cfg, reward, _state(model), result.steps, seed, None, _extra(result, ppo))


def finetune(parent: Checkpoint, reward: Reward, ppo: PPOConfig, seed: int, *, parent_path: str | None = None,
             log_dir: Path | None = None, progress: bool = False, env_cfg=None,
             resume_dir: Path | None = None, name: str | None = None, callbacks=()) -> Checkpoint:
    """Continue training ``parent`` under ``reward`` with a fresh optimiser (this is how MB is made)."""
    model = parent.build()
    env_cfg = env_cfg or parent.env
    result = train(model, env_cfg, reward, ppo, seed, log_dir=log_dir, progress=progress, resume_dir=resume_dir,
                   name=name, callbacks=callbacks)
    return Checkpoint(parent.arch, parent.arch_config, env_cfg, reward, _state(model), parent.steps + result.steps,
                      seed, parent_path, _extra(result, ppo))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _extra(result: TrainResult, ppo: PPOConfig) -> dict:
    return {"final_eval": result.final_eval, "wall_s": round(result.wall_s, 3), "ppo": ppo.to_json()}
