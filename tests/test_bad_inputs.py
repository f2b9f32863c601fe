"""Hostile-but-fair input, as the reliability review tried it: every case ends in one line and exit 2 (or a clean
exit), and nothing of the user's is lost. One test per reported case, plus property-based fuzzing of meta.json."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from goalscope.agents.checkpoints import load_checkpoint
from goalscope.cli import main
from goalscope.errors import CheckpointError, GoalscopeError, TrainingDiverged
from goalscope.outputs import MARKER, Lock

TINY = ["--size", "5", "--n-types", "2", "--n-per-type", "1", "--max-steps", "16", "--n-envs", "16", "--quiet"]


def run(capsys, *argv):
    try:
        code = main([str(a) for a in argv])
    except SystemExit as e:  # argparse's usage errors
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_exit_2(code, err, fragment=""):
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("goalscope: error:"), err
    assert "Traceback" not in err
    assert fragment in err, err


def tree(path: Path) -> dict:
    """Every file under ``path`` with its bytes: what 'nothing was lost' is checked against."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def ma(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ma"
    assert main(["train", "--reward", "collect:0", "--steps", "1024", "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture
def ckpt_copy(ma, tmp_path):
    """A private copy of MA to damage."""
    dst = tmp_path / "copy"
    dst.mkdir()
    for name in ("meta.json", "model.safetensors"):
        (dst / name).write_bytes((ma / name).read_bytes())
    return dst


# ------------------------------------------------------------------------------------------------------------------
# --force never destroys what goalscope did not make


def test_force_on_the_working_directory_is_refused(tmp_path, monkeypatch, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    monkeypatch.chdir(tmp_path)
    for out in (".", str(tmp_path), ".."):
        code, _, err = run(capsys, "train", "--reward", "collect:0", "--steps", "512", "--out", out, "--force", *TINY)
        one_line_exit_2(code, err, "working directory")
    assert (tmp_path / "notes.txt").read_text() == "mine" and [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_force_on_a_directory_goalscope_did_not_make_is_refused(tmp_path, capsys):
    thesis = tmp_path / "some_dir" / "data" / "thesis.tex"
    thesis.parent.mkdir(parents=True)
    thesis.write_text("\\chapter{Everything}")
    for cmd in (["train", "--reward", "collect:0", "--steps", "512", *TINY, "--force"],
                ["pointers", "--seeds", "0", "--base-steps", "512", "--finetune-steps", "512"]):
        code, _, err = run(capsys, *cmd, "--out", tmp_path / "some_dir")
        one_line_exit_2(code, err, "not goalscope's")
    assert thesis.read_text() == "\\chapter{Everything}"


def test_force_keeps_user_files_put_inside_a_checkpoint(ma, tmp_path, capsys):
    ck = tmp_path / "ck"
    ck.mkdir()
    for f in ma.iterdir():
        if f.is_file():
            (ck / f.name).write_bytes(f.read_bytes())
    (ck / "analysis.ipynb").write_text("{}")
    before = tree(ck)
    code, _, err = run(capsys, "train", "--reward", "collect:0", "--steps", "512", "--out", ck, "--force", *TINY)
    one_line_exit_2(code, err, "analysis.ipynb")
    assert tree(ck) == before


def test_force_replaces_a_checkpoint_only_after_the_new_one_is_complete(ma, tmp_path, capsys, monkeypatch):
    ck = tmp_path / "ck"
    assert main(["train", "--reward", "collect:0", "--steps", "512", "--out", str(ck), *TINY]) == 0
    before = tree(ck)
    import goalscope.rl.ppo as training

    def diverges(*args, log_dir=None, **kw):
        (Path(log_dir) / "train_log.csv").write_text("half a log")  # what a failing run leaves behind
        raise TrainingDiverged("policy logits became NaN at step 96")

    monkeypatch.setattr(training, "train_new", diverges)
    code, _, err = run(capsys, "train", "--reward", "collect:1", "--steps", "512", "--out", ck, "--force", *TINY)
    one_line_exit_2(code, err, "NaN")
    assert tree(ck) == before  # the old checkpoint is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]  # no staging or lock left behind
    # A failed first train leaves nothing, so the same command needs no --force afterwards.
    code, _, err = run(capsys, "train", "--reward", "collect:1", "--steps", "512", "--out", tmp_path / "new", *TINY)
    assert code == 2 and not (tmp_path / "new").exists()
    monkeypatch.undo()
    # And a successful --force does replace it, leaving goalscope's marker.
    assert main(["train", "--reward", "collect:1", "--steps", "512", "--out", str(ck), "--force", *TINY]) == 0
    assert load_checkpoint(ck).reward.name == "collect:1" and (ck / MARKER).exists()


def test_two_trains_on_one_out_cannot_interleave(tmp_path, capsys):
    out = tmp_path / "ma"
    with Lock(tmp_path / ".ma.lock"):  # another goalscope process is writing there
        code, _, err = run(capsys, "train", "--reward", "collect:0", "--steps", "512", "--out", out, *TINY)
    one_line_exit_2(code, err, "in use by another goalscope process")
    assert not out.exists()


def test_stale_lock_of_an_unrelated_live_process_names_the_command_that_clears_it(tmp_path):
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        (tmp_path / ".lock").write_text(str(sleeper.pid))  # the old format: a pid alone, now some other program's
        with pytest.raises(GoalscopeError, match=f"not a goalscope process .* rm {tmp_path / '.lock'}"):
            with Lock(tmp_path / ".lock"):
                pass
        # A lock naming a live pid with another start time is a reused pid: stale, taken over.
        (tmp_path / ".lock").write_text(f"{sleeper.pid} 1")
        with Lock(tmp_path / ".lock"):
            pass
    finally:
        sleeper.kill()


def test_superpose_never_overwrites_weights(ma, tmp_path, capsys):
    mb = tmp_path / "mb"
    assert main(["finetune", str(ma), "--reward", "collect:1", "--steps", "512", "--out", str(mb), "--n-envs", "16",
                 "--quiet"]) == 0
    weights = (ma / "model.safetensors").read_bytes()
    for extra in ([], ["--force"]):
        code, _, err = run(capsys, "superpose", ma, mb, "--out", ma / "model.safetensors", *extra)
        one_line_exit_2(code, err)
    assert (ma / "model.safetensors").read_bytes() == weights
    code, _, err = run(capsys, "superpose", ma, mb, "--out", tmp_path)  # a directory
    one_line_exit_2(code, err, "is a directory")
    heat = tmp_path / "heat.safetensors"
    assert run(capsys, "superpose", ma, mb, "--out", heat)[0] == 0
    code, _, err = run(capsys, "superpose", ma, mb, "--out", heat)
    one_line_exit_2(code, err, "pass --force")
    assert run(capsys, "superpose", ma, mb, "--out", heat, "--force")[0] == 0
    # A heatmap has the weights' names, shapes and dtypes, but is never loaded as weights.
    fake = tmp_path / "fake"
    fake.mkdir()
    (fake / "meta.json").write_bytes((ma / "meta.json").read_bytes())
    (fake / "model.safetensors").write_bytes(heat.read_bytes())
    code, _, err = run(capsys, "eval", fake, "--episodes", "4")
    one_line_exit_2(code, err, "holds a goalscope heatmap")


# ------------------------------------------------------------------------------------------------------------------
# Loading a file never imports code the file names


def test_loading_a_checkpoint_that_names_a_module_imports_nothing(ckpt_copy):
    meta = json.loads((ckpt_copy / "meta.json").read_text())
    meta["env"] = {"family": "gym_events", "id": "this:Anything-v0", "n_types": 2, "max_steps": 16}
    (ckpt_copy / "meta.json").write_text(json.dumps(meta))
    code = ("import sys\nfrom goalscope.cli import main\nrc = main(['eval', sys.argv[1]])\n"
            "print('imported' if 'this' in sys.modules else 'clean')\nsys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", code, str(ckpt_copy)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Beautiful is better than ugly" not in proc.stdout + proc.stderr  # `import this` prints the Zen
    assert proc.stdout.strip().splitlines()[-1] == "clean"
    assert "--trust-module this" in proc.stderr and proc.stderr.count("\n") == 1


# ------------------------------------------------------------------------------------------------------------------
# The table of inputs that used to end in a traceback


def _meta_edit(key, value):
    def edit(d):
        d[key] = value
    return edit


DEEP_JSON = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize("damage, fragment", [
    (lambda d: ((d / "meta.json").unlink(), (d / "meta.json").mkdir()), "is a directory where a file should be"),
    (lambda d: ((d / "model.safetensors").unlink(), (d / "model.safetensors").mkdir()), "is a directory"),
    (lambda d: _edit_meta(d, _meta_edit("steps", float("inf"))), "'steps' must be an integer"),
    (lambda d: _edit_meta_text(d, '"steps": 1e400'), "'steps' must be an integer"),
    (lambda d: _edit_meta(d, _meta_edit("arch", ["mlp"])), "'arch' must be a str"),
    (lambda d: _edit_meta(d, _meta_edit("arch_config", {"hidden": 20_000_000})), "parameters, more than"),
    (lambda d: _edit_meta(d, _meta_edit("steps", 10**18)), "'steps' must be between"),
    (lambda d: _edit_meta(d, _meta_edit("reward", {"name": "x", "weights": [float("nan"), 0.0]})), "NaN"),
    (lambda d: (d / "meta.json").write_text(DEEP_JSON), "nested"),
    (lambda d: _nan_weights(d), "NaN or inf"),
])
def test_damaged_checkpoints_are_one_line(ckpt_copy, capsys, damage, fragment):
    damage(ckpt_copy)
    code, _, err = run(capsys, "eval", ckpt_copy, "--episodes", "4")
    one_line_exit_2(code, err, fragment)


def _edit_meta(d, fn):
    meta = json.loads((d / "meta.json").read_text())
    fn(meta)
    (d / "meta.json").write_text(json.dumps(meta))


def _edit_meta_text(d, replacement):
    meta = json.loads((d / "meta.json").read_text())
    text = json.dumps(meta).replace(f'"steps": {meta["steps"]}', replacement)
    (d / "meta.json").write_text(text)


def _nan_weights(d):
    from safetensors.torch import load_file

    state = load_file(d / "model.safetensors")
    first = next(iter(state))
    state[first] = torch.full_like(state[first], float("nan"))
    save_file(state, d / "model.safetensors", metadata={"format": "goalscope-checkpoint/1"})


@pytest.mark.parametrize("toml, fragment", [
    ("", "is empty"),
    ("a = " + "[" * 100_000 + "]" * 100_000, "nested"),
    ("x." * 50_000 + "y = 1", "nested"),
    ('name = "t"\n[evaluation]\nbootstrap = 1000000000000', "evaluation.bootstrap must be between"),
    ('name = "t"\n[base]\nsteps = 1000000000000000000', "base.steps must be between"),
    ('name = "t"\n[base]\nsteps = 1e400', "must be an integer"),
    ('name = "t"\n[base]\nreward = "1e999*collect:0"', "NaN or infinite"),
    ('name = "t"\n[agent]\narch = "mlp"\n[agent.config]\nhidden = [20000000]', "parameters, more than"),
])
def test_bad_experiment_files_are_one_line_before_anything_runs(tmp_path, capsys, toml, fragment):
    exp = tmp_path / "exp.toml"
    exp.write_text(toml)
    code, _, err = run(capsys, "run", exp, "--out", tmp_path / "run")
    one_line_exit_2(code, err, fragment)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("make_out, fragment", [
    (lambda t: t / "link", "symbolic link"),  # a link to a real directory
    (lambda t: t / "dangling", "symbolic link"),
    (lambda t: Path("/proc/goalscope-cannot-write-here"), "/proc"),
    (lambda t: t / "file.txt", "is a file"),
])
def test_bad_output_paths_are_one_line(tmp_path, capsys, make_out, fragment):
    (tmp_path / "real").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    (tmp_path / "file.txt").write_text("mine")
    code, _, err = run(capsys, "train", "--reward", "collect:0", "--steps", "512", "--out", make_out(tmp_path), *TINY)
    one_line_exit_2(code, err, fragment)
    assert (tmp_path / "file.txt").read_text() == "mine" and list((tmp_path / "real").iterdir()) == []


def test_report_out_on_a_file_or_a_foreign_directory(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "page.html").write_text("mine")
    code, _, err = run(capsys, "report", tmp_path / "run", "--out", tmp_path / "page.html")
    one_line_exit_2(code, err, "is a file")
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "index.html").write_text("my homepage")
    code, _, err = run(capsys, "report", tmp_path / "run", "--out", tmp_path / "site")
    one_line_exit_2(code, err, "did not write")
    assert (tmp_path / "site" / "index.html").read_text() == "my homepage"


@pytest.mark.parametrize("summary, fragment", [({}, "is damaged"), ({"experiment": "x", "ra": 3, "rbs": 5, "seeds": [0]},
                                                                    "is damaged"), ("[" * 50_000, "nested")])
def test_results_on_a_damaged_summary(tmp_path, capsys, summary, fragment):
    (tmp_path / "summary.json").write_text(summary if isinstance(summary, str) else json.dumps(summary))
    code, _, err = run(capsys, "results", tmp_path)
    one_line_exit_2(code, err, fragment)


def test_damaged_stage_files(tmp_path):
    from goalscope.program.jobs import job_status, load_profile

    stage = tmp_path / "stages" / "train-abc"
    stage.mkdir(parents=True)
    (stage / "done.json").write_text('{"status": "ok", ')
    assert job_status(tmp_path, "train-abc")["status"] == "failed"  # so the next run redoes it
    (stage / "profile.json").write_text('{"counts": "many"}')
    with pytest.raises(GoalscopeError, match="is damaged .* delete"):
        load_profile(tmp_path, "train-abc")


def test_full_disk_is_one_line_and_loses_nothing(ma, tmp_path, capsys, monkeypatch):
    import errno

    ck = tmp_path / "ck"
    assert main(["train", "--reward", "collect:0", "--steps", "512", "--out", str(ck), *TINY]) == 0
    before = tree(ck)

    def no_space(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", no_space)
    code, _, err = run(capsys, "train", "--reward", "collect:1", "--steps", "512", "--out", ck, "--force", *TINY)
    one_line_exit_2(code, err, "No space left on device")
    monkeypatch.undo()
    assert tree(ck) == before


def test_ray_start_failure_is_one_line():
    # In a child process: Ray imported into the test process keeps the auth mode it read first, and
    # tests/test_ray.py sets its own (token auth with the test's token) before Ray is imported there.
    if importlib.util.find_spec("ray") is None:
        pytest.skip("ray is not installed")
    code = """
import ray
from goalscope.errors import GoalscopeError
from goalscope.program.executors import RayExecutor

def broken(**kw):
    raise Exception("Failed to start the GCS server")  # what Ray raises, bare

ray.is_initialized = lambda: False
ray.init = broken
try:
    RayExecutor().run(len, [[1]])
except GoalscopeError as e:
    print(e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "could not start or reach a private local Ray instance: Failed to start" in out.stdout, out.stderr[-2000:]


def test_results_into_a_closed_pipe_is_quiet(tmp_path):
    summary = {"experiment": "x", "ra": "collect:0", "rbs": ["collect:1"], "seeds": [0],
               "cosine": {f"pair{i}": 0.1 for i in range(20_000)}}  # far more than a pipe buffer
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    proc = subprocess.run(f"{sys.executable} -m goalscope.cli results {tmp_path} | head -c 20", shell=True,
                          capture_output=True, text=True, timeout=120)
    assert len(proc.stdout) == 20
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr


def test_smaller_cases(ma, tmp_path, capsys):
    code, _, err = run(capsys, "train", "--reward", "collect:0", "--steps", str(10**18), "--out", tmp_path / "x", *TINY)
    assert code == 2 and "Traceback" not in err
    code, _, err = run(capsys, "train", "--reward", "nan,0", "--out", tmp_path / "x", *TINY)
    one_line_exit_2(code, err, "NaN or infinite")
    # --force with a bad stage name writes nothing into a new run directory.
    exp = tmp_path / "exp.toml"
    exp.write_text('name = "t"\nseeds = [0]\n[base]\nsteps = 512\n')
    code, _, err = run(capsys, "run", exp, "--out", tmp_path / "run", "--force", "bogus")
    one_line_exit_2(code, err, "--force takes one of")
    assert not (tmp_path / "run").exists()
    # A damaged experiment.json is not met with advice to rerun the command that just failed.
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "experiment.json").write_text("{damaged")
    code, _, err = run(capsys, "run", exp, "--out", tmp_path / "run")
    one_line_exit_2(code, err, "restore it from a backup, or use a new --out")


# ------------------------------------------------------------------------------------------------------------------
# Property-based: any edit of meta.json loads or is a one-line CheckpointError

_json_values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=6)),
                            lambda kids: st.one_of(st.lists(kids, max_size=3), st.dictionaries(st.text(max_size=4), kids, max_size=3)),
                            max_leaves=8)
_meta_keys = st.sampled_from(["format", "arch", "arch_config", "env", "reward", "steps", "seed", "parent", "extra"])
_sub_keys = st.sampled_from(["hidden", "channels", "size", "n_types", "family", "id", "weights", "name", "step_cost",
                             "max_steps", "layout", "activation"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(_meta_keys, st.one_of(st.none(), _sub_keys), _json_values), min_size=1, max_size=3))
def test_any_meta_json_loads_or_is_one_line(ma, tmp_path_factory, edits):
    d = tmp_path_factory.mktemp("fuzz")
    (d / "model.safetensors").write_bytes((ma / "model.safetensors").read_bytes())
    meta = json.loads((ma / "meta.json").read_text())
    for key, sub, value in edits:
        if sub is not None and isinstance(meta.get(key), dict):
            meta[key][sub] = value
        else:
            meta[key] = value
    (d / "meta.json").write_text(json.dumps(meta))
    try:
        load_checkpoint(d)
    except CheckpointError as e:
        assert str(e) and "\n" not in str(e)


def test_a_swap_killed_halfway_loses_nothing(tmp_path):
    from goalscope.outputs import replace_dir

    out = tmp_path / "ck"
    with replace_dir(out, False, "checkpoint directory", "checkpoint") as staging:
        (staging / "meta.json").write_text("old result")
    # A kill between moving the old result aside and moving the new one in, with a half-built staging directory:
    os.replace(out, tmp_path / ".ck.old-999999999")
    (tmp_path / ".ck.new-999999998").mkdir()
    with pytest.raises(RuntimeError):
        with replace_dir(out, True, "checkpoint directory", "checkpoint"):
            raise RuntimeError("the retrain fails")
    assert (out / "meta.json").read_text() == "old result"  # put back, and kept through the failed retrain
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


# ------------------------------------------------------------------------------------------------------------------
# Issue 37, finding 3: env settings in a checkpoint bounded before an env allocates on their word


def _minigrid_ckpt(tmp_path, env_id, kwargs, **fields):
    pytest.importorskip("minigrid")
    from goalscope.agents.checkpoints import Checkpoint, save_checkpoint
    from goalscope.agents.registry import build_agent
    from goalscope.envs.events import GymEventsConfig
    from goalscope.envs.rewards import parse_reward

    cfg = GymEventsConfig(id=env_id, kwargs=kwargs, **fields)
    model = build_agent("cnn", cfg.obs_shape, cfg.n_actions, {})
    out = tmp_path / "ck"
    save_checkpoint(Checkpoint("cnn", {}, cfg, parse_reward("collect:0", cfg.n_types), model.state_dict()), out)
    return out


@pytest.mark.parametrize("command", [["eval", "--episodes", "2"], ["video", "--episodes", "1"]])
@pytest.mark.parametrize("size, fragment", [(100_000, "env.kwargs.size must be between 4 and 63"),
                                            (5_000, "env.kwargs.size must be between 4 and 63")])
def test_a_huge_grid_in_a_checkpoints_env_is_one_line(tmp_path, capsys, command, size, fragment):
    from goalscope.envs.minigrid_objects import MINIGRID_ID

    ck = _minigrid_ckpt(tmp_path, MINIGRID_ID, {"size": 7, "max_steps": 16}, n_types=3, max_steps=16)
    _edit_meta(ck, lambda m: m["env"]["kwargs"].update(size=size))  # 5,000: 25M cells per env, gigabytes
    extra = ["--out", tmp_path / "v.gif"] if command[0] == "video" else []
    code, _, err = run(capsys, command[0], ck, *command[1:], *extra)
    one_line_exit_2(code, err, fragment)


def test_an_env_that_runs_out_of_memory_is_one_line(tmp_path, capsys):
    """A third-party env goalscope cannot bound (a stock MiniGrid room 100,000 wide): its MemoryError is one line."""
    ck = _minigrid_ckpt(tmp_path, "MiniGrid-Empty-5x5-v0", {"size": 5, "max_steps": 16}, n_types=1, max_steps=16,
                        events="minigrid", obs="minigrid", event_types=["goal"])
    _edit_meta(ck, lambda m: m["env"]["kwargs"].update(size=100_000))
    code, _, err = run(capsys, "eval", ck, "--episodes", "2")
    one_line_exit_2(code, err, "out of memory")
