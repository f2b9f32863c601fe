"""The ``goalscope`` command line.

Every user mistake (unknown reward, wrong vector length, missing or corrupt checkpoint, bad config...) ends as one
line ``goalscope: error: ...`` and exit status 2; nothing is overwritten without ``--force``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from goalscope.errors import ConfigError, GoalscopeError
from goalscope.inputs import MAX_STEPS, read_json
from goalscope.outputs import replace_dir
from goalscope.cli.common import add_env_args, env_config, non_negative_int, positive_int

DESCRIPTION = """\
goalscope finds where a reinforcement-learning agent's objective lives in its weights.

The experiment, step by step:
  1. goalscope train    --reward collect:0 --out runs/ma          # MA: an agent trained on reward RA
  2. goalscope finetune runs/ma --reward collect:1 --out runs/mb  # MB: MA fine-tuned on another reward RB
  3. goalscope eval     runs/mb --reward collect:1                # what it collects, as a fraction of an oracle
  4. goalscope run      experiments/default.toml --out runs/demo  # the whole program: update signals,
                                                                  # negate-and-retrain, superposition heatmaps
Rewards are data: 'collect:0', 'avoid:2', '0.5*collect:0+collect:3', 'step:0.01', or a vector '1,0,-1,0'.
"""


def _add_ppo_args(p: argparse.ArgumentParser, default_steps: int) -> None:
    g = p.add_argument_group("training (PPO)")
    g.add_argument("--steps", type=positive_int, default=default_steps, help="environment steps")
    g.add_argument("--seed", type=non_negative_int, default=0, help="seed for weights, envs and sampling")
    g.add_argument("--n-envs", type=positive_int, default=64, help="parallel envs")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    g.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                   help="bf16: network passes under bfloat16 autocast (faster on CPUs with AMX and on GPUs; weights "
                        "stay fp32); fp32 is bit-reproducible")
    g.add_argument("--eval-every", type=int, default=0, help="env steps between evaluations (default: only at the end)")
    g.add_argument("--out", required=True, type=Path, help="run directory to create")
    g.add_argument("--force", action="store_true", help="replace an existing run directory")
    g.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    from goalscope import __version__

    parser = argparse.ArgumentParser(prog="goalscope", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"goalscope {__version__}")
    parser.add_argument("--trust-module", action="append", default=[], metavar="MODULE",
                        help="let env ids of the form MODULE:Env-v0 in checkpoints and run directories import MODULE "
                             "(experiment files may always import the modules they name; data files never may "
                             "without this)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

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
    p.add_argument("--episodes", type=positive_int, default=256, help="evaluation episodes")
    p.add_argument("--seed", type=non_negative_int, default=10_000, help="evaluation seed: same seed, same episodes")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")

    from goalscope.cli import experiment as experiment_cli

    experiment_cli.add_commands(sub)

    p = sub.add_parser("validate", help="score a finished run's heatmaps: grafts, ablations, held-out RBs, planted truth",
                       description="Write runs/NAME/scorecard.json and scorecard.md: localisation AUROC against a "
                                   "planted reward map (planner architecture), graft curves, ablations, held-out "
                                   "rewards and stability, each against |Δ| and random baselines.")
    p.add_argument("run", type=Path, help="a finished run directory")
    p.add_argument("--episodes", type=positive_int, help="evaluation episodes per graft point (default: the run's, at most 128)")
    p.add_argument("--workers", type=int, help="parallel processes (default: the run's config)")

    p = sub.add_parser("pointers", help="objectives as pointers: a goal-conditioned agent, cue vs reward changes",
                       description="Train a goal-conditioned agent (the rewarded type is cued in the observation), "
                                   "then compare update signals when the reward changes but the cue does not, when "
                                   "the cue changes with it, and a control; measure retargeting by the cue.")
    p.add_argument("--out", type=Path, required=True, help="output directory")
    p.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2], help="training seeds")
    p.add_argument("--base-steps", type=positive_int, default=200_000, help="env steps of the goal-conditioned agent")
    p.add_argument("--finetune-steps", type=positive_int, default=50_000, help="env steps of each fine-tune")
    p.add_argument("--episodes", type=positive_int, default=256, help="evaluation episodes")
    p.add_argument("--force", action="store_true", help="replace an existing output directory")
    add_env_args(p)
    p.set_defaults(size=7, n_types=3, n_per_type=1, max_steps=32, loop_prob=0.2)
    for command in sub.choices.values():  # every command's --help shows its defaults
        command.formatter_class = _HelpFormatter
    return parser


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Descriptions as written, and each option's default after its help (where there is one to show)."""

    def _get_help_string(self, action):
        d = action.default
        if d is None or d is False or d is argparse.SUPPRESS or d == [] or action.help is None:
            return action.help
        return super()._get_help_string(action)


def _ppo_config(args):
    from goalscope.rl.ppo import PPOConfig

    return PPOConfig(total_steps=args.steps, n_envs=args.n_envs, lr=args.lr, eval_every=args.eval_every,
                     precision=args.precision)


def cmd_train(args) -> None:
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
    check_model_size(lambda: build_agent(args.arch, env.obs_shape, env.n_actions, arch_cfg), f"--arch {args.arch}")
    with replace_dir(args.out, args.force, "checkpoint directory", "checkpoint") as staging:
        ckpt = train_new(args.arch, arch_cfg, env_cfg, reward, ppo, args.seed, log_dir=staging, progress=not args.quiet)
        save_checkpoint(ckpt, staging)
    _print_summary(ckpt.extra["final_eval"], f"trained {args.arch} on {reward.name} -> {args.out}")


def cmd_finetune(args) -> None:
    from goalscope.agents.checkpoints import load_checkpoint, save_checkpoint
    from goalscope.envs.rewards import parse_reward
    from goalscope.rl.ppo import finetune

    parent = load_checkpoint(args.checkpoint)
    reward = parse_reward(args.reward, parent.env.n_types)
    ppo = _ppo_config(args)
    with replace_dir(args.out, args.force, "checkpoint directory", "checkpoint") as staging:
        ckpt = finetune(parent, reward, ppo, args.seed, parent_path=str(args.checkpoint), log_dir=staging,
                        progress=not args.quiet)
        save_checkpoint(ckpt, staging)
    _print_summary(ckpt.extra["final_eval"], f"fine-tuned {args.checkpoint} on {reward.name} -> {args.out}")


def cmd_eval(args) -> None:
    from goalscope.agents.checkpoints import load_checkpoint
    from goalscope.envs.rewards import parse_reward
    from goalscope.rl.evaluation import evaluate, oracle_profile, summarise

    ckpt = load_checkpoint(args.checkpoint)
    reward = parse_reward(args.reward, ckpt.env.n_types) if args.reward else ckpt.reward
    profile = evaluate(ckpt.build(), ckpt.env, reward, args.episodes, args.seed)
    s = summarise(profile, reward, oracle_profile(ckpt.env, reward, args.episodes, args.seed))
    s["trained_on"] = ckpt.reward.name
    if args.json:
        print(json.dumps(s))
    else:
        _print_summary(s, f"{args.checkpoint} (trained on {ckpt.reward.name}, {ckpt.steps} steps)")


def _print_summary(s: dict, title: str) -> None:
    print(title)
    counts = "  ".join(f"type {i}: {c:.2f}" for i, c in enumerate(s["counts_mean"]))
    print(f"  objects collected per episode  {counts}")
    oracle = (f"  = {s['fraction_of_oracle']:.1%} of the oracle's {s['oracle_return']:.3f}"
              if s["oracle_return"] == s["oracle_return"] else "  (no oracle for this env)")
    print(f"  return under {s['reward']}: {s['return_mean']:.3f} ± {s['return_sem']:.3f} (s.e.){oracle}"
          f"  [{s['episodes']} episodes]")


def cmd_validate(args) -> None:
    from dataclasses import replace

    from goalscope.program.config import experiment_from_dict
    from goalscope.program.executors import LocalExecutor
    from goalscope.analysis.validation import run_validation

    path = args.run / "experiment.json"
    if not path.exists():
        raise ConfigError(f"{args.run} is not a goalscope run (no experiment.json)")
    cfg = experiment_from_dict(read_json(path))
    if args.workers is not None:
        if args.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {args.workers}")
        cfg = replace(cfg, workers=args.workers)
    run_validation(cfg, args.run, LocalExecutor(cfg.workers), episodes=args.episodes)
    print((args.run / "scorecard.md").read_text())


def cmd_pointers(args) -> None:
    from goalscope.analysis.pointers import run_pointer_experiment

    with replace_dir(args.out, args.force, "output directory", "pointers") as staging:
        s = run_pointer_experiment(staging, env=env_config(args), seeds=args.seeds, base_steps=args.base_steps,
                                   finetune_steps=args.finetune_steps, episodes=args.episodes)
    print(f"retargeting: first object is the cued type in {s['retargeting_first_is_cued']:.1%} of episodes "
          f"(chance {1 / args.n_types:.1%})")
    for name, ci in s["delta_l2_over_control"].items():
        print(f"‖Δ‖ / control drift, {name}: {ci[0]:.2f} [{ci[1]:.2f}, {ci[2]:.2f}]")
    print(f"verdict: {s['verdict']}\nrecords: {args.out / 'records.csv'}")


COMMANDS = {"train": cmd_train, "finetune": cmd_finetune, "eval": cmd_eval, "validate": cmd_validate,
            "pointers": cmd_pointers}


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from goalscope.cli import experiment as experiment_cli

    handler = COMMANDS.get(args.command) or experiment_cli.COMMANDS[args.command]
    if args.trust_module:
        from goalscope.envs.events import trust_modules

        trust_modules(args.trust_module)
    try:
        handler(args)
        sys.stdout.flush()
    except GoalscopeError as e:
        return _fail(str(e))
    except BrokenPipeError:  # `goalscope results RUN | head`: the reader left, which is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # the user's filesystem said no (full disk, permissions, /proc): one line, nothing lost
        where = f"{e.filename}: " if e.filename else ""
        return _fail(f"{where}{e.strerror or e}")
    except KeyboardInterrupt:
        print("goalscope: interrupted; finished stages are kept, rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


def _fail(message: str) -> int:
    print(f"goalscope: error: {' '.join(message.split())}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
