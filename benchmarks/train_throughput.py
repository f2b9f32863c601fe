"""Training throughput: goalscope PPO vs Stable-Baselines3 PPO on the same env with the same network.

All in one process, one torch thread, CPU:

1. goalscope ``train()`` with the ``mlp`` architecture (hidden (64, 64), tanh, separate policy and value towers).
2. SB3 ``PPO("MlpPolicy")`` with ``net_arch=dict(pi=[64, 64], vf=[64, 64])``, ``activation_fn=nn.Tanh`` (the same
   layers and parameter count), on the same env through the Gymnasium API: ``make_vec_env(ObjectMazeEnv,
   n_envs, vec_env_cls=DummyVecEnv)`` -- what a user would do (each env Monitor-wrapped, stepped one by one).
   By default (``--sb3-env both``) it also runs SB3 on a thin SB3 ``VecEnv`` adapter over the native
   ``MazeVecEnv`` (``goalscope.agents.sb3.sb3_vec_env``) to separate SB3's algorithm overhead from its per-env stepping.
3. The compute ceiling of that network: with no env and no PPO bookkeeping, (a) ``n_steps`` batched forward
   passes over ``n_envs`` observations plus action sampling, (b) ``epochs`` passes of forward + PPO loss +
   backward + grad-norm clip + Adam over the batch in pre-cut minibatches of ``minibatch`` rows.
   ceiling steps/s = batch / (time(a) + time(b)), the median of ``--ceiling-reps`` repeats.
4. The same for goalscope's default ``cnn`` architecture, goalscope vs its own ceiling (SB3 is not run: it would
   need a custom feature extractor).

Same hyperparameters for both trainers: n_envs, n_steps, epochs, minibatch size, lr (constant, no annealing),
gamma, gae_lambda, clip 0.2, ent 0.01, vf 0.5, max grad norm 0.5, per-minibatch advantage normalisation.
(SB3 additionally bootstraps truncated episodes with one extra value forward per truncated env, which is part of
SB3's algorithm and is kept.)

Timing, the same for both trainers: steady state, from the end of the first update to the end of the last one
(the first rollout+update is a warm-up and is excluded). For goalscope the times come from the history rows of
``train()``: row k has ``charts/steps_per_s`` = step_k / elapsed_k, so elapsed_k = step_k / steps_per_s_k; this
excludes train()'s setup, its oracle profile and its final evaluation (which run before the first and after the
last update). For SB3 a callback records the start of every rollout and the end of training.

Goal (issue): goalscope >= 5x SB3 (env steps/s while training), and goalscope >= 70% of the compute ceiling.

Run:  .venv/bin/python benchmarks/train_throughput.py              (about 30 s on 2 cores)
      .venv/bin/python benchmarks/train_throughput.py --steps 81920 --cnn same --cnn-steps 8192
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time

import numpy as np
import torch
from torch import nn

from goalscope.agents.registry import build_agent
from goalscope.envs.gym import ObjectMazeEnv
from goalscope.envs.maze import N_ACTIONS, MazeConfig, MazeVecEnv
from goalscope.envs.rewards import parse_reward
from goalscope.rl.ppo import PPOConfig, train

RATIO_GOAL = 5.0
CEILING_GOAL = 0.70


# ----------------------------------------------------------------------------------------------------------------
# goalscope


def run_goalscope(arch: str, arch_cfg: dict, cfg: MazeConfig, reward, ppo: PPOConfig, seed: int) -> dict:
    torch.manual_seed(seed)
    model = build_agent(arch, cfg.obs_shape, N_ACTIONS, arch_cfg)
    t0 = time.perf_counter()
    result = train(model, cfg, reward, ppo, seed)
    wall = time.perf_counter() - t0
    rows = [r for r in result.history if "charts/steps_per_s" in r]
    if len(rows) < 2:
        raise SystemExit(f"goalscope {arch}: need at least 2 updates to time a steady state; raise --steps")
    elapsed = [r["step"] / r["charts/steps_per_s"] for r in rows]
    sps = (rows[-1]["step"] - rows[0]["step"]) / (elapsed[-1] - elapsed[0])
    return {"steps_per_s": sps, "timed_steps": rows[-1]["step"] - rows[0]["step"], "wall_s": wall,
            "params": sum(p.numel() for p in model.parameters()),
            "episode_return": rows[-1].get("charts/episode_return", float("nan"))}


# ----------------------------------------------------------------------------------------------------------------
# Stable-Baselines3


def run_sb3(env_kind: str, cfg: MazeConfig, reward_spec: str, ppo: PPOConfig, seed: int) -> dict:
    from stable_baselines3 import PPO
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import DummyVecEnv

    from goalscope.agents.sb3 import sb3_ppo_kwargs, sb3_vec_env

    if env_kind == "dummy":
        venv = make_vec_env(ObjectMazeEnv, n_envs=ppo.n_envs, seed=seed, vec_env_cls=DummyVecEnv,
                            env_kwargs={"config": cfg, "reward": reward_spec})
    else:
        venv = sb3_vec_env(cfg, reward_spec, ppo.n_envs, seed)

    class Timer(BaseCallback):
        def __init__(self):
            super().__init__()
            self.rollout_starts: list[float] = []
            self.end = 0.0

        def _on_rollout_start(self) -> None:
            self.rollout_starts.append(time.perf_counter())

        def _on_step(self) -> bool:
            return True

        def _on_training_end(self) -> None:
            self.end = time.perf_counter()

    # sb3_ppo_kwargs: the same loss as goalscope's (SB3 halves nothing in its value loss, so vf_coef is halved there)
    model = PPO("MlpPolicy", venv, **sb3_ppo_kwargs(ppo),
                policy_kwargs={"net_arch": {"pi": [64, 64], "vf": [64, 64]}, "activation_fn": nn.Tanh},
                seed=seed, device="cpu", verbose=0)
    timer = Timer()
    t0 = time.perf_counter()
    model.learn(total_timesteps=ppo.total_steps, callback=timer)
    wall = time.perf_counter() - t0
    iters = len(timer.rollout_starts)
    if iters < 2:
        raise SystemExit("SB3: need at least 2 updates to time a steady state; raise --steps")
    timed = (iters - 1) * ppo.batch_size
    return {"steps_per_s": timed / (timer.end - timer.rollout_starts[1]), "timed_steps": timed, "wall_s": wall,
            "params": sum(p.numel() for p in model.policy.parameters())}


# ----------------------------------------------------------------------------------------------------------------
# Compute ceiling


def ceiling(arch: str, arch_cfg: dict, cfg: MazeConfig, reward, ppo: PPOConfig, seed: int, reps: int) -> dict:
    """Env steps/s if a trainer spent time only on the network: rollout inference plus the PPO updates."""
    torch.manual_seed(seed)
    model = build_agent(arch, cfg.obs_shape, N_ACTIONS, arch_cfg)
    optimizer = torch.optim.Adam(model.parameters(), lr=ppo.lr, eps=1e-5)
    T, N = ppo.n_steps, ppo.n_envs
    # Real observations (not timed), so the inputs look like training's.
    env = MazeVecEnv(cfg, reward, N, seed=seed)
    rng = np.random.default_rng(seed)
    obs = torch.from_numpy(np.stack([env.step(rng.integers(N_ACTIONS, size=N))[0] for _ in range(T)]))
    b_obs = obs.flatten(0, 1)
    B = b_obs.shape[0]
    b_act = torch.from_numpy(rng.integers(N_ACTIONS, size=B))
    b_logp = torch.full((B,), -float(np.log(N_ACTIONS)))
    b_adv = torch.randn(B)
    b_ret = torch.randn(B)
    mbs = [slice(i, i + ppo.minibatch_size) for i in range(0, B, ppo.minibatch_size)]

    def inference():
        with torch.inference_mode():
            for t in range(T):
                logits, value = model(obs[t])
                action = torch.multinomial(torch.softmax(logits, -1), 1).squeeze(-1)
                torch.log_softmax(logits, -1).gather(-1, action.unsqueeze(-1))

    def update():
        for _ in range(ppo.epochs):
            for s in mbs:
                logits, value = model(b_obs[s])
                logp_all = torch.log_softmax(logits, -1)
                logp = logp_all.gather(-1, b_act[s].unsqueeze(-1)).squeeze(-1)
                ratio = torch.exp(logp - b_logp[s])
                adv = b_adv[s]
                pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - ppo.clip, 1 + ppo.clip)).mean()
                loss = pg + ppo.vf_coef * 0.5 * (value - b_ret[s]).pow(2).mean() \
                    + ppo.ent_coef * (logp_all.exp() * logp_all).sum(-1).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), ppo.max_grad_norm)
                optimizer.step()

    def timed(fn):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    inference(), update()  # warm-up
    t_inf = statistics.median(timed(inference) for _ in range(reps))
    t_upd = statistics.median(timed(update) for _ in range(reps))
    return {"steps_per_s": B / (t_inf + t_upd), "inference_s": t_inf, "update_s": t_upd, "batch": B}


# ----------------------------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return f"{x:,.0f}"


def _settings(ppo: PPOConfig) -> str:
    return (f"n_envs {ppo.n_envs}, n_steps {ppo.n_steps} (batch {ppo.batch_size}), epochs {ppo.epochs}, "
            f"minibatch {ppo.minibatch_size}, {ppo.total_steps} steps ({ppo.total_steps // ppo.batch_size} updates)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40_960, help="env steps per MLP training run, rounded down to "
                   "whole batches (default: 40960 = 20 updates)")
    p.add_argument("--n-envs", type=int, default=16)
    p.add_argument("--n-steps", type=int, default=128, help="rollout length per env")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--minibatch", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--sb3-env", choices=["dummy", "native", "both", "none"], default="both",
                   help="SB3's env: dummy = make_vec_env(ObjectMazeEnv, vec_env_cls=DummyVecEnv) (default, the "
                   "reported baseline); native = thin SB3 VecEnv adapter over MazeVecEnv; both (default); none")
    p.add_argument("--cnn", choices=["defaults", "same", "none"], default="defaults",
                   help="goalscope 'cnn' run: defaults = PPOConfig() n_envs/n_steps/epochs/minibatch (64, 32, 3, "
                   "512; default); same = the MLP comparison's settings; none = skip")
    p.add_argument("--cnn-steps", type=int, default=16_384, help="env steps of the CNN run (default: 16384)")
    p.add_argument("--ceiling-reps", type=int, default=3, help="repeats of each ceiling timing (median)")
    p.add_argument("--reward", default="collect:0")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.set_num_threads(1)
    cfg = MazeConfig()
    reward = parse_reward(args.reward, cfg.n_types)
    batch = args.n_envs * args.n_steps
    # eval_episodes only sizes train()'s oracle profile and final evaluation, which are outside the timed span.
    ppo = PPOConfig(total_steps=max(2, args.steps // batch) * batch, n_envs=args.n_envs, n_steps=args.n_steps,
                    epochs=args.epochs, minibatch_size=args.minibatch, lr=args.lr, anneal_lr=False,
                    eval_episodes=64, threads=1)
    mlp_cfg = {"hidden": [64, 64], "activation": "tanh", "shared": False}

    print(f"env: MazeConfig() {cfg.size}x{cfg.size} {cfg.layout}, {cfg.n_types} types, obs uint8{cfg.obs_shape}; "
          f"reward {reward.name}; torch {torch.__version__}, 1 thread")
    print(f"MLP settings: {_settings(ppo)}, lr {ppo.lr} constant, gamma {ppo.gamma}, gae_lambda {ppo.gae_lambda}")
    print("timing: steady state from the end of update 1 to the end of the last update (excludes setup, "
          "goalscope's oracle and final evaluation)", flush=True)

    results = {}
    results["goalscope"] = run_goalscope("mlp", mlp_cfg, cfg, reward, ppo, args.seed)
    print(f"  goalscope mlp        {_fmt(results['goalscope']['steps_per_s'])} steps/s", flush=True)
    kinds = {"dummy": ["dummy"], "native": ["native"], "both": ["dummy", "native"], "none": []}[args.sb3_env]
    for kind in kinds:
        results[f"sb3-{kind}"] = run_sb3(kind, cfg, args.reward, ppo, args.seed)
        print(f"  SB3 ({kind})          {_fmt(results[f'sb3-{kind}']['steps_per_s'])} steps/s", flush=True)
    mlp_ceiling = ceiling("mlp", mlp_cfg, cfg, reward, ppo, args.seed, args.ceiling_reps)
    print(f"  MLP ceiling          {_fmt(mlp_ceiling['steps_per_s'])} steps/s", flush=True)

    cnn_ppo = cnn = cnn_ceiling = None
    if args.cnn != "none":
        base = PPOConfig() if args.cnn == "defaults" else ppo
        cnn_ppo = dataclasses.replace(ppo, n_envs=base.n_envs, n_steps=base.n_steps, epochs=base.epochs,
                                      minibatch_size=base.minibatch_size)
        cnn_ppo = dataclasses.replace(cnn_ppo, total_steps=max(2, args.cnn_steps // cnn_ppo.batch_size) * cnn_ppo.batch_size)
        cnn = run_goalscope("cnn", {}, cfg, reward, cnn_ppo, args.seed)
        print(f"  goalscope cnn        {_fmt(cnn['steps_per_s'])} steps/s", flush=True)
        cnn_ceiling = ceiling("cnn", {}, cfg, reward, cnn_ppo, args.seed, args.ceiling_reps)
        print(f"  CNN ceiling          {_fmt(cnn_ceiling['steps_per_s'])} steps/s", flush=True)

    gs = results["goalscope"]["steps_per_s"]
    print()
    print(f"MLP (64, 64) tanh, separate pi/vf towers, {results['goalscope']['params']:,} params; {_settings(ppo)}")
    header = f"{'trainer':<44} {'steps/s':>9} {'goalscope /':>12} {'of ceiling':>11} {'timed steps':>12}"
    print(header)
    print("-" * len(header))
    names = {"goalscope": "goalscope PPO (MazeVecEnv)",
             "sb3-dummy": "SB3 PPO, DummyVecEnv(ObjectMazeEnv x n_envs)",
             "sb3-native": "SB3 PPO, VecEnv adapter over MazeVecEnv"}
    for key, r in results.items():
        vs = "-" if key == "goalscope" else f"{gs / r['steps_per_s']:.2f}x"
        print(f"{names[key]:<44} {_fmt(r['steps_per_s']):>9} {vs:>12} "
              f"{r['steps_per_s'] / mlp_ceiling['steps_per_s']:>10.0%} {r['timed_steps']:>12}")
    print(f"{'compute ceiling (network only)':<44} {_fmt(mlp_ceiling['steps_per_s']):>9} {'':>12} {'100%':>11}   "
          f"inference {mlp_ceiling['inference_s'] * 1e3:.1f} ms + update {mlp_ceiling['update_s'] * 1e3:.1f} ms "
          f"per batch of {mlp_ceiling['batch']}")
    if "sb3-dummy" in results:
        ratio = gs / results["sb3-dummy"]["steps_per_s"]
        print(f"goal: goalscope / SB3 (DummyVecEnv) >= {RATIO_GOAL:g}x: {ratio:.2f}x "
              f"{'MET' if ratio >= RATIO_GOAL else 'NOT MET'} (the most any trainer can reach here is "
              f"ceiling / SB3 = {mlp_ceiling['steps_per_s'] / results['sb3-dummy']['steps_per_s']:.2f}x)")
    frac = gs / mlp_ceiling["steps_per_s"]
    print(f"goal: goalscope >= {CEILING_GOAL:.0%} of the MLP ceiling: {frac:.0%} {'MET' if frac >= CEILING_GOAL else 'NOT MET'}")

    if cnn is not None:
        print()
        print(f"CNN (goalscope default 'cnn'), {cnn['params']:,} params; {_settings(cnn_ppo)}")
        print(header)
        print("-" * len(header))
        print(f"{'goalscope PPO (MazeVecEnv)':<44} {_fmt(cnn['steps_per_s']):>9} {'-':>12} "
              f"{cnn['steps_per_s'] / cnn_ceiling['steps_per_s']:>10.0%} {cnn['timed_steps']:>12}")
        print(f"{'compute ceiling (network only)':<44} {_fmt(cnn_ceiling['steps_per_s']):>9} {'':>12} {'100%':>11}   "
              f"inference {cnn_ceiling['inference_s'] * 1e3:.1f} ms + update {cnn_ceiling['update_s'] * 1e3:.1f} ms "
              f"per batch of {cnn_ceiling['batch']}")
        frac = cnn["steps_per_s"] / cnn_ceiling["steps_per_s"]
        print(f"goal: goalscope >= {CEILING_GOAL:.0%} of the CNN ceiling: {frac:.0%} "
              f"{'MET' if frac >= CEILING_GOAL else 'NOT MET'}")


if __name__ == "__main__":
    main()
