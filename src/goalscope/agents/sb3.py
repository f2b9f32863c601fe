"""Stable-Baselines3 with goalscope's CNN: the same network, trained by SB3's PPO.

SB3's ``CnnPolicy`` does not work on the object maze out of the box: its ``NatureCNN`` expects images of at least
36x36 pixels (8x8 stride-4 kernels) with 1, 3 or 4 channels, divides observations by 255, and the maze is a
handful of 0/1 planes of 7x7 to 11x11 cells. Use this instead::

    from stable_baselines3 import PPO
    from goalscope.agents.sb3 import policy_kwargs, sb3_vec_env
    model = PPO("MlpPolicy", sb3_vec_env(MazeConfig(size=9), "collect:0", 64), policy_kwargs=policy_kwargs())

``GoalscopeCNN`` is a ``BaseFeaturesExtractor`` whose trunk is goalscope's ``cnn`` architecture (offset planes,
3x3 same-padding convolutions, one hidden layer), running the very same ``CNNAgent.features`` function;
``policy_kwargs`` puts SB3's policy and value heads (``action_net``, ``value_net``) straight on it
(``net_arch=[]``), with ``normalize_images=False`` (the planes are already 0/1). Parameter for parameter this is
goalscope's ``cnn`` agent, so ``goalscope import-sb3`` turns such a model into a goalscope checkpoint exactly
(see :func:`goalscope.agents.importers.import_sb3`).

PPO settings: goalscope's value loss is ``0.5 * mse`` where SB3's is ``mse``, so SB3's ``vf_coef`` must be half of
goalscope's for the same objective; :func:`sb3_ppo_kwargs` does this (and the linear lr annealing).

Needs ``stable-baselines3`` (not a dependency of goalscope). Nothing in goalscope imports this module; import it
yourself.

The recurrent ``rcnn`` (the architecture that meets the 9x9 competence bar) works the same way:
``policy_kwargs=rcnn_policy_kwargs()`` (no importer for it yet).

May import: goalscope.agents.cnn, goalscope.agents.rcnn, goalscope.envs, goalscope.errors (and stable-baselines3,
gymnasium, torch).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from goalscope.agents.cnn import CNNAgent, CNNConfig
from goalscope.agents.rcnn import RCNNAgent, RCNNConfig
from goalscope.envs.maze import N_ACTIONS, MazeConfig, MazeVecEnv
from goalscope.envs.rewards import parse_reward
from goalscope.errors import ConfigError

try:
    import gymnasium as gym
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
    from stable_baselines3.common.vec_env import VecEnv
except ImportError as e:  # pragma: no cover - exercised only without SB3
    raise ImportError(f"goalscope.agents.sb3 needs stable-baselines3 ({e}): pip install stable-baselines3") from None


class GoalscopeCNN(BaseFeaturesExtractor):
    """goalscope's ``cnn`` trunk as an SB3 features extractor (``features_dim = hidden``)."""

    def __init__(self, observation_space: gym.spaces.Box, channels=(16, 32), hidden: int = 128,
                 relative_coords: bool = True):
        cfg = CNNConfig(tuple(int(c) for c in channels), int(hidden), bool(relative_coords))
        if not cfg.channels or min(cfg.channels) < 1 or cfg.hidden < 1:
            raise ConfigError(f"GoalscopeCNN needs positive channels and hidden, got {channels}, {hidden}")
        if len(observation_space.shape) != 3:
            raise ConfigError(f"GoalscopeCNN needs (C, H, W) observations, got shape {observation_space.shape}")
        super().__init__(observation_space, features_dim=cfg.hidden)
        # Build goalscope's agent and take its trunk modules under the same names (conv1.., fc, grid_rc).
        ref = CNNAgent(tuple(observation_space.shape), N_ACTIONS, cfg)
        self.relative_coords, self.n_conv = ref.relative_coords, ref.n_conv
        if ref.relative_coords:
            self.register_buffer("grid_rc", ref.grid_rc, persistent=False)
        for i in range(ref.n_conv):
            self.add_module(f"conv{i + 1}", getattr(ref, f"conv{i + 1}"))
        self.fc = ref.fc

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return CNNAgent.features(self, observations)


class GoalscopeRCNN(BaseFeaturesExtractor):
    """goalscope's ``rcnn`` trunk (input convs, the weight-tied recurrent conv, the readout at the agent's cell and
    its hidden layer) as an SB3 features extractor (``features_dim = hidden``)."""

    def __init__(self, observation_space: gym.spaces.Box, channels=(16,), width: int = 8, iterations: int = 0,
                 hidden: int = 128):
        if len(observation_space.shape) != 3:
            raise ConfigError(f"GoalscopeRCNN needs (C, H, W) observations, got shape {observation_space.shape}")
        cfg = RCNNConfig(tuple(int(c) for c in channels), int(width), int(iterations), int(hidden))
        super().__init__(observation_space, features_dim=cfg.hidden)
        ref = RCNNAgent(tuple(observation_space.shape), N_ACTIONS, cfg)
        self.iterations, self.n_conv = ref.iterations, ref.n_conv
        for name in [f"conv{i + 1}" for i in range(ref.n_conv)] + ["inject", "recur", "fc"]:
            self.add_module(name, getattr(ref, name))

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return RCNNAgent.features(self, observations)


def rcnn_policy_kwargs(channels=(16,), width: int = 8, iterations: int = 0, hidden: int = 128) -> dict:
    """``policy_kwargs`` for SB3's ``PPO("MlpPolicy", ...)`` with goalscope's ``rcnn`` trunk and nothing between it
    and the heads."""
    return {"features_extractor_class": GoalscopeRCNN,
            "features_extractor_kwargs": {"channels": list(channels), "width": width, "iterations": iterations,
                                          "hidden": hidden},
            "net_arch": [], "normalize_images": False}


def policy_kwargs(channels=(16, 32), hidden: int = 128, relative_coords: bool = True) -> dict:
    """``policy_kwargs`` for SB3's ``PPO("MlpPolicy", ...)``: goalscope's CNN and nothing between it and the heads."""
    return {"features_extractor_class": GoalscopeCNN,
            "features_extractor_kwargs": {"channels": list(channels), "hidden": hidden,
                                          "relative_coords": relative_coords},
            "net_arch": [], "normalize_images": False}


def sb3_ppo_kwargs(ppo) -> dict:
    """SB3 ``PPO`` keyword arguments equivalent to a goalscope ``PPOConfig`` (same loss, same lr schedule)."""
    lr = ppo.lr
    return {"learning_rate": (lambda progress: lr * progress) if ppo.anneal_lr else lr,
            "n_steps": ppo.n_steps, "batch_size": ppo.minibatch_size, "n_epochs": ppo.epochs,
            "gamma": ppo.gamma, "gae_lambda": ppo.gae_lambda, "clip_range": ppo.clip, "ent_coef": ppo.ent_coef,
            "vf_coef": ppo.vf_coef / 2, "max_grad_norm": ppo.max_grad_norm}


class MazeSB3VecEnv(VecEnv):
    """A thin SB3 ``VecEnv`` over the native ``MazeVecEnv`` (all envs stepped in one array operation)."""

    def __init__(self, cfg: MazeConfig, reward, n_envs: int, seed: int = 0):
        reward = parse_reward(reward, cfg.n_types) if isinstance(reward, str) else reward
        self.env = MazeVecEnv(cfg, reward, n_envs, seed=seed)
        self._seed = seed
        self.render_mode = None
        super().__init__(n_envs, gym.spaces.Box(0, 1, cfg.obs_shape, dtype=np.uint8), gym.spaces.Discrete(N_ACTIONS))
        self._actions = None

    def reset(self):
        return self.env.reset(self._seed)

    def step_async(self, actions):
        self._actions = np.asarray(actions)

    def step_wait(self):
        obs, reward, term, trunc, info = self.env.step(self._actions)
        infos = [{} for _ in range(self.num_envs)]
        if info:
            for k, i in enumerate(info["done_idx"]):
                infos[i] = {"terminal_observation": info["final_obs"][k], "TimeLimit.truncated": bool(trunc[i] and not term[i]),
                            "episode": {"r": float(info["returns"][k]), "l": int(info["steps"][k]), "t": 0.0}}
        return obs, reward.astype(np.float32), term | trunc, infos

    def close(self):
        pass

    def get_attr(self, attr_name, indices=None):
        return [getattr(self, attr_name)] * len(self._get_indices(indices))

    def set_attr(self, attr_name, value, indices=None):
        setattr(self, attr_name, value)

    def env_method(self, method_name, *args, indices=None, **kwargs):
        return [getattr(self, method_name)(*args, **kwargs) for _ in self._get_indices(indices)]

    def env_is_wrapped(self, wrapper_class, indices=None):
        return [False] * len(self._get_indices(indices))


def sb3_vec_env(cfg: MazeConfig, reward, n_envs: int, seed: int = 0) -> MazeSB3VecEnv:
    """An SB3 ``VecEnv`` of ``n_envs`` object mazes with ``reward`` (a Reward or its text, e.g. ``collect:0``)."""
    return MazeSB3VecEnv(cfg, reward, n_envs, seed)


class SB3Policy(nn.Module):
    """An SB3 actor-critic policy behind goalscope's agent protocol: ``logits, value = model(obs)`` (for
    :func:`goalscope.rl.evaluation.evaluate`)."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy

    def forward(self, obs: torch.Tensor):
        features = self.policy.extract_features(obs.float(), self.policy.features_extractor)
        latent_pi, latent_vf = self.policy.mlp_extractor(features)
        return self.policy.action_net(latent_pi), self.policy.value_net(latent_vf).squeeze(-1)


__all__ = ["GoalscopeCNN", "GoalscopeRCNN", "policy_kwargs", "rcnn_policy_kwargs", "sb3_ppo_kwargs", "MazeSB3VecEnv",
           "sb3_vec_env", "SB3Policy"]
