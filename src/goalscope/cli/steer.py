"""CLI command on a finished run's activations: steer (steering vectors from MA/MB pairs beside weight edits, and
shard diagnostics; :mod:`goalscope.analysis.steering.run`).

May import anything below the CLI; heavy modules are imported inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

from goalscope.cli.common import MAX_EPISODES, bounded_int


def add_commands(sub) -> None:
    """The parser of ``goalscope steer``."""
    p = sub.add_parser("steer", help="steering vectors from the run's MA/MB pairs vs weight edits, and shard diagnostics",
                       description="Per MA seed: the mean activation difference MB_i - MA at each hook site, added to "
                                   "(and subtracted from) MA during the run's paired evaluation episodes, against a "
                                   "random vector of the same norm and the RA-control's vector; beside MA +/- Delta_i "
                                   "on the same site's parameters; plus shard diagnostics (concentration of Delta over "
                                   "units, MB's RB preference by distance). Writes RUN/steering/ and the 'steering' "
                                   "and 'shards' rows of RUN/records.csv; finished seeds are reused on a rerun.")
    p.add_argument("run", type=Path, help="a finished run directory")
    p.add_argument("--episodes", type=bounded_int(MAX_EPISODES), help="evaluation episodes per profile (default: the run's)")
    p.add_argument("--obs-episodes", type=bounded_int(MAX_EPISODES), default=32,
                   help="rollout episodes per model for the observation set the vectors are measured on")
    p.add_argument("--sites", help="comma-separated hook sites (default: every layer of the architecture)")
    p.add_argument("--seeds", type=int, nargs="+", help="MA seeds (default: all of the run's)")
    p.add_argument("--force", action="store_true", help="recompute seeds even if cached")


def cmd_steer(args) -> None:
    """``goalscope steer``: steer a finished run (cached per seed) and print RUN/steering/summary.md."""
    from goalscope.analysis.steering.run import STEER_DIR, run_steering
    from goalscope.report.figures_steering import fig_steering
    from goalscope.report.run import read_run

    sites = [s.strip() for s in args.sites.split(",") if s.strip()] if args.sites else None
    plan = read_run(args.run).plan  # the roles the report sees (also for a run written by another version)
    run_steering(args.run, episodes=args.episodes, obs_episodes=args.obs_episodes, sites=sites, seeds=args.seeds,
                 force=args.force, plan=plan, figure=fig_steering)
    print((args.run / STEER_DIR / "summary.md").read_text())


COMMANDS = {"steer": cmd_steer}
