"""Any Gymnasium environment whose objectives are rewards over *events*.

goalscope's program needs an environment whose dynamics stay fixed while the reward is swapped. For a third-party
env that means: the env reports, in every step's ``info["events"]``, how many events of each of K types just
happened (an object of type k picked up, a door opened...), and goalscope computes the reward itself as
``events @ weights - step_cost``. The env's own reward is ignored. Vectorisation is Gymnasium's own
``SyncVectorEnv`` (same-step autoreset), in this process or in worker processes (``env.processes``,
:mod:`goalscope.envs.batches`); this adapter gives it the interface of goalscope's native vectorised
maze, so training, evaluation and analysis run unchanged.

``goalscope/MiniGridObjects-v0`` (:mod:`goalscope.envs.minigrid_objects`, needs the ``minigrid`` package) is the
shipped real example: a MiniGrid room with keys, balls and boxes of distinct colours; picking one up is an event
of its type.

Before any training, :func:`_spaces` (through ``obs_shape``, which experiment validation reads) refuses in one line
what would otherwise fail after it: ``env.kwargs`` keys the env's constructor does not take, and an env whose own
step limit exceeds ``env.max_steps`` (every evaluation episode must end within it).

May import: goalscope.envs.rewards, goalscope.envs.batches, goalscope.envs.sources, goalscope.envs.minigrid_objects
(the example env: its id, and its registration when that id is used; minigrid itself is imported only then),
goalscope.errors.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
import json
import os
import sys
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

from goalscope.envs.batches import MAX_ENV_PROCESSES, LocalBatch, ProcessBatch
from goalscope.envs.minigrid_objects import MINIGRID_ID, register_minigrid
from goalscope.envs.rewards import Reward
from goalscope.envs.sources import (COUNTS, EVENT_SOURCES, OBS_ADAPTERS, EventsWrapper, InfoEvents,  # noqa: F401
                                    MiniGridEvents, import_minigrid)
from goalscope.errors import ConfigError, check_fields


@dataclass(frozen=True)
class GymEventsConfig:
    """An env made by ``gymnasium.make(id, **kwargs)`` that reports ``info["events"]`` (K counts per step)."""

    id: str = MINIGRID_ID
    kwargs: dict = field(default_factory=dict)
    n_types: int = 3
    max_steps: int = 64  # evaluation episode length; the env must truncate at or before it
    # For an env that does not report info["events"] itself: a source in EVENT_SOURCES that computes them (e.g.
    # "minigrid": pickups, door openings, reaching the goal), with one descriptor per event type ("key",
    # "ball:red", "door", "goal"...), and an observation adapter in OBS_ADAPTERS ("minigrid": the image of a Dict
    # observation, channels first).
    # With events = "info", event_types may still name the env's K types (rewards such as "collect:apple").
    events: str = "info"
    event_types: list = field(default_factory=list)
    obs: str = "array"
    # 0: the envs step in the training process; N: spread over N worker processes (envs whose step costs
    # milliseconds, such as Crafter, so that stepping them uses every core; goalscope.envs.batches).
    processes: int = 0
    event_word: str = ""  # what the env calls its events, for the report ("achievements"); "" = "events"
    # An event source's repeats: "every" occurrence counts, or only the "first" per episode (per object where the
    # source tells objects apart, as MiniGrid's does: a key picked up, dropped and picked up again is one
    # "collect:key"). "" = the default: "first" for an event source, "every" for an env that reports
    # info["events"] itself (its events mean what it says). A recorded config without the key (a run made before
    # it existed) counted every occurrence: from_json reads it so, and to_json leaves "every" out, so those runs'
    # job keys stay the same.
    count: str = ""
    family = "gym_events"
    has_oracle = False

    def __post_init__(self):
        if not isinstance(self.id, str) or not self.id:
            raise ConfigError(f"env.id must be a Gymnasium env id, got {self.id!r}")
        if not isinstance(self.n_types, int) or self.n_types < 1:
            raise ConfigError(f"env.n_types must be a positive integer, got {self.n_types!r}")
        if not isinstance(self.max_steps, int) or self.max_steps < 1:
            raise ConfigError(f"env.max_steps must be a positive integer, got {self.max_steps!r}")
        if not isinstance(self.event_word, str):
            raise ConfigError(f"env.event_word must be a string, got {self.event_word!r}")
        if isinstance(self.processes, bool) or not isinstance(self.processes, int) or self.processes < 0:
            raise ConfigError(f"env.processes must be an integer >= 0, got {self.processes!r}")
        if self.processes > MAX_ENV_PROCESSES:
            raise ConfigError(f"env.processes must be at most {MAX_ENV_PROCESSES} (MAX_ENV_PROCESSES; a run uses at "
                              f"most one per CPU anyway), got {self.processes:,}")
        if not isinstance(self.kwargs, dict):
            raise ConfigError(f"env.kwargs must be a table, got {self.kwargs!r}")
        if self.count == "":
            object.__setattr__(self, "count", "every" if self.events == "info" else "first")
        if self.count not in COUNTS:
            raise ConfigError(f"env.count must be one of {', '.join(map(repr, COUNTS))}, got {self.count!r}")
        if self.count != "every" and self.events == "info":
            raise ConfigError(f"env.count = {self.count!r} needs an event source (env.events); an env that reports "
                              f"info['events'] itself counts its events as it says")
        if self.events not in EVENT_SOURCES or self.obs not in OBS_ADAPTERS:
            import_env_module(self.id)  # the user's module may register its own event source or adapter
        if self.events not in EVENT_SOURCES:
            raise ConfigError(f"env.events {self.events!r} is unknown (known: {', '.join(sorted(EVENT_SOURCES))})"
                              f"{_untrusted_hint(self.id)}")
        if self.obs not in OBS_ADAPTERS:
            raise ConfigError(f"env.obs {self.obs!r} is unknown (known: {', '.join(sorted(OBS_ADAPTERS))})"
                              f"{_untrusted_hint(self.id)}")
        if not isinstance(self.event_types, list) or not all(isinstance(t, str) for t in self.event_types):
            raise ConfigError(f"env.event_types must be a list of strings, got {self.event_types!r}")
        if (self.events != "info" or self.event_types) and len(self.event_types) != self.n_types:
            raise ConfigError(f"env.event_types lists {len(self.event_types)} types but env.n_types = {self.n_types}")
        dup = sorted({t for t in self.event_types if self.event_types.count(t) > 1})
        if dup:
            raise ConfigError(f"env.event_types lists {dup[0]!r} twice; each event type needs its own name")

    @property
    def event_names(self) -> list[str] | None:
        """The event types' names (``env.event_types``), by which rewards, tables and figures name them."""
        return list(self.event_types) or None

    def make_single(self, render_mode: str | None = None) -> gym.Env:
        """One env as goalscope sees it (events reported, observations adapted); ``render_mode`` is passed to
        ``gymnasium.make`` (e.g. ``"rgb_array"`` for videos)."""
        if self.id == MINIGRID_ID:
            register_minigrid()
        check_importable(self.id)
        if self.events == "minigrid" or self.obs == "minigrid":
            import_minigrid()  # goalscope's own adapter: registers MiniGrid's stock envs
        try:
            env = gym.make(self.id, **self.kwargs, **({"render_mode": render_mode} if render_mode else {}))
        except gym.error.Error as e:
            raise ConfigError(f"env.id {self.id!r}: {e}") from None
        except TypeError as e:  # a key the signature check could not see (a constructor taking **kwargs)
            if "keyword argument" not in str(e):
                raise
            raise ConfigError(f"env.kwargs: {self.id!r}: {e}{_misplaced_hint(self.kwargs)}") from None
        if self.events == "info" and self.obs == "array":
            return env
        source = None if self.events == "info" else EVENT_SOURCES[self.events](self.event_types)
        return EventsWrapper(env, source, OBS_ADAPTERS[self.obs], self.count)

    @property
    def obs_shape(self) -> tuple[int, ...]:
        return _spaces(json.dumps(self.to_json(), sort_keys=True))[0]

    @property
    def n_actions(self) -> int:
        return _spaces(json.dumps(self.to_json(), sort_keys=True))[1]

    def make(self, reward: Reward, n_envs: int, seed: int = 0) -> "GymEventsVecEnv":
        return GymEventsVecEnv(self, reward, n_envs, seed)

    def eval_config(self) -> "GymEventsConfig":
        return self

    def to_json(self) -> dict:
        d = {"family": self.family, **dataclasses.asdict(self)}
        for name in ("processes", "event_word"):
            if not d[name]:  # left out at its default: runs recorded before it existed read the same
                del d[name]
        if d["count"] == "every":  # what runs recorded before env.count counted: their keys stay the same
            del d["count"]
        return d

    @staticmethod
    def from_json(d: dict) -> "GymEventsConfig":
        """A recorded config (experiment.json, a checkpoint, a job spec); without ``count`` it counted every
        occurrence. A TOML file's ``[env]`` without it gets the default (:func:`with_default_count`)."""
        d = check_fields(GymEventsConfig, d, "env", extra=("family",))
        return GymEventsConfig(**{"count": "every", **d})


def with_default_count(env: dict) -> dict:
    """An ``[env]`` table of the user's own with ``count`` made explicit: left out, it is the documented default
    (``"first"`` for an event source), where a recorded config without it means ``"every"`` (:meth:`from_json`)."""
    if env.get("family") == "gym_events" and "count" not in env:
        return {**env, "count": ""}
    return env


TRUST_ENV = "GOALSCOPE_TRUST_MODULES"  # comma-separated modules env ids may import; inherited by worker processes


def trust_modules(names) -> None:
    """Allow env ids of the form ``module:Env-v0`` to import ``module`` (in this process and its workers).

    Experiment files are the user's own, so the modules they name are trusted when the file is loaded; a
    checkpoint or run directory is data and may name a module only if it is already imported, listed in
    ``$GOALSCOPE_TRUST_MODULES``, or passed with ``goalscope --trust-module NAME``.
    """
    have = [m for m in os.environ.get(TRUST_ENV, "").split(",") if m]
    os.environ[TRUST_ENV] = ",".join(dict.fromkeys([*have, *names]))


def check_importable(env_id: str) -> None:
    """Refuse an env id whose ``module:`` prefix would make ``gymnasium.make`` import a module nobody allowed."""
    if ":" not in env_id:
        return  # registered ids resolve through gymnasium's registry: code that is already imported
    module = env_id.split(":", 1)[0]
    if _trusted(module):
        return
    raise ConfigError(f"env.id {env_id!r} would import the module {module!r}, and goalscope never imports code "
                      f"that a file names; if you trust it, pass --trust-module {module} (or set {TRUST_ENV}={module})")


def _trusted(module: str) -> bool:
    trusted = set(os.environ.get(TRUST_ENV, "").split(","))
    return module in sys.modules or module in trusted or module.split(".")[0] in trusted


def import_env_module(env_id: str) -> None:
    """Import the ``module`` of an env id ``module:Env-v0`` if it is trusted (see :func:`trust_modules`), so that
    the event sources and observation adapters it registers exist before the env config is checked.

    An untrusted module is left alone (the config then fails on the names it would have registered, with a hint
    to trust it); a trusted one that cannot be imported is a ConfigError naming it."""
    if ":" not in env_id:
        return
    module = env_id.split(":", 1)[0]
    if module in sys.modules or not _trusted(module):
        return
    try:
        importlib.import_module(module)
    except ImportError as e:
        raise ConfigError(f"env.id {env_id!r}: cannot import the module {module!r} ({e}); put the directory that "
                          f"holds it on PYTHONPATH (e.g. PYTHONPATH=. goalscope ...) or install it") from None


def _untrusted_hint(env_id: str) -> str:
    if ":" not in env_id or _trusted(env_id.split(":", 1)[0]):
        return ""
    module = env_id.split(":", 1)[0]
    return (f"; the env id names the module {module!r}, which may register it: if you trust it, pass "
            f"--trust-module {module} (Python: load_run(path, trust_modules=[{module!r}]))")


def _misplaced_hint(kwargs: dict) -> str:
    ours = sorted(set(kwargs) & {f.name for f in dataclasses.fields(GymEventsConfig)})
    return (f"; {', '.join(ours)} {'is a setting' if len(ours) == 1 else 'are settings'} of goalscope's: put "
            f"{'it' if len(ours) == 1 else 'them'} under [env] itself, not [env.kwargs]") if ours else ""


def _constructor_params(entry) -> set[str] | None:
    """The keyword names ``entry`` (an env class or function) takes, following ``**kwargs`` up a class's bases
    (MiniGrid's envs hand theirs to ``MiniGridEnv``); None where they cannot be known (``**kwargs`` to the end)."""
    if not inspect.isclass(entry):
        params = inspect.signature(entry).parameters.values()
        return None if any(p.kind is p.VAR_KEYWORD for p in params) else {p.name for p in params}
    names: set[str] = set()
    for cls in entry.__mro__:
        if "__init__" not in vars(cls) or cls is object:
            continue
        params = inspect.signature(vars(cls)["__init__"]).parameters.values()
        names |= {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if not any(p.kind is p.VAR_KEYWORD for p in params):
            return names
    return None


def _check_kwargs(cfg: GymEventsConfig) -> None:
    """Refuse ``env.kwargs`` keys the env's constructor does not take, before the env is made: such a key used to
    reach the constructor and end in a 71-line traceback."""
    if not cfg.kwargs:
        return
    env_id = cfg.id
    if ":" in env_id:  # module:Env-v0, the module allowed and imported first (it registers the id)
        check_importable(env_id)
        import_env_module(env_id)
        env_id = env_id.split(":", 1)[1]
    try:
        spec = gym.spec(env_id)
        entry = (gym.envs.registration.load_env_creator(spec.entry_point) if isinstance(spec.entry_point, str)
                 else spec.entry_point)
        takes = _constructor_params(entry)
    except Exception:  # noqa: BLE001 (an id gymnasium cannot resolve fails in make_single, with its own message)
        return
    if takes is None:
        return
    unknown = sorted(set(cfg.kwargs) - takes - set(inspect.signature(gym.make).parameters))
    if unknown:
        name = getattr(entry, "__qualname__", str(entry))
        raise ConfigError(f"env.kwargs.{unknown[0]}: {cfg.id!r} ({name}) takes no argument {unknown[0]!r} (it takes: "
                          f"{', '.join(sorted(takes - {'self'})) or 'none'}){_misplaced_hint(cfg.kwargs)}")


def own_step_limit(env: gym.Env) -> int | None:
    """The step at which ``env`` truncates its episodes by itself: its registration's ``max_episode_steps``, or an
    integer ``max_steps`` of the unwrapped env (MiniGrid's); None if it says neither."""
    limits = [getattr(env.spec, "max_episode_steps", None), getattr(env.unwrapped, "max_steps", None)]
    limits = [x for x in limits if isinstance(x, int) and not isinstance(x, bool) and x > 0]
    return min(limits) if limits else None


@functools.lru_cache(maxsize=16)
def _spaces(cfg_json: str) -> tuple[tuple[int, ...], int]:
    cfg = GymEventsConfig.from_json(json.loads(cfg_json))
    if cfg.id == MINIGRID_ID:
        register_minigrid()
    elif cfg.events == "minigrid" or cfg.obs == "minigrid":
        import_minigrid()
    _check_kwargs(cfg)
    env, env_id = cfg.make_single(), cfg.id
    if not isinstance(env.observation_space, gym.spaces.Box):
        env.close()
        raise ConfigError(f"env {env_id!r} has a {type(env.observation_space).__name__} observation space; goalscope's "
                          f"agents read arrays: set env.obs to an adapter ({', '.join(sorted(OBS_ADAPTERS))})")
    try:
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ConfigError(f"env {env_id!r}: goalscope's agents need a Discrete action space, got {env.action_space}")
        limit = own_step_limit(env)
        if limit is not None and limit > cfg.max_steps:
            raise ConfigError(f"env {env_id!r} ends its episodes at {limit:,} steps (its own limit) but env.max_steps "
                              f"= {cfg.max_steps:,}, and every evaluation episode must end within env.max_steps: add "
                              f"`max_steps = {limit}` under [env] (or lower the env's own limit in [env.kwargs])")
        return tuple(env.observation_space.shape), int(env.action_space.n)
    finally:
        env.close()


class GymEventsVecEnv:
    """A batch of Gymnasium envs (in this process, or in ``cfg.processes`` workers) behind the interface of
    :class:`goalscope.envs.maze.MazeVecEnv`."""

    def __init__(self, cfg: GymEventsConfig, reward: Reward, n_envs: int, seed: int = 0):
        if reward.cued:
            raise ConfigError(f"reward {reward.name!r}: cued rewards exist only in the object maze")
        if reward.n_types != cfg.n_types:
            raise ConfigError(f"reward {reward.name!r} has {reward.n_types} weights but the env has {cfg.n_types} event types")
        self.cfg, self.reward, self.n_envs = cfg, reward, n_envs
        self._weights = reward.vector().astype(np.float64)
        if cfg.processes:
            self.batch = ProcessBatch(cfg.make_single, n_envs, cfg.n_types, cfg.processes)
        else:
            self.batch = LocalBatch(cfg.make_single, n_envs, cfg.n_types)
        try:
            self.reset(seed)
        except BaseException:
            self.close()
            raise

    def set_reward(self, reward: Reward) -> None:
        self.reward, self._weights = reward, reward.vector().astype(np.float64)

    def reset(self, seed: int | None = None) -> np.ndarray:
        self._obs = self.batch.reset(seed)
        new_tallies(self, self.cfg.n_types)
        return self.observe()

    def observe(self) -> np.ndarray:
        return np.array(self._obs, copy=True)

    def close(self) -> None:
        self.batch.close()

    def step(self, actions):
        obs, term, trunc, events, final_obs = self.batch.step(np.asarray(actions))
        reward, out = tally(self, events, term | trunc)
        if out:
            out["final_obs"] = final_obs
        self._obs = obs
        return self.observe(), reward.astype(np.float32), term, trunc, out


# ----------------------------------------------------------------------------------------------------------------
# Episode tallies of a batch env that reports events (this family's and Craftax's)


def new_tallies(env, n_types: int) -> None:
    """Fresh per-env tallies on ``env``: objects per type, steps, return and the first event type (-1: none)."""
    env.counts = np.zeros((env.n_envs, n_types), dtype=np.int64)
    env.t = np.zeros(env.n_envs, dtype=np.int64)
    env.ep_return = np.zeros(env.n_envs)
    env.first = np.full(env.n_envs, -1, dtype=np.int64)


def tally(env, events: np.ndarray, done: np.ndarray) -> tuple[np.ndarray, dict]:
    """One step's reward from ``events`` (envs x types) under ``env.reward``, added to the tallies; the finished
    episodes' tallies go into the info dict the trainer and evaluation read, and restart. Returns (reward, info)."""
    reward = events @ env._weights - env.reward.step_cost
    env.first = np.where((env.first < 0) & (events.sum(1) > 0), events.argmax(1), env.first)
    env.counts += events
    env.t += 1
    env.ep_return += reward
    done_idx = np.flatnonzero(done)
    if not len(done_idx):
        return reward, {}
    info = {"done_idx": done_idx, "counts": env.counts[done_idx].copy(), "steps": env.t[done_idx].copy(),
            "returns": env.ep_return[done_idx].copy(), "first": env.first[done_idx].copy()}
    env.counts[done_idx] = 0
    env.t[done_idx] = 0
    env.ep_return[done_idx] = 0.0
    env.first[done_idx] = -1
    return reward, info
