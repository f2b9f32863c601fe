"""Sweeps of MA's training (goalscope.program.sweep, goalscope.analysis.effects.sweep_table, `goalscope sweep`): expansion,
validation, job keys shared with `goalscope run`, a table."""

import json

import pytest

from goalscope.analysis.effects.sweep_table import markdown, run_sweep
from goalscope.errors import ConfigError
from goalscope.program.runner import plan_experiment
from goalscope.program.sweep import expand, train_jobs

BASE = {"env": {"size": 5, "n_types": 2, "n_per_type": 1, "max_steps": 16, "pool_size": 16},
        "agent": {"arch": "cnn", "config": {"channels": [4], "hidden": 8}},
        "ppo": {"n_envs": 8, "n_steps": 16, "epochs": 1, "minibatch_size": 64},
        "base": {"steps": 256}, "evaluation": {"episodes": 16}}


def _sweep(**sweep):
    return {**json.loads(json.dumps(BASE)), "sweep": sweep}


def test_variants_times_grid_with_names_and_overrides():
    seeds, vs = expand(_sweep(seeds=[0, 3], variant=[{"name": "a"}, {"name": "b", "agent.config.channels": [4, 4]}],
                              grid={"ppo.ent_coef": [0.01, 0.001]}))
    assert seeds == [0, 3]
    assert [v.name for v in vs] == ["a ent_coef=0.01", "a ent_coef=0.001", "b ent_coef=0.01", "b ent_coef=0.001"]
    assert vs[3].config.agent.config["channels"] == [4, 4] and vs[3].config.ppo["ent_coef"] == 0.001
    assert vs[0].config.agent.config["channels"] == [4] and vs[0].config.seeds == [0, 3]


def test_jobs_are_the_ma_jobs_goalscope_run_makes():
    _, (v,) = expand(_sweep(seeds=[1, 2]))
    want = [j.key for j in plan_experiment(v.config).jobs() if j.kind == "train"]
    assert [j.key for j in train_jobs(v)] == want and len(want) == 2


@pytest.mark.parametrize("sweep,fragment", [
    ({"seeds": []}, "sweep.seeds"),
    ({"seeds": [1, 1]}, "sweep.seeds"),
    ({"seedz": [1]}, "unknown key 'sweep.seedz'"),
    ({"variant": [{"agent.config.channels": [4]}]}, "needs a name"),
    ({"variant": [{"name": "x", "ppo.lr": 2.0}]}, "variant 'x': ppo.lr"),
    ({"variant": [{"name": "x", "ppo.nope": 1}]}, "variant 'x'"),
    ({"variant": [{"name": "x", "env.size.deep": 1}]}, "not a table"),
    ({"variant": [{"name": "x"}, {"name": "x"}]}, "both named 'x'"),
    ({"grid": {"ppo.gamma": []}}, "sweep.grid"),
])
def test_bad_sweeps_fail_before_training(sweep, fragment):
    with pytest.raises(ConfigError, match=fragment):
        expand(_sweep(**sweep))


def test_missing_sweep_table_is_an_error():
    with pytest.raises(ConfigError, match=r"\[sweep\]"):
        expand(BASE)


def test_run_sweep_trains_through_the_executor_and_caches(tmp_path, capsys):
    path = tmp_path / "s.toml"
    path.write_text('''
[env]
size = 5
n_types = 2
n_per_type = 1
max_steps = 16
pool_size = 16
[agent]
arch = "cnn"
[agent.config]
channels = [4]
hidden = 8
[ppo]
n_envs = 8
n_steps = 16
epochs = 1
minibatch_size = 64
[base]
steps = 256
[evaluation]
episodes = 16
[sweep]
seeds = [0, 1]
[[sweep.variant]]
name = "one"
[[sweep.variant]]
name = "two"
"agent.config.channels" = [4, 4]
''')
    out = tmp_path / "out"
    rows = run_sweep(path, out, only=["two"])
    assert [r["variant"] for r in rows] == ["two"] and rows[0]["seeds"] == [0, 1]
    fr = rows[0]["fraction_of_oracle"]
    assert all(0 <= f <= 1.5 for f in fr.values())
    assert rows[0]["mean"] == pytest.approx(sum(fr.values()) / 2)
    lo, hi = rows[0]["ci95"]
    assert lo <= rows[0]["mean"] <= hi
    done = sorted(out.glob("stages/*/done.json"))
    assert len(done) == 2
    stamp = [p.stat().st_mtime_ns for p in done]
    rows2 = run_sweep(path, out)  # "two" is reused, only "one" trains
    assert [p.stat().st_mtime_ns for p in done] == stamp
    assert [r["variant"] for r in rows2] == ["one", "two"] and rows2[1]["fraction_of_oracle"] == fr
    assert len(list(out.glob("stages/*/done.json"))) == 4
    table = (out / "sweep.md").read_text()
    assert table == markdown(rows2) and "| two | 5x5 | 256 | 2 |" in table
    from goalscope.cli import main

    capsys.readouterr()
    assert main(["sweep", str(path), "--out", str(out), "--table-only"]) == 0  # `goalscope sweep`, nothing trained
    assert capsys.readouterr().out == table
    assert len(list(out.glob("stages/*/done.json"))) == 4

    # A directory holding anything a sweep did not write is refused before any training, and keeps its content.
    mine = tmp_path / "thesis"
    mine.mkdir()
    (mine / "chapter1.tex").write_text("draft")
    assert main(["sweep", str(path), "--out", str(mine)]) == 2
    assert "chapter1.tex" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["chapter1.tex"]


def test_device_override_reaches_every_variant_and_keeps_the_keys(tmp_path):
    """`goalscope sweep --device`: every variant's PPO runs there; the job keys (what `--table-only` and a rerun on
    another machine look up) do not change."""
    from goalscope.program.sweep import load_sweep

    path = tmp_path / "s.toml"
    path.write_text('[env]\nsize = 5\nn_types = 2\nn_per_type = 1\nmax_steps = 16\npool_size = 16\n'
                    '[agent]\narch = "cnn"\n[base]\nsteps = 256\n[sweep]\nseeds = [0, 1]\n'
                    '[[sweep.variant]]\nname = "a"\n[[sweep.variant]]\nname = "b"\n"ppo.ent_coef" = 0.001\n')
    _, plain = load_sweep(path)
    _, moved = load_sweep(path, device="cuda:0")
    assert all(v.config.ppo_config(256).device == "cuda:0" for v in moved)
    assert [j.key for v in plain for j in train_jobs(v)] == [j.key for v in moved for j in train_jobs(v)]
    with pytest.raises(ConfigError, match="ppo.device"):
        load_sweep(path, device="tpu")
