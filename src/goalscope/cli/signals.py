"""CLI commands on update signals by hand, from checkpoints: diff (Δ = MB − MA), negate, superpose.

May import anything below the CLI; heavy modules are imported inside the commands so ``--help`` stays fast.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from goalscope.cli.common import MAX_EPISODES, bounded_int, fmt_ci, non_negative_int, positive_int
from goalscope.errors import ConfigError
from goalscope.outputs import check_output_file


def add_commands(sub) -> None:
    """The parsers of the signal commands: diff, negate, superpose."""
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
    p.add_argument("--episodes", type=bounded_int(MAX_EPISODES), default=256, help="evaluation episodes")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of the retraining")

    p = sub.add_parser("superpose", help="aggregate several update signals into an objective heatmap",
                       description="Superpose the update signals MB_i - MA with an aggregator into one score per "
                                   "parameter, and print each tensor's enrichment: its share of the score over its "
                                   "share of the parameters (1 = no more than its size predicts).")
    p.add_argument("ma", type=Path, help="checkpoint of MA")
    p.add_argument("mbs", type=Path, nargs="+", help="fine-tuned checkpoints MB_1 ... MB_k")
    p.add_argument("--method", default="mean_abs", help="aggregator: mean, median, mean_abs, ties, pca, control_subtracted, fisher")
    p.add_argument("--control", type=Path, action="append", default=[], help="MA fine-tuned on RA (repeatable)")
    p.add_argument("--fisher-samples", type=bounded_int(1_000_000), default=1024, help="observations for the fisher method")
    p.add_argument("--out", type=Path, help="write the heatmap as safetensors (marked as a heatmap, so it is never "
                                            "loaded as weights)")
    p.add_argument("--force", action="store_true", help="replace an existing heatmap file at --out")


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
    """``goalscope diff``: print the update signal between two checkpoints per layer and tensor."""
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
    """``goalscope negate``: MA − αΔ retrained on RA against MA retrained alike, for one seed."""
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
    print(f"  RB-type ({i_rb}) objects, MB* - control: {fmt_ci(diff)} (95% CI over episodes, one seed)")


def cmd_superpose(args) -> None:
    """``goalscope superpose``: aggregate update signals into a heatmap and print each tensor's enrichment."""
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
        from goalscope.analysis.effects.superposition import ma_fisher

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


COMMANDS = {"diff": cmd_diff, "negate": cmd_negate, "superpose": cmd_superpose}
