"""An MLP over the flattened grid (``mlp``; Stable-Baselines3's MlpPolicy layout by default).

May import: goalscope.agents.layers, goalscope.errors, torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from goalscope.agents.layers import init_layer
from goalscope.errors import ConfigError


@dataclass(frozen=True)
class MLPConfig:
    """Options of the ``mlp`` architecture: hidden widths, activation, shared or separate policy/value towers."""
    hidden: tuple[int, ...] = (64, 64)
    activation: str = "tanh"  # "tanh" or "relu"
    shared: bool = False  # False: separate policy and value towers (Stable-Baselines3's MlpPolicy layout)


class MLPAgent(nn.Module):
    """Flattened grid into fully connected towers."""

    def __init__(self, obs_shape: tuple[int, int, int], n_actions: int, cfg: MLPConfig = MLPConfig()):
        super().__init__()
        if cfg.activation not in ("tanh", "relu"):
            raise ConfigError(f"agent.activation must be 'tanh' or 'relu', got {cfg.activation!r}")
        self.act = torch.tanh if cfg.activation == "tanh" else torch.relu
        sizes = (math.prod(obs_shape), *cfg.hidden)
        self.shared = cfg.shared
        self.n_hidden = len(cfg.hidden)
        for prefix in ([""] if cfg.shared else ["pi_", "vf_"]):
            for i in range(self.n_hidden):
                self.add_module(f"{prefix}fc{i + 1}", init_layer(nn.Linear(sizes[i], sizes[i + 1]), math.sqrt(2)))
        self.policy = init_layer(nn.Linear(sizes[-1], n_actions), 0.01)
        self.value = init_layer(nn.Linear(sizes[-1], 1), 1.0)

    def _tower(self, prefix: str, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.n_hidden):
            x = self.act(getattr(self, f"{prefix}fc{i + 1}")(x))
        return x

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs.float().flatten(1)
        if self.shared:
            pi = vf = self._tower("", x)
        else:
            pi, vf = self._tower("pi_", x), self._tower("vf_", x)
        return self.policy(pi), self.value(vf).squeeze(-1)
