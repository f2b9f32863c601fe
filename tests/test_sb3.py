"""SB3 PPO with goalscope's CNN (goalscope.agents.sb3) and its exact import into goalscope's cnn architecture."""

import io
import json
import zipfile

import numpy as np
import pytest
import torch

from goalscope.agents.cnn import CNNAgent, CNNConfig
from goalscope.agents.importers import import_sb3
from goalscope.envs.maze import MazeConfig, MazeVecEnv
from goalscope.envs.rewards import parse_reward
from goalscope.errors import CheckpointError
from goalscope.rl.ppo import PPOConfig

sb3 = pytest.importorskip("stable_baselines3", reason="stable-baselines3 is not installed (it is in the test extra)")
from goalscope.agents.sb3 import GoalscopeCNN, SB3Policy, policy_kwargs, sb3_ppo_kwargs, sb3_vec_env  # noqa: E402

ENV = MazeConfig(size=5, n_types=2, n_per_type=1, max_steps=16, pool_size=16)


def _obs(n=40, seed=3):
    env = MazeVecEnv(ENV, parse_reward("collect:0", ENV.n_types), n, seed=seed)
    env.reset(seed)
    out = [env.step(np.random.default_rng(seed).integers(4, size=n))[0].copy() for _ in range(3)]
    return torch.from_numpy(np.concatenate(out))


@pytest.mark.parametrize("channels,relative", [((16, 32), True), ((8, 8, 8), False)])
def test_extractor_is_goalscopes_trunk(channels, relative):
    import gymnasium as gym

    space = gym.spaces.Box(0, 1, ENV.obs_shape, dtype=np.uint8)
    ext = GoalscopeCNN(space, channels=channels, hidden=24, relative_coords=relative)
    agent = CNNAgent(ENV.obs_shape, 4, CNNConfig(channels, 24, relative))
    missing, unexpected = agent.load_state_dict(ext.state_dict(), strict=False)
    assert sorted(missing) == ["policy.bias", "policy.weight", "value.bias", "value.weight"] and not unexpected
    x = _obs()
    torch.testing.assert_close(ext(x), agent.features(x), rtol=0, atol=0)
    assert ext.features_dim == 24


def test_rcnn_extractor_is_goalscopes_trunk_and_sb3_trains_it():
    import gymnasium as gym

    from goalscope.agents.rcnn import RCNNAgent, RCNNConfig
    from goalscope.agents.sb3 import GoalscopeRCNN, rcnn_policy_kwargs

    space = gym.spaces.Box(0, 1, ENV.obs_shape, dtype=np.uint8)
    ext = GoalscopeRCNN(space, channels=(8,), width=4, iterations=3, hidden=24)
    agent = RCNNAgent(ENV.obs_shape, 4, RCNNConfig((8,), 4, 3, 24))
    missing, unexpected = agent.load_state_dict(ext.state_dict(), strict=False)
    assert sorted(missing) == ["policy.bias", "policy.weight", "value.bias", "value.weight"] and not unexpected
    x = _obs()
    torch.testing.assert_close(ext(x), agent.features(x), rtol=0, atol=0)
    ppo = PPOConfig(n_envs=4, n_steps=16, epochs=1, minibatch_size=32, total_steps=128)
    model = sb3.PPO("MlpPolicy", sb3_vec_env(ENV, "collect:0", 4, seed=0), seed=0, device="cpu",
                    policy_kwargs=rcnn_policy_kwargs((8,), 4, 3, 24), **sb3_ppo_kwargs(ppo))
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(128)  # two rollouts: the annealed lr of the last update of a run is 0
    assert any(not torch.equal(before[k], v) for k, v in model.policy.state_dict().items())
    logits, value = SB3Policy(model.policy)(x)
    assert logits.shape == (len(x), 4) and value.shape == (len(x),)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    torch.set_num_threads(1)
    ppo = PPOConfig(n_envs=4, n_steps=16, epochs=2, minibatch_size=32, total_steps=128)
    model = sb3.PPO("MlpPolicy", sb3_vec_env(ENV, "collect:0", 4, seed=0), seed=0, device="cpu",
                    policy_kwargs=policy_kwargs((8, 16), 32), **sb3_ppo_kwargs(ppo))
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(128)
    assert any(not torch.equal(before[k], v) for k, v in model.policy.state_dict().items())  # it trained
    path = tmp_path_factory.mktemp("sb3cnn") / "ppo.zip"
    model.save(path)
    return model, path


def test_import_is_exact_and_the_checkpoint_is_a_cnn(trained):
    model, path = trained
    ckpt = import_sb3(path, ENV, "collect:0")
    assert ckpt.arch == "cnn"
    assert ckpt.arch_config == {"channels": [8, 16], "hidden": 32, "relative_coords": True}
    x = _obs()
    with torch.no_grad():
        t, _ = model.policy.obs_to_tensor(x.numpy())
        want_logits = model.policy.get_distribution(t).distribution.logits
        want_values = model.policy.predict_values(t).squeeze(-1)
        logits, values = ckpt.build()(x)
        wl, wv = SB3Policy(model.policy)(x)
    torch.testing.assert_close(torch.log_softmax(logits, -1), want_logits, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(values, want_values, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(logits, wl, rtol=0, atol=0)
    torch.testing.assert_close(values, wv, rtol=0, atol=0)


def _rewrite(src, dst, data=None, policy=None):
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            raw = zin.read(name)
            if name == "data" and data:
                d = json.loads(raw)
                data(d)
                raw = json.dumps(d).encode()
            if name == "policy.pth" and policy:
                state = torch.load(io.BytesIO(raw), weights_only=True)
                policy(state)
                buf = io.BytesIO()
                torch.save(state, buf)
                raw = buf.getvalue()
            zout.writestr(name, raw)
    return dst


def _set_kwarg(key, value):
    return lambda d: d["policy_kwargs"].__setitem__(key, value)


def _unshare(state):
    state["vf_features_extractor.fc.weight"] = state["vf_features_extractor.fc.weight"] + 1


def _extra_layer(state):
    state["mlp_extractor.policy_net.0.weight"] = torch.zeros(4, 32)


@pytest.mark.parametrize("data,policy,fragment", [
    (_set_kwarg("normalize_images", True), None, "normalize_images"),
    (None, _unshare, "share_features_extractor"),
    (None, _extra_layer, "net_arch"),
    (None, lambda s: [s.pop(f"{p}features_extractor.conv2.weight") for p in ("", "pi_", "vf_")], "conv1..convN"),
])
def test_what_goalscopes_cnn_cannot_hold_is_refused(trained, tmp_path, data, policy, fragment):
    _, path = trained
    bad = _rewrite(path, tmp_path / "bad.zip", data, policy)
    with pytest.raises(CheckpointError, match=fragment):
        import_sb3(bad, ENV, "collect:0")


def test_obs_shape_mismatch_is_refused(trained):
    with pytest.raises(CheckpointError, match="observation shape"):
        import_sb3(trained[1], MazeConfig(size=7, n_types=2, n_per_type=1, max_steps=16, pool_size=16), "collect:0")


def test_ppo_kwargs_match_goalscopes_loss():
    kw = sb3_ppo_kwargs(PPOConfig(lr=1e-3, vf_coef=0.5, anneal_lr=True))
    assert kw["vf_coef"] == 0.25  # SB3's value loss is mse, goalscope's 0.5 * mse
    assert kw["learning_rate"](1.0) == pytest.approx(1e-3) and kw["learning_rate"](0.25) == pytest.approx(2.5e-4)
    assert sb3_ppo_kwargs(PPOConfig(anneal_lr=False))["learning_rate"] == PPOConfig().lr


def test_cli_imports_a_goalscope_cnn_zip(trained, tmp_path, capsys):
    from goalscope.agents.checkpoints import load_checkpoint
    from goalscope.cli import main

    out = tmp_path / "ma"
    args = ["--env-kwargs", json.dumps(ENV.to_json())]  # pool_size too: no CLI flag says it, the zip does not store it
    rc = main(["import-sb3", str(trained[1]), "--out", str(out), "--reward", "collect:0", *args])
    assert rc == 0, capsys.readouterr().err
    assert "cnn checkpoint" in capsys.readouterr().out
    assert load_checkpoint(out).arch_config["channels"] == [8, 16]
    assert load_checkpoint(out).env == ENV
