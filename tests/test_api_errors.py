"""The Python API's error contract (issue 37, finding 5): ``Checkpoint.act``, ``Checkpoint.make_env`` and the
Gymnasium envs check their arguments and raise a one-sentence GoalscopeError, never torch's, numpy's or an
IndexError from deep inside, and never answer a NaN observation with a silent action 0. One test per reported
case, then property-based fuzzing of ``act`` and ``step`` (small example counts here, more with ``-m slow``)."""

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from goalscope.agents.checkpoints import Checkpoint
from goalscope.agents.registry import build_agent
from goalscope.envs.gym import ObjectMazeEnv, ObjectMazeVectorEnv
from goalscope.envs.maze import MazeConfig
from goalscope.envs.rewards import parse_reward
from goalscope.errors import ConfigError, GoalscopeError

ENV = MazeConfig(size=5, n_types=2, n_per_type=1, max_steps=16, pool_size=16)


@pytest.fixture(scope="module")
def ck():
    torch.manual_seed(0)
    model = build_agent("cnn", ENV.obs_shape, ENV.n_actions, {})
    return Checkpoint("cnn", {}, ENV, parse_reward("collect:1", 2), model.state_dict())


def _obs(value, dtype=np.float32):
    return np.full(ENV.obs_shape, value, dtype=dtype)


@pytest.mark.parametrize("obs, fragment", [
    (_obs(np.nan), "NaN or inf"),
    (_obs(np.inf), "NaN or inf"),
    (_obs(3e38), "not finite"),
    (_obs(1, np.complex64), "dtype complex64"),
    (_obs("a", object), "dtype object"),
    (np.full(ENV.obs_shape, "a"), "dtype <U1"),
])
@pytest.mark.parametrize("greedy", [False, True])
def test_act_refuses_observations_it_cannot_read(ck, obs, fragment, greedy):
    with pytest.raises(ConfigError, match=fragment):
        ck.act(obs, greedy=greedy)


@pytest.mark.parametrize("generator", [2**70, "abc", 1.5, True, -1])
def test_act_refuses_a_generator_that_is_not_one(ck, generator):
    with pytest.raises(ConfigError, match="generator must be a torch.Generator, a seed"):
        ck.act(_obs(0, np.uint8), generator=generator)


def test_act_takes_every_generator_it_documents(ck):
    obs = _obs(0, np.uint8)
    for generator in (None, 0, 2**64 - 1, np.int64(7), torch.Generator().manual_seed(3)):
        assert 0 <= ck.act(obs, generator=generator) < ENV.n_actions


@pytest.mark.parametrize("kwargs, fragment", [({"reward": 12}, "reward must be"), ({"render_mode": 5}, "render_mode")])
def test_make_env_refuses_arguments_of_the_wrong_type(ck, kwargs, fragment):
    with pytest.raises(ConfigError, match=fragment):
        ck.make_env(**kwargs)


@pytest.mark.parametrize("action", [-1, 1.5, 4, "0", None, np.array([0, 1]), np.float32(1)])
def test_env_step_refuses_an_action_it_does_not_have(action):
    env = ObjectMazeEnv(ENV)
    env.reset(seed=0)
    with pytest.raises(ConfigError, match="action must be an integer from 0 to 3"):
        env.step(action)


def test_env_step_takes_the_integers_callers_hand_it():
    env = ObjectMazeEnv(ENV)
    env.reset(seed=0)
    for action in (0, np.int64(1), np.array(2), np.array([3])):
        obs = env.step(action)[0]
        assert obs.shape == ENV.obs_shape


@pytest.mark.parametrize("seed", [-1, "abc", 1.5, True, [1]])
@pytest.mark.parametrize("vector", [False, True])
def test_env_reset_refuses_a_seed_that_is_not_one(seed, vector):
    env = ObjectMazeVectorEnv(2, ENV) if vector else ObjectMazeEnv(ENV)
    with pytest.raises(ConfigError, match="seed must be None or an integer >= 0"):
        env.reset(seed=seed)


@pytest.mark.parametrize("actions", [[0, 4], [0, -1], [0.5, 1], [0], [[0, 1]]])
def test_vector_env_step_refuses_actions_it_does_not_have(actions):
    env = ObjectMazeVectorEnv(2, ENV)
    env.reset(seed=0)
    with pytest.raises(ConfigError, match="actions must be 2 integers from 0 to 3"):
        env.step(actions)


# ------------------------------------------------------------------------------------------------------------------
# Fuzzing: any argument ends in a valid answer or one GoalscopeError sentence

_dtypes = st.sampled_from([np.uint8, np.int64, np.float16, np.float32, np.float64, np.bool_, np.complex64])
_shapes = st.one_of(st.just(ENV.obs_shape), st.just((2, *ENV.obs_shape)), hnp.array_shapes(max_dims=4, max_side=5))
_observations = st.one_of(
    hnp.arrays(_dtypes, _shapes, elements={"allow_nan": True, "allow_infinity": True}),
    st.just([[1, 2], [3]]), st.text(max_size=3), st.none(), st.floats())
_generators = st.one_of(st.none(), st.integers(-2**80, 2**80), st.floats(), st.text(max_size=3), st.booleans())


def _act_case(ck, obs, greedy, generator):
    try:
        out = ck.act(obs, greedy=greedy, generator=generator)
    except GoalscopeError as e:
        assert str(e) and "\n" not in str(e)
        return
    actions = np.atleast_1d(out)
    assert ((actions >= 0) & (actions < ENV.n_actions)).all()


def _step_case(seed, actions):
    env = ObjectMazeEnv(ENV)
    try:
        env.reset(seed=seed)
    except GoalscopeError as e:
        assert str(e) and "\n" not in str(e)
        env.reset(seed=0)
    for action in actions:
        try:
            obs, reward, term, trunc, info = env.step(action)
        except GoalscopeError as e:
            assert str(e) and "\n" not in str(e)
            assert not env.action_space.contains(np.asarray(action).reshape(()) if np.size(action) == 1 else action)
            continue
        assert obs.shape == ENV.obs_shape and np.isfinite(reward)
        if term or trunc:
            env.reset()


_actions = st.lists(st.one_of(st.integers(-10, 10), st.floats(), st.text(max_size=2), st.none(), st.booleans(),
                              hnp.arrays(st.sampled_from([np.int64, np.float32]), hnp.array_shapes(max_dims=2, max_side=2),
                                         elements=st.integers(-5, 5))), min_size=1, max_size=20)
_FEW = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
_MANY = settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FEW
@given(obs=_observations, greedy=st.booleans(), generator=_generators)
def test_act_fuzzed(ck, obs, greedy, generator):
    _act_case(ck, obs, greedy, generator)


@_FEW
@given(seed=_generators, actions=_actions)
def test_env_step_fuzzed(seed, actions):
    _step_case(seed, actions)


@pytest.mark.slow
@_MANY
@given(obs=_observations, greedy=st.booleans(), generator=_generators)
def test_act_fuzzed_many(ck, obs, greedy, generator):
    _act_case(ck, obs, greedy, generator)


@pytest.mark.slow
@_MANY
@given(seed=_generators, actions=_actions)
def test_env_step_fuzzed_many(seed, actions):
    _step_case(seed, actions)
