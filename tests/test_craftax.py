"""Craftax-Classic as an env family: achievements as events (equal to the game's own counters), the optimistic reset
pool, bit-reproducible episodes, snapshots, the Gymnasium entries and a tiny real experiment.

Where jax and craftax are not installed, only the config checks run and the rest is skipped with the command that
installs them. Every JAX test uses one batch shape (16 envs, the size of the runner's random rollout before the
first job; 48-step episodes, four achievements, pools of 3), so the file compiles one batch (~60 s on 2 busy cores,
~10 s from JAX's persistent cache on later runs)."""

import os
from pathlib import Path

import numpy as np
import pytest

from goalscope.envs import env_from_json
from goalscope.envs.craftax import ACHIEVEMENTS, PIXELS_ID, CraftaxConfig, craftax_available
from goalscope.envs.craftax_jax import MAP_FEATURES
from goalscope.envs.rewards import parse_reward
from goalscope.errors import ConfigError

INSTALL = "needs the craftax extra: pip install 'goalscope[craftax]' (jax and craftax)"
TYPES = ["collect_wood", "collect_sapling", "collect_drink", "eat_cow"]
CFG = CraftaxConfig(achievements=TYPES, max_steps=48, reset_pool=3)
N = 16


@pytest.fixture(scope="module")
def jax():
    jax = pytest.importorskip("jax", reason=f"Craftax {INSTALL}")
    pytest.importorskip("craftax", reason=f"Craftax {INSTALL}")
    # compiled batches kept with pytest's cache (git-ignored), not in the user's home
    os.environ.setdefault("GOALSCOPE_JAX_CACHE", str(Path(__file__).resolve().parent.parent / ".pytest_cache" / "jax"))
    return jax


def make(seed=0, reward="collect:collect_wood", cfg=CFG):
    return cfg.make(parse_reward(reward, cfg.n_types, cfg.event_names), N, seed=seed)


def test_the_config_names_achievements_and_round_trips_without_jax():
    cfg = env_from_json({"family": "craftax", "id": PIXELS_ID, "achievements": TYPES, "max_steps": 100})
    assert cfg.kind == "Pixels" and cfg.n_types == 4 and cfg.event_names == TYPES and cfg.n_actions == 17
    assert cfg.types == (0, 3, 4, 2) and env_from_json(cfg.to_json()) == cfg
    assert CraftaxConfig().n_types == 22 and CraftaxConfig().event_names == list(ACHIEVEMENTS)
    for bad, match in [({"achievements": ["collect_gold"]}, "'collect_gold' is not a Craftax-Classic achievement"),
                       ({"achievements": ["eat_cow", "eat_cow"]}, "lists 'eat_cow' twice"),
                       ({"id": "Craftax-Classic-Symbolic-v1"}, "is not a Craftax env"),
                       ({"max_steps": 0}, "max_steps must be an integer >= 1"),
                       ({"colour": 1}, "unknown field 'colour'")]:
        with pytest.raises(ConfigError, match=match):
            env_from_json({"family": "craftax", **bad})


@pytest.mark.skipif(craftax_available(), reason="jax and craftax are installed here")
def test_without_jax_the_env_says_how_to_install_it():
    with pytest.raises(ConfigError, match=r"pip install 'goalscope\[craftax\]'"):
        CFG.obs_shape
    with pytest.raises(ConfigError, match=r"pip install 'goalscope\[craftax\]'"):
        make()


def test_achievement_names_are_craftax_own_order(jax):
    from craftax.craftax_classic.constants import Achievement

    assert ACHIEVEMENTS == tuple(a.name.lower() for a in sorted(Achievement, key=lambda a: a.value))


def test_observations_reach_numpy_without_a_copy(jax):
    from goalscope.envs.craftax_jax import to_numpy

    x = jax.numpy.arange(N * 1345, dtype=jax.numpy.uint8).reshape(N, 1345)
    assert to_numpy(x).ctypes.data == x.unsafe_buffer_pointer() and to_numpy(x).shape == (N, 1345)


def test_events_equal_the_games_own_achievement_counters(jax):
    from craftax.craftax_classic.constants import Achievement

    env, rng = make(seed=1), np.random.default_rng(0)
    assert env.observe().shape == (N, *CFG.obs_shape) == (N, 1345) and env.observe().dtype == np.uint8
    weights = np.array([1.0, 0, 0, 0])
    totals, ended = np.zeros(4, dtype=np.int64), 0
    for _ in range(150):
        before = env.counts.copy()
        obs, reward, term, trunc, info = env.step(rng.integers(17, size=N))
        flags = np.array(env.state.achievements)  # the game's own flags, by Craftax's enum
        game = np.stack([flags[:, Achievement[t.upper()].value] for t in TYPES], axis=1)
        assert (env.counts == game).all()  # running episodes: events so far = the game's flags
        events = env.counts - before
        if info:
            idx = info["done_idx"]
            ended += len(idx)
            events[idx] = info["counts"] - before[idx]
            # ended episodes: their events = what Craftax's own info reports at an episode's end
            assert (info["counts"] == info["achievements"]).all()
            assert (info["counts"] <= 1).all() and (info["steps"] <= CFG.max_steps).all()
            assert (env.counts[idx] == 0).all() and (game[idx] == 0).all()
        assert ((events == 0) | (events == 1)).all()
        assert np.allclose(reward, events @ weights)  # goalscope pays from the events, never the game's reward
        assert not (term & trunc).any()
        totals += events.sum(0)
    assert ended >= N * 2 and totals.sum() > 0, (ended, totals)


def test_the_reset_pool_gives_every_ended_env_a_fresh_world_of_its_own(jax):
    env = make(seed=2)
    for _ in range(5):
        env.step(np.zeros(N, dtype=np.int64))
    assert env.cfg.pool(N) == 3
    ending = np.array([1, 3, 4, 6, 13])  # five envs end at once: two pools of three fresh worlds, one left over
    others = np.setdiff1d(np.arange(N), ending)
    timestep = np.array(env.state.timestep)
    timestep[ending] = CFG.max_steps - 1
    env.state = env.state.replace(timestep=jax.numpy.asarray(timestep))
    maps_before, obs_before = np.array(env.state.map), env.observe().copy()
    obs, _, term, trunc, info = env.step(np.zeros(N, dtype=np.int64))  # noop
    assert list(info["done_idx"]) == list(ending) and trunc[ending].all() and not term.any()
    assert (info["steps"] == 6).all() and (env.t == np.where(np.isin(np.arange(N), ending), 0, 6)).all()
    timestep, maps = np.array(env.state.timestep), np.array(env.state.map)
    assert (timestep[ending] == 0).all() and (timestep[others] == 6).all()
    fresh = {maps[i].tobytes() for i in ending}
    assert len(fresh) == len(ending)  # no two envs share a world
    assert all((maps[i] != maps_before[i]).any() for i in ending)  # and each is new
    assert all((maps[i] == maps_before[i]).all() for i in others)  # the others keep theirs
    # the ended episodes' last observations (after a noop: the same blocks around the player as before the step)
    blocks = lambda o: o[:, :MAP_FEATURES].reshape(-1, 7, 9, 21)[..., :17]  # noqa: E731
    assert (blocks(info["final_obs"]) == blocks(obs_before[ending])).all()
    assert all((obs[i] != f).any() for i, f in zip(ending, info["final_obs"]))
    assert int(env._state[3]) == 1  # the second pool's last world waits for the next env that ends
    # a step in which nothing ended leaves every world where it was (no reset drawn)
    obs, _, _, _, info = env.step(np.zeros(N, dtype=np.int64))
    assert info == {} and (np.array(env.state.map) == maps).all() and int(env._state[3]) == 1
    waiting = np.array(env._state[1].map[2])
    timestep = np.array(env.state.timestep)
    timestep[0] = CFG.max_steps - 1
    env.state = env.state.replace(timestep=jax.numpy.asarray(timestep))
    _, _, _, _, info = env.step(np.zeros(N, dtype=np.int64))
    assert list(info["done_idx"]) == [0] and (np.array(env.state.map[0]) == waiting).all()  # it took that world
    assert int(env._state[3]) == 0


def test_one_seed_gives_bit_identical_episodes(jax):
    a, b, c = make(seed=5), make(seed=5), make(seed=6)
    assert a.observe().tobytes() == b.observe().tobytes() != c.observe().tobytes()
    actions = np.random.default_rng(3).integers(17, size=(120, N))
    runs = []
    for env in (a, b):
        log = [env.observe().tobytes()]
        for act in actions:
            obs, reward, term, trunc, info = env.step(act)
            log += [obs.tobytes(), reward.tobytes(), term.tobytes(), trunc.tobytes(), env.counts.tobytes(),
                    info.get("final_obs", np.zeros(0)).tobytes()]
        runs.append(log)
    assert runs[0] == runs[1]
    assert a.reset(5).tobytes() == runs[0][0]  # a reset with the seed starts the same worlds again
    # world i of a seeded batch depends on the seed and i only: a batch of 5 starts with the first 5 of 16
    from goalscope.envs.craftax_jax import core, seed_key

    state, _, obs = core("Symbolic", 5, 1, CFG.max_steps, CFG.types).reset(jax.numpy.asarray(seed_key(5)))
    assert np.asarray(obs).tobytes() == runs[0][0][:5 * 1345]


def test_a_snapshot_of_the_env_continues_bit_identically(jax):
    env, rng = make(seed=7), np.random.default_rng(1)
    for act in rng.integers(17, size=(30, N)):
        env.step(act)
    arrays, rng_state = env.get_state()
    import json

    rng_state = json.loads(json.dumps(rng_state))  # as a snapshot stores it
    actions = rng.integers(17, size=(40, N))
    first = [env.step(act)[0].tobytes() for act in actions]
    other = make(seed=99)
    other.set_state({k: np.array(v) for k, v in arrays.items()}, rng_state)
    assert [other.step(act)[0].tobytes() for act in actions] == first
    assert (other.counts == env.counts).all() and (other.t == env.t).all()


def test_a_killed_craftax_job_resumes_bit_identically(jax, tmp_path):
    """Unlike Crafter, the env hands its state to the snapshot: the resumed run ends with the same weights."""
    import torch

    from goalscope.agents.registry import build_agent
    from goalscope.rl.ppo import PPOConfig, train

    reward = parse_reward("collect:collect_wood", CFG.n_types, CFG.event_names)
    ppo = PPOConfig(total_steps=N * 16 * 4, n_envs=N, n_steps=16, minibatch_size=64, epochs=1, save_every=N * 16,
                    save_every_s=0, eval_episodes=N)

    class Killed(Exception):
        pass

    def kill_after_two(step, row, model):
        if step >= 2 * N * 16:
            raise Killed

    def model():
        torch.manual_seed(0)
        return build_agent("mlp", CFG.obs_shape, CFG.n_actions)

    whole = model()
    train(whole, CFG, reward, ppo, 0)
    with pytest.raises(Killed):
        train(model(), CFG, reward, ppo, 0, resume_dir=tmp_path, callbacks=[kill_after_two])
    resumed = model()
    result = train(resumed, CFG, reward, ppo, 0, resume_dir=tmp_path)
    assert not any(r.get("charts/resumed_fresh_episodes") for r in result.history)  # the worlds were restored
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()))


def test_gymnasium_vector_entry(jax):
    import gymnasium as gym

    import goalscope  # noqa: F401 (registers the ids)

    envs = gym.make_vec("goalscope/Craftax-Classic-Symbolic-v0", num_envs=N, achievements=TYPES, max_steps=48,
                        reset_pool=3)
    obs, _ = envs.reset(seed=5)
    assert obs.shape == (N, 1345) and envs.single_action_space.n == 17
    assert obs.tobytes() == make(seed=5).observe().tobytes()
    rng, total, finals = np.random.default_rng(0), 0, 0
    for _ in range(60):
        obs, reward, term, trunc, info = envs.step(rng.integers(17, size=N))
        assert info["events"].shape == (N, 4) and np.allclose(reward, info["events"].sum(1))
        total += info["events"].sum()
        finals += int(info.get("_final_obs", np.zeros(N, bool)).sum())
    assert finals >= N and total > 0
    with pytest.raises(ConfigError, match="actions must be 16 integers from 0 to 16"):
        envs.step(np.full(N, 17))


def test_tiny_real_craftax_experiment(jax, tmp_path):
    from goalscope.analysis.effects.experiment import run_experiment
    from goalscope.analysis.records import read_records
    from goalscope.program.config import experiment_from_dict

    cfg = experiment_from_dict({
        "name": "craftax-tiny", "seeds": [0], "workers": 1, "env": CFG.to_json(), "agent": {"arch": "mlp"},
        "ppo": {"n_envs": N, "n_steps": 16, "minibatch_size": 64, "epochs": 1},
        "base": {"reward": "collect:collect_wood", "steps": 256},
        "finetune": {"rewards": ["collect:collect_sapling"], "steps": 256},
        "negate": {"alphas": [1.0], "retrain_steps": 256, "random_directions": 1},
        "superpose": {"methods": ["mean_abs", "fisher"], "fisher_samples": N},  # one batch shape throughout
        "evaluation": {"episodes": N, "bootstrap": 100},
    })
    assert cfg.env == CFG and cfg.env.obs_shape == (1345,)
    summary = run_experiment(cfg, tmp_path / "run", log=lambda *a: None)
    assert summary["failed_jobs"] == []
    metrics = {r["metric"] for r in read_records(tmp_path / "run" / "records.csv")}
    assert {"return", "objects:0", "objects:3"} <= metrics, sorted(metrics)
    assert summary["competence"]["MA"]["fraction_of_oracle"] is None
