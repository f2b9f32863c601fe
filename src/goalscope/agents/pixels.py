"""Architectures for pixel observations (``nature_cnn``, ``impala_cnn``): RGB frames such as Crafter's or Atari's.

Both read ``uint8`` frames (channels first) and scale them to [0, 1] inside the model, so rollouts store bytes (4x
less memory than floats) and a checkpoint acts on the env's own observations. ``nature_cnn`` is the DQN/PPO Atari
torso (Mnih et al. 2015): strided convolutions that shrink a 64x64 frame to 4x4 in three layers, cheap enough for a
CPU. ``impala_cnn`` is IMPALA's residual torso (Espeholt et al. 2018), what Procgen and Crafter baselines use:
better features, ~5x the compute of ``nature_cnn`` on a 64x64 frame.

Parameter names follow the layers (``conv1.weight``, ``stack2.res1.conv0.bias``, ``fc.weight``) because they label
heatmap axes. May import: goalscope.agents.layers, goalscope.errors, torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from goalscope.agents.layers import init_layer
from goalscope.errors import ConfigError


@dataclass(frozen=True)
class NatureCNNConfig:
    """Options of ``nature_cnn``: channels of its three convolutions (8x8/4, 4x4/2, 3x3/1) and the hidden width."""
    channels: tuple[int, ...] = (32, 64, 64)
    hidden: int = 512


_NATURE_KERNELS = ((8, 4), (4, 2), (3, 1))  # (kernel, stride) per layer, as in the Nature DQN


def _conv_out(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class NatureCNNAgent(nn.Module):
    """Three strided convolutions, one hidden layer, policy and value heads; uint8 frames scaled by 1/255."""

    def __init__(self, obs_shape: tuple[int, int, int], n_actions: int, cfg: NatureCNNConfig = NatureCNNConfig()):
        super().__init__()
        c, h, w = obs_shape
        if len(cfg.channels) != len(_NATURE_KERNELS):
            raise ConfigError(f"nature_cnn has {len(_NATURE_KERNELS)} convolutions; agent.channels lists "
                             f"{len(cfg.channels)}")
        chans = (c, *cfg.channels)
        for i, (k, s) in enumerate(_NATURE_KERNELS):
            self.add_module(f"conv{i + 1}", init_layer(nn.Conv2d(chans[i], chans[i + 1], k, stride=s), math.sqrt(2)))
            h, w = _conv_out(h, k, s), _conv_out(w, k, s)
        if h < 1 or w < 1:
            raise ConfigError(f"nature_cnn needs frames of at least 36x36 pixels, got {obs_shape[1:]}")
        self.fc = init_layer(nn.Linear(chans[-1] * h * w, cfg.hidden), math.sqrt(2))
        self.policy = init_layer(nn.Linear(cfg.hidden, n_actions), 0.01)
        self.value = init_layer(nn.Linear(cfg.hidden, 1), 1.0)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() / 255.0
        for i in range(len(_NATURE_KERNELS)):
            x = torch.relu(getattr(self, f"conv{i + 1}")(x))
        return torch.relu(self.fc(x.flatten(1)))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(obs)
        return self.policy(x), self.value(x).squeeze(-1)


@dataclass(frozen=True)
class ImpalaCNNConfig:
    """Options of ``impala_cnn``: channels of each stack (conv, 3x3 max-pool /2, two residual blocks), hidden width."""
    channels: tuple[int, ...] = (16, 32, 32)
    hidden: int = 256


class _Residual(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv0 = init_layer(nn.Conv2d(channels, channels, 3, padding=1), math.sqrt(2))
        self.conv1 = init_layer(nn.Conv2d(channels, channels, 3, padding=1), math.sqrt(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv1(torch.relu(self.conv0(torch.relu(x))))


class _Stack(nn.Module):
    def __init__(self, in_channels: int, channels: int):
        super().__init__()
        self.conv = init_layer(nn.Conv2d(in_channels, channels, 3, padding=1), math.sqrt(2))
        self.res1, self.res2 = _Residual(channels), _Residual(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(self.conv(x), 3, stride=2, padding=1)
        return self.res2(self.res1(x))


class ImpalaCNNAgent(nn.Module):
    """IMPALA's residual stacks, one hidden layer, policy and value heads; uint8 frames scaled by 1/255."""

    def __init__(self, obs_shape: tuple[int, int, int], n_actions: int, cfg: ImpalaCNNConfig = ImpalaCNNConfig()):
        super().__init__()
        c, h, w = obs_shape
        chans = (c, *cfg.channels)
        for i in range(len(cfg.channels)):
            self.add_module(f"stack{i + 1}", _Stack(chans[i], chans[i + 1]))
            h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
        self.n_stacks = len(cfg.channels)
        self.fc = init_layer(nn.Linear(chans[-1] * h * w, cfg.hidden), math.sqrt(2))
        self.policy = init_layer(nn.Linear(cfg.hidden, n_actions), 0.01)
        self.value = init_layer(nn.Linear(cfg.hidden, 1), 1.0)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        x = obs.float() / 255.0
        for i in range(self.n_stacks):
            x = getattr(self, f"stack{i + 1}")(x)
        return torch.relu(self.fc(torch.relu(x).flatten(1)))

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.features(obs)
        return self.policy(x), self.value(x).squeeze(-1)
