"""Initialisation and geometry shared by the architectures. May import: torch only."""

from __future__ import annotations

from torch import nn

# The agent's cell and its four neighbours, in action order (up, right, down, left): (row, column) shifts.
NEIGHBOURHOOD = ((0, 0), (-1, 0), (0, 1), (1, 0), (0, -1))


def init_layer(layer: nn.Module, gain: float) -> nn.Module:
    """Orthogonal weights with ``gain`` and zero bias, in place; returns the layer."""
    # Orthogonal init with small policy-head gain is the standard PPO recipe: near-uniform initial policy.
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer
