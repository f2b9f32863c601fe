"""Reward -> weights: write an objective into MA without training, and measure the seed's linear assumption (issue 14).

Four measurements on a finished run, each cached and resumable, each in its own module:

linearity   MA + t·Δ_i, before and after the negate stage's RA retrain (:mod:`~goalscope.analysis.edits.linearity`);
arithmetic  scaling, seed means, transfer across MA seeds, MA + Δ_i + Δ_j against a real fine-tune on the pair
            (:mod:`~goalscope.analysis.edits.arithmetic`);
targeted    MA + the top-k% of Δ_i by a heatmap against |Δ|, random, Fisher and control-drift masks
            (:mod:`~goalscope.analysis.edits.targeted`);
dynamics    (by name only) the fine-tune MA -> MB_i rerun with snapshots (:mod:`~goalscope.analysis.edits.dynamics`).

What they share (the run opened for edits, the profile cache, the metrics) is :mod:`~goalscope.analysis.edits.common`.
This module is the entry point: :func:`run_edits` writes ``RUN/edits/<part>.json`` and ``RUN/edits/records.csv``;
the names of the part modules are re-exported here.

May import: goalscope.analysis (records, edits.*), goalscope.errors, goalscope.inputs, goalscope.outputs.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from goalscope.analysis.edits.arithmetic import arithmetic, default_pairs, pair_jobs, pair_rewards, profile_gap_closed
from goalscope.analysis.edits.common import (DEFAULT_PAIRS, DEFAULT_PARTS, EDIT_FRACTIONS, EDITS_DIR, METRICS, PARTS,
                                             RANDOM_DIRECTIONS, SNAPSHOT_UPDATES, T_GRID, EditRun, json_default)
from goalscope.analysis.edits.dynamics import dynamics
from goalscope.analysis.edits.linearity import linearity, linearity_jobs
from goalscope.analysis.edits.targeted import targeted
from goalscope.analysis.records import merge_records
from goalscope.errors import ConfigError
from goalscope.inputs import MAX_RANDOM_DIRECTIONS, finite_float, int_field
from goalscope.outputs import analysing, atomic_write_bytes, remove_stale_tmp

__all__ = ["DEFAULT_PAIRS", "DEFAULT_PARTS", "EDIT_FRACTIONS", "EDITS_DIR", "METRICS", "PARTS", "RANDOM_DIRECTIONS",
           "SNAPSHOT_UPDATES", "T_GRID", "EditRun", "arithmetic", "default_pairs", "dynamics", "linearity",
           "linearity_jobs", "pair_jobs", "pair_rewards", "profile_gap_closed", "run_edits", "targeted"]


def run_edits(run_dir: str | Path, parts=DEFAULT_PARTS, *, episodes: int | None = None, workers: int = 1,
              t_grid=T_GRID, retrain: bool = True, pairs=None, fractions=EDIT_FRACTIONS,
              heatmap: str = "ties", n_random: int = RANDOM_DIRECTIONS, log=print) -> dict:
    """Run (or resume) the chosen parts on a finished run; writes RUN/edits/<part>.json and RUN/edits/records.csv.
    ``pairs``: the arithmetic part's pair rewards, None for pairs of the run's own RBs (:func:`default_pairs`)."""
    torch.set_num_threads(1)
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        raise ConfigError(f"unknown part {unknown[0]!r}; choose from {', '.join(PARTS)}")
    with analysing(run_dir):
        return _run_edits(run_dir, parts, episodes, workers, t_grid, retrain, pairs, fractions, heatmap, n_random, log)


def _run_edits(run_dir, parts, episodes, workers, t_grid, retrain, pairs, fractions, heatmap, n_random, log) -> dict:
    er = EditRun(run_dir, episodes, log)
    # Every argument is checked before the first evaluation (a bad pair used to surface after the linearity part).
    if pairs is None:  # a fixed default would name types a run with fewer objects does not have
        pairs = default_pairs(er)
    if "arithmetic" in parts and pairs:
        pair_rewards(er, pairs)
    int_field(n_random, "--random-directions", 0, MAX_RANDOM_DIRECTIONS)
    for name, values in (("--t", t_grid), ("--fractions", fractions)):
        for v in values:
            finite_float(v, name)
    if any(not 0 < k <= 1 for k in fractions):
        raise ConfigError(f"--fractions must lie in (0, 1], got {list(fractions)}")
    for d in (er.out, er.out / "profiles", er.out / "fisher"):  # what a killed call left half-written
        remove_stale_tmp(d)
    results = {}
    for part in parts:
        if part == "linearity":
            res, rows = linearity(er, t_grid, retrain, workers, n_random)
        elif part == "arithmetic":
            res, rows = arithmetic(er, pairs, workers, n_random=n_random)
        elif part == "dynamics":
            res, rows = dynamics(er)
        else:
            res, rows = targeted(er, fractions, heatmap)
        res["episodes"] = er.episodes
        atomic_write_bytes(er.out / f"{part}.json", json.dumps(res, indent=2, default=json_default).encode())
        merge_records(er.out / "records.csv", rows, part)
        merge_records(er.path / "records.csv", rows, part)  # one table of the run's results
        results[part] = res
        log(f"{part}: {len(rows)} records; {er.evaluated} evaluations run so far (the rest from the cache)")
    return results
