"""Bring weights trained elsewhere into goalscope, without unpickling anything that can run code.

``import_sb3`` reads a Stable-Baselines3 PPO ``.zip`` (``model.save(...)``). A policy whose features extractor is
``goalscope.agents.sb3.GoalscopeCNN`` becomes a goalscope ``cnn`` checkpoint, exactly (see
:mod:`goalscope.agents.importers_cnn`). Otherwise it must be an ``MlpPolicy``: separate policy and value towers of
equal widths (``net_arch=dict(pi=[...], vf=[...])``, a plain list, or SB3's default ``[64, 64]``) and Tanh or ReLU
activations. It becomes a goalscope ``mlp`` checkpoint (``shared=False``) that gives the same logits and values, so
it can be evaluated, fine-tuned (it is MA) and analysed like one trained here.

What is read, and how:

- ``policy.pth``: the policy's state dict, through ``torch.load(weights_only=True)``, whose unpickler only builds
  tensors and plain containers and refuses anything else;
- ``data``: JSON. SB3 stores objects it cannot write as JSON (the policy class, activation functions, spaces) as
  base64 cloudpickle under ``":serialized:"``; those are never decoded. Only the readable fields next to them are
  used (``policy_kwargs.net_arch``, the activation's class name, the observation shape, the number of actions).

Every tensor name and shape is checked against goalscope's ``mlp`` architecture before use. What SB3 keeps
outside the zip is not imported: a ``VecNormalize`` wrapper's observation statistics live in their own file, so a
model trained with observation normalisation would see different inputs here.

``load_torch_state_dict`` reads a ``torch.save``-d state dict the same safe way.

May import: goalscope.agents.checkpoints, goalscope.agents.importers_cnn, goalscope.agents.mlp,
goalscope.agents.registry, goalscope.envs, goalscope.errors, goalscope.inputs.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from goalscope.agents.mlp import MLPConfig
from goalscope.agents.registry import arch_config_to_json, build_agent
from goalscope.agents.checkpoints import Checkpoint, check_state_dict
from goalscope.agents.importers_cnn import convert as convert_cnn, is_goalscope_cnn
from goalscope.envs.maze import N_ACTIONS, MazeConfig
from goalscope.envs.rewards import Reward, parse_reward
from goalscope.errors import CheckpointError, GoalscopeError
from goalscope.inputs import MAX_STEPS, check_structure, int_field

ACTIVATIONS = {"Tanh": "tanh", "ReLU": "relu"}  # SB3 class name -> goalscope MLPConfig.activation
SB3_DEFAULT_ACTIVATION = "tanh"  # ActorCriticPolicy's default activation_fn is nn.Tanh
MAX_MEMBER_BYTES = 1 << 30  # refuse absurd zip members before reading them into memory
# Everything one import may expand, counted before it is: the zip's members goalscope reads plus the members of
# policy.pth (itself a zip that torch.load expands). Goalscope's policies are a few MB.
MAX_EXPANDED_BYTES = 256 << 20


def _safe_torch_load(data: bytes | Path, what: str):
    """``torch.load`` restricted to tensors and plain containers; anything else is a CheckpointError."""
    source = io.BytesIO(data) if isinstance(data, bytes) else data
    try:
        return torch.load(source, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        # torch's message ends with advice to pass weights_only=False, i.e. to run the code: never repeat it.
        text = str(e)
        m = re.search(r"GLOBAL ([\w.]+)|call reduce for ([\w.]+)", text)
        if m:
            raise CheckpointError(f"{what} is refused: unpickling it would import or call {m.group(1) or m.group(2)}, "
                                  "which could run code; goalscope loads only tensors and plain containers") from None
        m = re.search(r"WeightsUnpickler error:\s*([^\n]+)", text)
        detail = m.group(1).strip() if m else "not a pickle of tensors"
        raise CheckpointError(f"{what} is not a readable torch state dict ({detail})") from None
    except (RuntimeError, EOFError, ValueError, OSError, zipfile.BadZipFile, KeyError, AttributeError) as e:
        raise CheckpointError(f"{what} is not a readable torch state dict: {type(e).__name__}: {e}") from None


def _as_state_dict(obj, what: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]  # a training checkpoint that wraps the state dict
    if not isinstance(obj, Mapping) or not obj:
        raise CheckpointError(f"{what} is not a state dict (a mapping of names to tensors), but {type(obj).__name__}")
    for k, v in obj.items():
        if not isinstance(k, str) or not isinstance(v, torch.Tensor):
            raise CheckpointError(f"{what}: entry {k!r} is not a tensor but {type(v).__name__}")
    return dict(obj)


def load_torch_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A ``torch.save``-d state dict (``.pt``/``.pth``), loaded with ``weights_only=True``: a file that would need
    to run code to unpickle (any class or function outside tensors and plain containers) is refused."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file")
    return _as_state_dict(_safe_torch_load(path, str(path)), str(path))


# ----------------------------------------------------------------------------------------------------------------
# Stable-Baselines3


def _read_member(z: zipfile.ZipFile, name: str, path: Path) -> bytes:
    try:
        info = z.getinfo(name)
    except KeyError:
        raise CheckpointError(f"{path} has no {name!r}; is it a Stable-Baselines3 model saved with model.save()?") from None
    if info.file_size > MAX_MEMBER_BYTES:
        raise CheckpointError(f"{path}: {name!r} is {info.file_size:,} bytes; too large for a policy")
    return z.read(name)


def _check_expanded(total: int, path: Path) -> None:
    if total > MAX_EXPANDED_BYTES:
        raise CheckpointError(f"{path} would expand to {total:,} bytes, more than the {MAX_EXPANDED_BYTES:,} goalscope "
                              "expands for one import (a policy is a few MB)")


def _readable(entry, key: str):
    """A readable field SB3 wrote next to a ``:serialized:`` blob (or the plain JSON value itself)."""
    if isinstance(entry, dict):
        return entry.get(key)
    return None


def _activation_from_data(policy_kwargs) -> str | None:
    """goalscope's activation name from SB3's data JSON; None if the JSON does not say in readable form.

    SB3 writes ``policy_kwargs`` as plain JSON when it can, and otherwise as a pickled blob with every key also
    written readably next to it (``"activation_fn": "<class 'torch.nn.modules.activation.ReLU'>"``). Either way,
    readable kwargs without ``activation_fn`` mean SB3's default, Tanh."""
    if not isinstance(policy_kwargs, dict):
        return None
    readable = {k: v for k, v in policy_kwargs.items() if k not in (":type:", ":serialized:")}
    if "activation_fn" not in readable:
        return SB3_DEFAULT_ACTIVATION if readable or ":serialized:" not in policy_kwargs else None
    text = str(readable["activation_fn"])
    m = re.search(r"\.(\w+)'?>?\s*$", text) or re.search(r"(\w+)", text)
    name = m.group(1) if m else text
    if name not in ACTIVATIONS:
        raise CheckpointError(f"activation {name!r} is not supported (goalscope's mlp has {', '.join(ACTIVATIONS)})")
    return ACTIVATIONS[name]


def _check_policy_kwargs(policy_kwargs, path: Path) -> None:
    if not isinstance(policy_kwargs, dict):
        return
    extractor = policy_kwargs.get("features_extractor_class")
    if extractor is not None and "FlattenExtractor" not in str(extractor) and "GoalscopeCNN" not in str(extractor):
        raise CheckpointError(f"{path}: features extractor {extractor} is not supported; only MlpPolicy's "
                              "FlattenExtractor maps onto goalscope's mlp")
    net_arch = policy_kwargs.get("net_arch")
    if isinstance(net_arch, list) and any(isinstance(x, dict) for x in net_arch):
        raise CheckpointError(f"{path}: net_arch {net_arch} has shared layers; goalscope's mlp import needs "
                              "separate policy and value towers")


def _tower(state: dict[str, torch.Tensor], prefix: str) -> list[tuple[int, int]]:
    """(out, in) of each Linear in ``mlp_extractor.<prefix>``, in order; their indices must be 0, 2, 4..."""
    layers = {}
    for k in state:
        m = re.fullmatch(rf"mlp_extractor\.{prefix}\.(\d+)\.(weight|bias)", k)
        if m:
            layers.setdefault(int(m.group(1)), set()).add(m.group(2))
    idx = sorted(layers)
    if idx != list(range(0, 2 * len(idx), 2)) or any(v != {"weight", "bias"} for v in layers.values()):
        raise CheckpointError(f"mlp_extractor.{prefix} has layers {idx}; expected Linear layers at 0, 2, 4... "
                              "with an activation between them (SB3's MlpExtractor)")
    return [tuple(state[f"mlp_extractor.{prefix}.{i}.weight"].shape) for i in idx]


def _sb3_policy_name(policy_class) -> str | None:
    init = _readable(policy_class, "__init__")
    m = re.search(r"<function (\w+)\.__init__", str(init)) if init else None
    return m.group(1) if m else None


def _read_zip(path: Path, policy: bool = True) -> tuple[dict, bytes | None, str | None]:
    """(``data`` parsed as JSON, ``policy.pth``'s bytes, the SB3 version) of an SB3 zip, bounded and checked."""
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist or is not a file")
    try:
        with zipfile.ZipFile(path) as z:
            names = ["data", *(["policy.pth"] if policy else []), "_stable_baselines3_version"]
            _check_expanded(sum(z.getinfo(n).file_size for n in names if n in z.namelist()), path)
            data_bytes = _read_member(z, "data", path)
            policy_bytes = _read_member(z, "policy.pth", path) if policy else None
            sb3_version = z.read("_stable_baselines3_version").decode(errors="replace").strip() \
                if "_stable_baselines3_version" in z.namelist() else None
    except zipfile.BadZipFile as e:
        raise CheckpointError(f"{path} is not a Stable-Baselines3 zip: {e}") from None
    if policy_bytes is not None:  # torch.load expands policy.pth's own members: counted before it does
        try:
            with zipfile.ZipFile(io.BytesIO(policy_bytes)) as inner:
                _check_expanded(len(data_bytes) + len(policy_bytes) + sum(i.file_size for i in inner.infolist()), path)
        except zipfile.BadZipFile:
            pass  # a legacy (non-zip) torch pickle: its size is what was read
    try:
        data = json.loads(data_bytes)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: 'data' is not JSON: {e}") from None
    except (RecursionError, MemoryError):
        raise CheckpointError(f"{path}: 'data' is nested too deeply or too large to read") from None
    check_structure(data, f"{path}:data", CheckpointError)
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: 'data' is not a JSON object")
    return data, policy_bytes, sb3_version


def _obs_shape(data: dict, path: Path) -> tuple[int, ...] | None:
    obs_shape = _readable(data.get("observation_space"), "_shape")
    if obs_shape is not None and (not isinstance(obs_shape, list) or not all(isinstance(d, int) for d in obs_shape)):
        raise CheckpointError(f"{path}: observation_space._shape must be a list of integers, got {obs_shape!r:.60}")
    return None if obs_shape is None else tuple(obs_shape)


# The object maze's settings an SB3 zip records: its observation space's shape, (2 + K, size, size) for a maze
# with K types, a full view and no cue. Nothing else about the env is stored (SB3 saves the spaces, not the env).
SB3_STORES = ("size", "n_types")
SB3_DOES_NOT_STORE = ("n_per_type", "max_steps", "layout", "loop_prob")


def sb3_maze_settings(zip_path: str | Path) -> dict:
    """The maze settings an SB3 zip records, read from its observation shape: ``{"size", "n_types"}`` for a full-
    view maze without cue (``{}`` when the zip has no readable shape or another one). Nothing is unpickled."""
    path = Path(zip_path)
    data, _, _ = _read_zip(path, policy=False)
    shape = _obs_shape(data, path)
    if shape is None or len(shape) != 3 or shape[1] != shape[2] or shape[0] < 3:
        return {}
    return {"size": shape[1], "n_types": shape[0] - 2}


def import_sb3(zip_path: str | Path, env_cfg: MazeConfig, reward: Reward | str,
               activation: str | None = None) -> Checkpoint:
    """A goalscope ``mlp`` (or, for ``GoalscopeCNN`` policies, ``cnn``) checkpoint from a Stable-Baselines3 PPO zip.

    ``env_cfg`` must be the object maze the model was trained on (its observation shape is checked); ``reward`` is
    the reward it was trained on (RA), which SB3 does not record. ``activation`` ("tanh" or "relu") is only needed
    when the zip does not say in readable form; if both say, they must agree.
    """
    path = Path(zip_path)
    data, policy_bytes, sb3_version = _read_zip(path)

    if isinstance(reward, str):
        reward = parse_reward(reward, env_cfg.n_types)
    if activation is not None and activation not in ACTIVATIONS.values():
        raise CheckpointError(f"activation must be one of {', '.join(ACTIVATIONS.values())}, got {activation!r}")

    policy_name = _sb3_policy_name(data.get("policy_class"))
    if policy_name is not None and policy_name != "ActorCriticPolicy":
        hint = " (CNN policies are not supported)" if "Cnn" in policy_name else ""
        raise CheckpointError(f"{path}: policy class {policy_name} is not supported; only PPO's MlpPolicy "
                              f"(ActorCriticPolicy) maps onto goalscope's mlp{hint}")
    policy_kwargs = data.get("policy_kwargs")
    _check_policy_kwargs(policy_kwargs, path)
    obs_shape = _obs_shape(data, path)
    if obs_shape is not None and tuple(obs_shape) != tuple(env_cfg.obs_shape):
        raise CheckpointError(f"{path}: observation shape mismatch: the SB3 model saw {tuple(obs_shape)}, "
                              f"this maze gives {tuple(env_cfg.obs_shape)} (size, n_types and cue must match)")
    n = _readable(data.get("action_space"), "n")
    if n is not None and str(n).strip().isdigit() and int(n) != N_ACTIONS:
        raise CheckpointError(f"{path}: the SB3 model has {int(n)} actions, the maze has {N_ACTIONS}")

    if is_goalscope_cnn(policy_kwargs):  # goalscope.agents.sb3.GoalscopeCNN: goalscope's cnn, imported exactly
        state = _as_state_dict(_safe_torch_load(policy_bytes, f"{path}:policy.pth"), f"{path}:policy.pth")
        arch, arch_cfg, state = ("cnn", *convert_cnn(state, policy_kwargs, env_cfg, path))
    else:
        arch, arch_cfg, state = ("mlp", *_convert_mlp(data, policy_kwargs, policy_bytes, env_cfg, path, activation))
    seed = data.get("seed")
    steps = int_field(data.get("num_timesteps") or 0, f"{path}: num_timesteps", 0, MAX_STEPS, error=CheckpointError)
    return Checkpoint(
        arch=arch, arch_config=arch_cfg, env=env_cfg, reward=reward,
        state_dict=state,  # the model's own order
        steps=steps,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) and 0 <= seed < 2**63 else 0,
        parent=None,
        extra={"imported_from": {"format": "stable-baselines3", "path": str(path), "sb3_version": sb3_version,
                                 "policy_class": policy_name}},
    )


def _convert_mlp(data, policy_kwargs, policy_bytes, env_cfg, path, activation) -> tuple[dict, dict]:
    found = _activation_from_data(policy_kwargs)
    if found is not None and activation is not None and found != activation:
        raise CheckpointError(f"{path}: the zip says activation {found!r}, but activation={activation!r} was given")
    act = found or activation
    if act is None:
        raise CheckpointError(f"{path}: the zip does not say which activation the policy uses in readable form; "
                              "pass activation='tanh' or 'relu'")

    state = _as_state_dict(_safe_torch_load(policy_bytes, f"{path}:policy.pth"), f"{path}:policy.pth")
    if any(k.startswith("mlp_extractor.shared_net.") for k in state):
        raise CheckpointError(f"{path}: the policy has shared layers (mlp_extractor.shared_net); goalscope's mlp "
                              "import needs separate policy and value towers")
    extractor = sorted(k for k in state if "features_extractor" in k)
    if extractor:
        raise CheckpointError(f"{path}: the policy has a features extractor with weights ({extractor[0]}): a CNN or "
                              "custom extractor, which goalscope's mlp cannot represent")
    known = re.compile(r"mlp_extractor\.(policy_net|value_net)\.\d+\.(weight|bias)|(action_net|value_net)\.(weight|bias)")
    other = sorted(k for k in state if not known.fullmatch(k))
    if other:
        raise CheckpointError(f"{path}: unsupported parameter {other[0]!r} (only MlpPolicy with a discrete action "
                              "space is imported)")
    pi, vf = _tower(state, "policy_net"), _tower(state, "value_net")
    pi_hidden, vf_hidden = [o for o, _ in pi], [o for o, _ in vf]
    if pi_hidden != vf_hidden:
        raise CheckpointError(f"{path}: policy tower {pi_hidden} and value tower {vf_hidden} differ; goalscope's "
                              "mlp has one hidden size list for both")
    n_in = 1
    for d in env_cfg.obs_shape:
        n_in *= d
    for name, tower in (("policy", pi), ("value", vf)):
        if tower and tower[0][1] != n_in:
            raise CheckpointError(f"{path}: observation size mismatch: the {name} tower takes {tower[0][1]} inputs, "
                                  f"this maze's observation {tuple(env_cfg.obs_shape)} has {n_in}")

    mapping = {"action_net.weight": "policy.weight", "action_net.bias": "policy.bias",
               "value_net.weight": "value.weight", "value_net.bias": "value.bias"}
    for prefix, ours in (("policy_net", "pi_fc"), ("value_net", "vf_fc")):
        for j in range(len(pi)):
            for p in ("weight", "bias"):
                mapping[f"mlp_extractor.{prefix}.{2 * j}.{p}"] = f"{ours}{j + 1}.{p}"
    converted = {mapping[k]: v.detach().to(torch.float32).contiguous().clone() for k, v in state.items()}

    cfg = MLPConfig(hidden=tuple(pi_hidden), activation=act, shared=False)
    arch_cfg = arch_config_to_json(cfg)
    try:
        model = build_agent("mlp", env_cfg.obs_shape, N_ACTIONS, arch_cfg)
    except GoalscopeError as e:
        raise CheckpointError(f"{path}: {e}") from None
    want = model.state_dict()
    check_state_dict(converted, want, "mlp")
    return arch_cfg, {k: converted[k] for k in want}
