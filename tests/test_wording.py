"""Verdict words that say what was tested (issue 34 item 3): an effect whose interval excludes 0 but which fails
Holm is "not shown after Holm", never "no better than random"; printouts show the interval a verdict rests on;
overlap is set against a chance level that knows the input plane."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from goalscope.analysis.validate.grafts import CONTROL_NULL, FISHER_NULL, NULLS, OTHER_RB_NULL, PER_RB, RANDOM
from goalscope.analysis.validate.validation import compare_family, ladder_label, locus_verdict


def _scores(diff_random, diff_fisher=(-0.3, -0.3, -0.3), diff_rest=(-0.3, -0.3, -0.3)) -> dict:
    base = np.array([0.1, 0.2, 0.15])
    return {PER_RB: {"graft": list(base + 0.5)}, RANDOM: {"graft": list(base + 0.5 - np.array(diff_random))},
            FISHER_NULL: {"graft": list(base + 0.5 - np.array(diff_fisher))},
            CONTROL_NULL: {"graft": list(base + 0.5 - np.array(diff_rest))},
            OTHER_RB_NULL: {"graft": list(base + 0.5 - np.array(diff_rest))}}


def test_an_interval_above_zero_that_fails_holm_is_not_shown_not_no_better():
    # Differences from random 0.25, 0.55, 0.40 over 3 seeds: one-sided p = 0.022, two-sided 95% t interval
    # [+0.03, +0.77] excludes 0, Holm over 4 nulls (0.088) does not pass. Before: "no better than random".
    tests = compare_family(_scores((0.25, 0.55, 0.40)), "graft", [PER_RB], nulls=NULLS)
    t = next(t for t in tests if t["null"] == RANDOM)
    assert not t["beaten"] and t["diff"][1] > 0 and 0.0125 < t["p"] < 0.025
    v = locus_verdict(tests, PER_RB)
    assert v.startswith(f"not shown above {RANDOM} after Holm (raw p 0.0219)"), v
    assert "no better than random" not in v
    # Where the interval includes 0 the data do say "no better than random".
    tests = compare_family(_scores((0.05, 0.55, 0.30)), "graft", [PER_RB], nulls=NULLS)
    assert next(t for t in tests if t["null"] == RANDOM)["diff"][1] < 0
    assert locus_verdict(tests, PER_RB).startswith("no better than random ("), locus_verdict(tests, PER_RB)


def test_the_ladder_says_not_shown_at_the_rung_that_decides():
    raw = {FISHER_NULL: {"null": FISHER_NULL, "p": 0.02, "diff": [0.3, 0.01, 0.6]}}
    assert ladder_label([RANDOM], [FISHER_NULL, CONTROL_NULL, OTHER_RB_NULL], PER_RB, raw) == \
        f"above random; not shown above {FISHER_NULL} after Holm (raw p 0.02)"
    assert ladder_label([RANDOM], [FISHER_NULL, CONTROL_NULL, OTHER_RB_NULL], PER_RB) == "sensitivity only"
    # A rung of two nulls is "not shown" only when both of its misses are: one absent difference decides.
    raw = {CONTROL_NULL: {"null": CONTROL_NULL, "p": 0.02, "diff": [0.3, 0.01, 0.6]}}
    assert ladder_label([RANDOM, FISHER_NULL], [CONTROL_NULL, OTHER_RB_NULL], PER_RB, raw) == "generic fine-tuning locus"
    assert ladder_label([RANDOM, FISHER_NULL, OTHER_RB_NULL], [CONTROL_NULL], PER_RB, raw) == \
        f"above sensitivity; not shown above {CONTROL_NULL} after Holm (raw p 0.02)"


def test_the_negation_printout_shows_the_interval_its_verdict_uses(capsys):
    from goalscope.cli.experiment import print_results

    # A bootstrap interval over seeds x episodes that excludes 0, a t interval over seed means that does not: the
    # verdict reads the second. Before, only the first was printed beside "no detectable lean (Holm)".
    d = {"rb_objects_diff": [-0.4, -0.6, -0.2], "specific_lean": [-0.3, -0.5, -0.1], "ra_return_diff": [0.0, -0.1, 0.1],
         "lean_t": [-0.3, -1.1, 0.5], "p": 0.21, "p_holm": 0.84, "verdict": "no detectable lean (Holm)"}
    s = {"experiment": "x", "ra": "collect:0", "rbs": ["collect:1"], "seeds": [0, 1, 2],
         "negation": [{"rb": "collect:1", "alpha": 1.0, "retrained_MA": d}]}
    print_results(Path("run"), s)
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if "retrained_MA" in x)
    assert "-0.300 [-1.100, +0.500]" in line and "0.84" in line and line.endswith("no detectable lean (Holm)"), line
    assert "t interval over per-seed means" in out
