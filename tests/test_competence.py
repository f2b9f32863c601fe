"""The competence gate on known profiles: the oracle decides where there is one, the preference CI otherwise."""

import math

import numpy as np

from goalscope.analysis.effects.competence import preference, verdict
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


def test_without_an_oracle_the_gate_is_the_lift_over_a_reference_with_base_rates():
    from goalscope.analysis.effects.competence import lift

    drink = parse_reward("collect:1", 2)
    # Drinking happens ~5 times an episode whatever the agent wants: MB[drink] at 5.5 is barely above MA at 5.0,
    # though its preference (drinks minus wood) looks large.
    ma, mb = np.array([[1, 5], [1, 5]]), np.array([[0, 6], [1, 5]])
    assert lift(mb, ma, drink) == 0.5 and preference(mb, drink).mean() == 5.0
    ok, words = verdict(None, (5.0, 4.0, 6.0), 0.85, lift_ci=(0.5, -0.2, 1.2), reference="MA")
    assert not ok and "no significant lift" in words and "over MA" in words  # the preference alone would pass
    ok, words = verdict(None, (0.1, -0.05, 0.25), 0.85, lift_ci=(1.3, 0.4, 2.2), reference="a random policy")
    assert ok and "+1.30 [+0.40, +2.20] return per episode over a random policy" in words
    assert not verdict(None, (5.0, 4.0, 6.0), 0.85, lift_ci=(0.5, math.nan, math.nan), reference="MA")[0]
    assert verdict(0.95, (0.0, -1.0, 1.0), 0.9, lift_ci=(-1.0, -2.0, -0.5), reference="MA")[0]  # an oracle decides
