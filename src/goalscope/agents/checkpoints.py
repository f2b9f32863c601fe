"""Checkpoints: ``model.safetensors`` (weights, no pickle) plus ``meta.json`` (provenance), in one directory.

``meta.json`` carries everything needed to rebuild and interpret the model: architecture name and config, env
config, reward, steps trained, seed, the parent checkpoint of a fine-tune, and package versions. Loading checks the
format marker, the architecture, and every tensor's name, shape and dtype before any weight is used, and never
unpickles anything. Writes go to a temporary file that is fsynced and renamed, so a killed write never leaves a
half-written file under the final name.

A checkpoint also acts (:meth:`Checkpoint.act`, on the env's own observations) and makes a single Gymnasium env
like the one it was trained in (:meth:`Checkpoint.make_env`), for videos and hand-driven rollouts.

May import: goalscope (its version), goalscope.agents.registry, goalscope.envs, goalscope.errors, goalscope.inputs,
goalscope.outputs.
"""

from __future__ import annotations

import functools
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from goalscope import __version__
from goalscope.agents.registry import build_agent
from goalscope.envs import env_from_json
from goalscope.envs.maze import MazeConfig
from goalscope.envs.rewards import Reward, parse_reward
from goalscope.errors import CheckpointError, ConfigError, GoalscopeError
from goalscope.outputs import atomic_write_bytes
from goalscope.inputs import MAX_STEPS, check_finite_state, check_model_size, int_field, read_json

FORMAT = "goalscope-checkpoint/1"
WEIGHTS = "model.safetensors"
HEATMAP_FORMAT = "goalscope-heatmap/1"  # heatmaps share the weights' names and shapes; the marker tells them apart
MAX_HEADER = 100 << 20
META = "meta.json"


@dataclass
class Checkpoint:
    """A model as data: architecture and its config, env, reward, weights by stable name, steps, seed, parent and
    extras (final evaluation, PPO settings). :meth:`build` makes the ``nn.Module``."""
    arch: str
    arch_config: dict
    env: object  # an env config (goalscope.envs), e.g. MazeConfig
    reward: Reward
    state_dict: dict[str, torch.Tensor]
    steps: int = 0  # env steps trained in total, parents included
    seed: int = 0
    parent: str | None = None  # path of the checkpoint this one was fine-tuned from
    extra: dict = field(default_factory=dict)  # training summary, evaluation, wall time...

    def build(self) -> nn.Module:
        """A fresh model of this architecture carrying these weights."""
        make = functools.partial(build_agent, self.arch, self.env.obs_shape, self.env.n_actions, self.arch_config)
        check_model_size(make, f"architecture {self.arch!r}")  # before allocating what a file asks for
        model = make()
        check_state_dict(self.state_dict, model.state_dict(), self.arch)
        model.load_state_dict(self.state_dict)
        return model

    def act(self, obs, greedy: bool = False, generator: torch.Generator | int | None = None):
        """The action for one observation (shape ``env.obs_shape``, as :meth:`make_env`'s env gives it), an int,
        or for a batch ``(B, *obs_shape)``, an int64 array. Sampled from the policy, or its most likely action when
        ``greedy``; ``generator`` is a torch.Generator (one stream across a rollout's steps) or a seed, None draws
        from torch's global generator. The model is built on the first call and reused while the weights stay.

        ConfigError (one sentence) for an observation of the wrong shape, of a non-real dtype (complex, strings,
        objects), holding NaN or inf, or so far out of range that the policy's outputs are not finite, and for a
        ``generator`` that is neither None, a torch.Generator nor a seed in [0, 2**64)."""
        gen = _generator(generator)
        try:
            arr = np.asarray(obs)
        except (ValueError, TypeError) as e:  # ragged nested lists
            raise ConfigError(f"act: the observation is not an array of numbers ({e})") from None
        if arr.dtype.kind not in "biuf":
            raise ConfigError(f"act: observations must be real numbers (integer, boolean or float), got dtype "
                              f"{arr.dtype}")
        shape = tuple(self.env.obs_shape)
        single = arr.shape == shape
        if not single and arr.shape[1:] != shape:
            raise ConfigError(f"act: an observation of this checkpoint has shape {shape} (a batch: (B, *{shape})), "
                              f"got {arr.shape}")
        if arr.dtype.kind == "f" and not np.isfinite(arr).all():
            raise ConfigError("act: the observation holds NaN or inf")
        # A copy: Gymnasium may hand out read-only views, which torch.from_numpy warns about.
        batch = torch.from_numpy(np.array(arr[None] if single else arr, order="C"))
        with torch.inference_mode():
            logits = self._model()(batch)[0].float()
            if not bool(torch.isfinite(logits).all()):  # a greedy argmax of NaN would quietly be action 0
                raise ConfigError("act: the policy's outputs are not finite for this observation (values far "
                                  "outside the range its env produces, such as 3e38, overflow the network)")
            if greedy:
                actions = logits.argmax(-1)
            else:
                actions = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(-1)
        out = actions.numpy().astype(np.int64)
        return int(out[0]) if single else out

    def make_env(self, render_mode: str | None = None, reward: Reward | str | None = None) -> gym.Env:
        """One Gymnasium env like the one this checkpoint was trained in, paying ``reward`` (default: its own),
        whose observations :meth:`act` reads; ``render_mode="rgb_array"`` for videos."""
        if render_mode is not None and not isinstance(render_mode, str):
            raise ConfigError(f"render_mode must be a string such as 'rgb_array' or None, got {render_mode!r}")
        reward = self._reward(reward)
        if isinstance(self.env, MazeConfig):
            from goalscope.envs.gym import ObjectMazeEnv

            return ObjectMazeEnv(self.env, reward, render_mode=render_mode)
        make_single = getattr(self.env, "make_single", None)
        if make_single is None:
            family = getattr(self.env, "family", type(self.env).__name__)
            raise ConfigError(f"env family {family!r} makes no single env (its config has no make_single)")
        if reward.cued:
            raise ConfigError(f"reward {reward.name!r}: cued rewards exist only in the object maze")
        try:
            env = make_single(render_mode=render_mode)
        except TypeError as e:  # Gymnasium passes render_mode on to the env's constructor, which may not take one
            if "render_mode" not in str(e):
                raise
            raise ConfigError(f"env.id {getattr(self.env, 'id', '?')!r} cannot be made with "
                              f"render_mode={render_mode!r} (its constructor does not take one)") from None
        return EventsReward(env, reward)

    def _reward(self, reward: Reward | str | None) -> Reward:
        if reward is None:
            return self.reward
        if not isinstance(reward, (str, Reward)):
            raise ConfigError(f"reward must be a reward name such as 'collect:0', a Reward or None, got {reward!r}")
        if isinstance(reward, str):
            reward = parse_reward(reward, self.env.n_types, getattr(self.env, "event_names", None))
        if reward.n_types != self.env.n_types:
            raise ConfigError(f"reward {reward.name!r} has {reward.n_types} weights but the checkpoint's env has "
                              f"{self.env.n_types} types")
        return reward

    def _model(self) -> nn.Module:
        """The built model, rebuilt only when the architecture, env or any weight tensor changed (replaced, or
        edited in place: a tensor's ``_version`` counts its in-place writes)."""
        config = json.dumps([self.arch_config, self.env.to_json()], sort_keys=True, default=str)
        stamp = (self.arch, config, [(k, t, t._version) for k, t in self.state_dict.items()])
        cached = self.__dict__.get("_built")
        if cached is None or not _same_stamp(cached[0], stamp):
            self.__dict__["_built"] = (stamp, self.build().eval())
        return self.__dict__["_built"][1]

    def __getstate__(self) -> dict:
        # The built model is a cache: pickles and copies carry the fields alone, as before.
        return {k: v for k, v in self.__dict__.items() if k != "_built"}


def _generator(generator) -> torch.Generator | None:
    """:meth:`Checkpoint.act`'s ``generator`` as a torch.Generator (a seed makes a fresh one) or None."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    if isinstance(generator, (int, np.integer)) and not isinstance(generator, (bool, np.bool_)):
        if 0 <= int(generator) < 2**64:
            return torch.Generator().manual_seed(int(generator))
    raise ConfigError(f"act: generator must be a torch.Generator, a seed (an integer from 0 to 2**64 - 1) or None, "
                      f"got {generator!r}")


def _same_stamp(a, b) -> bool:
    """Whether two :meth:`Checkpoint._model` stamps describe the same weights (tensors by identity, not value)."""
    if a[:2] != b[:2] or len(a[2]) != len(b[2]):
        return False
    return all(ka == kb and ta is tb and va == vb for (ka, ta, va), (kb, tb, vb) in zip(a[2], b[2]))


class EventsReward(gym.Wrapper):
    """Pays ``info["events"] @ weights - step_cost`` each step, as goalscope's vectorised env of the
    ``gym_events`` family does in training, in place of the env's own reward."""

    def __init__(self, env: gym.Env, reward: Reward):
        super().__init__(env)
        self.paid = reward
        self._weights = reward.vector().astype(np.float64)

    def step(self, action):
        obs, _, term, trunc, info = self.env.step(action)
        events = np.asarray(info.get("events", np.zeros_like(self._weights)), dtype=np.float64)
        return obs, float(events @ self._weights - self.paid.step_cost), term, trunc, info


def versions() -> dict:
    """Versions of goalscope, torch, numpy, safetensors and Python, recorded in every checkpoint's meta.json."""
    import numpy
    import safetensors

    return {"goalscope": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "safetensors": safetensors.__version__, "python": platform.python_version()}


def check_state_dict(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor], arch: str) -> None:
    """Raise a CheckpointError naming the first tensor that ``got`` lacks, has extra, or has with another shape
    than architecture ``arch`` wants."""
    missing = sorted(set(want) - set(got))
    unexpected = sorted(set(got) - set(want))
    if missing:
        raise CheckpointError(f"architecture mismatch: the weights lack {missing[0]!r} that {arch!r} needs")
    if unexpected:
        raise CheckpointError(f"architecture mismatch: the weights have {unexpected[0]!r} that {arch!r} does not")
    for k, t in want.items():
        if tuple(got[k].shape) != tuple(t.shape):
            raise CheckpointError(f"architecture mismatch: {k!r} has shape {tuple(got[k].shape)}, {arch!r} needs {tuple(t.shape)}")
        if got[k].dtype != t.dtype:
            raise CheckpointError(f"architecture mismatch: {k!r} has dtype {got[k].dtype}, {arch!r} needs {t.dtype}")


def save_checkpoint(ckpt: Checkpoint, directory: str | Path) -> Path:
    """Write ``ckpt`` to ``directory`` as model.safetensors + meta.json (atomically, meta last); returns the directory."""
    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in ckpt.state_dict.items()}
    meta = {
        "format": FORMAT,
        "arch": ckpt.arch,
        "arch_config": ckpt.arch_config,
        "env": ckpt.env.to_json(),
        "reward": ckpt.reward.to_json(),
        "steps": ckpt.steps,
        "seed": ckpt.seed,
        "parent": ckpt.parent,
        "versions": versions(),
        "extra": ckpt.extra,
    }
    # Weights first, metadata last: a directory with meta.json is complete.
    atomic_write_bytes(directory / WEIGHTS, st_save(tensors, metadata={"format": FORMAT}))
    atomic_write_bytes(directory / META, json.dumps(meta, indent=2).encode())
    return directory


def save_heatmap(heat: dict[str, torch.Tensor], path: str | Path, meta: dict | None = None) -> Path:
    """Write a heatmap (one score per parameter) marked as such, so it can never be loaded as weights."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in heat.items()}
    atomic_write_bytes(Path(path), st_save(tensors, metadata={**(meta or {}), "format": HEATMAP_FORMAT}))
    return Path(path)


def weights_format(path: Path) -> str | None:
    """The ``format`` in a safetensors file's metadata (checkpoint weights and heatmaps carry different ones)."""
    try:
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            if n > MAX_HEADER:
                return None
            header = json.loads(f.read(n))
    except (OSError, ValueError, RecursionError):
        return None
    meta = header.get("__metadata__") if isinstance(header, dict) else None
    return meta.get("format") if isinstance(meta, dict) else None


def _check_meta(meta, meta_path: Path) -> None:
    """Type- and range-check every field of meta.json before any of it is used."""
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{meta_path} is not a goalscope checkpoint (format {found!r})")
    for key in ("arch", "env", "reward"):
        if key not in meta:
            raise CheckpointError(f"{meta_path} lacks the field {key!r}")
    kinds = {"arch": str, "arch_config": dict, "env": dict, "reward": dict, "extra": dict}
    for key, kind in kinds.items():
        if key in meta and meta[key] is not None and not isinstance(meta[key], kind):
            raise CheckpointError(f"{meta_path}: field {key!r} must be a {kind.__name__}, got {meta[key]!r:.60}")
    for key in ("steps", "seed"):
        if key in meta:
            int_field(meta[key], f"{meta_path}: field {key!r}", 0, MAX_STEPS if key == "steps" else 2**63 - 1,
                      error=CheckpointError)
    if meta.get("parent") is not None and not isinstance(meta["parent"], str):
        raise CheckpointError(f"{meta_path}: field 'parent' must be a path string, got {meta['parent']!r:.60}")


def load_checkpoint(directory: str | Path) -> Checkpoint:
    """Load and fully validate a checkpoint directory (or its ``meta.json`` / ``model.safetensors``).

    Nothing is unpickled and no module named by the files is imported: an env id naming a module that is not
    already imported is refused (see :func:`goalscope.envs.events.trust_modules`). Every failure is a one-line
    :class:`CheckpointError`: missing or foreign files, damaged JSON, wrong field types, tensors that do not fit
    the architecture, NaN/inf weights, heatmaps passed off as weights.
    """
    directory = Path(directory)
    if directory.is_file() and directory.name in (WEIGHTS, META):
        directory = directory.parent
    if not directory.exists():
        raise CheckpointError(f"checkpoint {str(directory)!r} does not exist")
    if not directory.is_dir():
        hint = {".zip": f"; a Stable-Baselines3 model? import it first: goalscope import-sb3 {directory} --out DIR "
                        "--reward RA",
                ".pt": "; a torch.save-d state dict? see goalscope.agents.importers.load_torch_state_dict",
                ".pth": "; a torch.save-d state dict? see goalscope.agents.importers.load_torch_state_dict"}
        raise CheckpointError(f"{directory} is a file; a checkpoint is a directory with {META} and {WEIGHTS}"
                              f"{hint.get(directory.suffix, '')}")
    meta_path, weights_path = directory / META, directory / WEIGHTS
    if not meta_path.exists() or not weights_path.exists():
        if any(directory.glob("*.pt")) or any(directory.glob("*.pth")) or any(directory.glob("*.pkl")):
            raise CheckpointError(f"{directory}: pickle-based weights are not loaded (they can run code); convert to safetensors")
        raise CheckpointError(f"{directory} is not a goalscope checkpoint (needs {META} and {WEIGHTS})")
    meta = read_json(meta_path, error=CheckpointError)
    _check_meta(meta, meta_path)
    if weights_path.is_dir():
        raise CheckpointError(f"{weights_path} is a directory where the weights file should be")
    try:
        state = st_load(weights_path.read_bytes())
    except (SafetensorError, ValueError, RuntimeError, OSError) as e:
        raise CheckpointError(f"{weights_path} is corrupt or truncated: {e}") from None
    fmt = weights_format(weights_path)
    if fmt != FORMAT:
        what = "a goalscope heatmap" if fmt == HEATMAP_FORMAT else f"format {fmt!r}"
        raise CheckpointError(f"{weights_path} holds {what}, not checkpoint weights (every goalscope checkpoint "
                              f"is marked {FORMAT!r})")
    check_finite_state(state, str(weights_path), error=CheckpointError)
    try:
        ckpt = Checkpoint(
            arch=meta["arch"],
            arch_config=meta.get("arch_config") or {},
            env=env_from_json(meta["env"]),
            reward=Reward.from_json(meta["reward"]),
            state_dict=state,
            steps=meta.get("steps", 0),
            seed=meta.get("seed", 0),
            parent=meta.get("parent"),
            extra=meta.get("extra") or {},
        )
        # Validate architecture, names, shapes and dtypes now rather than at first use, and put the tensors in the
        # model's own order (safetensors returns them unordered; results must not depend on it).
        ckpt.state_dict = {k: state[k] for k in ckpt.build().state_dict()}
    except KeyError as e:
        raise CheckpointError(f"{meta_path} lacks the field {e.args[0]!r}") from None
    except (TypeError, ValueError, OverflowError) as e:
        raise CheckpointError(f"{meta_path} has an invalid field: {e}") from None
    except CheckpointError:
        raise
    except GoalscopeError as e:
        raise CheckpointError(f"{meta_path}: {e}") from None
    return ckpt
