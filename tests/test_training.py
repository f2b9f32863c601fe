import dataclasses

import pytest
import torch

from goalscope.agents.registry import build_agent
from goalscope.envs.rewards import parse_reward
from goalscope.errors import ConfigError, TrainingDiverged
from goalscope.rl.evaluation import evaluate, oracle_profile, summarise
from goalscope.rl.ppo import PPOConfig, finetune, train, train_new

TINY_PPO = PPOConfig(total_steps=60_000, n_envs=32, n_steps=32, eval_episodes=128)


# bf16's learning is measured over seeds in benchmarks/precision.py; here it only joins the slow tier.
@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=pytest.mark.slow)])
def test_ppo_learns_a_tiny_maze(tiny_cfg, precision):
    """A real learning test: from random (~20% of oracle) to >= 80% of the oracle's return, in either precision."""
    reward = parse_reward("collect:0", tiny_cfg.n_types)
    torch.manual_seed(0)
    model = build_agent("cnn", tiny_cfg.obs_shape, 4)
    before = summarise(evaluate(model, tiny_cfg, reward, 128), reward, oracle_profile(tiny_cfg, reward, 128))
    result = train(model, tiny_cfg, reward, dataclasses.replace(TINY_PPO, precision=precision), seed=0)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # fp32 master weights
    assert before["fraction_of_oracle"] < 0.6
    assert result.final_eval["fraction_of_oracle"] >= 0.8, result.final_eval


@pytest.mark.parametrize("arch, precision", [("mlp", "fp32"), ("cnn", "bf16")])
def test_same_seed_gives_identical_weights(tiny_cfg, arch, precision):
    reward = parse_reward("collect:1", tiny_cfg.n_types)
    ppo = PPOConfig(total_steps=2048, n_envs=16, n_steps=32, eval_episodes=16, precision=precision)
    a = train_new(arch, {}, tiny_cfg, reward, ppo, seed=3)
    b = train_new(arch, {}, tiny_cfg, reward, ppo, seed=3)
    c = train_new(arch, {}, tiny_cfg, reward, ppo, seed=4)
    assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)
    assert not all(torch.equal(a.state_dict[k], c.state_dict[k]) for k in a.state_dict)


def test_finetune_records_parent_and_changes_weights(tiny_cfg):
    ppo = PPOConfig(total_steps=1024, n_envs=16, n_steps=32, eval_episodes=16)
    ma = train_new("cnn", {}, tiny_cfg, parse_reward("collect:0", 2), ppo, seed=0)
    mb = finetune(ma, parse_reward("collect:1", 2), ppo, seed=1, parent_path="runs/ma")
    assert mb.parent == "runs/ma" and mb.steps == ma.steps + 1024 and mb.reward.name == "collect:1"
    assert any(not torch.equal(ma.state_dict[k], mb.state_dict[k]) for k in ma.state_dict)


def test_nan_stops_training_with_a_clear_error(tiny_cfg):
    model = build_agent("mlp", tiny_cfg.obs_shape, 4)
    with torch.no_grad():
        model.policy.weight.fill_(float("nan"))
    with pytest.raises(TrainingDiverged, match="diverged"):
        train(model, tiny_cfg, parse_reward("collect:0", 2), PPOConfig(total_steps=512, n_envs=16, n_steps=32), seed=0)


def test_logs_csv_and_tensorboard(tiny_cfg, tmp_path):
    train(build_agent("mlp", tiny_cfg.obs_shape, 4), tiny_cfg, parse_reward("collect:0", 2),
          PPOConfig(total_steps=1024, n_envs=16, n_steps=32, eval_every=512, eval_episodes=16), seed=0, log_dir=tmp_path)
    lines = (tmp_path / "train_log.csv").read_text().splitlines()
    assert lines[0].startswith("step,") and "losses/policy" in lines[0] and "eval/fraction_of_oracle" in lines[0]
    assert len(lines) >= 3
    runs = list((tmp_path / "tb").iterdir())
    assert len(runs) == 1 and runs[0].name.startswith("object_maze__collect_0__0__")  # {env}__{exp}__{seed}__{time}
    events = list(runs[0].glob("events.out.tfevents.*"))
    assert events
    for tag in ("losses/clipfrac", "losses/explained_variance", "charts/episode_length"):
        assert tag in lines[0]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(runs[0])).Reload()
    assert {"_hparams_/experiment", "_hparams_/session_start_info"} <= set(acc.PluginTagToContent("hparams"))
    assert b"ppo/lr" in acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]  # TensorBoard's HPARAMS tab


def test_callbacks_see_every_update_and_can_stop_training(tiny_cfg, tmp_path):
    seen = []

    def watch(step, row, model):
        seen.append((step, (tmp_path / "train_log.csv").read_text().count("\n") - 1))  # the CSV grows as it goes
        return len(seen) < 2

    ppo = PPOConfig(total_steps=8 * 512, n_envs=16, n_steps=32, eval_episodes=8)
    result = train(build_agent("mlp", tiny_cfg.obs_shape, 4), tiny_cfg, parse_reward("collect:0", 2), ppo, seed=0,
                   log_dir=tmp_path, callbacks=[watch])
    assert seen == [(512, 1), (1024, 2)] and result.steps == 1024


@pytest.mark.parametrize("field, value", [("n_envs", 0), ("lr", 2.0), ("gamma", 1.5), ("epochs", "3"), ("clip", float("nan"))])
def test_bad_ppo_config_names_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        PPOConfig(**{field: value})
    with pytest.raises(ConfigError, match="unknown field 'lerning_rate'"):
        PPOConfig.from_json({"lerning_rate": 1e-3})


def test_weights_and_biases_logging_when_enabled(tiny_cfg, tmp_path, monkeypatch):
    import sys
    import types

    logged, inits = [], []

    class FakeRun:
        def log(self, scalars, step):
            logged.append((step, scalars))

        def finish(self):
            logged.append("finished")

    fake = types.SimpleNamespace(init=lambda **kw: inits.append(kw) or FakeRun())
    monkeypatch.setitem(sys.modules, "wandb", fake)
    ppo = PPOConfig(total_steps=1024, n_envs=16, n_steps=32, eval_episodes=16)
    train(build_agent("mlp", tiny_cfg.obs_shape, 4), tiny_cfg, parse_reward("collect:0", 2), ppo, seed=0)
    assert logged == [] and inits == []  # off unless asked for
    monkeypatch.setenv("GOALSCOPE_WANDB", "1")
    train(build_agent("mlp", tiny_cfg.obs_shape, 4), tiny_cfg, parse_reward("collect:0", 2), ppo, seed=0, name="MB x")
    assert inits[0]["name"].startswith("object_maze__MB_x__0__")
    assert any(isinstance(e, tuple) and "losses/policy" in e[1] for e in logged) and logged[-1] == "finished"


@pytest.mark.parametrize("device", ["tpu", "cuda:x", "cpu:0", 3])
def test_bad_device_names_the_field(device):
    with pytest.raises(ConfigError, match="ppo.device"):
        PPOConfig(device=device)


def test_device_is_where_a_job_runs_not_what_it_computes():
    """At cpu the JSON has no device (old runs keep their keys); at cuda it does, but a job's key is the same, so a
    sweep begun on a GPU box is finished, and its CPU results reused, anywhere."""
    from goalscope.program.jobs import Job

    assert "device" not in PPOConfig().to_json()
    assert PPOConfig(device="cuda:1").to_json()["device"] == "cuda:1"
    assert PPOConfig.from_json(PPOConfig(device="cuda").to_json()).device == "cuda"
    spec = {"arch": "cnn", "seed": 0}
    keys = {Job("train", {**spec, "ppo": PPOConfig(device=d).to_json()}, "MA").key for d in ("cpu", "cuda", "cuda:1")}
    assert len(keys) == 1
    assert Job("train", {**spec, "ppo": PPOConfig(device="cuda", lr=2e-3).to_json()}, "MA").key not in keys


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error(tiny_cfg):
    model = build_agent("cnn", tiny_cfg.obs_shape, 4)
    with pytest.raises(ConfigError, match="no CUDA device"):
        train(model, tiny_cfg, parse_reward("collect:0", tiny_cfg.n_types),
              PPOConfig(total_steps=64, n_envs=4, n_steps=16, device="cuda"), seed=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_training_on_cuda_returns_a_cpu_checkpoint_and_the_model_where_it_was(tiny_cfg):
    reward = parse_reward("collect:0", tiny_cfg.n_types)
    ppo = PPOConfig(total_steps=4096, n_envs=16, n_steps=32, eval_episodes=32, device="cuda")
    ckpt = train_new("rcnn", {}, tiny_cfg, reward, ppo, seed=0)
    assert all(v.device.type == "cpu" for v in ckpt.state_dict.values())
    model = build_agent("cnn", tiny_cfg.obs_shape, 4)
    result = train(model, tiny_cfg, reward, ppo, seed=0)
    assert next(model.parameters()).device.type == "cpu" and result.final_eval["episodes"] == 32
