"""The ``rcnn`` architecture: weight-tied recurrence carries information one cell per step; read at the agent."""

import pytest
import torch

from goalscope.agents.registry import arch_config, build_agent
from goalscope.errors import ConfigError


def _obs(size=15, pos=(7, 7), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(1, 4, size, size, generator=g) > 0.7).float()
    x[:, 1] = 0
    x[0, 1, pos[0], pos[1]] = 1
    return x


@pytest.mark.parametrize("iterations", [1, 3])
def test_receptive_field_grows_one_cell_per_iteration(iterations):
    torch.manual_seed(0)
    model = build_agent("rcnn", (4, 15, 15), 4, {"channels": [4], "width": 4, "iterations": iterations, "hidden": 8})
    # readout (neighbours: 1) + conv1 (1) + inject (1) + one per recurrent step
    reach = 3 + iterations
    base = _obs()
    out = model(base)[0]

    def changed(d):
        x = base.clone()
        x[0, 2, 7, 7 + d] = 1 - x[0, 2, 7, 7 + d]
        return not torch.allclose(model(x)[0], out, atol=0, rtol=0)

    assert changed(reach)
    assert not changed(reach + 1)


def test_readout_follows_the_agent():
    torch.manual_seed(0)
    model = build_agent("rcnn", (4, 15, 15), 4, {"iterations": 2, "hidden": 8})
    a, b = _obs(pos=(5, 5)), _obs(pos=(9, 9))
    # the same surroundings around the agent at another place give the same output
    b[:, [0, 2, 3]] = torch.roll(a[:, [0, 2, 3]], (4, 4), (2, 3))
    torch.testing.assert_close(model(a)[0], model(b)[0])


def test_defaults_names_and_gradients():
    model = build_agent("rcnn", (7, 9, 9), 4, {})
    assert model.iterations == 18
    names = [n for n, _ in model.named_parameters()]
    assert names[:2] == ["conv1.weight", "conv1.bias"] and "recur.weight" in names and names[-1] == "value.bias"
    logits, value = model(torch.zeros(3, 7, 9, 9, dtype=torch.uint8).index_fill_(1, torch.tensor([1]), 0))
    assert logits.shape == (3, 4) and value.shape == (3,)
    x = _obs(size=9)
    x = torch.cat([x, torch.zeros(1, 3, 9, 9)], 1)
    (model(x)[0].sum() + model(x)[1].sum()).backward()
    assert model.recur.weight.grad.abs().sum() > 0 and model.conv1.weight.grad.abs().sum() > 0


def test_bad_config_is_refused():
    with pytest.raises(ConfigError, match="agent.width"):
        arch_config("rcnn", {"width": 0})
    with pytest.raises(ConfigError, match="unknown|width"):
        arch_config("rcnn", {"widht": 4})
