"""The object maze: fixed dynamics, swappable reward, N environments stepped in one array operation.

Layout: a grid with outer walls. ``layout="maze"`` carves a perfect maze (recursive backtracker) and then knocks
out a few extra walls (``loop_prob``) so there is more than one route; ``layout="open"`` is a single room.
Generating a maze is sequential work, so each config owns a deterministic *pool* of layouts made once; every
episode draws a layout from the pool and places the agent and the objects at fresh random free cells. Evaluation
can use another ``layout_seed`` to test on mazes never trained on.

Observation: ``uint8[2 + K, H, W]`` one-hot planes: walls, agent, then one plane per object type. With
``cue=True`` K more planes follow, the plane of the cued type all ones: a reward of kind ``cued`` then pays for
that type, so the objective can be read from the observation instead of stored in the weights.
With ``obs="rgb"`` the same scene is a ``uint8[3, H*p, W*p]`` colour image instead (``p = cell_pixels``, each cell
a p x p block of one colour), drawn so that *no input channel names a type* (:mod:`goalscope.envs.colours`).
Actions: 0 up, 1 right, 2 down, 3 left. Walking into a wall leaves the agent in place. Stepping on an object
collects it (it disappears) and pays the reward's weight for its type.

The state is a handful of flat arrays indexed by env; ``step`` is pure array arithmetic with no Python loop over
envs. The observation buffer is updated in place (only the cells that changed), which is what makes the env fast;
the colour image is drawn from it (one table lookup per cell) when an observation is returned.

May import: goalscope.envs.colours, goalscope.envs.rewards, goalscope.errors, goalscope.inputs (its bounds).
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass, replace

import numpy as np

from goalscope.envs.colours import palette, render
from goalscope.envs.rewards import Reward
from goalscope.errors import ConfigError, check_fields
from goalscope.inputs import MAX_EPISODE_STEPS

N_ACTIONS = 4


@dataclass(frozen=True)
class MazeConfig:
    """The object maze: grid size, object types and counts, episode length, layout; makes vectorised envs
    (:meth:`make`) and defines the observation planes."""
    size: int = 9  # grid side including the outer walls; odd for "maze" layouts
    n_types: int = 4  # K object types
    n_per_type: int = 2  # objects of each type per episode
    max_steps: int = 48  # truncation
    layout: str = "maze"  # "maze" (corridors that need search) or "open" (one room)
    loop_prob: float = 0.1  # fraction of interior walls knocked out after carving, to create loops
    pool_size: int = 1024  # distinct layouts an env draws from
    layout_seed: int = 0  # which pool; use another one for held-out mazes
    # End early once every object the reward pays for is gone. Off by default: evaluation episodes always run the
    # full max_steps (so profiles are comparable under any reward), and training should see the same regime.
    end_when_collected: bool = False
    cue: bool = False  # add K constant planes showing a cued object type ("objective as pointer" tasks)
    fixed_cue: int = -1  # the cued type in every episode; -1 = a random type per episode
    view: str = "full"  # "full" grid, or "egocentric": a (2*size-1)-wide window centred on the agent
    # "planes" (one-hot, one plane per type) or "rgb": a colour image in which no channel names a type (envs.colours).
    # Both are left out of to_json at their defaults, so configs from before they existed keep their job keys.
    obs: str = "planes"
    cell_pixels: int = 2  # the side of a cell in "rgb" pixels

    def __post_init__(self):
        def integer(name: str, lo: int, hi: int = 10**9) -> None:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise ConfigError(f"env.{name} must be an integer in {lo}..{hi if hi < 10**9 else 'inf'}, got {v!r}")

        for name in ("end_when_collected", "cue"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"env.{name} must be true or false, got {getattr(self, name)!r}")
        if self.view not in ("full", "egocentric"):
            raise ConfigError(f"env.view must be 'full' or 'egocentric', got {self.view!r}")
        if self.obs not in ("planes", "rgb"):
            raise ConfigError(f"env.obs must be 'planes' or 'rgb', got {self.obs!r}")
        integer("cell_pixels", 1, 16)
        if self.obs != "rgb" and self.cell_pixels != 2:
            raise ConfigError(f"env.cell_pixels applies only to obs = 'rgb' (got {self.cell_pixels}, obs {self.obs!r})")
        if self.obs == "rgb" and self.cue:
            raise ConfigError("env.cue needs obs = 'planes': the cue planes have no place in the colour image")
        if self.layout not in ("maze", "open"):
            raise ConfigError(f"env.layout must be 'maze' or 'open', got {self.layout!r}")
        integer("size", 5, 63)
        if self.layout == "maze" and self.size % 2 == 0:
            raise ConfigError(f"env.size must be odd for layout 'maze', got {self.size}")
        integer("n_types", 1, 16)
        integer("n_per_type", 1)
        integer("max_steps", 1, MAX_EPISODE_STEPS)
        integer("pool_size", 1, 1_000_000)
        integer("layout_seed", 0)
        integer("fixed_cue", -1, self.n_types - 1)
        if isinstance(self.loop_prob, bool) or not isinstance(self.loop_prob, (int, float)) or not 0.0 <= self.loop_prob <= 1.0:
            raise ConfigError(f"env.loop_prob must be a number in [0, 1], got {self.loop_prob!r}")
        free = int((~layout_pool(self)[0]).sum())
        if free < 1 + self.n_types * self.n_per_type:
            raise ConfigError(
                f"env: {self.n_types}x{self.n_per_type} objects plus the agent do not fit in the {free} free cells "
                f"of a {self.size}x{self.size} {self.layout}"
            )

    family = "object_maze"
    has_oracle = True

    @property
    def n_actions(self) -> int:
        return N_ACTIONS

    def make(self, reward: Reward, n_envs: int, seed: int = 0) -> "MazeVecEnv":
        return MazeVecEnv(self, reward, n_envs, seed)

    def eval_config(self) -> "MazeConfig":
        """Evaluation episodes run the full max_steps, so counts of every type compare under any reward."""
        return replace(self, end_when_collected=False)

    @property
    def grid_shape(self) -> tuple[int, int, int]:
        """Planes over the whole grid, the env's internal observation."""
        return (2 + self.n_types * (2 if self.cue else 1), self.size, self.size)

    @property
    def obs_shape(self) -> tuple[int, int, int]:
        c, h, w = self.grid_shape
        if self.view == "egocentric":
            h, w = 2 * h - 1, 2 * w - 1
        return (3, h * self.cell_pixels, w * self.cell_pixels) if self.obs == "rgb" else (c, h, w)

    def to_json(self) -> dict:
        # No "family" key: the object maze is the default, and old run keys stay valid; for the same reason fields
        # added later are written only when they differ from their default.
        d = asdict(self)
        for name in _LATER_FIELDS:
            if d[name] == _DEFAULTS[name]:
                del d[name]
        return d

    @staticmethod
    def from_json(d: dict) -> "MazeConfig":
        return MazeConfig(**check_fields(MazeConfig, d, "env", extra=("family",)))


_LATER_FIELDS = ("obs", "cell_pixels")
_DEFAULTS = {f: MazeConfig.__dataclass_fields__[f].default for f in _LATER_FIELDS}


# ----------------------------------------------------------------------------------------------------------------
# Layouts


def _carve_maze(size: int, loop_prob: float, rng: np.random.Generator) -> np.ndarray:
    walls = np.ones((size, size), dtype=bool)
    cells = [(r, c) for r in range(1, size - 1, 2) for c in range(1, size - 1, 2)]
    start = cells[rng.integers(len(cells))]
    walls[start] = False
    stack = [start]
    while stack:
        r, c = stack[-1]
        nbrs = [(r + dr, c + dc, dr, dc) for dr, dc in ((-2, 0), (2, 0), (0, -2), (0, 2))
                if 0 < r + dr < size - 1 and 0 < c + dc < size - 1 and walls[r + dr, c + dc]]
        if not nbrs:
            stack.pop()
            continue
        nr, nc, dr, dc = nbrs[rng.integers(len(nbrs))]
        walls[r + dr // 2, c + dc // 2] = False
        walls[nr, nc] = False
        stack.append((nr, nc))
    # Knock out interior walls that separate two open cells (horizontally or vertically) to make loops.
    inner = np.zeros_like(walls)
    inner[1:-1, 1:-1] = walls[1:-1, 1:-1]
    between_h = inner & ~np.roll(walls, 1, 1) & ~np.roll(walls, -1, 1)
    between_v = inner & ~np.roll(walls, 1, 0) & ~np.roll(walls, -1, 0)
    candidates = np.argwhere(between_h ^ between_v)
    knock = candidates[rng.random(len(candidates)) < loop_prob]
    walls[knock[:, 0], knock[:, 1]] = False
    return walls


@functools.lru_cache(maxsize=32)
def _pool(size: int, layout: str, loop_prob: float, pool_size: int, layout_seed: int) -> np.ndarray:
    if layout == "open":
        walls = np.zeros((size, size), dtype=bool)
        walls[0, :] = walls[-1, :] = walls[:, 0] = walls[:, -1] = True
        pool = np.broadcast_to(walls, (pool_size, size, size)).copy()
    else:
        rng = np.random.default_rng([layout_seed, size, 7919])
        pool = np.stack([_carve_maze(size, loop_prob, rng) for _ in range(pool_size)])
    pool.setflags(write=False)
    return pool


def layout_pool(cfg: MazeConfig) -> np.ndarray:
    """``bool[pool_size, H, W]`` walls of every layout this config draws from (cached, read-only)."""
    return _pool(cfg.size, cfg.layout, float(cfg.loop_prob), cfg.pool_size, cfg.layout_seed)


# ----------------------------------------------------------------------------------------------------------------
# The vectorised env


class MazeVecEnv:
    """``n_envs`` object mazes stepped together, auto-resetting, deterministic for a seed.

    ``step`` returns ``(obs, reward, terminated, truncated, info)``; ``info`` describes the episodes that just
    ended (``done_idx``, their object ``counts``, ``steps``, ``returns`` and ``final_obs``) because the returned
    ``obs`` rows of those envs already show the next episode.
    """

    def __init__(self, cfg: MazeConfig, reward: Reward, n_envs: int, seed: int = 0):
        if n_envs < 1:
            raise ConfigError(f"n_envs must be positive, got {n_envs}")
        self.cfg = cfg
        self.n_envs = n_envs
        self.set_reward(reward)
        h = w = cfg.size
        self._moves = np.array([-w, 1, w, -1], dtype=np.int64)
        self._pool_flat = layout_pool(cfg).reshape(cfg.pool_size, h * w)
        self._object_types = np.repeat(np.arange(cfg.n_types, dtype=np.int8), cfg.n_per_type)
        self._ar = np.arange(n_envs)
        # State (flat cell indices); obs is kept in sync incrementally.
        self.walls = np.zeros((n_envs, h * w), dtype=bool)
        self.objects = np.full((n_envs, h * w), -1, dtype=np.int8)
        self.pos = np.zeros(n_envs, dtype=np.int64)
        self.t = np.zeros(n_envs, dtype=np.int64)
        self.counts = np.zeros((n_envs, cfg.n_types), dtype=np.int64)
        self.ep_return = np.zeros(n_envs, dtype=np.float64)
        self.left_rewarded = np.zeros(n_envs, dtype=np.int64)
        self.first = np.full(n_envs, -1, dtype=np.int64)  # type of the first object collected this episode
        self.cue = np.zeros(n_envs, dtype=np.int64)
        self._obs = np.zeros((n_envs, cfg.grid_shape[0], h * w), dtype=np.uint8)
        self._palette = palette(cfg.n_types)
        self.reset(seed)

    def set_reward(self, reward: Reward) -> None:
        if reward.n_types != self.cfg.n_types:
            raise ConfigError(f"reward {reward.name!r} has {reward.n_types} weights but the env has {self.cfg.n_types} object types")
        if reward.cued and not self.cfg.cue:
            raise ConfigError(f"reward {reward.name!r} pays for the cued type, but env.cue is false")
        self.reward = reward
        # Per-env weight rows (a cued reward differs by env); column -1 (no object) stays 0.
        self._weights = np.zeros((self.n_envs, self.cfg.n_types + 1), dtype=np.float32)
        self._weights[:, :-1] = reward.vector()
        if hasattr(self, "pos"):
            self._refresh_cued_weights(self._ar)

    def _refresh_cued_weights(self, idx: np.ndarray) -> None:
        if self.reward.cued:
            self._weights[idx, :-1] = 0.0
            self._weights[idx, self.cue[idx]] = 1.0

    def reset(self, seed: int | None = None) -> np.ndarray:
        if seed is not None:
            self.rng = np.random.default_rng(seed)
        self._reset_envs(self._ar)
        return self.observe()

    def observe(self) -> np.ndarray:
        return self._view(self._obs, self.pos)

    def _view(self, flat: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Observations from the internal full-grid planes: as they are, or a window centred on the agent
        (cells beyond the grid read as walls)."""
        c, s, _ = self.cfg.grid_shape
        grid = flat.reshape(len(flat), c, s, s)
        if self.cfg.view == "full":
            return render(grid, self._palette, self.cfg.cell_pixels) if self.cfg.obs == "rgb" else grid.copy()
        padded = np.zeros((len(flat), c, 3 * s - 2, 3 * s - 2), dtype=np.uint8)
        padded[:, 0] = 1
        padded[:, :, s - 1:2 * s - 1, s - 1:2 * s - 1] = grid
        r, col = np.divmod(pos, s)
        win = np.arange(2 * s - 1)
        rows, cols = r[:, None] + win, col[:, None] + win
        m = np.arange(len(flat))
        out = padded[m[:, None, None, None], np.arange(c)[None, :, None, None], rows[:, None, :, None], cols[:, None, None, :]]
        return render(out, self._palette, self.cfg.cell_pixels) if self.cfg.obs == "rgb" else out

    def _reset_envs(self, idx: np.ndarray) -> None:
        m = len(idx)
        if m == 0:
            return
        cfg = self.cfg
        layouts = self.rng.integers(cfg.pool_size, size=m)
        walls = self._pool_flat[layouts]
        # A random order of the free cells per env: first is the agent, then the objects.
        keys = self.rng.random(walls.shape)
        keys[walls] = 2.0
        cells = np.argsort(keys, axis=1)[:, : 1 + len(self._object_types)]
        self.walls[idx] = walls
        self.pos[idx] = cells[:, 0]
        objects = np.full((m, walls.shape[1]), -1, dtype=np.int8)
        np.put_along_axis(objects, cells[:, 1:], self._object_types[None, :], axis=1)
        self.objects[idx] = objects
        self.t[idx] = 0
        self.counts[idx] = 0
        self.ep_return[idx] = 0.0
        self.first[idx] = -1
        if cfg.cue:
            self.cue[idx] = cfg.fixed_cue if cfg.fixed_cue >= 0 else self.rng.integers(cfg.n_types, size=m)
            self._refresh_cued_weights(idx)
        self.left_rewarded[idx] = (self._weights[idx][:, self._object_types] > 0).sum(1)
        obs = np.zeros((m, cfg.grid_shape[0], walls.shape[1]), dtype=np.uint8)
        obs[:, 0] = walls
        obs[np.arange(m), 1, cells[:, 0]] = 1
        k = cfg.n_types
        obs[:, 2:2 + k] = objects[:, None, :] == np.arange(k, dtype=np.int8)[None, :, None]
        if cfg.cue:
            obs[np.arange(m), 2 + k + self.cue[idx]] = 1
        self._obs[idx] = obs

    def step(self, actions: np.ndarray):
        ar = self._ar
        actions = np.asarray(actions, dtype=np.int64)
        target = self.pos + self._moves[actions]
        new_pos = np.where(self.walls[ar, target], self.pos, target)
        self._obs[ar, 1, self.pos] = 0
        self._obs[ar, 1, new_pos] = 1
        self.pos = new_pos

        kind = self.objects[ar, new_pos]
        got = np.flatnonzero(kind >= 0)
        got_kind = kind[got].astype(np.int64)
        self.objects[got, new_pos[got]] = -1
        self._obs[got, 2 + got_kind, new_pos[got]] = 0
        self.counts[got, got_kind] += 1
        self.left_rewarded[got] -= self._weights[got, got_kind] > 0
        self.first[got] = np.where(self.first[got] < 0, got_kind, self.first[got])

        reward = self._weights[ar, kind] - np.float32(self.reward.step_cost)
        self.ep_return += reward
        self.t += 1
        truncated = self.t >= self.cfg.max_steps
        terminated = (self.left_rewarded == 0) & self.cfg.end_when_collected & (self._weights > 0).any(1)
        truncated &= ~terminated
        done_idx = np.flatnonzero(terminated | truncated)
        info = {}
        if len(done_idx):
            info = {
                "done_idx": done_idx,
                "counts": self.counts[done_idx].copy(),
                "steps": self.t[done_idx].copy(),
                "returns": self.ep_return[done_idx].copy(),
                "first": self.first[done_idx].copy(),
                "final_obs": self._view(self._obs[done_idx], self.pos[done_idx]),
                "final_pos": np.stack(np.divmod(self.pos[done_idx], self.cfg.size), axis=1),  # (row, col)
            }
            self._reset_envs(done_idx)
        return self.observe(), reward.astype(np.float32), terminated, truncated, info

    # -- resumable state ---------------------------------------------------------------------------------------------
    _STATE = ("walls", "objects", "pos", "t", "counts", "ep_return", "left_rewarded", "first", "cue", "_obs", "_weights")

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Arrays and the RNG state (JSON-able) that continue this env exactly where it is."""
        return {k: getattr(self, k).copy() for k in self._STATE}, self.rng.bit_generator.state

    def set_state(self, arrays: dict[str, np.ndarray], rng_state: dict) -> None:
        for k in self._STATE:
            if arrays[k].shape != getattr(self, k).shape:
                raise ConfigError(f"resume state: env array {k!r} has shape {arrays[k].shape}, expected {getattr(self, k).shape}")
            setattr(self, k, arrays[k].astype(getattr(self, k).dtype, copy=True))
        self.rng.bit_generator.state = rng_state

    # -- helpers for the oracle and renderers ----------------------------------------------------------------------
    def grid_state(self) -> dict:
        """A copy of the state as ``(N, H, W)`` grids, for planners and pictures."""
        h = w = self.cfg.size
        return {
            "weights": self._weights.copy(),  # (N, K+1) reward weight per object type, last column 0
            "walls": self.walls.reshape(-1, h, w).copy(),
            "objects": self.objects.reshape(-1, h, w).copy(),
            "pos": np.stack(np.divmod(self.pos, w), axis=1),
        }
