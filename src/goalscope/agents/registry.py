"""The registry of agent architectures: a name, a config dataclass and a builder each, registered here explicitly.

The protocol every agent follows (so any ``torch.nn.Module`` with this call signature can be trained and analysed):

    logits, value = model(obs)      # obs: (B, C, H, W) uint8 or float; logits: (B, n_actions); value: (B,)

Parameter names are stable and human-readable (``conv1.weight``, ``policy.bias``...) because they label the axes
of every heatmap. An architecture is registered as a name, a config dataclass and a builder; checkpoints store the
name and the config, so a model is rebuilt from data alone. The architectures themselves are one module each
(cnn, mlp, planner, rcnn, pixels). May import: goalscope.agents.{cnn,mlp,pixels,planner,rcnn}, goalscope.errors, torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

import torch
from torch import nn

from goalscope.agents.cnn import CNNAgent, CNNConfig
from goalscope.agents.mlp import MLPAgent, MLPConfig
from goalscope.agents.pixels import ImpalaCNNAgent, ImpalaCNNConfig, NatureCNNAgent, NatureCNNConfig
from goalscope.agents.planner import (HiddenNeedleConfig, NeedlePlannerAgent, NeedlePlannerConfig, PlannerAgent,
                                     PlannerConfig)
from goalscope.agents.rcnn import (PixelRCNNAgent, PixelRCNNConfig, PlantedRCNNAgent, PlantedRCNNConfig, RCNNAgent,
                                  RCNNConfig)
from goalscope.errors import ConfigError, check_fields


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: its name, config dataclass, builder ``(obs_shape, n_actions, config) -> nn.Module``
    and a one-line description."""
    name: str
    config_cls: type
    build: Callable[[tuple[int, int, int], int, object], nn.Module]
    description: str


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> None:
    """Add ``arch`` to the registry (a name may be registered once); checkpoints then rebuild it by name."""
    if arch.name in ARCHITECTURES:
        raise ConfigError(f"architecture {arch.name!r} is already registered")
    ARCHITECTURES[arch.name] = arch


register_architecture(Architecture("cnn", CNNConfig, CNNAgent, "small CNN over the full grid (default)"))
register_architecture(Architecture("mlp", MLPConfig, MLPAgent, "MLP over the flattened grid"))
register_architecture(Architecture("planner", PlannerConfig, PlannerAgent,
                                   "value-iteration planner with an explicit reward map (planted ground truth)"))
register_architecture(Architecture("needle_planner", NeedlePlannerConfig, NeedlePlannerAgent,
                                   "planner whose reward map is a needle (<= 2% of the parameters) in a larger torso"))
register_architecture(Architecture("hidden_needle_planner", HiddenNeedleConfig, NeedlePlannerAgent,
                                   "needle planner whose reward map's output is scaled down (reward_scale): an "
                                   "objective where the policy is not most sensitive"))
register_architecture(Architecture("rcnn", RCNNConfig, RCNNAgent,
                                   "CNN with a weight-tied recurrent conv (propagates along corridors), read at the agent"))
register_architecture(Architecture("pixel_rcnn", PixelRCNNConfig, PixelRCNNAgent,
                                   "rcnn for the maze drawn in colour (env.obs = 'rgb'): a per-cell conv computes "
                                   "what each cell holds, read at the agent's (white) cell"))
register_architecture(Architecture("planted_rcnn", PlantedRCNNConfig, PlantedRCNNAgent,
                                   "rcnn with a planted objective placed by training: a designated set of units in "
                                   "one layer, the only ones free while MA learns RA (needs base.pretrain_reward)"))
register_architecture(Architecture("nature_cnn", NatureCNNConfig, NatureCNNAgent,
                                   "Nature DQN's strided CNN over uint8 RGB frames (pixel envs such as Crafter)"))
register_architecture(Architecture("impala_cnn", ImpalaCNNConfig, ImpalaCNNAgent,
                                   "IMPALA's residual CNN over uint8 RGB frames (better features, ~5x nature_cnn's cost)"))


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


def movable_mask(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """Where training can move ``model``'s parameters, judged from its current weights: a bool tensor per parameter
    (False = inert, e.g. a weight behind a ReLU that is off whenever its input is on), for architectures that
    expose ``movable_mask()``; None means every parameter counts as movable. Planted labels that are inert are left
    out of localisation scoring: no Δ, gradient or Fisher can rank them."""
    fn = getattr(model, "movable_mask", None)
    return None if fn is None else {k: v.to(torch.bool) for k, v in fn().items()}


def objective_null_pool(model: nn.Module) -> dict[str, torch.Tensor] | None:
    """Where the causal gate draws the random sets its planted edits are compared with (a bool tensor per
    parameter), for architectures that expose ``objective_null_pool()``; None = anywhere outside the planted part.
    A planted part that is a set of units in one layer draws from that layer's other units, so the null edit
    damages as much of the same layer and only the objective tells the two apart."""
    fn = getattr(model, "objective_null_pool", None)
    return None if fn is None else {k: v.to(torch.bool) for k, v in fn().items()}


def objective_type_axes(model: nn.Module) -> dict[str, int] | None:
    """``{param: axis}`` where the planted objective has a type axis (index k along it reads object type k), for
    architectures that expose ``objective_type_axes()``; None where it has none (then it can be zeroed, not
    permuted across types)."""
    fn = getattr(model, "objective_type_axes", None)
    return None if fn is None else dict(fn())


def get_architecture(name: str) -> Architecture:
    """The registered architecture called ``name`` (a ConfigError lists the known ones)."""
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
        elif isinstance(value, float) and default > 0 and not 0 < value < float("inf"):
            raise ConfigError(f"agent.{key} must be a positive finite number, got {value!r}")
    return cls(**values)


def arch_config_to_json(cfg) -> dict:
    """An architecture config dataclass as plain JSON data (tuples as lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def build_agent(name: str, obs_shape: tuple[int, int, int], n_actions: int, config: dict | None = None) -> nn.Module:
    """A freshly initialised model of architecture ``name`` for observations of ``obs_shape`` (C, H, W)."""
    return get_architecture(name).build(tuple(obs_shape), n_actions, arch_config(name, config))
