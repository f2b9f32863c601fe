import numpy as np
import pytest

from goalscope.envs.rewards import Reward, composite_family, one_hot_family, parse_reward
from goalscope.errors import ConfigError


@pytest.mark.parametrize("spec, weights, cost", [
    ("collect:0", (1, 0, 0, 0), 0.0),
    ("avoid:2", (0, 0, -1, 0), 0.0),
    ("0.5*collect:0+collect:3", (0.5, 0, 0, 1), 0.0),
    ("collect:1 + step:0.01", (0, 1, 0, 0), 0.01),
    ("-2*collect:1", (0, -2, 0, 0), 0.0),
    ("1,0,-1,0.5", (1, 0, -1, 0.5), 0.0),
])
def test_parse(spec, weights, cost):
    r = parse_reward(spec, 4)
    assert r.weights == tuple(float(w) for w in weights) and r.step_cost == pytest.approx(cost)


@pytest.mark.parametrize("spec, match", [
    ("collect:4", "does not exist"),
    ("eat:1", "cannot read term"),
    ("1,0,0", "3 weights but the env has 4"),
    ("", "non-empty"),
    ("collect:x", "does not name its event types"),
    ("step:x", "cost per step"),
    ("1,a,0,0", "comma-separated"),
])
def test_parse_errors_name_the_problem(spec, match):
    with pytest.raises(ConfigError, match=match):
        parse_reward(spec, 4)


def test_rewards_name_event_types_where_the_env_names_them():
    """Issue 27: `--reward collect:goal` was "cannot read term"; an env that names its types is rewarded by name."""
    names = ["key", "door", "goal", "ball:red"]
    assert parse_reward("collect:goal", 4, names).weights == (0, 0, 1, 0)
    r = parse_reward("0.5*collect:key+collect:door", 4, names)
    assert r.weights == (0.5, 1, 0, 0) and r.name == "0.5*collect:key+collect:door"
    assert parse_reward("avoid:ball:red+collect:0+step:0.01", 4, names).weights == (1, 0, 0, -1)
    with pytest.raises(ConfigError, match="no event type 'lava' .*key, door, goal, ball:red"):
        parse_reward("collect:lava", 4, names)


def test_score_is_a_dot_product_minus_step_cost():
    r = parse_reward("2*collect:0+avoid:1+step:0.5", 3)
    counts = np.array([[1, 2, 5], [0, 0, 0]])
    np.testing.assert_allclose(r.score(counts, np.array([4, 10])), [2 - 2 - 2.0, -5.0])


def test_families():
    ra = parse_reward("collect:0", 4)
    assert [r.name for r in one_hot_family(4, exclude=ra)] == ["collect:1", "collect:2", "collect:3"]
    comp = composite_family(ra, 4)
    assert [r.weights for r in comp][0] == (1.0, 1.0, 0.0, 0.0) and len(comp) == 3
    assert Reward.from_json(comp[1].to_json()) == comp[1]
