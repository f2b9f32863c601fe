"""Does the planted objective drive behaviour? The causal gate every planted truth passes before its AUROC counts.

A label set is ground truth for an *objective* only if editing it changes the rewarded behaviour. A pathway the
agent has learned to ignore is still where every fine-tune must write (issue 35: the hidden needle's labels are
the only part that tells types apart), so update-based rankings find it while it explains nothing. For MA and each
MB of every seed, on paired evaluation episodes, the planted part is edited two ways:

- **zero**: every planted entry set to 0;
- **permute across types** (where the planted part has a type axis, :func:`goalscope.agents.registry.objective_type_axes`):
  each rewarded type's slice swapped with an unrewarded type's (for an MB, one MA was not paid for either), so the
  agent values what it was not paid for;
- **revert to pretrained** (where the objective was planted by training, ``base.pretrain_reward``): the planted
  entries set back to the pretrained model's values, which for MA is the pretrained navigator itself. Zeroing half
  of a layer breaks any agent whichever half it is; reverting removes what training on RA put there and nothing else.

Each edit is also made on random sets of the same size outside the planted part (drawn from the architecture's
null pool where it has one: for units planted in one layer, that layer's other units; zero: as many entries; permute:
as many entries as the type swap moves, their values rotated along a random cycle so every one changes), averaged
over ``DRAWS`` sets. The measure is the rewarded-type collection (objects of the model's own rewarded types per
episode); the effect of an edit is how much more the planted edit lowers it than the random one does, per seed.

The gate: for each model role (MA, each RB's MB) and each edit, a one-sided t test over seeds that the effect is
> 0 (95% one-sided lower bound above 0). The objective "drives behaviour" only if every one of them passes: an
intersection-union test, which needs no multiplicity correction because the claim is that *all* effects are
positive. Fewer than 2 seeds cannot pass (no t test).

May import: goalscope.agents, goalscope.analysis.stats, goalscope.errors, goalscope.program, goalscope.rl.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from goalscope.analysis.stats import ALPHA, t_quantile, t_test

DRAWS = 4  # random sets per edit and model: their mean is the null the planted edit is compared with
ZERO, PERMUTE, REVERT = "zero", "permute across types", "revert to pretrained"
NOT_A_TEST = "not a test of objective localisation"


# ----------------------------------------------------------------------------------------------------------------
# Edits (pure)


def swap_permutation(n_types: int, rewarded, avoid=()) -> list[int] | None:
    """perm[k] = the type whose slice type k reads after the edit: each rewarded type swapped with an unrewarded one
    (in order), the rest unchanged. Partners in ``avoid`` come last: an MB fine-tuned from collect:0 to collect:1
    still values type 0 (fine-tuning adds type 1 more than it removes type 0), so swapping 1 with 0 hands type 1
    a slice that still pays and tests nothing. None when every type is rewarded (nothing to swap with)."""
    rewarded = [int(t) for t in rewarded if 0 <= int(t) < n_types]
    avoid = {int(t) for t in avoid}
    free = sorted((t for t in range(n_types) if t not in rewarded), key=lambda t: t in avoid)
    if not rewarded or len(free) < len(rewarded):
        return None
    perm = list(range(n_types))
    for a, b in zip(rewarded, free):
        perm[a], perm[b] = b, a
    return perm


def zero_edit(state: dict, mask: dict) -> dict:
    """``state`` with the entries in ``mask`` set to 0."""
    return {k: torch.where(mask[k], torch.zeros_like(v), v) if k in mask else v for k, v in state.items()}


def revert_edit(state: dict, mask: dict, reference: dict) -> dict:
    """``state`` with the entries in ``mask`` set to ``reference``'s values."""
    return {k: torch.where(mask[k], reference[k], v) if k in mask else v for k, v in state.items()}


def permute_edit(state: dict, axes: dict, perm: list[int]) -> tuple[dict, dict]:
    """``state`` with each tensor in ``axes`` re-indexed along its type axis (index k takes index perm[k]'s slice),
    and the mask of entries whose position changed (the random control moves as many)."""
    out, moved = dict(state), {}
    for name, axis in axes.items():
        v = state[name]
        index = list(perm) + list(range(len(perm), v.shape[axis]))  # planes past the types (cues) stay
        out[name] = v.index_select(axis, torch.tensor(index))
        shape = [1] * v.dim()
        shape[axis] = v.shape[axis]
        changed = torch.tensor([index[i] != i for i in range(v.shape[axis])]).view(shape)
        moved[name] = changed.expand_as(v).clone()
    return out, moved


def random_mask(state: dict, size: int, outside: dict, gen: torch.Generator, pool: dict | None = None) -> dict:
    """``size`` entries drawn uniformly (without replacement) from those not in ``outside`` (and in ``pool``, where
    one is given: :func:`goalscope.agents.registry.objective_null_pool`)."""
    names = list(state)
    free = torch.cat([(~outside[k]).flatten() if k in outside else torch.ones(state[k].numel(), dtype=torch.bool)
                      for k in names])
    if pool is not None:
        free &= torch.cat([pool[k].flatten() if k in pool else torch.zeros(state[k].numel(), dtype=torch.bool)
                           for k in names])
    where = torch.nonzero(free).flatten()
    if size > len(where):
        raise ValueError(f"cannot draw {size} entries from {len(where)} outside the planted part")
    pick = torch.zeros(len(free), dtype=torch.bool)
    pick[where[torch.randperm(len(where), generator=gen)[:size]]] = True
    out, i = {}, 0
    for k in names:
        n = state[k].numel()
        out[k] = pick[i:i + n].view(state[k].shape)
        i += n
    return out


def rotate_edit(state: dict, mask: dict, gen: torch.Generator) -> dict:
    """``state`` with the values at ``mask`` rotated along one random cycle through all of them: every entry takes
    another's value, as in a type swap (a plain shuffle would leave some in place)."""
    names = [k for k in state if k in mask and mask[k].any()]
    values = torch.cat([state[k][mask[k]] for k in names])
    order = torch.randperm(len(values), generator=gen)
    rotated = values.clone()
    rotated[order] = values[torch.roll(order, 1)]
    out, i = dict(state), 0
    for k in names:
        n = int(mask[k].sum())
        v = state[k].clone()
        v[mask[k]] = rotated[i:i + n]
        out[k] = v
        i += n
    return out


def _size(mask: dict) -> int:
    return int(sum(int(m.sum()) for m in mask.values()))


def model_effects(state: dict, mask: dict, axes: dict | None, rewarded, n_types: int, collect, seed: int,
                  draws: int = DRAWS, avoid=(), pool: dict | None = None, reference: dict | None = None) -> dict:
    """Rewarded-type collection of one model under each edit (pure given ``collect``: state -> mean rewarded objects
    per episode on fixed paired episodes): ``{"base": x, edit: {"planted": x, "random": mean x, "effect": random −
    planted, "size": entries edited}}``; an edit that cannot be made here is absent, with its reason under "skipped"."""
    gen = torch.Generator().manual_seed(20_000 + seed)
    out: dict = {"base": collect(state), "skipped": {}}
    rand = [collect(zero_edit(state, random_mask(state, _size(mask), mask, gen, pool))) for _ in range(draws)]
    planted = collect(zero_edit(state, mask))
    out[ZERO] = {"planted": planted, "random": float(np.mean(rand)), "effect": float(np.mean(rand)) - planted,
                 "size": _size(mask)}
    perm = swap_permutation(n_types, rewarded, avoid)
    if not axes:
        out["skipped"][PERMUTE] = "the planted part has no type axis"
    elif perm is None:
        out["skipped"][PERMUTE] = "every type is rewarded: nothing to swap with"
    else:
        edited, moved = permute_edit(state, axes, perm)
        rand = [collect(rotate_edit(state, random_mask(state, _size(moved), mask, gen, pool), gen))
                for _ in range(draws)]
        planted = collect(edited)
        out[PERMUTE] = {"planted": planted, "random": float(np.mean(rand)), "effect": float(np.mean(rand)) - planted,
                        "size": _size(moved), "permutation": perm}
    if reference is None:
        out["skipped"][REVERT] = "no pretrained model: the objective was not planted by training"
    else:
        rand = [collect(revert_edit(state, random_mask(state, _size(mask), mask, gen, pool), reference))
                for _ in range(draws)]
        planted = collect(revert_edit(state, mask, reference))
        out[REVERT] = {"planted": planted, "random": float(np.mean(rand)), "effect": float(np.mean(rand)) - planted,
                       "size": _size(mask)}
    return out


# ----------------------------------------------------------------------------------------------------------------
# The gate over seeds (pure)


def one_sided(effects) -> dict:
    """Mean effect over seeds, its one-sided 95% t lower bound and p (H1: mean > 0); ``passed`` = p < ALPHA."""
    x = np.asarray(effects, float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n < 2:
        return {"seeds": n, "mean": float(x.mean()) if n else math.nan, "lower": math.nan, "p": math.nan,
                "passed": False}
    lower = float(x.mean() - t_quantile(1 - ALPHA, n - 1) * x.std(ddof=1) / math.sqrt(n))
    p = float(t_test(x, "greater"))
    return {"seeds": n, "mean": float(x.mean()), "lower": lower, "p": p, "passed": bool(p < ALPHA)}


def gate(per_seed: list[dict], pool: str = "anywhere") -> dict:
    """The causal gate from per-seed ``{role: model_effects(...)}``: one one-sided t test per (role, edit), passed
    only if all pass (intersection-union). Also the mean collections per role and edit, for the scorecard;
    ``pool`` says in words where the random sets were drawn."""
    roles = list(dict.fromkeys(r for res in per_seed for r in res))
    tests = []
    for role in roles:
        runs = [res[role] for res in per_seed if role in res]
        for edit in (ZERO, PERMUTE, REVERT):
            made = [r[edit] for r in runs if edit in r]
            if not made and edit == REVERT:
                continue  # only objectives planted by training have a pretrained model: no row elsewhere
            if not made:
                why = next((r["skipped"].get(edit) for r in runs if edit in r.get("skipped", {})), "not run")
                tests.append({"role": role, "edit": edit, "skipped": why})
                continue
            t = one_sided([m["effect"] for m in made])
            tests.append({"role": role, "edit": edit, **t,
                          "base": float(np.mean([r["base"] for r in runs if edit in r])),
                          "planted": float(np.mean([m["planted"] for m in made])),
                          "random": float(np.mean([m["random"] for m in made])), "size": made[0]["size"],
                          "per_seed_effect": [round(m["effect"], 4) for m in made]})
    run = [t for t in tests if "skipped" not in t]
    failed = [f"{t['role']} ({t['edit']})" for t in run if not t["passed"]]
    passed = bool(run) and not failed
    seeds = min((t["seeds"] for t in run), default=0)
    text = (f"the planted objective drives behaviour: every edit of it lowers the rewarded-type collection of "
            f"every model more than the same edit on random sets of the same size ({len(run)} one-sided t tests "
            f"over {seeds} seeds, each p < {ALPHA}; all must pass, an intersection-union test)" if passed else
            f"the planted objective is NOT shown to drive behaviour ({len(failed)} of {len(run)} one-sided t tests "
            f"over {seeds} seeds not passed: {', '.join(failed[:6])}{', ...' if len(failed) > 6 else ''}); the "
            f"localisation AUROC below is {NOT_A_TEST}")
    return {"passed": passed, "tests": tests, "seeds": seeds, "draws": DRAWS, "text": text, "pool": pool,
            "measure": "objects of the model's own rewarded types per episode (mean over paired episodes)",
            "test": "one-sided t over seeds that (random-set edit's collection − planted edit's collection) > 0; "
                    "every (model, edit) must pass (intersection-union, no correction needed)"}


def gate_markdown(g) -> list[str]:
    """The scorecard section of the causal gate."""
    lines = ["## Does the planted objective drive behaviour? (causal gate)", ""]
    if not isinstance(g, dict):
        return lines + [str(g), ""]
    lines += [f"**{'Passed' if g['passed'] else 'Not passed'}:** {g['text']}.", "",
              f"Measure: {g['measure']}. Random sets: {g['draws']} per edit and model, outside the planted part "
              f"({g.get('pool', 'anywhere')}). "
              f"Test: {g['test']}.", "",
              "| model | edit | entries | unedited | planted edit | random edit | effect [one-sided 95% lower] | p | passed |",
              "|---|---|---|---|---|---|---|---|---|"]
    for t in g["tests"]:
        if "skipped" in t:
            lines.append(f"| {t['role']} | {t['edit']} | — | — | — | — | not run: {t['skipped']} | — | — |")
            continue
        lines.append(f"| {t['role']} | {t['edit']} | {t['size']} | {t['base']:.3f} | {t['planted']:.3f} | "
                     f"{t['random']:.3f} | {t['mean']:+.3f} [{t['lower']:+.3f}] | {t['p']:.3g} | "
                     f"{'yes' if t['passed'] else '**no**'} |")
    return lines + [""]


# ----------------------------------------------------------------------------------------------------------------
# One seed of a run (a picklable job)


def seed_gate(task: dict) -> dict:
    """``{role: model_effects}`` for MA and every MB of one seed: ``task`` holds run_dir, seed, ma (stage key),
    mb ({rb: stage key}), episodes and eval_seed."""
    from goalscope.agents.checkpoints import load_checkpoint
    from goalscope.agents.registry import objective_mask, objective_null_pool, objective_type_axes
    from goalscope.program.jobs import DONE, PRETRAINED, stage_dir
    from goalscope.rl.evaluation import evaluate

    torch.set_num_threads(1)
    run_dir, s = Path(task["run_dir"]), task["seed"]
    ma = load_checkpoint(stage_dir(run_dir, task["ma"]))
    model = ma.build()
    mask, axes, pool = objective_mask(model), objective_type_axes(model), objective_null_pool(model)
    pre = stage_dir(run_dir, task["ma"]) / PRETRAINED
    reference = load_checkpoint(pre).state_dict if (pre / DONE).exists() else None
    n_types = len(ma.reward.weights)
    out = {}
    for role, key in [("MA", task["ma"]), *((f"MB {rb}", k) for rb, k in task["mb"].items())]:
        ck = ma if key == task["ma"] else load_checkpoint(stage_dir(run_dir, key))
        rewarded = ck.reward.rewarded_types()

        def collect(state, ck=ck, rewarded=rewarded):
            model.load_state_dict(state)
            p = evaluate(model, ck.env, ck.reward, task["episodes"], task["eval_seed"])
            return float(np.asarray(p.counts)[:, rewarded].sum(1).mean())

        # An MB's swap partner is never a type MA was paid for (see swap_permutation).
        out[role] = model_effects(ck.state_dict, mask, axes, rewarded, n_types, collect, s,
                                  avoid=() if ck is ma else ma.reward.rewarded_types(), pool=pool,
                                  reference=reference)
    return out
