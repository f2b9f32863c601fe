import subprocess
import sys

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from goalscope.envs.gym import ENV_ID, ObjectMazeEnv, ObjectMazeVectorEnv, register_envs, render_ansi
from goalscope.envs.maze import MazeConfig, MazeVecEnv, layout_pool
from goalscope.envs.oracle import oracle_actions
from goalscope.envs.rewards import parse_reward
from goalscope.errors import ConfigError
from goalscope.rl.evaluation import oracle_profile, run_episodes

R0 = parse_reward("collect:0", 4)
MOVES = {0: (-1, 0), 1: (0, 1), 2: (1, 0), 3: (0, -1)}


def test_maze_layouts_are_connected_and_walled():
    cfg = MazeConfig(size=9, pool_size=64)
    pool = layout_pool(cfg)
    assert pool[:, 0, :].all() and pool[:, -1, :].all() and pool[:, :, 0].all() and pool[:, :, -1].all()
    for walls in pool[:8]:
        free = {tuple(c) for c in np.argwhere(~walls)}
        start = next(iter(free))
        seen, stack = {start}, [start]
        while stack:
            r, c = stack.pop()
            for dr, dc in MOVES.values():
                n = (r + dr, c + dc)
                if n in free and n not in seen:
                    seen.add(n)
                    stack.append(n)
        assert seen == free  # every free cell reachable: no object is ever unreachable
    # Mazes are corridors, not rooms: a perfect 9x9 maze opens 31 of the 49 interior cells, loops add a few.
    assert 31 <= (~pool).sum(axis=(1, 2)).mean() < 0.75 * 49


def test_walls_block_and_moves_follow_actions():
    env = MazeVecEnv(MazeConfig(), R0, 256, seed=1)
    g = env.grid_state()
    for a in range(4):
        env2 = MazeVecEnv(MazeConfig(), R0, 256, seed=1)
        env2.step(np.full(256, a))
        g2 = env2.grid_state()
        dr, dc = MOVES[a]
        target = g["pos"] + [dr, dc]
        blocked = g["walls"][np.arange(256), target[:, 0], target[:, 1]]
        expect = np.where(blocked[:, None], g["pos"], target)
        assert (g2["pos"] == expect).all()
        assert blocked.any() and (~blocked).any()
        assert not g2["walls"][np.arange(256), g2["pos"][:, 0], g2["pos"][:, 1]].any()


def test_objects_are_consumed_and_rewards_follow_the_vector():
    reward = parse_reward("2*collect:0+avoid:1+0.5*collect:3+step:0.1", 4)
    env = MazeVecEnv(MazeConfig(), reward, 512, seed=3)
    rng = np.random.default_rng(0)
    total_counts = np.zeros(4)
    for _ in range(30):
        before = env.grid_state()
        _, r, term, trunc, info = env.step(rng.integers(4, size=512))
        after = env.grid_state()
        ar = np.arange(512)
        kind = before["objects"][ar, after["pos"][:, 0], after["pos"][:, 1]]
        live = ~(term | trunc)
        expected = np.where(kind >= 0, np.append(reward.vector(), 0)[kind], 0) - 0.1
        np.testing.assert_allclose(r[live], expected[live], rtol=1e-6)
        # The collected object is gone from the grid and from the observation (unless the env just reset).
        assert (after["objects"][ar[live], after["pos"][live, 0], after["pos"][live, 1]] == -1).all()
        total_counts += np.bincount(kind[live & (kind >= 0)], minlength=4)
    assert (total_counts > 0).all()


def test_observation_matches_state():
    env = MazeVecEnv(MazeConfig(), R0, 64, seed=5)
    for _ in range(20):
        obs, *_ = env.step(np.random.default_rng(1).integers(4, size=64))
    g = env.grid_state()
    assert obs.shape == (64, 6, 9, 9) and obs.dtype == np.uint8
    assert (obs[:, 0] == g["walls"]).all()
    assert (obs[:, 1].reshape(64, -1).argmax(1) == g["pos"][:, 0] * 9 + g["pos"][:, 1]).all()
    assert obs[:, 1].sum() == 64
    for k in range(4):
        assert (obs[:, 2 + k] == (g["objects"] == k)).all()


def test_same_seed_same_trajectories_and_different_seed_differs():
    acts = np.random.default_rng(0).integers(4, size=(60, 32))

    def roll(seed):
        env = MazeVecEnv(MazeConfig(), R0, 32, seed=seed)
        out = [env.observe()]
        for a in acts:
            o, r, *_ = env.step(a)
            out.append(o)
        return np.stack(out)

    assert np.array_equal(roll(7), roll(7))
    assert not np.array_equal(roll(7), roll(8))


def test_auto_reset_and_episode_stats():
    cfg = MazeConfig(max_steps=10)
    env = MazeVecEnv(cfg, R0, 16, seed=0)
    for t in range(1, 11):
        _, _, term, trunc, info = env.step(np.zeros(16, dtype=int))
    assert (term | trunc).all() and len(info["done_idx"]) == 16
    assert (info["steps"] <= 10).all()
    assert (env.t == 0).all()  # every env already started its next episode
    assert info["final_obs"].shape == (16, *cfg.obs_shape)


def test_episode_ends_when_rewarded_objects_are_gone():
    cfg = MazeConfig(size=7, n_per_type=1, max_steps=200, end_when_collected=True)
    env = MazeVecEnv(cfg, R0, 64, seed=0)
    ended = np.zeros(64, dtype=bool)
    for _ in range(200):
        _, _, term, trunc, info = env.step(oracle_actions(env))
        if info:
            assert (info["counts"][term[info["done_idx"]], 0] == 1).all()
        ended |= term
    assert ended.all()


def test_oracle_collects_everything_on_small_mazes():
    for layout in ("maze", "open"):
        cfg = MazeConfig(size=7, n_types=3, n_per_type=2, max_steps=80, layout=layout)
        reward = parse_reward("collect:0+collect:2", 3)
        prof = oracle_profile(cfg, reward, n_episodes=64, seed=0)
        assert (prof.counts[:, 0] == 2).all() and (prof.counts[:, 2] == 2).all()


def test_oracle_beats_random_and_avoids_penalised_objects():
    cfg = MazeConfig()
    reward = parse_reward("collect:0+avoid:1", 4)
    oracle = oracle_profile(cfg, reward, 128, seed=0)
    rand = run_episodes(lambda o, e: np.random.default_rng(0).integers(4, size=len(o)), cfg, reward, 128, 0)
    assert oracle.returns(reward).mean() > rand.returns(reward).mean() + 1.0
    # Routing around penalised objects where the maze allows it: fewer of them than an oracle that ignores them.
    ignoring = oracle_profile(cfg, parse_reward("collect:0", 4), 128, seed=0)
    assert oracle.counts[:, 1].mean() < 0.75 * ignoring.counts[:, 1].mean()
    assert (oracle.counts[:, 0] == 2).mean() > 0.9


def test_gymnasium_single_env_passes_check_env():
    env = ObjectMazeEnv(MazeConfig(size=7), "collect:1", render_mode="ansi")
    check_env(env, skip_render_check=True)
    obs, _ = env.reset(seed=3)
    assert env.observation_space.contains(obs)
    assert "A" in env.render()
    check_env(ObjectMazeEnv(size=7, render_mode="rgb_array"))  # with Gymnasium's own render checks


def test_gym_make_with_keyword_options_in_a_fresh_interpreter():
    code = ("import gymnasium as gym, goalscope\n"
            "env = gym.make('goalscope/ObjectMaze-v0', size=7, n_types=5, render_mode='rgb_array')\n"
            "obs, _ = env.reset(seed=0)\nprint(obs.shape, env.render().shape)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0] == "(7, 7, 7) (84, 84, 3)"  # 2 + K planes; 12-pixel cells


def test_single_env_reports_events_every_step_and_frames_show_the_grid():
    env = ObjectMazeEnv(size=7, n_types=3, max_steps=24, render_mode="rgb_array")
    env.reset(seed=5)
    total = np.zeros(3, dtype=int)
    rng = np.random.default_rng(0)
    for _ in range(24):
        _, reward, term, trunc, info = env.step(int(rng.integers(4)))
        total += info["events"]
        assert reward == info["events"][0]  # collect:0 pays for exactly the type-0 events of the step
    assert trunc and (info["episode_events"] == total).all() and info["steps"] == 24
    frame = env.render()
    walls = frame[::12, ::12].reshape(-1, 3) == np.array([60, 60, 70])
    assert walls.all(1).sum() == int(env._env.walls[0].sum())  # one wall-coloured cell per wall


def test_unseeded_vector_resets_start_new_episodes():
    venv = ObjectMazeVectorEnv(4, size=7)
    a, _ = venv.reset()
    b, _ = venv.reset()
    c, _ = venv.reset(seed=9)
    d, _ = venv.reset(seed=9)
    assert not np.array_equal(a, b) and np.array_equal(c, d)


def test_gymnasium_registration_and_vector_env():
    register_envs()
    env = gym.make(ENV_ID, reward="collect:2")
    obs, _ = env.reset(seed=0)
    assert obs.shape == (6, 9, 9)
    venv = gym.make_vec(ENV_ID, num_envs=8, vectorization_mode="vector_entry_point", reward="collect:2")
    assert isinstance(venv.unwrapped, ObjectMazeVectorEnv)
    obs, _ = venv.reset(seed=1)
    assert venv.observation_space.contains(obs)
    for _ in range(50):
        obs, r, term, trunc, info = venv.step(venv.action_space.sample())
        if (term | trunc).any():
            assert info["_final_obs"][term | trunc].all()


def test_bad_env_configs_name_the_field():
    with pytest.raises(ConfigError, match="size"):
        MazeConfig(size=8)
    with pytest.raises(ConfigError, match="layout"):
        MazeConfig(layout="spiral")
    with pytest.raises(ConfigError, match="do not fit"):
        MazeConfig(size=5, n_types=4, n_per_type=3)
    with pytest.raises(ConfigError, match="unknown field 'colour'"):
        MazeConfig.from_json({"colour": 1})


def test_render_ansi_shows_every_object():
    env = MazeVecEnv(MazeConfig(), R0, 2, seed=0)
    pic = render_ansi(env)[0]
    assert pic.count("A") == 1 and sum(pic.count(str(k)) for k in range(4)) == 8


def test_cued_reward_pays_the_cued_type_and_the_cue_is_observed():
    cfg = MazeConfig(size=7, n_types=3, n_per_type=1, cue=True)
    env = MazeVecEnv(cfg, parse_reward("cued", 3), 128, seed=0)
    obs = env.observe()
    assert obs.shape == (128, 2 + 3 + 3, 7, 7)
    cue_planes = obs[:, 5:]
    assert (cue_planes.sum(axis=(2, 3)) == np.eye(3, dtype=int)[env.cue] * 49).all()
    assert len(set(env.cue.tolist())) == 3  # random cue per episode
    rng = np.random.default_rng(0)
    for _ in range(30):
        before = env.grid_state()
        _, r, term, trunc, _ = env.step(rng.integers(4, size=128))
        after = env.grid_state()
        live = ~(term | trunc)
        kind = before["objects"][np.arange(128), after["pos"][:, 0], after["pos"][:, 1]]
        expect = np.where(kind >= 0, (kind == env.cue).astype(float), 0.0)
        assert np.allclose(r[live], expect[live])
    fixed = MazeVecEnv(MazeConfig(size=7, n_types=3, n_per_type=1, cue=True, fixed_cue=2), parse_reward("collect:0", 3), 16, 0)
    assert (fixed.cue == 2).all() and (fixed.observe()[:, 7] == 1).all()
    with pytest.raises(ConfigError, match="env.cue is false"):
        MazeVecEnv(MazeConfig(), parse_reward("cued", 4), 4, 0)
    with pytest.raises(ConfigError, match="fixed_cue"):
        MazeConfig(cue=True, fixed_cue=7)


def test_oracle_follows_the_cue():
    cfg = MazeConfig(size=7, n_types=3, n_per_type=1, cue=True, max_steps=40)
    prof = oracle_profile(cfg, parse_reward("cued", 3), 64, seed=0)
    assert (prof.env_returns == 1).all()


def test_egocentric_view_is_the_grid_around_the_agent():
    cfg = MazeConfig(size=7, view="egocentric")
    env = MazeVecEnv(cfg, R0, 32, seed=2)
    for _ in range(5):
        obs, *_ = env.step(np.random.default_rng(0).integers(4, size=32))
    assert obs.shape == (32, 6, 13, 13) == (32, *cfg.obs_shape)
    assert (obs[:, 1, 6, 6] == 1).all() and obs[:, 1].sum() == 32  # the agent is always in the centre
    g = env.grid_state()
    for i in range(32):
        r, c = g["pos"][i]
        for dr in range(-6, 7):
            for dc in range(-6, 7):
                rr, cc = r + dr, c + dc
                inside = 0 <= rr < 7 and 0 <= cc < 7
                assert obs[i, 0, 6 + dr, 6 + dc] == (g["walls"][i, rr, cc] if inside else 1)
                if inside:
                    assert obs[i, 2, 6 + dr, 6 + dc] == (g["objects"][i, rr, cc] == 0)
    with pytest.raises(ConfigError, match="env.view"):
        MazeConfig(view="360")


def test_final_position_is_reported_for_ended_episodes():
    env = MazeVecEnv(MazeConfig(max_steps=3), R0, 8, seed=0)
    env.step(np.zeros(8, dtype=int))
    env.step(np.ones(8, dtype=int))
    before = env.grid_state()["pos"]
    actions = np.full(8, 2)
    target = before + [1, 0]
    blocked = env.grid_state()["walls"][np.arange(8), target[:, 0], target[:, 1]]
    _, _, _, trunc, info = env.step(actions)
    assert trunc.all()
    assert (info["final_pos"] == np.where(blocked[:, None], before, target)).all()
