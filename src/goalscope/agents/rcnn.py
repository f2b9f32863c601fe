"""``rcnn``: a CNN that propagates along the maze by recurrence and reads its features where the agent stands.

Why (issue #12): the default ``cnn`` on 9x9 mazes finds the rewarded object 94% of the time when it starts within
5 steps of it, 51% at 6-11 steps and 10% at 12-17 (500k steps, sampled actions): two 3x3 layers see 5x5 cells, and
a fully connected layer over the whole grid cannot follow corridors. Path-finding needs information carried along
the maze for as many steps as the path is long, and the action needs it *at the agent's cell*.

Layers (all parameters named for heatmaps):

- ``conv1..convN``: 3x3 same-padding convolutions with ReLU over the observation planes (walls, agent, objects);
- ``inject``: a 3x3 convolution to ``width`` channels, computed once (what each cell holds, walls included);
- ``recur``: one 3x3 convolution applied ``iterations`` times with shared weights, ``h = relu(recur(h) + inject)``.
  Re-injecting the input every step (as in Value Iteration Networks and "recall" in DeepThinking networks) lets
  walls gate the propagation; each step carries information one cell further;
- ``fc``: one hidden layer over ``h`` at the agent's cell and its four neighbours (read through the one-hot agent
  plane, so the readout is the same wherever the agent is), then the ``policy`` and ``value`` heads.

Unlike ``planner``/``needle_planner`` nothing is planted: no layer is told what is a reward, so where the objective
lives is as open a question as for ``cnn``. Registered by :mod:`goalscope.agents.registry`.

May import: goalscope.agents.layers, torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from goalscope.agents.layers import NEIGHBOURHOOD, init_layer


@dataclass(frozen=True)
class RCNNConfig:
    """Options of the ``rcnn`` architecture: input conv channels, recurrent width and steps, hidden width."""
    channels: tuple[int, ...] = (16,)
    width: int = 8  # channels of the recurrent state
    iterations: int = 0  # recurrent steps; 0 = twice the grid side
    hidden: int = 128


class RCNNAgent(nn.Module):
    """Input convs, a weight-tied recurrent conv with the input re-injected every step, read at the agent's cell."""

    def __init__(self, obs_shape: tuple[int, int, int], n_actions: int, cfg: RCNNConfig = RCNNConfig()):
        super().__init__()
        c, h, w = obs_shape
        self.iterations = cfg.iterations or 2 * max(h, w)
        chans = (c, *cfg.channels)
        for i in range(len(cfg.channels)):
            self.add_module(f"conv{i + 1}", init_layer(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1), math.sqrt(2)))
        self.n_conv = len(cfg.channels)
        self.inject = init_layer(nn.Conv2d(chans[-1], cfg.width, 3, padding=1), math.sqrt(2))
        self.recur = init_layer(nn.Conv2d(cfg.width, cfg.width, 3, padding=1), 1.0)
        self.fc = init_layer(nn.Linear(len(NEIGHBOURHOOD) * cfg.width, cfg.hidden), math.sqrt(2))
        self.policy = init_layer(nn.Linear(cfg.hidden, n_actions), 0.01)
        self.value = init_layer(nn.Linear(cfg.hidden, 1), 1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.features(obs)
        return self.policy(y), self.value(y).squeeze(-1)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """The hidden layer the heads read (also SB3's features extractor: :mod:`goalscope.agents.sb3`)."""
        x = obs.float()
        agent = x[:, 1:2]  # one-hot; the agent never stands on the outer wall, so rolls never wrap onto it
        for i in range(self.n_conv):
            x = torch.relu(getattr(self, f"conv{i + 1}")(x))
        z = self.inject(x)
        h = torch.relu(z)
        for _ in range(self.iterations):
            h = torch.relu(self.recur(h) + z)
        around = [(h * torch.roll(agent, (dr, dc), (2, 3))).sum((2, 3)) for dr, dc in NEIGHBOURHOOD]
        return torch.relu(self.fc(torch.cat(around, 1)))

