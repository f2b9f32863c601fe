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

``pixel_rcnn`` (:class:`PixelRCNNAgent`) is the same recurrence for the maze drawn as a colour image (``env.obs =
"rgb"``), where no input channel names a type or the agent: ``conv1`` has kernel = stride = ``cell_pixels`` and
turns each cell's block of pixels into cell features (the type has to be computed from colour there, before anything
can value it), further convs are 3x3 over cells. The readout needs the agent's cell, which rcnn reads from the
one-hot agent plane. By default (``locate = "colour"``) it is the cell whose pixels are white, a rule with no
weights: knowing where the agent is, as rcnn does, but not what any type is. ``locate = "learned"`` finds it with
``locate``, a 1x1 convolution over the cell features whose softmax over cells is the map; on the 7x7 maze it found
the agent on 1 of 3 seeds in 250k steps (MA at 0.93, 0.36 and 0.61 of the oracle).

Unlike ``planner``/``needle_planner`` nothing is planted: no layer is told what is a reward, so where the objective
lives is as open a question as for ``cnn``. Registered by :mod:`goalscope.agents.registry`.

May import: goalscope.agents.layers, goalscope.errors, torch.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import torch
from torch import nn

from goalscope.agents.layers import NEIGHBOURHOOD, init_layer
from goalscope.errors import ConfigError


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
        _add_recurrent_readout(self, chans[-1], cfg, n_actions)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.features(obs)
        return self.policy(y), self.value(y).squeeze(-1)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        """The hidden layer the heads read (also SB3's features extractor: :mod:`goalscope.agents.sb3`)."""
        x = obs.float()
        agent = x[:, 1:2]  # one-hot; the agent never stands on the outer wall, so rolls never wrap onto it
        for i in range(self.n_conv):
            x = torch.relu(getattr(self, f"conv{i + 1}")(x))
        return _recur_and_read(self, x, agent)



@dataclass(frozen=True)
class PixelRCNNConfig:
    """Options of ``pixel_rcnn``: the pixels per cell side (the env's ``cell_pixels``), conv channels (the first is the
    per-cell conv), recurrent width and steps, hidden width."""
    cell_pixels: int = 2
    channels: tuple[int, ...] = (32, 16)
    width: int = 8
    iterations: int = 0  # recurrent steps; 0 = twice the grid side in cells
    hidden: int = 128
    locate: str = "colour"  # how the agent's cell is found: "colour" (its white pixels) or "learned" (a softmax)
    # With locate = "learned": multiplies locate's logits. Adam moves each weight by about lr a step whatever its gradient, so this is how
    # much faster the logits move. 7x7 MA, seed 0, experiments/pixel_maze.toml's settings: at 1 the softmax stayed
    # near uniform (0.28 of the oracle after 100k steps, chance); after 150k 0.57 at 10, 0.84 at 30, 0.70 at 100.
    locate_scale: float = 30.0


class PixelRCNNAgent(nn.Module):
    """``rcnn`` over a colour image of the maze: a per-cell conv, 3x3 convs over cells, the recurrence, read where a
    learned spatial softmax puts the agent."""

    def __init__(self, obs_shape: tuple[int, int, int], n_actions: int, cfg: PixelRCNNConfig = PixelRCNNConfig()):
        super().__init__()
        c, h, w = obs_shape
        p = cfg.cell_pixels
        if h % p or w % p:
            raise ConfigError(f"agent.cell_pixels {p} does not divide the observation's {h}x{w} pixels")
        self.iterations = cfg.iterations or 2 * max(h, w) // p
        chans = (c, *cfg.channels)
        self.add_module("conv1", init_layer(nn.Conv2d(c, chans[1], p, stride=p), math.sqrt(2)))
        for i in range(1, len(cfg.channels)):
            self.add_module(f"conv{i + 1}", init_layer(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1), math.sqrt(2)))
        self.n_conv = len(cfg.channels)
        if cfg.locate not in ("colour", "learned"):
            raise ConfigError(f"agent.locate must be 'colour' or 'learned', got {cfg.locate!r}")
        self.cell_pixels, self.learned_locate, self.locate_scale = p, cfg.locate == "learned", cfg.locate_scale
        if self.learned_locate:
            # Read from the cell features alone (a cell's colour, not its neighbours'), so the readout stays
            # translation-equivariant like rcnn's one-hot plane.
            self.locate = init_layer(nn.Conv2d(chans[1], 1, 1), 1.0)
        _add_recurrent_readout(self, chans[-1], cfg, n_actions)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.features(obs)
        return self.policy(y), self.value(y).squeeze(-1)

    def agent_map(self, pixels: torch.Tensor, cells: torch.Tensor) -> torch.Tensor:
        """``(B, 1, H, W)``: where the model reads the agent to be, from the image (``pixels``, 0..255) or the
        cell features (``cells``, conv1's output): one-hot on white cells, or a softmax over cells of ``locate``."""
        if not self.learned_locate:
            darkest = -nn.functional.max_pool2d(-pixels, self.cell_pixels)  # each cell's darkest pixel, per channel
            return (darkest.amin(1, keepdim=True) >= 255).to(pixels.dtype)
        logits = self.locate(cells) * self.locate_scale
        return torch.softmax(logits.flatten(1), 1).view_as(logits)

    def features(self, obs: torch.Tensor) -> torch.Tensor:
        pixels = obs.float()
        x = torch.relu(self.conv1(pixels / 255.0))  # uint8 pixels; one row of cell features per cell
        agent = self.agent_map(pixels, x)
        for i in range(1, self.n_conv):
            x = torch.relu(getattr(self, f"conv{i + 1}")(x))
        # What a learned softmax puts on the outer wall wraps to the far side in the readout's rolls.
        return _recur_and_read(self, x, agent)


@dataclass(frozen=True)
class PlantedRCNNConfig(RCNNConfig):
    """``rcnn`` with a planted objective placed by training: ``plant_units`` output units of layer ``plant_layer``
    (``conv1``, ``inject`` or ``fc``; drawn by ``plant_seed``) are the only ones free while MA learns RA."""
    # conv1, where the type is read: with inject's or fc's units alone free, MA learned no type preference
    # (docs/results/planted.md has the measurements).
    plant_layer: str = "conv1"
    plant_units: int = 8
    plant_seed: int = 0


class PlantedRCNNAgent(RCNNAgent):
    """``rcnn`` whose planted objective is a designated set of units in one shared layer, placed there by training
    (issue 35, item 2): the experiment pretrains the whole net on a reward with no type preference
    (``base.pretrain_reward``), then trains MA on RA with only these units' incoming weights and biases free to
    move, so MA - pretrained is nonzero there alone by construction. The architecture is rcnn's, parameter for
    parameter; only the labels (:meth:`objective_mask`) are added."""

    def __init__(self, obs_shape: tuple[int, int, int], n_actions: int, cfg: PlantedRCNNConfig = PlantedRCNNConfig()):
        super().__init__(obs_shape, n_actions, cfg)
        layer = getattr(self, cfg.plant_layer, None) if cfg.plant_layer in ("conv1", "inject", "fc") else None
        if layer is None:
            raise ConfigError(f"agent.plant_layer must be 'conv1', 'inject' or 'fc', got {cfg.plant_layer!r}")
        n_out = layer.weight.shape[0]
        if not 1 <= cfg.plant_units < n_out:
            raise ConfigError(f"agent.plant_units must be in 1..{n_out - 1} (layer {cfg.plant_layer!r} has {n_out} "
                              f"units), got {cfg.plant_units}")
        # Drawn from the config alone (not torch's stream: the model may be built on the meta device), so the
        # labels are rebuilt from a checkpoint's arch config.
        units = random.Random(cfg.plant_seed).sample(range(n_out), cfg.plant_units)
        self.plant_layer, self.plant_units = cfg.plant_layer, tuple(sorted(units))

    def objective_mask(self) -> dict[str, torch.Tensor]:
        """True on the designated units' incoming weights and biases, the only entries MA's RA training moves."""
        return self._rows(self.plant_units)

    def objective_null_pool(self) -> dict[str, torch.Tensor]:
        """The same layer's other units: zeroing as many of their entries damages the layer as much, so the causal
        gate's difference is the objective, not the damage."""
        n_out = getattr(self, self.plant_layer).weight.shape[0]
        return self._rows([u for u in range(n_out) if u not in self.plant_units])

    def _rows(self, units) -> dict[str, torch.Tensor]:
        mask = {k: torch.zeros(p.shape, dtype=torch.bool) for k, p in self.named_parameters()}
        for k in (f"{self.plant_layer}.weight", f"{self.plant_layer}.bias"):
            mask[k][list(units)] = True
        return mask


def _add_recurrent_readout(net: nn.Module, in_channels: int, cfg, n_actions: int) -> None:
    """``inject``, ``recur``, ``fc``, ``policy`` and ``value`` of an rcnn-style net, registered on ``net`` itself
    (their names are the heatmaps' and the checkpoints'), in this order (the init's random stream depends on it)."""
    net.inject = init_layer(nn.Conv2d(in_channels, cfg.width, 3, padding=1), math.sqrt(2))
    net.recur = init_layer(nn.Conv2d(cfg.width, cfg.width, 3, padding=1), 1.0)
    net.fc = init_layer(nn.Linear(len(NEIGHBOURHOOD) * cfg.width, cfg.hidden), math.sqrt(2))
    net.policy = init_layer(nn.Linear(cfg.hidden, n_actions), 0.01)
    net.value = init_layer(nn.Linear(cfg.hidden, 1), 1.0)


def _recur_and_read(net: nn.Module, x: torch.Tensor, agent: torch.Tensor) -> torch.Tensor:
    """The weight-tied recurrence over cell features ``x`` (input re-injected every step), read at the cell
    ``agent`` marks and its four neighbours. The agent never stands on the outer wall, so a one-hot map's rolls
    never wrap onto a real cell."""
    z = net.inject(x)
    h = torch.relu(z)
    for _ in range(net.iterations):
        h = torch.relu(net.recur(h) + z)
    around = [(h * torch.roll(agent, (dr, dc), (2, 3))).sum((2, 3)) for dr, dc in NEIGHBOURHOOD]
    return torch.relu(net.fc(torch.cat(around, 1)))
