"""Agent architectures and their registry.

The protocol every agent follows (so any ``torch.nn.Module`` with this call signature can be trained and analysed):

    logits, value = model(obs)      # obs: (B, C, H, W) uint8 or float; logits: (B, n_actions); value: (B,)

Parameter names are stable and human-readable (``conv1.weight``, ``policy.bias``...) because they label the axes
of every heatmap. An architecture is registered as a name, a config dataclass and a builder; checkpoints store the
name and the config, so a model is rebuilt from data alone.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from goalscope.errors import ConfigError, check_fields


def _init(layer: nn.Module, gain: float) -> nn.Module:
    # Orthogonal init with small policy-head gain is the standard PPO recipe: near-uniform initial policy.
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


@dataclass(frozen=True)
class CNNConfig:
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
            self.add_module(f"conv{i + 1}", _init(nn.Conv2d(chans[i], chans[i + 1], 3, padding=1), math.sqrt(2)))
        self.n_conv = len(cfg.channels)
        self.fc = _init(nn.Linear(chans[-1] * h * w, cfg.hidden), math.sqrt(2))
        self.policy = _init(nn.Linear(cfg.hidden, n_actions), 0.01)
        self.value = _init(nn.Linear(cfg.hidden, 1), 1.0)

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = obs.float()
        if self.relative_coords:
            agent = x[:, 1:2]  # the agent plane is one-hot
            here = (agent * self.grid_rc).sum((2, 3), keepdim=True)  # (B, 2, 1, 1) agent row, column
            x = torch.cat([x, self.grid_rc - here], 1)
        for i in range(self.n_conv):
            x = torch.relu(getattr(self, f"conv{i + 1}")(x))
        x = torch.relu(self.fc(x.flatten(1)))
        return self.policy(x), self.value(x).squeeze(-1)


@dataclass(frozen=True)
class MLPConfig:
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
                self.add_module(f"{prefix}fc{i + 1}", _init(nn.Linear(sizes[i], sizes[i + 1]), math.sqrt(2)))
        self.policy = _init(nn.Linear(sizes[-1], n_actions), 0.01)
        self.value = _init(nn.Linear(sizes[-1], 1), 1.0)

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


@dataclass(frozen=True)
class PlannerConfig:
    reward_hidden: int = 16  # width of the per-cell reward-map network
    iterations: int = 0  # value-iteration steps; 0 = twice the grid side (enough to cross any maze)
    q_channels: int = 8


def _value_iteration(net: nn.Module, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q over the grid after ``net.iterations`` learned Bellman backups from its reward map (walls masked), and the
    agent's one-hot plane: the part every planner shares, whatever reads Q afterwards."""
    x = obs.float()
    free, agent = 1.0 - x[:, 0:1], x[:, 1:2]
    r = net.reward_map2(torch.relu(net.reward_map1(x[:, 2:]))) * free
    v = torch.zeros_like(r)
    for _ in range(net.iterations):
        q = net.transition(torch.cat([r, v], 1))
        v = q.max(1, keepdim=True).values * free
    return q, agent


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
        self.reward_map1 = _init(nn.Conv2d(c - 2, cfg.reward_hidden, 1), math.sqrt(2))  # object planes only
        self.reward_map2 = _init(nn.Conv2d(cfg.reward_hidden, 1, 1), 1.0)
        self.transition = _init(nn.Conv2d(2, cfg.q_channels, 3, padding=1), 1.0)
        self.policy = _init(nn.Linear(cfg.q_channels, n_actions), 0.01)
        self.value = _init(nn.Linear(cfg.q_channels, 1), 1.0)

    @staticmethod
    def objective_parameters() -> tuple[str, ...]:
        return ("reward_map1.weight", "reward_map1.bias", "reward_map2.weight", "reward_map2.bias")

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, agent = _value_iteration(self, obs)
        q_here = (q * agent).sum((2, 3))
        return self.policy(q_here), self.value(q_here).squeeze(-1)


@dataclass(frozen=True)
class NeedlePlannerConfig:
    reward_hidden: int = 4  # width of the per-cell reward map: the planted objective (29 parameters for K=5)
    iterations: int = 0  # value-iteration steps; 0 = twice the grid side
    q_channels: int = 8
    hidden: int = 64  # width of the two-layer torso over Q around the agent (the haystack)


# The agent's cell and its four neighbours, in action order (up, right, down, left): (row, column) shifts.
_NEIGHBOURHOOD = ((0, 0), (-1, 0), (0, 1), (1, 0), (0, -1))


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
                 cfg: NeedlePlannerConfig = NeedlePlannerConfig()):
        super().__init__()
        c, h, w = obs_shape
        self.iterations = cfg.iterations or 2 * max(h, w)
        self.n_object_planes = c - 2
        self.reward_map1 = _init(nn.Conv2d(c - 2, cfg.reward_hidden, 1), math.sqrt(2))  # object planes only
        self.reward_map2 = _init(nn.Conv2d(cfg.reward_hidden, 1, 1), 1.0)
        self.transition = _init(nn.Conv2d(2, cfg.q_channels, 3, padding=1), 1.0)
        self.fc1 = _init(nn.Linear(len(_NEIGHBOURHOOD) * cfg.q_channels, cfg.hidden), math.sqrt(2))
        self.fc2 = _init(nn.Linear(cfg.hidden, cfg.hidden), math.sqrt(2))
        self.policy = _init(nn.Linear(cfg.hidden, n_actions), 0.01)
        self.value = _init(nn.Linear(cfg.hidden, 1), 1.0)

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

    def forward(self, obs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        q, agent = _value_iteration(self, obs)
        # The agent never stands on the outer wall, so rolling its one-hot plane never wraps onto a real cell.
        around = [(q * torch.roll(agent, (dr, dc), (2, 3))).sum((2, 3)) for dr, dc in _NEIGHBOURHOOD]
        z = torch.relu(self.fc2(torch.relu(self.fc1(torch.cat(around, 1)))))
        return self.policy(z), self.value(z).squeeze(-1)


@dataclass(frozen=True)
class Architecture:
    name: str
    config_cls: type
    build: Callable[[tuple[int, int, int], int, object], nn.Module]
    description: str


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> None:
    if arch.name in ARCHITECTURES:
        raise ConfigError(f"architecture {arch.name!r} is already registered")
    ARCHITECTURES[arch.name] = arch


register_architecture(Architecture("cnn", CNNConfig, CNNAgent, "small CNN over the full grid (default)"))
register_architecture(Architecture("mlp", MLPConfig, MLPAgent, "MLP over the flattened grid"))
register_architecture(Architecture("planner", PlannerConfig, PlannerAgent,
                                   "value-iteration planner with an explicit reward map (planted ground truth)"))
register_architecture(Architecture("needle_planner", NeedlePlannerConfig, NeedlePlannerAgent,
                                   "planner whose reward map is a needle (<= 2% of the parameters) in a larger torso"))


def objective_parameters(model: nn.Module) -> tuple[str, ...] | None:
    """Names of the parameters known to hold the objective, for architectures that plant one (else None)."""
    fn = getattr(model, "objective_parameters", None)
    return tuple(fn()) if fn else None


def objective_mask(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """Parameter-level labels of the planted objective: a bool tensor per parameter, True where the objective lives.

    An architecture can label single entries with its own ``objective_mask()``; otherwise every entry of the
    tensors named by ``objective_parameters()`` is positive. None for architectures without a planted objective.
    """
    fn = getattr(model, "objective_mask", None)
    if fn is not None:
        return {k: v.to(torch.bool) for k, v in fn().items()}
    names = objective_parameters(model)
    if names is None:
        return None
    return {k: torch.full(p.shape, k in names, dtype=torch.bool) for k, p in model.named_parameters()}


def get_architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {name!r} (known: {', '.join(sorted(ARCHITECTURES))})")
    return ARCHITECTURES[name]


def arch_config(name: str, values: dict | None = None):
    """Build the config dataclass of architecture ``name`` from plain data, naming any bad field."""
    cls = get_architecture(name).config_cls
    values = check_fields(cls, dict(values or {}), f"agent (architecture {name!r})")
    defaults = cls()
    for key, value in values.items():
        default = getattr(defaults, key)
        if isinstance(default, tuple):
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) and v > 0 for v in value):
                raise ConfigError(f"agent.{key} must be a list of positive integers, got {value!r}")
            values[key] = tuple(value)
        elif not isinstance(value, type(default)) or isinstance(value, bool) != isinstance(default, bool):
            raise ConfigError(f"agent.{key} must be {type(default).__name__}, got {value!r}")
        elif isinstance(value, int) and not isinstance(value, bool) and value < (1 if default > 0 else 0):
            raise ConfigError(f"agent.{key} must be {'positive' if default > 0 else '>= 0'}, got {value!r}")
    return cls(**values)


def arch_config_to_json(cfg) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def build_agent(name: str, obs_shape: tuple[int, int, int], n_actions: int, config: dict | None = None) -> nn.Module:
    return get_architecture(name).build(tuple(obs_shape), n_actions, arch_config(name, config))
