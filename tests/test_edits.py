"""Issue 14 end to end on a tiny real run: linearity curves (with the retrain), objective arithmetic with a pair
fine-tune, targeted edits, decode; cached and resumable, records and figures written."""

import json

import numpy as np
import pytest

from goalscope.program.config import experiment_from_dict
from goalscope.analysis.effects.experiment import run_experiment
from goalscope.program.runner import plan_experiment

TINY = {
    "name": "tiny-edits", "seeds": [0, 1], "workers": 1,
    "env": {"size": 5, "n_types": 3, "n_per_type": 1, "max_steps": 16},
    "ppo": {"n_envs": 16, "n_steps": 32},
    "base": {"steps": 1024}, "finetune": {"steps": 512, "seeds_per_ma": 2},
    "negate": {"alphas": [1.0], "retrain_steps": 512, "random_control": False},
    "superpose": {"methods": ["mean", "ties"], "fisher_samples": 32},
    "evaluation": {"episodes": 16, "bootstrap": 100},
}
KW = dict(t_grid=(-1.0, 0.0, 1.0), pairs=("collect:1+collect:2",), fractions=(0.05,), n_random=1,
          log=lambda *a: None)


@pytest.fixture(scope="module")
def edited(tmp_path_factory):
    from goalscope.analysis.edits.run import run_edits

    out = tmp_path_factory.mktemp("runs") / "tiny"
    run_experiment(experiment_from_dict(TINY), out, log=lambda *a: None)
    before = {p.name for p in (out / "stages").iterdir()}
    res = run_edits(out, **KW)
    return out, before, res


def test_linearity_reuses_the_negate_stage_and_its_endpoints_are_ma_and_mb(edited):
    from goalscope.program.jobs import load_profile

    out, before, res = edited
    lin = res["linearity"]
    assert set(lin["paths"]) == {"no retrain", "retrained", "random, no retrain"}
    assert lin["t"] == [-1.0, 0.0, 1.0]
    # New stages: the retrain at t=1 per (seed, RB) and one pair fine-tune per seed; t=-1 is the run's own negation.
    new = {p.name for p in (out / "stages").iterdir()} - before
    assert sorted(k.split("-")[0] for k in new) == ["finetune"] * 2 + ["negate"] * 4
    # t = 1 without retrain is MB itself: the same counts on the same paired episodes as MB's own profile.
    plan = plan_experiment(experiment_from_dict(TINY))
    mb = load_profile(out, plan.mb[(0, "collect:1")])
    i_rb = 1
    ci = lin["paths"]["no retrain"]["collect:1"]["rb_objects"][2]
    mb1 = load_profile(out, plan.mb[(1, "collect:1")])
    assert ci[0] == pytest.approx((mb.counts[:, i_rb].mean() + mb1.counts[:, i_rb].mean()) / 2, abs=1e-3)
    q = lin["questions"]["no retrain"]["collect:1"]
    assert {"monotone_increasing", "capability_break_positive", "capability_break_negative", "mirror"} <= set(q)


def test_arithmetic_targeted_records_and_figures(edited):
    from goalscope.report.figures_edits import edits_markdown, write_figures
    from goalscope.analysis.records import read_records

    out, _, res = edited
    ar = res["arithmetic"]["targets"]
    assert "collect:1+collect:2" in ar
    pair = ar["collect:1+collect:2"]
    assert pair["MB (real fine-tune on the pair)"]["gap_closed"][0] == pytest.approx(1.0)
    assert {"MA + Δ_i + Δ_j", "MA + random (norms of Δ_i + Δ_j)"} <= set(pair)
    assert {"MA + mean Δ of 2 fine-tune seeds", "MA + Δ from another MA seed"} <= set(ar["collect:1"])
    tg = res["targeted"]
    assert {"|Δ_i|", "random", "Fisher alone (MA)", "heatmap ties (all RBs)"} <= set(tg["rankings"])
    # The whole |Δ_i| top-k moves more weight than the same k at random.
    w = tg["rankings"]
    assert w["|Δ_i|"]["weight_fraction"][0][0] > w["random"]["weight_fraction"][0][0]
    rows = read_records(out / "edits" / "records.csv")
    assert {r["stage"] for r in rows} == {"linearity", "arithmetic", "targeted"}
    assert {"linearity", "arithmetic", "targeted", "performance"} <= {r["stage"] for r in read_records(out / "records.csv")}
    names = write_figures(out)
    assert {n.rsplit("/", 1)[-1] for n in names} >= {"linearity.png", "arithmetic.png", "targeted.png"}
    assert "Linearity" in edits_markdown(res) and "\\|Δ_i\\|" in edits_markdown(res)


def test_rerun_evaluates_and_trains_nothing(edited):
    from goalscope.analysis.edits.run import EditRun, linearity

    out, _, res = edited
    n_stages = len(list((out / "stages").iterdir()))
    er = EditRun(out, log=lambda *a: None)
    again, _ = linearity(er, KW["t_grid"], n_random=1)
    assert er.evaluated == 0
    assert len(list((out / "stages").iterdir())) == n_stages
    assert json.loads(json.dumps(again)) == json.loads((out / "edits" / "linearity.json").read_text()) | {"episodes": 16} \
        or again["paths"] == json.loads((out / "edits" / "linearity.json").read_text())["paths"]


def test_decode_held_out_and_one_checkpoint(edited, capsys):
    from goalscope.cli.main import main
    from goalscope.analysis.edits.decode import run_decode

    out, _, _ = edited
    res = run_decode(out, n_perm=20, log=lambda *a: None)
    assert res["items"] == 2 * 2 * 2 and res["chance"] == 0.5
    assert res["composite"]["fine_tunes"] == 2  # the arithmetic part's pair fine-tunes, decoded out of distribution
    for scheme in ("leave one fine-tune seed out", "leave one MA seed out"):
        by = res["schemes"][scheme]
        assert {"all features", "without value head", "only first layer"} <= set(by)
        assert 0 <= by["all features"]["accuracy"][0] <= 1
    plan = plan_experiment(experiment_from_dict(TINY))
    mb = out / "stages" / plan.mb[(1, "collect:2")]
    assert main(["decode", str(out), str(mb), "--json"]) == 0
    ranked = json.loads(capsys.readouterr().out)
    assert ranked["ma_seed"] == 1 and ranked["excluded_identical"] == 1
    assert sorted(r["rb"] for r in ranked["ranking"]) == ["collect:1", "collect:2"]
    assert np.isclose(sum(r["softmax"] for r in ranked["ranking"]), 1, atol=1e-3)


def test_report_section_draws_the_figures(edited, tmp_path):
    from types import SimpleNamespace

    from goalscope.report.page import Page
    from goalscope.report.sections import SECTION_WRITERS, SECTIONS

    out, _, _ = edited
    (tmp_path / "run" / "edits").mkdir(parents=True)  # one part is enough to show the section draws what exists
    (tmp_path / "run" / "edits" / "linearity.json").write_text((out / "edits" / "linearity.json").read_text())
    assert dict(SECTIONS)["edits"].startswith("9. ")
    page = Page(tmp_path)
    dict(SECTION_WRITERS)["edits"](SimpleNamespace(path=tmp_path / "run"), page)  # the writer reads only run.path
    assert page.figures == ["edits_linearity"]


def test_dynamics_rerun_reproduces_mb_and_tracks_the_own_plane(edited):
    from goalscope.analysis.edits.run import run_edits
    from goalscope.report.figures_edits import edits_markdown, write_figures

    out, _, _ = edited
    res = run_edits(out, ("dynamics",), log=lambda *a: None)["dynamics"]
    assert res["reproduces_mb"] == "4/4"  # the same job spec, so the last snapshot is MB itself
    last = str(res["steps"][-1])
    assert res["curves"]["collect:1"]["cosine_with_final"][last][0] == pytest.approx(1.0)
    assert "Dynamics" in edits_markdown({"dynamics": res})
    assert any(n.endswith("dynamics.png") for n in write_figures(out))


def test_rerunning_the_experiment_keeps_the_edits_rows_of_records(edited):
    from goalscope.analysis.records import read_records

    out, _, _ = edited
    def rows():  # as text: NaN bounds compare equal
        return [tuple(map(str, r.values())) for r in read_records(out / "records.csv")]

    before = rows()
    run_experiment(experiment_from_dict(TINY), out, log=lambda *a: None)  # every stage cached: only the analysis reruns
    after = rows()
    mine = [r for r in before if r[0] in ("linearity", "arithmetic", "targeted")]
    assert mine and all(r in after for r in mine) and len(after) == len(before)


def test_a_resumed_arithmetic_still_has_its_pair_fine_tunes(edited):
    from goalscope.analysis.edits.run import run_edits

    out, _, res = edited
    again = run_edits(out, parts=("arithmetic",), **KW)  # the pair fine-tunes are finished jobs now
    assert "collect:1+collect:2" in again["arithmetic"]["targets"]
    assert again["arithmetic"]["targets"] == res["arithmetic"]["targets"]
