"""Steering vectors, weight-space edits and shard diagnostics on a small real run (issue 17)."""

import json

import numpy as np
import pytest

from goalscope.analysis.steering import shards
from goalscope.analysis.effects.experiment import run_experiment
from goalscope.analysis.records import read_records
from goalscope.analysis.steering.run import run_steering
from goalscope.cli import main
from goalscope.program.config import experiment_from_dict
from goalscope.report.figures_steering import fig_steering

TINY = {
    "name": "tiny-steer", "seeds": [0, 1], "workers": 1,
    "env": {"size": 5, "n_types": 3, "n_per_type": 1, "max_steps": 12},
    "ppo": {"n_envs": 16, "n_steps": 32},
    "base": {"steps": 512}, "finetune": {"steps": 512},
    "negate": {"enabled": False},
    "superpose": {"methods": ["mean_abs"], "fisher_samples": 64},
    "evaluation": {"episodes": 16, "bootstrap": 100},
}


@pytest.fixture(scope="module")
def steered(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    run_experiment(experiment_from_dict(TINY), out, log=lambda *a: None)
    summary = run_steering(out, obs_episodes=4, sites=["conv2", "policy"], log=lambda *a: None, figure=fig_steering)
    return out, summary


def test_steer_end_to_end_cached_and_in_records(steered, capsys):
    out, s = steered
    assert s["seeds"] == [0, 1] and s["sites"] == ["conv2", "policy"]
    keys = {(e["space"], e["site"], e["vector"], e["scale"]) for e in s["effects"]}
    for space, sites in (("activation", ["conv2", "policy"]), ("weight", ["conv2", "policy", "all"])):
        for site in sites:
            for vector in ("Δ_i", "random", "control"):
                assert {(space, site, vector, 1.0), (space, site, vector, -1.0)} <= keys
    per_seed = json.loads((out / "steering" / "seed0.json").read_text())["result"]
    # Grafting the whole Δ_i onto MA is MB_i: the same behaviour on the same paired episodes (up to float rounding
    # of MA + (MB - MA)), and its KL from MA is that of MB.
    for rb, (i, _) in per_seed["targets"].items():
        row = next(r for r in per_seed["rows"] if r["rb"] == rb and r["space"] == "weight" and r["site"] == "all"
                   and r["vector"] == "Δ_i" and r["scale"] == 1.0)
        assert abs(row["rb_objects"] - per_seed["base"][f"MB[{rb}]"]["counts"][i]) <= 0.13
        # Patching MB's logits into MA is MB exactly (bit for bit: the same logits on the same episodes).
        patch = next(r for r in per_seed["rows"] if r["rb"] == rb and r["space"] == "activation" and
                     r["site"] == "policy" and r["vector"] == "patch" and r["scale"] == 1.0)
        assert patch["rb_objects"] == per_seed["base"][f"MB[{rb}]"]["counts"][i]
        assert patch["ra_return"] == per_seed["base"][f"MB[{rb}]"]["ra_return"]
    # Random and control activation vectors have the norm of v_i, so the site shift of c*v is the same for all three.
    acts = [r for r in per_seed["rows"] if r["space"] == "activation" and r["site"] == "conv2" and r["scale"] == 1.0]
    shifts = {r["vector"]: r["site_shift"] for r in acts if r["rb"] == acts[0]["rb"] and r["vector"] != "control patch"}
    assert len(shifts) == 4  # Δ_i, random, control, and the patch, whose mean shift is v_i by definition
    assert np.allclose(list(shifts.values()), shifts["Δ_i"], rtol=1e-3)
    ov = s["object_vector"]  # the cheese-vector analogue inside each MB
    assert {(e["site"], e["vector"], e["scale"]) for e in ov["effects"]} >= {("conv2", "object vector", -1.0),
                                                                          ("conv2", "random", -1.0)}
    assert 0 < ov["present_fraction"] <= 1
    rows = read_records(out / "records.csv")
    stages = {r["stage"] for r in rows}
    assert {"steering", "shards", "analysis"} <= stages or {"steering", "shards"} <= stages
    metrics = {r["metric"] for r in rows}
    assert "unit_pr" in metrics and "step_toward_at_distance_1" in metrics and "d_lean_c-1" in metrics
    assert (out / "steering" / "steering.png").stat().st_size > 1000
    # A rerun reuses every finished seed and writes the same summary; --force would redo them.
    stamp = (out / "steering" / "seed1.json").stat().st_mtime_ns
    assert main(["steer", str(out), "--obs-episodes", "4", "--sites", "conv2,policy"]) == 0
    assert (out / "steering" / "seed1.json").stat().st_mtime_ns == stamp
    assert "Steering vectors vs weight-space edits" in capsys.readouterr().out
    # Other settings are another computation, not a stale cache hit.
    assert main(["steer", str(out), "--obs-episodes", "4", "--sites", "policy", "--seeds", "1"]) == 0
    assert (out / "steering" / "seed1.json").stat().st_mtime_ns != stamp


def test_concentration_measures():
    assert shards.participation_ratio([1, 1, 1, 1]) == pytest.approx(1.0)
    assert shards.participation_ratio([1, 0, 0, 0]) == pytest.approx(0.25)
    assert shards.gini([1, 1, 1, 1]) == pytest.approx(0.0)
    assert shards.gini([0, 0, 0, 1]) == pytest.approx(0.75)
    import torch

    c = shards.concentration({"a.weight": torch.ones(4, 3), "a.bias": torch.ones(4), "b.weight": torch.zeros(2, 4)})
    assert c["units"] == 6 and c["modules"]["a"]["pr"] == pytest.approx(1.0)
    assert c["pr"] == pytest.approx(4 / 6)
