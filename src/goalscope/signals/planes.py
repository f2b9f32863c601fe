"""Which input plane each first-layer weight reads: the layer that reads the object maze's observation planes,
found from the weights' shapes, so any architecture that reads the planes has the input-plane ground truth
(:mod:`goalscope.analysis.validate.entry`) and a chance level stratified by input plane (superposition's overlap).

May import: goalscope.errors.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from goalscope.errors import GoalscopeError


def plane_labels(env_cfg) -> list[str]:
    """Labels of the maze's observation planes in order: walls, agent, one per object type, then the cue planes."""
    k = env_cfg.n_types
    return ["walls", "agent", *[f"type {i}" for i in range(k)], *([f"cue {i}" for i in range(k)] if env_cfg.cue else [])]


PLANE_READERS = ("planner", "needle_planner", "hidden_needle_planner")  # reward_map1 reads the planes after walls/agent


@dataclass(frozen=True)
class FirstLayer:
    """The weights that read the observation planes, and which input channel each of their entries reads.

    ``labels``: one per input channel the layer reads; ``objects``: the index in ``labels`` of each object type's
    plane; ``channel``: tensor name -> int64 tensor shaped like the weight, holding the channel of every entry."""
    labels: list[str]
    objects: list[int]
    channel: dict[str, torch.Tensor]

    def mass(self, heat: dict) -> torch.Tensor:
        """A heatmap's (or |Δ|'s) mass per input channel, summed over every first-layer tensor."""
        out = torch.zeros(len(self.labels), dtype=torch.float64)
        for name, idx in self.channel.items():
            out.index_add_(0, idx.flatten(), heat[name].detach().flatten().to(torch.float64))
        return out


def _channel_index(shape, axis_len: int) -> torch.Tensor:
    """Channel of every entry of a weight whose axis 1 is (channel, rest) flattened (rest = 1 for a conv)."""
    return (torch.arange(shape[1]) // axis_len).view(1, -1, *[1] * (len(shape) - 2)).expand(shape).contiguous()


def first_layer(arch: str, state: dict, env_cfg) -> FirstLayer:
    """Find the layer that reads the planes from the weights' shapes, not from the architecture's name.

    The first 4-D weight (state-dict order is registration order, and every conv net here registers its input conv
    first) reads the planes when its in-channels equal their number C, or C + 2 (``cnn``'s agent-relative offset
    planes). Only that first one is considered: a deeper conv whose width happens to equal C would otherwise pass
    for the input layer. Without any 4-D weight, the 2-D weights whose in-features equal C*H*W read the flattened
    grid (``mlp``: one shared ``fc1`` or two towers, summed). The planners are the one case named: ``reward_map1``
    reads only the planes after walls and agent, so its in-channels are C - 2, which shapes alone cannot tell from
    a coincidence."""
    if getattr(env_cfg, "family", None) != "object_maze":
        raise GoalscopeError(f"input planes: env family {getattr(env_cfg, 'family', '?')!r} has no object planes")
    if getattr(env_cfg, "obs", "planes") != "planes":  # e.g. an image of the maze: no input channel names a type
        raise GoalscopeError(f"input planes: the observation is {env_cfg.obs!r}, not one plane per object type, so no "
                             "input channel names a type")
    planes = plane_labels(env_cfg)
    k, c = env_cfg.n_types, len(planes)
    objects = list(range(2, 2 + k))
    shape = tuple(getattr(env_cfg, "obs_shape", ()) or ())
    if shape and shape[0] != c:
        raise GoalscopeError(f"input planes: the observation has {shape[0]} channels, not the {c} maze "
                             f"planes ({', '.join(planes)}), so no input channel names an object type")
    if arch in PLANE_READERS and "reward_map1.weight" in state:
        w = state["reward_map1.weight"]
        return FirstLayer(planes[2:], list(range(k)), {"reward_map1.weight": _channel_index(w.shape, 1)})
    weights = [(n, v) for n, v in state.items() if n.endswith("weight") and v.dim() in (2, 4)]
    convs = [(n, v) for n, v in weights if v.dim() == 4]
    if convs:
        name, w = convs[0]
        if w.shape[1] in (c, c + 2):
            labels = planes + (["row offset", "column offset"] if w.shape[1] == c + 2 else [])
            return FirstLayer(labels, objects, {name: _channel_index(w.shape, 1)})
        raise GoalscopeError(f"input planes: architecture {arch!r}'s first conv {name} reads "
                             f"{w.shape[1]} channels, not the {c} maze planes (or {c} + 2 offset planes)")
    hw = int(np.prod(shape[1:])) if shape else 0
    dense = [(n, v) for n, v in weights if hw and v.shape[1] == c * hw]
    if dense:
        return FirstLayer(planes, objects, {n: _channel_index(v.shape, hw) for n, v in dense})
    raise GoalscopeError(f"input planes: no first-layer map for architecture {arch!r} (no conv weight "
                         f"and no dense weight reading the {c} x {hw} flattened planes)")


def input_channels(arch: str, state: dict, env_cfg) -> tuple[list[str], list[int], callable]:
    """(channel labels, index of each object type's channel, heatmap dict -> first-layer mass per channel) of
    :func:`first_layer`."""
    fl = first_layer(arch, state, env_cfg)
    return fl.labels, fl.objects, fl.mass
