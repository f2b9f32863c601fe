"""CLI commands of the experiment program: run, results, diff, negate, superpose."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

from goalscope.errors import ConfigError, GoalscopeError
from goalscope.inputs import read_json
from goalscope.cli.common import add_env_args, env_config, non_negative_int, positive_int
from goalscope.outputs import check_output_file, check_output_path, check_replaceable, foreign_entry, replace_dir, write_marker


def add_commands(sub) -> None:
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
    p.add_argument("--quick", action="store_true", help="a tiny version of the experiment (small budgets, 1 seed) to try things out")

    p = sub.add_parser("results", help="print the summary tables of a finished run",
                       description="Print the tables `goalscope run` printed at the end (MA and MB competence, update-"
                                   "signal cosines, negation verdicts, heatmap summaries) from RUN/summary.json, "
                                   "without recomputing anything.")
    p.add_argument("run", type=Path, help="run directory, e.g. runs/demo")

    p = sub.add_parser("diff", help="update signal MB - MA: size per layer and tensor",
                       description="Print the update signal between two checkpoints of the same architecture.")
    p.add_argument("ma", type=Path, help="checkpoint of MA")
    p.add_argument("mb", type=Path, help="checkpoint of MB (the same architecture)")
    p.add_argument("--units", action="store_true", help="also list the 10 most-changed output units / channels")

    p = sub.add_parser("negate", help="MB* = MA - alpha*(MB - MA), retrained on RA, against a retrained-MA control",
                       description="The seed's negation test for one pair: subtract alpha times the update signal "
                                   "MB - MA from MA, retrain briefly on RA to recover capability, and compare how many "
                                   "RB objects it collects with MA retrained the same way (one seed; `goalscope run` "
                                   "does this over seeds with random-direction controls and CIs).")
    p.add_argument("ma", type=Path, help="checkpoint of MA (trained on RA)")
    p.add_argument("mb", type=Path, help="checkpoint of MB (MA fine-tuned on RB)")
    p.add_argument("--alpha", type=float, default=1.0, help="how far to step against the update signal")
    p.add_argument("--retrain-steps", type=positive_int, default=20_000, help="env steps of retraining on RA")
    p.add_argument("--episodes", type=positive_int, default=256, help="evaluation episodes")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the retraining")

    p = sub.add_parser("superpose", help="aggregate several update signals into an objective heatmap",
                       description="Superpose the update signals MB_i - MA with an aggregator into one score per "
                                   "parameter, and print each tensor's enrichment: its share of the score over its "
                                   "share of the parameters (1 = no more than its size predicts).")
    p.add_argument("ma", type=Path, help="checkpoint of MA")
    p.add_argument("mbs", type=Path, nargs="+", help="fine-tuned checkpoints MB_1 ... MB_k")
    p.add_argument("--method", default="mean_abs", help="aggregator: mean, median, mean_abs, ties, pca, control_subtracted, fisher")
    p.add_argument("--control", type=Path, action="append", default=[], help="MA fine-tuned on RA (repeatable)")
    p.add_argument("--fisher-samples", type=positive_int, default=1024, help="observations for the fisher method")
    p.add_argument("--out", type=Path, help="write the heatmap as safetensors (marked as a heatmap, so it is never "
                                            "loaded as weights)")
    p.add_argument("--force", action="store_true", help="replace an existing heatmap file at --out")

    p = sub.add_parser("report", help="write a self-contained HTML report of a finished run",
                       description="Write RUN/report/index.html (figures embedded, opens offline) with PNG, SVG and "
                                   "CSV files of every figure next to it, and print its path.")
    p.add_argument("run", type=Path, help="run directory, e.g. runs/demo")
    p.add_argument("--out", type=Path, help="report directory (default: RUN/report)")

    p = sub.add_parser("import-sb3", help="import a Stable-Baselines3 PPO MlpPolicy zip as a goalscope checkpoint",
                       description="Read a Stable-Baselines3 PPO zip (MlpPolicy, separate pi/vf towers of equal "
                                   "widths, Tanh or ReLU) trained on the object maze, without unpickling anything, "
                                   "and write a goalscope 'mlp' checkpoint that can be evaluated, fine-tuned and "
                                   "analysed like MA. The maze options must be those it was trained on.")
    p.add_argument("zip", type=Path, help="the SB3 model zip (model.save(...))")
    p.add_argument("--out", type=Path, required=True, help="checkpoint directory to create, e.g. runs/ma")
    p.add_argument("--reward", required=True, help="the reward it was trained on (RA), e.g. collect:0")
    p.add_argument("--activation", choices=["tanh", "relu"],
                   help="only if the zip does not say in readable form (SB3 writes it for its own models)")
    p.add_argument("--force", action="store_true", help="replace an existing checkpoint directory")
    add_env_args(p)


def cmd_run(args) -> None:
    from dataclasses import replace

    from goalscope.program.config import load_experiment
    from goalscope.program.executors import make_executor
    from goalscope.analysis.experiment import run_experiment

    cfg = load_experiment(args.experiment)
    if args.quick:
        cfg = quick(cfg)
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


def cmd_results(args) -> None:
    path = args.run / "summary.json"
    if not path.exists():
        raise ConfigError(f"{args.run} has no summary.json; run `goalscope run EXPERIMENT --out {args.run}` first")
    rewrite = f"rewrite it with `goalscope run EXPERIMENT --out {args.run}` (finished stages are reused)"
    summary = read_json(path, advice=rewrite)
    try:
        print_results(args.run, summary)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise GoalscopeError(f"{path} is damaged ({type(e).__name__}: {e}); {rewrite}") from None


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
        pref = f"preference {m:+.2f} [{lo:+.2f}, {hi:+.2f}]" if math.isfinite(lo) else f"preference {m:+.2f}"
        print(f"  {flag}{model:<16} on {c['reward']:<14} {pref:<34} {c['verdict']}")
    weak = [m for m, c in comp.items() if not c["passes"]]
    if weak:
        print(f"!! {len(weak)} of {len(comp)} models are below the competence bar ({', '.join(weak[:4])}"
              f"{'...' if len(weak) > 4 else ''}): read what follows with that in mind")


def _overlap(name: str, value, chance) -> str:
    if value is None:
        return ""
    return f"   {name} {value:.3f}" + (f" [{chance:.3f}]" if chance is not None else "")


def _fmt(ci) -> str:
    m, lo, hi = ci
    return "n/a" if not math.isfinite(m) else f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def print_results(run: Path, s: dict) -> None:
    print(f"\n== {s['experiment']}: RA = {s['ra']}, RBs = {', '.join(s['rbs'])}, seeds = {s['seeds']}  ({run})")
    if s.get("failed_jobs"):
        print(f"!! {len(s['failed_jobs'])} jobs failed and are left out: {', '.join(s['failed_jobs'][:5])}")
    _print_competence(s)
    if s.get("cosine"):
        print("cosine between update signals: " + ", ".join(f"{k} {v:+.3f}" for k, v in s["cosine"].items()))
    if s.get("negation"):
        print("\nnegate and retrain: MB* minus control, mean [95% CI] over seeds x episodes")
        print(f"  {'RB':<14}{'alpha':>6}  {'control':<18}{'RB objects':>26}{'specific lean':>28}{'RA return':>28}  verdict")
        for e in s["negation"]:
            for c in ("retrained_MA", "random_direction"):
                if c in e:
                    d = e[c]
                    print(f"  {e['rb']:<14}{e['alpha']:>6g}  {c:<18}{_fmt(d['rb_objects_diff']):>26}"
                          f"{_fmt(d['specific_lean']):>28}{_fmt(d['ra_return_diff']):>28}  {d['verdict']}")
    if s.get("heatmaps"):
        print("\nheatmaps: hottest tensors (score share / parameter share); top-1% overlap [tensor-stratified chance]"
              " within an MA (fine-tune seeds) and across MA seeds (units need not line up there)")
        for m, h in s["heatmaps"].items():
            hot = ", ".join(f"{k} x{h['enrichment'][k]:.1f}" for k in h["hottest_tensors"])
            print(f"  {m:<20} {hot}" + _overlap("within MA", h.get("within_ma_jaccard_top1pct"),
                                                h.get("within_ma_stratified_chance"))
                  + _overlap("across MA seeds", h.get("seed_jaccard_top1pct"), h.get("seed_jaccard_stratified_chance")))
    for m, err in s.get("heatmap_errors", {}).items():
        print(f"  {m:<20} not computed: {err}")
    if s.get("stage_wall_s"):
        print("\nwall time per stage (s): " + ", ".join(f"{k} {v}" for k, v in s["stage_wall_s"].items()))
    print(f"records: {run / 'records.csv'}   heatmaps: {run / 'heatmaps'}")


def _load_pair(a: Path, b: Path):
    from goalscope.agents.checkpoints import load_checkpoint

    ma = load_checkpoint(a)
    return ma, _load_against(ma, a, b)


def _load_against(ma, a: Path, b: Path):
    """Checkpoint ``b``, checked to share ``ma``'s architecture and tensors (so b - ma is an update signal)."""
    from goalscope.agents.checkpoints import load_checkpoint
    from goalscope.signals.delta import check_compatible

    mb = load_checkpoint(b)
    if ma.arch != mb.arch:
        raise ConfigError(f"{a} is a {ma.arch!r} and {b} a {mb.arch!r}; an update signal needs one architecture")
    check_compatible(ma.state_dict, mb.state_dict, str(a), str(b))
    return mb


def cmd_diff(args) -> None:
    from goalscope.signals import delta as sig

    ma, mb = _load_pair(args.ma, args.mb)
    delta = sig.update_signal(ma.state_dict, mb.state_dict)
    print(f"Δ = {args.mb} ({mb.reward.name}) - {args.ma} ({ma.reward.name})")
    print(f"  {'tensor':<18}{'numel':>9}{'‖Δ‖':>11}{'mean|Δ|':>11}{'‖Δ‖/‖MA‖':>11}")
    for r in sig.per_tensor(delta, reference=ma.state_dict):
        print(f"  {r['param']:<18}{r['numel']:>9}{r['l2']:>11.4f}{r['mean_abs']:>11.2e}{r['rel_l2']:>11.4f}")
    total = float(sig.flatten(delta).norm())
    print(f"  total ‖Δ‖ = {total:.4f}, relative to ‖MA‖ = {total / float(sig.flatten(ma.state_dict).norm()):.4f}")
    if args.units:
        units = sorted(sig.per_unit(delta), key=lambda r: r["l2"], reverse=True)[:10]
        print("  most-changed units: " + ", ".join(f"{u['param']}[{u['unit']}] {u['l2']:.3f}" for u in units))


def cmd_negate(args) -> None:
    from goalscope.rl.evaluation import evaluate, summarise
    from goalscope.signals.delta import negate, update_signal
    from goalscope.analysis.stats import bootstrap_mean
    from goalscope.rl.ppo import PPOConfig, finetune

    ma, mb = _load_pair(args.ma, args.mb)
    ppo = PPOConfig(total_steps=args.retrain_steps, eval_episodes=args.episodes)
    start = ma.build()
    start.load_state_dict(negate(ma.state_dict, update_signal(ma.state_dict, mb.state_dict), args.alpha))
    star = finetune(dataclasses.replace(ma, state_dict=start.state_dict()), ma.reward, ppo, args.seed).build()
    control = finetune(ma, ma.reward, ppo, args.seed).build()
    i_rb = mb.reward.target_type(ma.reward)
    p_star = evaluate(star, ma.env, ma.reward, args.episodes)
    p_ctrl = evaluate(control, ma.env, ma.reward, args.episodes)
    diff = bootstrap_mean(p_star.counts[:, i_rb] - p_ctrl.counts[:, i_rb])
    print(f"MB* = MA - {args.alpha:g}·(MB - MA), retrained {args.retrain_steps} steps on {ma.reward.name}; "
          f"control: MA retrained the same")
    for name, p in (("MB*", p_star), ("control", p_ctrl)):
        s = summarise(p, ma.reward)
        print(f"  {name:<8} objects per episode {s['counts_mean']}  RA return {s['return_mean']:.3f}")
    print(f"  RB-type ({i_rb}) objects, MB* - control: {_fmt(diff)} (95% CI over episodes, one seed)")


def cmd_superpose(args) -> None:
    from goalscope.signals import aggregators as agg
    from goalscope.signals import delta as sig

    from goalscope.agents.checkpoints import HEATMAP_FORMAT, load_checkpoint, save_heatmap, weights_format

    if args.out:  # before any work: never overwrite without --force, and never anything but a heatmap
        check_output_file(args.out, args.force, "heatmap", lambda p: weights_format(p) == HEATMAP_FORMAT)
    ma = load_checkpoint(args.ma)  # once: every signal is measured from this MA
    deltas = [sig.update_signal(ma.state_dict, _load_against(ma, args.ma, b).state_dict) for b in args.mbs]
    controls = [sig.update_signal(ma.state_dict, _load_against(ma, args.ma, c).state_dict) for c in args.control]
    fisher = None
    if args.method == "fisher":
        from goalscope.analysis.negation import ma_fisher

        fisher = ma_fisher(ma, args.fisher_samples, seed=0)
    heat = agg.aggregate(args.method, deltas, controls=controls, fisher=fisher)
    total = float(sum(v.sum() for v in heat.values()))
    n_params = sum(v.numel() for v in heat.values())
    rows = [(k, float(v.sum()) / total if total else 0.0, v.numel() / n_params) for k, v in heat.items()]
    print(f"heatmap '{args.method}' over {len(deltas)} update signals; enrichment = share of score / share of parameters")
    print(f"  {'tensor':<22}{'enrichment':>11}{'score':>9}{'params':>9}")
    for k, share, size in sorted(rows, key=lambda r: -r[1] / r[2]):
        print(f"  {k:<22}{share / size:>11.2f}{share:>9.1%}{size:>9.1%}")
    if args.out:
        save_heatmap(heat, args.out, {"method": args.method, "signals": str(len(deltas))})
        print(f"wrote {args.out}")


def cmd_report(args) -> None:
    from goalscope.report.page import write_report

    out = check_output_path(args.out or args.run / "report", "report directory")
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out} is a file; --out takes a directory for the report")
    if args.out and out.exists() and any(out.iterdir()) and foreign_entry(out) is not None:
        raise ConfigError(f"{out} holds {foreign_entry(out)!r}, which goalscope did not write; choose an empty or new --out")
    index = write_report(args.run, out)
    write_marker(out, "report")
    print(index)


def cmd_import_sb3(args) -> None:
    from goalscope.agents.checkpoints import save_checkpoint
    from goalscope.agents.importers import import_sb3

    check_replaceable(args.out, args.force, "checkpoint directory")  # before reading the zip
    ckpt = import_sb3(args.zip, env_config(args), args.reward, activation=args.activation)
    with replace_dir(args.out, args.force, "checkpoint directory", "checkpoint") as staging:
        save_checkpoint(ckpt, staging)
    hidden = ckpt.arch_config["hidden"]
    print(f"imported {args.zip} ({ckpt.steps:,} SB3 steps) as an mlp checkpoint (hidden {hidden}, "
          f"{ckpt.arch_config['activation']}) trained on {ckpt.reward.name}: {args.out}")


COMMANDS = {"run": cmd_run, "results": cmd_results, "diff": cmd_diff, "negate": cmd_negate, "superpose": cmd_superpose,
            "report": cmd_report, "import-sb3": cmd_import_sb3}
