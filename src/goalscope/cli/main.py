"""The ``goalscope`` command line: the parser and ``main``; the commands live in one module per group
(:mod:`~goalscope.cli.train`, :mod:`~goalscope.cli.experiment`, :mod:`~goalscope.cli.signals`,
:mod:`~goalscope.cli.edits`, :mod:`~goalscope.cli.steer`, :mod:`~goalscope.cli.video`).

Every user mistake (unknown reward, wrong vector length, missing or corrupt checkpoint, bad config...) ends as one
line ``goalscope: error: ...`` and exit status 2; nothing is overwritten without ``--force``.

May import: goalscope (its version), goalscope.cli, goalscope.envs, goalscope.errors.
"""

from __future__ import annotations

import argparse
import os
import sys

from goalscope.errors import GoalscopeError
from goalscope.cli import edits, experiment, signals, steer, train, video

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

# The order of ``goalscope --help``: one model, whole experiments, signals by hand, edits and decoding,
# activations of a finished run, a model's rollout as a video.
GROUPS = (train, experiment, signals, edits, steer, video)
COMMANDS = {**train.COMMANDS, **experiment.COMMANDS, **signals.COMMANDS, **edits.COMMANDS, **steer.COMMANDS,
            **video.COMMANDS}


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command, group by group."""
    from goalscope import __version__

    parser = argparse.ArgumentParser(prog="goalscope", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"goalscope {__version__}")
    parser.add_argument("--trust-module", action="append", default=[], metavar="MODULE",
                        help="let env ids of the form MODULE:Env-v0 in checkpoints and run directories import MODULE "
                             "(experiment files may always import the modules they name; data files never may "
                             "without this)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    for group in GROUPS:
        group.add_commands(sub)
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


def main(argv: list[str] | None = None) -> int:
    """Run one command; returns the exit status (2 and one line on stderr for any goalscope error)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    handler = COMMANDS[args.command]
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
    except MemoryError:  # what a setting far too large for this machine (an env.kwargs grid side, say) ends in
        return _fail("out of memory: a setting asks for more than this machine has (an env.kwargs value such as a "
                     "grid size, or a batch too large); nothing was written past the last finished stage")
    except KeyboardInterrupt:
        print("goalscope: interrupted; finished stages are kept, rerun the same command to resume", file=sys.stderr)
        return 130
    return 0


def _fail(message: str) -> int:
    print(f"goalscope: error: {' '.join(message.split())}", file=sys.stderr)
    return 2

