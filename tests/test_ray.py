"""The Ray executor: the same experiment on a real local Ray cluster and on the local process pool gives
byte-identical checkpoints and records; options and a missing Ray fail with one clear line."""

import importlib.util
import sys

import pytest

from goalscope.cli import main
from goalscope.program.config import experiment_from_dict
from goalscope.errors import ConfigError, GoalscopeError
from goalscope.program.executors import LocalExecutor, RayExecutor, make_executor
from goalscope.program.runner import plan_experiment
from goalscope.analysis.experiment import run_experiment

from test_experiment import TINY

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install 'goalscope[ray]'); the Ray executor is untested")

# One seed: 1 MA, 4 fine-tunes (2 RBs, 2 controls), 4 negate jobs (one random direction); every job kind, about
# 15 s per executor.
SMALL = {**TINY, "seeds": [0], "negate": {**TINY["negate"], "random_directions": 1}}


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@needs_ray
def test_ray_runs_the_experiment_with_results_identical_to_local(ray_cluster, tmp_path):
    cfg = experiment_from_dict(SMALL)
    run_experiment(cfg, tmp_path / "local", executor=LocalExecutor(2), log=lambda *a: None)
    ray_executor = make_executor("ray", workers=2, address=None)
    run_experiment(cfg, tmp_path / "ray", executor=ray_executor, log=lambda *a: None)

    plan = plan_experiment(cfg)
    keys = [j.key for j in plan.jobs()]
    assert len(keys) == 9
    for key in keys:
        local = (tmp_path / "local" / "stages" / key / "model.safetensors").read_bytes()
        remote = (tmp_path / "ray" / "stages" / key / "model.safetensors").read_bytes()
        assert local == remote, f"{key}: the Ray run's weights differ from the local run's"
    assert (tmp_path / "local" / "records.csv").read_bytes() == (tmp_path / "ray" / "records.csv").read_bytes()

    lines = []  # a rerun on Ray finds every job by key and redoes none
    run_experiment(cfg, tmp_path / "ray", executor=ray_executor, log=lines.append)
    assert [ln for ln in lines if ln.startswith("stage ")] == [
        "stage train: 1 jobs, 1 already done", "stage finetune: 4 jobs, 4 already done",
        "stage negate: 4 jobs, 4 already done"]


@needs_ray
def test_ray_executor_keeps_order_caps_workers_and_raises_task_errors(ray_cluster):
    assert RayExecutor(workers=1).run(abs, [-3, 2, -1, 0]) == [3, 2, 1, 0]
    assert RayExecutor().run(abs, []) == []
    with pytest.raises(ValueError, match="invalid literal"):
        RayExecutor(workers=2).run(int, ["1", "x", "3"])


def test_address_is_refused_by_the_local_executor(tmp_path, capsys):
    assert isinstance(make_executor("local", workers=1, address=None), LocalExecutor)
    with pytest.raises(ConfigError, match="--address does not apply to the 'local' executor"):
        make_executor("local", workers=1, address="auto")
    assert main(["run", "experiments/default.toml", "--out", str(tmp_path / "r"), "--address", "auto"]) == 2
    assert "--address does not apply to the 'local' executor" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_missing_ray_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    with pytest.raises(GoalscopeError, match=r"install goalscope\[ray\]"):
        RayExecutor()
    assert main(["run", "experiments/default.toml", "--out", str(tmp_path / "r"), "--executor", "ray"]) == 2
    assert "install goalscope[ray]" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
