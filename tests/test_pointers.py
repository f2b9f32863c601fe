import json

from goalscope.cli import main
from goalscope.analysis.pointers import pointer_verdict


def test_pointer_verdict_words():
    assert pointer_verdict((1.0, 0.9, 1.1), (3.0, 2.5, 3.5)).startswith("distinguishable")
    assert pointer_verdict((1.0, 0.9, 1.1), (1.05, 0.95, 1.2)).startswith("not distinguishable")


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
    assert "verdict" in capsys.readouterr().out
    assert main(["pointers", "--out", str(out), "--seeds", "0"]) == 2  # never overwrites without --force
