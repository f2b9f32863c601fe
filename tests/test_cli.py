import json
import subprocess
import sys

import pytest

from goalscope.cli import main

TINY = ["--size", "5", "--n-types", "2", "--n-per-type", "1", "--max-steps", "16", "--n-envs", "16", "--quiet"]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def ma(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ma"
    assert main(["train", "--reward", "collect:0", "--steps", "2048", "--out", str(out), *TINY]) == 0
    return out


def test_train_finetune_eval_end_to_end(ma, tmp_path, capsys):
    code, out, _ = run(capsys, "finetune", ma, "--reward", "collect:1", "--steps", "1024", "--out", tmp_path / "mb", "--n-envs", "16", "--quiet")
    assert code == 0 and "fine-tuned" in out
    meta = json.loads((tmp_path / "mb" / "meta.json").read_text())
    assert meta["parent"] == str(ma) and meta["reward"]["name"] == "collect:1" and meta["steps"] == 2048 + 1024
    code, out, _ = run(capsys, "eval", tmp_path / "mb", "--reward", "collect:0", "--episodes", "32", "--json")
    s = json.loads(out)
    assert code == 0 and s["reward"] == "collect:0" and s["trained_on"] == "collect:1" and len(s["counts_mean"]) == 2
    assert 0 <= s["fraction_of_oracle"] <= 1.5


@pytest.mark.parametrize("argv, message", [
    (["eval", "{ma}", "--reward", "collect:9"], "object type '9' does not exist"),
    (["eval", "{ma}", "--reward", "1,0,0"], "3 weights but the env has 2"),
    (["eval", "{ma}", "--reward", "eat:1"], "cannot read term"),
    (["eval", "{tmp}/missing"], "does not exist"),
    (["eval", "{tmp}"], "not a goalscope checkpoint"),
    (["train", "--reward", "collect:0", "--out", "{ma}", *TINY], "already exists; pass --force"),
    (["train", "--reward", "collect:0", "--out", "{tmp}/x", "--arch", "transformer"], "unknown architecture 'transformer'"),
    (["train", "--reward", "collect:0", "--out", "{tmp}/x", "--arch-config", '{"depth": 3}'], "unknown field 'depth'"),
    (["train", "--reward", "collect:0", "--out", "{tmp}/x", "--size", "8"], "env.size must be odd"),
    (["finetune", "{tmp}/missing", "--reward", "collect:1", "--out", "{tmp}/y"], "does not exist"),
])
def test_bad_input_is_one_line_and_exit_2(ma, tmp_path, capsys, argv, message):
    before = sorted(p.name for p in ma.iterdir())
    argv = [a.replace("{ma}", str(ma)).replace("{tmp}", str(tmp_path)) for a in argv]
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("goalscope: error:") and message in err, err
    assert "Traceback" not in err
    assert sorted(p.name for p in ma.iterdir()) == before


def test_corrupt_checkpoint_via_cli(ma, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in ma.iterdir():
        if f.is_file():
            (bad / f.name).write_bytes(f.read_bytes())
    (bad / "model.safetensors").write_bytes(b"\x00garbage")
    code, _, err = run(capsys, "eval", bad)
    assert code == 2 and "corrupt or truncated" in err


def test_help_teaches_the_workflow():
    out = subprocess.run([sys.executable, "-m", "goalscope.cli", "--help"], capture_output=True, text=True).stdout
    for word in ("train", "finetune", "eval", "collect:0", "MA", "MB"):
        assert word in out


def test_every_command_explains_itself_and_shows_defaults():
    from goalscope.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, __import__("argparse")._SubParsersAction))
    for name, p in sub.choices.items():
        assert p.description, f"`goalscope {name}` has no description"
        for action in p._actions:
            assert action.help, f"`goalscope {name} {action.dest}` has no help"
    assert "(default: 7)" in sub.choices["train"].format_help()  # the default experiment's maze
    out = subprocess.run([sys.executable, "-m", "goalscope.cli", "--version"], capture_output=True, text=True).stdout
    assert out.startswith("goalscope ")


def test_eval_of_a_zip_points_to_the_importer(tmp_path, capsys):
    (tmp_path / "ppo.zip").write_bytes(b"PK")
    code, _, err = run(capsys, "eval", tmp_path / "ppo.zip")
    assert code == 2 and "goalscope import-sb3" in err
