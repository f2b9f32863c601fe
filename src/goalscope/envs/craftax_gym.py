"""Craftax-Classic through Gymnasium's API: ``goalscope/Craftax-Classic-Symbolic-v0`` and ``-Pixels-v0``.

``import goalscope`` registers both ids (string entry points: jax and craftax are imported only by ``gym.make``):

    import gymnasium as gym, goalscope
    envs = gym.make_vec("goalscope/Craftax-Classic-Symbolic-v0", num_envs=256)       # one jitted batch
    env = gym.make("goalscope/Craftax-Classic-Pixels-v0", render_mode="rgb_array")   # one world (videos)

:class:`CraftaxVectorEnv` is a ``gymnasium.vector.VectorEnv`` over goalscope's own batch
(:class:`goalscope.envs.craftax.CraftaxVecEnv`: one ``jax.jit`` step for all envs, optimistic resets), with
Gymnasium's same-step autoreset (an ended episode's last observation in ``info["final_obs"]``). Both report every
step's ``info["events"]`` (the chosen achievements unlocked in it), the key goalscope's ``gym_events`` family reads,
and pay ``reward`` (a goalscope reward such as ``"collect:eat_cow"``; default: one per achievement unlocked,
Craftax's achievement reward without its health term).

May import: goalscope.envs.craftax, goalscope.envs.rewards, goalscope.errors.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv

from goalscope.envs.craftax import ACHIEVEMENTS, KIND, PIXELS_ID, SYMBOLIC_ID, CraftaxConfig, CraftaxVecEnv
from goalscope.envs.rewards import Reward, parse_reward
from goalscope.errors import ConfigError

ID_OF = {kind: env_id for env_id, kind in KIND.items()}


def _config(obs: str, achievements, max_steps: int, reset_pool: int) -> CraftaxConfig:
    if obs not in ID_OF:
        raise ConfigError(f"obs must be one of {', '.join(ID_OF)}, got {obs!r}")
    return CraftaxConfig(ID_OF[obs], list(achievements), max_steps, reset_pool)


def _reward(reward, cfg: CraftaxConfig) -> Reward:
    if reward is None:
        return Reward("achievements", (1.0,) * cfg.n_types)
    if isinstance(reward, str):
        return parse_reward(reward, cfg.n_types, cfg.event_names)
    if not isinstance(reward, Reward):
        raise ConfigError(f"reward must be a reward name such as 'collect:eat_cow', a Reward or None, got {reward!r}")
    return reward


def _space(cfg: CraftaxConfig) -> gym.spaces.Box:
    return gym.spaces.Box(0, 255, cfg.obs_shape, dtype=np.uint8)


class CraftaxEnv(gym.Env):
    """One Craftax-Classic world (a batch of one). ``info["events"]`` every step; ``render()`` draws the world
    with Craftax's own textures (``rgb_array``, 16 pixels a cell)."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 8}

    def __init__(self, obs: str = "Symbolic", achievements=ACHIEVEMENTS, max_steps: int = 10000,
                 reward: Reward | str | None = None, render_mode: str | None = None, reset_pool: int = 1):
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.cfg = _config(obs, achievements, max_steps, reset_pool)
        self.render_mode = render_mode
        self.max_steps = self.cfg.max_steps  # the episode limit, where goalscope checks env.max_steps against it
        self.observation_space = _space(self.cfg)
        self.action_space = gym.spaces.Discrete(self.cfg.n_actions)
        self._env = CraftaxVecEnv(self.cfg, _reward(reward, self.cfg), 1, seed=0)
        self._ended = False

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None or not self._ended:  # after an ended episode the batch already holds a fresh world
            self._env.reset(seed)
        self._ended = False
        return self._env.observe()[0], {"events": np.zeros(self.cfg.n_types, dtype=np.int64)}

    def step(self, action):
        before = self._env.counts[0].copy()
        obs, reward, term, trunc, info = self._env.step(np.array([int(action)]))
        if info:  # the batch has started the next episode: Gymnasium wants this one's last observation
            self._ended = True
            return info["final_obs"][0], float(reward[0]), bool(term[0]), bool(trunc[0]), {
                "events": info["counts"][0] - before, "episode_events": info["counts"][0],
                "steps": int(info["steps"][0])}
        return obs[0], float(reward[0]), False, False, {"events": self._env.counts[0] - before}

    def render(self):
        if self.render_mode != "rgb_array":
            return None
        return render_world(self._env.state)[0]


class CraftaxVectorEnv(VectorEnv):
    """``num_envs`` Craftax-Classic worlds as a Gymnasium ``VectorEnv`` (same-step autoreset)."""

    metadata = {"autoreset_mode": AutoresetMode.SAME_STEP}

    def __init__(self, num_envs: int, obs: str = "Symbolic", achievements=ACHIEVEMENTS, max_steps: int = 10000,
                 reward: Reward | str | None = None, reset_pool: int = 0, **kwargs):
        if kwargs:  # what gym.make_vec passes that a JAX batch has no use for (render_mode=None...)
            unknown = sorted(k for k, v in kwargs.items() if v is not None)
            if unknown:
                raise ConfigError(f"CraftaxVectorEnv takes no argument {unknown[0]!r}")
        self.cfg = _config(obs, achievements, max_steps, reset_pool)
        self.num_envs = num_envs
        self._env = CraftaxVecEnv(self.cfg, _reward(reward, self.cfg), num_envs, seed=0)
        self.single_observation_space = _space(self.cfg)
        self.single_action_space = gym.spaces.Discrete(self.cfg.n_actions)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)

    def reset(self, *, seed=None, options=None):
        if isinstance(seed, (list, tuple)) and len(seed) == self.num_envs:
            seed = seed[0]  # Gymnasium's one seed per env: world i of a batch comes from (seed, i) anyway
        return self._env.reset(seed), {}

    def step(self, actions):
        before = self._env.counts.copy()
        obs, reward, term, trunc, info = self._env.step(actions)
        events = self._env.counts - before
        out = {"events": events}
        if info:
            idx = info["done_idx"]
            events[idx] = info["counts"] - before[idx]
            mask = np.zeros(self.num_envs, dtype=bool)
            mask[idx] = True
            final_obs = np.zeros_like(obs)
            final_obs[idx] = info["final_obs"]
            out.update(final_obs=final_obs, _final_obs=mask)
        return obs, reward, term, trunc, out


def render_world(state) -> np.ndarray:
    """``uint8[N, 144, 144, 3]`` pictures of a batch's worlds with Craftax's textures (16 pixels a cell)."""
    return np.asarray(_renderer()(state)).astype(np.uint8)


def _renderer():
    global _RENDER
    if _RENDER is None:
        import jax
        from craftax.craftax_classic.constants import BLOCK_PIXEL_SIZE_IMG
        from craftax.craftax_classic.renderer import make_craftax_pixel_renderer

        _RENDER = jax.jit(jax.vmap(make_craftax_pixel_renderer(BLOCK_PIXEL_SIZE_IMG)))
    return _RENDER


_RENDER = None


def register_craftax() -> None:
    """Register both Craftax-Classic ids with Gymnasium (cheap: the entry points are strings)."""
    for env_id, kind in KIND.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="goalscope.envs.craftax_gym:CraftaxEnv",
                         vector_entry_point="goalscope.envs.craftax_gym:CraftaxVectorEnv", kwargs={"obs": kind})


__all__ = ["CraftaxEnv", "CraftaxVectorEnv", "PIXELS_ID", "SYMBOLIC_ID", "register_craftax", "render_world"]
