import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

pytest.importorskip("minigrid")

from goalscope.program.config import experiment_from_dict, load_experiment
from goalscope.envs import env_from_json
from goalscope.envs.events import MINIGRID_ID, GymEventsConfig
from goalscope.envs.minigrid_objects import make_minigrid_objects_env
from goalscope.envs.rewards import parse_reward
from goalscope.errors import ConfigError
from goalscope.analysis.records import read_records
from goalscope.analysis.effects.experiment import run_experiment

SMALL = {"family": "gym_events", "id": MINIGRID_ID, "n_types": 3, "max_steps": 16,
         "kwargs": {"size": 5, "n_per_type": 1, "max_steps": 16,
                    "objects": [["ball", "red"], ["key", "blue"], ["box", "green"]]}}


def test_minigrid_objects_env_passes_check_env_and_reports_events():
    env = make_minigrid_objects_env(size=5, n_per_type=1, max_steps=30)
    check_env(env, skip_render_check=True)
    obs, info = env.reset(seed=0)
    assert obs.shape == (3, 7, 7) and obs.dtype == np.uint8 and (info["events"] == 0).all()
    total = np.zeros(3, int)
    rng = np.random.default_rng(0)
    for _ in range(300):
        obs, r, term, trunc, info = env.step(int(rng.integers(4)))
        total += info["events"]
        assert r == 0.0  # goalscope computes rewards from events, never the env's own
        if term or trunc:
            env.reset()
    assert total.sum() > 0


def test_vector_adapter_pays_reward_from_events():
    cfg = env_from_json(SMALL)
    assert isinstance(cfg, GymEventsConfig) and cfg.obs_shape == (3, 7, 7) and cfg.n_actions == 4
    reward = parse_reward("collect:0+avoid:2+step:0.5", 3)
    env = cfg.make(reward, 8, seed=0)
    rng = np.random.default_rng(0)
    seen = 0
    for _ in range(40):
        _, r, term, trunc, info = env.step(rng.integers(4, size=8))
        if info:
            expect = info["counts"] @ reward.vector() - 0.5 * info["steps"]
            np.testing.assert_allclose(info["returns"], expect, rtol=1e-6)
            assert (info["steps"] == 16).all()
            seen += len(info["done_idx"])
    assert seen >= 8
    with pytest.raises(ConfigError, match="4 weights but the env has 3"):
        cfg.make(parse_reward("1,0,0,0", 4), 2)
    with pytest.raises(ConfigError, match="unknown field 'colour'"):
        env_from_json({**SMALL, "colour": 1})
    with pytest.raises(ConfigError, match="env.family 'atari'"):
        env_from_json({"family": "atari"})


def test_minigrid_example_config_is_valid():
    cfg = load_experiment("experiments/minigrid.toml")
    assert cfg.env.family == "gym_events" and [r.name for r in cfg.rbs()] == ["collect:1", "collect:2"]


def test_tiny_real_minigrid_experiment(tmp_path):
    cfg = experiment_from_dict({
        "name": "mg", "seeds": [0], "workers": 1, "env": SMALL,
        "agent": {"arch": "cnn", "config": {"relative_coords": False}},
        "ppo": {"n_envs": 8, "n_steps": 32}, "base": {"steps": 1024}, "finetune": {"steps": 512},
        "negate": {"alphas": [1.0], "retrain_steps": 256},
        "superpose": {"methods": ["mean_abs", "pca"]}, "evaluation": {"episodes": 16, "bootstrap": 200},
    })
    summary = run_experiment(cfg, tmp_path / "run", log=lambda *a: None)
    assert summary["failed_jobs"] == []
    rows = read_records(tmp_path / "run" / "records.csv")
    metrics = {r["metric"] for r in rows}
    assert {"return", "objects:0", "l2", "rb_objects_vs_retrained_MA", "score_share"} <= metrics
    assert "fraction_of_oracle" not in metrics  # no oracle for MiniGrid: reported as raw returns
    # Without an oracle, competence is the lift over a reference with the env's base rates (MA over a random policy
    # on the same episodes, each MB over its MA); one seed gives no interval, so nothing passes.
    assert {"MA", "MB[collect:1]", "MB[collect:2]"} == set(summary["competence"])
    assert all(c["fraction_of_oracle"] is None and c["lift"] is not None for c in summary["competence"].values())
    assert "over a random policy not measurable with one seed" in summary["competence"]["MA"]["verdict"]
    assert "over MA not measurable" in summary["competence"]["MB[collect:1]"]["verdict"]
    assert not any(c["passes"] for c in summary["competence"].values())
    from goalscope.report.page import write_report

    page = write_report(tmp_path / "run", tmp_path / "report", log=lambda *a: None).read_text(encoding="utf-8")
    head = page[:page.index("<h2")]
    assert "n/a" not in head and "preference" in head and "MA on RA" in head
    assert "Maze pictures" not in page and "No finished MA checkpoint" not in page  # left out: no maze to draw


def test_stock_minigrid_env_through_the_events_wrapper(tmp_path):
    """An unmodified MiniGrid env (Dict observations, its own reward) run end to end by the experiment program."""
    full = load_experiment("experiments/minigrid_fetch.toml")
    assert full.env.obs_shape == (3, 7, 7) and full.env.n_actions == 7
    venv = full.env.make(parse_reward("collect:0", 2), 8, seed=0)
    rng, picked = np.random.default_rng(0), np.zeros(2)
    for _ in range(200):
        _, reward, _, _, info = venv.step(rng.integers(7, size=8))
        if info:
            picked += info["counts"].sum(0)
    assert (picked > 0).all()  # keys and balls are both picked up by a random policy, each as its own event type
    cfg = experiment_from_dict({
        **{k: v for k, v in full.to_json().items() if k in ("env", "agent")}, "name": "fetch", "seeds": [0],
        "workers": 1, "ppo": {"n_envs": 8, "n_steps": 32}, "base": {"steps": 1024}, "finetune": {"steps": 512},
        "negate": {"alphas": [1.0], "retrain_steps": 256}, "superpose": {"methods": ["mean_abs"]},
        "evaluation": {"episodes": 16, "bootstrap": 200},
    })
    summary = run_experiment(cfg, tmp_path / "run", log=lambda *a: None)
    assert summary["failed_jobs"] == [] and summary["rbs"] == ["collect:ball"]  # RBs are named by the env's event names
    assert {"return", "objects:1"} <= {r["metric"] for r in read_records(tmp_path / "run" / "records.csv")}


def test_events_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="env.events 'telepathy' is unknown"):
        GymEventsConfig(id="MiniGrid-Fetch-5x5-N2-v0", events="telepathy")
    with pytest.raises(ConfigError, match="event_types lists 1 types but env.n_types = 2"):
        GymEventsConfig(id="MiniGrid-Fetch-5x5-N2-v0", n_types=2, events="minigrid", event_types=["key"])
    with pytest.raises(ConfigError, match="'dragon' is not a MiniGrid event"):
        GymEventsConfig(id="MiniGrid-Fetch-5x5-N2-v0", n_types=1, events="minigrid", event_types=["dragon"]).make_single()
    with pytest.raises(ConfigError, match="set env.obs to an adapter"):  # a Dict observation without an adapter
        GymEventsConfig(id="MiniGrid-Empty-5x5-v0", n_types=1, events="minigrid", event_types=["goal"]).obs_shape


def _stock_and_wrapped(env_id, types, **kwargs):
    import gymnasium as gym

    cfg = GymEventsConfig(id=env_id, n_types=len(types), max_steps=10_000, events="minigrid", event_types=types,
                          obs="minigrid", kwargs=kwargs)
    return gym.make(env_id, **kwargs), cfg.make_single()


@pytest.mark.parametrize("env_id, types", [("MiniGrid-DoorKey-5x5-v0", ["key", "door", "goal"]),
                                           ("MiniGrid-DoorKey-5x5-v0", ["key", "drop:key"]),
                                           ("MiniGrid-KeyCorridorS3R1-v0", ["key", "ball", "door"]),
                                           ("MiniGrid-Fetch-5x5-N2-v0", ["key", "ball"])])
def test_event_source_observes_and_never_changes_the_env(env_id, types):
    """Issue 27: the minigrid source used to set env.carrying = None on every pickup, so a key vanished and its
    door never opened. The wrapped env must follow the stock env step for step."""
    stock, wrapped = _stock_and_wrapped(env_id, types)
    rng = np.random.default_rng(0)
    o1, _ = stock.reset(seed=3)
    o2, _ = wrapped.reset(seed=3)
    total = np.zeros(len(types), int)
    for step in range(400):
        np.testing.assert_array_equal(o2, np.moveaxis(o1["image"], -1, 0), err_msg=f"{env_id}, step {step}")
        assert (stock.unwrapped.carrying is None) == (wrapped.unwrapped.carrying is None), (env_id, step)
        a = int(rng.integers(stock.action_space.n))
        o1, r1, t1, u1, _ = stock.step(a)
        o2, r2, t2, u2, info = wrapped.step(a)
        assert (r1, t1, u1) == (r2, t2, u2), (env_id, step)
        total += info["events"]
        if t1 or u1:
            o1, _ = stock.reset()
            o2, _ = wrapped.reset()
    assert total.sum() > 0
    assert total[0] > 0  # keys are picked up
    if "drop:key" in types:
        assert total[types.index("drop:key")] > 0  # and put down again


def test_doorkey_through_the_wrapper_opens_doors_and_reaches_goals_at_the_stock_rates():
    """A random policy on DoorKey-5x5, 64 episodes through goalscope's vectorised env against 64 on the stock env
    (counted from its own state): before the fix the wrapper gave keys but never a door or a goal."""
    import gymnasium as gym

    types = ["key", "door", "goal"]
    cfg = GymEventsConfig(id="MiniGrid-DoorKey-5x5-v0", n_types=3, max_steps=250, events="minigrid",
                          event_types=types, obs="minigrid", count="every")  # the hand loop counts every one
    venv = cfg.make(parse_reward("collect:2", 3), 8, seed=1)
    rng, ours, episodes = np.random.default_rng(1), np.zeros(3), 0
    while episodes < 64:
        _, _, _, _, info = venv.step(rng.integers(7, size=8))
        if info:
            ours += info["counts"].sum(0)
            episodes += len(info["done_idx"])
    venv.close()

    env, rng, stock, episodes = gym.make("MiniGrid-DoorKey-5x5-v0"), np.random.default_rng(2), np.zeros(3), 0
    env.reset(seed=2)
    u = env.unwrapped
    while episodes < 64:
        carried = u.carrying
        door = next(c for c in u.grid.grid if c is not None and c.type == "door")
        was_open = door.is_open
        _, r, term, trunc, _ = env.step(int(rng.integers(7)))
        stock += [u.carrying is not None and u.carrying is not carried, door.is_open and not was_open, term and r > 0]
        if term or trunc:
            env.reset()
            episodes += 1
    assert (ours > 0).all() and (stock > 0).all(), (ours, stock)
    for k, name in enumerate(types):  # per-episode rates agree within sampling noise (Poisson, ~4 s.d.)
        assert abs(ours[k] - stock[k]) <= 4 * np.sqrt(ours[k] + stock[k]) + 2, (name, ours, stock)
