"""CLI commands of issue 14: ``goalscope edits RUN`` (linearity, arithmetic, targeted edits, dynamics) and
``goalscope decode``.

May import anything below the CLI; heavy modules are imported inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import json
from pathlib import Path

from goalscope.cli.common import MAX_EPISODES, bounded_int
from goalscope.errors import ConfigError


def _floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(f"expected comma-separated numbers, got {text!r}") from None


def add_commands(sub) -> None:
    """The parsers of the issue-14 commands: edits, decode."""
    from goalscope.analysis.edits.common import DEFAULT_PARTS, EDIT_FRACTIONS, PARTS, RANDOM_DIRECTIONS, T_GRID

    p = sub.add_parser("edits", help="write objectives into MA without training: linearity curves, arithmetic, "
                                     "targeted edits",
                       description="On a finished run: RB objects, specific lean and RA return along MA + t·Δ_i "
                                   "(without and with the negate stage's RA retrain); MA + Δ_i + Δ_j against a real "
                                   "fine-tune on the pair, transfer across fine-tune and MA seeds; MA + top-k% of Δ_i "
                                   "by a heatmap against |Δ|, random, Fisher and control-drift masks. Cached and "
                                   "resumable: a rerun evaluates and trains nothing twice. Writes RUN/edits/.")
    p.add_argument("run", type=Path, help="a finished run directory")
    p.add_argument("--parts", default=",".join(DEFAULT_PARTS),
                   help=f"comma-separated subset of {', '.join(PARTS)} (dynamics reruns every fine-tune: by name only)")
    p.add_argument("--t", default=",".join(f"{t:g}" for t in T_GRID), help="linearity: the t grid")
    p.add_argument("--no-retrain", action="store_true", help="linearity: skip the retrained curve")
    p.add_argument("--pairs", help="arithmetic: pair rewards to fine-tune MA on, e.g. collect:1+collect:2 ('' for "
                                   "none; default: the run's single-object RBs two by two, at most two pairs)")
    p.add_argument("--fractions", default=",".join(f"{k:g}" for k in EDIT_FRACTIONS), help="targeted: the k grid")
    p.add_argument("--heatmap", default="ties", help="targeted: the aggregator whose heatmap picks the top-k%%")
    p.add_argument("--random-directions", type=int, default=RANDOM_DIRECTIONS, help="random directions per edit")
    p.add_argument("--episodes", type=bounded_int(MAX_EPISODES), help="evaluation episodes (default: the run's)")
    p.add_argument("--workers", type=int, default=1, help="parallel training jobs (retrains, pair fine-tunes)")

    p = sub.add_parser("decode", help="which RB does a fine-tuned checkpoint hold? rank rewards from weights",
                       description="With CHECKPOINT: rank the run's RBs for a checkpoint fine-tuned from one of its "
                                   "MAs, from its update signal alone. Without: held-out accuracy of the decoder "
                                   "(leave one fine-tune seed out, leave one MA seed out) against chance, with a "
                                   "feature-group ablation; writes RUN/edits/decode.json.")
    p.add_argument("run", type=Path, help="a finished run directory")
    p.add_argument("checkpoint", type=Path, nargs="?", help="checkpoint of unknown RB (fine-tuned from the run's MA)")
    p.add_argument("--permutations", type=bounded_int(MAX_EPISODES), default=500, help="label permutations for the p value")
    p.add_argument("--json", action="store_true", help="print JSON")


def cmd_edits(args) -> None:
    """goalscope edits: run (or resume) the chosen parts, write the figures, print the tables."""
    from goalscope.analysis.edits.run import run_edits

    parts = tuple(x.strip() for x in args.parts.split(",") if x.strip())
    pairs = None if args.pairs is None else tuple(x.strip() for x in args.pairs.split(",") if x.strip())
    res = run_edits(args.run, parts, episodes=args.episodes, workers=args.workers, t_grid=_floats(args.t),
                    retrain=not args.no_retrain, pairs=pairs, fractions=_floats(args.fractions), heatmap=args.heatmap,
                    n_random=args.random_directions)
    from goalscope.report.figures_edits import edits_markdown, write_figures

    for name in write_figures(args.run):
        print(f"figure: {name}")
    print(edits_markdown(res))


def cmd_decode(args) -> None:
    """goalscope decode: rank a checkpoint's RB, or evaluate the decoder on the run (figures and table)."""
    from goalscope.analysis.edits.decode import run_decode

    res = run_decode(args.run, args.checkpoint, n_perm=args.permutations)
    if args.json:
        print(json.dumps(res, indent=2))
        return
    if args.checkpoint is not None:
        print(f"{args.checkpoint}: nearest MA seed {res['ma_seed']} (‖Δ‖ {res['distance_to_ma']:.3f}); decoder trained "
              f"on {res['trained_on']} fine-tunes of the run")
        for i, r in enumerate(res["ranking"], 1):
            print(f"  {i}. {r['rb']:<14} p={r['softmax']:.3f}  first-layer |Δ| on its plane {r['zero_shot_first_layer_mass']}")
        return
    from goalscope.report.figures_edits import decode_markdown, write_figures

    write_figures(args.run)
    print(decode_markdown(res))


COMMANDS = {"edits": cmd_edits, "decode": cmd_decode}
