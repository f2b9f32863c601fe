"""Resumable training snapshots: tensors in safetensors, the rest in JSON (nothing is pickled). The JSON names the
tensors' hash and is written last, so a snapshot cut short by a kill is recognised and ignored. A run resumed from
a snapshot ends with the same weights as one that was never interrupted.

The PPO loop uses one :class:`Snapshots` per run: ``resume`` at the start, ``due``/``save`` after each update.
Snapshots are due every so many env steps and every so many seconds of wall time, so a slow env (Crafter steps
~1,000 times a second) loses minutes, not hours, to a kill.

An env that cannot hand over its state (``get_state``/``set_state``: the object maze can, a third-party Gymnasium
env in general cannot) still resumes: weights, optimiser and RNG are restored and the envs start fresh episodes
from a seed drawn from the run's seed and step. Such a run is not bit-identical to an uninterrupted one (the
episodes in flight at the kill are lost), and its log row at the resume says so (``charts/resumed_fresh_episodes``).
May import: goalscope.outputs, goalscope.inputs, goalscope.errors, torch, safetensors, numpy.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch


class Snapshots:
    """The snapshots of one training run in ``directory`` (None: never written, never resumed), written every
    ``every`` env steps and every ``every_s`` seconds (0 turns either off)."""

    def __init__(self, directory: Path | None, fingerprint: dict, every: int, env, every_s: float = 0.0):
        self.directory = directory
        self.fingerprint = fingerprint
        self.every, self.every_s = every, every_s
        self.enabled = directory is not None and (every > 0 or every_s > 0)
        self.next_save: int | None = None
        self.last_save = time.monotonic()

    def resume(self, model, optimizer, env, log, ep_returns, step: int = 0):
        """Restore a snapshot of this run found in the directory into the model, optimiser, env, log and episode
        returns; returns (first update, step, next evaluation step, observation), or None when there is none.
        Either way, schedules the next snapshot after the step training continues from."""
        snap = _load_snapshot(self.directory, self.fingerprint) if self.directory else None
        restored = _restore(snap, model, optimizer, env, log, ep_returns) if snap is not None else None
        step = restored[1] if restored is not None else step
        self.next_save = self._after(step)
        self.last_save = time.monotonic()
        return restored

    def due(self, step: int) -> bool:
        """Whether a snapshot is owed at env step ``step`` (or by the wall clock)."""
        if not self.enabled:
            return False
        by_time = self.every_s > 0 and time.monotonic() - self.last_save >= self.every_s
        return by_time or (self.next_save is not None and step >= self.next_save)

    def save(self, model, optimizer, env, obs, update, step, next_eval, log, ep_returns) -> None:
        """Write the snapshot training resumes from at ``update`` and schedule the next one."""
        _save_snapshot(self.directory, self.fingerprint, model, optimizer, env, obs, update, step, next_eval, log,
                       ep_returns)
        self.last_save = time.monotonic()
        self.next_save = self._after(step)

    def _after(self, step: int) -> int | None:
        """The step of the next snapshot by steps after ``step`` (None when snapshots by steps are off)."""
        return (step // self.every + 1) * self.every if self.enabled and self.every > 0 else None


SNAPSHOT_TENSORS, SNAPSHOT_META = "snapshot.safetensors", "snapshot.json"


def _save_snapshot(directory: Path, fingerprint: dict, model, optimizer, env, obs, update, step, next_eval, log,
                   ep_returns) -> None:
    import hashlib

    from safetensors.torch import save as st_save

    from goalscope.outputs import atomic_write_bytes

    arrays, rng_state = env.get_state() if hasattr(env, "get_state") else ({}, None)
    tensors = {f"model/{k}": v.detach().cpu().clone().contiguous() for k, v in model.state_dict().items()}
    for i, state in optimizer.state_dict()["state"].items():
        tensors.update({f"adam/{i}/{k}": v.detach().cpu().clone().reshape(-1 if v.dim() == 0 else v.shape)
                        for k, v in state.items()})
    tensors["torch_rng"] = torch.get_rng_state()
    tensors["obs"] = obs.clone().contiguous()
    tensors.update({f"env/{k}": torch.from_numpy(np.ascontiguousarray(v)) for k, v in arrays.items()})
    blob = st_save(tensors)
    meta = {"fingerprint": fingerprint, "update": update, "step": step, "next_eval": next_eval,
            "rows": log.rows, "ep_returns": ep_returns, "env_rng": rng_state,
            "sha256": hashlib.sha256(blob).hexdigest()}
    Path(directory).mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(Path(directory) / SNAPSHOT_TENSORS, blob)
    atomic_write_bytes(Path(directory) / SNAPSHOT_META, json.dumps(meta).encode())


def _load_snapshot(directory: Path, fingerprint: dict) -> dict | None:
    import hashlib

    from safetensors.torch import load as st_load

    meta_path, tensor_path = Path(directory) / SNAPSHOT_META, Path(directory) / SNAPSHOT_TENSORS
    if not meta_path.exists() or not tensor_path.exists():
        return None
    from goalscope.errors import GoalscopeError
    from goalscope.inputs import read_json

    try:
        meta = read_json(meta_path)  # bounded: a snapshot is a file of the run like any other
        blob = tensor_path.read_bytes()
    except (OSError, GoalscopeError):
        return None
    if not isinstance(meta, dict):
        return None
    if meta.get("fingerprint") != fingerprint or meta.get("sha256") != hashlib.sha256(blob).hexdigest():
        return None  # another job's or a half-written snapshot: start from the beginning
    meta["tensors"] = st_load(blob)
    return meta


def _restore(snap: dict, model, optimizer, env, log, ep_returns):
    t = snap["tensors"]
    model.load_state_dict({k[len("model/"):]: v for k, v in t.items() if k.startswith("model/")})
    opt = optimizer.state_dict()
    for key, v in t.items():
        if key.startswith("adam/"):
            _, i, name = key.split("/")
            opt["state"].setdefault(int(i), {})[name] = v.reshape(()) if name == "step" else v
    optimizer.load_state_dict(opt)
    torch.set_rng_state(t["torch_rng"])
    log.rows.extend(snap["rows"])
    ep_returns.extend(snap["ep_returns"])
    if snap["env_rng"] is not None and hasattr(env, "set_state"):
        env.set_state({k[len("env/"):]: v.numpy() for k, v in t.items() if k.startswith("env/")}, snap["env_rng"])
        return snap["update"], snap["step"], snap["next_eval"], t["obs"]
    # The env's state was not saved: fresh episodes, from a seed of the run's and the step's (reproducible).
    obs = torch.from_numpy(env.reset(int(snap["fingerprint"]["seed"]) * 1_000_003 + int(snap["step"]) % 1_000_003))
    log.write(int(snap["step"]), {"charts/resumed_fresh_episodes": 1.0})
    return snap["update"], snap["step"], snap["next_eval"], obs
