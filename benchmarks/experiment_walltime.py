"""Wall time per stage of an experiment's whole program (run, validate, report), against the issue's goals:
the default experiment's run + validate + report <= 4 min and experiments/paper.toml's run + validate <= 45 min on
2 cores (issue 24).

    .venv/bin/python benchmarks/experiment_walltime.py                       # experiments/default.toml
    .venv/bin/python benchmarks/experiment_walltime.py --quick               # the --quick size (goal < 1 min)
    .venv/bin/python benchmarks/experiment_walltime.py --experiment experiments/paper.toml --keep runs/paper
    .venv/bin/python benchmarks/experiment_walltime.py --experiment my.toml --workers 1 --no-validate

Runs into a fresh directory (a temporary one unless --keep names a new one; nothing cached), prints each stage's
wall time, the summed compute time of its jobs (what the stage would cost on one core) and its share of the total,
and the ratio of the total to the goal (--goal; by default 60 s for --quick, 2700 s for an experiment named
"paper", 240 s otherwise), with the machine's bf16 units and the precision the run computed in. Each model's
competence (fraction of the oracle against its bar) is printed after the timings.
"""

import argparse
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("GOALSCOPE_QUIET", "1")

from goalscope.analysis.effects.experiment import run_experiment  # noqa: E402
from goalscope.analysis.validate.validation import run_validation  # noqa: E402
from goalscope.cli.experiment import quick  # noqa: E402
from goalscope.program.config import load_experiment  # noqa: E402
from goalscope.program.executors import LocalExecutor  # noqa: E402
from goalscope.rl.ppo import bf16_units  # noqa: E402


def program(cfg, run_dir: Path, validate: bool, report: bool) -> tuple[dict, list[tuple[str, float, float]]]:
    """Run the program into ``run_dir``; (run summary, [(stage, wall s, job-s on one core)])."""
    summary = run_experiment(cfg, run_dir, log=lambda *a: None)
    stages = [(k, w, summary["job_wall_s"].get(k, float("nan"))) for k, w in summary["stage_wall_s"].items()]
    if validate:
        start = time.perf_counter()
        run_validation(cfg, run_dir, LocalExecutor(cfg.workers), log=lambda *a: None)
        stages.append(("validate", time.perf_counter() - start, float("nan")))
    if report:
        from goalscope.report.page import write_report

        start = time.perf_counter()
        write_report(run_dir, run_dir / "report", log=lambda *a: None)
        stages.append(("report", time.perf_counter() - start, float("nan")))
    return summary, stages


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default="experiments/default.toml")
    ap.add_argument("--quick", action="store_true", help="the --quick size of the experiment")
    ap.add_argument("--workers", type=int, default=0, help="job processes (0 = one per core)")
    ap.add_argument("--goal", type=float, help="seconds the whole program should take (default: see above)")
    ap.add_argument("--no-validate", dest="validate", action="store_false", help="time `run` only, not `validate`")
    ap.add_argument("--no-report", dest="report", action="store_false", help="do not time `report`")
    ap.add_argument("--keep", type=Path, help="a new directory to keep the run in (default: a temporary one)")
    args = ap.parse_args()
    cfg = load_experiment(args.experiment)
    cfg = replace(quick(cfg) if args.quick else cfg, workers=args.workers)
    goal = args.goal or (60.0 if args.quick else 2700.0 if cfg.name == "paper" else 240.0)
    if args.keep is not None and args.keep.exists():
        ap.error(f"--keep {args.keep} exists; name a new directory (the benchmark times a run from scratch)")
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        summary, stages = program(cfg, args.keep or Path(tmp) / "run", args.validate, args.report)
        total = time.perf_counter() - start
    print(f"experiment {cfg.name}: {len(cfg.seeds)} seeds, {len(cfg.rbs())} RBs, "
          f"workers={args.workers or os.cpu_count()}, load average at the end {os.getloadavg()[0]:.1f}")
    print(f"machine: {os.cpu_count()} cores, bf16 units: {', '.join(bf16_units()) or 'none'}; "
          f"precision: {cfg.ppo.get('precision', 'fp32')}")
    print(f"{'stage':<10}{'wall s':>9}{'share':>8}{'job-s (1 core)':>16}")
    for stage, wall, job_s in stages:
        print(f"{stage:<10}{wall:>9.1f}{wall / total:>8.0%}{job_s:>16.1f}")
    print(f"{'total':<10}{total:>9.1f}   goal {goal:.0f} s -> {total / goal:.2f}x of the goal "
          f"({'met' if total <= goal else 'missed'})")
    for model, c in summary.get("competence", {}).items():
        print(f"{'ok' if c['passes'] else '!!'} {model:<16} {c['verdict']}")


if __name__ == "__main__":
    main()
