"""Planted ground truths that can fail: the needle planner's reward map, and RB's own input plane.

One small real run (a needle-planner MA and four one-hot fine-tunes, ~30 s on one core) is shared by the tests
below. The thresholds come from measured runs of exactly this recipe (seeds 0, 1, 2; see each test), and each
check is shown to fail on a random ranking or shuffled labels, so none of them passes by construction.
"""

import math

import numpy as np
import pytest
import torch

from goalscope.signals import aggregators as agg
from goalscope.analysis.validate import entry, planted
from goalscope.signals import delta as sig
from goalscope.agents.planner import NeedlePlannerAgent
from goalscope.agents.registry import build_agent, movable_mask, objective_mask
from goalscope.envs.maze import MazeConfig
from goalscope.envs.rewards import parse_reward
from goalscope.errors import GoalscopeError
from goalscope.rl.ppo import PPOConfig, finetune, train_new
from goalscope.analysis.validate.ranking import auroc, auroc_ceiling

ENV = MazeConfig(size=7, n_types=5, n_per_type=1, max_steps=32, layout="maze", loop_prob=0.2, pool_size=64)
ARCH_CONFIG = {"iterations": 8}  # fewer value-iteration steps than the default 14: the test's budget

# TIES over the four RBs is the pre-registered ranking: measured AUROC 0.704, 0.725, 0.663 on seeds 0, 1, 2 of
# this recipe. A random score has AUROC 0.5 with a standard deviation of ~0.054 for 29 positives among ~7,300, so
# 0.62 is ~2.2 standard deviations above chance (a random ranking passes ~1.4% of the time).
FOUND = 0.62


def _ppo(steps: int) -> PPOConfig:
    return PPOConfig(total_steps=steps, n_envs=32, n_steps=32, epochs=3, minibatch_size=512, lr=0.001, ent_coef=0.01,
                     eval_episodes=32)


@pytest.fixture(scope="module")
def needle_run():
    """MA on collect:0 (8k steps), MB_k on collect:k for k = 1..4 (4k steps each) and a control on RA."""
    ma = train_new("needle_planner", ARCH_CONFIG, ENV, parse_reward("collect:0", 5), _ppo(8192), 0)
    deltas = {k: sig.update_signal(ma.state_dict, finetune(ma, parse_reward(f"collect:{k}", 5), _ppo(4096), 100 * k).state_dict)
              for k in (1, 2, 3, 4)}
    control = sig.update_signal(ma.state_dict, finetune(ma, ma.reward, _ppo(4096), 999).state_dict)
    mask = objective_mask(ma.build())
    labels = sig.flatten({k: mask[k] for k in ma.state_dict}).numpy()
    return {"ma": ma, "deltas": deltas, "controls": [control], "labels": labels}


def _flat(h) -> np.ndarray:
    return sig.flatten(h).numpy()


def finds_needle(scores: np.ndarray, labels: np.ndarray) -> bool:
    """The check the suite holds a ranking to: AUROC for the planted reward map at least FOUND."""
    return auroc(scores, labels) >= FOUND


# -- the needle architecture --------------------------------------------------------------------------------


def test_needle_objective_is_under_two_percent_and_the_only_path_from_objects():
    torch.manual_seed(0)
    model = build_agent("needle_planner", (7, 7, 7), 4)
    assert isinstance(model, NeedlePlannerAgent)
    mask = objective_mask(model)
    n_obj, n_all = sum(int(m.sum()) for m in mask.values()), sum(p.numel() for p in model.parameters())
    assert n_obj == 29 and n_obj / n_all <= 0.02, (n_obj, n_all)
    assert set(mask) == set(model.state_dict())
    # Per-unit labels: column k of the first reward-map layer is where object plane k enters.
    units = model.objective_units()
    assert len(units) == 5 and all(int(u["reward_map1.weight"].sum()) == 4 for u in units.values())
    obs = torch.zeros(2, 7, 7, 7)
    obs[:, 0, 0, :] = obs[:, 0, -1, :] = obs[:, 0, :, 0] = obs[:, 0, :, -1] = 1
    obs[:, 1, 3, 3] = 1
    obs[0, 2, 1, 3] = 1  # an object above the agent
    obs[1, 2, 5, 3] = 1  # ... or below it
    with torch.no_grad():
        assert not torch.allclose(model(obs)[0][0], model(obs)[0][1])
        model.reward_map2.weight.zero_()
        model.reward_map2.bias.zero_()
        logits, _ = model(obs)
    assert torch.allclose(logits[0], logits[1])  # blind to objects without the reward map


def test_objective_mask_is_none_without_a_planted_objective():
    assert objective_mask(build_agent("cnn", (7, 7, 7), 4)) is None
    mask = objective_mask(build_agent("planner", (7, 7, 7), 4))
    assert mask["reward_map1.weight"].all() and not mask["transition.weight"].any()


def test_movable_mask_marks_reward_map_weights_behind_a_dead_relu_and_their_gradient_is_zero():
    """Issue 25 1(a): a reward-map weight whose unit is off whenever its plane is on (W[u,k] + b[u] <= 0) is inert:
    its gradient is exactly 0 on every observation, so it is no label a Δ-based score can rank."""
    torch.manual_seed(0)
    model = build_agent("needle_planner", (7, 7, 7), 4)
    with torch.no_grad():
        model.reward_map1.weight.zero_()
        model.reward_map1.bias.copy_(torch.tensor([0.1, -0.2, -0.5, -0.3]))
        model.reward_map1.weight[0, :, 0, 0] = torch.tensor([0.5, -0.2, -0.1, 1.0, 0.0])  # bias 0.1: plane 1, 2 dead
        model.reward_map1.weight[1, :, 0, 0] = torch.tensor([0.3, 0.1, 0.2, 0.25, 0.21])  # bias -0.2: 0.2 - 0.2 = 0 is off
        model.reward_map1.weight[2, :, 0, 0] = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])    # bias -0.5: all dead
        model.reward_map1.weight[3, :, 0, 0] = torch.tensor([0.4, 0.0, 0.0, 0.0, 0.0])    # bias -0.3: plane 0 only
    movable = movable_mask(model)
    assert set(movable) == set(model.state_dict())
    w = movable["reward_map1.weight"][:, :, 0, 0]
    assert w.tolist() == [[True, False, False, True, True], [True, False, False, True, True],
                          [False] * 5, [True, False, False, False, False]]
    # Unit 2 is off for every plane and for an empty cell: its bias and its reward_map2 weight are inert too.
    assert movable["reward_map1.bias"].tolist() == [True, True, False, True]
    assert movable["reward_map2.weight"][0, :, 0, 0].tolist() == [True, True, False, True]
    assert movable["transition.weight"].all() and movable["fc1.weight"].all()
    # The rule is the gradient's: every inert entry has exactly zero gradient on random mazes (one object a cell).
    obs = torch.zeros(64, 7, 7, 7)
    obs[:, 0, 0, :] = obs[:, 0, -1, :] = obs[:, 0, :, 0] = obs[:, 0, :, -1] = 1
    g = torch.Generator().manual_seed(0)
    for i in range(64):
        cells = torch.randperm(25, generator=g)[:6]
        obs[i, 1, 1 + cells[0] // 5, 1 + cells[0] % 5] = 1
        for j, c in enumerate(cells[1:]):
            obs[i, 2 + j, 1 + c // 5, 1 + c % 5] = 1
    logits, value = model(obs)
    (logits.logsumexp(1).sum() + logits[:, 0].sum() + value.sum()).backward()
    grads = {k: p.grad for k, p in model.named_parameters()}
    for k, m in movable.items():
        assert (grads[k][~m] == 0).all(), k
    assert (grads["reward_map1.weight"][movable["reward_map1.weight"]] != 0).any()
    # An architecture without the method: every parameter counts as movable.
    assert movable_mask(build_agent("cnn", (7, 7, 7), 4)) is None
    assert movable_mask(build_agent("planner", (7, 7, 7), 4)) is not None


def test_auroc_ceiling_counts_the_positives_tied_at_zero():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], bool)
    # Two positives are exact zeros, tied with two zero negatives: half credit against those, none against the rest.
    s = np.array([0.9, 0.8, 0.0, 0.0, 0.5, 0.2, 0.3, 0.0, 0.0, 0.4])
    assert auroc_ceiling(s, labels) == pytest.approx((2 * 6 + 2 * 2 / 2) / (4 * 6))
    assert auroc(s, labels) <= auroc_ceiling(s, labels)
    assert auroc_ceiling(np.arange(10.0) + 1, labels) == 1.0  # no zeros: nothing caps it
    assert math.isnan(auroc_ceiling(s - 1, labels))  # a score with negative entries: not defined
    # Leaving the inert labels out of the scoring lifts a score that ranks every movable label first to 1.
    inert = s == 0
    a, p_k, ceiling = planted.score(s, labels, scored=~(inert & labels))
    assert a == 1.0 and p_k == 1.0 and ceiling == 1.0
    a_all, _, c_all = planted.score(s, labels)
    assert a_all < 1.0 and c_all == auroc_ceiling(s, labels)


def test_localisation_markdown_prints_the_ceiling_and_the_inert_labels():
    def e(a, c):
        return {"auroc": [a, a - 0.05, a + 0.05], "per_seed_auroc": [a], "ceiling": c, "per_seed_ceiling": [c]}

    by = {planted.SINGLE: {1: e(0.6, 0.72)}, "ties": {1: e(0.7, 0.81)}}
    lines = planted.localisation_markdown({"positives": 29, "parameters": 7290, "by_method": by,
                                           "nulls": list(planted.NULLS), "inert_positives": [8, 6, 10]}, {})
    text = "\n".join(lines)
    assert "| AUROC ceiling given exact zeros | 1 RB |" in text and "| ties | 0.810 |" in text
    assert "8, 6, 10 per seed are inert" in text


# -- planted truth on a real run ------------------------------------------------------------------------------


def test_preregistered_ranking_finds_the_needle(needle_run):
    r = needle_run
    heat = agg.aggregate("ties", list(r["deltas"].values()))
    assert finds_needle(_flat(heat), r["labels"]), auroc(_flat(heat), r["labels"])


def test_shuffled_labels_sit_at_chance(needle_run):
    r = needle_run
    scores = _flat(agg.aggregate("ties", list(r["deltas"].values())))
    rng = np.random.default_rng(0)
    shuffled = [auroc(scores, rng.permutation(r["labels"])) for _ in range(20)]
    # Mean of 20 draws: standard deviation ~0.012 around 0.5.
    assert abs(np.mean(shuffled) - 0.5) < 0.04, shuffled


def test_a_random_ranking_fails_the_check(needle_run):
    r = needle_run
    like = r["deltas"][1]
    passed = [finds_needle(_flat(sig.random_scores_like(like, torch.Generator().manual_seed(i))), r["labels"])
              for i in range(20)]
    assert sum(passed) <= 2, passed  # expected ~0.3 of 20 at a 1.4% pass rate


def test_inert_labels_never_move_and_leaving_them_out_lifts_the_ceiling(needle_run):
    """Issue 25 1(a) on a real run: the labels MA's weights call inert have Δ exactly 0 in every fine-tune (and the
    control), so every Δ-based score ties them with its zeros; scored without them, the ceiling is 1."""
    r = needle_run
    movable = movable_mask(r["ma"].build())
    scored = sig.flatten({k: movable[k] for k in r["ma"].state_dict}).numpy()
    inert = r["labels"] & ~scored
    for d in [*r["deltas"].values(), *r["controls"]]:
        assert (_flat(d)[inert] == 0).all()
    heat = _flat(agg.aggregate("ties", list(r["deltas"].values())))
    if inert.any():
        assert auroc_ceiling(heat, r["labels"]) < 1.0
    a, _, ceiling = planted.score(heat, r["labels"], scored)
    assert ceiling == 1.0 and a >= auroc(heat, r["labels"]) - 0.02
    res, _ = planted.seed_scores(r["deltas"], r["controls"], None, ["ties"], r["labels"], sizes=(4,), scored=scored)
    assert res[("ties", 4)][0][2] == 1.0 and len(res[("ties", 4)][0]) == 5  # plain, p@k, ceiling, moved, strata


def test_localisation_scores_every_method_and_null(needle_run):
    r = needle_run
    res, skipped = planted.seed_scores(r["deltas"], r["controls"], None, ["mean_abs", "ties", "pca", "spread", "variance_ratio"],
                                       r["labels"], sizes=(1, 2, 4))
    names = {name for name, _ in res}
    assert {"mean_abs", "ties", "pca", "spread", planted.SINGLE, planted.CONTROL, planted.RANDOM} <= names
    assert planted.FISHER not in names  # no Fisher passed: the null is absent, never faked
    assert set(skipped) == {"pca", "spread", "variance_ratio"}  # one RB for pca/spread; no fine-tune seeds
    assert "nested fine-tune seeds" in skipped["variance_ratio"][4]
    assert len(res[("ties", 2)]) == 6 and len(res[("ties", 4)]) == 1  # 6 of C(4,2) subsets; the one 4-subset
    by = planted.summarise([res])
    assert by["ties"][4]["auroc"][0] >= FOUND
    assert math.isnan(by["ties"][4]["auroc"][1])  # one seed: no interval, not a fake one


def test_own_input_plane_outranks_the_unchanged_planes(needle_run):
    r = needle_run
    labels, objects, per_channel = entry.input_channels("needle_planner", r["ma"].state_dict, ENV)
    assert labels == [f"type {i}" for i in range(5)]
    ra = parse_reward("collect:0", 5)
    ranks = []
    for k, d in r["deltas"].items():
        among = entry.comparison_types(ra, parse_reward(f"collect:{k}", 5))
        assert among == [t for t in range(1, 5)]  # RA's plane changes under a one-hot RB: not a chance plane
        ranks.append(entry.own_plane_rank(per_channel({n: v.abs().double() for n, v in d.items()}), objects, k, among))
    # Among 4 planes chance is mean rank 2.5; measured 1.5, 1.0 and 1.5 on seeds 0-2. Under chance a mean rank
    # <= 1.75 over 4 RBs has probability 35/256 = 0.14: a weak check on its own, which is why the run-level
    # scorecard reports it over seeds and fine-tunes.
    assert np.mean(ranks) <= 1.75, ranks
    # The same masses ranked for a plane the RB did not touch sit near chance or below.
    decoy = [entry.own_plane_rank(per_channel({n: v.abs().double() for n, v in d.items()}), objects, 1 + k % 4,
                                  [t for t in range(1, 5)]) for k, d in r["deltas"].items()]
    assert np.mean(decoy) > np.mean(ranks), (decoy, ranks)


# -- pieces ----------------------------------------------------------------------------------------------------


def test_rb_subsets_are_distinct_seeded_and_capped():
    rbs = [f"r{i}" for i in range(8)]
    a, b = planted.rb_subsets(rbs, 2, seed=3), planted.rb_subsets(rbs, 2, seed=3)
    assert a == b and len(a) == 6 and len(set(a)) == 6
    assert planted.rb_subsets(rbs, 8) == [tuple(rbs)]
    assert len(planted.rb_subsets(rbs, 1, limit=10)) == 8


def test_paired_verdict_needs_every_null():
    from goalscope.analysis.validate.validation import _loc_verdict

    def e(*xs):
        return {"auroc": [float(np.mean(xs)), 0, 1], "per_seed_auroc": list(xs)}

    by = {planted.SINGLE: {4: e(0.40, 0.42, 0.41)}, planted.RANDOM: {4: e(0.50, 0.49, 0.51)},
          planted.FISHER: {4: e(0.60, 0.62, 0.61)}, planted.CONTROL: {4: e(0.30, 0.31, 0.29)},
          "good": {4: e(0.80, 0.83, 0.81)}, "fisher_like": {4: e(0.55, 0.60, 0.64)},
          "below_chance": {4: e(0.45, 0.46, 0.45)}}
    assert _loc_verdict(by, "good", 4).startswith("localises")
    assert _loc_verdict(by, "fisher_like", 4).startswith("above |Δ| (one RB)")
    assert "not above Fisher alone" in _loc_verdict(by, "fisher_like", 4)
    assert _loc_verdict(by, "below_chance", 4).startswith("above |Δ| (one RB), control drift |Δ_ctrl|; not above "
                                                          "Fisher alone (MA), random (one-sided paired t over 3 seeds")
    del by[planted.CONTROL]  # a null that was not run is "not tested", never passed
    assert _loc_verdict(by, "good", 4).startswith("above |Δ| (one RB), Fisher alone (MA), random; not tested: control")


def test_goal_reports_plainly_when_not_met():
    def e(a):
        return {"auroc": [a, a - 0.05, a + 0.05], "per_seed_auroc": [a]}

    by = {planted.SINGLE: {1: e(0.5), 8: e(0.5)}, "ties": {1: e(0.6), 8: e(0.9)}}
    g = planted.goal(by)
    assert not g["met"] and g["best"] == "ties" and g["n"] == 8 and "NOT met" in g["text"]
    by["ties"][8] = e(0.97)
    assert planted.goal(by)["met"] and "no Fisher null" in planted.goal(by)["text"]
    by[planted.FISHER] = {1: e(0.9), 8: e(0.9)}  # where the policy is sensitive: the margin over it counts too
    assert not planted.goal(by)["met"] and "Fisher alone 0.900 (margin +0.070)" in planted.goal(by)["text"]
    by[planted.FISHER] = {1: e(0.5), 8: e(0.5)}
    assert planted.goal(by)["met"]
    lines = planted.localisation_markdown({"positives": 29, "parameters": 7290, "by_method": by,
                                           "nulls": list(planted.NULLS), "goal": planted.goal(by)}, {})
    assert any(line.startswith("| ties | 0.600") for line in lines) and any("met" in line for line in lines)


def _gradient_mass(model, obs_shape, plane: int, fl) -> torch.Tensor:
    """First-layer mass of the output's gradient when only the agent and one object on ``plane`` are in view. The
    gradient of a weight that reads input channel j is zero wherever channel j is: so the layer that truly reads the
    planes has gradient on the agent's and ``plane``'s channels only, and a deeper layer passed off as it would not."""
    obs = torch.zeros(1, *obs_shape)
    r, c = obs_shape[1] // 2, obs_shape[2] // 2
    obs[0, 1, r, c] = 1
    obs[0, plane, r, c + 1] = 1
    logits, value = model(obs)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(logits.sum() + value.sum(), [params[n] for n in fl.channel])
    return fl.mass({n: g.abs() for n, g in zip(fl.channel, grads)})


def test_input_channels_of_every_architecture():
    env = MazeConfig(size=7, n_types=3, n_per_type=1, max_steps=8)
    plain = ("cnn", {"relative_coords": False})  # no offset planes: in-channels equal the planes exactly
    ego = MazeConfig(size=7, n_types=3, n_per_type=1, max_steps=8, view="egocentric")
    cases = [("cnn", None, env, 7, "conv1.weight"), (*plain, env, 5, "conv1.weight"),
             ("rcnn", None, env, 5, "conv1.weight"), ("rcnn", {"channels": [4, 4]}, env, 5, "conv1.weight"),
             ("mlp", None, env, 5, "pi_fc1.weight"), ("mlp", {"shared": True}, env, 5, "fc1.weight"),
             ("mlp", None, ego, 5, "vf_fc1.weight"),
             ("planner", None, env, 3, "reward_map1.weight"), ("needle_planner", None, env, 3, "reward_map1.weight"),
             ("hidden_needle_planner", None, env, 3, "reward_map1.weight")]
    for arch, config, e, n_channels, name in cases:
        torch.manual_seed(0)
        model = build_agent(arch, e.obs_shape, 4, config)
        state = model.state_dict()
        fl = entry.first_layer(arch, state, e)
        labels, objects, per_channel = entry.input_channels(arch, state, e)
        assert len(labels) == n_channels and name in fl.channel, (arch, config, labels, list(fl.channel))
        assert [labels[i] for i in objects] == ["type 0", "type 1", "type 2"]
        # The layer found (by shape, not by name) is the one the forward pass reads the planes through.
        # (Some plane may show no gradient at all: a needle planner's 4 reward units can all be off for one type.)
        seen = []
        for t in range(3):
            g = _gradient_mass(model, e.obs_shape, 2 + t, fl)
            read = {i for i, lab in enumerate(labels) if lab in ("agent", f"type {t}", "row offset", "column offset")}
            assert all(g[i] == 0 for i in range(n_channels) if i not in read), (arch, config, t, g)
            seen.append(bool(g[objects[t]] > 0))
        assert sum(seen) >= 2, (arch, config, seen)
        # A heatmap that is 1 on the first layer's type-1 entries only puts all its mass on type 1.
        heat = {k: torch.zeros_like(v) for k, v in state.items()}
        ones = {k: torch.ones_like(v) for k, v in state.items()}
        total = per_channel(ones)
        assert total.shape == (n_channels,) and (total > 0).all()
        w = heat[name]
        if w.dim() == 2:
            w.view(w.shape[0], n_channels, -1)[:, objects[1]] = 1
        else:
            w[:, objects[1]] = 1
        mass = per_channel(heat)
        assert entry.own_plane_rank(mass, objects, 1) == 1 and float(mass.sum()) == float(mass[objects[1]])
    with pytest.raises(GoalscopeError, match="no first-layer map for architecture 'unknown'"):
        entry.input_channels("unknown", {}, env)
    # A first conv that reads something other than the planes (an RGB picture of the maze) is said, not guessed.
    rgb = {"conv1.weight": torch.zeros(8, 3, 3, 3), "conv2.weight": torch.zeros(8, 5, 3, 3)}
    with pytest.raises(GoalscopeError, match="first conv conv1.weight reads 3 channels, not the 5 maze planes"):
        entry.input_channels("nature_cnn", rgb, env)
    # A colour image of the maze (3 channels, and with K = 1 as many as the planes) has no channel per type.
    from types import SimpleNamespace

    rgb_env = SimpleNamespace(family="object_maze", obs="rgb", n_types=1, cue=False, obs_shape=(3, 14, 14))
    with pytest.raises(GoalscopeError, match="the observation is 'rgb', not one plane per object type"):
        entry.first_layer("cnn", {"conv1.weight": torch.zeros(8, 3, 3, 3)}, rgb_env)
    assert entry.plane_labels(MazeConfig(size=7, n_types=2, cue=True))[-2:] == ["cue 0", "cue 1"]


def test_input_plane_ground_truth_is_in_the_scorecard_and_the_report():
    from goalscope.report.figures_validation import input_planes_html

    ranks = {entry.ABS_DELTA: {0: [(1, 3), (1, 3)], 1: [(1, 3), (2, 3)]}, entry.FISHER_ALONE: {0: [(3, 3), (1, 3)], 1: [(2, 3), (2, 3)]}}
    masses = {n: [np.ones(5)] * 4 for n in ranks}
    card = entry.summarise(ranks, masses, ["walls", "agent", "type 0", "type 1", "type 2"], 3)
    assert card["by_heatmap"][entry.ABS_DELTA]["rank1_count"] == 3
    md = entry.entry_markdown(card)
    assert "| 3/4 (0.75; 0.33) | 4 |" in md and "| 1/4 (0.25; 0.33) | 4 |" in md
    html = input_planes_html(card)
    assert "Input-plane ground truth" in html and "3/4 (0.33)" in html and "1/4 (0.33)" in html
    # Not run is said, not dropped.
    assert "Not run: no first-layer map for architecture" in input_planes_html("no first-layer map for architecture 'x'")


def test_superposition_curve_figure_and_csv(tmp_path):
    from goalscope.report.figures_planted import fig_superposition_curve

    def e(a):
        return {"auroc": [a, a - 0.05, a + 0.05], "precision_at_k": a / 2, "precision_at_k_ci": [a / 2, a / 2 - 0.1, a / 2 + 0.1],
                "per_seed_auroc": [a, a]}

    by = {"ties": {1: e(0.6), 2: e(0.7), 4: e(0.8)}, "spread": {2: e(0.65), 4: e(0.7)},
          **{name: {n: e(0.5) for n in (1, 2, 4)} for name in planted.NULLS}}
    card = {"localisation": {"positives": 29, "parameters": 7290, "by_method": by, "goal": planted.goal(by)}}
    assert fig_superposition_curve(card, tmp_path) is not None
    rows = (tmp_path / "superposition_curve.csv").read_text().splitlines()
    assert rows[0] == "heatmap,null,metric,n_rbs,mean,ci_low,ci_high" and len(rows) == 1 + 2 * (3 + 2 + 3 * 4)
    assert fig_superposition_curve({"localisation": "architecture 'cnn' has no planted objective"}, tmp_path) is None


def test_hidden_needle_scales_the_maps_gradient_not_its_function():
    """``hidden_needle_planner`` is the needle planner with a fixed factor on its reward map's output: the same
    function as a needle whose reward_map2 is scaled by that factor, but the policy's gradient on reward_map2 is
    that factor times as large (Fisher its square), which is what hides the objective from sensitivity maps."""
    torch.manual_seed(0)
    hidden = build_agent("hidden_needle_planner", (7, 7, 7), 4, {"reward_scale": 0.1})
    needle = build_agent("needle_planner", (7, 7, 7), 4)
    needle.load_state_dict(hidden.state_dict())
    with torch.no_grad():
        needle.reward_map2.weight.mul_(0.1)
        needle.reward_map2.bias.mul_(0.1)
    obs = torch.zeros(8, 7, 7, 7)
    obs[:, 0, 0, :] = obs[:, 0, -1, :] = obs[:, 0, :, 0] = obs[:, 0, :, -1] = 1
    obs[:, 1, 3, 3] = 1
    for i in range(8):
        obs[i, 2 + i % 5, 1 + i % 5, 1 + (3 * i) % 5] = 1
    out_h, out_n = hidden(obs)[0], needle(obs)[0]
    assert torch.allclose(out_h, out_n, atol=1e-6)
    out_h.logsumexp(-1).sum().backward()
    out_n.logsumexp(-1).sum().backward()
    g_h, g_n = hidden.reward_map2.weight.grad, needle.reward_map2.weight.grad
    assert g_n.abs().sum() > 0 and torch.allclose(g_h, 0.1 * g_n, atol=1e-7)
    assert objective_mask(hidden) is not None and hidden.movable_mask()["reward_map1.weight"].shape == (4, 5, 1, 1)
    with pytest.raises(GoalscopeError, match="reward_scale"):
        build_agent("hidden_needle_planner", (7, 7, 7), 4, {"reward_scale": -1.0})
