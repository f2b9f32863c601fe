"""Hook points (issue 17): named sites on every architecture; record, add and replace during paired rollouts."""

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from goalscope.agents import hooks
from goalscope.agents.registry import ARCHITECTURES, build_agent
from goalscope.envs.rewards import parse_reward
from goalscope.errors import ConfigError
from goalscope.rl.evaluation import evaluate


def _obs(cfg, n=8, seed=0):
    env = cfg.make(parse_reward("collect:0", cfg.n_types), n, seed=seed)
    return torch.from_numpy(env.reset(seed))


def _for(arch, cfg):
    """``cfg``, or for ``nature_cnn`` (whose strides need frames of 36x36 or more) a maze that large, or for
    ``pixel_rcnn`` the maze drawn in colour."""
    if arch == "pixel_rcnn":
        return dataclasses.replace(cfg, obs="rgb")
    if arch != "nature_cnn":
        return cfg
    return dataclasses.replace(cfg, size=37)


def _pair(arch, cfg, a=0, b=1):
    torch.manual_seed(a)
    m1 = build_agent(arch, cfg.obs_shape, cfg.n_actions)
    torch.manual_seed(b)
    m2 = build_agent(arch, cfg.obs_shape, cfg.n_actions)
    # Bigger policy heads than the PPO init (gain 0.01) so that different weights give different actions.
    for m in (m1, m2):
        with torch.no_grad():
            m.policy.weight.mul_(300)
    return m1.eval(), m2.eval()


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_every_architecture_has_sites_and_adding_zero_changes_nothing(arch, tiny_cfg):
    tiny_cfg = _for(arch, tiny_cfg)
    ma, _ = _pair(arch, tiny_cfg)
    sites = hooks.default_sites(ma)
    assert sites and sites[-1] == "policy" and set(sites) <= set(hooks.all_sites(ma))
    obs = _obs(tiny_cfg)
    with torch.inference_mode():
        ref = ma(obs)[0]
    acts = hooks.activations(ma, obs, sites)
    for s in sites:
        assert acts[s].shape[0] == len(obs) and torch.isfinite(acts[s]).all(), s
    assert torch.equal(acts["policy"], ref)  # the logits site is the logits
    reward = parse_reward("collect:0", tiny_cfg.n_types)
    plain = evaluate(ma, tiny_cfg, reward, 16, 123)
    for s in sites:
        with hooks.intervene(ma, {s: hooks.Add(torch.zeros_like(acts[s][0]))}):
            with torch.inference_mode():
                assert torch.equal(ma(obs)[0], ref), s  # bit for bit
            p = evaluate(ma, tiny_cfg, reward, 16, 123)
        assert np.array_equal(p.counts, plain.counts) and np.array_equal(p.steps, plain.steps), s
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in ma.modules())  # all removed


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_patching_another_models_activations_changes_actions(arch, tiny_cfg):
    tiny_cfg = _for(arch, tiny_cfg)
    ma, other = _pair(arch, tiny_cfg)
    obs = _obs(tiny_cfg, 32)
    with torch.inference_mode():
        own, theirs = ma(obs)[0], other(obs)[0]
    assert not torch.equal(own.argmax(-1), theirs.argmax(-1))
    # Patching the logits site makes MA act exactly as the other model, on the same paired episodes.
    reward = parse_reward("collect:0", tiny_cfg.n_types)
    with hooks.patch(ma, other, ["policy"]):
        with torch.inference_mode():
            assert torch.equal(ma(obs)[0], theirs)
        p = evaluate(ma, tiny_cfg, reward, 32, 7)
    q = evaluate(other, tiny_cfg, reward, 32, 7)
    assert np.array_equal(p.counts, q.counts) and np.array_equal(p.steps, q.steps)
    # Patching the first site from another model changes what MA does.
    first = hooks.default_sites(ma)[0]
    with hooks.patch(ma, other, [first]), torch.inference_mode():
        assert not torch.equal(ma(obs)[0], own)
    with torch.inference_mode():
        assert torch.equal(ma(obs)[0], own)  # and nothing is left behind


def test_add_moves_logits_by_the_vector_and_replace_sets_them(tiny_cfg):
    ma, _ = _pair("cnn", tiny_cfg)
    obs = _obs(tiny_cfg)
    with torch.inference_mode():
        ref = ma(obs)[0]
    v = torch.tensor([1.0, -2.0, 0.5, 0.0])
    with hooks.intervene(ma, {"policy": hooks.Add(v, -2.0)}), torch.inference_mode():
        assert torch.allclose(ma(obs)[0], ref - 2 * v)
    with hooks.intervene(ma, {"policy": hooks.Replace(v)}), torch.inference_mode():
        assert torch.equal(ma(obs)[0], v.expand(len(obs), 4))


def test_repeated_site_and_custom_module_and_errors(tiny_cfg):
    planner = build_agent("planner", tiny_cfg.obs_shape, tiny_cfg.n_actions)
    obs = _obs(tiny_cfg, 4)
    with torch.inference_mode(), hooks.record(planner, ["transition"]) as every:
        planner(obs)
    assert every["transition"].shape[0] == 4 * planner.iterations  # one chunk per value-iteration step
    assert hooks.activations(planner, obs, ["transition"])["transition"].shape[0] == 4  # last call only

    class Custom(nn.Module):  # any nn.Module: sites are its leaf modules, by name
        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(tiny_cfg.obs_shape)), 8), nn.ReLU())
            self.policy = nn.Linear(8, 4)

        def forward(self, x):
            h = self.body(x.float())
            return self.policy(h), h.sum(-1)

    m = Custom()
    assert hooks.default_sites(m) == ["body.0", "body.1", "body.2", "policy"]
    acts = hooks.activations(m, obs, ["body.1"])
    assert acts["body.1"].shape == (4, 8)
    with pytest.raises(ConfigError, match="no hook site"):
        with hooks.record(m, ["nope"]):
            pass
    with pytest.raises(RuntimeError):
        with hooks.intervene(m, {"policy": hooks.Add(torch.zeros(4))}):
            raise RuntimeError("boom")
    assert all(not x._forward_hooks and not x._forward_pre_hooks for x in m.modules())
    with pytest.raises(ConfigError, match="non-finite"):
        with hooks.intervene(m, {"policy": hooks.Add(torch.tensor([float("nan")] * 4))}):
            pass
