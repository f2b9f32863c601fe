"""The JAX side of Craftax-Classic: a batch of worlds stepped under one ``jax.jit``, with optimistic resets.

Only this module imports ``jax`` and ``craftax``, and only when a batch is built (:func:`core`), so goalscope
imports and runs without them. What it builds, per (observation kind, batch size, pool size, episode limit,
achievements):

* ``reset(key) -> (carry, rng, obs)``: world ``i`` from ``fold_in(fold_in(key, 0), i)``, so a world depends on the
  seed and its index only (episode ``e`` of a seeded batch is the same world for every policy and batch size);
  ``carry`` is ``(worlds, pool worlds, pool observations, pool worlds left)``;
* ``step(carry, rng, actions) -> (carry, rng, obs, final_obs, events, term, trunc, reported)``: Craftax's own
  ``step_env`` on every env (``auto_reset=False``), then fresh worlds for the envs whose episode ended.

**Optimistic resets.** Craftax's built-in auto-reset generates a new world for every env at every step and keeps
the ones it needs: one world costs ~12 ms to generate, ~50 env steps of a batch of 256, so that is most of the
time (118 steps/s at 64 envs in issue 36's measurement). Craftax's PPO baselines (``OptimisticResetVecEnvWrapper``)
instead generate ``N / ratio`` worlds every step and hand them to the envs that ended, sharing a world between
envs when more end than there are worlds, and throwing the rest away. Here the batch carries a *pool* of fresh
worlds: each env that ended takes the next unused one, in env order, and an empty pool is refilled with ``pool``
new worlds (as often as the step needs). No two envs ever share a world, a step where nothing ended generates
none, and no world is thrown away: worlds left over wait for the next steps. Generating 16 at once costs ~20 ms,
1.2 ms a world (:func:`default_pool`). Every key is split from the carried one the same way whatever ended, so a
run is a function of its seed and its actions alone (bit-reproducible).

**Events** are the state's achievement flags differenced over the step (``int8[N, K]``, one column per chosen
achievement): Craftax-Classic keeps one flag per achievement per episode, so each type happens at most once per
episode (Crafter counts every unlock). ``reported`` is what Craftax's own ``info`` says at an episode's end
(``Achievements/<name>`` / 100), for checking the events against the game's own counters.

**Observations** come out as ``uint8`` (goalscope's trainer stores rollouts as bytes): Symbolic as Craftax's own
1,345 numbers with the one-hot map, direction and sleep flag as 0/1, the inventory, health, food, drink and
energy as the game's integers 0-9 (Craftax divides them by 10) and the light level in tenths (0-10); Pixels as
Craftax's 63x63 RGB frame x 255, channels first. ``to_numpy`` hands a JAX array to numpy through
torch's dlpack without a copy.

May import: nothing of goalscope's (jax, craftax and torch only).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import numpy as np

KINDS = ("Symbolic", "Pixels")
N_ACTIONS = 17
MAP_FEATURES = 7 * 9 * 21  # the symbolic view: 7x9 cells x (17 blocks + 4 mobs), one-hot
SYMBOLIC_SIZE = MAP_FEATURES + 12 + 4 + 4 + 2  # + inventory, intrinsics, direction, light level and sleeping
PIXELS_SHAPE = (3, 63, 63)


def obs_shape(kind: str) -> tuple[int, ...]:
    """The ``uint8`` observation of one env: ``(1345,)`` Symbolic, ``(3, 63, 63)`` Pixels."""
    return (SYMBOLIC_SIZE,) if kind == "Symbolic" else PIXELS_SHAPE


def seed_key(seed: int) -> np.ndarray:
    """A threefry key for a non-negative ``seed`` below 2**64 (what ``jax.random.PRNGKey`` makes of it)."""
    return np.array([(seed >> 32) & 0xFFFFFFFF, seed & 0xFFFFFFFF], dtype=np.uint32)


class Core(NamedTuple):
    """A batch's compiled functions, and what it was built for."""
    reset: object
    step: object
    n: int
    pool: int


def _game(kind: str):
    from craftax.craftax_env import make_craftax_env_from_name

    return make_craftax_env_from_name(f"Craftax-Classic-{kind}-v1", auto_reset=False)


def _to_uint8(kind: str):
    import jax.numpy as jnp

    if kind == "Pixels":
        return lambda obs: jnp.round(obs * 255.0).astype(jnp.uint8).transpose(0, 3, 1, 2)
    scale = np.ones(SYMBOLIC_SIZE, dtype=np.float32)
    scale[MAP_FEATURES:MAP_FEATURES + 16] = 10.0  # inventory (12) and intrinsics (4): Craftax's value / 10
    scale[SYMBOLIC_SIZE - 2] = 10.0  # light level in [0, 1]
    scale = jnp.asarray(scale)
    return lambda obs: jnp.round(obs.astype(jnp.float32) * scale).astype(jnp.uint8)


CACHE_ENV = "GOALSCOPE_JAX_CACHE"  # where compiled batches are kept across processes; "" keeps none


def _persistent_cache() -> None:
    """Keep compiled batches on disk (JAX's persistent compilation cache), unless JAX was told where already.

    A batch of Craftax-Classic compiles in 30-60 s on a 2-core CPU and loads from the cache in ~10 s (most of it
    tracing craftax's Python), which every process pays again: worker processes, reruns, the test suite. The
    cache is ``$GOALSCOPE_JAX_CACHE`` or ``$XDG_CACHE_HOME/goalscope/jax`` (``~/.cache/goalscope/jax``);
    ``GOALSCOPE_JAX_CACHE=""`` turns it off, and a cache JAX was given itself (``JAX_COMPILATION_CACHE_DIR``) is
    used as it is.
    """
    import os
    from pathlib import Path

    import jax

    if jax.config.jax_compilation_cache_dir is not None:
        return
    where = os.environ.get(CACHE_ENV)
    if where is None:
        where = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "goalscope" / "jax")
    if where:
        jax.config.update("jax_compilation_cache_dir", where)
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 1.0)


@functools.lru_cache(maxsize=16)
def core(kind: str, n: int, pool: int, max_steps: int, types: tuple[int, ...]) -> Core:
    """The jitted reset and step of ``n`` Craftax-Classic ``kind`` worlds (cached: one compile per shape)."""
    import jax
    import jax.numpy as jnp
    from craftax.craftax_classic.constants import Achievement, BlockType

    _persistent_cache()
    game = _game(kind)
    params = game.default_params.replace(max_timesteps=int(max_steps))
    to_u8 = _to_uint8(kind)
    idx = jnp.asarray(types, dtype=jnp.int32)
    names = [a.name.lower() for a in sorted(Achievement, key=lambda a: a.value)]
    pool = max(1, min(int(pool), n))
    world = jax.vmap(game.reset_env, in_axes=(0, None))
    play = jax.vmap(game.step_env, in_axes=(0, 0, 0, None))

    def strong(tree):  # a weakly typed leaf (Craftax's world has one) would make step compile twice
        return jax.tree_util.tree_map(lambda x: jax.lax.convert_element_type(x, x.dtype), tree)

    def reset(key):
        base = jax.random.fold_in(key, 0)
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(n, dtype=jnp.uint32))
        # 16 worlds at a time: one costs 12 ms, 16 at once 20 ms, 256 at once 11 ms each (default_pool)
        obs, state = jax.lax.map(lambda k: game.reset_env(k, params), keys, batch_size=min(16, n))
        state, obs = strong(state), to_u8(obs)
        # an empty pool (none left): its arrays only give the pool its shape
        pool_of = jax.tree_util.tree_map(lambda x: x[:pool], (state, obs))
        return (state, *pool_of, jnp.int32(0)), jax.random.fold_in(key, 1), obs

    def refill(done, k_pool, state, obs, fresh, fresh_obs, left):
        """Each ended env, in env order, takes the next unused world of the pool; an empty pool is refilled with
        ``pool`` new worlds. No world goes to two envs, and worlds left over wait for the next steps."""
        need = done.sum()
        ended = jnp.nonzero(done, size=n + pool, fill_value=n)[0]  # their indices, then n (dropped by the scatter)
        j = jnp.arange(pool)

        def serve(c):
            r, served, state, obs, fresh, fresh_obs, left = c

            def generate(_):
                o, s = world(jax.random.split(jax.random.fold_in(k_pool, r), pool), params)
                return strong(s), to_u8(o), jnp.int32(pool)

            fresh, fresh_obs, left = jax.lax.cond(left == 0, generate, lambda _: (fresh, fresh_obs, left), None)
            r = r + (left == pool)  # pools made in this step: each from its own key
            m = jnp.minimum(left, need - served)
            to = jnp.where(j < m, jax.lax.dynamic_slice(ended, (served,), (pool,)), n)
            src = jnp.clip(pool - left + j, 0, pool - 1)

            def put(old, new):
                return old.at[to].set(new[src], mode="drop")

            state = jax.tree_util.tree_map(put, state, fresh)
            return r, served + m, state, put(obs, fresh_obs), fresh, fresh_obs, left - m

        c = jax.lax.while_loop(lambda c: c[1] < need, serve,
                               (jnp.int32(0), jnp.int32(0), state, obs, fresh, fresh_obs, left))
        return c[2:]

    def step(carry, rng, actions):
        state = carry[0]
        rng, k_env, k_pool = jax.random.split(rng, 3)
        obs_st, state_st, _, done, info = play(jax.random.split(k_env, n), state, actions, params)
        events = (state_st.achievements[:, idx].astype(jnp.int8) - state.achievements[:, idx].astype(jnp.int8))
        cell = state_st.map[jnp.arange(n), state_st.player_position[:, 0], state_st.player_position[:, 1]]
        term = done & ((state_st.player_health <= 0) | (cell == BlockType.LAVA.value))  # died; else the limit
        reported = jnp.stack([info[f"Achievements/{names[t]}"] for t in types], axis=1) / 100.0
        final_obs = to_u8(obs_st)
        state, obs, *pool_left = refill(done, k_pool, state_st, final_obs, *carry[1:])
        return (state, *pool_left), rng, obs, final_obs, events, term, done & ~term, reported

    return Core(jax.jit(reset), jax.jit(step, donate_argnums=(0,)), n, pool)


def to_numpy(array) -> np.ndarray:
    """A CPU JAX array as a numpy array over the same memory (dlpack through torch: no copy)."""
    import torch

    return torch.from_dlpack(array).numpy()


def default_pool(n: int) -> int:
    """Fresh worlds generated at once when the config leaves it to goalscope: 16 (or the batch, if smaller).

    Measured on a 2-core CPU: one world costs 12 ms to generate, 4 at once 13 ms, 16 at once 20 ms (1.2 ms each),
    64 at once 3.8 ms each, 256 at once 11 ms each. Worlds left over are kept for later steps, so a larger pool
    wastes nothing but memory (~21 kB a world)."""
    return min(16, n)
