"""Held-out tests that can succeed (issue 34): mixture RBs, the lean of any RB, role alignment, the structural prior
and the curve over the number of RBs."""

import numpy as np
import pytest
import torch

from goalscope.analysis.validate.grafts import (FISHER_NULL, PER_RB, RANDOM, graft_area, graft_tests,
                                                null_rankings, rb_targets, specific_lean, OTHER_RB_NULL)
from goalscope.analysis.validate.heldout import (ALIGNED, STRUCTURAL_PRIOR, align_roles, changed_types,
                                                 curve_rankings, curve_sizes, curve_verdict, nested_order,
                                                 one_hot_type, slope, structural_prior, summarise_curve, type_masks)
from goalscope.envs.rewards import lean_weights, mixture_family, parse_reward
from goalscope.errors import ConfigError
from goalscope.program.config import experiment_from_dict
from goalscope.rl.evaluation import Profile

from test_experiment import TINY


# ----------------------------------------------------------------------------------------------------------------
# Mixture RBs and the lean they are graded on


def test_mixture_family_is_seeded_dense_and_parses_back():
    a, b = mixture_family(5, 16, seed=3), mixture_family(5, 16, seed=3)
    assert [r.weights for r in a] == [r.weights for r in b] and len({r.weights for r in a}) == 16
    assert [r.weights for r in mixture_family(5, 16, seed=4)] != [r.weights for r in a]
    for r in a:
        w = np.asarray(r.weights)
        assert np.abs(w).max() == pytest.approx(1.0) and w[np.argmax(np.abs(w))] > 0  # pays for something
        assert parse_reward(r.name, 5).weights == r.weights  # the name is the reward
    assert sum((np.asarray(r.weights) < 0).any() for r in a) >= 8  # signed: costs to walk around, not only gains
    with pytest.raises(ConfigError, match="number of RBs must be in 1..256"):
        mixture_family(5, 0)


def test_experiment_reads_mixture_specs():
    cfg = experiment_from_dict({**TINY, "finetune": {"steps": 1024, "rewards": ["mixture:6:2"]}})
    assert [r.weights for r in cfg.rbs()] == [r.weights for r in mixture_family(3, 6, 2)]
    assert len(experiment_from_dict({**TINY, "finetune": {"steps": 1024, "rewards": ["mixture"]}}).rbs()) == 8
    with pytest.raises(ConfigError):
        experiment_from_dict({**TINY, "finetune": {"steps": 1024, "rewards": ["mixture:x"]}}).validate()


def test_lean_of_a_one_hot_rb_is_its_objects_minus_the_other_non_ra_types():
    ra = parse_reward("collect:0", 5)
    lean = lean_weights(parse_reward("collect:2", 5), ra)
    counts = np.array([[3.0, 2.0, 1.0, 0.0, 2.0], [1.0, 0.0, 4.0, 1.0, 1.0]])
    old = counts[:, 2] - counts[:, [1, 3, 4]].mean(1)  # the rule before mixtures, kept exactly
    assert specific_lean(Profile(counts, np.full(2, 8)), lean) == pytest.approx(old.mean())
    raw = rb_targets(parse_reward("collect:2", 5), ra)[1]
    assert specific_lean(Profile(counts, np.full(2, 8)), raw) == pytest.approx(counts[:, 2].mean())


def test_lean_of_a_mixture_ignores_collecting_more_of_everything():
    ra = parse_reward("collect:0", 4)
    rb = parse_reward("0.5,1,-1,0.2", 4)
    lean = lean_weights(rb, ra)
    assert lean[0] == 0 and lean.max() == pytest.approx(1.0) and lean.sum() == pytest.approx(0.0)
    base = np.array([[1.0, 1.0, 1.0, 1.0]])
    more = base + 2.0  # a general rise is not a lean
    assert specific_lean(Profile(more, np.ones(1)), lean) == pytest.approx(specific_lean(Profile(base, np.ones(1)), lean))
    toward = base + np.array([[0.0, 1.0, 0.0, 0.0]])
    assert specific_lean(Profile(toward, np.ones(1)), lean) > specific_lean(Profile(base, np.ones(1)), lean)


# ----------------------------------------------------------------------------------------------------------------
# Pieces of the curve


def test_curve_sizes_and_nested_order():
    assert curve_sizes(16) == [1, 2, 4, 8, 16] and curve_sizes(3) == [1, 2, 3] and curve_sizes(1) == [1]
    others = [f"rb{i}" for i in range(10)]
    order = nested_order(others, seed=2, rb_index=1)
    assert sorted(order) == others and order == nested_order(others, seed=2, rb_index=1)
    assert order != nested_order(others, seed=3, rb_index=1)


def test_type_masks_select_each_types_first_layer_weights():
    from goalscope.agents.registry import build_agent
    from goalscope.envs.maze import MazeConfig
    from goalscope.signals.planes import first_layer

    env = MazeConfig(size=7, n_types=5)
    for arch in ("rcnn", "cnn", "mlp"):
        state = build_agent(arch, env.obs_shape, 4).state_dict()
        masks = type_masks(first_layer(arch, state, env))
        for name, per_type in masks.items():
            t = state[name]  # one input channel of a conv (cnn adds 2 offset planes); one plane of the grid
            assert len(per_type) == 5 and int(per_type[1].sum()) == t.numel() // (t.shape[1] if t.dim() == 4 else 7), arch
            assert not (per_type[0] & per_type[1]).any()
    assert list(type_masks(first_layer("rcnn", build_agent("rcnn", env.obs_shape, 4).state_dict(), env))) == ["conv1.weight"]


def test_align_roles_swaps_two_type_slices_and_nothing_else():
    channel = torch.arange(5).view(1, 5, 1, 1).expand(2, 5, 1, 1)
    slices = {"conv1.weight": [channel == p for p in (2, 3, 4)]}
    d = {"conv1.weight": torch.arange(2 * 5 * 1 * 1, dtype=torch.float32).reshape(2, 5, 1, 1), "b": torch.ones(3)}
    out = align_roles(d, slices, src=0, dst=2)
    assert torch.equal(out["conv1.weight"][:, 2], d["conv1.weight"][:, 4])
    assert torch.equal(out["conv1.weight"][:, 4], d["conv1.weight"][:, 2])
    assert torch.equal(out["conv1.weight"][:, [0, 1, 3]], d["conv1.weight"][:, [0, 1, 3]]) and out["b"] is d["b"]
    assert not torch.equal(out["conv1.weight"], d["conv1.weight"])  # the input itself is not modified in place ...
    assert torch.equal(d["conv1.weight"][:, 2], torch.tensor([[[2.0]], [[7.0]]]))  # ... as checked here


def test_structural_prior_ranks_the_own_slice_first():
    channel = torch.arange(4).view(1, 4, 1, 1).expand(4, 4, 3, 3)
    slices = {"conv1.weight": [channel == p for p in (2, 3)]}
    like = {"conv1.weight": torch.zeros(4, 4, 3, 3), "fc": torch.zeros(50)}
    prior = structural_prior(like, slices, own=1, gen=torch.Generator().manual_seed(0))
    assert prior["conv1.weight"][:, 3].min() >= 1 > prior["conv1.weight"][:, [0, 1, 2]].max()
    assert prior["fc"].max() < 1


def test_a_mixtures_prior_ranks_every_slice_it_revalues_first():
    ra = parse_reward("collect:0", 4)
    assert changed_types(parse_reward("0.5,1,-1,0", 4), ra) == [0, 1, 2]
    channel = torch.arange(6).view(1, 6, 1, 1).expand(3, 6, 3, 3)
    slices = {"conv1.weight": [channel == 2 + t for t in range(4)]}
    prior = structural_prior({"conv1.weight": torch.zeros(3, 6, 3, 3)}, slices, [0, 1, 2], torch.Generator().manual_seed(1))
    assert prior["conv1.weight"][:, 2:5].min() >= 1 > prior["conv1.weight"][:, [0, 1, 5]].max()


def test_one_hot_type():
    ra = parse_reward("collect:0", 4)
    assert one_hot_type(parse_reward("collect:2", 4), ra) == 2
    assert one_hot_type(parse_reward("collect:0+collect:3", 4), ra) == 3  # composite
    assert one_hot_type(parse_reward("0.5,1,-1,0.2", 4), ra) is None  # a mixture has no one slice


# ----------------------------------------------------------------------------------------------------------------
# A planted one-hot world: each type's objective sits in its own input slice with one shared within-slice pattern


def _plane_world(seed: int, n_types: int = 5, out_ch: int = 6):
    """MA and one MB per one-hot RB over a toy first layer (out, 2 + K, 3, 3). RB_k's update writes a fixed
    within-plane pattern (the same for every type: which units and taps carry a type's value) into plane 2+k, plus
    drift everywhere; the agent's type-k collection rises with the update on exactly that pattern."""
    rng = np.random.default_rng(seed)
    shape = (out_ch, 2 + n_types, 3, 3)
    pattern = np.zeros((out_ch, 3, 3), bool)
    pattern.flat[rng.choice(pattern.size, 6, replace=False)] = True
    ma = {"conv1.weight": torch.zeros(shape)}

    def fine_tune(k):
        d = 0.05 * rng.standard_normal(shape)
        d[:, 2 + k][pattern] += 1.0
        return {"conv1.weight": ma["conv1.weight"] + torch.tensor(d, dtype=torch.float32)}

    mbs = {f"collect:{k}": fine_tune(k) for k in range(1, n_types)}

    def evaluate(state):
        w = (state["conv1.weight"] - ma["conv1.weight"]).numpy()
        counts = np.ones((4, n_types))
        for k in range(1, n_types):
            counts[:, k] += w[:, 2 + k][pattern].mean()
        return Profile(counts, np.full(4, 16))

    channel = torch.arange(2 + n_types).view(1, -1, 1, 1).expand(shape)
    return ma, mbs, evaluate, {"conv1.weight": [channel == 2 + t for t in range(n_types)]}


def _curve_parts(seed: int):
    ma, mbs, evaluate, slices = _plane_world(seed)
    ra = parse_reward("collect:0", 5)
    names = list(mbs)
    deltas = {r: {k: mbs[r][k] - ma[k] for k in ma} for r in names}
    types = {r: one_hot_type(parse_reward(r, 5), ra) for r in names}
    fisher = {"conv1.weight": torch.ones_like(ma["conv1.weight"])}
    parts = []
    for i, rb in enumerate(names):
        order = nested_order([r for r in names if r != rb], seed, i)
        ranked = curve_rankings(rb, order, deltas, curve_sizes(len(order)), ["mean_abs"], [], fisher,
                                torch.Generator().manual_seed(seed), slices, types)
        labels = {f"{n}|{name}": s for (n, name), s in ranked.items()}
        res = graft_tests(ma, {rb: mbs[rb]}, {rb: labels}, evaluate, {rb: rb_targets(parse_reward(rb, 5), ra)},
                          lambda p: 1.0, ablation_fractions=())
        parts.append({"seed": seed, "rb": rb, "gain": res["graft"][rb]["gain"], "sizes": curve_sizes(len(order)),
                      "area": {lab: graft_area(c) for lab, c in res["graft"][rb]["lean"].items()}})
    return parts


def test_role_alignment_lets_a_one_hot_held_out_test_succeed_and_the_prior_is_the_bar():
    parts = [p for s in range(5) for p in _curve_parts(s)]
    curve = summarise_curve(parts, list(range(5)))
    top = curve["sizes"][-1]
    plain, aligned = curve["methods"]["mean_abs"][top][0], curve["methods"]["mean_abs" + ALIGNED][top][0]
    # Heatmaps from other types point at their own planes: grafting Δ_i through them recovers ~nothing ...
    assert plain < 0.2
    # ... aligned to RB_i's type they point at the shared within-plane pattern and recover most of the lean,
    assert aligned > 0.6
    # ... which knowing only the plane (random inside it) does not: the pattern transfers, beyond the prior.
    assert curve["nulls"][STRUCTURAL_PRIOR][0] < aligned - 0.2
    verdicts = {m: t["verdict"] for m, t in curve["tests"].items()}
    assert verdicts["mean_abs" + ALIGNED].startswith("transfers its pattern (beats the structural prior)")
    assert not verdicts["mean_abs"].startswith("transfers")
    assert curve["ceiling"][PER_RB][0] > 0.6  # |Δ_i| itself (its smallest k picks no weight of 378)


def test_summarise_curve_says_whether_a_method_rises_with_the_number_of_rbs():
    parts = []
    for s in range(5):
        for rb in ("a", "b"):
            area = {f"{n}|m": 0.1 + 0.1 * np.log2(n) + 0.01 * s for n in (1, 2, 4, 8)}
            area.update({f"{n}|flat": 0.3 + 0.01 * ((s + n) % 3) for n in (1, 2, 4, 8)})
            area.update({f"0|{RANDOM}": 0.05 + 0.01 * s, f"0|{FISHER_NULL}": 0.2 - 0.01 * s, f"0|{PER_RB}": 0.9})
            parts.append({"seed": s, "rb": rb, "gain": 1.0, "sizes": [1, 2, 4, 8], "area": area})
    curve = summarise_curve(parts, list(range(5)))
    assert curve["rises"]["m"]["verdict"].startswith("rises with #RBs")
    assert curve["rises"]["m"]["slope_per_doubling"][0] == pytest.approx(0.1)
    assert curve["rises"]["flat"]["verdict"].startswith("not shown to rise")
    assert slope([1, 2, 4], [0.1, float("nan"), 0.3]) == pytest.approx(0.1)


def test_curve_verdict_does_not_call_a_holm_failure_no_better():
    tests = [{"null": RANDOM, "seeds": 3, "diff": [0.4, 0.08, 0.8], "p": 0.03, "p_holm": 0.09, "beaten": False},
             {"null": FISHER_NULL, "seeds": 3, "diff": [0.0, -0.3, 0.3], "p": 0.5, "p_holm": 0.5, "beaten": False}]
    v = curve_verdict(tests, 4)
    assert "not shown above random after Holm (raw p 0.03)" in v and f"not above {FISHER_NULL} after Holm" in v


def test_another_rbs_mask_is_capped_for_large_families():
    deltas = {f"rb{i}": {"w": torch.full((4,), float(i))} for i in range(10)}
    r = null_rankings("rb8", deltas, [], {"w": torch.ones(4)}, torch.Generator().manual_seed(0))
    assert [float(m["w"][0]) for m in r[OTHER_RB_NULL]] == [9.0, 0.0, 1.0, 2.0]


def test_the_report_draws_the_held_out_curve_beside_its_nulls():
    from matplotlib.figure import Figure
    from matplotlib import colormaps

    from goalscope.report.figures_validation import _held_out_panel

    parts = [p for s in range(3) for p in _curve_parts(s)]
    curve = summarise_curve(parts, list(range(3)))
    ax = Figure().subplots()
    rows = _held_out_panel(ax, curve, colormaps["tab10"])
    drawn = {r["ranking"] for r in rows}
    assert {"mean_abs", "mean_abs" + ALIGNED, STRUCTURAL_PRIOR, RANDOM, PER_RB} <= drawn
    assert [r["x"] for r in rows if r["ranking"] == "mean_abs"] == [1.0, 2.0, 3.0]
    assert len(ax.get_legend_handles_labels()[1]) == len(drawn)


def test_shared_curve_leaves_out_exactly_what_validation_already_grades():
    ma, mbs, _, slices = _plane_world(0)
    ra = parse_reward("collect:0", 5)
    deltas = {r: {k: mbs[r][k] - ma[k] for k in ma} for r in mbs}
    types = {r: one_hot_type(parse_reward(r, 5), ra) for r in mbs}
    order = [r for r in mbs if r != "collect:1"]
    args = ("collect:1", order, deltas, curve_sizes(3), ["mean_abs"], [{"conv1.weight": torch.ones(6, 7, 3, 3)}],
            {"conv1.weight": torch.ones(6, 7, 3, 3)}, torch.Generator().manual_seed(0), slices, types)
    full, shared = set(curve_rankings(*args)), set(curve_rankings(*args, shared=True))
    from goalscope.analysis.validate.grafts import CONTROL_NULL

    assert full - shared == {(0, PER_RB), (0, RANDOM), (0, FISHER_NULL), (0, CONTROL_NULL), (3, "mean_abs")}
    assert (0, STRUCTURAL_PRIOR) in shared and (3, "mean_abs" + ALIGNED) in shared


def test_validate_runs_the_curve_on_a_small_real_mixture_run(tmp_path):
    from goalscope.analysis.effects.experiment import run_experiment
    from goalscope.analysis.validate.entry import comparison_types
    from goalscope.analysis.validate.validation import run_validation
    from goalscope.program.executors import LocalExecutor

    cfg = experiment_from_dict({**TINY, "finetune": {"steps": 1024, "rewards": ["mixture:4"]}, "negate": {"enabled": False},
                                "superpose": {"methods": ["mean_abs", "ties"]}})
    rb = cfg.rbs()[0]
    assert comparison_types(cfg.ra, rb) == [rb.target_type(cfg.ra)]  # a mixture moves every plane's value
    run_experiment(cfg, tmp_path / "run", log=lambda *a: None)
    card = run_validation(cfg, tmp_path / "run", LocalExecutor(1), episodes=8, log=lambda *a: None, test_rbs=2)
    assert card["graded_rbs"] == [r.name for r in cfg.rbs()[:2]]
    assert set(card["graft"]["rb_gain"]) == set(card["graded_rbs"])  # only the graded RBs get graft studies
    curve = card["held_out_curve"]
    assert curve["sizes"] == [1, 2, 3] and len(curve["graded"]) + len(curve["no_gain"]) == 2 * 2
    # A mixture has no one slice to align; its structural prior ranks every type slice it revalues first.
    assert STRUCTURAL_PRIOR in curve["nulls"] and not any(m.endswith(ALIGNED) for m in curve["methods"])
    assert isinstance(card["input_planes"], str) and "mixture" in card["input_planes"]
    assert "Held-out heatmaps as the number of RBs grows" in (tmp_path / "run" / "scorecard.md").read_text()


def test_positive_mixtures_only_reweight_what_to_collect():
    cfg = experiment_from_dict({**TINY, "finetune": {"steps": 1024, "rewards": ["mixture+:5:1"]}})
    ws = np.array([r.weights for r in cfg.rbs()])
    assert ws.shape == (5, 3) and (ws >= 0).all() and np.allclose(ws.max(1), 1.0)
    assert [tuple(w) for w in ws] == [r.weights for r in mixture_family(3, 5, 1, positive=True)]
    assert not (ws == np.array([r.weights for r in mixture_family(3, 5, 1)])).all()


def test_a_held_out_heatmap_above_every_graft_null_is_sent_to_the_structural_prior():
    from goalscope.analysis.validate.grafts import CONTROL_NULL, HELD_OUT, NULLS
    from goalscope.analysis.validate.validation import ladder_label

    v = ladder_label(list(NULLS), [], "mean_abs" + HELD_OUT)
    assert v.startswith("above every graft null") and "structural prior" in v  # not "objective locus shared"
    assert ladder_label(list(NULLS), [], PER_RB) == "RB-specific" and CONTROL_NULL in NULLS
