"""CLI commands for one model at a time: train (MA), finetune (MB), eval, import-sb3.

May import anything below the CLI; heavy modules are imported inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from goalscope.cli.common import MAX_EPISODES, add_env_args, bounded_int, env_config, non_negative_int, positive_int
from goalscope.errors import ConfigError
from goalscope.inputs import check_ppo_sizes
from goalscope.outputs import check_replaceable, replace_dir


def add_commands(sub) -> None:
    """The parsers of the one-model commands: train, finetune, eval, import-sb3."""
    p = sub.add_parser("train", help="train a new agent (MA) on a reward", description="Train a new agent on a reward with PPO.")
    p.add_argument("--reward", required=True, help="reward RA, e.g. collect:0")
    p.add_argument("--arch", default="cnn", help="a registered architecture: cnn, mlp, planner, ...")
    p.add_argument("--arch-config", default="{}", help='architecture options as JSON, e.g. \'{"hidden": 64}\'')
    add_env_args(p)
    _add_ppo_args(p, 150_000)

    p = sub.add_parser("finetune", help="continue training a checkpoint on another reward (MB)",
                       description="Fine-tune a checkpoint on another reward in the same environment.")
    p.add_argument("checkpoint", type=Path, help="checkpoint directory of the parent model (MA)")
    p.add_argument("--reward", required=True, help="reward RB, e.g. collect:1")
    _add_ppo_args(p, 50_000)

    p = sub.add_parser("eval", help="behaviour profile and return of a checkpoint",
                       description="Run evaluation episodes and print what the agent collects and its return "
                                   "under a reward, as a fraction of a shortest-path oracle.")
    p.add_argument("checkpoint", type=Path, help="checkpoint directory (model.safetensors + meta.json)")
    p.add_argument("--reward", help="reward to score under (default: the one it was trained on)")
    p.add_argument("--episodes", type=bounded_int(MAX_EPISODES), default=256, help="evaluation episodes")
    p.add_argument("--seed", type=non_negative_int, default=10_000, help="evaluation seed: same seed, same episodes")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    p = sub.add_parser("import-sb3", help="import a Stable-Baselines3 PPO MlpPolicy (or GoalscopeCNN) zip as a goalscope checkpoint",
                       description="Read a Stable-Baselines3 PPO zip (MlpPolicy, separate pi/vf towers of equal "
                                   "widths, Tanh or ReLU) trained on the object maze, without unpickling anything, "
                                   "and write a goalscope 'mlp' checkpoint that can be evaluated, fine-tuned and "
                                   "analysed like MA. A policy with goalscope.agents.sb3.GoalscopeCNN as its "
                                   "features extractor becomes a 'cnn' checkpoint with identical outputs. The maze "
                                   "options must be those it was trained on: size and n_types are read from the "
                                   "zip's observation shape; SB3 stores nothing else about the env, so give the "
                                   "rest (--n-per-type, --max-steps, --layout, --loop-prob) or --env-kwargs, the "
                                   "keyword arguments it was made with (gym.make('goalscope/ObjectMaze-v0', ...)). "
                                   "Nothing is assumed.")
    p.add_argument("zip", type=Path, help="the SB3 model zip (model.save(...))")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to create, e.g. runs/ma")
    p.add_argument("--reward", required=True, help="the reward it was trained on (RA), e.g. collect:0")
    p.add_argument("--activation", choices=["tanh", "relu"],
                   help="only if the zip does not say in readable form (SB3 writes it for its own models)")
    p.add_argument("--force", action="store_true", help="replace an existing checkpoint directory")
    g = p.add_argument_group("environment (object maze): what the SB3 model was trained on")
    g.add_argument("--env-kwargs", metavar="JSON",
                   help='the keyword arguments of gym.make("goalscope/ObjectMaze-v0", ...) it was trained with, e.g. '
                        "'{\"size\": 7}'; every setting not named takes that env's own default")
    g.add_argument("--size", type=int, help="grid side (default: read from the zip)")
    g.add_argument("--n-types", type=int, help="object types K (default: read from the zip)")
    g.add_argument("--n-per-type", type=int, help="objects of each type per episode (required without --env-kwargs)")
    g.add_argument("--max-steps", type=int, help="episode step limit (required without --env-kwargs)")
    g.add_argument("--layout", choices=["maze", "open"], help="(required without --env-kwargs)")
    g.add_argument("--loop-prob", type=float, help="(required without --env-kwargs)")


def _add_ppo_args(p: argparse.ArgumentParser, default_steps: int) -> None:
    g = p.add_argument_group("training (PPO)")
    g.add_argument("--steps", type=positive_int, default=default_steps, help="environment steps")
    g.add_argument("--seed", type=non_negative_int, default=0, help="seed for weights, envs and sampling")
    g.add_argument("--n-envs", type=positive_int, default=64, help="parallel envs")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    g.add_argument("--precision", choices=["fp32", "bf16", "auto"], default="fp32",
                   help="bf16: network passes under bfloat16 autocast (~1.6x faster on CPUs with AMX bf16 tiles, "
                        "0.86x with avx512_bf16 alone, ~0.5x where emulated; weights stay fp32); auto: bf16 with AMX, fp32 "
                        "elsewhere; fp32 is bit-reproducible")
    g.add_argument("--device", default="cpu",
                   help="where the network runs: cpu, cuda or cuda:N (the envs stay on the CPU; cpu is bit-reproducible)")
    g.add_argument("--eval-every", type=int, default=0, help="env steps between evaluations (default: only at the end)")
    g.add_argument("--out", required=True, type=Path, help="run directory to create")
    g.add_argument("--force", action="store_true", help="replace an existing run directory")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def _ppo_config(args):
    from goalscope.rl.ppo import PPOConfig

    return PPOConfig(total_steps=args.steps, n_envs=args.n_envs, lr=args.lr, eval_every=args.eval_every,
                     precision=args.precision, device=args.device)


def cmd_train(args) -> None:
    """``goalscope train``: train a new agent on a reward and save its checkpoint."""
    from goalscope.agents.registry import arch_config, arch_config_to_json, build_agent
    from goalscope.agents.checkpoints import save_checkpoint
    from goalscope.inputs import check_model_size
    from goalscope.envs.rewards import parse_reward
    from goalscope.rl.ppo import train_new

    env_cfg = env_config(args)
    reward = parse_reward(args.reward, env_cfg.n_types)
    try:
        cfg_values = json.loads(args.arch_config)
    except json.JSONDecodeError as e:
        raise ConfigError(f"--arch-config is not valid JSON: {e}") from None
    if not isinstance(cfg_values, dict):
        raise ConfigError("--arch-config must be a JSON object")
    arch_cfg = arch_config_to_json(arch_config(args.arch, cfg_values))
    ppo = _ppo_config(args)
    env = env_cfg
    check_ppo_sizes(ppo, env.obs_shape)
    check_model_size(lambda: build_agent(args.arch, env.obs_shape, env.n_actions, arch_cfg), f"--arch {args.arch}")
    with replace_dir(args.out, args.force, "checkpoint directory", "checkpoint") as staging:
        ckpt = train_new(args.arch, arch_cfg, env_cfg, reward, ppo, args.seed, log_dir=staging, progress=not args.quiet)
        save_checkpoint(ckpt, staging)
    _print_summary(ckpt.extra["final_eval"], f"trained {args.arch} on {reward.name} -> {args.out}")


def cmd_finetune(args) -> None:
    """``goalscope finetune``: fine-tune a checkpoint on another reward and save the result."""
    from goalscope.agents.checkpoints import load_checkpoint, save_checkpoint
    from goalscope.envs.rewards import parse_reward, type_names
    from goalscope.rl.ppo import finetune

    parent = load_checkpoint(args.checkpoint)
    reward = parse_reward(args.reward, parent.env.n_types, type_names(parent.env))
    ppo = _ppo_config(args)
    check_ppo_sizes(ppo, parent.env.obs_shape)
    with replace_dir(args.out, args.force, "checkpoint directory", "checkpoint") as staging:
        ckpt = finetune(parent, reward, ppo, args.seed, parent_path=str(args.checkpoint), log_dir=staging,
                        progress=not args.quiet)
        save_checkpoint(ckpt, staging)
    _print_summary(ckpt.extra["final_eval"], f"fine-tuned {args.checkpoint} on {reward.name} -> {args.out}", ckpt.env)


def cmd_eval(args) -> None:
    """``goalscope eval``: print a checkpoint's behaviour profile and return under a reward."""
    from goalscope.agents.checkpoints import load_checkpoint
    from goalscope.envs.rewards import parse_reward, type_names
    from goalscope.rl.evaluation import evaluate, oracle_profile, summarise

    ckpt = load_checkpoint(args.checkpoint)
    reward = parse_reward(args.reward, ckpt.env.n_types, type_names(ckpt.env)) if args.reward else ckpt.reward
    profile = evaluate(ckpt.build(), ckpt.env, reward, args.episodes, args.seed)
    s = summarise(profile, reward, oracle_profile(ckpt.env, reward, args.episodes, args.seed))
    s["trained_on"] = ckpt.reward.name
    if args.json:
        print(json.dumps(s))
    else:
        _print_summary(s, f"{args.checkpoint} (trained on {ckpt.reward.name}, {ckpt.steps} steps)", ckpt.env)


def _print_summary(s: dict, title: str, env=None) -> None:
    from goalscope.envs.rewards import type_names

    print(title)
    names = type_names(env) or [f"type {i}" for i in range(len(s["counts_mean"]))]
    counts = "  ".join(f"{name}: {c:.2f}" for name, c in zip(names, s["counts_mean"]))
    word = "objects collected" if getattr(env, "family", "object_maze") == "object_maze" else "events"
    print(f"  {word} per episode  {counts}")
    oracle = (f"  = {s['fraction_of_oracle']:.1%} of the oracle's {s['oracle_return']:.3f}"
              if s["oracle_return"] == s["oracle_return"] else "  (no oracle for this env)")
    print(f"  return under {s['reward']}: {s['return_mean']:.3f} ± {s['return_sem']:.3f} (s.e.){oracle}"
          f"  [{s['episodes']} episodes]")


def cmd_import_sb3(args) -> None:
    """``goalscope import-sb3``: convert a Stable-Baselines3 PPO zip into a goalscope checkpoint."""
    from goalscope.agents.checkpoints import save_checkpoint
    from goalscope.agents.importers import import_sb3

    check_replaceable(args.out, args.force, "checkpoint directory")  # before reading the zip
    env_cfg, settings = _sb3_env(args)
    ckpt = import_sb3(args.zip, env_cfg, args.reward, activation=args.activation)
    ckpt.extra["imported_from"]["env_settings"] = settings  # where each recorded setting came from
    with replace_dir(args.out, args.force, "checkpoint directory", "checkpoint") as staging:
        save_checkpoint(ckpt, staging)
    hidden = ckpt.arch_config["hidden"]
    what = (f"channels {ckpt.arch_config['channels']}, hidden {hidden}" if ckpt.arch == "cnn"
            else f"hidden {hidden}, {ckpt.arch_config['activation']}")
    print(f"imported {args.zip} ({ckpt.steps:,} SB3 steps) as an {ckpt.arch} checkpoint ({what}) "
          f"trained on {ckpt.reward.name}: {args.out}")


def _sb3_env(args):
    """The maze an SB3 zip was trained on, and where each setting came from; only settings that the zip records,
    the user gave, or ``gym.make("goalscope/ObjectMaze-v0", **env_kwargs)`` itself defaults to are ever used."""
    from goalscope.agents.importers import SB3_DOES_NOT_STORE, sb3_maze_settings
    from goalscope.envs.gym import _config

    flags = ("size", "n_types", "n_per_type", "max_steps", "layout", "loop_prob")
    given = {k: getattr(args, k) for k in flags if getattr(args, k) is not None}
    if args.env_kwargs is not None:
        try:
            kwargs = json.loads(args.env_kwargs)
        except json.JSONDecodeError as e:
            raise ConfigError(f"--env-kwargs is not valid JSON: {e}") from None
        if not isinstance(kwargs, dict):
            raise ConfigError("--env-kwargs must be a JSON object of gym.make keyword arguments")
        kwargs = {k: v for k, v in kwargs.items() if k not in ("reward", "render_mode")}
        cfg = _config(kwargs.pop("config", None), {**kwargs, **given})  # as ObjectMazeEnv builds it
        from_defaults = sorted(set(cfg.to_json()) - set(kwargs) - set(given))
        return cfg, {"given": sorted({*kwargs, *given}), "gym.make default": from_defaults}
    stored = sb3_maze_settings(args.zip)  # the import checks the whole observation shape against the config
    for k, v in stored.items():
        if k in given and given[k] != v:
            raise ConfigError(f"{args.zip}: observation shape mismatch: the SB3 model saw a maze with {k} = {v}, "
                              f"but --{k.replace('_', '-')} {given[k]} was given")
    missing = [k for k in SB3_DOES_NOT_STORE if k not in given]
    missing += [k for k in ("size", "n_types") if k not in given and k not in stored]
    if missing:
        raise ConfigError(f"{args.zip}: SB3 does not store the maze's {', '.join(missing)} (it saves the spaces, not "
                          f"the env), and goalscope records no setting it did not check: pass "
                          f"{' '.join('--' + k.replace('_', '-') + ' ...' for k in missing)}, or --env-kwargs with "
                          "the keyword arguments it was made with (e.g. '{\"size\": 7}' for "
                          "gym.make(\"goalscope/ObjectMaze-v0\", size=7))")
    from goalscope.envs.maze import MazeConfig

    cfg = MazeConfig.from_json({**stored, **given})
    return cfg, {"from the zip": sorted(set(stored) - set(given)), "given": sorted(given),
                 "gym.make default": sorted(set(cfg.to_json()) - set(stored) - set(given))}


COMMANDS = {"train": cmd_train, "finetune": cmd_finetune, "eval": cmd_eval, "import-sb3": cmd_import_sb3}
