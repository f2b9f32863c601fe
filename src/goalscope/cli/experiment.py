"""CLI commands for whole experiments and their results: run, results, report, validate, pointers, sweep.

May import anything below the CLI; heavy modules are imported inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import math
from pathlib import Path

from goalscope.cli.common import (MAX_EPISODES, add_env_args, bounded_int, env_config,
                                   fmt_ci, non_negative_int, positive_float, positive_int)
from goalscope.errors import ConfigError, GoalscopeError
from goalscope.inputs import read_json
from goalscope.outputs import (atomic_write_bytes, check_output_file, check_output_path, foreign_entry,
                               write_marker)


def add_commands(sub) -> None:
    """The parsers of the experiment commands: run, results, report, validate, pointers, sweep."""
    p = sub.add_parser("run", help="run (or resume) a whole experiment from a TOML file",
                       description="Train MA, fine-tune MBs and controls, negate-and-retrain, superpose, and write "
                                   "records.csv, heatmaps/ and summary.json. Finished jobs are cached by the hash "
                                   "of their inputs: rerunning (or resuming a killed run) redoes nothing twice.")
    p.add_argument("experiment", type=Path, help="experiment TOML, e.g. experiments/default.toml")
    p.add_argument("--out", type=Path, required=True, help="run directory, e.g. runs/demo")
    p.add_argument("--force", metavar="STAGE", help="redo a stage and those after it: train, finetune, negate, analysis, all")
    p.add_argument("--reconfigure", action="store_true", help="allow a changed config in an existing run directory")
    p.add_argument("--workers", type=int, help="parallel job processes (default: the config's, 0 = one per core)")
    p.add_argument("--executor", default="local",
                   help="where jobs run: local (a process pool, default) or ray (Ray tasks; pip install 'goalscope[ray]')")
    p.add_argument("--address", help="Ray cluster to use with --executor ray: auto (the cluster this node is in) or "
                                      "ray://HOST:10001 (default: start Ray on this machine). On several nodes, --out "
                                      "must be on a filesystem every node sees")
    p.add_argument("--quick", action="store_true",
                   help="a small version of the experiment (1 seed, budgets capped at 60k/20k/8k steps), said before it "
                        "starts: about a minute on the default maze, longer on a pixel env")
    _add_device_arg(p)

    p = sub.add_parser("results", help="print the summary tables of a finished run",
                       description="Print the tables `goalscope run` printed at the end (MA and MB competence, update-"
                                   "signal cosines, negation verdicts, heatmap summaries) from RUN/summary.json, "
                                   "without recomputing anything.")
    p.add_argument("run", type=Path, help="run directory, e.g. runs/demo")
    p.add_argument("--parquet", type=Path, metavar="FILE",
                   help="also write RUN/records.csv as a Parquet file (needs pyarrow: pip install 'goalscope[parquet]'); "
                        "integer seeds, float values")
    p.add_argument("--force", action="store_true", help="replace a Parquet file goalscope wrote at --parquet")

    p = sub.add_parser("report", help="write a self-contained HTML report of a finished run",
                       description="Write RUN/report/index.html (figures embedded, opens offline) with PNG, SVG and "
                                   "CSV files of every figure next to it, and print its path. With --docs, draw "
                                   "the docs' images instead, from the runs a manifest names (make docs-figures).")
    p.add_argument("run", type=Path, nargs="?", help="run directory, e.g. runs/demo")
    p.add_argument("--out", type=Path, help="report directory (default: RUN/report)")
    p.add_argument("--docs", type=Path, metavar="MANIFEST",
                   help="draw every image a docs manifest lists (docs/figures.toml) with the report's figure "
                        "functions, captioned with run, command, seeds and machine")
    p.add_argument("--only", action="append", metavar="RUN",
                   help="with --docs: only the figures of this manifest run (repeatable), e.g. --only demo")

    p = sub.add_parser("validate", help="score a finished run's heatmaps: grafts, ablations, held-out RBs, planted truth",
                       description="Write runs/NAME/scorecard.json and scorecard.md: localisation AUROC against a "
                                   "planted reward map (planner architecture), graft curves, ablations, held-out "
                                   "rewards and stability, each against |Δ| and random baselines.")
    p.add_argument("run", type=Path, help="a finished run directory")
    p.add_argument("--episodes", type=bounded_int(MAX_EPISODES), help="evaluation episodes per graft point (default: the run's, at most 128)")
    p.add_argument("--workers", type=int, help="parallel processes (default: the run's config)")
    p.add_argument("--test-rbs", type=bounded_int(1000), metavar="N",
                   help="grade only the first N RBs of each seed (all RBs still build the heatmaps and nulls); "
                        "default: every RB. A family of 16 mixtures is 16 graft studies per seed without it")
    p.add_argument("--budget-minutes", type=positive_float, metavar="MINUTES",
                   help="wall-clock budget. The plan printed before any worker starts (model evaluations, env "
                        "steps, time estimated from MA's evaluation timed here) reserves the primary claims first, "
                        "at full strength: the graft and ablation comparisons against the nulls, the held-out "
                        "curve's largest size, the causal gate. Exploratory parts (held-out curve points below "
                        "its largest size) get what is left; those cut are named in the printout and the "
                        "scorecard. If the primaries alone are estimated over the budget, validate says so and runs "
                        "them anyway: a primary claim is never cut. Default: no budget, nothing cut")
    p.add_argument("--plan-only", action="store_true",
                   help="print the plan (and what --budget-minutes would cut) and stop: only MA is evaluated")

    p = sub.add_parser("pointers", help="objectives as pointers: a goal-conditioned agent, cue vs reward changes",
                       description="Train a goal-conditioned agent (the rewarded type is cued in the observation), "
                                   "then compare update signals when the reward changes but the cue does not, when "
                                   "the cue changes with it, and a control; measure retargeting by the cue. "
                                   "MA_g's competence (how often its first object is the cued type) is stated first "
                                   "and the verdict is marked when it is below --competence. 'Objective as "
                                   "pointer' is decided against a cue-blind reference (the same network trained "
                                   "on collect:0 with uninformative cues, moved to collect:1 by the same three "
                                   "fine-tunes): a one-sided paired t test over seeds. The trainings are "
                                   "cached jobs in OUT/stages, run in parallel like `goalscope run`: rerunning "
                                   "(after a kill, or with more seeds) retrains nothing that finished.")
    p.add_argument("--out", type=Path, required=True,
                   help="pointers directory (finished jobs are reused; records.csv and summary.json describe the "
                        "last call)")
    p.add_argument("--experiment", type=Path,
                   help="take the maze, agent, PPO settings and budgets from an experiment file ([env] with the cue "
                        "switched on, [agent], [ppo], base.steps, finetune.steps) instead of the options below, e.g. "
                        "experiments/pointers.toml (a competent goal-conditioned rcnn)")
    p.add_argument("--seeds", type=non_negative_int, nargs="+", default=[0, 1, 2], help="training seeds")
    p.add_argument("--base-steps", type=positive_int, help="env steps of the goal-conditioned agent (default: "
                   "200,000, or the experiment file's base.steps)")
    p.add_argument("--finetune-steps", type=positive_int, help="env steps of each fine-tune (default: 50,000, or the "
                   "experiment file's finetune.steps)")
    p.add_argument("--episodes", type=bounded_int(MAX_EPISODES), default=256, help="evaluation episodes")
    p.add_argument("--arch", default="cnn", help="a registered architecture (its default options), e.g. rcnn")
    p.add_argument("--competence", type=float, default=0.9,
                   help="the bar on MA_g: how often its first object is the cued type, as a fraction of how "
                        "often the oracle's is on the same episodes")
    p.add_argument("--no-reference", dest="reference", action="store_false", default=None,
                   help="skip the cue-blind reference (MA_ref on collect:0, moved to collect:1 by the same three "
                        "fine-tunes) that decides 'objective as pointer'; default: on, or the file's "
                        "pointers.reference")
    p.add_argument("--reference-steps", type=positive_int, help="env steps of the cue-blind reference agent "
                   "(default: the file's pointers.reference_steps, else the base steps)")
    p.add_argument("--workers", type=non_negative_int, default=0, help="parallel job processes (0 = one per core)")
    p.add_argument("--executor", default="local", help="where jobs run: local (a process pool) or ray")
    add_env_args(p)
    p.set_defaults(size=7, n_types=3, n_per_type=1, max_steps=32, loop_prob=0.2)

    p = sub.add_parser("sweep", help="a sweep of MA's training: variants x seeds as cached train jobs, and a table",
                       description="Run a sweep file's MA train jobs through an executor (the same jobs, with the "
                                   "same keys, as `goalscope run` makes for MA: finished ones are reused) and print "
                                   "the fraction of the oracle per variant with a 95% t interval over seeds; the "
                                   "table is also written as OUT/sweep.md and OUT/sweep.json. A sweep file is an "
                                   "experiment file plus a [sweep] table, e.g. experiments/sweep_9x9.toml.")
    p.add_argument("sweep", help="sweep file (TOML), e.g. experiments/sweep_9x9.toml")
    p.add_argument("--out", required=True, help="sweep directory (finished jobs are reused)")
    p.add_argument("--only", nargs="+", help="run only these variants")
    p.add_argument("--executor", default="local", help="where jobs run: local (a process pool) or ray")
    p.add_argument("--workers", type=int, default=1, help="parallel job processes (0 = one per core)")
    p.add_argument("--table-only", action="store_true", help="tabulate what has finished; train nothing")
    _add_device_arg(p)


def _add_device_arg(p) -> None:
    p.add_argument("--device", help="where the networks run, overriding the file's ppo.device: cpu, cuda or cuda:N "
                                    "(not part of a job's identity: finished jobs are reused whatever device made them)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"],
                   help="what the network's passes compute in, overriding the file's ppo.precision (auto: bf16 on a "
                        "CPU with AMX bf16 tiles, fp32 elsewhere; part of every job's key)")


def cmd_run(args) -> None:
    """``goalscope run``: run (or resume) an experiment and print its results."""
    from dataclasses import replace

    from goalscope.program.config import load_experiment, with_ppo
    from goalscope.program.executors import make_executor
    from goalscope.analysis.effects.experiment import run_experiment

    cfg = load_experiment(args.experiment)
    overrides = {k: v for k, v in (("device", args.device), ("precision", args.precision)) if v is not None}
    if overrides:
        cfg = with_ppo(cfg, **overrides)
    if args.quick:
        cfg = quick(cfg)
        print(quick_line(cfg), flush=True)
    if args.workers is not None:
        if args.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {args.workers}")
        cfg = replace(cfg, workers=args.workers)
    executor = make_executor(args.executor, workers=cfg.workers, address=args.address)
    summary = run_experiment(cfg, args.out, executor=executor, force=args.force, reconfigure=args.reconfigure)
    print_results(args.out, summary)


def quick(cfg):
    """The same experiment at a size that runs in about a minute: one seed, small budgets, one alpha."""
    from dataclasses import replace

    return replace(cfg, name=cfg.name + "-quick", seeds=cfg.seeds[:1],
                   base=replace(cfg.base, steps=min(cfg.base.steps, 60_000)),
                   finetune=replace(cfg.finetune, steps=min(cfg.finetune.steps, 20_000)),
                   negate=replace(cfg.negate, alphas=[1.0], retrain_steps=min(cfg.negate.retrain_steps, 8_000)),
                   evaluation=replace(cfg.evaluation, episodes=min(cfg.evaluation.episodes, 128))).validate()


def quick_line(cfg) -> str:
    """What ``--quick`` runs, said before it starts: on an env whose step costs milliseconds (Crafter) its budgets
    are not the minute they are on the maze."""
    from goalscope.program.runner import plan_experiment

    jobs = plan_experiment(cfg).jobs()
    steps = sum(j.spec["ppo"]["total_steps"] for j in jobs if "ppo" in j.spec)
    return (f"--quick: 1 seed, MA {cfg.base.steps:,} steps, MBs {cfg.finetune.steps:,} steps each ({len(cfg.rbs())} "
            f"RBs), {len(jobs)} jobs, {steps:,} env steps in all: about a minute on the default maze, longer where "
            f"an env step costs more")


def cmd_results(args) -> None:
    """``goalscope results``: print a finished run's tables from its summary.json."""
    from goalscope.outputs import check_unlocked

    path = args.run / "summary.json"
    check_unlocked(args.run)  # a run a live process is writing has not finished
    if not path.exists():
        raise ConfigError(f"{args.run} has no summary.json; run `goalscope run EXPERIMENT --out {args.run}` first")
    rewrite = f"rewrite it with `goalscope run EXPERIMENT --out {args.run}` (finished stages are reused)"
    if args.parquet:  # refused before anything is printed or written
        _check_parquet_out(args.parquet, args.force)
    from goalscope.analysis.records import read_records
    from goalscope.report.run import check_summary

    summary = check_summary(read_json(path, advice=rewrite), path, rewrite)
    if (args.run / "records.csv").exists():
        read_records(args.run / "records.csv")  # a truncated or damaged table is said, not printed as a path
    try:
        print_results(args.run, summary)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise GoalscopeError(f"{path} is damaged ({type(e).__name__}: {e}); {rewrite}") from None
    if args.parquet:
        _write_parquet(args.run, args.parquet)


def _check_parquet_out(out: Path, force: bool) -> None:
    try:
        import pyarrow  # noqa: F401  (pandas' Parquet engine; CSV needs nothing, so Parquet stays an extra)
    except ImportError:
        raise ConfigError("--parquet needs pyarrow: pip install 'goalscope[parquet]'") from None
    if out.suffix != ".parquet":
        raise ConfigError(f"--parquet {out}: name the file *.parquet")
    check_output_file(out, force, "Parquet file", lambda p: p.suffix == ".parquet" and p.read_bytes()[:4] == b"PAR1")


def _write_parquet(run: Path, out: Path) -> None:
    """RUN/records.csv as Parquet, typed as ``goalscope.load_run(RUN).records`` types it."""
    import io

    from goalscope.report.run import load_run

    buf = io.BytesIO()
    load_run(run).records.to_parquet(buf, index=False)
    atomic_write_bytes(out, buf.getvalue())  # a killed write leaves the old file, never half a new one
    print(f"wrote {out}")


def _print_competence(s: dict) -> None:
    """First, how competent the agents are: the rest of the page is only as meaningful as they are."""
    comp = s.get("competence") or {}
    if not comp:  # a run analysed before the competence gate existed
        if s.get("ma_fraction_of_oracle") is not None:
            print(f"MA on RA: {s['ma_fraction_of_oracle']:.1%} of oracle")
        return
    print("competence (each model on its own reward; preference = rewarded objects minus the others, per episode):")
    for model, c in comp.items():
        flag = "ok " if c["passes"] else "!! "
        m, lo, hi = c["preference"]
        pref = (f"preference {m:+.2f} [{lo:+.2f}, {hi:+.2f}]" if math.isfinite(lo) else f"preference {m:+.2f}"
                if math.isfinite(m) else "preference - (pays for every type)")
        print(f"  {flag}{model:<16} on {c['reward']:<14} {pref:<34} {c['verdict']}")
    weak = [m for m, c in comp.items() if not c["passes"]]
    if weak:
        print(f"!! {len(weak)} of {len(comp)} models are below the competence bar ({', '.join(weak[:4])}"
              f"{'...' if len(weak) > 4 else ''}): read what follows with that in mind")


def _overlap(name: str, value, chance, plane_chance=None) -> str:
    if value is None:
        return ""
    levels = ([f"tensor {chance:.3f}"] if chance is not None else []) + \
        ([f"tensor x plane {plane_chance:.3f}"] if plane_chance is not None else [])
    return f"   {name} {value:.3f}" + (f" [{', '.join(levels)}]" if levels else "")


def print_results(run: Path, s: dict) -> None:
    """The tables printed at the end of a run: competence, cosines, negation verdicts, heatmaps."""
    from goalscope.analysis.effects.competence import below_gate

    print(f"\n== {s['experiment']}: RA = {s['ra']}, RBs = {', '.join(s['rbs'])}, seeds = {s['seeds']}  ({run})")
    if s.get("failed_jobs"):
        print(f"!! {len(s['failed_jobs'])} jobs failed and are left out: {', '.join(s['failed_jobs'][:5])}")
    _print_competence(s)
    if s.get("cosine"):
        print("cosine between update signals: " + ", ".join(f"{k} {v:+.3f}" for k, v in s["cosine"].items()))
    if s.get("degenerate_signals"):
        print(f"!! {s['degenerate_signals']}")
    withheld = below_gate(s)
    if s.get("negation"):
        # The bootstrap intervals (seeds x episodes) are for reading; the verdict rests on the t interval over
        # per-seed means and its Holm p, so those are printed beside it, or a bootstrap interval that excludes 0
        # would sit unexplained next to "no detectable lean".
        print("\nnegate and retrain: MB* minus control, mean [95% CI]; RB objects, specific lean and RA return: "
              "hierarchical bootstrap over seeds x episodes; verdict: the t interval over per-seed means and its "
              "Holm p, shown beside it" + ("; verdicts withheld while models are below their competence bar" if withheld else ""))
        print(f"  {'RB':<14}{'alpha':>6}  {'control':<18}{'RB objects':>26}{'specific lean':>28}{'RA return':>28}"
              f"{'lean, t over seeds':>28}{'p (Holm)':>10}  verdict")
        for e in s["negation"]:
            for c in ("retrained_MA", "random_direction"):
                if c in e:
                    d = e[c]
                    p = d.get("p_holm")
                    print(f"  {e['rb']:<14}{e['alpha']:>6g}  {c:<18}{fmt_ci(d['rb_objects_diff']):>26}"
                          f"{fmt_ci(d['specific_lean']):>28}{fmt_ci(d['ra_return_diff']):>28}"
                          f"{fmt_ci(d['lean_t']) if 'lean_t' in d else 'n/a':>28}{'n/a' if p is None else f'{p:.3g}':>10}  "
                          f"{'not interpretable' if withheld else d['verdict']}")
    if s.get("heatmaps"):
        print("\nheatmaps: hottest tensors (score share / parameter share); top-1% overlap within an MA (fine-tune "
              "seeds) and across MA seeds (units need not line up there), [chance: tensor-stratified, and stratified "
              "by tensor and input plane where the first layer reads the maze planes: an overlap at that second "
              "level is explained by the top entries reading the same input plane, not by shared units]")
        for m, h in s["heatmaps"].items():
            hot = ", ".join(f"{k} x{h['enrichment'][k]:.1f}" for k in h["hottest_tensors"])
            print(f"  {m:<20} {hot}" + _overlap("within MA", h.get("within_ma_jaccard_top1pct"),
                                                h.get("within_ma_stratified_chance"), h.get("within_ma_plane_stratified_chance"))
                  + _overlap("across MA seeds", h.get("seed_jaccard_top1pct"), h.get("seed_jaccard_stratified_chance"),
                             h.get("seed_jaccard_plane_stratified_chance")))
    for m, err in s.get("heatmap_errors", {}).items():
        print(f"  {m:<20} not computed: {err}")
    if s.get("stage_wall_s"):
        print("\nwall time per stage (s): " + ", ".join(f"{k} {v}" for k, v in s["stage_wall_s"].items()))
    print(f"records: {run / 'records.csv'}   heatmaps: {run / 'heatmaps'}")


def cmd_report(args) -> None:
    """``goalscope report``: write the HTML report of a finished run and print its path."""
    from goalscope.report.page import write_report

    if args.docs is not None:
        if args.run is not None or args.out is not None:
            raise ConfigError("--docs takes its runs and its images folder from the manifest: drop RUN and --out")
        from goalscope.report.docs_figures import write_docs_figures

        written = write_docs_figures(args.docs, only=args.only)
        print(f"{len(written)} images, {sum(p.stat().st_size for p in written) / 1024:.0f} KB")
        return
    if args.run is None:
        raise ConfigError("report needs a run directory (goalscope report runs/demo) or --docs MANIFEST")
    if args.only:
        raise ConfigError("--only selects runs of a --docs manifest")
    out = check_output_path(args.out or args.run / "report", "report directory")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; --out takes a directory for the report")
    if args.out and out.exists() and any(out.iterdir()) and foreign_entry(out) is not None:
        raise ConfigError(f"{out} holds {foreign_entry(out)!r}, which goalscope did not write; choose an empty or new --out")
    index = write_report(args.run, out)
    write_marker(out, "report")
    print(index)


def cmd_validate(args) -> None:
    """``goalscope validate``: score a finished run's heatmaps and print scorecard.md."""
    from dataclasses import replace

    from goalscope.program.config import experiment_from_dict
    from goalscope.program.executors import LocalExecutor
    from goalscope.analysis.validate.validation import run_validation

    path = args.run / "experiment.json"
    if not path.exists():
        raise ConfigError(f"{args.run} is not a goalscope run (no experiment.json)")
    cfg = experiment_from_dict(read_json(path))
    if args.workers is not None:
        if args.workers < 0:
            raise ConfigError(f"--workers must be >= 0, got {args.workers}")
        cfg = replace(cfg, workers=args.workers)
    run_validation(cfg, args.run, LocalExecutor(cfg.workers), episodes=args.episodes, test_rbs=args.test_rbs,
                   budget_minutes=args.budget_minutes, plan_only=args.plan_only)
    if not args.plan_only:
        print((args.run / "scorecard.md").read_text())


def cmd_pointers(args) -> None:
    """``goalscope pointers``: the objectives-as-pointers experiment."""
    from goalscope.analysis.pointers import run_pointer_experiment
    from goalscope.program.executors import make_executor

    setup = {"env": env_config(args), "arch": args.arch, "base_steps": 200_000, "finetune_steps": 50_000}
    if args.experiment:
        from goalscope.analysis.pointer_reference import load_pointers_file

        cfg, section = load_pointers_file(args.experiment)
        setup = {"env": cfg.env, "arch": cfg.agent.arch, "arch_config": cfg.agent.config, "ppo": cfg.ppo,
                 "base_steps": cfg.base.steps, "finetune_steps": cfg.finetune.steps,
                 "reference": section.reference, "reference_steps": section.reference_steps or None}
    for key in ("base_steps", "finetune_steps", "reference", "reference_steps"):
        if getattr(args, key) is not None:
            setup[key] = getattr(args, key)
    s = run_pointer_experiment(args.out, seeds=args.seeds, episodes=args.episodes, cue_bar=args.competence,
                               executor=make_executor(args.executor, workers=args.workers), **setup)
    print(f"retargeting: first object is the cued type in {s['retargeting_first_is_cued']:.1%} of episodes "
          f"(chance {1 / setup['env'].n_types:.1%})")
    for name, ci in s["delta_l2_over_control"].items():
        print(f"‖Δ‖ / control drift, {name}: {ci[0]:.2f} [{ci[1]:.2f}, {ci[2]:.2f}]")
    for name, ci in s.get("reference", {}).get("delta_l2_over_control", {}).items():
        print(f"‖Δ‖ / control drift, cue-blind reference, {name}: {ci[0]:.2f} [{ci[1]:.2f}, {ci[2]:.2f}]")
    print(f"verdict (update size): {s['verdict']}\n{s['objective_as_pointer']['verdict']}\n"
          f"records: {args.out / 'records.csv'}")


def cmd_sweep(args) -> None:
    """``goalscope sweep``: run a sweep file's MA train jobs (or only tabulate them) and print the table."""
    from goalscope.analysis.effects.sweep_table import markdown, run_sweep, table
    from goalscope.program.executors import make_executor
    from goalscope.program.sweep import load_sweep

    if args.table_only:
        _, variants = load_sweep(args.sweep)
        if args.only:
            variants = [v for v in variants if v.name in args.only]
        print(markdown(table(variants, Path(args.out))), end="")
        return
    rows = run_sweep(args.sweep, args.out, executor=make_executor(args.executor, workers=args.workers), only=args.only,
                     device=args.device, precision=args.precision)
    print(markdown(rows), end="")


COMMANDS = {"run": cmd_run, "results": cmd_results, "report": cmd_report, "validate": cmd_validate, "pointers": cmd_pointers,
            "sweep": cmd_sweep}
