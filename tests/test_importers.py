"""Importing Stable-Baselines3 PPO models and torch state dicts without unpickling anything executable."""

import base64
import io
import json
import pickle
import zipfile

import numpy as np
import pytest
import torch
from torch import nn

from goalscope.agents.checkpoints import load_checkpoint, save_checkpoint
from goalscope.cli import main
from goalscope.envs.gym import ObjectMazeEnv
from goalscope.envs.maze import MazeConfig
from goalscope.envs.rewards import parse_reward
from goalscope.errors import CheckpointError
from goalscope.agents.importers import import_sb3, load_torch_state_dict
from goalscope.rl.ppo import PPOConfig, finetune

sb3 = pytest.importorskip("stable_baselines3", reason="stable-baselines3 is not installed (it is in the test extra)")

ENV = MazeConfig(size=5, n_types=2, n_per_type=1, max_steps=16)
ENV_ARGS = ["--size", "5", "--n-types", "2", "--n-per-type", "1", "--max-steps", "16", "--layout", "maze",
            "--loop-prob", "0.1"]


class Marker:
    """Unpickling this creates ``path``: proof that a loader ran code from the file."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _ppo(**policy_kwargs):
    return sb3.PPO("MlpPolicy", ObjectMazeEnv(ENV, "collect:0"), n_steps=64, batch_size=64, n_epochs=2, seed=0,
                   device="cpu", policy_kwargs=policy_kwargs or None)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A PPO model trained 512 steps on the maze with net_arch=dict(pi=[32, 32], vf=[32, 32]) (SB3's Tanh)."""
    torch.set_num_threads(1)
    model = _ppo(net_arch=dict(pi=[32, 32], vf=[32, 32]))
    model.learn(512)
    path = tmp_path_factory.mktemp("sb3") / "ppo.zip"
    model.save(path)
    return model, path


def _observations(n=48):
    env, obs = ObjectMazeEnv(ENV, "collect:0"), []
    o, _ = env.reset(seed=1)
    rng = np.random.default_rng(0)
    while len(obs) < n:
        obs.append(o)
        o, _, term, trunc, _ = env.step(int(rng.integers(4)))
        if term or trunc:
            o, _ = env.reset()
    return np.stack(obs)


def _assert_same_outputs(model, ckpt):
    obs = _observations()
    with torch.no_grad():
        t, _ = model.policy.obs_to_tensor(obs)
        want_logits = model.policy.get_distribution(t).distribution.logits
        want_values = model.policy.predict_values(t).squeeze(-1)
        logits, values = ckpt.build()(torch.as_tensor(obs))
    torch.testing.assert_close(torch.log_softmax(logits, -1), want_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(values, want_values, rtol=1e-5, atol=1e-5)


def _rewrite_zip(src, dst, **members):
    """A copy of zip ``src`` with some members replaced (bytes, or a function of the old bytes)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for name in zin.namelist():
            data = zin.read(name)
            new = members.get(name.replace(".", "_"), data)
            zout.writestr(name, new(data) if callable(new) else new)
    return dst


def _edit_data(fn):
    def edit(raw):
        data = json.loads(raw)
        fn(data)
        return json.dumps(data).encode()
    return edit


def _edit_policy(fn):
    def edit(raw):
        state = torch.load(io.BytesIO(raw), weights_only=True)
        fn(state)
        buf = io.BytesIO()
        torch.save(state, buf)
        return buf.getvalue()
    return edit


def test_trained_sb3_model_imports_with_identical_outputs_then_finetunes(trained, tmp_path):
    model, path = trained
    ckpt = import_sb3(path, ENV, "collect:0")
    assert ckpt.arch == "mlp" and ckpt.arch_config == {"hidden": [32, 32], "activation": "tanh", "shared": False}
    assert ckpt.steps == model.num_timesteps == 512 and ckpt.parent is None
    assert ckpt.extra["imported_from"]["format"] == "stable-baselines3"
    _assert_same_outputs(model, ckpt)

    mb = finetune(ckpt, parse_reward("collect:1", ENV.n_types), PPOConfig(total_steps=256, n_envs=16, n_steps=16),
                  seed=0, parent_path=str(path))
    assert mb.parent == str(path) and mb.steps == 512 + 256
    assert any(not torch.equal(mb.state_dict[k], ckpt.state_dict[k]) for k in ckpt.state_dict)

    save_checkpoint(ckpt, tmp_path / "ma")
    back = load_checkpoint(tmp_path / "ma")
    assert back.arch_config == ckpt.arch_config and back.reward.name == ckpt.reward.name
    assert list(back.state_dict) == list(ckpt.state_dict)
    assert all(torch.equal(back.state_dict[k], ckpt.state_dict[k]) for k in ckpt.state_dict)
    _assert_same_outputs(model, back)


def test_relu_and_list_net_arch_and_default_arch(tmp_path):
    for i, (kwargs, hidden, act) in enumerate([(dict(net_arch=[16], activation_fn=nn.ReLU), [16], "relu"),
                                               ({}, [64, 64], "tanh")]):
        model = _ppo(**kwargs)
        model.save(tmp_path / f"m{i}.zip")
        ckpt = import_sb3(tmp_path / f"m{i}.zip", ENV, "collect:0")
        assert ckpt.arch_config["hidden"] == hidden and ckpt.arch_config["activation"] == act
        _assert_same_outputs(model, ckpt)


def test_activation_argument_when_the_zip_does_not_say(trained, tmp_path):
    model, path = trained
    hidden = _rewrite_zip(path, tmp_path / "m.zip", data=_edit_data(
        lambda d: d.__setitem__("policy_kwargs", {":type:": "<class 'dict'>", ":serialized:": "gAR9lC4="})))
    with pytest.raises(CheckpointError, match="pass activation="):
        import_sb3(hidden, ENV, "collect:0")
    _assert_same_outputs(model, import_sb3(hidden, ENV, "collect:0", activation="tanh"))
    with pytest.raises(CheckpointError, match="says activation 'tanh'"):
        import_sb3(path, ENV, "collect:0", activation="relu")


def test_unsupported_models_are_refused_with_the_reason(trained, tmp_path):
    _, path = trained
    with pytest.raises(CheckpointError, match="observation shape mismatch"):
        import_sb3(path, MazeConfig(size=7, n_types=2, n_per_type=1), "collect:0")
    no_shape = _rewrite_zip(path, tmp_path / "a.zip", data=_edit_data(lambda d: d.pop("observation_space")))
    with pytest.raises(CheckpointError, match="observation size mismatch"):
        import_sb3(no_shape, MazeConfig(size=5, n_types=3, n_per_type=1), "collect:0")

    uneven = _ppo(net_arch=dict(pi=[32], vf=[16]))
    uneven.save(tmp_path / "uneven.zip")
    with pytest.raises(CheckpointError, match=r"policy tower \[32\] and value tower \[16\] differ"):
        import_sb3(tmp_path / "uneven.zip", ENV, "collect:0")

    cnn = _rewrite_zip(path, tmp_path / "cnn.zip", data=_edit_data(lambda d: d["policy_class"].__setitem__(
        "__init__", "<function ActorCriticCnnPolicy.__init__ at 0x7f0>")))
    with pytest.raises(CheckpointError, match="CNN policies are not supported"):
        import_sb3(cnn, ENV, "collect:0")
    extractor = _rewrite_zip(path, tmp_path / "fx.zip", policy_pth=_edit_policy(
        lambda s: s.__setitem__("features_extractor.cnn.0.weight", torch.zeros(8, 4, 3, 3))))
    with pytest.raises(CheckpointError, match="features extractor with weights"):
        import_sb3(extractor, ENV, "collect:0")
    shared = _rewrite_zip(path, tmp_path / "sh.zip", policy_pth=_edit_policy(
        lambda s: s.__setitem__("mlp_extractor.shared_net.0.weight", torch.zeros(32, 100))))
    with pytest.raises(CheckpointError, match="shared layers"):
        import_sb3(shared, ENV, "collect:0")
    leaky = _rewrite_zip(path, tmp_path / "lk.zip", data=_edit_data(lambda d: d["policy_kwargs"].__setitem__(
        "activation_fn", "<class 'torch.nn.modules.activation.LeakyReLU'>")))
    with pytest.raises(CheckpointError, match="activation 'LeakyReLU' is not supported"):
        import_sb3(leaky, ENV, "collect:0")
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(CheckpointError, match="not a Stable-Baselines3 zip"):
        import_sb3(tmp_path / "junk.zip", ENV, "collect:0")
    nopolicy = tmp_path / "np.zip"
    with zipfile.ZipFile(nopolicy, "w") as z:
        z.writestr("data", "{}")
    with pytest.raises(CheckpointError, match="has no 'policy.pth'"):
        import_sb3(nopolicy, ENV, "collect:0")


def test_crafted_pickles_never_run(trained, tmp_path):
    _, path = trained
    live = tmp_path / "live"
    pickle.loads(pickle.dumps(Marker(live)))  # the payload is real: unrestricted unpickling runs it
    assert live.exists()

    marker = tmp_path / "pwned"
    torch.save({"w": torch.zeros(2), "x": Marker(marker)}, tmp_path / "evil.pt")
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"w": Marker(marker)}, protocol=2))  # legacy (non-zip) format
    for f in ("evil.pt", "evil.pkl"):
        with pytest.raises(CheckpointError, match="is refused: unpickling it would import or call io.open") as e:
            load_torch_state_dict(tmp_path / f)
        assert "weights_only" not in str(e.value)  # never the advice to run the file's code
    evil_zip = _rewrite_zip(path, tmp_path / "evil.zip", policy_pth=(tmp_path / "evil.pt").read_bytes())
    with pytest.raises(CheckpointError, match="is refused"):
        import_sb3(evil_zip, ENV, "collect:0")
    assert not marker.exists()
    (tmp_path / "noise.pt").write_bytes(bytes(range(256)) * 4)  # not a pickle at all: damaged, not dangerous
    with pytest.raises(CheckpointError, match="is not a readable torch state dict"):
        load_torch_state_dict(tmp_path / "noise.pt")

    # SB3's own pickled blobs in `data` are never decoded: a poisoned one changes nothing.
    blob = base64.b64encode(pickle.dumps(Marker(marker))).decode()
    poisoned = _rewrite_zip(path, tmp_path / "p.zip", data=_edit_data(
        lambda d: [v.__setitem__(":serialized:", blob) for v in d.values() if isinstance(v, dict) and ":serialized:" in v]))
    import_sb3(poisoned, ENV, "collect:0")
    assert not marker.exists()


def test_load_torch_state_dict(tmp_path):
    sd = {"a.weight": torch.randn(3, 2), "a.bias": torch.zeros(3)}
    torch.save(sd, tmp_path / "sd.pt")
    got = load_torch_state_dict(tmp_path / "sd.pt")
    assert list(got) == list(sd) and all(torch.equal(got[k], sd[k]) for k in sd)
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "wrapped.pt")
    assert list(load_torch_state_dict(tmp_path / "wrapped.pt")) == list(sd)
    torch.save({"a": torch.zeros(1), "n": 3}, tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="entry 'n' is not a tensor but int"):
        load_torch_state_dict(tmp_path / "mixed.pt")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_torch_state_dict(tmp_path / "nope.pt")


def test_cli_import_sb3(trained, tmp_path, capsys):
    _, path = trained
    out = tmp_path / "ma"
    assert main(["import-sb3", str(path), "--out", str(out), "--reward", "collect:0", *ENV_ARGS]) == 0
    assert "mlp checkpoint" in capsys.readouterr().out
    assert load_checkpoint(out).arch_config["hidden"] == [32, 32]
    assert main(["import-sb3", str(path), "--out", str(out), "--reward", "collect:0", *ENV_ARGS]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["import-sb3", str(path), "--out", str(tmp_path / "x"), "--reward", "collect:0", "--size", "7"]) == 2
    assert "observation shape mismatch" in capsys.readouterr().err
    assert load_checkpoint(out).env == ENV  # every setting the model was trained with, none of the CLI's defaults


def test_cli_import_sb3_records_only_the_env_it_checked(tmp_path, capsys):
    """Issue 27, case 6: a model trained on gym.make("goalscope/ObjectMaze-v0", size=7) (4 types x 2, 48 steps)
    was refused under the CLI's defaults, and with --n-types 4 imported with n_per_type 1 and max_steps 32 in
    meta.json, which `eval` then used. SB3 stores the observation shape (size, n_types) and nothing else."""
    import gymnasium as gym

    env = gym.make("goalscope/ObjectMaze-v0", size=7)
    sb3.PPO("MlpPolicy", env, n_steps=64, batch_size=64, seed=0, device="cpu").save(tmp_path / "m.zip")
    trained_on = env.unwrapped.cfg
    assert (trained_on.n_types, trained_on.n_per_type, trained_on.max_steps) == (4, 2, 48)
    base = ["import-sb3", str(tmp_path / "m.zip"), "--reward", "collect:0"]

    for extra in ([], ["--n-types", "4"]):
        assert main([*base, "--out", str(tmp_path / "refused"), *extra]) == 2
        err = capsys.readouterr().err
        assert "does not store the maze's n_per_type, max_steps, layout, loop_prob" in err and "--env-kwargs" in err
        assert not (tmp_path / "refused").exists()
    assert main([*base, "--out", str(tmp_path / "x"), "--n-types", "5", "--n-per-type", "2"]) == 2
    assert "n_types = 4, but --n-types 5" in capsys.readouterr().err

    assert main([*base, "--out", str(tmp_path / "a"), "--env-kwargs", '{"size": 7}']) == 0
    assert main([*base, "--out", str(tmp_path / "b"), "--n-per-type", "2", "--max-steps", "48", "--layout", "maze",
                 "--loop-prob", "0.1"]) == 0
    capsys.readouterr()
    for name in ("a", "b"):
        ckpt = load_checkpoint(tmp_path / name)
        assert ckpt.env == trained_on, name
        assert "n_per_type" not in ckpt.extra["imported_from"]["env_settings"].get("from the zip", [])
    assert load_checkpoint(tmp_path / "b").extra["imported_from"]["env_settings"]["from the zip"] == ["n_types", "size"]
    assert main(["eval", str(tmp_path / "a"), "--episodes", "4", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps_mean"] == 48  # eval runs the env it was trained on


@pytest.mark.parametrize("edit, fragment", [
    (lambda d: d.__setitem__("num_timesteps", "abc"), "num_timesteps must be an integer"),
    (lambda d: d.__setitem__("num_timesteps", float("inf")), "num_timesteps must be an integer"),  # JSON 1e999
    (lambda d: d["observation_space"].__setitem__("_shape", 7), "_shape must be a list of integers"),
])
def test_sb3_data_fields_are_checked(trained, tmp_path, edit, fragment):
    _, path = trained
    bad = _rewrite_zip(path, tmp_path / "bad.zip", data=_edit_data(edit))
    with pytest.raises(CheckpointError, match=fragment):
        import_sb3(bad, ENV, "collect:0")
