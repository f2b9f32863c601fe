"""Your own environment, round 2 (issue 38): what is caught before training, what an event means, and what an
event source is told about its step."""

import json
import re
import textwrap

import numpy as np
import pytest

pytest.importorskip("minigrid")

from goalscope.cli import main
from goalscope.envs import events as ev
from goalscope.envs.events import GymEventsConfig
from goalscope.errors import ConfigError
from goalscope.program.config import experiment_from_dict, load_experiment
from goalscope.program.preflight import random_event_counts, rare_event_warnings
from goalscope.program.runner import run_stages

UNLOCK = """
    name = "unlock"
    seeds = [0]
    workers = 1
    [env]
    family = "gym_events"
    id = "MiniGrid-UnlockPickup-v0"
    n_types = 3
    {extra}
    events = "minigrid"
    event_types = ["key", "door", "box"]
    obs = "minigrid"
    {kwargs}
    [base]
    reward = "collect:key"
    steps = 20000
    [finetune]
    steps = 2048
"""


def _toml(tmp_path, extra="", kwargs=""):
    path = tmp_path / "unlock.toml"
    path.write_text(textwrap.dedent(UNLOCK).replace("{extra}", extra).replace("{kwargs}", kwargs))
    return path


def test_the_envs_own_step_limit_is_refused_in_one_line_before_training(tmp_path, capsys):
    """UnlockPickup truncates at 288 steps; env.max_steps defaults to 64. This used to train every MA (~6 min)
    and then fail in evaluation."""
    run = tmp_path / "run"
    assert main(["run", str(_toml(tmp_path)), "--out", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "ends its episodes at 288 steps" in err and "add `max_steps = 288` under [env]" in err
    assert len(err.splitlines()) == 1 and not run.exists()
    assert load_experiment(_toml(tmp_path, extra="max_steps = 288")).env.max_steps == 288


def test_a_misplaced_kwarg_is_refused_in_one_line_naming_where_it_belongs(tmp_path, capsys):
    toml = _toml(tmp_path, extra="max_steps = 288", kwargs="[env.kwargs]\nn_types = 3")
    assert main(["run", str(toml), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err  # was a 71-line traceback from the env's constructor
    assert "env.kwargs.n_types" in err and "takes no argument 'n_types'" in err and "under [env] itself" in err
    with pytest.raises(ConfigError, match="takes no argument 'sise'"):  # a plain function's signature too
        GymEventsConfig(kwargs={"sise": 5}).obs_shape
    assert GymEventsConfig(id="MiniGrid-UnlockPickup-v0", max_steps=100, events="minigrid", n_types=1,
                           event_types=["key"], obs="minigrid", kwargs={"max_steps": 100}).obs_shape == (3, 7, 7)


def test_too_rare_events_are_warned_with_their_rate_before_the_first_job(tmp_path):
    """UnlockPickup's box needs the key and the door first: a random policy never gets there."""
    cfg = load_experiment(_toml(tmp_path, extra="max_steps = 288"))
    lines = []

    def log(line):
        if line.startswith("stage "):
            raise RuntimeError("training would start here")
        lines.append(line)

    with pytest.raises(RuntimeError, match="training would start"):
        run_stages(cfg, tmp_path / "run", analyse=None, log=log)
    rare = {line.split()[2].rstrip(":"): line for line in lines if line.startswith("warning: ")}
    assert "collect:box" in rare and "collect:key" not in rare  # keys are picked up by chance, boxes never
    assert re.search(r"made its events \(box\) 0 times in [\d,]+ steps", rare["collect:box"])
    assert "finetune.steps = 2,048" in rare["collect:box"]
    # An env whose step costs milliseconds (Crafter) is measured for as long as the clock allows, and says so.
    assert random_event_counts(cfg.env, seconds=0)[1] == 16  # one step of each of the 16 envs
    # RA's budget is its own: the same rate over base.steps
    counts = np.array([40, 0, 0])
    assert any("RA collect:key" in w for w in rare_event_warnings(cfg, counts, 4096 * 1000))
    assert not any("RA" in w for w in rare_event_warnings(cfg, counts, 4096))


def _pickup_drop_pickup(count):
    """The agent picks up a key placed in front of it, drops it, picks it up again; the events per step."""
    from minigrid.core.world_object import Key

    env = GymEventsConfig(id="MiniGrid-Empty-5x5-v0", n_types=2, max_steps=100, events="minigrid",
                          event_types=["key", "drop:key"], obs="minigrid", count=count).make_single()
    out = []
    for episode in range(2):
        env.reset(seed=episode)
        u = env.unwrapped
        u.grid.set(*u.front_pos, Key("yellow"))
        for action in (u.actions.pickup, u.actions.drop, u.actions.pickup):
            out.append(env.step(action)[4]["events"].tolist())
    return out


def test_a_re_pickup_counts_once_under_first_and_again_under_every():
    """UnlockPickup's MAs 'collected' the key 6.6 times per episode by dropping and picking it up again."""
    assert _pickup_drop_pickup("every") == [[1, 0], [0, 1], [1, 0]] * 2
    assert _pickup_drop_pickup("first") == [[1, 0], [0, 1], [0, 0]] * 2  # a new episode counts it again


def test_count_default_and_old_runs_keys():
    fetch = load_experiment("experiments/minigrid_fetch.toml").env
    assert fetch.count == "first" and fetch.to_json()["count"] == "first"
    # A run recorded before env.count existed counted every event: read so, and its job keys unchanged.
    old = {k: v for k, v in fetch.to_json().items() if k != "count"}
    assert GymEventsConfig.from_json(old).count == "every" and "count" not in GymEventsConfig.from_json(old).to_json()
    assert experiment_from_dict({"env": old, "seeds": [0]}).env.count == "every"
    assert GymEventsConfig(id="MiniGrid-Fetch-5x5-N2-v0", events="minigrid", n_types=1, event_types=["key"]).count == "first"
    assert GymEventsConfig().count == "every"  # an env that reports info["events"] says what its events mean
    with pytest.raises(ConfigError, match="needs an event source"):
        GymEventsConfig(count="first")
    with pytest.raises(ConfigError, match="env.count must be one of 'every', 'first'"):
        GymEventsConfig(id="MiniGrid-Fetch-5x5-N2-v0", events="minigrid", n_types=1, event_types=["key"], count="once")


class GoalByReward:
    """A new-style source: the goal is where MiniGrid pays a reward; it sees the step's reward, truncated, info."""

    seen: list = []

    def __init__(self, types):
        self.n_types = len(types)

    def before(self, env):
        return None

    def __call__(self, env, action, memo, terminated, *, reward, truncated, info):
        GoalByReward.seen.append((reward, truncated, sorted(info)))
        return np.array([int(reward > 0)])


class Forward:
    """An old-style source (four arguments, written before sources were told more): moving forward."""

    def __init__(self, types):
        self.n_types = len(types)

    def before(self, env):
        return tuple(env.agent_pos)

    def __call__(self, env, action, memo, terminated):
        return np.array([int(tuple(env.agent_pos) != memo)])


def test_sources_are_given_the_steps_reward_truncated_and_info_and_old_ones_still_work(monkeypatch):
    monkeypatch.setitem(ev.EVENT_SOURCES, "goal_by_reward", GoalByReward)
    monkeypatch.setitem(ev.EVENT_SOURCES, "forward", Forward)
    GoalByReward.seen = []
    env = GymEventsConfig(id="MiniGrid-Empty-5x5-v0", n_types=1, max_steps=100, events="goal_by_reward",
                          event_types=["goal"], obs="minigrid", count="every").make_single()
    env.reset(seed=0)
    u = env.unwrapped
    got = [env.step(a)[4]["events"][0] for a in (u.actions.forward, u.actions.forward, u.actions.right,
                                                 u.actions.forward, u.actions.forward)]
    assert got == [0, 0, 0, 0, 1]  # Empty-5x5: start (1, 1) facing right, goal at (3, 3)
    assert GoalByReward.seen[-1][0] > 0 and GoalByReward.seen[-1][1] is False and GoalByReward.seen[0][0] == 0.0
    for count, expect in (("every", [1, 1, 0]), ("first", [1, 0, 0])):  # "first" without objects: once per type
        env = GymEventsConfig(id="MiniGrid-Empty-5x5-v0", n_types=1, max_steps=100, events="forward",
                              event_types=["moved"], obs="minigrid", count=count).make_single()
        env.reset(seed=0)
        u = env.unwrapped
        assert [env.step(a)[4]["events"][0] for a in (u.actions.forward, u.actions.forward, u.actions.right)] == expect


def test_a_run_made_before_env_count_is_refused_with_the_line_that_continues_it(tmp_path):
    """Its experiment.json has no count (every occurrence); today's file without one means "first"."""
    cfg = load_experiment(_toml(tmp_path, extra="max_steps = 288"))
    run = tmp_path / "run"
    run.mkdir()
    old = cfg.to_json()
    del old["env"]["count"]
    (run / "experiment.json").write_text(json.dumps(old))
    with pytest.raises(ConfigError, match='counted every occurrence.*`count = "every"` under \\[env\\]'):
        run_stages(cfg, run, analyse=None, log=lambda *a: None)


def test_crafters_own_episode_length_is_checked_against_env_max_steps():
    pytest.importorskip("crafter")
    cfg = GymEventsConfig(id="goalscope/Crafter-v0", n_types=1, max_steps=256, event_types=["collect_wood"],
                          obs="image", kwargs={"achievements": ["collect_wood"], "length": 1000})
    with pytest.raises(ConfigError, match="ends its episodes at 1,000 steps .* add `max_steps = 1000`"):
        cfg.obs_shape
