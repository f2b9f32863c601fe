"""Runs that learned nothing say so (issue 38, item 4): a real tiny run whose RBs' events never happen (MiniGrid's
empty room has no key and no ball), so both MBs see the same rewards, gain nothing, and have identical updates."""

import json
import textwrap

import pytest

pytest.importorskip("minigrid")

from goalscope.analysis.validate.scorecard import built_in_checks
from goalscope.analysis.validate.validation import locus_verdict
from goalscope.cli import main

EMPTY = """
    name = "empty"
    seeds = [0]
    workers = 1
    [env]
    family = "gym_events"
    id = "MiniGrid-Empty-5x5-v0"
    n_types = 3
    max_steps = 16
    events = "minigrid"
    event_types = ["goal", "key", "ball"]
    obs = "minigrid"
    [env.kwargs]
    max_steps = 16
    [agent]
    arch = "cnn"
    [agent.config]
    relative_coords = false
    [ppo]
    n_envs = 8
    n_steps = 32
    [base]
    reward = "collect:goal"
    steps = 512
    [finetune]
    steps = 256
    [negate]
    enabled = false
    [superpose]
    methods = ["mean_abs"]
    [evaluation]
    episodes = 16
    bootstrap = 200
"""


@pytest.fixture(scope="module")
def empty_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("empty")
    (tmp / "empty.toml").write_text(textwrap.dedent(EMPTY))
    run = tmp / "run"
    assert main(["run", str(tmp / "empty.toml"), "--out", str(run)]) == 0
    assert main(["validate", str(run), "--episodes", "4"]) == 0
    return run


def test_identical_update_signals_are_flagged_as_a_degenerate_family(empty_run, capsys):
    summary = json.loads((empty_run / "summary.json").read_text())
    assert summary["cosine"]["rb_vs_rb_same_seed"] > 0.9999  # what the issue saw on UnlockPickup: +1.000
    assert "degenerate family: 1 of 1 pairs of different RBs" in summary["degenerate_signals"]
    assert main(["results", str(empty_run)]) == 0
    assert "!! degenerate family" in capsys.readouterr().out
    assert "**Degenerate family" in (empty_run / "scorecard.md").read_text()


def test_zero_gains_nan_and_ties_read_not_measurable_never_wrong_or_underpowered(empty_run):
    card = json.loads((empty_run / "scorecard.json").read_text())
    md = (empty_run / "scorecard.md").read_text()
    assert card["graft"]["rb_gain"] == {"collect:key": 0.0, "collect:ball": 0.0}
    assert "WENT THE WRONG WAY" not in md and "(area nan vs nan)" not in md  # NaN was read as a failed check
    assert "underpowered at 0 seeds" not in md and "+nan" not in md
    assert card["verdicts"]["|Δ_i|"]["graft"].startswith(
        "not measurable (1 of 1 MA seeds left out: their MBs gained no specific lean")
    assert all(c["ok"] is None and c["detail"].startswith("not measurable") for c in card["checks"])
    # A tie is no failure either (the "WENT THE WRONG WAY (area 0.500 vs 0.500)").
    tie = built_in_checks({"graft": {"area": {"|Δ_i|": 0.5, "random": 0.5}}})
    assert tie[0]["ok"] is None and "a tie" in tie[0]["detail"]


def test_two_rbs_held_out_heatmap_is_said_to_be_built_from_the_other_rb_alone(empty_run):
    card = json.loads((empty_run / "scorecard.json").read_text())
    verdict = card["verdicts"]["mean_abs (held-out)"]["graft"]
    assert "with 2 RBs, built from the other RB's Δ alone" in verdict


def test_seeds_left_out_are_counted_and_said():
    """A 3-seed run where two seeds' MBs gained nothing used to print "underpowered at 1 seed, 3 would do"."""
    tests = [{"ranking": "|Δ_i|", "null": null, "seeds": 1, "beaten": False, "p": float("nan"),
              "diff": [0.1, float("nan"), float("nan")]} for null in ("random", "Fisher alone (MA)")]
    verdict = locus_verdict(tests, "|Δ_i|", "graft", n_seeds=3)
    assert "underpowered at 1 seed" in verdict and "2 of 3 MA seeds left out: their MBs gained no specific lean" in verdict
    assert "left out" not in locus_verdict(tests, "|Δ_i|", "graft", n_seeds=1)


def test_the_report_lists_the_degenerate_family_and_no_nan_check_as_wrong(empty_run, tmp_path):
    from goalscope.report.page import write_report

    page = write_report(empty_run, tmp_path / "report", log=lambda *a: None).read_text(encoding="utf-8")
    assert "degenerate family: 1 of 1 pairs" in page
    assert "nan vs nan" not in page and "no MB gained specific lean" not in page  # not measurable is no failure
