"""The object maze drawn in colour (env.obs = "rgb", issue 34 item 2) and ``pixel_rcnn``, the agent that reads it."""

import numpy as np
import pytest
import torch

from goalscope.agents import hooks
from goalscope.agents.registry import build_agent
from goalscope.envs import env_from_json
from goalscope.envs.colours import AGENT_COLOUR, FLOOR_COLOUR, WALL_COLOUR, palette, type_colours
from goalscope.envs.maze import MazeConfig
from goalscope.envs.rewards import parse_reward
from goalscope.errors import ConfigError
from goalscope.program.jobs import Job
from goalscope.rl.evaluation import evaluate
from goalscope.rl.ppo import PPOConfig, train_new

SMALL = dict(size=7, n_types=5, n_per_type=1, max_steps=32, loop_prob=0.0)
AGENT_CFG = {"channels": [8, 8], "width": 4, "iterations": 4, "hidden": 16}


def _decode(img: np.ndarray, cfg: MazeConfig) -> np.ndarray:
    """Planes (walls, agent, one per type) read back from an image through the palette, one pixel per cell."""
    p = cfg.cell_pixels
    cells = img[:, :, ::p, ::p].transpose(0, 2, 3, 1)  # (N, h, w, 3)
    code = (cells[..., None, :] == palette(cfg.n_types)[None, None, None]).all(-1)  # (N, h, w, 3 + K)
    assert (code.sum(-1) == 1).all(), "every cell shows exactly one palette colour"
    return code[..., 1:].transpose(0, 3, 1, 2).astype(np.uint8)


@pytest.mark.parametrize("k", range(4, 17))
def test_no_channel_names_a_type_walls_or_agent(k):
    cols = type_colours(k)
    assert len({tuple(c) for c in cols} | {FLOOR_COLOUR, WALL_COLOUR, AGENT_COLOUR}) == k + 3  # all distinct
    for ch in range(3):
        for t in range(k):
            others = np.delete(cols[:, ch], t)
            # Another type shows the same value: no function of this channel alone tells type t from all others.
            assert cols[t, ch] in others, (k, t, ch)
        assert {WALL_COLOUR[ch], AGENT_COLOUR[ch]} <= set(cols[:, ch].tolist())  # neither named by one channel


@pytest.mark.parametrize("k", [1, 2, 3])
def test_few_types_share_every_channel_value_with_floor_walls_or_agent(k):
    cols = type_colours(k)
    assert len({tuple(c) for c in cols}) == k
    assert set(cols.ravel().tolist()) <= {FLOOR_COLOUR[0], WALL_COLOUR[0], AGENT_COLOUR[0]}


def test_rgb_image_decodes_to_the_planes_step_by_step():
    rgb, planes = MazeConfig(**SMALL, obs="rgb", cell_pixels=3), MazeConfig(**SMALL)
    assert rgb.obs_shape == (3, 21, 21) and rgb.grid_shape == planes.grid_shape
    ra = parse_reward("collect:0", 5)
    a, b = rgb.make(ra, 32, seed=4), planes.make(ra, 32, seed=4)
    rng = np.random.default_rng(0)
    img, ref = a.observe(), b.observe()
    ended = 0
    for _ in range(70):  # past max_steps: auto-resets and final observations are drawn too
        assert img.shape == (32, *rgb.obs_shape) and img.dtype == np.uint8
        # Each cell is one p x p block of one colour.
        blocks = img.reshape(32, 3, 7, 3, 7, 3)
        assert (blocks == blocks[:, :, :, :1, :, :1]).all()
        np.testing.assert_array_equal(_decode(img, rgb), ref)
        act = rng.integers(4, size=32)
        img, r1, *_, info = a.step(act)
        ref, r2, *_, info2 = b.step(act)
        np.testing.assert_array_equal(r1, r2)
        if info:
            np.testing.assert_array_equal(_decode(info["final_obs"], rgb), info2["final_obs"])
            ended += len(info["done_idx"])
    assert ended >= 32


def test_objects_in_real_observations_share_every_channel_value():
    cfg = MazeConfig(**SMALL, obs="rgb")
    img = cfg.make(parse_reward("collect:0", 5), 16, seed=1).observe()
    planes = _decode(img, cfg)
    cells = img[:, :, ::2, ::2]
    for ch in range(3):
        seen = [set(cells[:, ch][planes[:, 2 + t] == 1].tolist()) for t in range(5)]
        for t in range(5):
            assert seen[t] and seen[t] <= set().union(*(seen[:t] + seen[t + 1:]))


def test_egocentric_rgb_pads_with_wall_colour():
    cfg = MazeConfig(**SMALL, obs="rgb", cell_pixels=1, view="egocentric")
    ref_cfg = MazeConfig(**SMALL, view="egocentric")
    assert cfg.obs_shape == (3, 13, 13)
    ra = parse_reward("collect:0", 5)
    img, ref = cfg.make(ra, 8, seed=2).observe(), ref_cfg.make(ra, 8, seed=2).observe()
    np.testing.assert_array_equal(_decode(img, cfg), ref)
    assert (img[:, :, 6, 6] == np.array(AGENT_COLOUR, dtype=np.uint8)).all()  # the agent sits at the centre


def test_default_observation_and_job_keys_are_unchanged():
    cfg = MazeConfig(**SMALL, end_when_collected=True)
    d = cfg.to_json()
    assert "obs" not in d and "cell_pixels" not in d
    # The key a default-maze job had before obs/cell_pixels existed (a new field must not move old runs' caches).
    assert Job("train", {"env": d, "ppo": {"lr": 0.003}}, "x").key == "train-513361858515"
    rgb = MazeConfig(**SMALL, obs="rgb", cell_pixels=3)
    assert rgb.to_json()["obs"] == "rgb" and env_from_json(rgb.to_json()) == rgb
    assert env_from_json(MazeConfig(**SMALL, obs="rgb").to_json()) == MazeConfig(**SMALL, obs="rgb")
    assert Job("train", {"env": rgb.to_json(), "ppo": {"lr": 0.003}}, "x").key != "train-513361858515"


@pytest.mark.parametrize("bad, match", [({"obs": "pixels"}, "env.obs"), ({"cell_pixels": 3}, "only to obs"),
                                        ({"obs": "rgb", "cell_pixels": 0}, "cell_pixels"),
                                        ({"obs": "rgb", "cue": True}, "cue")])
def test_bad_obs_options_are_refused(bad, match):
    with pytest.raises(ConfigError, match=match):
        MazeConfig(**SMALL, **bad)


def _image(cfg: MazeConfig, seed=0) -> torch.Tensor:
    return torch.from_numpy(cfg.make(parse_reward("collect:0", 5), 6, seed=seed).observe())


def test_pixel_rcnn_builds_runs_and_learns_through_every_layer():
    cfg = MazeConfig(**SMALL, obs="rgb")
    torch.manual_seed(0)
    model = build_agent("pixel_rcnn", cfg.obs_shape, 4, AGENT_CFG)
    assert model.iterations == 4 and model.conv1.kernel_size == (2, 2) and model.conv1.stride == (2, 2)
    x = _image(cfg)
    logits, value = model(x)
    assert logits.shape == (6, 4) and value.shape == (6,)
    (logits.sum() + value.sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert "locate.weight" not in dict(model.named_parameters())  # the default finds the agent without weights
    assert build_agent("pixel_rcnn", cfg.obs_shape, 4, {}).iterations == 14  # default: twice the side in cells
    with pytest.raises(ConfigError, match="cell_pixels"):
        build_agent("pixel_rcnn", (3, 15, 15), 4, {"cell_pixels": 2})
    with pytest.raises(ConfigError, match="cell_pixels"):  # one-hot planes are not an image of 2-pixel cells
        build_agent("pixel_rcnn", MazeConfig(**SMALL).obs_shape, 4, {})
    with pytest.raises(ConfigError, match="agent.locate"):
        build_agent("pixel_rcnn", cfg.obs_shape, 4, {"locate": "plane"})


@pytest.mark.parametrize("p", [1, 2, 3])
def test_colour_locate_is_the_agent_plane(p):
    cfg = MazeConfig(**SMALL, obs="rgb", cell_pixels=p)
    ra = parse_reward("collect:0", 5)
    img = cfg.make(ra, 32, seed=7).observe()
    planes = MazeConfig(**SMALL).make(ra, 32, seed=7).observe()
    model = build_agent("pixel_rcnn", cfg.obs_shape, 4, {**AGENT_CFG, "cell_pixels": p})
    where = model.agent_map(torch.from_numpy(img).float(), None)
    torch.testing.assert_close(where, torch.from_numpy(planes[:, 1:2]).float())


def test_learned_locate_is_a_scaled_softmax_that_learns():
    cfg = MazeConfig(**SMALL, obs="rgb")
    torch.manual_seed(0)
    model = build_agent("pixel_rcnn", cfg.obs_shape, 4, {**AGENT_CFG, "locate": "learned", "locate_scale": 7.0})
    x = _image(cfg)
    cells = torch.relu(model.conv1(x.float() / 255))
    where = model.agent_map(x.float(), cells)
    assert where.shape == (6, 1, 7, 7)
    torch.testing.assert_close(where.flatten(1), torch.softmax(model.locate(cells).flatten(1) * 7.0, 1))
    logits, value = model(x)
    (logits.sum() + value.sum()).backward()
    assert model.locate.weight.grad.abs().sum() > 0


def _scene(agent=(5, 5), size=15, seed=0, p=2) -> torch.Tensor:
    """An image of random cells (floor, walls, types) with the agent's colour at ``agent``, p pixels a cell."""
    rng = np.random.default_rng(seed)
    code = np.where(rng.random((size, size)) < 0.5, 0, rng.choice([1, 3, 4, 5, 6, 7], (size, size)))
    code[agent] = 2
    img = palette(5)[code].transpose(2, 0, 1).repeat(p, 1).repeat(p, 2)
    return torch.from_numpy(np.ascontiguousarray(img))[None]


def _model(iterations: int) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_agent("pixel_rcnn", (3, 30, 30), 4, {"channels": [16, 8], "width": 8, "iterations": iterations,
                                                      "hidden": 8})


def test_pixel_rcnn_reads_where_the_agent_is():
    model = _model(iterations=2)
    a = _scene((5, 5))
    # The same surroundings at another place give the same output.
    b = torch.roll(_scene((5, 5)), (8, 8), (2, 3))
    torch.testing.assert_close(model(a)[0], model(b)[0])


@pytest.mark.parametrize("iterations", [1, 3])
def test_pixel_rcnn_reach_grows_one_cell_per_iteration(iterations):
    # The per-cell conv sees only its own cell, so the reach is rcnn's: readout 1 + conv2 1 + inject 1 + one per step.
    model = _model(iterations)
    reach = 3 + iterations
    base = _scene((7, 7))
    out = model(base)[0]

    def changed(d):
        x = base.clone()
        x[0, :, 14:16, 2 * (7 + d):2 * (7 + d) + 2] = torch.tensor([255, 0, 255], dtype=torch.uint8)[:, None, None]
        return not torch.allclose(model(x)[0], out, atol=0, rtol=0)

    assert changed(reach)
    assert not changed(reach + 1)


def test_hooks_record_pixel_rcnn_sites():
    cfg = MazeConfig(**SMALL, obs="rgb")
    model = build_agent("pixel_rcnn", cfg.obs_shape, 4, {**AGENT_CFG, "locate": "learned"})
    sites = hooks.default_sites(model)
    assert sites[:3] == ["conv1", "locate", "conv2"] and "recur" in sites and sites[-1] == "policy"
    assert hooks.repeated_sites(model) == ("recur",)
    with hooks.record(model, sites) as acts:
        model(_image(cfg))
    assert acts["conv1"].shape == (6, 8, 7, 7) and acts["locate"].shape == (6, 1, 7, 7)
    assert "locate" not in hooks.default_sites(build_agent("pixel_rcnn", cfg.obs_shape, 4, AGENT_CFG))


def test_tiny_training_on_the_colour_maze():
    cfg = MazeConfig(**SMALL, obs="rgb", end_when_collected=True)
    ra = parse_reward("collect:0", 5)
    ppo = PPOConfig(total_steps=1024, n_envs=16, n_steps=16, epochs=1, minibatch_size=128, lr=0.003)
    ck = train_new("pixel_rcnn", AGENT_CFG, cfg, ra, ppo, seed=0)
    fresh = build_agent("pixel_rcnn", cfg.obs_shape, 4, AGENT_CFG)
    torch.manual_seed(0)
    model = ck.build()
    assert ck.env == cfg and ck.steps == 1024
    assert any(not torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    prof = evaluate(model, cfg, ra, 8, 5)
    assert prof.counts.shape == (8, 5) and np.isfinite(prof.returns(ra)).all()
