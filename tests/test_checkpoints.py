import json
import pickle

import pytest
import torch

from goalscope.agents.registry import build_agent
from goalscope.agents.checkpoints import Checkpoint, load_checkpoint, save_checkpoint
from goalscope.envs.maze import MazeConfig
from goalscope.envs.rewards import parse_reward
from goalscope.errors import CheckpointError


def _ckpt(arch="cnn", cfg=None):
    env = MazeConfig(size=7)
    torch.manual_seed(0)
    model = build_agent(arch, env.obs_shape, 4, cfg or {})
    return Checkpoint(arch, cfg or {}, env, parse_reward("collect:1", 4), model.state_dict(), steps=123, seed=5,
                      parent="runs/ma", extra={"note": "x"})


@pytest.mark.parametrize("arch", ["cnn", "mlp"])
def test_round_trip_is_bit_exact(tmp_path, arch):
    ck = _ckpt(arch)
    save_checkpoint(ck, tmp_path / "c")
    back = load_checkpoint(tmp_path / "c")
    assert back.state_dict.keys() == ck.state_dict.keys()
    for k, v in ck.state_dict.items():
        assert torch.equal(back.state_dict[k], v) and back.state_dict[k].dtype == v.dtype
    assert (back.arch, back.env, back.reward, back.steps, back.seed, back.parent) == (arch, ck.env, ck.reward, 123, 5, "runs/ma")
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["versions"]["torch"] == torch.__version__
    model = back.build()
    obs = torch.zeros((2, *ck.env.obs_shape), dtype=torch.uint8)
    logits, value = model(obs)
    assert logits.shape == (2, 4) and value.shape == (2,)


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nope")


def test_foreign_directory(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("hi")
    with pytest.raises(CheckpointError, match="not a goalscope checkpoint"):
        load_checkpoint(tmp_path / "x")


def test_foreign_meta(tmp_path):
    save_checkpoint(_ckpt(), tmp_path / "c")
    (tmp_path / "c" / "meta.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(CheckpointError, match="not a goalscope checkpoint"):
        load_checkpoint(tmp_path / "c")


def test_corrupt_meta(tmp_path):
    save_checkpoint(_ckpt(), tmp_path / "c")
    (tmp_path / "c" / "meta.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(tmp_path / "c")


def test_truncated_weights(tmp_path):
    save_checkpoint(_ckpt(), tmp_path / "c")
    w = tmp_path / "c" / "model.safetensors"
    w.write_bytes(w.read_bytes()[: w.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "c")


def test_architecture_mismatch(tmp_path):
    ck = _ckpt()
    save_checkpoint(ck, tmp_path / "c")
    meta_path = tmp_path / "c" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["arch_config"] = {"hidden": 64}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="architecture mismatch: 'fc.weight' has shape"):
        load_checkpoint(tmp_path / "c")
    meta["arch"], meta["arch_config"] = "mlp", {}
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="architecture mismatch"):
        load_checkpoint(tmp_path / "c")


def test_pickle_is_never_loaded(tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os
            return (os.system, (f"touch {marker}",))

    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "model.pt").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="pickle"):
        load_checkpoint(tmp_path / "p")
    assert not marker.exists()
