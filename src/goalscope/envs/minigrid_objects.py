"""The shipped real example of an events env: a MiniGrid room of keys, balls and boxes (``goalscope/MiniGridObjects-v0``,
id :data:`MINIGRID_ID`, which :mod:`goalscope.envs.events` imports from here); picking an object up is an event of its
type. Needs the ``minigrid`` package (imported only when the env is made). May import: goalscope.errors,
goalscope.inputs.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from goalscope.errors import ConfigError, import_failure

MINIGRID_ID = "goalscope/MiniGridObjects-v0"
DEFAULT_OBJECTS = (("ball", "red"), ("key", "blue"), ("box", "green"))


MAX_SIZE = 63  # the room's side, walls included (the object maze's bound): MiniGrid allocates size² cells per env


def _check_sizes(size, objects, n_per_type, max_steps) -> None:
    """The factory's arguments bounded before MiniGrid allocates anything (a checkpoint's ``size: 100000`` once
    ended in a MemoryError inside MiniGrid, a smaller one in gigabytes): the room holds every object and the agent."""
    from goalscope.inputs import MAX_EPISODE_STEPS, int_field

    int_field(size, "env.kwargs.size", 4, MAX_SIZE)
    int_field(max_steps, "env.kwargs.max_steps", 1, MAX_EPISODE_STEPS)
    if not isinstance(objects, (list, tuple)) or not all(isinstance(o, (list, tuple)) and len(o) == 2 for o in objects):
        raise ConfigError(f"env.kwargs.objects must be a list of [kind, colour] pairs, got {objects!r}")
    room = (size - 2) ** 2 - 1
    int_field(n_per_type, "env.kwargs.n_per_type", 1, max(1, room // max(1, len(objects))))


def make_minigrid_objects_env(size: int = 7, objects=DEFAULT_OBJECTS, n_per_type: int = 1, max_steps: int = 64,
                              render_mode: str | None = None):
    """A MiniGrid room with ``n_per_type`` of each (kind, colour) object; picking one up is an event of its type.

    The agent has four actions (left, right, forward, pickup); a picked-up object vanishes, so the agent's hands
    are free again. Observations are MiniGrid's egocentric 7x7 view as a ``uint8[3, 7, 7]`` image.
    """
    try:
        from minigrid.core.grid import Grid
        from minigrid.core.mission import MissionSpace
        from minigrid.core.world_object import Ball, Box, Key
        from minigrid.minigrid_env import MiniGridEnv
    except ImportError as e:
        raise ConfigError(import_failure("minigrid", "the MiniGrid example needs the minigrid package",
                                         "pip install minigrid", e)) from None

    kinds = {"ball": Ball, "key": Key, "box": Box}
    _check_sizes(size, objects, n_per_type, max_steps)
    objects = [tuple(o) for o in objects]
    for kind, colour in objects:
        if kind not in kinds:
            raise ConfigError(f"env.kwargs.objects: unknown object kind {kind!r} (known: {', '.join(kinds)})")

    class ObjectsEnv(MiniGridEnv):
        def __init__(self):
            super().__init__(mission_space=MissionSpace(mission_func=lambda: "collect objects"), grid_size=size,
                             max_steps=max_steps, see_through_walls=True, render_mode=render_mode)
            self.action_space = gym.spaces.Discrete(4)
            self.observation_space = gym.spaces.Box(0, 255, (3, 7, 7), dtype=np.uint8)

        def _gen_grid(self, width, height):
            self.grid = Grid(width, height)
            self.grid.wall_rect(0, 0, width, height)
            for t, (kind, colour) in enumerate(objects):
                for _ in range(n_per_type):
                    obj = kinds[kind](colour)
                    obj.event_type = t
                    self.place_obj(obj)
            self.place_agent()
            self.mission = "collect objects"

        def reset(self, *, seed=None, options=None):
            obs, _ = super().reset(seed=seed, options=options)
            return self._image(obs), {"events": np.zeros(len(objects), dtype=np.int64)}

        def step(self, action):
            events = np.zeros(len(objects), dtype=np.int64)
            obs, _, term, trunc, _ = super().step(int(action))
            if self.carrying is not None:
                events[self.carrying.event_type] += 1
                self.carrying = None
            return self._image(obs), 0.0, term, trunc, {"events": events}

        @staticmethod
        def _image(obs):
            return np.ascontiguousarray(obs["image"].transpose(2, 0, 1), dtype=np.uint8)

    return ObjectsEnv()


def register_minigrid() -> None:
    """Register the MiniGrid objects example env with Gymnasium (once)."""
    if MINIGRID_ID not in gym.registry:
        gym.register(id=MINIGRID_ID, entry_point=make_minigrid_objects_env)
