"""Craftax-Classic (Matthews et al. 2024), Crafter reimplemented in JAX, as an env family (``family = "craftax"``).

Craftax-Classic is Crafter's game (the same 22 achievements, 17 actions, 64x64 worlds) written in JAX, so a whole
batch of worlds steps in one compiled call: the env of the Craftax graft studies at ~40x Crafter's speed on the
same CPU. ``[env] family = "craftax"`` with ``id = "goalscope/Craftax-Classic-Symbolic-v0"`` (or ``-Pixels-v0``)
gives goalscope's vectorised-env interface over it (:class:`CraftaxVecEnv`), so training, evaluation, validation
and the report need no special case:

* **batched and compiled**: Craftax's own ``step_env`` over all envs under one ``jax.jit`` (``auto_reset=False``),
  with *optimistic resets*: fresh worlds generated in small pools for the envs that ended, never one per env per
  step (:mod:`goalscope.envs.craftax_jax`);
* **achievements as events**: the state's achievement flags differenced per step, one event type per achievement
  (``achievements = [...]`` picks them; default all 22 in Craftax's order). Craftax-Classic keeps one flag per
  achievement per episode, so each type happens at most once per episode (Crafter counts every unlock);
* **bit-reproducible**: every world and every step's randomness come from keys split from the run's seed, so two
  runs with one seed and one policy give the same episodes bit for bit (Crafter's are not), and episode ``e`` of
  a seeded batch is the same world for every policy and batch size;
* **observations as bytes, without copies**: ``uint8`` (goalscope stores rollouts as bytes), handed from JAX to
  numpy/torch through dlpack. Symbolic: Craftax's 1,345 numbers, the map, direction and sleep flag 0/1, the
  inventory and health/food/drink/energy as the game's integers (Craftax divides them by 10), light level in
  tenths; an MLP reads them as they are. Pixels: Craftax's 63x63 RGB frame, channels first, for ``nature_cnn``;
* **resumable**: the env hands its whole state to training snapshots, so a killed job resumes bit-identically.

Needs ``pip install 'goalscope[craftax]'`` (jax and craftax; imported only when an env is made). The first batch
of each size compiles (tens of seconds on a CPU; once per process and batch size). ``import goalscope`` also
registers both ids with Gymnasium (:mod:`goalscope.envs.craftax_gym`) for other trainers.

May import: goalscope.envs.craftax_jax, goalscope.envs.rewards, goalscope.errors.
"""

from __future__ import annotations

import dataclasses
import importlib.util
from dataclasses import dataclass, field

import numpy as np

from goalscope.envs import craftax_jax
from goalscope.envs.events import new_tallies, tally
from goalscope.envs.rewards import Reward
from goalscope.errors import ConfigError, check_fields, import_failure

SYMBOLIC_ID = "goalscope/Craftax-Classic-Symbolic-v0"
PIXELS_ID = "goalscope/Craftax-Classic-Pixels-v0"
KIND = {SYMBOLIC_ID: "Symbolic", PIXELS_ID: "Pixels"}
# Craftax-Classic's achievements in its own order (craftax_classic.constants.Achievement): the state's flags' columns
ACHIEVEMENTS = ("collect_wood", "place_table", "eat_cow", "collect_sapling", "collect_drink", "make_wood_pickaxe",
                "make_wood_sword", "place_plant", "defeat_zombie", "collect_stone", "place_stone", "eat_plant",
                "defeat_skeleton", "make_stone_pickaxe", "make_stone_sword", "wake_up", "place_furnace",
                "collect_coal", "collect_iron", "collect_diamond", "make_iron_pickaxe", "make_iron_sword")
INSTALL = "pip install 'goalscope[craftax]'"


def require_craftax(what: str = "the craftax env family") -> None:
    """Import jax and craftax, or one ConfigError saying how to install them."""
    for package in ("jax", "craftax"):
        try:
            importlib.import_module(package)
        except ImportError as e:
            raise ConfigError(import_failure(package, f"{what} needs {package}", INSTALL, e)) from None


def craftax_available() -> bool:
    """Whether jax and craftax are installed (without importing them)."""
    return all(importlib.util.find_spec(p) is not None for p in ("jax", "craftax"))


@dataclass(frozen=True)
class CraftaxConfig:
    """Craftax-Classic worlds stepped in JAX; events are the chosen achievements (``family = "craftax"``)."""

    id: str = SYMBOLIC_ID
    achievements: list = field(default_factory=lambda: list(ACHIEVEMENTS))
    max_steps: int = 10000  # the episode limit (Craftax's max_timesteps) and evaluation episodes' length
    # Fresh worlds generated at once for the envs whose episode ended (0: 16, or the batch if smaller): each ended
    # env takes the next unused world of the pool, an empty pool is refilled, leftovers wait for later steps. It
    # changes which world an env gets next, so it is part of the run.
    reset_pool: int = 0
    event_word: str = "achievements"  # what the report calls the events
    family = "craftax"
    has_oracle = False

    def __post_init__(self):
        if self.id not in KIND:
            raise ConfigError(f"env.id {self.id!r} is not a Craftax env (known: {', '.join(KIND)})")
        if not isinstance(self.achievements, (list, tuple)) or not self.achievements:
            raise ConfigError(f"env.achievements must be a non-empty list of achievement names, got "
                              f"{self.achievements!r}")
        unknown = [a for a in self.achievements if a not in ACHIEVEMENTS]
        if unknown:
            raise ConfigError(f"env.achievements: {unknown[0]!r} is not a Craftax-Classic achievement "
                              f"(known: {', '.join(ACHIEVEMENTS)})")
        dup = sorted({a for a in self.achievements if list(self.achievements).count(a) > 1})
        if dup:
            raise ConfigError(f"env.achievements lists {dup[0]!r} twice; each event type needs its own name")
        object.__setattr__(self, "achievements", list(self.achievements))
        for name, lo in (("max_steps", 1), ("reset_pool", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise ConfigError(f"env.{name} must be an integer >= {lo}, got {v!r}")
        if not isinstance(self.event_word, str):
            raise ConfigError(f"env.event_word must be a string, got {self.event_word!r}")

    @property
    def kind(self) -> str:
        """``"Symbolic"`` or ``"Pixels"``."""
        return KIND[self.id]

    @property
    def n_types(self) -> int:
        return len(self.achievements)

    @property
    def event_names(self) -> list[str]:
        """The event types' names (the chosen achievements), by which rewards, tables and figures name them."""
        return list(self.achievements)

    @property
    def types(self) -> tuple[int, ...]:
        """The chosen achievements' columns in Craftax's achievement flags."""
        return tuple(ACHIEVEMENTS.index(a) for a in self.achievements)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        if not craftax_available():
            require_craftax(f"env.id {self.id!r}")
        return craftax_jax.obs_shape(self.kind)

    @property
    def n_actions(self) -> int:
        return craftax_jax.N_ACTIONS

    def make(self, reward: Reward, n_envs: int, seed: int = 0) -> "CraftaxVecEnv":
        return CraftaxVecEnv(self, reward, n_envs, seed)

    def make_single(self, render_mode: str | None = None):
        """One Gymnasium env over the same game (videos, :meth:`Checkpoint.make_env`), made through Gymnasium's
        registry (``goalscope.envs.craftax_gym``, registered by ``import goalscope``)."""
        import gymnasium as gym

        return gym.make(self.id, achievements=self.achievements, max_steps=self.max_steps,
                        **({"render_mode": render_mode} if render_mode else {}))

    def eval_config(self) -> "CraftaxConfig":
        return self

    def pool(self, n_envs: int) -> int:
        """Fresh worlds per reset round for a batch of ``n_envs``."""
        return min(self.reset_pool or craftax_jax.default_pool(n_envs), n_envs)

    def to_json(self) -> dict:
        d = {"family": self.family, **dataclasses.asdict(self)}
        if d["event_word"] == "achievements":
            del d["event_word"]
        return d

    @staticmethod
    def from_json(d: dict) -> "CraftaxConfig":
        return CraftaxConfig(**check_fields(CraftaxConfig, d, "env", extra=("family",)))


class CraftaxVecEnv:
    """``n_envs`` Craftax-Classic worlds behind the interface of :class:`goalscope.envs.maze.MazeVecEnv`:
    ``reset(seed) -> obs``, ``step(actions) -> (obs, reward, terminated, truncated, info)`` with, for the episodes
    that ended, ``done_idx``, ``counts`` (their events per type), ``steps``, ``returns``, ``first`` (the first
    type each made), ``final_obs`` and ``achievements`` (Craftax's own end-of-episode report of the chosen
    achievements, which ``counts`` equal). Observations are numpy views of JAX's buffers (read, don't write)."""

    def __init__(self, cfg: CraftaxConfig, reward: Reward, n_envs: int, seed: int = 0):
        if reward.cued:
            raise ConfigError(f"reward {reward.name!r}: cued rewards exist only in the object maze")
        if reward.n_types != cfg.n_types:
            raise ConfigError(f"reward {reward.name!r} has {reward.n_types} weights but the env has {cfg.n_types} "
                              f"event types")
        if isinstance(n_envs, bool) or not isinstance(n_envs, (int, np.integer)) or n_envs < 1:
            raise ConfigError(f"n_envs must be a positive integer, got {n_envs!r}")
        require_craftax(f"env.id {cfg.id!r}")
        self.cfg, self.n_envs = cfg, int(n_envs)
        self.set_reward(reward)
        self._core = craftax_jax.core(cfg.kind, self.n_envs, cfg.pool(self.n_envs), cfg.max_steps, cfg.types)
        self.reset(seed)

    def set_reward(self, reward: Reward) -> None:
        self.reward, self._weights = reward, reward.vector().astype(np.float64)

    def reset(self, seed: int | None = None) -> np.ndarray:
        import jax.numpy as jnp

        if seed is None:  # a fresh batch, continuing the stream of the last seed given
            seed = int(self._stream.integers(2**63))
        else:
            seed = _seed(seed)
            self._stream = np.random.default_rng(seed)
        self._state, self._rng, obs = self._core.reset(jnp.asarray(craftax_jax.seed_key(seed)))
        self._obs = craftax_jax.to_numpy(obs)
        new_tallies(self, self.cfg.n_types)
        return self._obs

    def observe(self) -> np.ndarray:
        return self._obs

    @property
    def state(self):
        """The batch's Craftax ``EnvState`` (a pytree of JAX arrays with a leading env axis). The next step reuses
        its buffers (donated to the compiled step): copy what you keep (``np.array(env.state.map)``). Settable
        (``env.state = env.state.replace(...)``), for tests and tools that put the worlds in a given state."""
        return self._state[0]

    @state.setter
    def state(self, worlds) -> None:
        self._state = (worlds, *self._state[1:])

    def step(self, actions):
        import jax.numpy as jnp

        actions = np.asarray(actions)
        if actions.shape != (self.n_envs,) or actions.dtype.kind not in "iu" or not (
                (actions >= 0) & (actions < craftax_jax.N_ACTIONS)).all():
            raise ConfigError(f"actions must be {self.n_envs} integers from 0 to {craftax_jax.N_ACTIONS - 1}, got "
                              f"an array of shape {actions.shape} ({actions.dtype})")
        out = self._core.step(self._state, self._rng, jnp.asarray(actions, dtype=jnp.int32))
        self._state, self._rng, obs, final_obs, events, term, trunc, reported = out
        events, term, trunc = np.asarray(events, dtype=np.int64), np.asarray(term), np.asarray(trunc)
        reward, info = tally(self, events, term | trunc)
        if info:
            done_idx = info["done_idx"]
            info["final_obs"] = craftax_jax.to_numpy(final_obs)[done_idx]
            info["achievements"] = np.asarray(reported)[done_idx].astype(np.int64)
        self._obs = craftax_jax.to_numpy(obs)
        return self._obs, reward.astype(np.float32), term, trunc, info

    def get_state(self) -> tuple[dict[str, np.ndarray], dict]:
        """Every array of the batch (the worlds, the pool of fresh ones, the key, the episode tallies) for a
        training snapshot."""
        import jax

        # copies: the next step hands the state's buffers to JAX to reuse (donated)
        arrays = {f"world{jax.tree_util.keystr(p)}": _savable(np.array(x))
                  for p, x in jax.tree_util.tree_flatten_with_path(self._state)[0]}
        arrays.update(rng=_savable(np.array(self._rng)), obs=np.array(self._obs), counts=self.counts.copy(),
                      t=self.t.copy(), ep_return=self.ep_return.copy(), first=self.first.copy())
        return arrays, {"stream": self._stream.bit_generator.state}

    def set_state(self, arrays: dict[str, np.ndarray], rng_state: dict) -> None:
        """Continue from :meth:`get_state`'s arrays (the same config and batch size)."""
        import jax
        import jax.numpy as jnp

        paths, treedef = jax.tree_util.tree_flatten_with_path(self._state)
        # as the leaves were (a snapshot stores a scalar as one element: numpy's ascontiguousarray)
        leaves = [np.asarray(arrays[f"world{jax.tree_util.keystr(p)}"]).astype(x.dtype).reshape(x.shape)
                  for p, x in paths]
        leaves = [jnp.asarray(x) for x in leaves]
        self._state = jax.tree_util.tree_unflatten(treedef, leaves)
        self._rng = jnp.asarray(np.asarray(arrays["rng"]).astype(np.uint32))
        self._obs = np.asarray(arrays["obs"]).astype(np.uint8)
        self.counts, self.t = np.asarray(arrays["counts"], np.int64).copy(), np.asarray(arrays["t"], np.int64).copy()
        self.ep_return = np.asarray(arrays["ep_return"], float).copy()
        self.first = np.asarray(arrays["first"], np.int64).copy()
        self._stream.bit_generator.state = rng_state["stream"]

    def close(self) -> None:
        """Nothing to release but the arrays (no processes, no files)."""
        self._state = self._rng = None


def _seed(seed) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**64:
        raise ConfigError(f"seed must be an integer from 0 to 2**64 - 1, got {str(seed)[:60]!r}")
    return int(seed)


def _savable(a: np.ndarray) -> np.ndarray:
    """``a`` in a dtype every snapshot format stores (a key's uint32 as int64; set_state casts back)."""
    return a.astype(np.int64) if a.dtype == np.uint32 else a
