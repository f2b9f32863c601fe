"""Wall time per stage of an experiment, against the issue's goal (default experiment <= 5 min on 2 cores).

    .venv/bin/python benchmarks/experiment_walltime.py                       # experiments/default.toml
    .venv/bin/python benchmarks/experiment_walltime.py --quick               # the --quick size (goal < 1 min)
    .venv/bin/python benchmarks/experiment_walltime.py --experiment my.toml --workers 1

Runs into a fresh temporary directory (nothing cached), prints each stage's wall time, the summed compute time
of its jobs (what the stage would cost on one core), and the ratio of the total to the goal.
"""

import argparse
import os
import tempfile
import time

os.environ.setdefault("GOALSCOPE_QUIET", "1")

from goalscope.program.config import load_experiment  # noqa: E402
from goalscope.cli.experiment import quick  # noqa: E402
from goalscope.analysis.experiment import run_experiment  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default="experiments/default.toml")
    ap.add_argument("--quick", action="store_true", help="the --quick size of the experiment")
    ap.add_argument("--workers", type=int, default=0, help="job processes (0 = one per core)")
    args = ap.parse_args()
    cfg = load_experiment(args.experiment)
    cfg = quick(cfg) if args.quick else cfg
    from dataclasses import replace

    cfg = replace(cfg, workers=args.workers)
    goal = 60.0 if args.quick else 300.0
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary = run_experiment(cfg, os.path.join(tmp, "run"), log=lambda *a: None)
        total = time.perf_counter() - start
    print(f"experiment {cfg.name}: {len(cfg.seeds)} seeds, {len(cfg.rbs())} RBs, workers={args.workers or os.cpu_count()}")
    print(f"{'stage':<10}{'wall s':>9}{'job-s (1 core)':>16}")
    for stage, wall in summary["stage_wall_s"].items():
        print(f"{stage:<10}{wall:>9.1f}{summary['job_wall_s'].get(stage, float('nan')):>16.1f}")
    print(f"{'total':<10}{total:>9.1f}   goal {goal:.0f} s -> {total / goal:.2f}x of the goal "
          f"({'met' if total <= goal else 'missed'})")
    print(f"MA fraction of oracle: {summary['ma_fraction_of_oracle']:.3f}")


if __name__ == "__main__":
    main()
