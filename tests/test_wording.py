"""Verdict words that say what was tested (issue 34 item 3): an effect whose interval excludes 0 but which fails
Holm is "not shown after Holm", never "no better than random"; printouts show the interval a verdict rests on;
overlap is set against a chance level that knows the input plane."""

from __future__ import annotations

from pathlib import Path

import math

import numpy as np
import pytest
import torch

from goalscope.analysis.validate.grafts import CONTROL_NULL, FISHER_NULL, NULLS, OTHER_RB_NULL, PER_RB, RANDOM
from goalscope.analysis.validate.validation import compare_family, ladder_label, locus_verdict


def _scores(diff_random, diff_fisher=(-0.3, -0.3, -0.3), diff_rest=(-0.3, -0.3, -0.3)) -> dict:
    base = np.array([0.1, 0.2, 0.15])
    return {PER_RB: {"graft": list(base + 0.5)}, RANDOM: {"graft": list(base + 0.5 - np.array(diff_random))},
            FISHER_NULL: {"graft": list(base + 0.5 - np.array(diff_fisher))},
            CONTROL_NULL: {"graft": list(base + 0.5 - np.array(diff_rest))},
            OTHER_RB_NULL: {"graft": list(base + 0.5 - np.array(diff_rest))}}


def test_an_interval_above_zero_that_fails_holm_is_not_shown_not_no_better():
    # Differences from random 0.25, 0.55, 0.40 over 3 seeds: one-sided p = 0.022, two-sided 95% t interval
    # [+0.03, +0.77] excludes 0, Holm over 4 nulls (0.088) does not pass. Before: "no better than random".
    tests = compare_family(_scores((0.25, 0.55, 0.40)), "graft", [PER_RB], nulls=NULLS)
    t = next(t for t in tests if t["null"] == RANDOM)
    assert not t["beaten"] and t["diff"][1] > 0 and 0.0125 < t["p"] < 0.025
    v = locus_verdict(tests, PER_RB)
    assert v.startswith(f"not shown above {RANDOM} after Holm (raw p 0.0219)"), v
    assert "no better than random" not in v
    # Where the interval includes 0 the data do say "no better than random".
    tests = compare_family(_scores((0.05, 0.55, 0.30)), "graft", [PER_RB], nulls=NULLS)
    assert next(t for t in tests if t["null"] == RANDOM)["diff"][1] < 0
    assert locus_verdict(tests, PER_RB).startswith("no better than random ("), locus_verdict(tests, PER_RB)


def test_the_ladder_says_not_shown_at_the_rung_that_decides():
    raw = {FISHER_NULL: {"null": FISHER_NULL, "p": 0.02, "diff": [0.3, 0.01, 0.6]}}
    assert ladder_label([RANDOM], [FISHER_NULL, CONTROL_NULL, OTHER_RB_NULL], PER_RB, raw) == \
        f"above random; not shown above {FISHER_NULL} after Holm (raw p 0.02)"
    assert ladder_label([RANDOM], [FISHER_NULL, CONTROL_NULL, OTHER_RB_NULL], PER_RB) == "sensitivity only"
    # A rung of two nulls is "not shown" only when both of its misses are: one absent difference decides.
    raw = {CONTROL_NULL: {"null": CONTROL_NULL, "p": 0.02, "diff": [0.3, 0.01, 0.6]}}
    assert ladder_label([RANDOM, FISHER_NULL], [CONTROL_NULL, OTHER_RB_NULL], PER_RB, raw) == "generic fine-tuning locus"
    assert ladder_label([RANDOM, FISHER_NULL, OTHER_RB_NULL], [CONTROL_NULL], PER_RB, raw) == \
        f"above sensitivity; not shown above {CONTROL_NULL} after Holm (raw p 0.02)"


def test_the_negation_printout_shows_the_interval_its_verdict_uses(capsys):
    from goalscope.cli.experiment import print_results

    # A bootstrap interval over seeds x episodes that excludes 0, a t interval over seed means that does not: the
    # verdict reads the second. Before, only the first was printed beside "no detectable lean (Holm)".
    d = {"rb_objects_diff": [-0.4, -0.6, -0.2], "specific_lean": [-0.3, -0.5, -0.1], "ra_return_diff": [0.0, -0.1, 0.1],
         "lean_t": [-0.3, -1.1, 0.5], "p": 0.21, "p_holm": 0.84, "verdict": "no detectable lean (Holm)"}
    s = {"experiment": "x", "ra": "collect:0", "rbs": ["collect:1"], "seeds": [0, 1, 2],
         "negation": [{"rb": "collect:1", "alpha": 1.0, "retrained_MA": d}]}
    print_results(Path("run"), s)
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "retrained_MA" in x)
    assert "-0.300 [-1.100, +0.500]" in line and "0.84" in line and line.endswith("no detectable lean (Holm)"), line
    assert "t interval over per-seed means" in out


def _plane_masks(seed: int):
    """Two top-1%-like masks of an rcnn-shaped net whose first-layer entries all read input plane 4, placed
    independently inside it: what two MA seeds with unaligned units but the same "where the type enters" give."""
    from goalscope.agents.registry import build_agent
    from goalscope.envs.maze import MazeConfig
    from goalscope.signals.planes import first_layer

    env = MazeConfig(size=7, n_types=5, n_per_type=1, max_steps=8)
    state = build_agent("rcnn", env.obs_shape, 4).state_dict()
    strata = first_layer("rcnn", state, env).channel
    rng = np.random.default_rng(seed)
    masks = []
    for _ in range(2):
        m = {k: torch.zeros(v.shape, dtype=torch.bool) for k, v in state.items()}
        on = torch.zeros(m["conv1.weight"][:, 4].numel(), dtype=torch.bool)
        on[torch.from_numpy(rng.choice(on.numel(), 60, replace=False))] = True
        m["conv1.weight"][:, 4] = on.view(m["conv1.weight"][:, 4].shape)
        m["fc.weight"].view(-1)[torch.from_numpy(rng.choice(m["fc.weight"].numel(), 60, replace=False))] = True
        masks.append(m)
    return masks, strata


def test_a_plane_stratified_chance_explains_an_overlap_the_tensor_level_does_not():
    from goalscope.signals.delta import flatten, jaccard, jaccard_chance_stratified

    (a, b), strata = _plane_masks(0)
    # Before: one chance level, tensor-stratified, far below the overlap of two masks that share only the plane.
    observed = jaccard(flatten(a), flatten(b))
    tensor = jaccard_chance_stratified(a, b, n_perm=200)
    plane = jaccard_chance_stratified(a, b, n_perm=200, strata=strata)
    assert tensor < observed / 2 and plane > tensor * 2
    # The tensor-and-plane level is an actual shuffle within (tensor, plane), averaged.
    shuffled = []
    for i in range(200):
        g = np.random.default_rng(i)
        perm = {k: v.clone() for k, v in b.items()}
        for k, v in b.items():
            labels = strata.get(k, torch.zeros(v.shape, dtype=torch.long)).reshape(-1)
            flat = perm[k].view(-1)
            for lab in torch.unique(labels):
                idx = torch.nonzero(labels == lab).flatten()
                flat[idx] = v.reshape(-1)[idx[torch.from_numpy(g.permutation(len(idx)))]]
        shuffled.append(jaccard(flatten(a), flatten(perm)))
    assert plane == pytest.approx(np.mean(shuffled), rel=0.1)
    # Without strata the draws are the tensor-stratified level exactly, as before.
    assert jaccard_chance_stratified(a, b, seed=3) == jaccard_chance_stratified(a, b, seed=3, strata=None)


def test_cross_seed_overlap_is_printed_and_reported_beside_both_chance_levels(capsys):
    from goalscope.analysis.effects.superposition import _stability
    from goalscope.cli.experiment import print_results
    from goalscope.report.sections import _overlap_cell

    (a, b), strata = _plane_masks(1)
    jac, tensor, plane = _stability([{k: v.float() for k, v in m.items()} for m in (a, b)], strata)
    assert tensor < jac and plane > 2 * tensor and _stability([a, b])[2] is None
    h = {"hottest_tensors": ["conv1.weight"], "enrichment": {"conv1.weight": 9.0}, "seed_jaccard_top1pct": 0.268,
         "seed_jaccard_stratified_chance": 0.037, "seed_jaccard_plane_stratified_chance": 0.25}
    print_results(Path("run"), {"experiment": "x", "ra": "r", "rbs": ["b"], "seeds": [0, 1], "heatmaps": {"mean_abs": h}})
    out = capsys.readouterr().out
    assert "across MA seeds 0.268 [tensor 0.037, tensor x plane 0.250]" in out
    assert "explained by the top entries reading the same input plane" in out
    assert _overlap_cell(h, "seed_jaccard_top1pct", "seed_jaccard_stratified_chance",
                         "seed_jaccard_plane_stratified_chance") == "0.268 [0.037; 0.25]"


def test_plane_strata_come_from_the_same_finder_as_the_ground_truth():
    from types import SimpleNamespace

    from goalscope.agents.registry import build_agent
    from goalscope.analysis.effects.superposition import plane_strata
    from goalscope.envs.maze import MazeConfig

    env = MazeConfig(size=7, n_types=3, n_per_type=1, max_steps=8)
    state = build_agent("rcnn", env.obs_shape, 4).state_dict()
    cfg = SimpleNamespace(seeds=[0], agent=SimpleNamespace(arch="rcnn"), env=env)
    strata = plane_strata(cfg, SimpleNamespace(ma={0: "ma0"}), {"ma0": state})
    assert list(strata) == ["conv1.weight"] and strata["conv1.weight"][:, 3].eq(3).all()
    # No layer that reads planes (another env family): no second chance level, rather than a wrong one.
    other = SimpleNamespace(seeds=[0], agent=SimpleNamespace(arch="rcnn"), env=SimpleNamespace(family="minigrid"))
    assert plane_strata(other, SimpleNamespace(ma={0: "ma0"}), {"ma0": state}) is None


def test_a_reward_that_pays_for_every_type_has_no_preference_to_print(capsys):
    """A positive mixture pays for every type, so "rewarded objects minus the others" has no others: the line says
    so instead of printing "+nan"."""
    from goalscope.cli.experiment import _print_competence

    comp = {"MB[0.5,1]": {"reward": "0.5,1", "preference": [math.nan, math.nan, math.nan], "passes": True,
                          "verdict": "94.9% of the oracle (bar 85%)"},
            "MA": {"reward": "collect:0", "preference": [0.38, 0.18, 0.57], "passes": True, "verdict": "ok"}}
    _print_competence({"competence": comp})
    out = capsys.readouterr().out
    assert "nan" not in out and "preference - (pays for every type)" in out and "+0.38 [+0.18, +0.57]" in out
