"""Issue 35: a planted truth must drive behaviour (the causal gate), and localisation is scored so that sensitivity
cannot pass by construction (within Fisher strata, never-moved entries left out, RB-agnostic baselines).

The gate is tested on two hand-set value-iteration planners that differ only in whether Q reads the reward map:
the one that uses it must pass, the one whose map is disconnected must fail.
"""

import math

import numpy as np
import pytest
import torch

from goalscope.agents.layers import NEIGHBOURHOOD
from goalscope.agents.registry import build_agent, objective_mask, objective_type_axes
from goalscope.analysis.validate import causal, planted
from goalscope.analysis.validate.ranking import auroc, quantile_strata, stratified_auroc
from goalscope.envs.maze import MazeConfig
from goalscope.envs.rewards import parse_reward
from goalscope.rl.evaluation import evaluate
from goalscope.signals import delta as sig

ENV = MazeConfig(size=7, n_types=5, n_per_type=1, max_steps=32, layout="maze", loop_prob=0.2, pool_size=64)


# -- the causal gate -----------------------------------------------------------------------------------------


def hand_planner(uses_map: bool):
    """A planner that plans by hand: r = 1 on type-0 cells; Q_a(cell) = r + 0.9 V at the neighbour in action a's
    direction (the env's order: up, right, down, left); the policy is 50 Q at the agent. With ``uses_map`` False
    the transition's weights on r are 0: the map is disconnected and the agent wanders."""
    model = build_agent("planner", ENV.obs_shape, 4, {"reward_hidden": 1, "q_channels": 4})
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.reward_map1.weight[0, 0] = 1.0
        model.reward_map2.weight[0, 0] = 1.0
        for a, (dr, dc) in enumerate(NEIGHBOURHOOD[1:]):
            model.transition.weight[a, 0, 1 + dr, 1 + dc] = 1.0 if uses_map else 0.0
            model.transition.weight[a, 1, 1 + dr, 1 + dc] = 0.9
        model.policy.weight.copy_(50 * torch.eye(4))
    return model


def gate_of(model, seeds=(0, 1, 2), episodes=64):
    reward = parse_reward("collect:0", 5)
    mask, axes = objective_mask(model), objective_type_axes(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    per_seed = []
    for s in seeds:
        def collect(st, s=s):
            model.load_state_dict(st)
            return float(evaluate(model, ENV, reward, episodes, 1000 + s).counts[:, 0].mean())

        per_seed.append({"MA": causal.model_effects(state, mask, axes, reward.rewarded_types(), 5, collect, s, draws=2)})
    model.load_state_dict(state)
    return causal.gate(per_seed)


def test_the_gate_passes_a_planner_that_uses_its_map():
    g = gate_of(hand_planner(True))
    assert g["passed"], g["text"]
    by_edit = {t["edit"]: t for t in g["tests"]}
    assert set(by_edit) == {causal.ZERO, causal.PERMUTE}
    # The planner collects type 0 well; zeroing its map or swapping types 0 and 1 takes most of that away.
    assert by_edit[causal.ZERO]["base"] > 0.6 and by_edit[causal.ZERO]["planted"] < 0.5 * by_edit[causal.ZERO]["base"]
    assert by_edit[causal.PERMUTE]["planted"] < 0.5 * by_edit[causal.PERMUTE]["base"]
    assert by_edit[causal.PERMUTE]["size"] == 2  # the two swapped columns of a one-unit reward map
    assert "drives behaviour" in g["text"] and "NOT" not in g["text"]


def test_the_gate_fails_a_planner_whose_map_is_disconnected():
    g = gate_of(hand_planner(False))
    assert not g["passed"]
    assert all(not t["passed"] for t in g["tests"])
    assert causal.NOT_A_TEST in g["text"]
    lines = "\n".join(causal.gate_markdown(g))
    assert "**Not passed:**" in lines and "| MA | zero |" in lines


def test_an_mb_that_still_values_mas_type_is_swapped_with_another():
    """Fine-tuning MA (collect:0) on collect:1 adds type 1 to the map more than it removes type 0: swapping 1 with
    0 would hand type 1 a slice that still pays. The MB's partner skips MA's type, so the edit removes the lean."""
    model = hand_planner(True)
    with torch.no_grad():
        model.reward_map1.weight[0, 1] = 1.0  # the MB values types 0 and 1 alike
    reward = parse_reward("collect:1", 5)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    def collect(st):
        model.load_state_dict(st)
        return float(evaluate(model, ENV, reward, 64, 7).counts[:, 1].mean())

    kept = causal.model_effects(state, objective_mask(model), objective_type_axes(model), [1], 5, collect, 0, draws=1)
    moved = causal.model_effects(state, objective_mask(model), objective_type_axes(model), [1], 5, collect, 0, draws=1,
                                 avoid=[0])
    assert kept[causal.PERMUTE]["permutation"][1] == 0 and moved[causal.PERMUTE]["permutation"][1] == 2
    assert moved[causal.PERMUTE]["effect"] > kept[causal.PERMUTE]["effect"] + 0.2, (kept, moved)


def test_edits_and_the_permutation():
    assert causal.swap_permutation(5, [0]) == [1, 0, 2, 3, 4]
    assert causal.swap_permutation(5, [0, 3]) == [1, 0, 3, 2, 4]  # each rewarded type reads an unrewarded one
    assert causal.swap_permutation(2, [0, 1]) is None
    assert causal.swap_permutation(5, [1], avoid=[0]) == [0, 2, 1, 3, 4]  # an MB's partner is never MA's type
    assert causal.swap_permutation(2, [1], avoid=[0]) == [1, 0]  # ... unless nothing else is left
    state = {"w": torch.arange(12.0).view(2, 6), "b": torch.ones(3)}
    edited, moved = causal.permute_edit(state, {"w": 1}, [1, 0, 2])
    assert edited["w"][:, :3].tolist() == [[1, 0, 2], [7, 6, 8]] and edited["w"][:, 3:].equal(state["w"][:, 3:])
    assert int(moved["w"].sum()) == 4
    gen = torch.Generator().manual_seed(0)
    outside = {"w": torch.zeros(2, 6, dtype=torch.bool), "b": torch.ones(3, dtype=torch.bool)}
    r = causal.random_mask(state, 5, outside, gen)
    assert int(r["w"].sum()) == 5 and not r["b"].any()  # drawn only outside the planted part
    rot = causal.rotate_edit(state, r, gen)
    assert (rot["w"][r["w"]] != state["w"][r["w"]]).all()  # every entry moved
    assert sorted(rot["w"][r["w"]].tolist()) == sorted(state["w"][r["w"]].tolist())
    with pytest.raises(ValueError):
        causal.random_mask(state, 13, outside, gen)
    assert causal.zero_edit(state, {"b": torch.tensor([True, False, True])})["b"].tolist() == [0, 1, 0]


def test_the_gate_needs_every_model_and_edit_and_two_seeds():
    def run(effect):
        return {"base": 1.0, "skipped": {}, causal.ZERO: {"planted": 0.5, "random": 0.5 + effect, "effect": effect,
                                                          "size": 3}}

    ok = [{"MA": run(0.3 + 0.01 * s), "MB collect:1": run(0.2 + 0.02 * s)} for s in range(3)]
    g = causal.gate(ok)
    assert g["passed"] and len([t for t in g["tests"] if "skipped" not in t]) == 2
    bad = [{"MA": run(0.3 + 0.01 * s), "MB collect:1": run(0.01 * (s - 1))} for s in range(3)]
    g = causal.gate(bad)
    assert not g["passed"] and "MB collect:1 (zero)" in g["text"]
    assert not causal.gate(ok[:1])["passed"]  # one seed: no t test, so no pass
    assert causal.one_sided([0.1, 0.2, 0.3])["lower"] < 0.2 < causal.one_sided([0.1, 0.2, 0.3])["mean"] + 1e-9


# -- scoring that sensitivity cannot pass ----------------------------------------------------------------------


def _sensitive_labels(n=6000, seed=0):
    """Fisher spread over decades; the planted labels sit mostly where Fisher is high (as on the needle)."""
    rng = np.random.default_rng(seed)
    fisher = rng.lognormal(0, 2, n)
    p = 1 / (1 + np.exp(-(np.log(fisher) - 3)))
    return fisher, rng.random(n) < p, rng


def test_a_score_equal_to_fisher_is_at_chance_within_strata():
    fisher, labels, rng = _sensitive_labels()
    strata = quantile_strata(fisher, 50)
    assert auroc(fisher, labels) > 0.85  # plain: sensitivity passes
    within, used, pos = stratified_auroc(fisher, labels, strata)
    assert abs(within - 0.5) < 0.06, within  # matched on sensitivity: no better than chance
    assert 10 <= used <= 50 and 0 < pos <= labels.sum()
    # A score that knows the labels beyond Fisher stays high within strata; a random one sits at chance.
    knows = labels + 0.5 * rng.random(len(labels))
    assert stratified_auroc(knows, labels, strata)[0] == 1.0
    assert abs(stratified_auroc(rng.random(len(labels)), labels, strata)[0] - 0.5) < 0.06


def test_quantile_strata_keep_ties_together():
    v = np.array([0, 0, 0, 0, 0, 0, 1, 2, 3, 4.0])
    s = quantile_strata(v, 5)
    assert len(set(s[:6])) == 1 and s.max() <= 4 and (np.diff(s[np.argsort(v, kind="stable")]) >= 0).all()
    # A stratum with only positives (or only negatives) compares nothing and is left out.
    assert stratified_auroc(np.arange(4.0), np.array([1, 1, 0, 1], bool), np.array([0, 0, 1, 1]))[1:] == (1, 1)


def test_never_moved_entries_are_left_out_on_both_sides():
    labels = np.zeros(100, bool)
    labels[:10] = True
    score = np.r_[np.linspace(1, 2, 10), np.zeros(30), np.linspace(0.5, 3, 60)]  # 30 never-moved negatives at 0
    updates = [{"w": torch.tensor(score)}]
    moved = ~planted.never_moved(updates)
    assert int((~moved).sum()) == 30
    a_plain, _, _, a_moved, within = planted.score(score, labels, moved=moved)
    assert a_plain > a_moved  # never-moved negatives at the bottom flatter every update-based ranking
    assert a_moved == pytest.approx(auroc(score[moved], labels[moved])) and math.isnan(within)


def test_the_rb_agnostic_baselines():
    ma = {"a": torch.tensor([1.0, -2.0]), "b": torch.tensor([[0.5]])}
    init = {"a": torch.tensor([0.5, -2.0]), "b": torch.tensor([[1.5]])}
    fisher = {"a": torch.tensor([2.0, 0.1]), "b": torch.tensor([[4.0]])}
    deltas = {"r": {k: torch.zeros_like(v) for k, v in ma.items()}}
    nulls = planted.null_rankings(deltas, [], fisher, torch.Generator().manual_seed(0), ma, init)
    assert nulls[planted.THETA]["a"].tolist() == [1.0, 2.0]
    assert nulls[planted.FROM_INIT]["a"].tolist() == [0.5, 0.0] and nulls[planted.FROM_INIT]["b"].item() == 1.0
    assert nulls[planted.FISHER_THETA]["a"].tolist() == pytest.approx([2.0, 0.4]) and nulls[planted.FISHER_THETA]["b"].item() == 1.0
    # Without the inputs they are absent, never faked.
    assert planted.FROM_INIT not in planted.null_rankings(deltas, [], fisher, torch.Generator(), ma, None)
    assert not set(planted.AGNOSTIC) & set(planted.null_rankings(deltas, [], None, torch.Generator()))


def test_the_init_validation_rebuilds_is_the_one_training_started_from(monkeypatch):
    from goalscope.rl import ppo

    seen = {}
    real = ppo.train

    def spy(model, *a, **k):
        seen.update({n: v.detach().clone() for n, v in model.state_dict().items()})
        return real(model, *a, **k)

    monkeypatch.setattr(ppo, "train", spy)
    small = MazeConfig(size=5, n_types=2, n_per_type=1, max_steps=8, pool_size=8)
    cfg = ppo.PPOConfig(total_steps=64, n_envs=8, n_steps=8, epochs=1, minibatch_size=32, eval_episodes=4)
    ck = ppo.train_new("needle_planner", {"iterations": 2}, small, parse_reward("collect:0", 2), cfg, 7)
    rebuilt = ppo.initial_model(ck.arch, ck.arch_config, ck.env, ck.seed).state_dict()
    assert all(torch.equal(rebuilt[n], seen[n]) for n in seen)
    other = ppo.initial_model(ck.arch, ck.arch_config, ck.env, ck.seed + 1).state_dict()
    assert not all(torch.equal(other[n], seen[n]) for n in seen)


def test_seed_scores_reads_every_score_three_ways_with_the_baselines():
    g = torch.Generator().manual_seed(0)
    like = {"w": torch.zeros(400), "m": torch.zeros(20)}
    labels = sig.flatten({"w": torch.zeros(400, dtype=torch.bool), "m": torch.ones(20, dtype=torch.bool)}).numpy()
    deltas = {f"r{i}": {"w": torch.randn(400, generator=g) * 0.1, "m": torch.randn(20, generator=g)} for i in range(3)}
    for d in deltas.values():
        d["w"][:50] = 0  # never moved by any fine-tune
    fisher = {"w": torch.rand(400, generator=g) + 1, "m": torch.rand(20, generator=g) + 1}
    ma = {k: torch.randn(v.shape, generator=g) for k, v in like.items()}
    info: dict = {}
    res, _ = planted.seed_scores(deltas, [], fisher, ["mean_abs"], labels, sizes=(1, 2), ma=ma, init=ma, info=info)
    assert {planted.THETA, planted.FROM_INIT, planted.FISHER_THETA} <= {name for name, _ in res}
    assert all(len(r) == 5 for rs in res.values() for r in rs)
    assert info["never_moved"] == 50 and info["never_moved_positives"] == 0 and info["strata"] >= 10
    by = planted.summarise([res, res])
    assert "auroc_strata" in by["mean_abs"][2] and by["mean_abs"][2]["auroc_strata"][0] > 0.9
    assert abs(by[planted.FISHER][1]["auroc_strata"][0] - 0.5) < 0.2


def _e(a, per_seed):
    return {"auroc": [a, a - 0.1, a + 0.1], "per_seed_auroc": per_seed, "auroc_strata": [a, a - 0.02, a + 0.02],
            "per_seed_auroc_strata": per_seed}


def test_goal_within_strata_needs_the_gate_every_baseline_and_a_rise():
    base = {b: {1: _e(0.6, [0.6, 0.61, 0.59]), 8: _e(0.6, [0.6, 0.61, 0.59])} for b in planted.BASELINES}
    by = {**base, "ties": {1: _e(0.8, [0.8, 0.79, 0.81]), 8: _e(0.97, [0.97, 0.96, 0.98])}}
    passed, failed = {"passed": True}, {"passed": False}
    g = planted.goal_within_strata(by, passed)
    assert g["met"] and g["best"] == "ties" and g["n"] == 8 and g["rise_lower"] > 0, g["text"]
    assert not planted.goal_within_strata(by, failed)["met"] and "NOT passed" in planted.goal_within_strata(by, failed)["text"]
    assert not planted.goal_within_strata(by, None)["met"]
    by[planted.FROM_INIT] = {1: _e(0.9, [0.9] * 3), 8: _e(0.9, [0.9, 0.91, 0.89])}  # a baseline within 0.10
    assert not planted.goal_within_strata(by, passed)["met"]
    del by[planted.FROM_INIT]  # a baseline not run: "not tested", and the goal is not met
    g = planted.goal_within_strata(by, passed)
    assert not g["met"] and planted.FROM_INIT in g["untested"]
    by = {**base, "ties": {1: _e(0.97, [0.97, 0.96, 0.98]), 8: _e(0.96, [0.96, 0.97, 0.95])}}
    assert not planted.goal_within_strata(by, passed)["met"]  # no rise with more RBs


def test_the_localisation_section_marks_a_failed_gate():
    by = {planted.SINGLE: {1: _e(0.6, [0.6])}, "ties": {1: _e(0.9, [0.9])}}
    gate = causal.gate([{"MA": {"base": 1.0, "skipped": {}, causal.ZERO: {"planted": 1.0, "random": 1.0,
                                                                          "effect": 0.0, "size": 3}}}] * 2)
    loc = {"positives": 29, "parameters": 7290, "by_method": by, "nulls": list(planted.BASELINES),
           "causal_gate": gate, "strata_info": [{"never_moved": 5, "never_moved_positives": 0, "strata": 40,
                                                 "positives_in_strata": 20, "positives_moved": 22}],
           "goal_strata": planted.goal_within_strata(by, gate)}
    text = "\n".join(planted.localisation_markdown(loc, {}))
    assert text.index("causal gate") < text.index("## Localisation")
    assert f"Every table below is {causal.NOT_A_TEST}" in text
    assert "| AUROC within Fisher strata | 1 RB |" in text and "| ties | 0.900 [0.880, 0.920] |" in text
    assert "strata holding both classes per seed 40" in text and "causal gate NOT passed" in text


def test_the_rb_agnostic_baselines_are_drawn_as_nulls(tmp_path):
    from goalscope.report.figures_planted import curve_rows, fig_superposition_curve

    by = {"ties": {1: _e(0.7, [0.7]), 2: _e(0.8, [0.8])}, **{b: {1: _e(0.6, [0.6])} for b in planted.BASELINES}}
    rows = curve_rows({"by_method": by})
    assert {r["heatmap"] for r in rows if r["null"]} == set(planted.BASELINES)
    card = {"localisation": {"positives": 29, "parameters": 7290, "by_method": by}}
    assert fig_superposition_curve(card, tmp_path) is not None


def test_the_report_shows_the_gate_and_the_stratified_column():
    from goalscope.report.figures_planted import localisation_html

    by = {"ties": {8: _e(0.9, [0.9])}, planted.FISHER: {8: {"auroc": [0.95, 0.9, 1.0]}}}
    gate = {"passed": False, "text": f"the planted objective is NOT shown to drive behaviour; {causal.NOT_A_TEST}"}
    html = localisation_html({"by_method": by, "causal_gate": gate, "n_strata": 50})
    assert "Causal gate NOT passed" in html and causal.NOT_A_TEST in html and "within 50 Fisher strata" in html
    assert "0.900 [0.880, 0.920]" in html and "—" in html  # Fisher's row has no stratified reading: a dash, not 0


def test_a_baseline_is_never_the_best_method_of_either_goal():
    by = {planted.SINGLE: {8: _e(0.5, [0.5, 0.5])}, planted.FISHER_THETA: {8: _e(0.99, [0.99, 0.99])},
          "ties": {1: _e(0.6, [0.6, 0.6]), 8: _e(0.8, [0.8, 0.81])}}
    assert planted.goal(by)["best"] == "ties"
    assert planted.goal_within_strata(by, {"passed": True})["best"] == "ties"
