"""Your own environment, for real (issue 27): a module of the user's own that registers its env, event source and
observation adapter, used from the command line and read back by report, eval, validate and load_run."""

import os
import sys
import textwrap
import uuid

import pytest

import goalscope
from goalscope.cli import main
from goalscope.envs import events as ev
from goalscope.errors import ConfigError

MODULE = '''
import gymnasium as gym
import numpy as np

from goalscope.envs.events import EVENT_SOURCES, OBS_ADAPTERS


class Corridor(gym.Env):
    """Five cells; stepping onto an end eats its fruit (apple left, pear right) and puts the agent back mid-way."""

    def __init__(self):
        self.observation_space = gym.spaces.Dict({"pos": gym.spaces.Discrete(5)})
        self.action_space = gym.spaces.Discrete(2)
        self.eaten = [0, 0]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = int(self.np_random.integers(1, 4))
        return {"pos": self.pos}, {}

    def step(self, action):
        self.pos += 1 if action else -1
        if self.pos in (0, 4):
            self.eaten[self.pos // 4] += 1
            self.pos = 2
        return {"pos": self.pos}, 0.0, False, False, {}


class FruitEvents:
    """Events from the env's state before and after the step."""

    def __init__(self, types):
        self.types, self.n_types = list(types), len(types)

    def before(self, env):
        return list(env.eaten)

    def __call__(self, env, action, memo, terminated):
        got = dict(zip(("apple", "pear"), np.subtract(env.eaten, memo)))
        return np.array([got[t] for t in self.types], dtype=np.int64)


def one_hot(space):
    return gym.spaces.Box(0, 1, (5,), dtype=np.uint8), lambda obs: np.eye(5, dtype=np.uint8)[obs["pos"]]


EVENT_SOURCES["fruit"] = FruitEvents
OBS_ADAPTERS["one_hot"] = one_hot
gym.register("Corridor-v0", entry_point=Corridor, max_episode_steps=12)
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    """A fresh module of the test's own, importable but not imported, trusted by nobody."""
    name = f"corridor_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv(ev.TRUST_ENV, raising=False)
    yield name
    forget(name)


def forget(name):
    """As in a fresh process: the module, what it registered and any trust in it are gone."""
    sys.modules.pop(name, None)
    ev.EVENT_SOURCES.pop("fruit", None)
    ev.OBS_ADAPTERS.pop("one_hot", None)
    import gymnasium as gym

    gym.registry.pop("Corridor-v0", None)
    os.environ.pop(ev.TRUST_ENV, None)
    ev._spaces.cache_clear()


def experiment_toml(tmp_path, module):
    path = tmp_path / "corridor.toml"
    path.write_text(textwrap.dedent(f'''
        name = "corridor"
        seeds = [0]
        workers = 1
        [env]
        family = "gym_events"
        id = "{module}:Corridor-v0"
        n_types = 2
        max_steps = 12
        events = "fruit"
        event_types = ["apple", "pear"]
        obs = "one_hot"
        [agent]
        arch = "mlp"
        [agent.config]
        hidden = [16]
        [ppo]
        n_envs = 4
        n_steps = 16
        minibatch_size = 32
        [base]
        reward = "collect:apple"
        steps = 256
        [finetune]
        rewards = ["collect:pear"]
        steps = 128
        [negate]
        alphas = [1.0]
        retrain_steps = 64
        random_directions = 1
        [superpose]
        methods = ["mean_abs"]
        [evaluation]
        episodes = 8
        bootstrap = 100
    '''))
    return path


def test_untrusted_module_is_never_imported_and_the_error_says_how_to_trust_it(user_module):
    with pytest.raises(ConfigError, match=f"env.events 'fruit' is unknown.*--trust-module {user_module}"):
        ev.GymEventsConfig(id=f"{user_module}:Corridor-v0", n_types=2, events="fruit", event_types=["apple", "pear"],
                           obs="one_hot")
    assert user_module not in sys.modules


def test_event_source_and_adapter_of_the_users_module_from_the_cli(user_module, tmp_path, capsys):
    toml = experiment_toml(tmp_path, user_module)
    run = tmp_path / "run"
    assert main(["run", str(toml), "--out", str(run)]) == 0, capsys.readouterr().err
    capsys.readouterr()

    forget(user_module)  # a later session: the run directory is data, and names code nobody has trusted yet
    lazy = goalscope.load_run(run)  # read lazily (issue 28): opening it reads nothing, the first read says how
    assert "not readable yet" in repr(lazy) and f"--trust-module {user_module}" in repr(lazy)
    with pytest.raises(ConfigError, match=f"--trust-module {user_module}"):
        lazy.cfg
    assert main(["report", str(run)]) == 2 and f"--trust-module {user_module}" in capsys.readouterr().err
    assert user_module not in sys.modules

    view = goalscope.load_run(run, trust_modules=[user_module])
    assert view.cfg.env.events == "fruit" and user_module in sys.modules  # imported on the first read
    ma = view.checkpoint("MA", 0)
    assert ma.env.obs_shape == (5,)

    forget(user_module)
    assert main(["--trust-module", user_module, "report", str(run)]) == 0, capsys.readouterr().err
    # Events by name end to end (issue 27, case 3): rewards, tables, figures; no maze pictures for a corridor.
    page = (run / "report" / "index.html").read_text(encoding="utf-8")
    assert "collect:apple" in page and "MB[collect:pear]" in page
    assert "Maze pictures" not in page and "href='#mazes'" not in page and "Events of each type" in page
    behaviour = (run / "report" / "behaviour.csv").read_text()
    assert "apple (RA)" in behaviour and "pear (collect:pear)" in behaviour and "type 0" not in behaviour
    forget(user_module)
    stage = run / "stages" / view.stage_key("MA", 0)
    assert main(["--trust-module", user_module, "eval", str(stage), "--episodes", "4", "--reward", "collect:pear"]) == 0
    out = capsys.readouterr().out
    assert "events per episode  apple:" in out and "pear:" in out and "under collect:pear" in out
    forget(user_module)
    assert main(["--trust-module", user_module, "validate", str(run), "--episodes", "4"]) == 0, capsys.readouterr().err
    assert (run / "scorecard.json").exists()
