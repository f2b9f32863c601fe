"""Bringing an env that does not report events: the wrapper, event sources and observation adapters that
:mod:`goalscope.envs.events` (which re-exports ``EVENT_SOURCES``, ``OBS_ADAPTERS`` and ``EventsWrapper``) runs
around a stock Gymnasium env.

May import: goalscope.errors.
"""

from __future__ import annotations

import inspect

import gymnasium as gym
import numpy as np

from goalscope.errors import ConfigError, import_failure

# What an event source's __call__ may ask for by keyword, besides (env, action, memo, terminated): sources written
# before these existed take four arguments and are called with four.
STEP_FIELDS = ("reward", "truncated", "info")
COUNTS = ("every", "first")  # env.count: every occurrence of an event, or only the first per episode (per object)


class EventsWrapper(gym.Wrapper):
    """Any Gymnasium env with ``info["events"]`` computed by ``source`` and observations mapped by ``adapter``.

    ``source`` is an object with ``before(env)`` (called before each step, returns what it needs to remember) and
    ``__call__(env, action, memo, terminated, *, reward, truncated, info) -> int[K]`` (the keywords it does not
    declare are not passed; ``info`` is the env's own), or None for an env that reports ``info["events"]`` itself
    (then only observations are mapped); ``adapter`` is ``(space) -> (space, fn)``.

    ``count = "first"`` counts each event once per episode: once per object where the source tells objects apart
    (it sets ``objects = True`` and is handed ``first = True``; the MiniGrid source does), once per type otherwise.
    """

    def __init__(self, env: gym.Env, source, adapter, count: str = "every"):
        super().__init__(env)
        self.source = source
        self.observation_space, self._adapt = adapter(env.observation_space)
        self._first_by_type = False
        self._keywords: tuple[str, ...] = ()
        if source is not None:
            params = inspect.signature(source.__call__).parameters.values()
            if any(p.kind is p.VAR_KEYWORD for p in params):
                self._keywords = STEP_FIELDS
            else:
                self._keywords = tuple(n for n in STEP_FIELDS if n in {p.name for p in params})
            if count == "first" and getattr(source, "objects", False):
                source.first = True
            self._first_by_type = count == "first" and not getattr(source, "objects", False)
            self._seen = np.zeros(source.n_types, dtype=bool)

    def reset(self, *, seed=None, options=None):
        obs, info = self.env.reset(seed=seed, options=options)
        if self.source is None:
            return self._adapt(obs), info
        self._seen[:] = False
        getattr(self.source, "reset", lambda env: None)(self.env.unwrapped)
        return self._adapt(obs), {**info, "events": np.zeros(self.source.n_types, dtype=np.int64)}

    def step(self, action):
        if self.source is None:
            obs, reward, term, trunc, info = self.env.step(action)
            return self._adapt(obs), reward, term, trunc, info
        memo = self.source.before(self.env.unwrapped)
        obs, reward, term, trunc, info = self.env.step(action)
        step = {"reward": float(reward), "truncated": bool(trunc), "info": info}
        events = self.source(self.env.unwrapped, int(action), memo, bool(term),
                             **{k: step[k] for k in self._keywords})
        if self._first_by_type:
            events = np.where(self._seen, 0, np.minimum(events, 1))
            self._seen |= events > 0
        return self._adapt(obs), reward, term, trunc, {**info, "events": events}


class InfoEvents:
    """The env reports ``info["events"]`` itself: nothing to compute (the wrapper maps observations only)."""

    def __init__(self, types):
        self.n_types = len(types)


class MiniGridEvents:
    """Events of a MiniGrid env, one type per descriptor: ``KIND`` or ``KIND:COLOUR`` for picking up an object
    (key, ball, box), ``drop:KIND`` or ``drop:KIND:COLOUR`` for putting one down, ``door``/``door:COLOUR`` for
    opening a door, ``goal`` for reaching the goal square.

    The source only observes: every event is read from the env's state before and after the step (what the agent
    carries, whether the door in front of it is open, the cell it stands on), and nothing in the env is changed,
    so the env's dynamics are MiniGrid's own (a key picked up stays in the agent's hands and can open its door).
    With ``first`` (``env.count = "first"``), picking up, dropping or opening the same object again in an episode
    is no new event: collecting a key means having picked it up, not picking it up over and over.
    """

    KINDS = ("key", "ball", "box", "door", "goal", "drop")
    CARRIED = ("key", "ball", "box")
    objects = True  # tells objects apart: env.count = "first" is once per object, not once per type

    def __init__(self, types):
        self.types = []
        self.first = False
        self._seen: dict[tuple[str, int], object] = {}  # the objects themselves are kept so that no id is reused
        for t in types:
            parts = t.split(":")
            kind = parts[0]
            if kind not in self.KINDS:
                raise ConfigError(f"env.event_types: {kind!r} is not a MiniGrid event ({', '.join(self.KINDS)})")
            if kind == "drop":
                if len(parts) not in (2, 3) or parts[1] not in self.CARRIED:
                    raise ConfigError(f"env.event_types: {t!r}: a drop is 'drop:KIND' or 'drop:KIND:COLOUR' with "
                                      f"KIND one of {', '.join(self.CARRIED)}")
                self.types.append(("drop", parts[1], parts[2] if len(parts) == 3 else None))
            else:
                if len(parts) > 2:
                    raise ConfigError(f"env.event_types: {t!r} is not KIND or KIND:COLOUR")
                self.types.append(("get", kind, parts[1] if len(parts) == 2 else None))
        self.n_types = len(self.types)

    def _type_of(self, what: str, kind: str, colour: str) -> int | None:
        return next((i for i, (w, k, c) in enumerate(self.types) if w == what and k == kind and c in (None, colour)),
                    None)

    def reset(self, env):
        self._seen = {}

    def before(self, env):
        front = env.grid.get(*env.front_pos)
        door = front if front is not None and front.type == "door" else None
        return env.carrying, door, door is not None and door.is_open

    def __call__(self, env, action, memo, terminated):
        events = np.zeros(self.n_types, dtype=np.int64)
        carried, door, was_open = memo
        hit = []
        if env.carrying is not None and env.carrying is not carried:
            hit.append(("get", env.carrying))
        if carried is not None and env.carrying is not carried:
            hit.append(("drop", carried))
        if door is not None and door.is_open and not was_open:
            hit.append(("get", door))
        cell = env.grid.get(*env.agent_pos)
        if terminated and cell is not None and cell.type == "goal":
            hit.append(("get", cell))
        for what, obj in hit:
            if self.first:
                if (what, id(obj)) in self._seen:
                    continue
                self._seen[(what, id(obj))] = obj
            t = self._type_of(what, obj.type, obj.color)
            if t is not None:
                events[t] += 1
        return events


def _array(space):
    return space, lambda obs: obs


def _channels_first(space: gym.spaces.Box):
    h, w, c = space.shape
    return gym.spaces.Box(0, 255, (c, h, w), dtype=np.uint8), lambda img: np.ascontiguousarray(np.moveaxis(img, -1, 0), dtype=np.uint8)


def _image(space):
    """An ``H x W x C`` image observation, channels first (what goalscope's CNN reads)."""
    return _channels_first(space)


def _minigrid(space):
    """MiniGrid's Dict observation: its ``image`` (the egocentric view), channels first."""
    if not isinstance(space, gym.spaces.Dict) or "image" not in space.spaces:
        raise ConfigError(f"env.obs 'minigrid' needs a Dict observation with an 'image', got {space}")
    out, fn = _channels_first(space["image"])
    return out, lambda obs: fn(obs["image"])


EVENT_SOURCES: dict[str, type] = {"info": InfoEvents, "minigrid": MiniGridEvents}
OBS_ADAPTERS = {"array": _array, "image": _image, "minigrid": _minigrid}


def import_minigrid() -> None:
    """Import minigrid (which registers its stock envs with Gymnasium), or say, with the import's own error, that
    it is needed: an installed package whose import fails must not read as a missing one."""
    try:
        import minigrid  # noqa: F401  (importing it registers MiniGrid's envs with Gymnasium)
    except ImportError as e:
        raise ConfigError(import_failure("minigrid", "env.events/obs 'minigrid' needs the minigrid package",
                                         "pip install minigrid", e)) from None
