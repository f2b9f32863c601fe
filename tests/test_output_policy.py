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

import numpy as np
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
    from goalscope.analysis.effects.experiment import run_experiment
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


def test_a_link_planted_between_the_check_and_the_write_is_not_followed(tmp_path, monkeypatch):
    """The second layer: below a confined root the directory is opened component by component with O_NOFOLLOW, so
    even a link the per-write check did not see (planted after it looked) is never written through."""
    import goalscope.outputs as outputs
    from goalscope.errors import GoalscopeError

    root, home = tmp_path / "run", tmp_path / "home"
    (root / "edits").mkdir(parents=True)
    home.mkdir()
    with outputs.confine(root):
        monkeypatch.setattr(outputs, "guard", lambda path, root=None: path)  # the check ran before the link
        (root / "edits" / "profiles").symlink_to(home, target_is_directory=True)
        with pytest.raises(GoalscopeError, match="profiles is a symbolic link"):
            outputs.atomic_write_bytes(root / "edits" / "profiles" / "a.json", b"{}")
        outputs.atomic_write_bytes(root / "edits" / "new" / "b.json", b"{}")  # made on the way, no link: written
    assert list(home.iterdir()) == []
    assert (root / "edits" / "new" / "b.json").read_bytes() == b"{}"
    assert not list(root.rglob("*.tmp"))


def _write_toml(path: Path, cfg: dict) -> None:
    """``cfg`` (top-level values and one level of tables) as an experiment TOML file."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in cfg.items() if not isinstance(v, dict)]
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines += [f"[{k}]", *(f"{kk} = {json.dumps(vv)}" for kk, vv in v.items())]
    path.write_text("\n".join(lines) + "\n")


# ------------------------------------------------------------------------------------------------------------------
# 2. Analysis commands refuse a run a live process holds (it has not finished); edits took it only for its jobs


@pytest.fixture
def held(shared):
    """The run locked by a live process (as `goalscope run` holds it while it works)."""
    run_dir, _ = shared
    proc = subprocess.Popen(["sleep", "120"])
    try:
        (run_dir / ".lock").write_text(f"{proc.pid} {_start_time(proc.pid)}")
        yield run_dir
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("argv", [
    ["edits", "{run}", "--parts", "targeted", "--fractions", "0.05", "--random-directions", "1", "--episodes", "4"],
    ["decode", "{run}"],
    ["steer", "{run}", "--obs-episodes", "2", "--episodes", "4", "--sites", "policy"],
    ["validate", "{run}", "--episodes", "4"],
    ["report", "{run}"],
    ["results", "{run}"],
])
def test_analysis_commands_refuse_a_run_that_is_still_being_written(held, capsys, argv):
    before = tree(held)
    code, _, err = run(capsys, *[a.format(run=held) for a in argv])
    one_line_exit_2(code, err, "has not finished")
    assert tree(held) == before


# ------------------------------------------------------------------------------------------------------------------
# 3. Size fields are bounded before anything is allocated, with the limit named


@pytest.mark.parametrize("section, key, value, fragment", [
    ("ppo", "n_envs", 10**8, "ppo.n_envs must be between 1 and 16,384"),
    ("ppo", "n_steps", 10**8, "ppo.n_steps must be between 1 and 100,000"),
    ("ppo", None, {"n_envs": 64, "n_steps": 100_000}, "more than the rollout buffer limit of 268,435,456"),
    ("ppo", "epochs", 10**9, "ppo.epochs must be between 1 and 1,000"),
    ("negate", "random_directions", 10**6, "negate.random_directions must be between 1 and 100"),
    ("finetune", "seeds_per_ma", 10**5, "finetune.seeds_per_ma must be between 1 and 100"),
    ("env", "max_steps", 10**9, "env.max_steps must be an integer in 1..100000"),
])
def test_size_fields_are_bounded_with_the_limit_named(section, key, value, fragment):
    from goalscope.errors import ConfigError
    from goalscope.program.config import experiment_from_dict

    cfg = json.loads(json.dumps(CFG))
    cfg[section].update(value if key is None else {key: value})
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(")):
        experiment_from_dict(cfg)


def test_a_huge_size_is_one_line_before_anything_runs(tmp_path, capsys):
    exp = tmp_path / "exp.toml"
    _write_toml(exp, {**CFG, "ppo": {"n_envs": 16, "n_steps": 10**8}})
    code, _, err = run(capsys, "run", exp, "--out", tmp_path / "run")
    one_line_exit_2(code, err, "ppo.n_steps must be between 1 and 100,000")
    assert not (tmp_path / "run").exists()
    code, _, err = run(capsys, "train", "--reward", "collect:0", "--n-envs", "100000000", "--out", tmp_path / "ma")
    one_line_exit_2(code, err, "ppo.n_envs must be between 1 and 16,384")
    assert not (tmp_path / "ma").exists()


def test_a_sweep_variant_with_a_huge_size_is_refused(tmp_path):
    from goalscope.errors import ConfigError
    from goalscope.program.sweep import load_sweep

    sweep = tmp_path / "sweep.toml"
    _write_toml(sweep, CFG)
    sweep.write_text(sweep.read_text() + '[sweep]\nseeds = [0]\n[[sweep.variant]]\nname = "big"\n'
                                         '"ppo.n_envs" = 100000000\n')
    with pytest.raises(ConfigError, match="n_envs must be between 1 and 16,384"):
        load_sweep(sweep)


def test_pointers_seeds_beyond_32_bits_are_refused(tmp_path, capsys):
    code, _, err = run(capsys, "pointers", "--out", tmp_path / "pt", "--seeds", "99999999999999999999")
    assert code == 2 and "from 0 to 4,294,967,295" in err and "Traceback" not in err
    assert not (tmp_path / "pt").exists()


@pytest.mark.parametrize("argv", [
    ["eval", "{run}/stages/x", "--episodes", "10000000000"],
    ["edits", "{run}", "--episodes", "10000000000"],
    ["decode", "{run}", "--permutations", "10000000000"],
    ["validate", "{run}", "--episodes", "10000000000"],
    ["steer", "{run}", "--obs-episodes", "10000000000"],
    ["pointers", "--out", "{run}/pt", "--episodes", "10000000000"],
])
def test_episode_counts_on_the_command_line_are_bounded(tmp_path, capsys, argv):
    code, _, err = run(capsys, *[a.format(run=tmp_path) for a in argv])
    assert code == 2 and "from 1 to 100,000" in err and "Traceback" not in err


def test_import_sb3_is_bounded_by_the_total_it_would_expand(tmp_path):
    import zipfile

    from goalscope.agents.importers import import_sb3
    from goalscope.envs.maze import MazeConfig
    from goalscope.errors import CheckpointError

    policy = tmp_path / "policy.pth"
    with zipfile.ZipFile(policy, "w", zipfile.ZIP_DEFLATED) as z:  # 300 MB of zeros, a few hundred KB zipped
        with z.open("archive/data/0", "w") as f:
            for _ in range(300):
                f.write(bytes(1 << 20))
    model = tmp_path / "model.zip"
    with zipfile.ZipFile(model, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("data", json.dumps({"policy_class": {}}))
        z.write(policy, "policy.pth")
    assert model.stat().st_size < 2 << 20
    with pytest.raises(CheckpointError, match="more than the 268,435,456 goalscope expands"):
        import_sb3(model, MazeConfig(size=5, n_types=2), "collect:0")


# ------------------------------------------------------------------------------------------------------------------
# 4. Tracebacks that became one line (or a correct result)


def test_decode_on_a_one_seed_run(shared, capsys):
    run_dir, _ = shared
    code, out, err = run(capsys, "decode", run_dir, "--permutations", "10")
    assert code == 0, err
    assert "Decode" in out and (run_dir / "edits" / "decode.json").exists()


def _damage_records(kind):
    def damage(run_dir: Path):
        p = run_dir / "records.csv"
        text = p.read_text()
        if kind == "random bytes":
            p.write_bytes(bytes(range(256)) * 8)
        elif kind == "non-numeric value":
            lines = text.splitlines(keepends=True)
            cells = lines[1].split(",")
            cells[5] = "lots"
            p.write_text(lines[0] + ",".join(cells) + "".join(lines[2:]))
        elif kind == "missing header":
            p.write_text(text.split("\n", 1)[1])
        elif kind == "cut mid-line":
            p.write_text(text[: len(text) // 2 + 3].rstrip("\n") + "x")
        elif kind == "empty":
            p.write_text("")
    return damage


RECORDS_DAMAGE = [("random bytes", "not UTF-8"), ("non-numeric value", "is not a number"),
                  ("missing header", "the header lacks"), ("cut mid-line", "ends mid-line"), ("empty", "is empty")]


@pytest.mark.parametrize("command", ["report", "results", "validate"])
@pytest.mark.parametrize("kind, fragment", RECORDS_DAMAGE)
def test_damaged_records_are_one_line(shared, capsys, command, kind, fragment):
    run_dir, _ = shared
    _damage_records(kind)(run_dir)
    extra = ["--episodes", "4"] if command == "validate" else []
    code, _, err = run(capsys, command, run_dir, *extra)
    one_line_exit_2(code, err, fragment)
    assert "records.csv" in err


def test_report_on_a_deeply_nested_experiment_json_is_one_line(shared, capsys):
    run_dir, _ = shared
    (run_dir / "experiment.json").write_text("[" * 200_000 + "]" * 200_000)
    code, _, err = run(capsys, "report", run_dir)
    one_line_exit_2(code, err, "nested")


@pytest.mark.parametrize("damage, fragment", [
    (lambda d: _edit_json(d / "summary.json", competence=["a", "list"]), "'competence' is a list"),
    (lambda d: _edit_json(d / "summary.json", competence={"MA": "passes"}), "an entry of 'competence'"),
    (lambda d: _edit_json(d / "summary.json", rbs=7), "'rbs' is a int"),
])
@pytest.mark.parametrize("command", ["report", "results"])
def test_damaged_run_json_is_one_line(shared, capsys, damage, fragment, command):
    run_dir, _ = shared
    damage(run_dir)
    code, _, err = run(capsys, command, run_dir)
    one_line_exit_2(code, err, fragment)


def _edit_json(path: Path, **fields):
    data = json.loads(path.read_text())
    data.update(fields)
    path.write_text(json.dumps(data))


@pytest.fixture(scope="module")
def steered(finished, tmp_path_factory):
    """The finished run, steered once on one site (about 20 s)."""
    from goalscope.analysis.steering.run import run_steering

    out = tmp_path_factory.mktemp("steered") / "run"
    shutil.copytree(finished, out)
    run_steering(out, episodes=4, obs_episodes=2, sites=["policy"], log=lambda *a: None)
    return out


def test_steer_on_a_truncated_heatmap_is_one_line(steered, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(steered, run_dir)
    heat = run_dir / "heatmaps" / "ties.safetensors"
    heat.write_bytes(heat.read_bytes()[:300])
    code, _, err = run(capsys, "steer", run_dir, "--obs-episodes", "2", "--episodes", "4", "--sites", "policy")
    one_line_exit_2(code, err, "ties.safetensors cannot be read as safetensors")


def test_load_run_heatmap_of_a_truncated_file_is_one_error(shared):
    from goalscope.errors import GoalscopeError
    from goalscope.report.run import load_run

    run_dir, _ = shared
    heat = run_dir / "heatmaps" / "ties.safetensors"
    heat.write_bytes(heat.read_bytes()[:300])
    with pytest.raises(GoalscopeError, match="cannot be read as safetensors"):
        load_run(run_dir).heatmap("ties")


def test_a_damaged_steering_cache_entry_is_recomputed(steered, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(steered, run_dir)
    seed0 = run_dir / "steering" / "seed0.json"
    data = json.loads(seed0.read_text())
    del data["result"]["targets"]
    data.pop("digest", None)  # as an older goalscope wrote it
    seed0.write_text(json.dumps(data))
    code, out, err = run(capsys, "steer", run_dir, "--obs-episodes", "2", "--episodes", "4", "--sites", "policy")
    assert code == 0, err
    assert "targets" in json.loads(seed0.read_text())["result"]
    # A file damaged inside but still carrying its checksum is recomputed too.
    data = json.loads(seed0.read_text())
    data["result"]["targets"] = "damaged"
    seed0.write_text(json.dumps(data))
    code, out, err = run(capsys, "steer", run_dir, "--obs-episodes", "2", "--episodes", "4", "--sites", "policy")
    assert code == 0, err
    assert json.loads(seed0.read_text())["result"]["targets"] != "damaged"


# ------------------------------------------------------------------------------------------------------------------
# 5. Silent damage and litter


def test_edits_checks_its_pairs_before_working(shared, capsys):
    run_dir, _ = shared  # three object types: the pair collect:3+collect:4 does not exist
    code, _, err = run(capsys, "edits", run_dir, "--t", "1", "--random-directions", "1", "--episodes", "4",
                       "--pairs", "collect:1+collect:2,collect:3+collect:4")
    one_line_exit_2(code, err, "'collect:3+collect:4'")
    assert not (run_dir / "edits").exists()  # refused before the first evaluation


def test_edits_removes_what_a_killed_call_left(shared, capsys):
    run_dir, _ = shared
    profiles = run_dir / "edits" / "profiles"
    profiles.mkdir(parents=True)
    stale = profiles / ".0123456789abcdef0123.json.k3j4h5.tmp"
    stale.write_text('{"half": ')
    code, _, err = run(capsys, "edits", run_dir, "--parts", "targeted", "--fractions", "0.05",
                       "--random-directions", "1", "--episodes", "4")
    assert code == 0, err
    assert not stale.exists() and not list(run_dir.rglob("*.tmp"))



def test_run_and_analyses_remove_what_a_killed_call_left(shared, tmp_path, capsys):
    run_dir, _ = shared
    stale = [run_dir / ".records.csv.a1b2c3.tmp", run_dir / "heatmaps" / ".ties.safetensors.d4e5.tmp",
             run_dir / "signals" / ".cosine.json.f6g7.tmp"]
    for p in stale:
        p.write_text("half")
    code, _, err = run(capsys, "decode", run_dir, "--permutations", "10")
    assert code == 0, err
    assert not stale[0].exists()
    exp = tmp_path / "exp.toml"
    _write_toml(exp, CFG)
    code, _, err = run(capsys, "run", exp, "--out", run_dir)
    assert code == 0, err
    assert not any(p.exists() for p in stale)


@pytest.mark.parametrize("content", ["{half", "[1, 2]", '{"t": "x", "paths": 3}'])
def test_a_damaged_edits_result_is_no_figure_not_a_traceback(shared, capsys, content):
    run_dir, _ = shared
    (run_dir / "edits").mkdir()
    (run_dir / "edits" / "linearity.json").write_text(content)  # left by an earlier call, damaged since
    code, out, err = run(capsys, "decode", run_dir, "--permutations", "10")
    assert code == 0, err  # decode draws every edits figure: the damaged one is left out, not a traceback

# ------------------------------------------------------------------------------------------------------------------
# A hostile run directory, fuzzed: random damage, symbolic links and deep nesting applied to a tiny real run, then
# every read command. Pass: one line and exit 2, or exit 0; no traceback; not a byte outside the run changed.

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_FILES = ["experiment.json", "summary.json", "records.csv", "heatmaps/mean.safetensors", "heatmaps/ties.safetensors",
          "signals/cosine.json", "stages/*/done.json", "stages/*/profile.json", "stages/*/meta.json",
          "stages/*/model.safetensors", "stages/*/train_log.csv"]
_DIRS = ["report", "edits", "steering", "stages", "heatmaps", "signals", "stages/*"]
_damage = st.one_of(
    st.tuples(st.just("truncate"), st.sampled_from(_FILES), st.floats(0, 1)),
    st.tuples(st.just("random bytes"), st.sampled_from(_FILES), st.binary(max_size=64)),
    st.tuples(st.just("delete"), st.sampled_from(_FILES), st.none()),
    st.tuples(st.just("nest"), st.sampled_from(_FILES), st.integers(30, 100_000)),
    st.tuples(st.just("field"), st.sampled_from(["summary.json", "experiment.json", "stages/*/done.json"]),
              st.tuples(st.sampled_from(["competence", "rbs", "seeds", "ra", "negation", "heatmaps", "cosine",
                                         "status", "experiment", "failed_jobs", "env", "ppo"]),
                        st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=4), st.lists(st.integers(), max_size=2),
                                  st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)))),
    st.tuples(st.just("file link"), st.sampled_from(_FILES + ["report/index.html", "report/cosine.csv",
                                                              "scorecard.md", "edits/records.csv"]), st.none()),
    st.tuples(st.just("dir link"), st.sampled_from(_DIRS), st.none()),
    st.tuples(st.just("dir instead"), st.sampled_from(_FILES), st.none()),
)


# Issue 37: sizes that once cost minutes and gigabytes; every reader must stay under MAX_RSS doing them.
_size_damage = st.one_of(
    st.tuples(st.just("big cosine"), st.just("signals/cosine.json"), st.integers(30, 460)),
    st.tuples(st.just("long log"), st.just("stages/*/train_log.csv"), st.integers(1_000, 260_000)),
    st.tuples(st.just("huge file"), st.sampled_from(_FILES + ["scorecard.json", "steering/summary.json"]),
              st.just(80 << 20)),
)
MAX_RSS = 3 << 30  # bytes: a reader of a hostile run stays under this (a clean tiny run's report: ~0.4 GB)


def _pick(run_dir: Path, pattern: str, rnd: int) -> Path:
    found = sorted(run_dir.glob(pattern)) or [run_dir / pattern.replace("*", "x")]
    return found[rnd % len(found)]


def _apply(run_dir: Path, home: Path, op, pattern, arg, rnd: int) -> None:
    path = _pick(run_dir, pattern, rnd)
    if path.is_symlink() or (path.exists() and path.is_dir() and op not in ("dir link",)):
        return
    if op == "truncate" and path.is_file():
        data = path.read_bytes()
        path.write_bytes(data[: int(len(data) * arg)])
    elif op == "random bytes":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(arg)
    elif op == "delete" and path.is_file():
        path.unlink()
    elif op == "nest":
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("[" * arg + "]" * arg)
    elif op == "field" and path.is_file():
        try:
            data = json.loads(path.read_text())
        except ValueError:
            return
        if isinstance(data, dict):
            data[arg[0]] = arg[1]
            path.write_text(json.dumps(data))
    elif op == "file link":
        target = home / f"file{rnd}"
        target.write_text("the user's")
        if path.exists():
            path.unlink()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target)
    elif op == "dir link":
        target = home / f"dir{rnd}"
        if path.is_dir():
            shutil.move(path, target)
        else:
            target.mkdir()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.symlink_to(target, target_is_directory=True)
    elif op == "dir instead" and path.is_file():
        path.unlink()
        path.mkdir()
    elif op == "big cosine" and path.parent.is_dir():  # issue 37: 400 x 400 once took 13 GB
        names = [f"seed{i % 3} | s{i}" for i in range(arg)]
        path.write_text(json.dumps({"names": names, "matrix": [[0.5] * arg] * arg}))
    elif op == "long log" and path.parent.is_dir():  # issue 37: 3 million rows once took 1.9 GB
        path.write_text("step,charts/episode_return\n" + "1,0\n" * arg)
    elif op == "huge file" and path.parent.is_dir():  # past every byte cap (sparse: costs no disk)
        with open(path, "wb") as f:
            f.truncate(arg)


def _hostile_run(finished, tmp_path_factory, damages):
    base = tmp_path_factory.mktemp("hostile")
    run_dir, home = base / "run", base / "home"
    shutil.copytree(finished, run_dir)
    home.mkdir()
    for i, (op, pattern, arg) in enumerate(damages):
        _apply(run_dir, home, op, pattern, arg, i)
    return run_dir, home


def _read_commands(run_dir: Path, capsys):
    from goalscope.errors import GoalscopeError
    from goalscope.report.run import load_run

    for argv in (["results", run_dir], ["report", run_dir]):
        code, _, err = run(capsys, *argv)
        assert code in (0, 2), err
        if code == 2:
            one_line_exit_2(code, err)
    try:  # the Python API reads the same files: a damaged one is a GoalscopeError, never another exception
        view = load_run(run_dir)
        view.records, view.scorecard
    except GoalscopeError as e:
        assert str(e) and "\n" not in str(e)


def _fuzz(finished, tmp_path_factory, capsys, damages):
    run_dir, home = _hostile_run(finished, tmp_path_factory, damages)
    outside = tree(home)
    _read_commands(run_dir, capsys)
    assert tree(home) == outside, "a byte outside the run changed"


@pytest.fixture
def quick_report(monkeypatch):
    """The report without its figure sections (each is already drawn inside its own error note): the reading,
    the header, the answer cards and every write stay; a minute of figures per example does not."""
    import goalscope.report.page as page

    monkeypatch.setattr(page, "SECTION_WRITERS", [])


@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(damages=st.lists(_damage, min_size=1, max_size=3))
def test_hostile_run_directories(finished, tmp_path_factory, capsys, quick_report, damages):
    _fuzz(finished, tmp_path_factory, capsys, damages)


@pytest.mark.slow
@settings(max_examples=500, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(damages=st.lists(_damage, min_size=1, max_size=5))
def test_hostile_run_directories_many(finished, tmp_path_factory, capsys, quick_report, damages):
    _fuzz(finished, tmp_path_factory, capsys, damages)


@pytest.mark.slow
@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(damages=st.lists(_damage, min_size=1, max_size=3))
def test_hostile_run_directories_full_report(finished, tmp_path_factory, capsys, damages):
    _fuzz(finished, tmp_path_factory, capsys, damages)  # every figure section drawn: about a minute an example


# ------------------------------------------------------------------------------------------------------------------
# Issue 37: a damaged scorecard.json is blamed on itself; no reader follows a symbolic link planted in the run


@pytest.mark.parametrize("content", ['{"verdicts": {', "[]", '{"verdicts": []}', '{"graft": 3}',
                                     '{"verdicts": {"|Δ_i|": {}}}', "link"])
def test_a_damaged_scorecard_is_blamed_on_itself(shared, capsys, quick_report, content):
    from goalscope.errors import GoalscopeError
    from goalscope.report.run import load_run

    run_dir, home = shared
    card = run_dir / "scorecard.json"
    if content == "link":
        (home / "card.json").write_text("{}")
        card.symlink_to(home / "card.json")
    else:
        card.write_text(content)
    code, _, err = run(capsys, "report", run_dir)
    one_line_exit_2(code, err, "scorecard.json")
    assert "summary.json" not in err and ("goalscope validate" in err or "symbolic link" in err), err
    if "|Δ_i|" in content:
        return  # well-formed JSON with the top-level types right: the API hands it over as it is
    with pytest.raises(GoalscopeError, match="scorecard.json") as e:
        load_run(run_dir).scorecard
    assert "summary.json" not in str(e.value)


@pytest.mark.parametrize("plant", ["heatmaps/mean.safetensors", "stages/zz-link", ".lock"])
@pytest.mark.parametrize("command", ["report", "results", "load_run"])
def test_readers_refuse_a_symbolic_link_planted_in_the_run(shared, capsys, plant, command):
    from goalscope.errors import GoalscopeError
    from goalscope.report.run import load_run

    run_dir, home = shared
    link = run_dir / plant
    if plant == "stages/zz-link":
        (home / "dir").mkdir()
        link.symlink_to(home / "dir", target_is_directory=True)
    else:
        link.parent.mkdir(exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to(home / "notes.txt")
    before = tree(home)
    if command == "load_run":
        with pytest.raises(GoalscopeError, match=f"{plant} is a symbolic link"):
            view = load_run(run_dir)
            view.records, view.heatmap("mean")
    else:
        code, _, err = run(capsys, command, run_dir)
        one_line_exit_2(code, err, f"{plant} is a symbolic link")
    assert tree(home) == before


@pytest.mark.parametrize("call, fragment", [
    (lambda v: v.checkpoint("MA", seed=[0]), "seed must be an integer"),
    (lambda v: v.checkpoint("MA", seed=0.5), "seed must be an integer"),
    (lambda v: v.checkpoint("MB", seed=0, rb=3), "rb must be a string or None"),
    (lambda v: v.stage_key("MA", True), "seed must be an integer"),
    (lambda v: v.delta(seed={}), "seed must be an integer"),
    (lambda v: v.heatmap("../heatmaps/ties"), "method must be an aggregator's name"),
    (lambda v: v.heatmap(3), "method must be an aggregator's name"),
    (lambda v: v.heatmap("ties", seed=[0]), "seed must be an integer or None"),
])
def test_run_view_accessors_check_their_arguments(shared, call, fragment):
    from goalscope.errors import ConfigError
    from goalscope.report.run import load_run

    run_dir, _ = shared
    with pytest.raises(ConfigError, match=fragment):
        call(load_run(run_dir))


@pytest.mark.parametrize("args, fragment", [((12,), "path must be a run directory"),
                                            ((None,), "path must be a run directory"),
                                            (("RUN", 5), "trust_modules must be a list")])
def test_load_run_checks_its_arguments(shared, args, fragment):
    from goalscope.errors import ConfigError
    from goalscope.report.run import load_run

    run_dir, _ = shared
    with pytest.raises(ConfigError, match=fragment):
        load_run(*[run_dir if a == "RUN" else a for a in args])


def test_edits_default_pairs_follow_the_run(shared, capsys):
    """Issue 37, finding 7: the default --pairs named types 3 and 4, so `edits` failed on any run with fewer than 5."""
    from goalscope.analysis.edits.arithmetic import default_pairs
    from goalscope.analysis.edits.common import DEFAULT_PAIRS, EditRun

    run_dir, _ = shared  # three object types: RA collect:0, RBs collect:1 and collect:2
    assert default_pairs(EditRun(run_dir, 4, lambda *a: None)) == ("collect:1+collect:2",)
    code, out, err = run(capsys, "edits", run_dir, "--parts", "arithmetic", "--random-directions", "0",
                         "--episodes", "4")
    assert code == 0, err
    arith = json.loads((run_dir / "edits" / "arithmetic.json").read_text())
    assert "collect:1+collect:2" in json.dumps(arith) and "collect:3" not in json.dumps(arith)
    from types import SimpleNamespace

    from goalscope.program.config import load_experiment

    cfg = load_experiment("experiments/default.toml")  # five types: the pairs the paper's default run always had
    er = SimpleNamespace(cfg=cfg, rbs=lambda: [r.name for r in cfg.rbs()])
    er.types = lambda r: EditRun.types(er, r)
    assert default_pairs(er) == DEFAULT_PAIRS


# Issue 37, finding 2: reads of run files bounded in bytes and elements


def _cosine(run_dir: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    names = [f"seed{i % 3} | signal {i}" for i in range(n)]
    (run_dir / "signals" / "cosine.json").write_text(json.dumps({"names": names,
                                                                 "matrix": rng.uniform(-1, 1, (n, n)).tolist()}))


@pytest.mark.parametrize("n", [120, 400])
def test_a_large_cosine_matrix_draws_a_bounded_figure(shared, n):
    from goalscope.report.figures_signals import MAX_FIGURE_INCHES, fig_cosine
    from goalscope.report.run import read_run

    run_dir, _ = shared
    _cosine(run_dir, n)  # 400 x 400 once took the report 252 s and 13 GB
    fig = fig_cosine(read_run(run_dir))
    assert max(fig.get_size_inches()) <= MAX_FIGURE_INCHES + 5  # the matrix, and the summary by pair type beside it


@pytest.mark.parametrize("content, fragment", [
    ('{"names": ["a", "b"], "matrix": [[1, 0], [0]]}', "square matrix"),
    ('{"names": ["a"], "matrix": [["x"]]}', "not a number"),
    ('{"names": 3, "matrix": []}', "square matrix"),
    (json.dumps({"names": [str(i) for i in range(500)], "matrix": [[0] * 500] * 500}), "more than 200,000 values"),
])
def test_a_damaged_or_oversized_cosine_file_is_one_error(shared, content, fragment):
    from goalscope.errors import GoalscopeError
    from goalscope.report.figures_signals import fig_cosine
    from goalscope.report.run import read_run

    run_dir, _ = shared
    (run_dir / "signals" / "cosine.json").write_text(content)
    with pytest.raises(GoalscopeError, match=fragment):
        fig_cosine(read_run(run_dir))


def test_a_huge_training_log_is_refused_while_streaming(shared):
    from goalscope.errors import GoalscopeError
    from goalscope.report.figures_training import MAX_LOG_ROWS, fig_learning_curves
    from goalscope.report.run import read_run

    run_dir, _ = shared
    run = read_run(run_dir)
    log = run.stage(next(iter(run.plan.ma.values()))) / "train_log.csv"
    log.write_text("step,charts/episode_return\n" + "1,0\n" * (MAX_LOG_ROWS + 10))  # 3M rows: 101 s, 1.9 GB
    with pytest.raises(GoalscopeError, match=f"more than {MAX_LOG_ROWS:,} rows"):
        fig_learning_curves(run)



# Issue 37: the write commands on hostile runs, and the damaged sizes with every reader's sections drawn

_WRITE_COMMANDS = {
    "edits": ["--parts", "targeted", "--fractions", "0.05", "--random-directions", "0", "--episodes", "2"],
    "decode": ["--permutations", "10"],
    "steer": ["--obs-episodes", "2", "--episodes", "2", "--sites", "policy"],
    "validate": ["--episodes", "2"],
}


def _reset_peak_rss() -> None:
    """Start this process's peak RSS afresh (Linux: /proc/self/clear_refs), so the bound applies to the command
    under test, not to whatever the suite ran before it; elsewhere the peak stays the process's own."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass


def _peak_rss() -> int:
    """Bytes: the peak RSS of this process since :func:`_reset_peak_rss` (of the whole process where that cannot
    be reset)."""
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) << 10
    except (OSError, IndexError, ValueError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss << 10


def _fuzz_write(finished, tmp_path_factory, capsys, damages, command):
    run_dir, home = _hostile_run(finished, tmp_path_factory, damages)
    outside = tree(home)
    _reset_peak_rss()
    code, _, err = run(capsys, command, run_dir, *_WRITE_COMMANDS[command])
    assert code in (0, 2), err
    if code == 2:
        one_line_exit_2(code, err)
    assert tree(home) == outside, "a byte outside the run changed"
    assert _peak_rss() < MAX_RSS


@pytest.fixture
def size_sections(monkeypatch):
    """The report with only the sections that read the files the size damages grow (learning curves, cosine)."""
    import goalscope.report.page as page

    monkeypatch.setattr(page, "SECTION_WRITERS", [w for w in page.SECTION_WRITERS if w[0] in ("learning", "cosine")])


_FEW = settings(max_examples=4, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
_MANY = settings(max_examples=100, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@_FEW
@given(damages=st.lists(st.one_of(_damage, _size_damage), min_size=1, max_size=3),
       command=st.sampled_from(sorted(_WRITE_COMMANDS)))
def test_hostile_run_directories_write_commands(finished, tmp_path_factory, capsys, damages, command):
    _fuzz_write(finished, tmp_path_factory, capsys, damages, command)


@_FEW
@given(damages=st.lists(_size_damage, min_size=1, max_size=3))
def test_hostile_run_directory_sizes(finished, tmp_path_factory, capsys, size_sections, damages):
    _reset_peak_rss()
    _fuzz(finished, tmp_path_factory, capsys, damages)
    assert _peak_rss() < MAX_RSS


@pytest.mark.slow
@_MANY
@given(damages=st.lists(st.one_of(_damage, _size_damage), min_size=1, max_size=5),
       command=st.sampled_from(sorted(_WRITE_COMMANDS)))
def test_hostile_run_directories_write_commands_many(finished, tmp_path_factory, capsys, damages, command):
    _fuzz_write(finished, tmp_path_factory, capsys, damages, command)


@pytest.mark.slow
@_MANY
@given(damages=st.lists(_size_damage, min_size=1, max_size=3))
def test_hostile_run_directory_sizes_many(finished, tmp_path_factory, capsys, size_sections, damages):
    _reset_peak_rss()
    _fuzz(finished, tmp_path_factory, capsys, damages)
    assert _peak_rss() < MAX_RSS
