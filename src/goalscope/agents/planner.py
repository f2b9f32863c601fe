"""Planners with an explicit reward map (``planner``, ``needle_planner``, ``hidden_needle_planner``): architectures
that plant the objective in known parameters, the ground truth heatmaps are scored against. May import: goalscope.agents.layers, torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from goalscope.agents.layers import NEIGHBOURHOOD, init_layer


@dataclass(frozen=True)
class PlannerConfig:
    """Options of the ``planner`` architecture: reward-map width, value-iteration steps, Q channels."""
    reward_hidden: int = 16  # width of the per-cell reward-map network
    iterations: int = 0  # value-iteration steps; 0 = twice the grid side (enough to cross any maze)
    q_channels: int = 8


def _value_iteration(net: nn.Module, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q over the grid after ``net.iterations`` learned Bellman backups from its reward map (walls masked), and the
    agent's one-hot plane: the part every planner shares, whatever reads Q afterwards."""
    x = obs.float()
    free, agent = 1.0 - x[:, 0:1], x[:, 1:2]
    r = net.reward_map2(torch.relu(net.reward_map1(x[:, 2:]))) * (free * getattr(net, "reward_scale", 1.0))
    v = torch.zeros_like(r)
    for _ in range(net.iterations):
        q = net.transition(torch.cat([r, v], 1))
        v = q.max(1, keepdim=True).values * free
    return q, agent


def reward_map_movable(net: nn.Module) -> dict[str, torch.Tensor]:
    """Where training can move the reward map, from the weights alone: ``{param: bool mask}``, True = movable.

    Each cell holds at most one object, so reward_map1's unit u sees plane k only as ``W[u,k] + b[u]`` (and an empty
    cell as ``b[u]``). When ``W[u,k] + b[u] <= 0`` the ReLU is off whenever plane k is on: ``W[u,k]``'s gradient
    is exactly 0 on every observation, so no fine-tune moves it and no score built from Δ, gradients or Fisher can
    rank it (a label there only caps AUROC through ties). Unit u's bias and its reward_map2 weight are inert when
    the unit is off for every plane and for an empty cell. Every other parameter counts as movable.
    """
    w = net.reward_map1.weight.detach()[:, :, 0, 0]  # [units, planes]
    b = net.reward_map1.bias.detach()
    on_plane = (w + b[:, None]) > 0
    unit_alive = on_plane.any(1) | (b > 0)
    out = {k: torch.ones(p.shape, dtype=torch.bool) for k, p in net.named_parameters()}
    out["reward_map1.weight"] = on_plane[:, :, None, None].clone()
    out["reward_map1.bias"] = unit_alive.clone()
    out["reward_map2.weight"] = unit_alive[None, :, None, None].clone()
    return out


class PlannerAgent(nn.Module):
    """A planner with an explicit reward map, in the spirit of Value Iteration Networks (Tamar et al. 2016).

    reward_map1 -> reward_map2: a per-cell network (1x1 convolutions) maps what lies in each cell to a scalar
    reward; nothing else sees the object planes. Then ``iterations`` steps of learned value iteration: Q from a
    3x3 convolution (``transition``) over [reward, value], V = max over Q channels, with walls masked out. The
    policy and value heads read Q at the agent's cell. By construction the objective has a home: the reward-map
    parameters (:meth:`objective_parameters`), the planted ground truth that heatmaps are scored against.
    """

    def __init__(self, obs_shape: tuple[int, int, int], n_actions: int, cfg: PlannerConfig = PlannerConfig()):
        super().__init__()
        c, h, w = obs_shape
        self.iterations = cfg.iterations or 2 * max(h, w)
        self.reward_map1 = init_layer(nn.Conv2d(c - 2, cfg.reward_hidden, 1), math.sqrt(2))  # object planes only
        self.reward_map2 = init_layer(nn.Conv2d(cfg.reward_hidden, 1, 1), 1.0)
        self.transition = init_layer(nn.Conv2d(2, cfg.q_channels, 3, padding=1), 1.0)
        self.policy = init_layer(nn.Linear(cfg.q_channels, n_actions), 0.01)
        self.value = init_layer(nn.Linear(cfg.q_channels, 1), 1.0)

    @staticmethod
    def objective_parameters() -> tuple[str, ...]:
        return ("reward_map1.weight", "reward_map1.bias", "reward_map2.weight", "reward_map2.bias")

    def movable_mask(self) -> dict[str, torch.Tensor]:
        """Entries training can move (see :func:`reward_map_movable`): planted labels are scored only there."""
        return reward_map_movable(self)

    @staticmethod
    def objective_type_axes() -> dict[str, int]:
        """Where the planted objective is indexed by object type: reward_map1's input axis reads plane k = type k,
        so permuting it along that axis swaps what the agent values between types (the causal check's edit)."""
        return {"reward_map1.weight": 1}

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, agent = _value_iteration(self, obs)
        q_here = (q * agent).sum((2, 3))
        return self.policy(q_here), self.value(q_here).squeeze(-1)


@dataclass(frozen=True)
class NeedlePlannerConfig:
    """Options of the ``needle_planner`` architecture: a small reward map in a wider torso."""
    reward_hidden: int = 4  # width of the per-cell reward map: the planted objective (29 parameters for K=5)
    iterations: int = 0  # value-iteration steps; 0 = twice the grid side
    q_channels: int = 8
    hidden: int = 64  # width of the two-layer torso over Q around the agent (the haystack)


@dataclass(frozen=True)
class HiddenNeedleConfig(NeedlePlannerConfig):
    """Options of ``hidden_needle_planner``: the needle planner with a fixed factor on its reward map's output."""
    # Below 1 the factor hides the objective from sensitivity: the policy's gradient on the reward map falls with
    # it (MA's Fisher with its square) while Adam's step on those parameters does not.
    reward_scale: float = 0.1


class NeedlePlannerAgent(nn.Module):
    """The planner's explicit reward map as a needle in a haystack: ≤ 2% of the parameters hold the objective.

    Same planted objective as :class:`PlannerAgent` (a per-cell reward map, the only part that sees the object
    planes, then learned value iteration), but the policy and value heads read Q at the agent's cell and its four
    neighbours through a two-layer torso. With the defaults the reward map holds 29 of ~7,300 parameters (0.4%),
    so a heatmap cannot find it by ranking whole tensors that happen to move a lot: the torso moves under every
    fine-tune, whatever the reward. Everything the agent knows about which objects pay flows through the scalar
    reward map ``r``, so by construction the objective lives in ``reward_map*`` and nowhere else.
    """

    def __init__(self, obs_shape: tuple[int, int, int], n_actions: int,
                 cfg: NeedlePlannerConfig | HiddenNeedleConfig = NeedlePlannerConfig()):
        super().__init__()
        c, h, w = obs_shape
        self.iterations = cfg.iterations or 2 * max(h, w)
        self.n_object_planes = c - 2
        self.reward_scale = float(getattr(cfg, "reward_scale", 1.0))  # a constant, not a parameter
        self.reward_map1 = init_layer(nn.Conv2d(c - 2, cfg.reward_hidden, 1), math.sqrt(2))  # object planes only
        self.reward_map2 = init_layer(nn.Conv2d(cfg.reward_hidden, 1, 1), 1.0)
        self.transition = init_layer(nn.Conv2d(2, cfg.q_channels, 3, padding=1), 1.0)
        self.fc1 = init_layer(nn.Linear(len(NEIGHBOURHOOD) * cfg.q_channels, cfg.hidden), math.sqrt(2))
        self.fc2 = init_layer(nn.Linear(cfg.hidden, cfg.hidden), math.sqrt(2))
        self.policy = init_layer(nn.Linear(cfg.hidden, n_actions), 0.01)
        self.value = init_layer(nn.Linear(cfg.hidden, 1), 1.0)

    @staticmethod
    def objective_parameters() -> tuple[str, ...]:
        return ("reward_map1.weight", "reward_map1.bias", "reward_map2.weight", "reward_map2.bias")

    def objective_units(self) -> dict[str, dict[str, torch.Tensor]]:
        """Per object plane, the reward-map weights that read it: ``{"plane k": {param: bool mask}}``.

        Column k of ``reward_map1.weight`` is the only place where plane k enters the network, so a reward
        change about type k has to pass through it (the rest of the reward map is shared by all types).
        """
        shape = self.reward_map1.weight.shape
        out = {}
        for k in range(self.n_object_planes):
            mask = torch.zeros(shape, dtype=torch.bool)
            mask[:, k] = True
            out[f"plane {k}"] = {"reward_map1.weight": mask}
        return out

    def movable_mask(self) -> dict[str, torch.Tensor]:
        """Entries training can move (see :func:`reward_map_movable`): planted labels are scored only there."""
        return reward_map_movable(self)

    @staticmethod
    def objective_type_axes() -> dict[str, int]:
        """Where the planted objective is indexed by object type: reward_map1's input axis reads plane k = type k,
        so permuting it along that axis swaps what the agent values between types (the causal check's edit)."""
        return {"reward_map1.weight": 1}

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, agent = _value_iteration(self, obs)
        # The agent never stands on the outer wall, so rolling its one-hot plane never wraps onto a real cell.
        around = [(q * torch.roll(agent, (dr, dc), (2, 3))).sum((2, 3)) for dr, dc in NEIGHBOURHOOD]
        z = torch.relu(self.fc2(torch.relu(self.fc1(torch.cat(around, 1)))))
        return self.policy(z), self.value(z).squeeze(-1)
