import csv
import json
import math

from goalscope.agents.checkpoints import load_checkpoint
from goalscope.cli import main
from goalscope.analysis.pointers import pointer_verdict


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


def test_small_real_pointer_experiment(tmp_path, capsys):
    out = tmp_path / "ptr"
    code = main(["pointers", "--out", str(out), "--seeds", "0", "1", "--base-steps", "4096", "--finetune-steps", "1024",
                 "--episodes", "32", "--size", "5", "--n-types", "2", "--max-steps", "16"])
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
    assert {r["metric"] for r in rows} >= {"reached_cued_first", "competence_passes", "delta_l2_over_control"}

    # Each fine-tune ran in its own env: the cue fixed to the old type, moved to the new one, or random (control).
    cues = sorted(load_checkpoint(p).env.fixed_cue for p in (out / "stages").glob("finetune-*"))
    assert cues == [-1, -1, 0, 0, 1, 1]

    # Cached stages: the same command again (or a subset of its seeds) trains nothing and gives the same numbers.
    stages = sorted(p.name for p in (out / "stages").iterdir())
    assert len(stages) == 2 * 4  # per seed: MA_g and three fine-tunes
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "stages").glob("*/model.safetensors")}
    assert main(["pointers", "--out", str(out), "--seeds", "0", "--base-steps", "4096", "--finetune-steps", "1024",
                 "--episodes", "32", "--size", "5", "--n-types", "2", "--max-steps", "16"]) == 0
    assert "train: 1 jobs, 1 already done" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in (out / "stages").glob("*/model.safetensors")} == mtimes
    again = json.loads((out / "summary.json").read_text())
    assert again["per_seed"][0] == s["per_seed"][0]
    assert again["verdict"].startswith("undecided")  # one seed has no interval to decide on


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
                   '[base]\nsteps = 1024\n[finetune]\nsteps = 256\n')
    out = tmp_path / "ptr"
    assert main(["pointers", "--experiment", str(exp), "--out", str(out), "--seeds", "0", "--episodes", "16"]) == 0
    assert "chance 50.0%" in capsys.readouterr().out  # the file's 2 types, not the options' default 3
    ma = load_checkpoint(next((out / "stages").glob("train-*")))
    assert ma.arch == "mlp" and ma.env.cue and ma.env.end_when_collected and ma.env.n_types == 2
    assert ma.steps == 1024 and ma.extra["ppo"]["lr"] == 0.002
    fts = [load_checkpoint(p) for p in (out / "stages").glob("finetune-*")]
    assert len(fts) == 3 and all(f.steps == ma.steps + 256 for f in fts)  # a checkpoint counts its parent's steps
    exp.write_text(exp.read_text().replace("[env]\n", '[env]\nfamily = "minigrid"\nid = "MiniGrid-Empty-5x5-v0"\n'))
    assert main(["pointers", "--experiment", str(exp), "--out", str(tmp_path / "p2")]) == 2
