"""Smaller findings of issue 38 (item 7): stage walls kept across resumes, --quick says what it runs."""

import json

from goalscope.analysis.effects.experiment import run_experiment
from goalscope.cli import main
from goalscope.program.config import experiment_from_dict

TINY = {"name": "walls", "seeds": [0], "workers": 1, "env": {"size": 5, "n_types": 3, "n_per_type": 1, "max_steps": 16},
        "ppo": {"n_envs": 8, "n_steps": 32}, "base": {"steps": 512}, "finetune": {"steps": 256},
        "negate": {"enabled": False}, "superpose": {"methods": ["mean_abs"]},
        "evaluation": {"episodes": 8, "bootstrap": 100}}


def test_stage_walls_are_kept_across_resumes(tmp_path):
    """A resumed run used to print "train 0.0, finetune 0.0": nothing of them ran in that session."""
    cfg, run = experiment_from_dict(TINY), tmp_path / "run"
    first = run_experiment(cfg, run, log=lambda *a: None)["stage_wall_s"]
    assert first["train"] > 0 and first["finetune"] > 0
    again = run_experiment(cfg, run, log=lambda *a: None)["stage_wall_s"]
    assert (again["train"], again["finetune"]) == (first["train"], first["finetune"])
    # Killed before any session finished (no summary.json): the finished stages' own jobs' time, not 0.
    (run / "summary.json").unlink()
    summary = run_experiment(cfg, run, log=lambda *a: None)
    assert summary["stage_wall_s"]["train"] == summary["job_wall_s"]["train"] > 0


def test_quick_says_what_it_runs_before_starting(tmp_path, capsys):
    toml = tmp_path / "t.toml"
    toml.write_text('name = "t"\nseeds = [0, 1]\nworkers = 1\n[env]\nsize = 5\nn_types = 3\nmax_steps = 16\n'
                    '[ppo]\nn_envs = 8\nn_steps = 32\n[base]\nsteps = 512\n[finetune]\nsteps = 256\n'
                    '[negate]\nenabled = false\n[superpose]\nmethods = ["mean_abs"]\n[evaluation]\nepisodes = 8\n'
                    'bootstrap = 100\n')
    assert main(["run", str(toml), "--quick", "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    first = out.splitlines()[0]
    assert first.startswith("--quick: 1 seed, MA 512 steps, MBs 256 steps") and "4 jobs" in first, first
    assert json.loads((tmp_path / "run" / "experiment.json").read_text())["seeds"] == [0]


def test_an_installed_library_whose_import_fails_says_its_own_error(monkeypatch):
    """procgen2 downgraded numpy under pandas 3: `load_run(...).records` said "pip install pandas" (issue 38)."""
    import builtins

    import pytest

    from goalscope.errors import GoalscopeError, import_failure
    from goalscope.report import run as report_run

    real = builtins.__import__

    def broken(name, *a, **k):
        if name == "pandas":
            raise ImportError("numpy.core.multiarray failed to import")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", broken)
    with pytest.raises(GoalscopeError, match="pandas is installed but its import failed .*multiarray failed"):
        report_run._pandas()
    monkeypatch.setattr(builtins, "__import__", real)
    absent = ModuleNotFoundError("No module named 'crafter'", name="crafter")
    assert import_failure("crafter", "X needs crafter", "pip install crafter", absent) == "X needs crafter: pip install crafter"
