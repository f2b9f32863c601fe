"""The Ray executor: the same experiment on a private local Ray instance, on a real ``ray start`` cluster joined
with ``--address`` and on the local process pool gives byte-identical checkpoints and records; a machine's own
cluster (live, or dead with its ``ray_current_cluster`` file left behind) neither breaks nor hangs a run; options,
dead addresses and a missing Ray fail with one clear line.

Every Ray test here is isolated from whatever Ray the machine runs: Ray's temp dir (``RAY_TMPDIR``, where
``ray_current_cluster`` lives) is a fresh one, ``RAY_ADDRESS`` is unset, the auth token is the test's own and every
port is a free one. The ``ray start`` cluster is stopped by signalling its own ``--block`` process, never with
``ray stop`` (which would stop every Ray process on the machine)."""

import importlib.util
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from goalscope.cli import main
from goalscope.program.config import experiment_from_dict
from goalscope.errors import ConfigError, GoalscopeError
from goalscope.program.executors import LocalExecutor, RayExecutor, make_executor
from goalscope.program.runner import plan_experiment
from goalscope.analysis.effects.experiment import run_experiment

from test_experiment import TINY

needs_ray = pytest.mark.skipif(importlib.util.find_spec("ray") is None,
                               reason="ray is not installed (pip install 'goalscope[ray]'); the Ray executor is untested")

# One seed: 1 MA, 4 fine-tunes (2 RBs, 2 controls), 4 negate jobs (one random direction); every job kind, about
# 15 s per executor.
SMALL = {**TINY, "seeds": [0], "negate": {**TINY["negate"], "random_directions": 1}}


def _ray_tmpdir() -> Path:
    """A fresh directory for ``RAY_TMPDIR``, short on purpose: Ray's socket paths under it must fit in 107 bytes,
    which pytest's ``tmp_path`` does not leave room for."""
    return Path(tempfile.mkdtemp(prefix="gsray", dir="/tmp"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_vars(ray_tmp: Path) -> dict:
    """Ray's environment for a test: its own temp dir, and token authentication (on by default for a new cluster
    in Ray 2.60) with its own token, so that neither the machine's ~/.ray/auth_token nor its absence changes what a
    test sees, and no test writes one."""
    token = ray_tmp / "auth_token"
    if not token.exists():
        token.write_text(secrets.token_hex(32))
    return {"RAY_TMPDIR": str(ray_tmp), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}


def _isolated_env(ray_tmp: Path) -> dict:
    env = {**os.environ, **_ray_vars(ray_tmp), "GOALSCOPE_QUIET": "1"}
    for var in ["RAY_ADDRESS", "RAY_AUTH_TOKEN"]:
        env.pop(var, None)
    return env


@pytest.fixture(scope="module")
def ray_tmp():
    """This module's Ray temp dir, ``RAY_TMPDIR`` for the test process and for the ``ray start`` cluster below."""
    path = _ray_tmpdir()
    with pytest.MonkeyPatch.context() as mp:
        for var, value in _ray_vars(path).items():
            mp.setenv(var, value)
        for var in ["RAY_ADDRESS", "RAY_AUTH_TOKEN"]:
            mp.delenv(var, raising=False)
        yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def live_cluster(ray_tmp):
    """A real ``ray start --head`` cluster (2 CPUs, its own ports) recorded in this module's
    ``ray_current_cluster``, as a user's ``ray start`` would be; yields its GCS address. ``--block`` keeps it in one
    process whose SIGTERM stops every process of this cluster and no other (``ray stop`` would stop them all)."""
    ray_bin = Path(sys.executable).with_name("ray")
    log = open(ray_tmp / "ray-start.log", "w")
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--num-cpus=2", "--include-dashboard=false",
         f"--temp-dir={ray_tmp / 'ray'}", f"--port={_free_port()}", f"--ray-client-server-port={_free_port()}",
         f"--dashboard-agent-listen-port={_free_port()}", "--disable-usage-stats"],
        env=_isolated_env(ray_tmp), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address_file = ray_tmp / "ray" / "ray_current_cluster"
    try:
        deadline = time.monotonic() + 120
        while not address_file.exists() or not address_file.read_text().strip():
            assert proc.poll() is None, f"ray start failed: {(ray_tmp / 'ray-start.log').read_text()[-2000:]}"
            assert time.monotonic() < deadline, "ray start did not record its cluster within 120 s"
            time.sleep(0.5)
        yield address_file.read_text().strip()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def ray_cluster(ray_tmp, live_cluster):
    """This process on the private local Ray instance (2 CPUs) that ``--executor ray`` without ``--address``
    starts, here beside the live ``ray start`` cluster (before: Ray's "num_cpus and num_gpus must not be provided")."""
    ray = RayExecutor(workers=2)._connect()
    assert ray.get_runtime_context().gcs_address != live_cluster
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """SMALL on the local process pool: what every Ray run must reproduce byte for byte."""
    out = tmp_path_factory.mktemp("local") / "run"
    run_experiment(experiment_from_dict(SMALL), out, executor=LocalExecutor(2), log=lambda *a: None)
    return out


def _assert_identical(local: Path, remote: Path) -> None:
    plan = plan_experiment(experiment_from_dict(SMALL))
    keys = [j.key for j in plan.jobs()]
    assert len(keys) == 9
    for key in keys:
        a = (local / "stages" / key / "model.safetensors").read_bytes()
        b = (remote / "stages" / key / "model.safetensors").read_bytes()
        assert a == b, f"{key}: the Ray run's weights differ from the local run's"
    assert (local / "records.csv").read_bytes() == (remote / "records.csv").read_bytes()


@needs_ray
def test_ray_runs_the_experiment_with_results_identical_to_local(ray_cluster, local_run, tmp_path):
    cfg = experiment_from_dict(SMALL)
    ray_executor = make_executor("ray", workers=2, address=None)
    run_experiment(cfg, tmp_path / "ray", executor=ray_executor, log=lambda *a: None)
    _assert_identical(local_run, tmp_path / "ray")

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


# A Python snippet run in a fresh process (this one is already connected to Ray): one job on `--executor ray`
# without `--address`, printing the result and the GCS address of the instance it ran on.
_NO_ADDRESS_RUN = (
    "import ray; from goalscope.program.executors import RayExecutor; "
    "print(RayExecutor(workers=1).run(abs, [-3, 2]), ray.get_runtime_context().gcs_address)")


def _stale_cluster_file(ray_tmp: Path) -> str:
    """What a cluster killed without ``ray stop`` leaves: ``ray_current_cluster`` naming an address nobody serves."""
    dead = f"127.0.0.1:{_free_port()}"
    (ray_tmp / "ray").mkdir(parents=True, exist_ok=True)
    (ray_tmp / "ray" / "ray_current_cluster").write_text(dead)
    return dead


@pytest.fixture
def stale_ray_tmp():
    path = _ray_tmpdir()
    dead = _stale_cluster_file(path)
    yield path, dead
    shutil.rmtree(path, ignore_errors=True)


@needs_ray
def test_no_address_starts_a_private_instance_despite_a_stale_cluster_file(stale_ray_tmp):
    # Before: ray.init() dialled the dead address in ray_current_cluster and retried for minutes.
    ray_tmp, dead = stale_ray_tmp
    env = {**_isolated_env(ray_tmp), "RAY_ADDRESS": dead}  # a stale RAY_ADDRESS is ignored too
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-c", _NO_ADDRESS_RUN], env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result, address = out.stdout.strip().rsplit(" ", 1)
    assert result == "[3, 2]" and address != dead
    assert time.monotonic() - t0 < 90
    assert (ray_tmp / "ray" / "ray_current_cluster").read_text() == dead  # the user's file is left as it was


@needs_ray
def test_a_dead_cluster_address_is_one_line_naming_the_stale_file_within_30s(stale_ray_tmp, tmp_path):
    # Before: `--address auto` with a stale ray_current_cluster waited on Ray's GCS retries with no goalscope message.
    ray_tmp, dead = stale_ray_tmp
    t0 = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "goalscope.cli", "run", "experiments/default.toml", "--quick",
                          "--out", str(tmp_path / "r"), "--executor", "ray", "--address", "auto"],
                         env=_isolated_env(ray_tmp), capture_output=True, text=True, timeout=90)
    took = time.monotonic() - t0
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr[-2000:]
    assert took < 30, f"{took:.0f} s"
    for part in [dead, str(ray_tmp / "ray" / "ray_current_cluster"), "`ray stop`", "--address"]:
        assert part in lines[0]


@needs_ray
def test_a_dead_explicit_address_is_one_clear_line(monkeypatch):
    import ray

    monkeypatch.setattr(ray, "is_initialized", lambda: False)  # as in a fresh process: the address is checked first
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    dead = f"127.0.0.1:{_free_port()}"
    for address in [dead, f"ray://{dead}"]:
        with pytest.raises(GoalscopeError, match=f"could not reach the Ray cluster at {address} .*--address") as e:
            RayExecutor(address=address).run(abs, [1])
        assert "\n" not in str(e.value)
    monkeypatch.setenv("RAY_ADDRESS", dead)
    with pytest.raises(GoalscopeError, match=f"at {dead}, the address in the RAY_ADDRESS environment variable"):
        RayExecutor(address="auto").run(abs, [1])


@needs_ray
def test_no_address_runs_beside_a_live_local_cluster(live_cluster, ray_tmp):
    # Before: ray.init(num_cpus=...) found the live cluster in ray_current_cluster and refused num_cpus.
    out = subprocess.run([sys.executable, "-c", _NO_ADDRESS_RUN], env=_isolated_env(ray_tmp), capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    result, address = out.stdout.strip().rsplit(" ", 1)
    assert result == "[3, 2]" and address != live_cluster  # a private instance, not the user's cluster


@needs_ray
def test_a_real_cluster_joined_with_address_gives_results_identical_to_local(live_cluster, local_run, tmp_path):
    import ray

    ray.shutdown()  # this process may be on the module's private instance; join the `ray start` cluster instead
    try:
        ray_executor = make_executor("ray", workers=2, address=live_cluster)
        run_experiment(experiment_from_dict(SMALL), tmp_path / "ray", executor=ray_executor, log=lambda *a: None)
        assert ray.get_runtime_context().gcs_address == live_cluster
    finally:
        ray.shutdown()
    _assert_identical(local_run, tmp_path / "ray")


def test_a_refused_join_says_how_to_send_the_token(monkeypatch):
    from goalscope.program.executors import _auth_hint

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    try:  # what ray.init raises for an explicit address to a cluster with token authentication, after ~20 s
        try:
            raise RuntimeError("Failed to connect to GCS. Unauthenticated: RPC error: InvalidAuthToken")
        except RuntimeError as cause:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379") from cause
    except ConnectionError as e:
        hint = _auth_hint(e)
    assert "refused this process's credentials" in hint and "RAY_AUTH_MODE=token" in hint and "auto" in hint
    assert "if the cluster uses" in _auth_hint(ConnectionError("ray client connection timeout"))
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    assert _auth_hint(ConnectionError("anything")) == ""
