"""validate with and without exact reuse of evaluations, side by side, in one run (issue 36 item 3).

    .venv/bin/python benchmarks/validate_reuse.py                     # a small run made from experiments/default.toml
    .venv/bin/python benchmarks/validate_reuse.py --run runs/demo     # a finished run (validated in copies)

Baseline: every evaluation made where it is asked for (MA once per (seed, RB) task and again per held-out-curve
task; identical weights evaluated again). New: MA evaluated once per seed in validate's own process (the plan's
calibration) and handed to its tasks, identical weights answered once (:mod:`goalscope.analysis.validate.reuse`).
Each is validated in its own fresh copy of the run (both compute the IG maps the run has not cached), baseline
first; the scorecards are compared byte for byte. Printed: wall time of each, the ratio, the evaluations run, where
the saved ones came from, and what hashing the weights cost.
"""

import argparse
import json
import os
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("GOALSCOPE_QUIET", "1")

import torch  # noqa: E402

from goalscope.analysis.effects.experiment import run_experiment  # noqa: E402
from goalscope.analysis.validate.reuse import state_digest  # noqa: E402
from goalscope.analysis.validate.validation import run_validation  # noqa: E402
from goalscope.inputs import read_json  # noqa: E402
from goalscope.program.config import experiment_from_dict, load_experiment  # noqa: E402
from goalscope.program.executors import LocalExecutor  # noqa: E402


def small(cfg, seeds: int = 2, types: int = 4):
    """default.toml at a benchmark's size: 2 seeds, 3 one-hot RBs, short budgets, 32 evaluation episodes
    (``--seeds 3 --types 5``: default.toml's shape, 3 seeds and 4 RBs)."""
    d = json.loads(json.dumps(cfg.to_json()))
    d.update(name="validate_reuse", seeds=list(range(seeds)), workers=2)
    d["env"]["n_types"] = types
    d["ppo"]["n_envs"] = 16
    d["base"]["steps"], d["finetune"]["steps"] = 4096, 2048
    d["negate"]["enabled"] = False
    d["superpose"]["fisher_samples"] = 128
    d["evaluation"].update(episodes=32, bootstrap=200)
    return experiment_from_dict(d)


def validate(cfg, run: Path, reuse: bool, episodes=None) -> tuple[float, dict, dict]:
    start = time.perf_counter()
    card = run_validation(cfg, run, LocalExecutor(cfg.workers), episodes=episodes, log=lambda *a: None, reuse=reuse)
    files = {n: (run / n).read_bytes() for n in ("scorecard.md", "validation.csv")}
    files["scorecard.json"] = json.dumps({k: v for k, v in json.loads((run / "scorecard.json").read_bytes()).items()
                                          if k != "plan"}, sort_keys=True).encode()
    return time.perf_counter() - start, card["plan"], files


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, help="a finished run (default: make a small one from default.toml)")
    ap.add_argument("--workers", type=int, default=2, help="validate's worker processes")
    ap.add_argument("--seeds", type=int, default=2, help="MA seeds of the small run")
    ap.add_argument("--types", type=int, default=4, help="object types of the small run (RBs: one fewer)")
    ap.add_argument("--episodes", type=int, help="validate's episodes (default: the run's, at most 128)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.run is None:
            cfg = small(load_experiment("experiments/default.toml"), args.seeds, args.types)
            start = time.perf_counter()
            run_experiment(cfg, tmp / "run", log=lambda *a: None)
            print(f"made {cfg.name}: {len(cfg.seeds)} seeds, {len(cfg.rbs())} RBs in {time.perf_counter() - start:.0f} s")
            src = tmp / "run"
        else:
            src = args.run
            cfg = experiment_from_dict(read_json(src / "experiment.json"))
        cfg = replace(cfg, workers=args.workers)
        copies = []
        for name in ("baseline", "reuse"):
            shutil.copytree(src, tmp / name, ignore=shutil.ignore_patterns("scorecard.*", "validation.csv", ".lock"))
            copies.append(tmp / name)
        t0, plan0, files0 = validate(cfg, copies[0], False, args.episodes)
        t1, plan1, files1 = validate(cfg, copies[1], True, args.episodes)
        a0, a1 = plan0["actual"], plan1["actual"]
        # Where the saved evaluations came from: MA (every task's first call, less one per seed made here), MB in
        # each curve task (graded by its graft task), and identical masks (the rest).
        tasks = sum(p["tasks"] for p in plan1["parts"] if p["phase"] == "graft")
        curve = tasks if any(p["phase"] == "curve" for p in plan1["parts"]) else 0
        saved = a1["task_evaluations_requested"] - a1["task_evaluations_run"]
        ma = tasks + curve - len(cfg.seeds)
        from goalscope.agents.checkpoints import load_checkpoint
        from goalscope.program.jobs import stage_dir
        from goalscope.program.runner import plan_experiment

        state = load_checkpoint(stage_dir(copies[1], plan_experiment(cfg).ma[cfg.seeds[0]])).state_dict
        start = time.perf_counter()
        for _ in range(50):
            state_digest(state)
        digest_s = (time.perf_counter() - start) / 50
        print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; {args.workers} workers; "
              f"{plan1['episodes']} episodes x {plan1['max_steps']} steps per evaluation")
        print(f"{'':<10}{'wall s':>8}{'evaluations run':>17}{'of asked':>10}")
        print(f"{'baseline':<10}{t0:>8.1f}{a0['task_evaluations_run']:>17,}{a0['task_evaluations_requested']:>10,}")
        print(f"{'reuse':<10}{t1:>8.1f}{a1['task_evaluations_run']:>17,}{a1['task_evaluations_requested']:>10,}")
        print(f"ratio baseline / reuse: {t0 / t1:.2f}x wall, {a0['task_evaluations_run'] / max(1, a1['task_evaluations_run']):.2f}x "
              f"evaluations (+{len(cfg.seeds)} MA evaluations made once in validate's process, in both)")
        print(f"saved {saved:,}: MA {ma:,} (once per seed, not per task), MB in the curve tasks {curve:,}, "
              f"identical masks {saved - ma - curve:,}")
        print(f"hashing the weights: {1e3 * digest_s:.2f} ms per evaluation asked, "
              f"{digest_s * a1['task_evaluations_requested']:.1f} s in all (one evaluation: "
              f"{plan1['rate']['seconds_per_evaluation']:.3f} s)")
        same = all(files0[k] == files1[k] for k in files0)
        print(f"scorecard.json (less its plan), scorecard.md, validation.csv byte-identical: {same}")
        print(f"plan estimate {plan1['estimate_s']:.0f} s for the evaluations; validate took {a1['seconds']:.0f} s "
              f"(graft tasks {a1['graft_seconds']:.0f} s)")


if __name__ == "__main__":
    main()
