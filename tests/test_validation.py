import math

import numpy as np
import pytest
import torch

from goalscope.agents import PlannerAgent, build_agent, objective_parameters
from goalscope.config import experiment_from_dict
from goalscope.executors import LocalExecutor
from goalscope.runner import run_experiment
from goalscope.signals import add_masked, topk_mask, update_signal
from goalscope.validation import auroc, jaccard, precision_at_k, run_validation, smallest_k, verdict

from test_experiment import TINY


def test_auroc_perfect_random_and_ties():
    rng = np.random.default_rng(0)
    labels = rng.random(20_000) < 0.05
    assert auroc(labels.astype(float) + 0.1 * rng.random(20_000), labels) == 1.0
    assert auroc(-labels.astype(float), labels) == 0.0
    assert abs(auroc(rng.random(20_000), labels) - 0.5) < 0.03
    assert auroc(np.zeros(10), np.arange(10) < 3) == 0.5  # all tied: chance, not an artefact of sort order
    assert math.isnan(auroc(np.ones(5), np.zeros(5, bool)))
    assert precision_at_k(np.arange(10.0), np.arange(10) >= 7, 3) == 1.0
    assert precision_at_k(np.arange(10.0), np.arange(10) < 3, 3) == 0.0


def test_graft_of_everything_is_mb_and_of_nothing_is_ma():
    ma = {"w": torch.randn(5, 4), "b": torch.randn(4)}
    mb = {k: v + torch.randn_like(v) for k, v in ma.items()}
    delta = update_signal(ma, mb)
    scores = {k: v.abs() for k, v in delta.items()}
    full = add_masked(ma, delta, topk_mask(scores, 1.0))
    assert all(torch.allclose(full[k], mb[k]) for k in ma)
    one = add_masked(ma, delta, topk_mask(scores, 1 / 24))
    changed = sum(int((one[k] != ma[k]).sum()) for k in ma)
    assert changed == 1


def test_small_helpers():
    a = torch.tensor([1, 1, 0, 0], dtype=torch.bool)
    assert jaccard(a, a) == 1.0 and jaccard(a, ~a) == 0.0
    assert smallest_k([0.1, 0.5, 1.0], [0.2, 0.95, 1.0]) == 0.5
    assert math.isnan(smallest_k([0.1, 1.0], [0.2, 0.5]))
    assert verdict([0.9, 0.8, 0.85], [0.5, 0.4, 0.45], [0.1, 0.2, 0.1]).startswith("localises")
    assert verdict([0.5, 0.4, 0.45], [0.9, 0.8, 0.85], [0.1, 0.2, 0.1]) == "no better than |Δ|"
    assert verdict([0.1, 0.2, 0.1], [0.9, 0.8, 0.85], [0.1, 0.2, 0.1]) == "no better than random"


def test_planner_objective_lives_in_the_reward_map():
    torch.manual_seed(0)
    model = build_agent("planner", (7, 7, 7), 4)
    assert isinstance(model, PlannerAgent)
    names = objective_parameters(model)
    assert set(names) <= set(model.state_dict()) and len(names) == 4
    assert objective_parameters(build_agent("cnn", (7, 7, 7), 4)) is None
    # The reward map is the only path from the object planes to the action: zeroing it makes the policy blind
    # to where objects are.
    obs = torch.zeros(2, 7, 7, 7)
    obs[:, 0, 0, :] = obs[:, 0, -1, :] = obs[:, 0, :, 0] = obs[:, 0, :, -1] = 1
    obs[:, 1, 3, 3] = 1
    obs[0, 2, 1, 3] = 1  # an object above the agent
    obs[1, 2, 5, 3] = 1  # ... or below it
    with torch.no_grad():
        model.reward_map2.weight.zero_()
        model.reward_map2.bias.zero_()
        logits, _ = model(obs)
    assert torch.allclose(logits[0], logits[1])


def test_validate_a_small_real_planner_run(tmp_path):
    cfg = experiment_from_dict({**TINY, "agent": {"arch": "planner", "config": {"iterations": 6}},
                                "negate": {"enabled": False}, "base": {"steps": 8192}, "finetune": {"steps": 12288},
                                "superpose": {"methods": ["mean_abs", "pca", "fisher"]}})
    out = tmp_path / "run"
    run_experiment(cfg, out, log=lambda *a: None)
    card = run_validation(cfg, out, LocalExecutor(1), episodes=48, log=lambda *a: None)
    loc = card["localisation"]["by_method"]
    assert set(loc) >= {"mean_abs", "pca", "random", "|Δ| (one RB)"}
    for method, by_n in loc.items():
        for v in by_n.values():
            assert 0.0 <= v["auroc"][0] <= 1.0
    # RBs whose fine-tune gained nothing have no defined recovery and are left out of the curves.
    assert any(g > 0 for g in card["graft"]["rb_gain"].values()), card["graft"]["rb_gain"]
    for name, c in card["graft"]["curves"].items():
        assert c[-1] == pytest.approx(1.0, abs=1e-6), name  # grafting 100% of Δ is MB itself
    assert set(card["verdicts"]) == {"mean_abs", "pca", "fisher"}
    assert (out / "scorecard.md").read_text().startswith("# Scorecard")
    assert (out / "validation.csv").exists()


def test_localisation_verdict_needs_both_baselines():
    from goalscope.validation import _loc_verdict

    by = {"|Δ| (one RB)": {1: {"auroc": [0.40, 0.38, 0.42]}}, "random": {4: {"auroc": [0.5, 0.47, 0.53]}},
          "good": {4: {"auroc": [0.7, 0.65, 0.75]}}, "below_chance": {4: {"auroc": [0.46, 0.44, 0.48]}}}
    assert _loc_verdict(by, "good", 4).startswith("localises")
    assert _loc_verdict(by, "below_chance", 4) == "above single-RB |Δ| but no better than random"
