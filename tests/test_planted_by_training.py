"""Issue 35, item 2: a planted objective placed by training in a normal architecture (``planted_rcnn``).

MA is pretrained on a reward with no type preference, then trained on RA with only a designated set of units free,
so MA - pretrained is nonzero there alone. These tests hold that construction, its labels and its config checks;
docs/results/planted.md has what it measured.
"""

import pytest
import torch

from goalscope.agents.checkpoints import load_checkpoint
from goalscope.agents.registry import build_agent, objective_mask
from goalscope.envs.maze import MazeConfig
from goalscope.envs.rewards import parse_reward
from goalscope.errors import ConfigError
from goalscope.program.config import experiment_from_dict
from goalscope.program.jobs import PRETRAINED, run_job, stage_dir
from goalscope.program.runner import plan_experiment
from goalscope.rl.ppo import PPOConfig, train

ENV = MazeConfig(size=5, n_types=3, n_per_type=1, max_steps=12, pool_size=16)
AGENT = {"channels": [8], "width": 4, "iterations": 4, "hidden": 16, "plant_layer": "inject", "plant_units": 2}
TINY = {
    "name": "planted", "seeds": [0], "workers": 0,
    "env": {"size": 5, "n_types": 3, "n_per_type": 1, "max_steps": 12, "pool_size": 16},
    "agent": {"arch": "planted_rcnn", "config": AGENT},
    "ppo": {"n_envs": 8, "n_steps": 16},
    "base": {"steps": 256, "pretrain_reward": "1,1,1", "pretrain_steps": 256},
    "finetune": {"steps": 128}, "negate": {"enabled": False},
    "superpose": {"methods": ["mean_abs"]}, "evaluation": {"episodes": 8, "bootstrap": 200},
}


def test_the_labels_are_the_designated_units_rows_drawn_from_the_config_alone():
    model = build_agent("planted_rcnn", ENV.obs_shape, 4, AGENT)
    mask = objective_mask(model)
    units = list(model.plant_units)
    assert len(units) == 2 and units == list(build_agent("planted_rcnn", ENV.obs_shape, 4, AGENT).plant_units)
    assert mask["inject.weight"][units].all() and mask["inject.bias"][units].all()
    assert int(mask["inject.weight"].sum()) == 2 * mask["inject.weight"][0].numel()
    assert int(mask["inject.bias"].sum()) == 2
    assert not any(m.any() for k, m in mask.items() if not k.startswith("inject."))
    other = build_agent("planted_rcnn", ENV.obs_shape, 4, {**AGENT, "plant_seed": 5, "plant_units": 3})
    assert len(other.plant_units) == 3
    # the same parameters, names and init stream as rcnn: only the labels are added
    plain = {k: v for k, v in AGENT.items() if not k.startswith("plant_")}
    torch.manual_seed(0)
    a = build_agent("rcnn", ENV.obs_shape, 4, plain).state_dict()
    torch.manual_seed(0)
    b = build_agent("planted_rcnn", ENV.obs_shape, 4, AGENT).state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("over, field", [({"plant_layer": "policy"}, "plant_layer"),
                                         ({"plant_units": 4}, "plant_units"), ({"plant_units": 0}, "plant_units")])
def test_bad_plant_settings_name_the_field(over, field):
    with pytest.raises(ConfigError, match=field):
        build_agent("planted_rcnn", ENV.obs_shape, 4, {**AGENT, **over})


def test_training_with_free_moves_only_the_free_entries():
    torch.manual_seed(0)
    model = build_agent("planted_rcnn", ENV.obs_shape, 4, AGENT)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    mask = objective_mask(model)
    train(model, ENV, parse_reward("collect:0", 3), PPOConfig(n_envs=8, n_steps=16, total_steps=256,
                                                              eval_episodes=4), 0, free=mask)
    after = model.state_dict()
    assert all(torch.equal(after[k][~mask[k]], before[k][~mask[k]]) for k in mask)
    assert any(not torch.equal(after[k][mask[k]], before[k][mask[k]]) for k in mask if mask[k].any())


@pytest.mark.parametrize("over, message", [
    ({"base": {"steps": 256}}, "base.pretrain_reward"),  # planted_rcnn without pretraining
    ({"agent": {"arch": "rcnn", "config": {"channels": [8]}}}, "planted_rcnn"),  # pretraining an unplanted arch
    ({"base": {"steps": 256, "pretrain_reward": "collect:0", "pretrain_steps": 256}}, "RA itself"),
    ({"base": {"steps": 256, "pretrain_reward": "1,1,1", "pretrain_steps": 0}}, "base.pretrain_steps"),
])
def test_config_errors_name_the_field(over, message):
    with pytest.raises(ConfigError, match=message):
        experiment_from_dict({**TINY, **over}).validate()


def test_other_runs_keep_their_job_keys():
    """Only an MA planted by training has a pretrain entry in its spec, so every other run keeps its keys."""
    plain = experiment_from_dict({**TINY, "agent": {"arch": "rcnn", "config": {"channels": [8]}},
                                  "base": {"steps": 256}})
    assert all("pretrain" not in j.spec for j in plan_experiment(plain).jobs() if j.kind == "train")
    planted = plan_experiment(experiment_from_dict(TINY).validate())
    (ma,) = [j for j in planted.jobs() if j.kind == "train"]
    assert ma.spec["pretrain"]["reward"]["name"] == "1,1,1" and ma.spec["pretrain"]["ppo"]["total_steps"] == 256


def test_a_real_run_plants_ma_minus_pretrained_in_the_designated_units_only(tmp_path):
    (job,) = [j for j in plan_experiment(experiment_from_dict(TINY).validate()).jobs() if j.kind == "train"]
    assert run_job(job, tmp_path)["status"] == "ok"
    stage = stage_dir(tmp_path, job.key)
    ma, pre = load_checkpoint(stage), load_checkpoint(stage / PRETRAINED)
    mask = objective_mask(ma.build())
    diff = {k: ma.state_dict[k] - pre.state_dict[k] for k in mask}
    assert all(not d[~mask[k]].any() for k, d in diff.items())
    assert any(d[mask[k]].any() for k, d in diff.items())
    assert ma.steps == pre.steps + 256 and ma.reward.name == "collect:0" and pre.reward.name == "1,1,1"


def test_the_causal_gate_compares_with_the_same_layers_other_units():
    """Zeroing half of a layer damages any agent; the null edit must damage as much of the same layer, so only the
    objective tells the two apart (a gate that passes on damage alone cannot fail)."""
    from goalscope.agents.registry import objective_null_pool
    from goalscope.analysis.validate.causal import random_mask

    model = build_agent("planted_rcnn", ENV.obs_shape, 4, AGENT)
    mask, pool = objective_mask(model), objective_null_pool(model)
    others = [u for u in range(4) if u not in model.plant_units]  # inject has width 4 here
    assert pool["inject.weight"][others].all() and not pool["inject.weight"][list(model.plant_units)].any()
    assert not any(p.any() for k, p in pool.items() if not k.startswith("inject."))
    state = model.state_dict()
    size = int(sum(int(m.sum()) for m in mask.values()))
    drawn = random_mask(state, size, mask, torch.Generator().manual_seed(0), pool)
    assert sum(int(d.sum()) for d in drawn.values()) == size
    assert all(not (drawn[k] & ~pool[k]).any() for k in drawn)  # inside the pool only, never a planted entry
    assert objective_null_pool(build_agent("rcnn", ENV.obs_shape, 4, {"channels": [8]})) is None


def test_revert_to_pretrained_is_an_edit_of_the_gate_only_where_there_is_a_pretrained_model():
    """For MA the revert edit is the pretrained model itself (MA differs from it on the labels only), and the same
    edit on the layer's other units changes nothing: its effect is exactly what training on RA added."""
    from goalscope.agents.registry import objective_null_pool
    from goalscope.analysis.validate.causal import REVERT, model_effects

    torch.manual_seed(0)
    model = build_agent("planted_rcnn", ENV.obs_shape, 4, AGENT)
    mask, pool = objective_mask(model), objective_null_pool(model)
    pretrained = {k: v.clone() for k, v in model.state_dict().items()}
    ma = {k: torch.where(mask[k], v + 1.0, v) if k in mask else v for k, v in pretrained.items()}
    seen = []

    def collect(state):  # stands in for an evaluation: how far the state is from the pretrained model
        seen.append(state)
        return float(sum((state[k] - pretrained[k]).abs().sum() for k in mask))

    out = model_effects(ma, mask, None, [0], 3, collect, 0, draws=2, pool=pool, reference=pretrained)
    assert out[REVERT]["planted"] == 0.0 and out[REVERT]["random"] == out["base"] > 0
    assert out[REVERT]["effect"] == out["base"] and out[REVERT]["size"] == int(sum(int(m.sum()) for m in mask.values()))
    assert REVERT in model_effects(ma, mask, None, [0], 3, collect, 0, draws=1)["skipped"]
