"""Issue 26: a run directory from someone else is data, never a write path.

One output policy for every writer: never through a symbolic link (file or directory) planted anywhere under the
run, only inside the run's real path, refused with one line naming the link; analysis commands hold the run's lock;
size fields bounded before allocation; damaged run files are one line, never a traceback. Every test here failed on
the code before the issue."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from goalscope.cli import main
from goalscope.outputs import _start_time

CFG = {"name": "tiny-policy", "seeds": [0], "workers": 1,
       "env": {"size": 5, "n_types": 3, "n_per_type": 1, "max_steps": 16},
       "ppo": {"n_envs": 16, "n_steps": 32},
       "base": {"steps": 512}, "finetune": {"steps": 512},
       "negate": {"alphas": [1.0], "retrain_steps": 512, "random_control": False},
       "superpose": {"methods": ["mean", "ties"], "fisher_samples": 16},
       "evaluation": {"episodes": 8, "bootstrap": 100}}


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_exit_2(code, err, fragment=""):
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("goalscope: error:"), err
    assert fragment in err, err


def tree(path: Path) -> dict:
    """Every entry under ``path`` (links as their target, files as their bytes)."""
    out = {}
    for p in sorted(path.rglob("*")):
        rel = str(p.relative_to(path))
        out[rel] = ("link", os.readlink(p)) if p.is_symlink() else p.read_bytes() if p.is_file() else "dir"
    return out


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished one-seed run (about 10 s)."""
    from goalscope.analysis.experiment import run_experiment
    from goalscope.program.config import experiment_from_dict

    out = tmp_path_factory.mktemp("policy") / "run"
    run_experiment(experiment_from_dict(CFG), out, log=lambda *a: None)
    return out


@pytest.fixture
def shared(finished, tmp_path):
    """A private copy of the finished run, and a directory outside it standing for the user's own files."""
    run_dir = tmp_path / "run"
    shutil.copytree(finished, run_dir, symlinks=True)
    home = tmp_path / "home"
    home.mkdir()
    (home / "notes.txt").write_text("precious")
    return run_dir, home


def _plant_dir_link(run_dir: Path, name: str, home: Path) -> Path:
    """``run_dir/name`` made a symbolic link to a directory of the user's (holding what it held, if anything)."""
    target = home / f"linked-{name.replace('/', '-')}"
    src = run_dir / name
    if src.exists():
        shutil.move(src, target)
    else:
        target.mkdir()
    src.symlink_to(target, target_is_directory=True)
    return target


# ------------------------------------------------------------------------------------------------------------------
# 1. Never through a symbolic link planted in the run: one test per writer


@pytest.mark.parametrize("name", ["index.html", "cosine.csv"])
def test_report_refuses_a_file_link_inside_report(shared, capsys, name):
    run_dir, home = shared
    (run_dir / "report").mkdir()
    (run_dir / "report" / name).symlink_to(home / "notes.txt")
    before = tree(home)
    code, _, err = run(capsys, "report", run_dir)
    one_line_exit_2(code, err, f"report/{name} is a symbolic link")
    assert tree(home) == before


def test_edits_refuses_a_linked_edits_directory(shared, capsys):
    run_dir, home = shared
    target = _plant_dir_link(run_dir, "edits", home)
    (target / "linearity.json").write_text("mine")
    (target / "records.csv").write_text("mine")
    before = tree(home)
    code, _, err = run(capsys, "edits", run_dir, "--parts", "targeted", "--fractions", "0.05",
                       "--random-directions", "1", "--episodes", "4")
    one_line_exit_2(code, err, "edits is a symbolic link")
    assert tree(home) == before


def test_edits_refuses_a_linked_stages_directory(shared, capsys):
    run_dir, home = shared
    _plant_dir_link(run_dir, "stages", home)
    before = tree(home)
    code, _, err = run(capsys, "edits", run_dir, "--parts", "linearity", "--t", "1", "--random-directions", "1",
                       "--episodes", "4")
    one_line_exit_2(code, err, "stages is a symbolic link")
    assert tree(home) == before


def test_steer_refuses_a_linked_steering_directory(shared, capsys):
    run_dir, home = shared
    target = _plant_dir_link(run_dir, "steering", home)
    (target / "summary.md").write_text("mine")
    before = tree(home)
    code, _, err = run(capsys, "steer", run_dir, "--obs-episodes", "2", "--episodes", "4", "--sites", "policy")
    one_line_exit_2(code, err, "steering is a symbolic link")
    assert tree(home) == before


def test_validate_refuses_a_linked_scorecard(shared, capsys):
    run_dir, home = shared
    (run_dir / "scorecard.md").symlink_to(home / "notes.txt")
    before, inside = tree(home), tree(run_dir)
    code, _, err = run(capsys, "validate", run_dir, "--episodes", "4")
    one_line_exit_2(code, err, "scorecard.md is a symbolic link")
    assert tree(home) == before and tree(run_dir) == inside


def test_run_refuses_a_link_in_its_run_directory(shared, tmp_path, capsys):
    run_dir, home = shared
    _plant_dir_link(run_dir, "heatmaps", home)
    before = tree(home)
    exp = tmp_path / "exp.toml"
    _write_toml(exp, CFG)
    code, _, err = run(capsys, "run", exp, "--out", run_dir)
    one_line_exit_2(code, err, "heatmaps is a symbolic link")
    assert tree(home) == before


def test_sweep_refuses_a_linked_stages_directory(tmp_path, capsys):
    sweep = tmp_path / "sweep.toml"
    _write_toml(sweep, CFG)
    sweep.write_text(sweep.read_text() + '[sweep]\nseeds = [0]\n[[sweep.variant]]\nname = "base"\n')
    out, home = tmp_path / "sw", tmp_path / "home"
    out.mkdir()
    home.mkdir()
    (out / "stages").symlink_to(home, target_is_directory=True)
    code, _, err = run(capsys, "sweep", sweep, "--out", out)
    one_line_exit_2(code, err, "stages is a symbolic link")
    assert list(home.iterdir()) == []


def test_pointers_refuses_a_linked_stages_directory(tmp_path, capsys):
    out, home = tmp_path / "pt", tmp_path / "home"
    out.mkdir()
    home.mkdir()
    (out / "stages").symlink_to(home, target_is_directory=True)
    code, _, err = run(capsys, "pointers", "--out", out, "--seeds", "0", "--base-steps", "512", "--finetune-steps",
                       "512", "--episodes", "4", "--size", "5", "--max-steps", "16", "--workers", "1")
    one_line_exit_2(code, err, "stages is a symbolic link")
    assert list(home.iterdir()) == []


def test_results_parquet_force_through_a_linked_parent_is_refused(shared, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    run_dir, home = shared
    (home / "x.parquet").write_bytes(b"PAR1 the user's own parquet file")
    (tmp_path / "plink").symlink_to(home, target_is_directory=True)
    code, _, err = run(capsys, "results", run_dir, "--parquet", tmp_path / "plink" / "x.parquet", "--force")
    one_line_exit_2(code, err, "plink is a symbolic link")
    assert (home / "x.parquet").read_bytes() == b"PAR1 the user's own parquet file"


def test_force_through_a_linked_parent_is_refused(tmp_path, capsys):
    real = tmp_path / "elsewhere"
    real.mkdir()
    tiny = ["--size", "5", "--n-types", "2", "--n-per-type", "1", "--max-steps", "16", "--n-envs", "16", "--quiet"]
    assert main(["train", "--reward", "collect:0", "--steps", "256", "--out", str(real / "new"), *tiny]) == 0
    before = tree(real)
    (tmp_path / "p1").mkdir()
    (tmp_path / "p1" / "plink").symlink_to(real, target_is_directory=True)
    code, _, err = run(capsys, "train", "--reward", "collect:1", "--steps", "256", "--out",
                       tmp_path / "p1" / "plink" / "new", "--force", *tiny)
    one_line_exit_2(code, err, "plink is a symbolic link")
    assert tree(real) == before


def test_guard_refuses_a_link_planted_after_the_start(tmp_path):
    """The per-write check: a link planted while a command runs is refused at the write, naming it."""
    from goalscope.errors import GoalscopeError
    from goalscope.outputs import atomic_write_bytes, confine, make_dir

    root, home = tmp_path / "run", tmp_path / "home"
    root.mkdir()
    home.mkdir()
    with confine(root):
        (root / "edits").symlink_to(home, target_is_directory=True)
        with pytest.raises(GoalscopeError, match="edits is a symbolic link"):
            atomic_write_bytes(root / "edits" / "profiles" / "a.json", b"{}")
        with pytest.raises(GoalscopeError, match="edits is a symbolic link"):
            make_dir(root / "edits" / "profiles")
        (root / "f.json").symlink_to(home / "mine.json")
        with pytest.raises(GoalscopeError, match="f.json is a symbolic link"):
            atomic_write_bytes(root / "f.json", b"{}")
    assert list(home.iterdir()) == []


def _write_toml(path: Path, cfg: dict) -> None:
    """``cfg`` (top-level values and one level of tables) as an experiment TOML file."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in cfg.items() if not isinstance(v, dict)]
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines += [f"[{k}]", *(f"{kk} = {json.dumps(vv)}" for kk, vv in v.items())]
    path.write_text("\n".join(lines) + "\n")
