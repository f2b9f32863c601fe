"""Pixel envs: Crafter through goalscope (events by achievement, left unchanged), the image architectures, envs
stepped in worker processes, and snapshots by wall time that resume envs which cannot hand over their state."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from goalscope.agents.registry import build_agent
from goalscope.analysis.effects.experiment import run_experiment
from goalscope.analysis.records import read_records
from goalscope.envs.batches import LocalBatch, ProcessBatch
from goalscope.envs.events import GymEventsConfig
from goalscope.envs.rewards import parse_reward
from goalscope.errors import ConfigError
from goalscope.program.config import experiment_from_dict, load_experiment
from goalscope.rl.ppo import PPOConfig, train

crafter = pytest.importorskip("crafter")


def test_crafter_env_reports_each_unlock_as_an_event_and_keeps_crafters_own_dynamics():
    from goalscope.envs.crafter import CrafterEnv

    env = CrafterEnv(achievements=("collect_wood", "collect_drink", "wake_up"), length=64)
    obs, info = env.reset(seed=3)
    stock = crafter.Env(length=64, seed=3, reward=False)
    stock._episode = 0  # what reset(seed=3) does: Crafter draws episode e's world from hash((seed, e))
    assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8 and (obs == stock.reset()).all()
    assert list(info["events"]) == [0, 0, 0]
    rng, totals, steps, ended = np.random.default_rng(0), np.zeros(3, dtype=np.int64), 0, False
    while not ended:
        obs, reward, term, trunc, info = env.step(int(rng.integers(17)))
        totals += info["events"]
        steps += 1
        ended = term or trunc
        assert reward == 0.0  # goalscope pays from the events, never from the env's own reward
    counts = env._env._player.achievements  # Crafter's own counters: the events sum to them
    assert list(totals) == [counts["collect_wood"], counts["collect_drink"], counts["wake_up"]]
    assert steps <= 64 and (term != trunc)
    with pytest.raises(ConfigError, match="'collect_gold' is not a Crafter achievement"):
        CrafterEnv(achievements=("collect_gold",))


def test_crafter_example_config_names_its_events():
    cfg = load_experiment("experiments/crafter.toml")
    assert cfg.env.obs_shape == (3, 64, 64) and cfg.env.n_actions == 17 and cfg.env.processes == 2
    assert [r.name for r in cfg.rbs()] == ["collect:collect_drink", "collect:eat_cow", "collect:collect_sapling"]
    assert cfg.agent.arch == "nature_cnn"


@pytest.mark.parametrize("arch", ["nature_cnn", "impala_cnn"])
def test_pixel_architectures_scale_uint8_frames(arch):
    torch.manual_seed(0)
    model = build_agent(arch, (3, 64, 64), 17)
    frames = torch.randint(0, 256, (5, 3, 64, 64), dtype=torch.uint8)
    logits, value = model(frames)
    assert logits.shape == (5, 17) and value.shape == (5,)
    # uint8 frames are scaled to [0, 1] inside: a frame of 255s reads as ones, not as 255
    first = model.conv1 if arch == "nature_cnn" else model.stack1.conv
    seen = []
    first.register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    model(torch.full((1, 3, 64, 64), 255, dtype=torch.uint8))
    assert float(seen[0].max()) == pytest.approx(1.0)
    names = dict(model.named_parameters())
    assert "fc.weight" in names and "policy.weight" in names


def test_nature_cnn_refuses_frames_too_small_for_its_strides():
    with pytest.raises(ConfigError, match="at least 36x36"):
        build_agent("nature_cnn", (3, 16, 16), 4)


MAZE = {"family": "gym_events", "id": "goalscope/ObjectMaze-v0", "n_types": 3, "max_steps": 16,
        "event_types": ["a", "b", "c"], "kwargs": {"size": 5, "n_types": 3, "max_steps": 16}}


def test_envs_in_worker_processes_step_exactly_as_in_one_process():
    cfg = GymEventsConfig.from_json(MAZE)
    local, spread = LocalBatch(cfg.make_single, 5, 3), ProcessBatch(cfg.make_single, 5, 3, processes=2)
    try:
        assert (local.reset(7) == spread.reset(7)).all()
        rng, ended = np.random.default_rng(0), 0
        for _ in range(40):
            actions = rng.integers(4, size=5)
            a, b = local.step(actions), spread.step(actions)
            for x, y in zip(a[:4], b[:4]):
                assert (x == y).all()
            assert (a[4] is None) == (b[4] is None) and (a[4] is None or (a[4] == b[4]).all())
            ended += 0 if a[4] is None else len(a[4])
        assert ended >= 5  # episodes ended (and auto-reset) during the comparison
    finally:
        local.close()
        spread.close()
    assert all(not p.is_alive() for p in spread.procs) and spread.procs == []


def test_a_worker_that_fails_is_named():
    cfg = GymEventsConfig.from_json(MAZE)
    batch = ProcessBatch(cfg.make_single, 2, 3, processes=2)
    try:
        batch.reset(0)
        with pytest.raises(ConfigError, match="env worker process 0: .*Error"):
            batch.step(np.array([99, 0]))  # an action the env does not have
    finally:
        batch.close()


def test_snapshots_by_wall_time_resume_an_env_without_state(tmp_path):
    """A third-party env cannot hand over its state: a killed run still resumes (fresh episodes, said in the log)."""
    cfg = GymEventsConfig.from_json(MAZE)
    reward = parse_reward("collect:a", 3, ["a", "b", "c"])
    ppo = PPOConfig(total_steps=8 * 16 * 6, n_envs=8, n_steps=16, minibatch_size=64, save_every=0,
                    save_every_s=1e-9, eval_episodes=4)

    class Killed(Exception):
        pass

    def kill_after_three(step, row, model):
        if step >= 3 * 128:
            raise Killed

    torch.manual_seed(0)
    model = build_agent("mlp", cfg.obs_shape, cfg.n_actions)
    with pytest.raises(Killed):
        train(model, cfg, reward, ppo, 0, resume_dir=tmp_path, callbacks=[kill_after_three])
    snap = json.loads((tmp_path / "snapshot.json").read_text())
    assert snap["step"] == 3 * 128 and snap["env_rng"] is None  # written by the clock (save_every = 0)
    resumed = train(build_agent("mlp", cfg.obs_shape, cfg.n_actions), cfg, reward, ppo, 0, resume_dir=tmp_path)
    assert resumed.steps == 6 * 128
    steps = [r["step"] for r in resumed.history if "losses/total" in r]
    assert steps == [128 * i for i in range(1, 7)]  # the first three updates come from the snapshot, not rerun
    assert any(r.get("charts/resumed_fresh_episodes") == 1.0 for r in resumed.history)


@pytest.mark.slow  # ~100 s on 2 cores (Crafter's worlds are slow to make): run with -m slow; the maze's end-to-end run stays in the default suite
def test_tiny_real_crafter_experiment_runs_validates_and_reports(tmp_path):
    from goalscope.analysis.validate.validation import run_validation
    from goalscope.program.executors import LocalExecutor
    from goalscope.report.page import write_report

    full = load_experiment("experiments/crafter.toml")
    # A 32x32 world generates 4x faster than Crafter's 64x64 (every reset makes a new world)
    env = {**full.env.to_json(), "max_steps": 24, "processes": 1,
           "kwargs": {**full.env.kwargs, "length": 24, "area": [32, 32]}}
    cfg = experiment_from_dict({
        **{k: v for k, v in full.to_json().items() if k in ("agent", "base")}, "name": "crafter-tiny",
        "seeds": [0], "workers": 1, "env": env,
        "ppo": {"n_envs": 4, "n_steps": 16, "minibatch_size": 32, "epochs": 1},
        "base": {"reward": full.base.reward, "steps": 128}, "finetune": {"rewards": ["collect:eat_cow"], "steps": 64},
        "negate": {"alphas": [1.0], "retrain_steps": 64, "random_directions": 1},
        "superpose": {"methods": ["mean_abs", "fisher"], "fisher_samples": 32},
        "evaluation": {"episodes": 4, "bootstrap": 100},
    })
    summary = run_experiment(cfg, tmp_path / "run", log=lambda *a: None)
    assert summary["failed_jobs"] == []
    metrics = {r["metric"] for r in read_records(tmp_path / "run" / "records.csv")}
    assert {"return", "objects:0", "objects:2"} <= metrics, sorted(metrics)
    assert "lift" in summary["competence"]["MA"] and summary["competence"]["MA"]["fraction_of_oracle"] is None
    card = run_validation(cfg, tmp_path / "run", LocalExecutor(1), episodes=4, log=lambda *a: None)
    assert card["verdicts"]
    page = write_report(tmp_path / "run", tmp_path / "report", log=lambda *a: None).read_text(encoding="utf-8")
    assert "collect_wood" in page and "Maze pictures" not in page and "Achievements of each type" in page
    assert "Not interpretable" in page  # 128-step agents fail their gate: the headline is withheld


def test_how_envs_are_stepped_and_named_leaves_job_keys_alone():
    """Worker processes and the report's word for events change nothing a job learns, so not its cache key."""
    from goalscope.program.jobs import Job

    spec = {"env": GymEventsConfig.from_json(MAZE).to_json(), "ppo": {"n_envs": 8}, "seed": 0}
    stepped = {**spec, "env": {**spec["env"], "processes": 2, "event_word": "things"}}
    assert Job("train", spec, "MA").key == Job("train", stepped, "MA").key
    assert Job("train", spec, "MA").key != Job("train", {**spec, "seed": 1}, "MA").key


def test_a_worker_that_cannot_make_its_envs_says_why():
    import os

    parent = os.getpid()
    cfg = GymEventsConfig.from_json(MAZE)

    def broken():  # works here (where the batch warms one env up), fails in the workers
        if os.getpid() != parent:
            raise RuntimeError("no display")
        return cfg.make_single()

    batch = ProcessBatch(broken, 2, 3, processes=1)
    batch.procs[0].join(timeout=10)  # the worker has said why and ended before it is asked anything
    try:
        with pytest.raises(ConfigError, match="env worker process 0: cannot make its envs: RuntimeError: no display"):
            batch.reset(0)
    finally:
        batch.close()
