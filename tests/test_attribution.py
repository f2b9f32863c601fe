"""Attribution of a behaviour change (issue 25 item 2): integrated gradients of KL(π_MB ‖ π_θ) along MA -> MB.

Completeness on a real architecture, a synthetic case whose answer is known in closed form, the aggregators fed IG
maps, and the per-(seed, RB) cache in a run. That ``validate`` scores it on a tiny real run is checked in
tests/test_validation.py (test_validate_a_small_real_planner_run).
"""

import math

import numpy as np
import pytest
import torch
from torch import nn

from goalscope.agents.registry import build_agent
from goalscope.analysis.validate import planted
from goalscope.errors import GoalscopeError
from goalscope.signals import aggregators as agg
from goalscope.signals.attribution import attribution_heatmap, integrated_gradients, policy_kl


def _obs(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 7, 7, 7, generator=g) < 0.2).float()


def test_completeness_attributions_sum_to_the_change_in_kl():
    torch.manual_seed(0)
    model = build_agent("needle_planner", (7, 7, 7), 4, {"iterations": 4})
    a = {k: v.detach().clone() for k, v in model.state_dict().items()}
    b = {k: v + 0.1 * torch.randn_like(v) for k, v in a.items()}
    ig, info = integrated_gradients(model, a, b, _obs(64), steps=16)
    assert set(ig) == set(a) and all(ig[k].shape == a[k].shape for k in a)
    assert info["l_end"] == pytest.approx(0.0, abs=1e-6) and info["l_start"] > 1e-3
    # Σ IG = L(MB) − L(MA) = −KL(π_MB ‖ π_MA), to the midpoint rule's error.
    assert info["sum"] == pytest.approx(info["l_end"] - info["l_start"], rel=0.03)
    assert float(sum(v.sum() for v in ig.values())) == pytest.approx(info["sum"], rel=1e-5)
    # More points tighten it; a target other than the end point is honoured too.
    ig4, info4 = integrated_gradients(model, a, b, _obs(64), steps=2)
    assert abs(info["sum"] + info["l_start"]) <= abs(info4["sum"] + info4["l_start"]) + 1e-6
    _, info_t = integrated_gradients(model, a, b, _obs(64), target=a, steps=8)
    assert info_t["l_start"] == pytest.approx(0.0, abs=1e-6) and info_t["sum"] == pytest.approx(info_t["l_end"], rel=0.05)


class _TwoHeads(nn.Module):
    """logits = [θ_policy, 0] whatever the observation; a value head the policy never reads."""

    def __init__(self):
        super().__init__()
        self.policy = nn.Parameter(torch.zeros(1))
        self.value = nn.Parameter(torch.zeros(1))

    def forward(self, obs):
        b = obs.shape[0]
        logits = torch.cat([self.policy.expand(b, 1), torch.zeros(b, 1)], 1)
        return logits, self.value.expand(b)


def test_known_answer_moved_but_behaviour_free_parameters_get_nothing():
    """Δ moves the value head ten times more than the policy logit; the behaviour change is the policy's alone.
    With one behaviour parameter, IG on it is exactly L(end) − L(start) (closed form below), 0 on the value head:
    |IG| ranks the policy first, |Δ| ranks the value head first."""
    model = _TwoHeads()
    a = {"policy": torch.tensor([0.0]), "value": torch.tensor([0.0])}
    b = {"policy": torch.tensor([0.3]), "value": torch.tensor([3.0])}
    ig, info = integrated_gradients(model, a, b, torch.zeros(5, 1), steps=32)
    assert float(ig["value"]) == 0.0
    p = 1 / (1 + math.exp(-0.3))  # π_MB(action 0); π_MA is uniform
    kl = p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5)
    assert info["l_start"] == pytest.approx(kl, rel=1e-5)
    assert float(ig["policy"]) == pytest.approx(-kl, rel=1e-3)
    heat = attribution_heatmap(ig)
    assert heat["policy"] > heat["value"] and (b["value"] - a["value"]).abs() > (b["policy"] - a["policy"]).abs()
    assert float(policy_kl(model, b, torch.zeros(2, 1), torch.log_softmax(model(torch.zeros(2, 1))[0].detach(), -1))) > 0


def test_integrated_gradients_refuses_bad_input():
    model = _TwoHeads()
    a = {"policy": torch.tensor([0.0]), "value": torch.tensor([0.0])}
    with pytest.raises(GoalscopeError, match="steps"):
        integrated_gradients(model, a, a, torch.zeros(2, 1), steps=0)
    with pytest.raises(GoalscopeError, match="non-empty"):
        integrated_gradients(model, a, a, torch.zeros(0, 1))


def test_every_aggregator_takes_ig_maps_and_localisation_scores_them():
    torch.manual_seed(0)
    like = {"w": torch.zeros(200)}
    labels = np.zeros(200, bool)
    labels[:10] = True
    # IG concentrated on the planted entries; Δ spread over everything (a moved-but-inert haystack).
    igs = {f"rb{i}": {"w": torch.where(torch.arange(200) < 10, -1.0 - torch.rand(200), 0.01 * torch.randn(200))}
           for i in range(4)}
    deltas = {r: {"w": torch.randn(200)} for r in igs}
    for m in ("mean_abs", "ties", "pca", "spread"):
        h = agg.aggregate(m, list(igs.values()))
        assert set(h) == set(like)
    res, skipped = planted.seed_scores(deltas, [], None, ["mean_abs", "ties", "variance_ratio"], labels, sizes=(1, 2, 4),
                                       attributions=igs, control_attributions=igs)
    assert res[(planted.ATTRIBUTION, 1)][0][0] == 1.0 and res[(planted.ATTRIBUTION_CONTROL, 4)][0][0] == 1.0
    assert res[("ties" + planted.OVER_IG, 4)][0][0] == 1.0 and res[("mean_abs" + planted.OVER_IG, 2)][0][0] == 1.0
    assert res[(planted.SINGLE, 1)][0][0] < 0.8
    assert "variance_ratio" + planted.OVER_IG in skipped  # needs fine-tune seeds: left out, said why


def test_attribution_maps_and_fisher_are_cached_per_seed_and_rb(tmp_path):
    from goalscope.analysis.effects.superposition import attribution_maps, ma_fisher
    from goalscope.envs.maze import MazeConfig
    from goalscope.envs.rewards import parse_reward
    from goalscope.rl.ppo import PPOConfig, train_new

    env = MazeConfig(size=7, n_types=3, n_per_type=1, max_steps=16, layout="maze", pool_size=8)
    ppo = PPOConfig(total_steps=256, n_envs=8, n_steps=16, epochs=1, minibatch_size=64, eval_episodes=4)
    ma = train_new("mlp", {}, env, parse_reward("collect:0", 3), ppo, 0)
    mb = train_new("mlp", {}, env, parse_reward("collect:1", 3), ppo, 1)
    first = attribution_maps(tmp_path, 0, ma, "ma0", {"collect:1": ("mb0", mb)}, n_obs=32, steps=4)
    files = sorted((tmp_path / "signals").glob("attribution_seed0_*.safetensors"))
    assert len(files) == 1
    ig, info = first["collect:1"]
    assert info["sum"] == pytest.approx(info["l_end"] - info["l_start"], rel=0.2)
    again = attribution_maps(tmp_path, 0, ma, "ma0", {"collect:1": ("mb0", mb)}, n_obs=32, steps=4)
    assert all(torch.equal(again["collect:1"][0][k], ig[k]) for k in ig)  # read back, not recomputed differently
    files[0].write_bytes(b"damaged")  # a damaged cache entry is recomputed, not trusted
    third = attribution_maps(tmp_path, 0, ma, "ma0", {"collect:1": ("mb0", mb)}, n_obs=32, steps=4)
    assert all(torch.allclose(third["collect:1"][0][k], ig[k]) for k in ig)
    attribution_maps(tmp_path, 0, ma, "ma0", {"collect:1": ("mb0", mb)}, n_obs=32, steps=8)  # another recipe
    assert len(list((tmp_path / "signals").glob("attribution_seed0_*.safetensors"))) == 2
    # MB retrained under the same job key (`--force`): its weights differ, so the cached map is not reused.
    mb2 = train_new("mlp", {}, env, parse_reward("collect:1", 3), ppo, 2)
    attribution_maps(tmp_path, 0, ma, "ma0", {"collect:1": ("mb0", mb2)}, n_obs=32, steps=4)
    assert len(list((tmp_path / "signals").glob("attribution_seed0_*.safetensors"))) == 3

    # MA's Fisher: one per (run, MA, samples, seed), shared by the analysis and every validate task of the seed.
    fresh = ma_fisher(ma, 64, 0)
    cached = ma_fisher(ma, 64, 0, tmp_path, "ma0")
    files = sorted((tmp_path / "signals").glob("fisher_seed0_*.safetensors"))
    assert len(files) == 1 and all(torch.equal(fresh[k], cached[k]) for k in fresh)
    files[0].write_bytes(b"damaged")
    assert all(torch.equal(fresh[k], v) for k, v in ma_fisher(ma, 64, 0, tmp_path, "ma0").items())
    ma_fisher(mb, 64, 0, tmp_path, "ma0")  # other weights under the same key: a file of their own
    assert len(list((tmp_path / "signals").glob("fisher_seed0_*.safetensors"))) == 2
