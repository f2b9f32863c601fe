"""Import an SB3 PPO model that uses ``goalscope.agents.sb3.GoalscopeCNN`` into goalscope's ``cnn`` architecture,
exactly.

Called by :func:`goalscope.agents.importers.import_sb3` when the zip's readable ``policy_kwargs`` name
``GoalscopeCNN`` as the features extractor. The network's configuration is read from the tensors alone (nothing is
unpickled): ``channels`` from the convolutions' output sizes, ``relative_coords`` from the first convolution's input
planes (the observation's planes, or two more), ``hidden`` from ``fc``. Refused, with the reason: ``normalize_images``
left on (SB3 would divide the 0/1 planes by 255, which goalscope's network never does), separate policy and value
extractors (``share_features_extractor=False``: goalscope's ``cnn`` has one trunk), and any layer between the
extractor and the heads (``net_arch`` not empty).

May import: goalscope.agents.checkpoints, goalscope.agents.cnn, goalscope.agents.registry, goalscope.envs,
goalscope.errors.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from goalscope.agents.checkpoints import check_state_dict
from goalscope.agents.cnn import CNNConfig
from goalscope.agents.registry import arch_config_to_json, build_agent
from goalscope.envs.maze import N_ACTIONS
from goalscope.errors import CheckpointError, GoalscopeError

EXTRACTOR = "GoalscopeCNN"


def is_goalscope_cnn(policy_kwargs) -> bool:
    """Whether the zip's readable ``policy_kwargs`` name ``GoalscopeCNN`` as the features extractor."""
    return isinstance(policy_kwargs, dict) and EXTRACTOR in str(policy_kwargs.get("features_extractor_class", ""))


def convert(state: dict[str, torch.Tensor], policy_kwargs: dict, env_cfg, path: Path) -> tuple[dict, dict]:
    """(goalscope ``cnn`` arch config as JSON, state dict in the model's order) from an SB3 policy state dict."""
    if policy_kwargs.get("normalize_images", True) is not False:
        raise CheckpointError(f"{path}: the policy was trained with normalize_images on (SB3 divided the 0/1 "
                              "planes by 255); goalscope's cnn sees them as they are. Train with "
                              "goalscope.agents.sb3.policy_kwargs(), which sets normalize_images=False")
    if any(k.startswith("mlp_extractor.") for k in state):
        raise CheckpointError(f"{path}: the policy has layers between the extractor and the heads (net_arch); "
                              "goalscope's cnn puts its heads directly on the extractor (net_arch=[])")
    main = {k[len("features_extractor."):]: v for k, v in state.items() if k.startswith("features_extractor.")}
    for alias in ("pi_features_extractor.", "vf_features_extractor."):
        other = {k[len(alias):]: v for k, v in state.items() if k.startswith(alias)}
        if other and (other.keys() != main.keys() or any(not torch.equal(other[k], main[k]) for k in main)):
            raise CheckpointError(f"{path}: the policy and value extractors differ (share_features_extractor="
                                  "False); goalscope's cnn has one trunk for both heads")
    known = re.compile(r"(pi_|vf_)?features_extractor\.(conv\d+|fc)\.(weight|bias)|(action_net|value_net)\.(weight|bias)")
    stray = sorted(k for k in state if not known.fullmatch(k))
    if stray:
        raise CheckpointError(f"{path}: unsupported parameter {stray[0]!r} for goalscope's cnn")
    n_conv = 0
    while f"conv{n_conv + 1}.weight" in main:
        n_conv += 1
    if n_conv == 0 or "fc.weight" not in main or any(k.startswith("conv") and int(k[4:].split(".")[0]) > n_conv for k in main):
        raise CheckpointError(f"{path}: the extractor's convolutions are not conv1..convN followed by fc")
    c = env_cfg.obs_shape[0]
    c_in = main["conv1.weight"].shape[1]
    if c_in not in (c, c + 2):
        raise CheckpointError(f"{path}: conv1 takes {c_in} planes; this maze's observation has {c} "
                              f"({c + 2} with offset planes)")
    cfg = CNNConfig(channels=tuple(int(main[f"conv{i + 1}.weight"].shape[0]) for i in range(n_conv)),
                    hidden=int(main["fc.weight"].shape[0]), relative_coords=c_in == c + 2)
    arch_cfg = arch_config_to_json(cfg)
    try:
        model = build_agent("cnn", env_cfg.obs_shape, N_ACTIONS, arch_cfg)
    except GoalscopeError as e:
        raise CheckpointError(f"{path}: {e}") from None
    converted = {k: v.detach().to(torch.float32).contiguous().clone() for k, v in main.items()}
    for sb3, ours in (("action_net", "policy"), ("value_net", "value")):
        for p in ("weight", "bias"):
            if f"{sb3}.{p}" not in state:
                raise CheckpointError(f"{path}: {sb3}.{p} is missing")
            converted[f"{ours}.{p}"] = state[f"{sb3}.{p}"].detach().to(torch.float32).contiguous().clone()
    want = model.state_dict()
    check_state_dict(converted, want, "cnn")
    return arch_cfg, {k: converted[k] for k in want}
