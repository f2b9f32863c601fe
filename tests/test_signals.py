import math

import numpy as np
import pytest
import torch

from goalscope.errors import GoalscopeError
from goalscope.signals.delta import (
    add_masked,
    check_compatible,
    cosine_matrix,
    cosine_matrix_per_tensor,
    flatten,
    negate,
    per_layer,
    per_tensor,
    per_unit,
    random_direction_like,
    random_scores_like,
    relative_to_control,
    topk_mask,
    unflatten,
    update_signal,
)

torch.set_num_threads(1)

SHAPES = {"conv1.weight": (4, 2, 3, 3), "conv1.bias": (4,), "policy.weight": (3, 8), "policy.bias": (3,)}


def make_params(seed: int, dyadic: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in SHAPES.items():
        if dyadic:
            # Multiples of 1/8 in a small range: sums and differences are exact in float32.
            out[key] = torch.randint(-64, 64, shape, generator=g).to(torch.float32) / 8
        else:
            out[key] = torch.randn(shape, generator=g)
    return out


def test_update_signal_and_negate_are_exact_on_representable_values():
    ma, mb = make_params(0, dyadic=True), make_params(1, dyadic=True)
    delta = update_signal(ma, mb)
    for key in ma:
        assert delta[key].dtype == torch.float32
        assert torch.equal(ma[key] + delta[key], mb[key])
    back = negate(ma, delta, alpha=1.0)
    for key in ma:
        assert torch.equal(back[key], 2 * ma[key] - mb[key])
    half = negate(ma, delta, alpha=0.5)
    for key in ma:
        assert torch.equal(half[key], ma[key] - delta[key] / 2)


def test_update_signal_returns_detached_copies():
    ma = {"w": torch.zeros(3, requires_grad=True)}
    mb = {"w": torch.ones(3)}
    delta = update_signal(ma, mb)
    assert not delta["w"].requires_grad
    delta["w"] += 5
    assert torch.equal(mb["w"], torch.ones(3))


def test_add_masked_grafts_only_masked_entries():
    ma, mb = make_params(0, dyadic=True), make_params(1, dyadic=True)
    delta = update_signal(ma, mb)
    mask = {k: torch.zeros(v.shape, dtype=torch.bool) for k, v in ma.items()}
    mask["policy.weight"][1] = True
    out = add_masked(ma, delta, mask)
    assert torch.equal(out["policy.weight"][1], mb["policy.weight"][1])
    assert torch.equal(out["policy.weight"][0], ma["policy.weight"][0])
    assert torch.equal(out["conv1.weight"], ma["conv1.weight"])
    half = add_masked(ma, delta, {k: torch.full(v.shape, 0.5) for k, v in ma.items()})
    assert torch.equal(half["conv1.bias"], ma["conv1.bias"] + delta["conv1.bias"] / 2)


def test_random_direction_matches_per_tensor_norms_and_is_seeded():
    delta = make_params(3)
    delta["policy.bias"] = torch.zeros(3)
    a = random_direction_like(delta, torch.Generator().manual_seed(7))
    b = random_direction_like(delta, torch.Generator().manual_seed(7))
    for key in delta:
        assert a[key].shape == delta[key].shape
        assert abs(float(a[key].norm()) - float(delta[key].norm())) < 1e-5
        assert torch.equal(a[key], b[key])
    assert torch.equal(a["policy.bias"], torch.zeros(3))
    # A direction, not a copy: it should be far from Δ itself.
    cos = torch.nn.functional.cosine_similarity(flatten(a), flatten(delta), dim=0)
    assert abs(float(cos)) < 0.5


def test_random_scores_like_shapes_and_range():
    params = make_params(0)
    scores = random_scores_like(params, torch.Generator().manual_seed(0))
    assert list(scores) == list(params)
    for key in params:
        assert scores[key].shape == params[key].shape
        assert (scores[key] >= 0).all() and (scores[key] < 1).all()


def test_flatten_unflatten_round_trip_and_sorted_order():
    params = make_params(0)
    vec = flatten(params)
    assert vec.shape == (sum(v.numel() for v in params.values()),)
    first = sorted(params)[0]
    assert torch.equal(vec[:params[first].numel()], params[first].reshape(-1))
    back = unflatten(vec, params)
    assert list(back) == list(params)
    for key in params:
        assert torch.equal(back[key], params[key])
    with pytest.raises(GoalscopeError, match="unflatten"):
        unflatten(vec[:-1], params)


def test_check_compatible_names_offending_key():
    a = make_params(0)
    b = dict(a)
    b["policy.weight"] = torch.zeros(3, 9)
    with pytest.raises(GoalscopeError, match="'policy.weight'"):
        check_compatible(a, b)
    c = {k: v for k, v in a.items() if k != "conv1.bias"}
    with pytest.raises(GoalscopeError, match=r"'conv1.bias' is in MA but not in MB"):
        check_compatible(a, c)
    with pytest.raises(GoalscopeError, match=r"'conv1.bias' is in left but not in right"):
        check_compatible(a, c, "left", "right")
    with pytest.raises(GoalscopeError, match="'extra'"):
        update_signal(a, {**a, "extra": torch.zeros(1)})
    check_compatible(a, make_params(5))


def test_per_tensor_rows():
    delta = {"a.weight": torch.tensor([[3.0, -4.0]]), "a.bias": torch.tensor([0.0, -2.0])}
    ref = {"a.weight": torch.tensor([[0.0, 10.0]]), "a.bias": torch.zeros(2)}
    rows = {r["param"]: r for r in per_tensor(delta, ref)}
    w = rows["a.weight"]
    assert (w["numel"], w["l2"], w["mean_abs"], w["max_abs"], w["rel_l2"]) == (2, 5.0, 3.5, 4.0, 0.5)
    assert rows["a.bias"]["rel_l2"] == math.inf
    assert all(math.isnan(r["rel_l2"]) for r in per_tensor(delta))


def test_per_unit_rows():
    delta = make_params(0)
    rows = per_unit(delta)
    assert len(rows) == sum(v.shape[0] for v in delta.values())
    row = next(r for r in rows if r["param"] == "policy.weight" and r["unit"] == 2)
    assert row["l2"] == pytest.approx(float(delta["policy.weight"][2].norm()), rel=1e-6)
    assert row["mean_abs"] == pytest.approx(float(delta["policy.weight"][2].abs().mean()), rel=1e-6)
    bias = [r for r in rows if r["param"] == "conv1.bias"]
    assert [r["unit"] for r in bias] == [0, 1, 2, 3]
    assert bias[1]["l2"] == pytest.approx(abs(float(delta["conv1.bias"][1])), rel=1e-6)


def test_per_layer_groups_by_module_prefix():
    delta = {"enc.conv1.weight": torch.full((2, 2), 1.0), "enc.conv1.bias": torch.full((2,), -2.0),
             "head.weight": torch.full((1, 3), 3.0), "scale": torch.tensor(4.0)}
    rows = {r["layer"]: r for r in per_layer(delta)}
    assert set(rows) == {"enc.conv1", "head", "scale"}
    conv = rows["enc.conv1"]
    assert conv["numel"] == 6
    assert conv["l2"] == pytest.approx(math.sqrt(4 * 1 + 2 * 4))
    assert conv["mean_abs"] == pytest.approx((4 + 4) / 6)
    assert rows["scale"]["l2"] == pytest.approx(4.0)


def test_relative_to_control():
    delta = {"w": torch.tensor([3.0, 4.0]), "b": torch.tensor([1.0])}
    controls = [{"w": torch.tensor([1.0, 0.0]), "b": torch.tensor([2.0])},
                {"w": torch.tensor([0.0, 4.0]), "b": torch.tensor([2.0])}]
    rows = {r["param"]: r for r in relative_to_control(delta, controls)}
    assert rows["w"]["ratio"] == pytest.approx(5.0 / 2.5)
    assert rows["b"]["ratio"] == pytest.approx(0.5)
    with pytest.raises(GoalscopeError, match="control"):
        relative_to_control(delta, [])


def test_cosine_matrix_identical_and_orthogonal():
    a = {"x": torch.tensor([1.0, 0.0]), "y": torch.tensor([[0.0, 2.0]])}
    b = {"x": torch.tensor([0.0, 3.0]), "y": torch.tensor([[0.0, 0.0]])}
    neg = {k: -v for k, v in a.items()}
    names, m = cosine_matrix({"a": a, "a2": dict(a), "b": b, "neg": neg})
    assert names == ["a", "a2", "b", "neg"]
    assert isinstance(m, np.ndarray) and m.shape == (4, 4)
    assert m[0, 1] == pytest.approx(1.0) and m[0, 0] == pytest.approx(1.0)
    assert m[0, 2] == pytest.approx(0.0) and m[2, 0] == pytest.approx(0.0)
    assert m[0, 3] == pytest.approx(-1.0)
    names, per = cosine_matrix_per_tensor({"a": a, "b": b})
    assert per["x"][0, 1] == pytest.approx(0.0)
    assert np.isnan(per["y"][0, 1])  # b's "y" is zero: no direction


def test_topk_mask_selects_exact_count_of_largest_globally():
    scores = make_params(0)
    scores = {k: v.abs() for k, v in scores.items()}
    total = sum(v.numel() for v in scores.values())
    flat = flatten(scores)
    for fraction in (0.1, 0.33, 0.5, 1.0):
        mask = topk_mask(scores, fraction)
        assert list(mask) == list(scores)
        assert all(mask[k].dtype == torch.bool and mask[k].shape == scores[k].shape for k in scores)
        chosen = flatten(mask)
        k = round(fraction * total)
        assert int(chosen.sum()) == k
        if k < total:
            assert float(flat[chosen].min()) >= float(flat[~chosen].max())
    # Global ranking: a single huge tensor can take all of the budget.
    skewed = {"big": torch.full((10,), 100.0), "small": torch.rand(90)}
    mask = topk_mask(skewed, 0.1)
    assert mask["big"].all() and not mask["small"].any()


def test_topk_mask_ties_are_deterministic_and_fraction_validated():
    scores = {"a": torch.ones(5), "b": torch.ones(5)}
    mask = topk_mask(scores, 0.3)
    assert torch.equal(mask["a"], torch.tensor([True, True, True, False, False]))
    assert not mask["b"].any()
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(GoalscopeError, match="fraction"):
            topk_mask(scores, bad)
    with pytest.raises(GoalscopeError, match="'a'"):
        topk_mask({"a": torch.tensor([float("nan")])}, 0.5)


def test_jaccard_chance_matches_random_sets():
    from goalscope.signals.delta import jaccard, jaccard_chance

    gen = torch.Generator().manual_seed(0)
    n, f = 200_000, 0.05
    vals = [jaccard(torch.rand(n, generator=gen) < f, torch.rand(n, generator=gen) < f) for _ in range(5)]
    assert abs(sum(vals) / 5 - jaccard_chance(f)) < 0.003


def test_negation_random_directions_are_fresh_per_seed_rb_alpha():
    from goalscope.program.config import load_experiment
    from goalscope.program.runner import plan_experiment

    plan = plan_experiment(load_experiment("experiments/paper.toml"))
    specs = {j.key: j.spec for j in plan.jobs() if j.kind == "negate" and j.spec["direction"] == "random"}
    seeds = [s["direction_seed"] for s in specs.values()]
    assert len(seeds) == len(set(seeds)) == 5 * 4 * 3 * 3  # seeds x RBs x alphas x directions, all different
    # Two such directions for the same Δ are unrelated (cosine ~ 0), unlike one direction reused everywhere.
    delta = {"w": torch.randn(200, 50), "b": torch.randn(50)}
    a, b = (flatten(random_direction_like(delta, torch.Generator().manual_seed(s))) for s in seeds[:2])
    assert abs(float(a @ b / (a.norm() * b.norm()))) < 0.05


def test_heatmap_that_is_mostly_fisher_is_flagged():
    from goalscope.analysis.effects.superposition import heatmap_diagnostics, mostly_warning, pca_note

    g = torch.Generator().manual_seed(0)
    fisher = {"w": torch.rand(500, generator=g)}
    refs = {"Fisher alone (MA)": fisher, "mean |Δ|": {"w": torch.rand(500, generator=g)}}
    mostly_fisher = {"w": fisher["w"] * (1 + 0.01 * torch.rand(500, generator=g))}
    d = heatmap_diagnostics(mostly_fisher, refs)
    assert d["Fisher alone (MA)"] > 0.99 and abs(d["mean |Δ|"]) < 0.15
    assert "mostly Fisher alone (MA)" in mostly_warning(d)
    assert mostly_warning(heatmap_diagnostics({"w": torch.rand(500, generator=g)}, refs)) is None
    assert "not optimiser drift" in pca_note({"cosine_with_mean_delta": 0.99, "cosine_with_control_drift": 0.1})
