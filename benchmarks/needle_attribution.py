"""The needle planner with its inert labels left out (issue 25): on the tiny recipe of tests/test_planted.py (MA 8k
steps on collect:0, four one-hot fine-tunes of 4k steps; ~16 s of CPU per seed), the inert planted labels, each
ranking's AUROC on all labels and on the movable ones with its ceiling, and integrated gradients' completeness.

    .venv/bin/python benchmarks/needle_attribution.py 0      # MA seed
"""
import sys, time
from pathlib import Path
import numpy as np, torch
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
torch.set_num_threads(1)
from goalscope.signals import aggregators as agg, delta as sig
from goalscope.agents.registry import movable_mask, objective_mask
from goalscope.envs.rewards import parse_reward
from goalscope.rl.ppo import finetune, train_new
from goalscope.analysis.validate import planted
from goalscope.analysis.effects.superposition import collect_observations, ma_fisher
from goalscope.signals.attribution import integrated_gradients
from test_planted import ENV, ARCH_CONFIG, _ppo
seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
t0 = time.process_time()
ma = train_new("needle_planner", ARCH_CONFIG, ENV, parse_reward("collect:0", 5), _ppo(8192), seed)
mbs = {k: finetune(ma, parse_reward(f"collect:{k}", 5), _ppo(4096), 100 * k + seed) for k in (1, 2, 3, 4)}
deltas = {k: sig.update_signal(ma.state_dict, mb.state_dict) for k, mb in mbs.items()}
mask = objective_mask(ma.build()); mov = movable_mask(ma.build())
labels = sig.flatten({k: mask[k] for k in ma.state_dict}).numpy()
scored = sig.flatten({k: mov[k] for k in ma.state_dict}).numpy()
print("train cpu s", round(time.process_time() - t0, 1), "inert labels", int((labels & ~scored).sum()), "of", int(labels.sum()))
fisher = ma_fisher(ma, 1024, seed)
model = ma.build(); igs = {}
t1 = time.process_time()
for k, mb in mbs.items():
    obs = collect_observations(mb.build(), mb.env, mb.reward, 256, seed=4000 + seed)
    igs[k], info = integrated_gradients(model, ma.state_dict, mb.state_dict, obs)
    print(f"RB {k}: sum IG {info['sum']:+.4f} vs L(MB)-L(MA) {info['l_end'] - info['l_start']:+.4f}")
print("IG cpu s per RB", round((time.process_time() - t1) / 4, 2))
f = lambda h: sig.flatten({k: v.abs().float() for k, v in h.items()}).numpy()
rows = {"ties (4 RBs)": f(agg.aggregate("ties", list(deltas.values()))), "Fisher alone": f(fisher),
        "mean_abs over IG (4 RBs)": f(agg.aggregate("mean_abs", list(igs.values()))),
        "ties over IG (4 RBs)": f(agg.aggregate("ties", list(igs.values())))}
single_d = [f(d) for d in deltas.values()]; single_ig = [f(d) for d in igs.values()]
print(f"{'ranking':28s} {'AUROC all labels':>17s} {'ceiling':>8s} {'AUROC movable':>14s} {'ceiling':>8s}")
for name, s in rows.items():
    a = planted.score(s, labels); b = planted.score(s, labels, scored)
    print(f"{name:28s} {a[0]:17.3f} {a[2]:8.3f} {b[0]:14.3f} {b[2]:8.3f}")
for name, ss in (("|Δ_i| (one RB, mean)", single_d), ("|IG_i| (one RB, mean)", single_ig)):
    a = np.mean([planted.score(s, labels) for s in ss], 0); b = np.mean([planted.score(s, labels, scored) for s in ss], 0)
    print(f"{name:28s} {a[0]:17.3f} {a[2]:8.3f} {b[0]:14.3f} {b[2]:8.3f}")
print("total cpu s", round(time.process_time() - t0, 1))
