import json
import math
from dataclasses import replace

import numpy as np
import pytest

from goalscope.analysis.effects.negation import verdict
from goalscope.cli import main
from goalscope.program.config import experiment_from_dict, load_experiment
from goalscope.errors import ConfigError, GoalscopeError
from goalscope.analysis.records import read_records
from goalscope.program.runner import RunLock, plan_experiment
from goalscope.analysis.effects.experiment import run_experiment
from goalscope.analysis.stats import bootstrap_mean, bootstrap_ratio

TINY = {
    "name": "tiny", "seeds": [0, 1], "workers": 2,
    "env": {"size": 5, "n_types": 3, "n_per_type": 1, "max_steps": 16},
    "ppo": {"n_envs": 16, "n_steps": 32},
    "base": {"steps": 2048}, "finetune": {"steps": 1024},
    "negate": {"alphas": [1.0], "retrain_steps": 512},
    "evaluation": {"episodes": 32, "bootstrap": 200},
}


def tiny(**over):
    return experiment_from_dict({**TINY, **over})


def test_default_experiment_file_is_valid():
    cfg = load_experiment("experiments/default.toml")
    assert len(cfg.rbs()) == 4 and len(cfg.seeds) == 3
    plan = plan_experiment(cfg)
    # 3 seeds x 4 RBs x 1 alpha x (Δ + 1 fresh random direction); one fine-tune seed per RB and control
    assert len(plan.ma) == 3 and len(plan.mb) == 12 and len(plan.negated) == 3 * 4 * 1 * 2
    assert len(plan.mb_rep) == 0 and len(plan.control_rep) == 0
    paper = plan_experiment(load_experiment("experiments/paper.toml"))  # the reviewer's design: nested seeds
    assert len(paper.ma) == 5 and len(paper.mb_rep) == 20 and len(paper.negated) == 5 * 4 * 3 * 4


@pytest.mark.parametrize("data, message", [
    ({"seedz": [0]}, "unknown key 'seedz'"),
    ({"finetune": {"stepz": 3}}, "unknown key 'finetune.stepz'"),
    ({"base": {"steps": "many"}}, "base.steps must be an integer"),
    ({"negate": {"alphas": [1, "x"]}}, r"negate.alphas\[1\] must be a number"),
    ({"env": {"size": 6}}, "env.size must be odd"),
    ({"base": {"reward": "collect:7"}}, "object type '7' does not exist"),
    ({"finetune": {"rewards": ["collect:0"]}}, "contains RA itself"),
    ({"finetune": {"rewards": ["collect:1", "collect:1"]}}, "twice"),
    ({"superpose": {"methods": ["magic"]}}, "unknown aggregator 'magic'"),
    ({"ppo": {"lr": -1.0}}, "ppo.lr"),
    ({"ppo": {"epoch": 3}}, "unknown field 'epoch'"),
    ({"agent": {"arch": "cnn", "config": {"depth": 3}}}, "unknown field 'depth'"),
    ({"seeds": []}, "seeds must be a non-empty list"),
    ({"negate": {"alphas": [0.0]}}, "negate.alphas must be positive"),
    ({"env": "big"}, "env must be a table"),
])
def test_config_errors_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message):
        experiment_from_dict(data)


def test_job_keys_change_only_downstream_of_a_change():
    a, b = plan_experiment(tiny()), plan_experiment(tiny(finetune={"steps": 999}))
    assert a.ma == b.ma  # MA does not depend on the fine-tune budget: cached MAs are reused
    assert set(a.mb.values()).isdisjoint(b.mb.values())
    assert plan_experiment(tiny()).mb == a.mb  # keys are deterministic


def test_bootstrap_ci_covers_the_truth_and_resamples_seeds():
    rng = np.random.default_rng(0)
    same = rng.normal(1.0, 1.0, size=(3, 400))
    m, lo, hi = bootstrap_mean(same, 1000)
    assert lo < 1.0 < hi and hi - lo < 0.3
    shifted = same + np.array([[-1.0], [0.0], [1.0]])  # seeds that disagree must widen the interval
    _, lo2, hi2 = bootstrap_mean(shifted, 1000)
    assert hi2 - lo2 > 3 * (hi - lo)
    r, rlo, rhi = bootstrap_ratio(same * 2, same, 500)
    assert r == pytest.approx(2.0) and rlo == pytest.approx(2.0) and rhi == pytest.approx(2.0)
    assert verdict((-1, -2, -0.5)) == "leans toward minimising RB"
    assert verdict((0.1, -0.2, 0.4)) == "no detectable lean"
    assert verdict((1, 0.5, 2)).startswith("leans toward RB")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    summary = run_experiment(tiny(), out, log=lambda *a: None)
    return out, summary


def test_small_real_end_to_end_run(tiny_run):
    out, summary = tiny_run
    assert summary["failed_jobs"] == []
    assert 0 < summary["ma_fraction_of_oracle"] < 1.5
    rows = read_records(out / "records.csv")
    metrics = {r["metric"] for r in rows}
    for m in ("fraction_of_oracle", "l2", "rel_l2", "l2_over_control", "rb_objects_vs_retrained_MA",
              "specific_lean_vs_random_direction", "selectivity_vs_retrained_MA", "score_share", "seed_jaccard_top1pct"):
        assert m in metrics, m
    lean = [r for r in rows if r["metric"] == "rb_objects_vs_retrained_MA"]
    assert len(lean) == 2 and all(r["ci_low"] <= r["value"] <= r["ci_high"] for r in lean)
    for method in ("mean", "median", "mean_abs", "ties", "pca", "control_subtracted", "fisher"):
        assert (out / "heatmaps" / f"{method}.safetensors").exists(), method
    # Across MA seeds the overlap has a second chance level, stratified by tensor and input plane (cnn's conv1).
    h = summary["heatmaps"]["mean_abs"]
    assert 0 < h["seed_jaccard_stratified_chance"] and h["seed_jaccard_plane_stratified_chance"] is not None
    cos = json.loads((out / "signals" / "cosine.json").read_text())
    assert len(cos["names"]) == 2 * 3 and np.allclose(np.diag(cos["matrix"]), 1.0)
    assert summary["stage_wall_s"]["negate"] > 0


def test_rerun_redoes_nothing_and_resumes_killed_work(tiny_run):
    out, _ = tiny_run
    cfg = tiny()
    plan = plan_experiment(cfg)
    stamps = {k: (out / "stages" / k / "done.json").stat().st_mtime_ns for k in (j.key for j in plan.jobs())}
    # Simulate a run killed mid-way: one finished negate job lost, one half-written job directory left behind.
    import shutil

    lost = next(iter(plan.negated.values()))
    shutil.rmtree(out / "stages" / lost)
    (out / "stages" / f".partial-{lost}").mkdir()  # the killed job's working directory
    (out / "stages" / ".partial-train-0123456789ab").mkdir()  # a leftover of another config
    before = (out / "records.csv").read_text()
    summary = run_experiment(cfg, out, log=lambda *a: None)
    after = {k: (out / "stages" / k / "done.json").stat().st_mtime_ns for k in stamps}
    assert [k for k in stamps if stamps[k] != after[k]] == [lost]
    assert not list((out / "stages").glob(".partial-*"))
    assert (out / "records.csv").read_text() == before  # bit-identical results after the resume
    assert summary["failed_jobs"] == []


def test_changed_config_is_refused_and_force_redoes_stages(tiny_run, tmp_path):
    out, _ = tiny_run
    with pytest.raises(ConfigError, match="different experiment"):
        run_experiment(tiny(negate={"alphas": [2.0], "retrain_steps": 512}), out, log=lambda *a: None)
    with pytest.raises(ConfigError, match="--force takes one of"):
        run_experiment(tiny(), out, force="everything", log=lambda *a: None)
    plan = plan_experiment(tiny())
    before = {k: (out / "stages" / k / "done.json").stat().st_mtime_ns for k in (j.key for j in plan.jobs())}
    records = (out / "records.csv").read_bytes()
    run_experiment(tiny(), out, force="negate", log=lambda *a: None)
    redone = {k for k in before if (out / "stages" / k / "done.json").stat().st_mtime_ns != before[k]}
    assert redone == set(plan.negated.values())  # that stage only, nothing before it
    assert (out / "records.csv").read_bytes() == records  # and deterministically the same results


def test_lock_refuses_a_second_run(tmp_path):
    with RunLock(tmp_path):
        with pytest.raises(GoalscopeError, match="in use by another goalscope process"):
            with RunLock(tmp_path):
                pass
    (tmp_path / ".lock").write_text("999999999")  # stale lock of a dead process is taken over
    with RunLock(tmp_path):
        pass


def test_cli_diff_superpose_negate_results(tiny_run, capsys):
    out, summary = tiny_run
    plan = plan_experiment(tiny())
    ma = out / "stages" / plan.ma[0]
    mbs = [out / "stages" / plan.mb[(0, rb)] for rb in ("collect:1", "collect:2")]
    assert main(["diff", str(ma), str(mbs[0]), "--units"]) == 0
    text = capsys.readouterr().out
    assert "conv1.weight" in text and "most-changed units" in text
    heat = out / "h.safetensors"
    assert main(["superpose", str(ma), *map(str, mbs), "--method", "ties", "--out", str(heat)]) == 0
    assert heat.exists()
    assert main(["superpose", str(ma), str(mbs[0]), "--method", "pca"]) == 2
    assert "pca needs" in capsys.readouterr().err
    assert main(["negate", str(ma), str(mbs[0]), "--retrain-steps", "512", "--episodes", "16"]) == 0
    assert "MB* - control" in capsys.readouterr().out
    assert main(["results", str(out)]) == 0
    text = capsys.readouterr().out
    assert "negate and retrain" in text
    assert text.index("competence") < text.index("negate and retrain")  # how good the agents are comes first
    comp = summary["competence"]
    if not all(c["passes"] for c in comp.values()):  # per-test verdicts are withheld below the gate
        assert "verdicts withheld" in text and "not interpretable" in text
        assert not any(e["retrained_MA"]["verdict"] in text for e in summary["negation"])
    assert set(comp) == {"MA", "MB[collect:1]", "MB[collect:2]"} and comp["MA"]["seeds"] == 2
    # MA has its own bar (0.9 by default), each MB the MB bar (0.85); each fraction comes with its interval
    assert comp["MA"]["bar"] == 0.9 and all(c["bar"] == 0.85 for m, c in comp.items() if m != "MA")
    assert all(c["passes"] == (c["fraction_of_oracle"] >= c["bar"]) for c in comp.values())
    assert all(c["fraction_of_oracle_ci"][1] - 1e-4 <= c["fraction_of_oracle"] <= c["fraction_of_oracle_ci"][2] + 1e-4
               for c in comp.values())  # (the interval is rounded to 4 places)
    assert main(["results", str(out / "nope")]) == 2


def test_results_as_parquet(tiny_run, capsys):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    out, _ = tiny_run
    pq = out.parent / "records.parquet"
    assert main(["results", str(out), "--parquet", str(pq)]) == 0
    frame = pd.read_parquet(pq)
    csv = pd.read_csv(out / "records.csv")
    assert len(frame) == len(csv) and list(frame.columns) == list(csv.columns)
    assert str(frame["seed"].dtype) == "Int64" and frame["value"].dtype == "float64"
    assert frame["value"].fillna(-1).tolist() == csv["value"].fillna(-1).tolist()
    before = pq.read_bytes()
    assert main(["results", str(out), "--parquet", str(pq)]) == 2  # never overwritten without --force
    assert "--force" in capsys.readouterr().err and pq.read_bytes() == before
    assert main(["results", str(out), "--parquet", str(pq), "--force"]) == 0
    note = out.parent / "notes.parquet"
    note.write_text("my notes")  # not a Parquet file: --force does not replace it
    assert main(["results", str(out), "--parquet", str(note), "--force"]) == 2
    assert note.read_text() == "my notes"


def test_run_cli_bad_config_file(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text("[finetune]\nsteps = 'x'\n")
    assert main(["run", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert "finetune.steps must be an integer" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    bad.write_text("not = toml = at all")
    assert main(["run", str(bad), "--out", str(tmp_path / "r")]) == 2
    assert main(["run", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "r")]) == 2


def test_failed_jobs_are_reported_then_retried(tmp_path, monkeypatch):
    import goalscope.program.jobs as jobs

    cfg = tiny(seeds=[0], negate={"enabled": False}, superpose={"methods": ["mean"]})
    real = jobs._EXECUTE["finetune"]
    calls = []

    def broken(spec, run_dir, out, label):
        calls.append(spec["reward"]["name"])
        if spec["reward"]["name"] == "collect:2":
            raise jobs.GoalscopeError("training diverged at step 5")
        real(spec, run_dir, out, label)

    monkeypatch.setitem(jobs._EXECUTE, "finetune", broken)
    summary = run_experiment(replace(cfg, workers=1), tmp_path / "r", log=lambda *a: None)
    assert summary["failed_jobs"] == ["MB collect:2 seed 0"]
    assert "collect:2" not in {r["model"] for r in read_records(tmp_path / "r" / "records.csv") if r["stage"] == "signals"} \
        and "Δ collect:1" in {r["model"] for r in read_records(tmp_path / "r" / "records.csv")}
    monkeypatch.setitem(jobs._EXECUTE, "finetune", real)
    summary = run_experiment(replace(cfg, workers=1), tmp_path / "r", log=lambda *a: None)
    assert summary["failed_jobs"] == []


def test_snapshot_interval_does_not_change_job_keys():
    a = plan_experiment(tiny())
    b = plan_experiment(tiny(ppo={**TINY["ppo"], "save_every": 12345}))
    assert [j.key for j in a.jobs()] == [j.key for j in b.jobs()]


def test_a_run_whose_every_ma_fails_stops_after_training(tmp_path, monkeypatch):
    import goalscope.program.jobs as jobs

    def broken(spec, run_dir, out, label):
        raise jobs.GoalscopeError("env.id 'Nope-v0' does not exist")

    monkeypatch.setitem(jobs._EXECUTE, "train", broken)
    with pytest.raises(GoalscopeError, match="every MA training job failed .*Nope-v0"):
        run_experiment(replace(tiny(seeds=[0]), workers=1), tmp_path / "r", log=lambda *a: None)
    assert not list((tmp_path / "r" / "stages").glob("finetune-*"))


def test_selectivity_is_undefined_when_ra_did_not_drop():
    rng = np.random.default_rng(0)
    assert math.isnan(bootstrap_ratio(rng.normal(1, 1, (3, 200)), rng.normal(0, 1, (3, 200)), 500)[0])


def test_l2_over_control_is_the_ratio(tiny_run):
    out, _ = tiny_run
    rows = read_records(out / "records.csv")
    l2 = {(r["model"], r["seed"], r["detail"]): r["value"] for r in rows if r["metric"] == "l2"}
    ctrl = {(r["seed"], r["detail"]): r["value"] for r in rows if r["metric"] == "l2" and r["model"] == "Δ control: RA"}
    ratios = [r for r in rows if r["metric"] == "l2_over_control"]
    assert ratios
    for r in ratios:
        assert r["value"] == pytest.approx(l2[(r["model"], r["seed"], r["detail"])] / ctrl[(r["seed"], r["detail"])], rel=1e-4)


def test_composite_rewards_target_their_new_component():
    from goalscope.envs.rewards import parse_reward

    ra = parse_reward("collect:0", 4)
    assert parse_reward("collect:0+collect:2", 4).target_type(ra) == 2
    assert parse_reward("collect:3", 4).target_type(ra) == 3
    cfg = tiny(finetune={"rewards": ["composite"], "steps": 1024})
    assert [r.target_type(cfg.ra) for r in cfg.rbs()] == [1, 2]


def test_lock_with_junk_content_is_taken_over(tmp_path):
    (tmp_path / ".lock").write_text("not a pid")
    with RunLock(tmp_path):
        assert (tmp_path / ".lock").read_text().split()[0] == str(__import__("os").getpid())
    assert not (tmp_path / ".lock").exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("data, message", [
    ({"seeds": [-1]}, "non-negative"),
    ({"evaluation": {"seed": -5}}, "evaluation.seed"),
    ({"base": {"reward": "cued"}}, "goalscope pointers"),
])
def test_more_config_errors(data, message):
    with pytest.raises(ConfigError, match=message):
        experiment_from_dict(data)


def test_cli_one_line_errors_for_damaged_runs(tmp_path, capsys):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "experiment.json").write_text("{broken")
    (tmp_path / "run" / "summary.json").write_text("{broken")
    assert main(["validate", str(tmp_path / "run")]) == 2
    assert main(["results", str(tmp_path / "run")]) == 2
    assert main(["validate", str(tmp_path / "run"), "--workers", "-1"]) == 2
    (tmp_path / "afile").write_text("x")
    assert main(["train", "--reward", "collect:0", "--out", str(tmp_path / "afile")]) == 2
    err = capsys.readouterr().err
    assert err.count("goalscope: error:") == 4 and "Traceback" not in err
    with pytest.raises(SystemExit):
        main(["train", "--reward", "collect:0", "--out", str(tmp_path / "x"), "--seed", "-1"])


def test_a_run_moved_to_another_device_keeps_that_device(tmp_path):
    """Resuming a run with `--device` passes the config check (the device is not what it computes) and its jobs
    still carry the device asked for; a real change is still refused."""
    from goalscope.program.runner import EXPERIMENT_FILE, _check_same_experiment

    cfg = load_experiment("experiments/default.toml")
    (tmp_path / EXPERIMENT_FILE).write_text(json.dumps(cfg.to_json()))
    moved = replace(cfg, ppo={**cfg.ppo, "device": "cuda:0"})
    _check_same_experiment(tmp_path, moved, reconfigure=False)
    assert moved.ppo["device"] == "cuda:0"
    assert {j.spec["ppo"]["device"] for j in plan_experiment(moved).jobs()} == {"cuda:0"}
    with pytest.raises(ConfigError, match="different experiment"):
        _check_same_experiment(tmp_path, replace(moved, ppo={**moved.ppo, "lr": 5e-4}), reconfigure=False)


def test_pipelined_jobs_wait_for_what_they_read_and_never_for_a_job_that_cannot_run(tmp_path):
    """The local pool gets every stage at once: a job waits for its inputs, and one whose inputs failed is resolved
    through them (it writes nothing, so waiting on its status would hang: the bug this guards)."""
    import threading
    import time as _time

    from goalscope.program.runner import _wait_for

    def finish(key, status):
        d = tmp_path / "stages" / key
        d.mkdir(parents=True)
        (d / "done.json").write_text(json.dumps({"key": key, "status": status, "label": key}))

    graph = {"train-a": (), "finetune-b": ("train-a",), "negate-c": ("finetune-b",)}
    finish("train-a", "failed")
    assert _wait_for(tmp_path, ("finetune-b",), graph)["label"] == "train-a"  # b never runs; c learns why at once
    graph2 = {"train-x": (), "finetune-y": ("train-x",)}
    threading.Timer(0.3, finish, ("train-x", "ok")).start()
    threading.Timer(0.6, finish, ("finetune-y", "ok")).start()
    t0 = _time.monotonic()
    assert _wait_for(tmp_path, ("finetune-y",), graph2) is None  # waits until its input and then it are done
    assert _time.monotonic() - t0 >= 0.5


@pytest.mark.parametrize("path", sorted(__import__("glob").glob("experiments/*.toml")))
def test_every_shipped_experiment_file_is_valid(path):
    """A file in experiments/ that no longer loads (a renamed field, a bad value) fails here, not after a user's
    hours of training: sweeps through the sweep loader, the pointer experiment through its own, the rest as runs."""
    from goalscope.analysis.pointer_reference import load_pointers_file
    from goalscope.program.sweep import load_sweep

    if "sweep" in path.rsplit("/", 1)[-1]:
        seeds, variants = load_sweep(path)
        assert seeds and variants
    elif path.endswith("pointers.toml"):
        load_pointers_file(path)
    else:
        cfg = load_experiment(path).validate()
        assert plan_experiment(cfg).jobs()
