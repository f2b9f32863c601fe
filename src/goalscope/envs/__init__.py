"""Environment families. An env config is plain data that knows how to build its vectorised env:

    cfg.make(reward, n_envs, seed) -> vec env with reset(seed) / step(actions) / observe()
    cfg.eval_config()              -> the config evaluation episodes run under (full-length)
    cfg.obs_shape, cfg.n_actions, cfg.n_types, cfg.max_steps, cfg.has_oracle, cfg.to_json()

``object_maze`` is the embedded default (:mod:`goalscope.envs.maze`); ``gym_events`` runs any Gymnasium env that
reports per-type events (:mod:`goalscope.envs.events`, with a MiniGrid example); ``craftax`` runs Craftax-Classic
batched in JAX (:mod:`goalscope.envs.craftax`, needs ``goalscope[craftax]``). Add a family to ``ENV_FAMILIES`` to
bring your own.

May import: goalscope.envs.craftax, goalscope.envs.events, goalscope.envs.maze, goalscope.errors.
"""

from __future__ import annotations

from goalscope.envs.craftax import CraftaxConfig
from goalscope.envs.events import GymEventsConfig
from goalscope.envs.maze import MazeConfig
from goalscope.errors import ConfigError

ENV_FAMILIES: dict[str, type] = {"object_maze": MazeConfig, "gym_events": GymEventsConfig, "craftax": CraftaxConfig}


def env_from_json(d: dict):
    """The env config for ``d``; its ``family`` key picks the family (default: the object maze)."""
    if not isinstance(d, dict):
        raise ConfigError(f"env must be a table, got {d!r}")
    family = d.get("family", "object_maze")
    if family not in ENV_FAMILIES:
        raise ConfigError(f"env.family {family!r} is unknown (known: {', '.join(sorted(ENV_FAMILIES))})")
    return ENV_FAMILIES[family].from_json(d)
