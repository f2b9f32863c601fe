"""The object maze through Gymnasium's API, for third-party trainers (Stable-Baselines3, CleanRL scripts...).

``ObjectMazeEnv`` is a single ``gymnasium.Env``, registered as ``goalscope/ObjectMaze-v0`` when ``goalscope`` is
imported (Gymnasium 1.x has no plugin entry points, so this is how ``gym.make`` finds it, as with MiniGrid):

    import gymnasium as gym, goalscope
    env = gym.make("goalscope/ObjectMaze-v0", size=7, n_types=5, reward="collect:0", render_mode="rgb_array")

Maze options are keyword arguments (or ``config=`` a :class:`MazeConfig` or a dict). Every step's
``info["events"]`` holds the objects of each type collected in that step, the same key the ``gym_events`` family
reads, so a goalscope maze can itself be run through that family. ``ObjectMazeVectorEnv`` is a
``gymnasium.vector.VectorEnv`` over the native vectorised env, using Gymnasium's same-step autoreset (the final
observation of an ended episode is in ``info``).

May import: goalscope.envs.maze, goalscope.envs.rewards, goalscope.errors.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from goalscope.envs.maze import N_ACTIONS, MazeConfig, MazeVecEnv
from goalscope.envs.rewards import Reward, parse_reward
from goalscope.errors import ConfigError

ENV_ID = "goalscope/ObjectMaze-v0"


def _reward(reward: Reward | str, cfg: MazeConfig) -> Reward:
    return parse_reward(reward, cfg.n_types) if isinstance(reward, str) else reward


def _config(config: MazeConfig | dict | None, options: dict) -> MazeConfig:
    """A MazeConfig from ``config`` (a MazeConfig, a dict or None) with keyword ``options`` on top."""
    if isinstance(config, MazeConfig):
        base = config.to_json()
    elif isinstance(config, dict) or config is None:
        base = dict(config or {})
    else:
        raise ConfigError(f"config must be a MazeConfig or a dict of its fields, got {type(config).__name__}")
    return MazeConfig.from_json({**base, **options})


def _seed(seed) -> int | None:
    """``seed`` as Gymnasium takes it (None or an integer >= 0; numpy's integers too), else one ConfigError."""
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be None or an integer >= 0, got {str(seed)[:60]!r}")
    return int(seed)


def _obs_space(cfg: MazeConfig) -> gym.spaces.Box:
    return gym.spaces.Box(0, 1, cfg.obs_shape, dtype=np.uint8)


class ObjectMazeEnv(gym.Env):
    """One object maze. ``info["events"]`` every step (objects of each type collected in it); at an episode's end
    also ``info["episode_events"]`` (its totals) and ``info["steps"]``. Renders as ``rgb_array`` or ``ansi``."""

    metadata = {"render_modes": ["rgb_array", "ansi"], "render_fps": 8}

    def __init__(self, config: MazeConfig | dict | None = None, reward: Reward | str = "collect:0",
                 render_mode: str | None = None, **maze_options):
        self.cfg = _config(config, maze_options)
        if render_mode not in (None, *self.metadata["render_modes"]):
            raise ConfigError(f"render_mode must be one of {self.metadata['render_modes']}, got {render_mode!r}")
        self.observation_space = _obs_space(self.cfg)
        self.action_space = gym.spaces.Discrete(N_ACTIONS)
        self.render_mode = render_mode
        self._env = MazeVecEnv(self.cfg, _reward(reward, self.cfg), 1, seed=0)
        self._frame: dict | None = None  # the grid to render (the final one after an episode ends)

    def reset(self, *, seed=None, options=None):
        seed = _seed(seed)
        super().reset(seed=seed)
        # Without a seed, continue the env's own stream: a fresh episode, still reproducible from the first seed.
        self._env.reset(int(self.np_random.integers(2**31)) if seed is None else seed)
        self._frame = None
        return self._env.observe()[0], {}

    def step(self, action):
        if isinstance(action, np.ndarray) and action.size == 1:
            action = action.reshape(())  # what a vectorised caller hands one env
        if not self.action_space.contains(action):  # -1 and 1.5 would move the agent somewhere, 4 fail deep inside
            got = (f"an array of shape {action.shape} ({action.dtype})" if isinstance(action, np.ndarray)
                   else repr(action)[:60])
            raise ConfigError(f"action must be an integer from 0 to {N_ACTIONS - 1}, got {got}")
        before = self._env.counts[0].copy()
        grid = self._env.grid_state()
        obs, reward, term, trunc, info = self._env.step(np.array([action]))
        out_info = {"events": self._env.counts[0] - before}
        self._frame = None
        if info:  # the vector env already started the next episode; Gymnasium wants the final observation
            obs = info["final_obs"]
            out_info = {"events": info["counts"][0] - before, "episode_events": info["counts"][0],
                        "steps": int(info["steps"][0])}
            grid["pos"] = info["final_pos"]
            grid["objects"][0][tuple(info["final_pos"][0])] = -1
            self._frame = grid
        return obs[0], float(reward[0]), bool(term[0]), bool(trunc[0]), out_info

    def render(self):
        if self.render_mode == "ansi":
            return render_ansi(self._env)[0]
        if self.render_mode == "rgb_array":
            return render_rgb(self._frame or self._env.grid_state())[0]
        return None


class ObjectMazeVectorEnv(VectorEnv):
    """The object maze as a Gymnasium ``VectorEnv`` of ``num_envs`` mazes (same-step autoreset), for vectorised
    libraries; the same maze goalscope trains in."""
    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int, config: MazeConfig | dict | None = None, reward: Reward | str = "collect:0",
                 **maze_options):
        self.cfg = _config(config, maze_options)
        self.num_envs = num_envs
        self._env = MazeVecEnv(self.cfg, _reward(reward, self.cfg), num_envs, seed=0)
        self.single_observation_space = _obs_space(self.cfg)
        self.single_action_space = gym.spaces.Discrete(N_ACTIONS)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)

    def reset(self, *, seed=None, options=None):
        if isinstance(seed, (list, tuple)) and len(seed) == self.num_envs:
            seed = seed[0]  # Gymnasium's one seed per env: the maze seeds env i with seed + i itself
        seed = _seed(seed)
        if seed is None:  # a fresh batch of episodes, continuing the env's own random stream
            return self._env.reset(), {}
        return self._env.reset(seed), {}

    def step(self, actions):
        try:
            actions = np.asarray(actions)
        except (ValueError, TypeError):  # ragged lists
            actions = np.zeros(0, dtype=object)
        if actions.shape != (self.num_envs,) or actions.dtype.kind not in "iu" or not (
                (actions >= 0) & (actions < N_ACTIONS)).all():
            raise ConfigError(f"actions must be {self.num_envs} integers from 0 to {N_ACTIONS - 1}, got an array of "
                              f"shape {actions.shape} ({actions.dtype})")
        obs, reward, term, trunc, info = self._env.step(actions)
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


# Cell colours for rgb_array frames: floor, wall, agent, then object types (tab10, as in the report's figures).
_FLOOR, _WALL, _AGENT = (240, 240, 235), (60, 60, 70), (20, 20, 20)
_TYPES = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
          (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def render_rgb(grid: dict, cell: int = 12) -> np.ndarray:
    """``uint8[N, H*cell, W*cell, 3]`` pictures of a :meth:`MazeVecEnv.grid_state`: walls, objects coloured by
    type, the agent as a dark square inset in its cell. Vectorised: one lookup over every cell of every env."""
    walls, objects, pos = grid["walls"], grid["objects"], grid["pos"]
    palette = np.array([_FLOOR, _WALL, *(_TYPES * 2)], dtype=np.uint8)
    index = np.where(walls, 1, np.where(objects >= 0, 2 + objects % 20, 0))
    img = palette[index].repeat(cell, axis=1).repeat(cell, axis=2)
    inset = slice(cell // 4, cell - cell // 4)
    for n, (r, c) in enumerate(pos):
        img[n, r * cell:(r + 1) * cell, c * cell:(c + 1) * cell][inset, inset] = _AGENT
    return img


def register_envs() -> None:
    """Register ``goalscope/ObjectMaze-v0`` with Gymnasium; ``import goalscope`` calls it (cheap: the entry point is
    a string, resolved only by ``gym.make``)."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="goalscope.envs.gym:ObjectMazeEnv",
                     vector_entry_point="goalscope.envs.gym:ObjectMazeVectorEnv")
