"""Proximal Policy Optimisation over the vectorised maze, readable top to bottom (CleanRL's single-file PPO).

One call of :func:`train` runs ``total_steps`` environment steps: collect a rollout of ``n_steps`` from ``n_envs``
envs, compute advantages with GAE, then ``epochs`` passes of clipped-objective minibatch updates. Fine-tuning is
the same call on an already trained model with another reward.

Determinism: the torch generator and the env are seeded from ``seed``; with one thread on a CPU the same seed
gives bit-identical weights. Training uses one torch thread by default because small networks gain nothing from a
second one and lose ~3x when the other core is busy; run independent jobs in parallel processes instead.

Owns the loop (:func:`train`) and the two jobs built on it (:func:`train_new` for MA, :func:`finetune` for MB).
Logging (:mod:`goalscope.rl.logs`) and resumable snapshots (:mod:`goalscope.rl.snapshots`) are collaborators the
loop calls. May import: goalscope.rl, goalscope.agents, goalscope.envs, the core helpers.
"""

from __future__ import annotations

import math
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
from goalscope.rl.logs import ScalarLog, eval_scalars, progress_bar, run_name
from goalscope.rl.snapshots import Snapshots


PRECISIONS = ("fp32", "bf16", "auto")
BF16_FLAGS = ("amx_bf16", "avx512_bf16")  # /proc/cpuinfo flags of CPUs that multiply bf16 in hardware
# Only AMX tiles make bf16 pay for these small networks: with avx512_bf16 alone (an AMD EPYC, Zen 4) the default's
# trainer ran 0.86x of fp32 (benchmarks/README.md, "precision.py"), so `auto` asks for the tiles.
AUTO_BF16_FLAG = "amx_bf16"


def bf16_units(cpuinfo: str | None = None) -> list[str]:
    """The bf16 matrix-unit flags this CPU reports (``amx_bf16``, ``avx512_bf16``); empty where it has none or
    the platform does not say (no ``/proc/cpuinfo``)."""
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return []
    flags = set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            flags.update(line.partition(":")[2].split())
    return [f for f in BF16_FLAGS if f in flags]


def resolve_precision(precision: str, device: str = "cpu", units: list[str] | None = None) -> str:
    """``auto`` made concrete for ``device``: bf16 on a CPU with AMX bf16 tiles (``amx_bf16``), fp32 elsewhere.

    With AMX the whole trainer runs ~1.6x faster in bf16; with ``avx512_bf16`` alone it ran 0.86x of fp32 (an AMD
    EPYC), and without any bf16 unit autocast emulates bf16 at about half fp32's speed (benchmarks/README.md,
    "precision.py"). On a GPU ``auto`` is fp32: these small networks are launch-bound there and bf16 measured
    0.85-1.00x of fp32 on an H200. ``fp32`` and ``bf16`` are returned as they are."""
    if precision != "auto":
        return precision
    if device != "cpu":
        return "fp32"
    return "bf16" if AUTO_BF16_FLAG in (bf16_units() if units is None else units) else "fp32"


@dataclass(frozen=True)
class PPOConfig:
    """PPO hyperparameters (CleanRL's names and defaults where they apply), validated on construction."""
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
    save_every_s: float = 300.0  # and seconds of wall time between them (0 = never): slow envs lose minutes to a kill
    # "bf16": forward and backward passes under torch.autocast in bfloat16 (~1.6x faster for the whole trainer on
    # CPUs with AMX bf16 tiles, 0.86x with avx512_bf16 alone, ~0.5x where it is emulated); weights, Adam state, losses and everything saved
    # stay fp32. "fp32" (default) is bit-reproducible; bf16 is deterministic on one machine too, but its numbers
    # differ from fp32's. "auto" is resolved on construction (:func:`resolve_precision`), so a config never holds it.
    precision: str = "fp32"
    # Where the network's passes and updates run: "cpu", "cuda" or "cuda:N". The envs, rollout buffers, GAE and
    # action sampling stay on the CPU (same generator, same draws), so only the passes move. Not bit-reproducible
    # on a GPU (cuDNN picks kernels at run time); cpu stays the default.
    device: str = "cpu"

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
        for name in ("eval_every", "save_every", "save_every_s"):
            if getattr(self, name) < 0:
                raise ConfigError(f"ppo.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 < self.lr < 1:
            raise ConfigError(f"ppo.lr must be in (0, 1), got {self.lr}")
        for name in ("gamma", "gae_lambda"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"ppo.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"ppo.precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        kind, _, index = self.device.partition(":") if isinstance(self.device, str) else ("", "", "")
        if kind not in ("cpu", "cuda") or (index and (kind == "cpu" or not index.isdigit())):
            raise ConfigError(f"ppo.device must be 'cpu', 'cuda' or 'cuda:N', got {self.device!r}")
        object.__setattr__(self, "precision", resolve_precision(self.precision, kind))

    def autocast(self):
        """The context the network's passes run in: bf16 autocast, or nothing for fp32."""
        return torch.autocast(self.device.partition(":")[0], dtype=torch.bfloat16, enabled=self.precision == "bf16")

    @property
    def batch_size(self) -> int:
        return self.n_envs * self.n_steps

    @staticmethod
    def from_json(d: dict) -> "PPOConfig":
        return PPOConfig(**check_fields(PPOConfig, d, "ppo"))

    def to_json(self) -> dict:
        d = asdict(self)
        for name, default in (("device", "cpu"), ("save_every_s", 300.0)):
            if d[name] == default:  # left out at its default: what runs recorded before it existed reads the same
                del d[name]
        return d


@dataclass
class TrainResult:
    """What :func:`train` returns: steps done, the logged row of every update, the final evaluation and wall time."""
    steps: int
    history: list[dict]  # one row per update: losses, episode stats, evaluations
    final_eval: dict
    wall_s: float


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
    free: dict[str, torch.Tensor] | None = None,
) -> TrainResult:
    """Train ``model`` in place with PPO on ``reward``; returns the per-update history and a final evaluation.

    With ``resume_dir``, a snapshot (weights, optimiser, RNG and env state) is written there every
    ``ppo.save_every`` env steps, and a snapshot found there is continued from: a run killed mid-way ends with
    the same weights as one that was never interrupted.

    ``callbacks`` (Stable-Baselines3 style) are called after every update as ``callback(step, row, model)``, with
    the row of scalars just logged; one returning ``False`` stops training there (the final evaluation still runs).

    ``free`` (a bool tensor per parameter) trains only the True entries: the others get no gradient, so Adam (no
    weight decay) leaves them exactly where they were. This is how an objective is planted by training.
    """
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    torch.set_num_threads(ppo.threads)
    if ppo.device != "cpu" and not torch.cuda.is_available():
        raise ConfigError(f"ppo.device is {ppo.device!r} but this torch sees no CUDA device; "
                          "use device = \"cpu\"")
    torch.manual_seed(seed)
    start = time.perf_counter()
    home = next(model.parameters()).device  # the model goes back there afterwards, whatever ppo.device is
    dev = torch.device(ppo.device)
    model.to(dev)
    env = env_cfg.make(reward, ppo.n_envs, seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=ppo.lr, eps=1e-5)
    grad_mask = None if free is None else [(p, free[k].to(dev, p.dtype)) for k, p in model.named_parameters()]
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
        # Without the device: a snapshot taken on a GPU continues on a CPU (and back).
        fingerprint = {"ppo": {k: v for k, v in ppo.to_json().items() if k not in ("device", "save_every_s")},
                       "seed": seed, "reward": reward.to_json(), "env": env_cfg.to_json()}
        snapshots = Snapshots(resume_dir, fingerprint, ppo.save_every, env, ppo.save_every_s)
        resumed = snapshots.resume(model, optimizer, env, log, ep_returns)
        if resumed is not None:
            first_update, step, next_eval, obs = resumed
        resumed_at = step  # this process's speed counts only the steps it ran
        bar = progress_bar(n_updates * ppo.batch_size, progress, f"PPO {reward.name}")
        bar.update(step)
        for update in range(first_update, n_updates):
            if ppo.anneal_lr:
                optimizer.param_groups[0]["lr"] = ppo.lr * (1.0 - update / n_updates)

            # 1. Rollout: act in all envs at once.
            with torch.inference_mode():
                for t in range(T):
                    obs_buf[t] = obs
                    with ppo.autocast():
                        logits, value = model(obs.to(dev))
                    logits, value = logits.float().cpu(), value.float().cpu()
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
                    next_value = model(obs.to(dev))[1].float().cpu()

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
            b_obs, b_act, b_logp = obs_buf.flatten(0, 1).to(dev), act_buf.flatten().to(dev), logp_buf.flatten().to(dev)
            b_adv, b_ret = adv.flatten().to(dev), ret.flatten().to(dev)
            stats = []
            for _ in range(ppo.epochs):
                for idx in torch.randperm(ppo.batch_size).split(ppo.minibatch_size):  # drawn on the CPU, as before
                    idx = idx.to(dev)
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
                    for p, m in grad_mask or ():
                        if p.grad is not None:
                            p.grad.mul_(m)
                    nn.utils.clip_grad_norm_(model.parameters(), ppo.max_grad_norm)
                    optimizer.step()
                    with torch.no_grad():
                        approx_kl = ((ratio - 1) - (logp - b_logp[idx])).mean()
                        clipfrac = ((ratio - 1).abs() > ppo.clip).float().mean()
                    stats.append(torch.stack([loss.detach(), pg_loss.detach(), v_loss.detach(), entropy.detach(),
                                              approx_kl, clipfrac]))
            _check_finite(model, torch.stack(stats).sum(), step)
            s = torch.stack(stats).mean(0).tolist()
            # How much of the return the value head explains (1 = all, <= 0 = none).
            var_ret, flat_ret = float(ret.flatten().var()), ret.flatten()
            explained = 1.0 - float((flat_ret - val_buf.flatten()).var()) / var_ret if var_ret > 0 else float("nan")
            row = {"losses/total": s[0], "losses/policy": s[1], "losses/value": s[2], "losses/entropy": s[3],
                   "losses/approx_kl": s[4], "losses/clipfrac": s[5], "losses/explained_variance": explained,
                   "charts/lr": optimizer.param_groups[0]["lr"],
                   "charts/steps_per_s": (step - resumed_at) / (time.perf_counter() - start)}
            if ep_returns:
                row["charts/episode_return"] = float(np.mean(ep_returns))
                row["charts/episode_length"] = float(np.mean(ep_lengths)) if ep_lengths else float("nan")
                ep_returns.clear()
                ep_lengths.clear()
            if next_eval is not None and step >= next_eval and update < n_updates - 1:
                row.update(eval_scalars(summarise(evaluate(model, env_cfg, reward, ppo.eval_episodes), reward, oracle)))
                next_eval += ppo.eval_every
            log.write(step, row)
            if snapshots.due(step) and update < n_updates - 1:
                snapshots.save(model, optimizer, env, obs, update + 1, step, next_eval, log, ep_returns)
            bar.update(ppo.batch_size)
            bar.set_postfix_str(f"return {row.get('charts/episode_return', float('nan')):.2f}")
            if any(cb(step, row, model) is False for cb in callbacks):
                break
        bar.close()

        final = summarise(evaluate(model, env_cfg, reward, ppo.eval_episodes), reward, oracle)
        log.write(step, eval_scalars(final))
        return TrainResult(step, log.rows, final, time.perf_counter() - start)
    finally:  # on divergence or a kill too: flush the logs, release the env's resources
        model.to(home)
        log.close()
        getattr(env, "close", lambda: None)()


# ----------------------------------------------------------------------------------------------------------------
# Jobs: a checkpoint in, a checkpoint out (what the CLI and the experiment runner call)


def initial_model(arch: str, arch_config: dict, env_cfg, seed: int) -> nn.Module:
    """The untrained model :func:`train_new` starts from for ``seed``: validation rebuilds it from a checkpoint's
    arch, config and seed (MA's movement from init is a null), so the seeding convention lives here only."""
    torch.manual_seed(seed)
    return build_agent(arch, env_cfg.obs_shape, env_cfg.n_actions, arch_config)


def train_new(arch: str, arch_config: dict, env_cfg, reward: Reward, ppo: PPOConfig, seed: int, *,
              log_dir: Path | None = None, progress: bool = False, resume_dir: Path | None = None,
              name: str | None = None, callbacks=()) -> Checkpoint:
    """Initialise ``arch`` from ``seed`` and train it on ``reward`` (this is how MA is made)."""
    model = initial_model(arch, arch_config, env_cfg, seed)
    result = train(model, env_cfg, reward, ppo, seed, log_dir=log_dir, progress=progress, resume_dir=resume_dir,
                   name=name, callbacks=callbacks)
    return Checkpoint(arch, arch_config, env_cfg, reward, _state(model), result.steps, seed, None, _extra(result, ppo))


def finetune(parent: Checkpoint, reward: Reward, ppo: PPOConfig, seed: int, *, parent_path: str | None = None,
             log_dir: Path | None = None, progress: bool = False, env_cfg=None,
             resume_dir: Path | None = None, name: str | None = None, callbacks=(), free=None) -> Checkpoint:
    """Continue training ``parent`` under ``reward`` with a fresh optimiser (this is how MB is made); ``free`` as
    in :func:`train`."""
    model = parent.build()
    env_cfg = env_cfg or parent.env
    result = train(model, env_cfg, reward, ppo, seed, log_dir=log_dir, progress=progress, resume_dir=resume_dir,
                   name=name, callbacks=callbacks, free=free)
    return Checkpoint(parent.arch, parent.arch_config, env_cfg, reward, _state(model), parent.steps + result.steps,
                      seed, parent_path, _extra(result, ppo))


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


def _extra(result: TrainResult, ppo: PPOConfig) -> dict:
    return {"final_eval": result.final_eval, "wall_s": round(result.wall_s, 3), "ppo": ppo.to_json()}
