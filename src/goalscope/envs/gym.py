"""The object maze through Gymnasium's API, for third-party trainers (Stable-Baselines3, CleanRL scripts...).

``ObjectMazeEnv`` is a single ``gymnasium.Env`` (registered as ``goalscope/ObjectMaze-v0`` by
:func:`register_envs`); ``ObjectMazeVectorEnv`` is a ``gymnasium.vector.VectorEnv`` over the native vectorised
env, using Gymnasium's same-step autoreset (the final observation of an ended episode is in ``info``).
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from goalscope.envs.maze import N_ACTIONS, MazeConfig, MazeVecEnv
from goalscope.envs.rewards import Reward, parse_reward

ENV_ID = "goalscope/ObjectMaze-v0"


def _reward(reward: Reward | str, cfg: MazeConfig) -> Reward:
    return parse_reward(reward, cfg.n_types) if isinstance(reward, str) else reward


def _obs_space(cfg: MazeConfig) -> gym.spaces.Box:
    return gym.spaces.Box(0, 1, cfg.obs_shape, dtype=np.uint8)


class ObjectMazeEnv(gym.Env):
    metadata = {"render_modes": ["ansi"]}

    def __init__(self, config: MazeConfig | None = None, reward: Reward | str = "collect:0", render_mode=None):
        self.cfg = config or MazeConfig()
        self.observation_space = _obs_space(self.cfg)
        self.action_space = gym.spaces.Discrete(N_ACTIONS)
        self.render_mode = render_mode
        self._env = MazeVecEnv(self.cfg, _reward(reward, self.cfg), 1, seed=0)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        # Without a seed, continue the env's own stream: a fresh episode, still reproducible from the first seed.
        self._env.reset(int(self.np_random.integers(2**31)) if seed is None else seed)
        return self._env.observe()[0], {}

    def step(self, action):
        obs, reward, term, trunc, info = self._env.step(np.array([action]))
        out_info = {}
        if info:  # the vector env already started the next episode; Gymnasium wants the final observation
            obs = info["final_obs"]
            out_info = {"counts": info["counts"][0], "steps": int(info["steps"][0])}
        return obs[0], float(reward[0]), bool(term[0]), bool(trunc[0]), out_info

    def render(self):
        return render_ansi(self._env)[0]


class ObjectMazeVectorEnv(VectorEnv):
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int, config: MazeConfig | None = None, reward: Reward | str = "collect:0"):
        self.cfg = config or MazeConfig()
        self.num_envs = num_envs
        self._env = MazeVecEnv(self.cfg, _reward(reward, self.cfg), num_envs, seed=0)
        self.single_observation_space = _obs_space(self.cfg)
        self.single_action_space = gym.spaces.Discrete(N_ACTIONS)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)

    def reset(self, *, seed=None, options=None):
        if seed is not None and not isinstance(seed, int):
            seed = int(seed[0])
        return self._env.reset(seed if seed is not None else 0), {}

    def step(self, actions):
        obs, reward, term, trunc, info = self._env.step(np.asarray(actions))
        out = {}
        if info:
            mask = np.zeros(self.num_envs, dtype=bool)
            mask[info["done_idx"]] = True
            final_obs = np.zeros_like(obs)
            final_obs[info["done_idx"]] = info["final_obs"]
            out = {"final_obs": final_obs, "_final_obs": mask}
        return obs, reward, term, trunc, out


def render_ansi(env: MazeVecEnv) -> list[str]:
    """Text pictures of every env: ``#`` wall, ``A`` agent, ``0``-``9`` objects by type."""
    g = env.grid_state()
    out = []
    for walls, objects, (r, c) in zip(g["walls"], g["objects"], g["pos"]):
        rows = []
        for i in range(walls.shape[0]):
            chars = ["#" if walls[i, j] else (str(objects[i, j] % 10) if objects[i, j] >= 0 else ".") for j in range(walls.shape[1])]
            if i == r:
                chars[c] = "A"
            rows.append("".join(chars))
        out.append("\n".join(rows))
    return out


def register_envs() -> None:
    """Register ``goalscope/ObjectMaze-v0`` with Gymnasium (explicit, never as an import side effect)."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point=ObjectMazeEnv, vector_entry_point=ObjectMazeVectorEnv)
