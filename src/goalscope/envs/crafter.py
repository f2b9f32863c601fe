"""Crafter (Hafner 2021) through Gymnasium's API, with its achievements as goalscope events (``goalscope/Crafter-v0``).

Crafter is an open-world survival game whose 22 achievements (collect wood, drink water, eat a cow, place a
table...) are what the Craftax graft studies reward separately, so an objective is a weighting of achievements
while the world stays the same. Crafter speaks the old Gym API (``reset() -> obs``, ``step -> 4-tuple``, no
seeds); :class:`CrafterEnv` gives it Gymnasium's and reports every step's ``info["events"]``: how many times each
of the chosen achievements was unlocked in that step (Crafter counts every unlock, not only the first).

The env is Crafter's own: nothing in its dynamics is changed. The wrapper reads what Crafter reports
(``info["achievements"]``, ``info["discount"]``) and only sets the world seed on ``reset(seed=...)``, so episode
``e`` of a seeded batch is the same world for every policy.

Needs the ``crafter`` package (``pip install 'goalscope[crafter]'``, which also brings numba: Crafter's world
generation calls OpenSimplex noise per cell, 0.9 s per reset in pure Python and 0.06 s compiled). May import:
goalscope.errors.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

from goalscope.errors import ConfigError, import_failure

CRAFTER_ID = "goalscope/Crafter-v0"
ACHIEVEMENTS = ("collect_coal", "collect_diamond", "collect_drink", "collect_iron", "collect_sapling", "collect_stone",
                "collect_wood", "defeat_skeleton", "defeat_zombie", "eat_cow", "eat_plant", "make_iron_pickaxe",
                "make_iron_sword", "make_stone_pickaxe", "make_stone_sword", "make_wood_pickaxe", "make_wood_sword",
                "place_furnace", "place_plant", "place_stone", "place_table", "wake_up")


def _crafter():
    try:
        import crafter
    except ImportError as e:
        raise ConfigError(import_failure("crafter", f"{CRAFTER_ID} needs the crafter package",
                                         "pip install 'goalscope[crafter]'", e)) from None
    return crafter


class CrafterEnv(gym.Env):
    """One Crafter world. Observations are Crafter's ``uint8[size, size, 3]`` frames; 17 discrete actions.

    ``achievements`` picks the event types (default: all 22, in Crafter's order); ``length`` is the episode's step
    limit (truncation), death ends it (termination). ``area``, ``view`` and ``size`` are Crafter's own options.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, achievements=ACHIEVEMENTS, length: int = 10000, area=(64, 64), view=(9, 9), size=(64, 64),
                 render_mode: str | None = None):
        unknown = [a for a in achievements if a not in ACHIEVEMENTS]
        if unknown:
            raise ConfigError(f"env.kwargs.achievements: {unknown[0]!r} is not a Crafter achievement "
                              f"(known: {', '.join(ACHIEVEMENTS)})")
        if render_mode not in (None, "rgb_array"):
            raise ConfigError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        self.achievements = tuple(achievements)
        self.render_mode = render_mode
        self.max_steps = int(length)  # the episode limit, where goalscope checks env.max_steps against it
        self._env = _crafter().Env(area=tuple(area), view=tuple(view), size=tuple(size), reward=False,
                                   length=length, seed=0)
        self.observation_space = gym.spaces.Box(0, 255, (*tuple(size), 3), dtype=np.uint8)
        self.action_space = gym.spaces.Discrete(self._env.action_space.n)
        self._last = np.zeros(len(self.achievements), dtype=np.int64)

    def _counts(self, info: dict) -> np.ndarray:
        return np.array([info["achievements"][a] for a in self.achievements], dtype=np.int64)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        if seed is not None:  # Crafter draws episode e's world from hash((seed, e)): restart its episode count
            self._env._seed, self._env._episode = int(seed), 0
        obs = self._env.reset()
        self._last[:] = 0
        return obs, {"events": np.zeros(len(self.achievements), dtype=np.int64)}

    def step(self, action):
        obs, _, done, info = self._env.step(int(action))
        counts = self._counts(info)
        events, self._last = counts - self._last, counts
        terminated = done and info["discount"] == 0  # Crafter's discount is 0 exactly when the player died
        return obs, 0.0, bool(terminated), bool(done and not terminated), {"events": events}

    def render(self):
        """The world as the player sees it, at 4x the observation's resolution (for videos)."""
        if self.render_mode is None or self._env._player is None:
            return None
        return self._env.render(tuple(4 * np.asarray(self.observation_space.shape[:2])))


def register_crafter() -> None:
    """Register ``goalscope/Crafter-v0`` (the entry point is a string: crafter is imported only by ``gym.make``)."""
    if CRAFTER_ID not in gym.registry:
        gym.register(id=CRAFTER_ID, entry_point="goalscope.envs.crafter:CrafterEnv")
