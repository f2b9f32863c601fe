"""The competence gate on known profiles: the oracle decides where there is one, the preference CI otherwise."""

import math

import numpy as np

from goalscope.analysis.competence import preference, verdict
from goalscope.envs.rewards import parse_reward


def test_preference_is_rewarded_minus_the_other_types():
    counts = np.array([[2, 0, 1], [1, 1, 1]])
    assert preference(counts, parse_reward("collect:0", 3)).tolist() == [1.5, 0.0]
    assert preference(counts, parse_reward("collect:0+collect:2", 3)).tolist() == [1.5, 0.0]
    assert np.isnan(preference(counts, parse_reward("1,1,1", 3))).all()  # pays for everything: no preference


def test_verdicts():
    assert verdict(0.91, (0.5, 0.2, 0.8), 0.8)[0]
    ok, words = verdict(0.6, (0.5, 0.2, 0.8), 0.8)
    assert not ok and "only 60.0% of the oracle" in words  # the oracle decides, however strong the preference
    ok, words = verdict(0.92, (0.5, 0.2, 0.8), 0.9, 0.874)
    assert ok and "92.0% of the oracle, 95% CI from 87.4% (bar 90%)" in words  # the mean decides, its CI is named
    assert verdict(None, (0.3, 0.1, 0.5), 0.8)[0]  # no oracle: a preference whose CI excludes 0 passes
    ok, words = verdict(None, (0.1, -0.05, 0.25), 0.8)
    assert not ok and "no significant preference" in words
    assert not verdict(None, (0.1, math.nan, math.nan), 0.8)[0]  # one seed: not measurable, not a pass
