"""Sweep scaling: one wave of fine-tune jobs on the local process pool and on Ray, at 1 and 2 workers.

    .venv/bin/python benchmarks/sweep_scaling.py                        # 8 fine-tunes of ~3 s each, about 2 minutes
    .venv/bin/python benchmarks/sweep_scaling.py --finetune-steps 1024 --workers 1 2 4
    .venv/bin/python benchmarks/sweep_scaling.py --no-ray

The sweep is a TINY-like experiment (5x5 maze, 4 object types, 2 seeds, no negation): 2 MA jobs are trained once,
untimed, then the fine-tune wave (3 RBs + the continue-on-RA control per seed = 8 jobs) runs from a fresh copy of
that run directory for every executor x workers, timed from submission to the last result. The local pool spawns
its processes inside the timed call (as it does for every wave of a real run); a Ray instance is started fresh
for each Ray row with ``num_cpus=workers``, and ``ray.init`` is timed apart (column "start s"), so the Ray rows
include starting its worker processes but not the cluster. Overhead per task = (Ray wall - local wall at the same
workers) / tasks. Every row's checkpoints are compared byte for byte with the first row's.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("GOALSCOPE_QUIET", "1")

from goalscope.program.config import experiment_from_dict  # noqa: E402
from goalscope.program.executors import LocalExecutor, RayExecutor  # noqa: E402
from goalscope.program.runner import JobRunner, plan_experiment  # noqa: E402

SWEEP = {
    "name": "sweep", "seeds": [0, 1],
    "env": {"size": 5, "n_types": 4, "n_per_type": 1, "max_steps": 16},
    "ppo": {"n_envs": 16, "n_steps": 32},
    "base": {"steps": 2048}, "finetune": {"steps": 16384},
    "negate": {"enabled": False},
    "evaluation": {"episodes": 32, "bootstrap": 200},
}


def _weights(run_dir: Path, jobs) -> dict[str, bytes]:
    return {j.key: (run_dir / "stages" / j.key / "model.safetensors").read_bytes() for j in jobs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--finetune-steps", type=int, default=SWEEP["finetune"]["steps"], help="env steps per fine-tune job")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="worker counts to compare (default 1 2)")
    ap.add_argument("--no-ray", action="store_true", help="only the local executor")
    args = ap.parse_args()

    try:
        import ray
    except ImportError:
        ray = None
    use_ray = ray is not None and not args.no_ray
    cfg = experiment_from_dict({**SWEEP, "finetune": {"steps": args.finetune_steps}})
    plan = plan_experiment(cfg)
    train, fine = plan.waves[0], plan.waves[1]
    print(f"sweep: {len(fine)} fine-tune jobs of {args.finetune_steps} env steps (5x5 maze, 4 types, {cfg.agent.arch}), after "
          f"{len(train)} untimed MA jobs; {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"ray {ray.__version__ if ray else 'not installed'}")

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "base"
        statuses = LocalExecutor(len(train)).run(JobRunner(str(base)), train, "train")
        assert all(s["status"] == "ok" for s in statuses), statuses
        reference = None
        for name in ["local"] + (["ray"] if use_ray else []):
            for w in args.workers:
                run_dir = Path(tmp) / f"{name}-{w}"
                shutil.copytree(base, run_dir)
                start_s = None
                if name == "ray":
                    t = time.perf_counter()
                    # address="local": a private instance sized to this row, never a cluster `ray start` left running
                    ray.init(address="local", num_cpus=w, include_dashboard=False, log_to_driver=False)
                    start_s = time.perf_counter() - t
                    executor = RayExecutor(workers=w)
                else:
                    executor = LocalExecutor(w)
                t = time.perf_counter()
                statuses = executor.run(JobRunner(str(run_dir)), fine, "finetune")
                wall = time.perf_counter() - t
                if name == "ray":
                    ray.shutdown()
                assert all(s["status"] == "ok" for s in statuses), [s.get("error") for s in statuses]
                weights = _weights(run_dir, fine)
                reference = reference or weights
                rows.append({"executor": name, "workers": w, "wall": wall, "start": start_s,
                             "job_s": sum(s["wall_s"] for s in statuses), "same": weights == reference})
                shutil.rmtree(run_dir)

    local = {r["workers"]: r["wall"] for r in rows if r["executor"] == "local"}
    one = {r["executor"]: r["wall"] for r in rows if r["workers"] == min(args.workers)}
    print()
    print(f"| executor | workers | wall s | job-s (sum) | speed-up vs {min(args.workers)} worker(s) | "
          f"Ray overhead / task | start s | identical |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        speed = one[r["executor"]] / r["wall"]
        over = "–" if r["executor"] == "local" else f"{(r['wall'] - local[r['workers']]) / len(fine) * 1e3:+.0f} ms"
        start = "–" if r["start"] is None else f"{r['start']:.1f}"
        print(f"| {r['executor']} | {r['workers']} | {r['wall']:.1f} | {r['job_s']:.1f} | {speed:.2f}× | {over} | "
              f"{start} | {'yes' if r['same'] else 'NO'} |")
    if not use_ray:
        print("\n(Ray rows left out: " + ("--no-ray" if args.no_ray else "ray is not installed; pip install 'goalscope[ray]'") + ")")


if __name__ == "__main__":
    main()
