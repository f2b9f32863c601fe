"""A checkpoint acts and makes its env (issue 27), its rollout becomes a GIF (`goalscope video`), and the report
shows a short rollout of MA and of one MB."""

import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from goalscope.agents import rollouts
from goalscope.agents.checkpoints import Checkpoint, load_checkpoint
from goalscope.agents.registry import build_agent
from goalscope.cli import main
from goalscope.envs.maze import MazeConfig
from goalscope.envs.rewards import parse_reward
from goalscope.errors import ConfigError
from goalscope.report.common import Page

SIZE = 5


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny maze checkpoint trained through the CLI (a few seconds)."""
    out = tmp_path_factory.mktemp("video") / "ma"
    args = ["train", "--reward", "collect:0", "--size", str(SIZE), "--n-types", "2", "--max-steps", "16",
            "--steps", "256", "--n-envs", "8", "--quiet", "--out", str(out)]
    assert main(args) == 0
    return out


def _random_ckpt(env=None, reward="collect:1") -> Checkpoint:
    env = env or MazeConfig(size=SIZE, n_types=2, n_per_type=1, max_steps=16, pool_size=16)
    torch.manual_seed(0)
    model = build_agent("cnn", env.obs_shape, env.n_actions, {})
    return Checkpoint("cnn", {}, env, parse_reward(reward, env.n_types, getattr(env, "event_names", None)),
                      model.state_dict())


def test_act_on_one_observation_and_on_a_batch(trained):
    ck = load_checkpoint(trained)
    env = ck.make_env()
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.uint8 and obs.shape == ck.env.obs_shape == env.observation_space.shape
    a = ck.act(obs, generator=0)
    assert isinstance(a, int) and 0 <= a < ck.env.n_actions
    batch = np.stack([obs] * 5)
    acts = ck.act(batch, generator=1)
    assert acts.shape == (5,) and acts.dtype == np.int64 and ((0 <= acts) & (acts < ck.env.n_actions)).all()
    assert (ck.act(batch, generator=1) == acts).all()  # the same seed, the same draws
    with torch.inference_mode():
        best = ck.build()(torch.from_numpy(batch))[0].argmax(-1).numpy()
    assert (ck.act(batch, greedy=True) == best).all()
    with pytest.raises(ConfigError, match=r"shape \(4, 5, 5\)"):
        ck.act(np.zeros((3, 3), dtype=np.uint8))


def test_act_builds_once_and_follows_the_weights():
    ck = _random_ckpt()
    obs = np.zeros(ck.env.obs_shape, dtype=np.uint8)
    ck.act(obs)
    model = ck._model()
    ck.act(obs)
    assert ck._model() is model  # cached while the weights stay
    with torch.no_grad():
        ck.state_dict["policy.bias"].add_(1.0)  # an edit in place
    assert ck._model() is not model
    assert torch.equal(ck._model().state_dict()["policy.bias"], ck.state_dict["policy.bias"])
    copy = pickle.loads(pickle.dumps(ck))  # the cache is no part of the data
    assert "_built" not in copy.__dict__ and copy.arch == ck.arch and copy.reward == ck.reward


def test_make_env_gives_what_act_reads_and_pays_the_checkpoints_reward():
    ck = _random_ckpt()
    env = ck.make_env(render_mode="rgb_array")
    obs, _ = env.reset(seed=3)
    gen = torch.Generator().manual_seed(0)
    total, types = 0.0, np.zeros(2)
    for _ in range(ck.env.max_steps):
        obs, r, term, trunc, info = env.step(ck.act(obs, generator=gen))
        total += r
        types += info["events"]
        if term or trunc:
            break
    assert trunc and total == types[1]  # collect:1 pays for type 1 only
    assert env.render().shape == (SIZE * 12, SIZE * 12, 3)
    assert ck.make_env(reward="collect:0").reset(seed=0)[0].shape == ck.env.obs_shape
    with pytest.raises(ConfigError, match="3 weights"):
        ck.make_env(reward="1,0,0")


def test_make_env_of_a_gym_events_checkpoint():
    pytest.importorskip("minigrid")
    from goalscope.envs.events import GymEventsConfig

    cfg = GymEventsConfig(id="MiniGrid-Fetch-5x5-N2-v0", n_types=2, max_steps=16, events="minigrid",
                          event_types=["key", "ball"], obs="minigrid", kwargs={"max_steps": 16})
    ck = _random_ckpt(cfg, "collect:key")
    frames = rollouts.rollout_frames(ck, seed=0, max_steps=4)
    assert 2 <= len(frames) <= 5 and frames[0].ndim == 3 and frames[0].dtype == np.uint8
    env = ck.make_env(reward="collect:ball")  # by the env's own name for the type
    obs, _ = env.reset(seed=0)
    assert obs.shape == cfg.obs_shape
    for _ in range(cfg.max_steps):
        obs, r, term, trunc, info = env.step(ck.act(obs, generator=0))
        assert r == float(info["events"][1])  # the checkpoint's reward, from the events, not the env's own
        if term or trunc:
            break


def test_video_cli_writes_a_gif(trained, tmp_path, capsys):
    out = tmp_path / "ma.gif"
    assert main(["video", str(trained), "--out", str(out), "--episodes", "2", "--seed", "3", "--fps", "10"]) == 0
    import imageio.v3 as iio

    frames = iio.imread(out, index=None)
    assert frames.ndim == 4 and frames.shape[0] > 1 and frames.shape[1:3] == (SIZE * 12, SIZE * 12)
    assert "frames, 2 episode(s)" in capsys.readouterr().out
    # Same seed, same video; and nothing is replaced without --force.
    again = tmp_path / "again.gif"
    assert main(["video", str(trained), "--out", str(again), "--episodes", "2", "--seed", "3", "--fps", "10"]) == 0
    assert again.read_bytes() == out.read_bytes()
    assert main(["video", str(trained), "--out", str(out)]) == 2
    assert "--force" in capsys.readouterr().err
    assert main(["video", str(trained), "--out", str(out), "--force", "--greedy", "--max-steps", "3"]) == 0
    assert 1 < iio.imread(out, index=None).shape[0] <= 4


def test_mp4_without_ffmpeg_says_what_to_install(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(rollouts, "has_ffmpeg", lambda: False)
    out = tmp_path / "ma.mp4"
    assert main(["video", str(trained), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "pip install imageio-ffmpeg" in err and str(out) in err and not out.exists()
    assert main(["video", str(trained), "--out", str(tmp_path / "ma.avi")]) == 2
    assert "ends in .gif or .mp4" in capsys.readouterr().err


def _fake_run(trained: Path):
    """What the rollout section reads of a run: MA and one MB (here the same tiny checkpoint twice)."""
    ck = load_checkpoint(trained)
    return SimpleNamespace(cfg=SimpleNamespace(seeds=[0, 1], evaluation=SimpleNamespace(seed=10_000)),
                           plan=SimpleNamespace(ma={0: "ma"}, mb={(0, "collect:1"): "mb"}), ok={"ma", "mb"},
                           ra=parse_reward("collect:0", 2), rbs=[parse_reward("collect:1", 2)],
                           checkpoint=lambda key: ck)


def test_report_section_shows_ma_and_an_mb(trained, tmp_path):
    from goalscope.report.sections import SECTION_WRITERS, SECTIONS, applies

    run = _fake_run(trained)
    assert applies(run, "rollouts") and dict(SECTIONS)["rollouts"] == "11. Rollouts"
    page = Page(tmp_path)
    dict(SECTION_WRITERS)["rollouts"](run, page)
    html = "".join(page.parts)
    assert html.count("src='data:image/gif;base64,") == 2 and "MA (RA = collect:0)" in html and "MB[collect:1]" in html
    for name in ("rollout_MA.gif", "rollout_MB.gif"):
        assert (tmp_path / name).read_bytes()[:4] == b"GIF8" and f"href='{name}'" in html


def test_report_section_is_left_out_when_the_env_cannot_render(trained, tmp_path, monkeypatch):
    from goalscope.report import figures_rollouts
    from goalscope.report.sections import SECTION_WRITERS, applies

    monkeypatch.setattr(figures_rollouts, "rollout_frames", lambda *a, **k: [])  # render() gave None
    run = _fake_run(trained)
    page = Page(tmp_path)
    dict(SECTION_WRITERS)["rollouts"](run, page)
    assert not applies(run, "rollouts") and page.parts == [] and not list(tmp_path.iterdir())


def test_report_section_is_left_out_for_an_env_that_cannot_be_made_to_render(trained, tmp_path):
    from goalscope.report.sections import SECTION_WRITERS, applies

    def refuse(render_mode=None, reward=None):
        raise ConfigError("env.id 'Corridor-v0' cannot be made with render_mode='rgb_array'")

    run = _fake_run(trained)
    run.checkpoint = lambda key: SimpleNamespace(env=SimpleNamespace(max_steps=16), make_env=refuse)
    page = Page(tmp_path)
    dict(SECTION_WRITERS)["rollouts"](run, page)
    assert not applies(run, "rollouts") and page.parts == []
