"""The gate between files people hand goalscope and its code: bounded reading and checked fields.

Everything goalscope reads from outside (experiment TOML, ``meta.json``, ``done.json``, ``profile.json``,
``summary.json``, SB3 zips, weights) passes through these helpers, so a damaged, hostile or merely odd file ends
as one line naming the file and the field, never as a traceback, a hang, or gigabytes allocated on its word:

- files are size-capped before parsing, and parsed structures depth- and key-count-capped (JSON or TOML nested
  100k deep, or 50k dotted keys, are refused instead of exhausting the stack or memory);
- numbers that size work (steps, episodes, bootstrap resamples, network widths) are integers within bounds;
- weights must be finite, and an architecture's parameter count is computed on PyTorch's ``meta`` device before
  a single real tensor is allocated.

This module may import only :mod:`goalscope.errors`, the standard library and (lazily) torch.
"""

from __future__ import annotations

import json
import math
import numbers
import tomllib
from pathlib import Path

from goalscope.errors import ConfigError, GoalscopeError

MAX_JSON_BYTES = 64 << 20
MAX_TOML_BYTES = 1 << 20
MAX_DEPTH = 24
MAX_NODES = 200_000
MAX_STEPS = 10**10  # env steps in one training job: ~weeks of CPU time, far above any sensible budget
MAX_PARAMETERS = 50_000_000  # goalscope's agents are small; this is ~200 MB of fp32 weights per copy
MAX_RANDOM_DIRECTIONS = 100  # random directions per negation or edit: each is a retrain or an evaluation
MAX_SEEDS_PER_MA = 100  # fine-tune seeds of one MA: each is a fine-tune per RB
MAX_EPISODE_STEPS = 100_000  # env.max_steps: one episode's step limit
MAX_N_ENVS = 16_384  # parallel envs of one PPO job
MAX_N_STEPS = 100_000  # rollout length per env
MAX_EPOCHS = 1_000  # PPO epochs per rollout
MAX_ROLLOUT_VALUES = 1 << 28  # n_envs x n_steps x obs size: 1 GiB of float32 observations in one rollout buffer
MAX_JOBS = 100_000  # jobs one experiment plans
MAX_SEED = 2**32 - 1  # seeds are 32-bit (numpy's generators refuse more)


def check_structure(data, where: str, error=GoalscopeError) -> None:
    """Refuse nesting deeper than MAX_DEPTH or more than MAX_NODES values (walked without recursion)."""
    stack, nodes = [(data, 0)], 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if depth > MAX_DEPTH:
            raise error(f"{where} is nested more than {MAX_DEPTH} levels deep")
        if nodes > MAX_NODES:
            raise error(f"{where} holds more than {MAX_NODES:,} values")
        if isinstance(value, dict):
            stack += [(v, depth + 1) for v in value.values()]
        elif isinstance(value, list):
            stack += [(v, depth + 1) for v in value]


def _read_bytes(path: Path, limit: int, error) -> bytes:
    path = Path(path)
    try:
        if path.is_dir():
            raise error(f"{path} is a directory where a file should be")
        size = path.stat().st_size
        if size > limit:
            raise error(f"{path} is {size:,} bytes, more than the {limit:,} goalscope reads from such a file")
        return path.read_bytes()
    except OSError as e:
        raise error(f"{path} cannot be read ({e.strerror or e})") from None


def read_json(path, advice: str = "", error=GoalscopeError) -> object:
    """A JSON file, bounded; a damaged one is a one-line ``error`` naming it, followed by ``advice``."""
    raw = _read_bytes(path, MAX_JSON_BYTES, error)
    tail = f"; {advice}" if advice else ""
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise error(f"{path} cannot be read as JSON ({e}){tail}") from None
    except (RecursionError, MemoryError):
        raise error(f"{path} is nested too deeply or too large to read{tail}") from None
    check_structure(data, str(path), error)
    return data


def read_toml(path) -> dict:
    """An experiment TOML file, bounded; an empty one is an error (it would silently run every default)."""
    raw = _read_bytes(path, MAX_TOML_BYTES, ConfigError)
    _check_key_depth(raw, path)
    try:
        data = tomllib.loads(raw.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: not valid TOML: {e}") from None
    except (RecursionError, MemoryError):
        raise ConfigError(f"{path}: nested too deeply or too large to read") from None
    check_structure(data, str(path), ConfigError)
    if not data:
        raise ConfigError(f"{path} is empty; see experiments/default.toml for every field (an empty file would run "
                          "all defaults without saying so)")
    return data


def _check_key_depth(raw: bytes, path) -> None:
    """Refuse dotted keys nested past MAX_DEPTH before parsing: tomllib takes quadratic time on them (50k dotted
    keys on one line: about a minute) before any structure check could run."""
    for n, line in enumerate(raw.splitlines(), 1):
        key = line.split(b"=", 1)[0] if b"=" in line else line.strip().strip(b"[]")
        if key.count(b".") > MAX_DEPTH:
            raise ConfigError(f"{path}, line {n}: a key nested more than {MAX_DEPTH} levels deep")


def int_field(value, name: str, lo: int = 0, hi: int = MAX_STEPS, error=ConfigError) -> int:
    """``value`` as an integer in [lo, hi]; booleans, floats (1e400 is inf) and strings are refused by name."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{name} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise error(f"{name} must be between {lo:,} and {hi:,}, got {value:,}")
    return value


def check_type(value, name: str, kinds, error=ConfigError) -> None:
    """``error`` naming ``name`` unless ``value`` is one of ``kinds`` (``int`` takes numpy's integers too, as a
    DataFrame hands them out; a bool counts as no int: ``seed=True``)."""
    kinds = tuple(numbers.Integral if k is int else k for k in (kinds if isinstance(kinds, tuple) else (kinds,)))
    if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
        names = {numbers.Integral: "an integer", float: "a number", str: "a string", type(None): "None"}
        raise error(f"{name} must be {' or '.join(names.get(k, k.__name__) for k in kinds)}, got {value!r}")


def check_ppo_sizes(ppo, obs_shape, where: str = "ppo", error=ConfigError) -> None:
    """The sizes of a PPO job, bounded before anything is allocated: ``n_envs``, ``n_steps``, ``epochs`` and the
    rollout buffer (``n_envs x n_steps x`` observation size), each with the limit named. ``ppo``: a PPOConfig or
    its JSON dict."""
    get = ppo.get if isinstance(ppo, dict) else lambda k, d=None: getattr(ppo, k, d)
    n_envs = int_field(get("n_envs", 1), f"{where}.n_envs", 1, MAX_N_ENVS, error)
    n_steps = int_field(get("n_steps", 1), f"{where}.n_steps", 1, MAX_N_STEPS, error)
    int_field(get("epochs", 1), f"{where}.epochs", 1, MAX_EPOCHS, error)
    int_field(get("minibatch_size", 1), f"{where}.minibatch_size", 1, MAX_ROLLOUT_VALUES, error)
    obs = math.prod(int(d) for d in obs_shape)
    values = n_envs * n_steps * obs
    if values > MAX_ROLLOUT_VALUES:
        raise error(f"{where}: n_envs x n_steps x observation size = {n_envs:,} x {n_steps:,} x {obs:,} = {values:,} "
                    f"values, more than the rollout buffer limit of {MAX_ROLLOUT_VALUES:,} (1 GiB of float32); "
                    "use fewer envs or a shorter rollout")


def finite_float(value, name: str, error=ConfigError) -> float:
    """``value`` as a float, or ``error`` naming ``name`` when it is not a finite number."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise error(f"{name} must be a finite number, got {value!r}")
    return float(value)


def check_finite_state(state: dict, where: str, error=GoalscopeError) -> None:
    """Refuse weights holding NaN or inf: they load fine and then fail far away, in sampling."""
    import torch

    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise error(f"{where}: tensor {name!r} holds NaN or inf values; such weights cannot be evaluated or trained")


def check_model_size(build, where: str, error=ConfigError) -> int:
    """Parameter count of the model ``build()`` makes, counted on the meta device (no memory allocated)."""
    import torch

    try:
        with torch.device("meta"):
            model = build()
    except (RuntimeError, ValueError, TypeError, OverflowError) as e:
        raise error(f"{where}: the architecture cannot be built with this config ({e})") from None
    n = sum(p.numel() for p in model.parameters())
    if n > MAX_PARAMETERS:
        raise error(f"{where}: the network would have {n:,} parameters, more than goalscope's limit of "
                    f"{MAX_PARAMETERS:,}; use smaller widths")
    return n


MAX_TENSOR_FILE_BYTES = 8 << 30  # heatmaps and weights of goalscope's agents are far smaller


def read_safetensors(path, advice: str = "", error=GoalscopeError) -> dict:
    """The tensors of a safetensors file (a heatmap, say), bounded; a truncated or damaged one is a one-line
    ``error`` naming it, followed by ``advice``."""
    from safetensors.torch import load

    raw = _read_bytes(path, MAX_TENSOR_FILE_BYTES, error)
    try:
        return load(raw)
    except Exception as e:  # SafetensorError, or what a damaged header makes torch raise
        tail = f"; {advice}" if advice else ""
        raise error(f"{path} cannot be read as safetensors (truncated or damaged: {str(e)[:120]}){tail}") from None
