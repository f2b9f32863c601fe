"""ppo.precision = "auto": resolved by the hardware, recorded in the run, never mixed silently on a resume."""

import json

import pytest

import goalscope.rl.ppo as ppo_module
from goalscope.errors import ConfigError
from goalscope.program.config import experiment_from_dict, with_ppo
from goalscope.program.runner import _check_same_experiment, plan_experiment
from goalscope.rl.ppo import PPOConfig, bf16_units, resolve_precision

from test_experiment import TINY

AMX = "processor\t: 0\nflags\t\t: fpu sse avx512f amx_bf16 amx_tile avx512_bf16\n"
NO_UNITS = "processor\t: 0\nflags\t\t: fpu sse avx2 avx512f avx512bw\n"


def test_bf16_units_are_read_from_cpu_flags():
    assert bf16_units(AMX) == ["amx_bf16", "avx512_bf16"]
    assert bf16_units(NO_UNITS) == []
    assert bf16_units("") == []


@pytest.mark.parametrize("precision, device, units, expected", [
    ("auto", "cpu", ["amx_bf16"], "bf16"),
    ("auto", "cpu", [], "fp32"),
    ("auto", "cpu", ["avx512_bf16"], "fp32"),  # no AMX tiles: bf16 measured 0.86x of fp32 on an AMD EPYC
    ("auto", "cuda", ["amx_bf16"], "fp32"),  # launch-bound on a GPU: bf16 measured no faster there
    ("fp32", "cpu", ["amx_bf16"], "fp32"),   # an explicit choice is kept
    ("bf16", "cpu", [], "bf16"),
])
def test_resolve_precision(precision, device, units, expected):
    assert resolve_precision(precision, device, units) == expected


@pytest.fixture(params=[["amx_bf16", "avx512_bf16"], []], ids=["bf16-units", "no-units"])
def machine(request, monkeypatch):
    monkeypatch.setattr(ppo_module, "bf16_units", lambda cpuinfo=None: request.param)
    return "bf16" if request.param else "fp32"


def test_auto_never_reaches_a_config_and_is_in_every_job_key(machine):
    assert PPOConfig(precision="auto").precision == machine
    cfg = experiment_from_dict({**TINY, "ppo": {**TINY["ppo"], "precision": "auto"}})
    assert cfg.ppo["precision"] == machine and cfg.to_json()["ppo"]["precision"] == machine  # experiment.json
    plan = plan_experiment(cfg)
    assert all(j.spec["ppo"]["precision"] == machine for j in plan.jobs())
    other = with_ppo(cfg, precision="fp32" if machine == "bf16" else "bf16")
    # the same experiment in the other precision shares no job: nothing trained in one is reused by the other
    assert {j.key for j in plan.jobs()}.isdisjoint(j.key for j in plan_experiment(other).jobs())


def test_fp32_keys_are_the_keys_runs_had_before_precision_existed():
    assert plan_experiment(experiment_from_dict(TINY)).ma == \
        plan_experiment(experiment_from_dict({**TINY, "ppo": {**TINY["ppo"], "precision": "fp32"}})).ma


def test_a_run_resumed_where_auto_resolves_otherwise_is_refused_with_the_command(tmp_path, monkeypatch):
    auto = {**TINY, "ppo": {**TINY["ppo"], "precision": "auto"}}
    monkeypatch.setattr(ppo_module, "bf16_units", lambda cpuinfo=None: ["amx_bf16"])
    made_here = experiment_from_dict(auto)
    (tmp_path / "experiment.json").write_text(json.dumps(made_here.to_json()))
    monkeypatch.setattr(ppo_module, "bf16_units", lambda cpuinfo=None: [])
    elsewhere = experiment_from_dict(auto)
    with pytest.raises(ConfigError, match=r"computed in bf16 .* resolves to fp32 .*`--precision bf16`"):
        _check_same_experiment(tmp_path, elsewhere, reconfigure=False)
    _check_same_experiment(tmp_path, with_ppo(elsewhere, precision="bf16"), reconfigure=False)  # the way on
    with pytest.raises(ConfigError, match="different experiment"):  # other differences keep their message
        _check_same_experiment(tmp_path, with_ppo(made_here, lr=0.002), reconfigure=False)
