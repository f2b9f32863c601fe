"""The default architecture: a small CNN over the full grid (``cnn``). May import: goalscope.agents.layers, torch."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from goalscope.agents.layers import init_layer


@dataclass(frozen=True)
class CNNConfig:
    """Options of the ``cnn`` architecture: conv channels, hidden width, and the agent-relative coordinate planes."""
    channels: tuple[int, ...] = (16, 32)
    hidden: int = 128
    relative_coords: bool = True  # add two planes: each cell's row/column offset from the agent


class CNNAgent(nn.Module):
    """3x3 same-padding convolutions over the full grid, one hidden layer, policy and value heads."""

    def __init__(self, obs_shape: tuple[int, int, int], n_actions: int, cfg: CNNConfig = CNNConfig()):
        super().__init__()
        c, h, w = obs_shape
        # Where an object is relative to the agent is what navigation needs; a plain CNN over the full grid has to
        # learn it from absolute positions, which is slow. Offset planes let one conv layer express "object to
        # my left" as a thresholded sum, so the agent's position enters the features directly.
        self.relative_coords = cfg.relative_coords
        if cfg.relative_coords:
            rows = torch.arange(h, dtype=torch.float32).view(h, 1).expand(h, w) / max(h - 1, 1)
            cols = torch.arange(w, dtype=torch.float32).view(1, w).expand(h, w) / max(w - 1, 1)
            self.register_buffer("grid_rc", torch.stack([rows, cols]), persistent=False)
            c += 2
        chans = (c, *cfg.channels)
        for i in range(len(cfg.channels)):
            self.add_module(f"conv{i + 1}", init_layer(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1), math.sqrt(2)))
        self.n_conv = len(cfg.channels)
        self.fc = init_layer(nn.Linear(chans[-1] * h * w, cfg.hidden), math.sqrt(2))
        self.policy = init_layer(nn.Linear(cfg.hidden, n_actions), 0.01)
        self.value = init_layer(nn.Linear(cfg.hidden, 1), 1.0)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """The trunk (everything before the heads); ``goalscope.agents.sb3.GoalscopeCNN`` runs this same function."""
        x = obs.float()
        if self.relative_coords:
            agent = x[:, 1:2]  # the agent plane is one-hot
            here = (agent * self.grid_rc).sum((2, 3), keepdim=True)  # (B, 2, 1, 1) agent row, column
            x = torch.cat([x, self.grid_rc - here], 1)
        for i in range(self.n_conv):
            x = torch.relu(getattr(self, f"conv{i + 1}")(x))
        return torch.relu(self.fc(x.flatten(1)))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(obs)
        return self.policy(x), self.value(x).squeeze(-1)
