import csv
import json
import math

import pytest

from goalscope.agents.checkpoints import load_checkpoint
from goalscope.analysis.pointer_reference import load_pointers_file, reference_verdict
from goalscope.analysis.pointers import VARIANTS, plan_pointers, pointer_verdict
from goalscope.cli import main
from goalscope.envs.maze import MazeConfig
from goalscope.errors import ConfigError


def test_pointer_verdict_words():
    assert pointer_verdict((1.0, 0.9, 1.1), (3.0, 2.5, 3.5)).startswith("distinguishable")
    assert pointer_verdict((1.0, 0.9, 1.1), (1.05, 0.95, 1.2)).startswith("not distinguishable")
    nan = float("nan")
    assert pointer_verdict((1.0, nan, nan), (3.0, nan, nan)).startswith("undecided")  # one seed: no interval
    # Decided seed by seed when the paired difference is given: overlapping intervals can still differ reliably
    # (the 5-seed rcnn run: 1.11x [1.07, 1.16] vs 1.00x [0.93, 1.07], paired +0.11 [+0.01, +0.22]).
    words = pointer_verdict((1.00, 0.93, 1.07), (1.11, 1.07, 1.16), (0.114, 0.0095, 0.219))
    assert words.startswith("distinguishable") and "paired difference +0.11 [+0.01, +0.22]" in words
    assert pointer_verdict((1.00, 0.93, 1.07), (1.11, 1.07, 1.16), (0.11, -0.02, 0.24)).startswith("not distinguishable")
    assert pointer_verdict((1.0, 0.9, 1.1), (3.0, 2.5, 3.5), (2.0, nan, nan)).startswith("undecided")


def test_objective_as_pointer_fails_when_the_cue_blind_reference_shows_the_same_gap():
    pointer = [0.11, 0.02, 0.20, 0.09, 0.13]  # MA_g's (|Δ_reward| - |Δ_cue|) / |Δ_control| per seed, all above 0
    assert reference_verdict(pointer, [0.0, -0.03, 0.02, 0.01, -0.01])["passes"]
    words = reference_verdict(pointer, [0.0, -0.03, 0.02, 0.01, -0.01])["verdict"]
    assert words.startswith("objective as pointer, supported") and "one-sided 95% interval [+" in words
    # A cue-blind agent with the same gap (or a larger one, or a noisy one around it): not shown, whatever MA_g's own
    # interval says.
    for reference in (pointer, [x + 0.05 for x in pointer], [0.2, -0.1, 0.3, 0.0, 0.15]):
        d = reference_verdict(pointer, reference)
        assert not d["passes"] and d["verdict"].startswith("objective as pointer, not shown"), reference
        assert d["p"] >= 0.05 and not d["one_sided_low"] > 0
    assert "tested whether the goal-conditioned agent's" in d["verdict"]
    one = reference_verdict([0.1], [0.0])  # one seed: no test
    assert not one["passes"] and one["verdict"].startswith("undecided")
    # The interval and the p value decide alike: the lower end is above 0 exactly when p < 0.05.
    for shift in (-0.1, 0.0, 0.05, 0.08, 0.12, 0.3):
        d = reference_verdict(pointer, [x - shift for x in [0.1, 0.0, 0.15, 0.1, 0.12]])
        assert d["passes"] == (d["one_sided_low"] > 0) == (d["p"] < 0.05)


def test_the_reference_jobs_are_new_and_leave_the_pointer_agents_keys_alone():
    env = MazeConfig(size=5, n_types=2, max_steps=16, cue=True)
    args = (env, "mlp", {}, [0, 1], 1024, 256, 16, {"n_envs": 8, "n_steps": 32})
    old, new = plan_pointers(*args), plan_pointers(*args, reference_steps=1024)
    # MA_g's keys as this plan made them before the reference existed: a finished experiment is reused as it is.
    assert old.ma[0] == new.ma[0] == "train-b98fdd5dee66"
    assert [old.ft[(0, v)] for v in VARIANTS] == [new.ft[(0, v)] for v in VARIANTS] == [
        "finetune-ecc292ee34e4", "finetune-6c79dbe8da42", "finetune-2009e7286f56"]
    assert (old.ma, old.ft) == (new.ma, new.ft) and not old.ref and not old.ref_ft
    old_keys = [j.key for wave in old.waves for j in wave]
    new_keys = [j.key for wave in new.waves for j in wave]
    assert new_keys[:2] == old_keys[:2] and new_keys[4:10] == old_keys[2:]  # MA_g's jobs first, in the same order
    added = set(new.ref.values()) | set(new.ref_ft.values())
    assert len(added) == 2 + 2 * 3 and not added & set(old_keys) and len(set(new_keys)) == len(new_keys)
    ref = next(j for j in new.waves[0] if j.key == new.ref[0])
    assert ref.spec["reward"]["name"] == "collect:0" and not ref.spec["reward"]["cued"]
    assert ref.spec["env"] == env.to_json() and ref.spec["seed"] == 0  # MA_g's env and initial weights
    fts = {j.label: j for j in new.waves[1] if j.key in added}
    assert {(j.spec["reward"]["name"], j.spec["env"]["fixed_cue"]) for j in fts.values()} == {
        ("collect:0", -1), ("collect:1", 0), ("collect:1", 1)}  # control on its own task; the cue kept; the cue moved
    assert all(j.deps[0] in new.ref.values() for j in fts.values())
    longer = plan_pointers(*args, reference_steps=2048)  # the reference's budget is in its keys, MA_g's are not
    assert longer.ma == new.ma and longer.ft == new.ft and longer.ref[0] != new.ref[0]


def test_the_pointers_section_switches_the_reference_and_sets_its_budget(tmp_path):
    exp = tmp_path / "p.toml"
    exp.write_text('name = "p"\n[env]\nsize = 5\nn_types = 2\n[base]\nsteps = 1024\n')
    cfg, section = load_pointers_file(exp)
    assert cfg.base.steps == 1024 and section.reference and section.reference_steps == 0  # 0: base.steps
    exp.write_text(exp.read_text() + "[pointers]\nreference = false\nreference_steps = 512\n")
    assert load_pointers_file(exp)[1] == type(section)(False, 512)
    for bad, message in (("reference = 1", "pointers.reference must be true or false"),
                         ("reference_steps = 0", "pointers.reference_steps must be between"),
                         ("referense = true", "unknown key 'pointers.referense'")):
        exp.write_text('name = "p"\n[pointers]\n' + bad + "\n")
        with pytest.raises(ConfigError, match=message):
            load_pointers_file(exp)
    shipped = load_pointers_file("experiments/pointers.toml")[1]
    assert shipped.reference and shipped.reference_steps == 0  # on, with MA_g's budget


def test_small_real_pointer_experiment(tmp_path, capsys):
    out = tmp_path / "ptr"
    tiny = ["--finetune-steps", "1024", "--reference-steps", "2048", "--episodes", "32", "--size", "5", "--n-types",
            "2", "--max-steps", "16"]
    code = main(["pointers", "--out", str(out), "--seeds", "0", "1", "--base-steps", "4096", *tiny])
    assert code == 0
    s = json.loads((out / "summary.json").read_text())
    assert set(s["delta_l2_over_control"]) == {"reward changes, cue fixed", "cue changes with reward"}
    for ci in s["delta_l2_over_control"].values():
        assert ci[1] <= ci[0] <= ci[2] and ci[0] > 0
    retarget = s["per_seed"][0]["retargeting"]
    assert [r["cue"] for r in retarget] == [0, 1] and all(r["chance"] == 0.5 for r in retarget)
    # The gate is judged against the oracle on the same episodes: an object on the only route is collected first
    # even by a perfect agent, so a raw "cued first" rate cannot reach 90% in a maze.
    for p in s["per_seed"]:
        assert 0 < p["oracle_reached_cued_first"] <= 1
        assert math.isclose(p["cued_first_fraction_of_oracle"], p["reached_cued_first"] / p["oracle_reached_cued_first"])
    printed = capsys.readouterr().out
    assert "verdict" in printed and "competence: MA_g" in printed
    # The gate: MA_g at 4096 steps has not learned its cue, and the verdict says so.
    gate = s["competence"]["MA_g"]
    assert gate["bar"] == 0.9 and not gate["passes"] and "does not reliably follow its cue" in gate["verdict"]
    assert "below its competence bar" in s["verdict"]
    assert set(s["competence"]) == {"MA_g", "MB[reward changes, cue fixed]", "MB[cue changes with reward]"}
    rows = list(csv.DictReader((out / "records.csv").open()))
    assert {r["metric"] for r in rows} >= {"reached_cued_first", "competence_passes", "delta_l2_over_control",
                                           "objective_as_pointer"}

    # The cue-blind reference: its ratios by the same code, its gates, and the decision against it.
    ref = s["reference"]
    assert set(ref["delta_l2_over_control"]) == set(s["delta_l2_over_control"]) and ref["steps"] == 2048
    assert set(ref["competence"]) == {"MA_ref", "MB_ref[reward changes, cue fixed]", "MB_ref[cue changes with reward]"}
    for agent, per_seed in ((s, s["per_seed"]), (ref, ref["per_seed"])):
        ratio = [(p["reward changes, cue fixed"]["delta_l2"] - p["cue changes with reward"]["delta_l2"])
                 / p["control"]["delta_l2"] for p in per_seed]
        assert agent["per_seed_reward_minus_cue_over_control"] == pytest.approx(ratio)
    decision = s["objective_as_pointer"]
    assert decision["seeds"] == 2 and decision["test"].startswith("one-sided paired t over seeds")
    assert decision["difference"] == pytest.approx(
        sum(s["per_seed_reward_minus_cue_over_control"]) / 2 - sum(ref["per_seed_reward_minus_cue_over_control"]) / 2,
        abs=1e-4)
    assert "but below the competence bar: MA_g, " in decision["verdict"] and decision["verdict"] in printed
    ma_ref = next(m for m in map(load_checkpoint, (out / "stages").glob("train-*")) if m.reward.name == "collect:0")
    assert ma_ref.env.cue and ma_ref.env.fixed_cue == -1 and ma_ref.steps == 2048  # MA_g's env, random cues

    # Each fine-tune ran in its own env: the cue fixed to the old type, moved to the new one, or random (control);
    # MA_ref's three alike.
    cues = sorted(load_checkpoint(p).env.fixed_cue for p in (out / "stages").glob("finetune-*"))
    assert cues == [-1] * 4 + [0] * 4 + [1] * 4

    # Cached stages: the same command again (or a subset of its seeds) trains nothing and gives the same numbers.
    stages = sorted(p.name for p in (out / "stages").iterdir())
    assert len(stages) == 2 * 8  # per seed: MA_g and MA_ref, three fine-tunes each
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "stages").glob("*/model.safetensors")}
    assert main(["pointers", "--out", str(out), "--seeds", "0", "--base-steps", "4096", *tiny]) == 0
    assert "train: 2 jobs, 2 already done" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "stages").glob("*/model.safetensors")} == mtimes
    again = json.loads((out / "summary.json").read_text())
    assert again["per_seed"][0] == s["per_seed"][0] and again["reference"]["per_seed"][0] == ref["per_seed"][0]
    assert again["verdict"].startswith("undecided")  # one seed has no interval to decide on
    assert again["objective_as_pointer"]["verdict"].startswith("undecided")
    # Switched off: MA_g's jobs alone, reused, and no decision.
    assert main(["pointers", "--out", str(out), "--seeds", "0", "--base-steps", "4096", *tiny, "--no-reference"]) == 0
    assert "train: 1 jobs, 1 already done" in capsys.readouterr().out
    off = json.loads((out / "summary.json").read_text())
    assert "reference" not in off and "switched off" in off["objective_as_pointer"]["verdict"]


def test_pointers_refuses_a_directory_it_did_not_make(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("keep")
    assert main(["pointers", "--out", str(tmp_path), "--seeds", "0", "--base-steps", "512"]) == 2
    assert "not goalscope's" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]
    assert main(["pointers", "--out", str(tmp_path / "new"), "--arch", "nope"]) == 2  # checked before any write
    assert "unknown architecture 'nope'" in capsys.readouterr().err and not (tmp_path / "new").exists()


def test_pointers_take_the_maze_agent_and_budgets_from_an_experiment_file(tmp_path, capsys):
    exp = tmp_path / "ptr.toml"
    exp.write_text('name = "p"\n[env]\nsize = 5\nn_types = 2\nmax_steps = 16\nend_when_collected = true\n'
                   '[agent]\narch = "mlp"\n[ppo]\nn_envs = 8\nn_steps = 32\nlr = 0.002\n'
                   '[base]\nsteps = 1024\n[finetune]\nsteps = 256\n[pointers]\nreference_steps = 512\n')
    out = tmp_path / "ptr"
    assert main(["pointers", "--experiment", str(exp), "--out", str(out), "--seeds", "0", "--episodes", "16"]) == 0
    assert "chance 50.0%" in capsys.readouterr().out  # the file's 2 types, not the options' default 3
    ma = next(m for m in map(load_checkpoint, (out / "stages").glob("train-*")) if m.reward.name == "cued")
    assert ma.arch == "mlp" and ma.env.cue and ma.env.end_when_collected and ma.env.n_types == 2
    assert ma.steps == 1024 and ma.extra["ppo"]["lr"] == 0.002
    fts = [load_checkpoint(p) for p in (out / "stages").glob("finetune-*")]
    assert len(fts) == 6 and all(f.steps in (1024 + 256, 512 + 256) for f in fts)  # counting the parent's steps
    refs = [load_checkpoint(p) for p in (out / "stages").glob("train-*")]
    assert sorted((m.reward.name, m.steps) for m in refs) == [("collect:0", 512), ("cued", 1024)]  # [pointers]
    exp.write_text(exp.read_text().replace("[env]\n", '[env]\nfamily = "minigrid"\nid = "MiniGrid-Empty-5x5-v0"\n'))
    assert main(["pointers", "--experiment", str(exp), "--out", str(tmp_path / "p2")]) == 2
