"""The shipped Procgen maze example (examples/procgen_maze.py) wired into goalscope, against a stand-in for
procgen2's gym3 API (procgen itself does not install next to goalscope on this Python: docs/howto/own-env-agent.md)."""

import sys
import types

import numpy as np
import pytest

from goalscope.envs import events as ev
from goalscope.program.config import load_experiment


class FakeGym3Maze:
    """gym3's act/observe: the cheese is reached every 5th step, and the episode restarts by itself."""

    def __init__(self, num, env_name, num_levels, start_level, distribution_mode):
        assert (num, env_name) == (1, "maze")
        self.t, self.level = 0, start_level

    def act(self, action):
        assert action.shape == (1,) and 0 <= action[0] < 15
        self.t += 1

    def observe(self):
        done = self.t > 0 and self.t % 5 == 0
        rgb = np.full((1, 64, 64, 3), self.t % 256, dtype=np.uint8)
        return np.array([10.0 if done else 0.0]), {"rgb": rgb}, np.array([done])


@pytest.fixture
def example(monkeypatch):
    monkeypatch.setitem(sys.modules, "procgen", types.SimpleNamespace(ProcgenGym3Env=FakeGym3Maze))
    monkeypatch.syspath_prepend("examples")
    monkeypatch.delenv(ev.TRUST_ENV, raising=False)
    yield
    import gymnasium as gym

    sys.modules.pop("procgen_maze", None)
    ev.EVENT_SOURCES.pop("cheese", None)
    gym.registry.pop("ProcgenMaze-v0", None)
    ev._spaces.cache_clear()


def test_the_procgen_example_counts_the_cheese_from_the_steps_reward(example):
    cfg = load_experiment("examples/procgen_maze.toml")  # its own step limit (500) checked against env.max_steps
    assert cfg.env.obs_shape == (3, 64, 64) and cfg.env.n_actions == 15 and cfg.env.count == "first"
    env = cfg.env.make_single()
    env.reset(seed=0)
    got = []
    for _ in range(10):
        got.append(env.step(0))
        if got[-1][2]:
            env.reset()  # gym3 has already started the next level: reset keeps it
    assert [int(info["events"][0]) for *_, info in got] == [0, 0, 0, 0, 1] * 2
    assert [term for _, _, term, _, _ in got] == [False] * 4 + [True] + [False] * 4 + [True]
