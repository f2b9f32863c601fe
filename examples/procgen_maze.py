"""Procgen's maze (the env of the cheese-vector studies) as a goalscope env of your own: a user module.

Install (measured on Python 3.11, see docs/howto/own-env-agent.md, "Procgen's maze"): in an environment of its
own, ``pip install procgen2 "pandas>=2,<3"`` next to goalscope (procgen2 pins numpy 1.26.4, under which pandas 3
does not import). Then, from the repository root::

    PYTHONPATH=examples goalscope run examples/procgen_maze.toml --out runs/procgen-maze

The experiment file names the env ``procgen_maze:ProcgenMaze-v0``, so goalscope imports this module, which
registers the env and its event source. Reaching the cheese is the one event Procgen reports (its reward); the
source reads it from the step's reward, which event sources are given by keyword.

Limits: gym3 restarts an episode by itself, so the observation returned at an episode's end is already the next
level's first (the last frame of an episode is never seen); and with one event type, the RBs can only reweight
the cheese (``avoid:cheese``), not reward another goal.
"""

import gymnasium as gym
import numpy as np

from goalscope.envs.events import EVENT_SOURCES

TIMEOUT = 500  # Procgen's maze ends an episode after 500 steps: the registered limit, which env.max_steps must reach


class ProcgenMaze(gym.Env):
    """One Procgen maze (procgen2's gym3 API) behind Gymnasium's: 64x64 RGB frames, 15 actions."""

    def __init__(self, distribution_mode: str = "easy"):
        self.distribution_mode = distribution_mode
        self.observation_space = gym.spaces.Box(0, 255, (64, 64, 3), dtype=np.uint8)
        self.action_space = gym.spaces.Discrete(15)
        self._env = None

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None or self._env is None:  # a seed picks the level sequence: same seed, same mazes
            from procgen import ProcgenGym3Env

            self._env = ProcgenGym3Env(num=1, env_name="maze", num_levels=0, distribution_mode=self.distribution_mode,
                                       start_level=int(self.np_random.integers(2**30)))
        return self._env.observe()[1]["rgb"][0], {}

    def step(self, action):
        self._env.act(np.array([int(action)]))
        reward, obs, first = self._env.observe()
        return obs["rgb"][0], float(reward[0]), bool(first[0]), False, {}


class CheeseEvents:
    """Reaching the cheese: the step's own reward is positive."""

    def __init__(self, types):
        self.n_types = len(types)

    def before(self, env):
        return None

    def __call__(self, env, action, memo, terminated, *, reward):
        return np.array([int(reward > 0)], dtype=np.int64)


EVENT_SOURCES["cheese"] = CheeseEvents
if "ProcgenMaze-v0" not in gym.registry:
    gym.register("ProcgenMaze-v0", entry_point=ProcgenMaze, max_episode_steps=TIMEOUT)
