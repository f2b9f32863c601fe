"""Validation priced like the run (issue 36 item 3): the plan printed before any worker starts, a budget that cuts
only exploratory parts and says so, and evaluations reused only where the scorecard stays byte-identical."""

import json
import shutil

import pytest
import torch

from goalscope.analysis.validate.plan import (GRAFT_POINTS, budget_lines, defined_methods, gate_calls, makespan,
                                              plan_markdown)
from goalscope.analysis.validate.reuse import Evaluations, state_digest
from goalscope.program.config import experiment_from_dict
from goalscope.program.executors import LocalExecutor

from test_experiment import TINY

# Three one-hot RBs, so the held-out curve has an exploratory point (n = 1) below its largest size (n = 2).
# One seed keeps it quick: the plan, the budget and reuse are per seed alike.
CFG = {**TINY, "seeds": [0], "env": {**TINY["env"], "n_types": 4}, "negate": {"enabled": False},
       "superpose": {"methods": ["mean", "median", "mean_abs"], "fisher_samples": 64}}
EPISODES = 8


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    from goalscope.analysis.effects.experiment import run_experiment

    cfg = experiment_from_dict(CFG)
    out = tmp_path_factory.mktemp("plan") / "run"
    run_experiment(cfg, out, log=lambda *a: None)
    return cfg, out


@pytest.fixture(scope="module")
def validated(tiny_run, tmp_path_factory):
    """A copy of the run validated without a budget, on 2 workers (MA's profile crosses processes)."""
    cfg, run = tiny_run
    copy = tmp_path_factory.mktemp("plan") / "validated"
    shutil.copytree(run, copy)
    return _validate(cfg, copy, workers=2)


def _validate(cfg, run, workers=1, **kw):
    from goalscope.analysis.validate.validation import run_validation

    lines = []
    card = run_validation(cfg, run, LocalExecutor(workers), episodes=EPISODES, log=lines.append, **kw)
    files = {name: (run / name).read_bytes() for name in ("scorecard.json", "scorecard.md", "validation.csv")}
    return card, "\n".join(map(str, lines)), files


# ----------------------------------------------------------------------------------------------------------------
# Counting and scheduling (pure)


def test_gate_calls_match_what_model_effects_evaluates():
    from goalscope.analysis.validate.causal import DRAWS, model_effects

    state = {"w": torch.arange(24.0).view(4, 6)}
    mask = {"w": torch.zeros(4, 6, dtype=torch.bool)}
    mask["w"][:, 0] = True
    calls = []

    def collect(s):
        calls.append(1)
        return 0.0

    for axes, rewarded in (({"w": 0}, [0]), (None, [0]), ({"w": 0}, [0, 1, 2, 3])):
        calls.clear()
        model_effects(state, mask, axes, rewarded, 4, collect, seed=0)
        assert len(calls) == gate_calls(4, [(rewarded, ())], bool(axes), DRAWS)


def test_makespan_hands_tasks_to_the_first_free_worker():
    assert makespan([1.0] * 3, 2) == 2.0  # 3 seeds on 2 workers: one waits
    assert makespan([3.0, 1.0, 1.0, 1.0], 2) == 3.0
    assert makespan([1.0], 8) == 1.0 and makespan([], 2) == 0.0


def test_defined_methods_are_those_an_aggregator_builds():
    assert defined_methods(["mean_abs", "pca", "control_subtracted"], 1, control=True) == ["mean_abs",
                                                                                          "control_subtracted"]
    assert defined_methods(["mean_abs", "pca", "control_subtracted"], 2, control=False) == ["mean_abs", "pca"]
    assert GRAFT_POINTS == 4


def test_reuse_answers_equal_weights_once_and_counts_every_call():
    seen = []
    ev = Evaluations(lambda s: seen.append(1) or float(s["w"].sum()), reuse=True)
    a, b = {"w": torch.ones(3)}, {"w": torch.ones(3)}
    assert ev(a) == ev(b) == 3.0 and len(seen) == 1 and ev.counts() == {"requested": 2, "run": 1}
    assert state_digest({"w": torch.ones(3)}) != state_digest({"w": torch.ones(3, dtype=torch.float64)})
    assert state_digest({"w": torch.ones(3)}) != state_digest({"v": torch.ones(3)})
    off = Evaluations(lambda s: 1.0)
    off(a), off(a)
    assert off.counts() == {"requested": 2, "run": 2}


def test_the_budget_in_words():
    assert budget_lines({"budget_minutes": None, "cut": []}) == [] and plan_markdown({}) == ""
    over = budget_lines({"budget_minutes": 1, "cut": ["held-out curve at n = 1"], "primary_over_budget": True})[0]
    assert "run anyway" in over and "never cut" in over
    cut = budget_lines({"budget_minutes": 5, "cut": ["held-out curve at n = 1"], "primary_over_budget": False})[0]
    assert "full strength" in cut and "held-out curve at n = 1" in cut


# ----------------------------------------------------------------------------------------------------------------
# On a real tiny run


def test_plan_is_printed_first_counts_what_ran_and_reuse_is_exact(tiny_run, validated, tmp_path):
    cfg, run = tiny_run
    other = tmp_path / "copy"
    shutil.copytree(run, other)
    card, text, files = validated
    plan = card["plan"]
    # Printed before any worker starts: the plan is the first thing said, the outcome the last.
    assert text.startswith("validate plan") and text.index("total: at most") < text.index("validate took")
    assert plan["evaluations"] > 0 and plan["env_steps"] > 0 and plan["estimate_s"] > 0
    assert plan["rate"]["env_steps_per_s"] > 0 and "MA of each seed" in plan["rate"]["source"]
    for p in plan["parts"]:
        assert p["evaluations"] > 0 and p["env_steps"] == p["evaluations"] * EPISODES * cfg.env.max_steps
    assert plan["evaluations"] == sum(p["evaluations"] for p in plan["parts"])
    assert plan["cut"] == [] and not plan["primary_over_budget"]
    # Consistent with what ran: the tasks asked for exactly the planned evaluations, and reuse ran fewer.
    got = plan["actual"]
    assert got["task_evaluations_requested"] == got["task_evaluations_planned"]
    assert 0 < got["task_evaluations_run"] < got["task_evaluations_requested"]
    assert card["held_out_curve"]["sizes"] == [1, 2]
    # Exact: without reuse (MA evaluated in each task, identical weights evaluated again, all in one process
    # rather than MA's profile made here and handed to 2 workers) the scorecard, its words and validation.csv are
    # the same bytes; only the plan's timings and counts differ.
    card2, _, files2 = _validate(cfg, other, workers=1, reuse=False)  # and in one process
    assert card2["plan"]["actual"]["task_evaluations_run"] == card2["plan"]["actual"]["task_evaluations_requested"]
    assert files["validation.csv"] == files2["validation.csv"]
    assert files["scorecard.md"] == files2["scorecard.md"]
    strip = lambda b: {k: v for k, v in json.loads(b).items() if k != "plan"}  # noqa: E731
    assert strip(files["scorecard.json"]) == strip(files2["scorecard.json"])


def test_a_tiny_budget_cuts_exploratory_parts_only_and_says_so(tiny_run, validated, tmp_path):
    cfg, run = tiny_run
    whole = validated[0]
    cut = tmp_path / "cut"
    shutil.copytree(run, cut)
    card, text, files = _validate(cfg, cut, budget_minutes=0.001)
    plan = card["plan"]
    assert plan["cut"] == ["held-out curve at n = 1"] and plan["primary_over_budget"]
    assert "run anyway" in text and "CUT" in text
    assert plan["actual"]["task_evaluations_requested"] == plan["actual"]["task_evaluations_planned"]
    # The exploratory point is not graded, and said so; "rises with #RBs" is not measured, not failed.
    curve = card["held_out_curve"]
    assert curve["sizes"] == [2] and curve["cut"]["sizes"] == [1]
    assert all(1 not in by_n for by_n in curve["methods"].values())
    assert all(r["verdict"].startswith("not measured") for r in curve["rises"].values())
    md = files["scorecard.md"].decode()
    assert "## Validation budget" in md and "never cut" in md and "Not graded: n = 1" in md
    # Every primary claim is there at full strength: the same numbers as without a budget.
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # noqa: E731 (NaN too)
    for key in ("verdicts", "tests", "graft", "ablation"):
        assert same(card[key], whole[key]), key
    full = whole["held_out_curve"]
    assert same(curve["tests"], full["tests"]) and same(curve["nulls"], full["nulls"])
    assert same({m: v[2] for m, v in curve["methods"].items()}, {m: v[2] for m, v in full["methods"].items()})


def test_plan_only_evaluates_ma_and_writes_nothing(tiny_run, tmp_path, capsys):
    from goalscope.cli.main import main

    cfg, run = tiny_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    for name in ("scorecard.json", "scorecard.md"):
        (copy / name).unlink(missing_ok=True)
    main(["validate", str(copy), "--plan-only", "--budget-minutes", "60", "--workers", "1"])
    out = capsys.readouterr().out
    assert out.startswith("validate plan") and "budget 60 min: everything fits; nothing cut" in out
    assert not (copy / "scorecard.json").exists()
    with pytest.raises(SystemExit):
        main(["validate", str(copy), "--budget-minutes", "0"])
