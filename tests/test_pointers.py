import csv
import json

from goalscope.agents.checkpoints import load_checkpoint
from goalscope.cli import main
from goalscope.analysis.pointers import pointer_verdict


def test_pointer_verdict_words():
    assert pointer_verdict((1.0, 0.9, 1.1), (3.0, 2.5, 3.5)).startswith("distinguishable")
    assert pointer_verdict((1.0, 0.9, 1.1), (1.05, 0.95, 1.2)).startswith("not distinguishable")
    nan = float("nan")
    assert pointer_verdict((1.0, nan, nan), (3.0, nan, nan)).startswith("undecided")  # one seed: no interval


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
