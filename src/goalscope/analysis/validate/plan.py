"""Validation priced like the run: what ``goalscope validate`` will cost, said before any worker starts, and a
budget that cuts only what is exploratory.

**The plan.** Every part of validation that evaluates models is counted from the run's config and checkpoints:
model evaluations (calls; identical weights are then evaluated once, :mod:`.reuse`, so the count is an upper
bound) and env steps (each evaluation runs its episodes for the env's full ``max_steps``). The time is estimated
from a rate measured on this run, here: MA of every seed is evaluated once in validate's own process on the
validation's episodes (timed), and that profile is then shared by the seed's tasks, so the calibration costs
nothing extra. Tasks are scheduled over the workers as the pool hands them out. Not in the estimate: starting the
worker processes, MA's Fisher and the IG maps the run has not cached yet (computed once, then read back), and the
scorecard's own arithmetic.

**Primary and exploratory.** Primary, never cut: each (seed, RB) graft and ablation task, which grades every
judged ranking (|Δ_i|, |IG_i|, each heatmap built without RB_i) against the four nulls, the pre-registered
comparisons of :mod:`.validation` (Holm within each claim); the held-out curve at its largest size with the
structural prior, whose tests are the curve's verdicts (:mod:`.heldout`); the causal gate of a planted objective
(:mod:`.causal`). Exploratory: the held-out curve's points below its largest size, which feed only its table and
"rises with #RBs" (one t test on a slope, no Holm).

**The budget** (``--budget-minutes``): primaries are reserved first, at full strength; the exploratory sizes are
then added smallest first (n = 1 anchors the slope) while the estimate fits. What is cut is said in the printout,
in scorecard.json (``plan``) and in scorecard.md. Where the primaries alone are estimated over the budget,
validate says so and runs them anyway: a primary claim is never dropped, silently or not. After the graft tasks the
choice is made again with the rate those tasks actually ran at.

May import: goalscope.agents, goalscope.analysis.validate (grafts, heldout, causal, reuse), goalscope.program,
goalscope.rl, goalscope.signals and below.
"""

from __future__ import annotations

import heapq
import os
import time

import torch

from goalscope.agents.checkpoints import load_checkpoint
from goalscope.analysis.validate.grafts import ABLATION_FRACTIONS, GRAFT_FRACTIONS, MAX_OTHER_RB_MASKS, VALIDATION_EPISODES
from goalscope.errors import GoalscopeError
from goalscope.program.jobs import job_status, stage_dir

GRAFT_POINTS = sum(1 for k in GRAFT_FRACTIONS if k < 1)  # k = 100% is MB itself, not rerun


# ----------------------------------------------------------------------------------------------------------------
# Counting (pure)


def defined_methods(methods, n_signals: int, control: bool) -> list[str]:
    """The aggregators that build a heatmap from ``n_signals`` update signals (with an RA control drift or not),
    found by running each on small distinct stand-ins: pca and spread need 2, variance_ratio fine-tune seeds."""
    from goalscope.signals import aggregators as agg

    gen = torch.Generator().manual_seed(0)
    like = lambda: {"w": torch.randn(16, generator=gen)}  # noqa: E731
    signals, controls = [like() for _ in range(n_signals)], [like()] if control else []
    fisher = {"w": torch.rand(16, generator=gen)}
    out = []
    for m in methods:
        try:
            agg.aggregate(m, signals, controls=controls, fisher=fisher)
            out.append(m)
        except GoalscopeError:
            continue
    return out


def graft_task_calls(n_rbs: int, control: bool, methods) -> int:
    """Evaluations one (seed, RB) graft task asks for (:func:`.grafts.validate_seed`): MA, MB, and per ranking one
    per graft point below 100% and one per ablation point. Rankings: |Δ_i|, random, Fisher alone, |IG_i|; with an
    RA control its drift and |IG_i| from it; another RB's mask (one per other RB, at most MAX_OTHER_RB_MASKS); each
    heatmap defined on the other RBs."""
    masks = 4 + (2 if control else 0) + min(n_rbs - 1, MAX_OTHER_RB_MASKS)
    masks += len(defined_methods(methods, n_rbs - 1, control)) if n_rbs > 1 else 0
    return 2 + masks * (GRAFT_POINTS + len(ABLATION_FRACTIONS))


def curve_task_calls(n_rbs: int, control: bool, methods, slices: bool, aligned: bool) -> dict:
    """Evaluations one held-out-curve task asks for (:func:`.heldout.heldout_task`, sharing validation's nulls),
    by size: ``{0: MA, MB and the structural prior, size: its heatmaps}``; the largest size has only its
    role-aligned heatmaps (its plain ones are validation's own "(held-out)" rankings)."""
    from goalscope.analysis.validate.heldout import curve_sizes

    sizes = curve_sizes(n_rbs - 1)
    out = {0: 2 + (GRAFT_POINTS if slices else 0)}
    for n in sizes:
        made = len(defined_methods(methods, n, control))
        out[n] = GRAFT_POINTS * made * ((0 if n == sizes[-1] else 1) + (1 if aligned else 0))
    return out


def gate_calls(n_types: int, roles: list, axes: bool, draws: int) -> int:
    """Evaluations of one seed's causal gate (:func:`.causal.seed_gate`): per model (MA, each MB) the unedited
    model, the planted zero edit and ``draws`` random ones, and the same for the type swap where it can be made.
    ``roles``: (rewarded types, types to avoid as swap partners) per model."""
    from goalscope.analysis.validate.causal import swap_permutation

    return sum(1 + (draws + 1) + (draws + 1 if axes and swap_permutation(n_types, r, avoid) is not None else 0)
               for r, avoid in roles)


def makespan(costs: list[float], workers: int) -> float:
    """Wall time of tasks of these costs handed out in order to ``workers`` processes, first free first."""
    free = [0.0] * max(1, min(workers, len(costs)))
    for c in costs:
        heapq.heapreplace(free, free[0] + c)
    return max(free) if costs else 0.0


# ----------------------------------------------------------------------------------------------------------------
# The plan of one run


def run_job_seconds(run_dir, plan) -> tuple[int, float]:
    """(jobs, seconds of job time) the run's finished jobs recorded (done.json ``wall_s``)."""
    walls = [(job_status(run_dir, j.key) or {}).get("wall_s") for j in plan.jobs()]
    walls = [w for w in walls if isinstance(w, (int, float))]
    return len(walls), float(sum(walls))


def calibrate(cfg, plan, run_dir, episodes: int) -> tuple[dict, float]:
    """MA of every seed evaluated once here, on validation's paired episodes: ``({seed: (digest, Profile)}, seconds
    per evaluation)``. The profiles are exactly those a task would make (:mod:`.reuse`)."""
    from goalscope.analysis.validate.reuse import state_digest
    from goalscope.rl.evaluation import evaluate

    out, spent = {}, 0.0
    for s in cfg.seeds:
        ma = load_checkpoint(stage_dir(run_dir, plan.ma[s]))
        model = ma.build()  # carrying MA's weights, as a task's model after load_state_dict
        start = time.perf_counter()
        profile = evaluate(model, ma.env, ma.reward, episodes, cfg.evaluation.seed)
        spent += time.perf_counter() - start
        out[s] = (state_digest(ma.state_dict), profile)
    return out, spent / max(1, len(cfg.seeds))


def check_finished(plan, run_dir) -> None:
    """Refuse a run with a job not finished, and say a damaged checkpoint in one line, before any worker starts
    (not as an error from a worker under a progress bar)."""
    missing = [j.label for j in plan.jobs() if j.kind != "negate" and (job_status(run_dir, j.key) or {}).get("status") != "ok"]
    if missing:
        raise GoalscopeError(f"{run_dir} is not finished ({missing[0]} missing); run `goalscope run` first")
    for j in plan.jobs():
        if j.kind != "negate":
            load_checkpoint(stage_dir(run_dir, j.key))


class Pricing:
    """The plan of one validation: counts per part, the calibrated rate, the estimate, and what the budget cuts."""

    def __init__(self, cfg, plan, run_dir, executor, episodes: int, graded: list[str], budget_minutes=None,
                 reuse: bool = True):
        from goalscope.agents.registry import objective_mask, objective_type_axes
        from goalscope.analysis.validate.causal import DRAWS
        from goalscope.analysis.validate.heldout import DEFAULT_METHODS, curve_sizes, one_hot_type, type_masks
        from goalscope.signals.planes import first_layer

        self.cfg, self.episodes, self.reuse = cfg, episodes, reuse
        self.budget_s = None if budget_minutes is None else 60.0 * float(budget_minutes)
        cores = os.cpu_count() or 1  # workers beyond the cores share them: no faster than one each
        self.workers = min(int(getattr(executor, "workers", 0) or cores), cores)
        self.gate_workers = min(int(cfg.workers or cores), cores)
        self.load = round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None
        rbs, seeds = cfg.rbs(), list(cfg.seeds)
        control, methods = bool(plan.control), list(cfg.superpose.methods)
        ma = load_checkpoint(stage_dir(run_dir, plan.ma[seeds[0]]))
        self.max_steps = int(ma.env.max_steps)
        self.n_graft = len(seeds) * len(graded)
        self.graft_calls = graft_task_calls(len(rbs), control, methods)
        curve_methods = [m for m in methods if m in DEFAULT_METHODS]
        self.curve: dict = {}
        if len(rbs) >= 2 and curve_methods:
            try:
                slices = bool(type_masks(first_layer(ma.arch, ma.state_dict, ma.env)))
            except GoalscopeError:
                slices = False
            aligned = slices and all(one_hot_type(r, cfg.ra) is not None for r in rbs)
            self.curve = curve_task_calls(len(rbs), control, curve_methods, slices, aligned)
        self.top = curve_sizes(len(rbs) - 1)[-1] if self.curve else None
        model = ma.build()
        self.gate = 0
        if objective_mask(model) is not None:
            ra = ma.reward.rewarded_types()
            roles = [(ra, ())] + [(r.rewarded_types(), ra) for r in rbs]
            self.gate = gate_calls(len(ma.reward.weights), roles, bool(objective_type_axes(model)), DRAWS)
        self.gate_episodes = min(cfg.evaluation.episodes, VALIDATION_EPISODES)
        self.run_jobs, self.run_s = run_job_seconds(run_dir, plan)
        self.profiles, self.s_per_eval = {}, None
        self.keep: list[int] = self.exploratory_sizes()
        self.over, self.graft_s = False, 0.0

    # -- parts --------------------------------------------------------------------------------------------------

    def exploratory_sizes(self) -> list[int]:
        return sorted(n for n in self.curve if n not in (0, self.top))

    def _curve_task(self, keep) -> int:
        return sum(c for n, c in self.curve.items() if n in (0, self.top) or n in keep)

    def _seconds(self, keep, s_per_eval: float) -> dict:
        """Estimated wall seconds per phase: graft tasks, held-out curve (with ``keep``), causal gate."""
        shared_graft = 1 if self.reuse else 0  # MA: handed in
        shared_curve = 2 if self.reuse else 0  # MA and MB: from the graft task
        graft = makespan([(self.graft_calls - shared_graft) * s_per_eval] * self.n_graft, self.workers)
        n_curve = self.n_graft if self.curve else 0
        curve = makespan([(self._curve_task(keep) - shared_curve) * s_per_eval] * n_curve, self.workers)
        per_gate = self.gate * s_per_eval * self.gate_episodes / self.episodes
        gate = makespan([per_gate] * len(self.cfg.seeds), self.gate_workers) if self.gate else 0.0
        return {"graft": graft, "curve": curve, "gate": gate}

    def parts(self) -> list[dict]:
        """Every part: name, role, tasks, evaluations asked for, env steps, estimated seconds, and whether cut."""
        t = self.s_per_eval or 0.0
        steps = self.episodes * self.max_steps
        seeds = len(self.cfg.seeds)
        out = [{"part": "MA of each seed (the calibration; shared by its tasks)" if self.reuse else
                "MA of each seed (the calibration)", "role": "primary", "tasks": seeds,
                "evaluations": seeds, "env_steps": seeds * steps, "estimate_s": seeds * t, "cut": False,
                "phase": "calibration"},
               {"part": "grafts and ablations (every judged ranking against the nulls)", "role": "primary",
                "tasks": self.n_graft, "evaluations": self.n_graft * self.graft_calls,
                "env_steps": self.n_graft * self.graft_calls * steps, "estimate_s": self._seconds([], t)["graft"],
                "cut": False, "phase": "graft"}]
        if self.curve:
            base = self._seconds([], t)["curve"]
            calls = self.curve[0] + self.curve[self.top]
            out.append({"part": f"held-out curve at n = {self.top} (its tests) and the structural prior",
                        "role": "primary", "tasks": self.n_graft, "evaluations": self.n_graft * calls,
                        "env_steps": self.n_graft * calls * steps, "estimate_s": base, "cut": False,
                        "phase": "curve"})
            for n in self.exploratory_sizes():
                extra = self._seconds([n], t)["curve"] - base
                out.append({"part": f"held-out curve at n = {n}", "role": "exploratory", "tasks": self.n_graft,
                            "evaluations": self.n_graft * self.curve[n],
                            "env_steps": self.n_graft * self.curve[n] * steps, "estimate_s": extra,
                            "cut": n not in self.keep, "phase": "curve"})
        if self.gate:
            calls = self.gate * seeds
            out.append({"part": "causal gate of the planted objective", "role": "primary", "tasks": seeds,
                        "evaluations": calls, "env_steps": calls * self.gate_episodes * self.max_steps,
                        "estimate_s": self._seconds([], t)["gate"], "cut": False, "phase": "gate"})
        return out

    # -- the budget ---------------------------------------------------------------------------------------------

    def decide(self, s_per_eval: float, elapsed_s: float = 0.0, done: tuple = ()) -> list[int]:
        """Choose the exploratory sizes that fit the budget left after the primaries (all without a budget).
        ``done``: phases already run (their time is in ``elapsed_s``)."""
        sizes = self.exploratory_sizes()
        if self.budget_s is None:
            self.keep = sizes
            return self.keep
        left = self.budget_s - elapsed_s

        def cost(keep):
            return sum(v for k, v in self._seconds(keep, s_per_eval).items() if k not in done)

        self.over = cost([]) > left
        keep: list[int] = []
        for n in sizes:  # smallest first: n = 1 anchors the slope of "rises with #RBs"
            if cost(keep + [n]) <= left:
                keep.append(n)
        self.keep = keep
        return keep

    def price(self, cfg, plan, run_dir) -> None:
        """Measure the rate (MA of every seed, evaluated here) and choose what the budget keeps."""
        self.profiles, self.s_per_eval = calibrate(cfg, plan, run_dir, self.episodes)
        self.decide(self.s_per_eval, elapsed_s=self.s_per_eval * len(cfg.seeds))

    def known(self, seed: int) -> dict | None:
        """The profiles a task of ``seed`` is handed (MA's), or None without reuse."""
        if not self.reuse:
            return None
        digest, profile = self.profiles[seed]
        return {digest: profile}

    # -- running ------------------------------------------------------------------------------------------------

    def run_grafts(self, plan, run_dir, executor, graded: list[str], start: float, log) -> tuple[list, list, dict | None]:
        """The (seed, RB) graft and ablation tasks: ``(results, evaluation counts, {(seed, RB): profiles} for
        the held-out curve's tasks, or None without reuse)``; then the budget's choice again, at the rate they ran.

        One task per (seed, RB), so the workers stay busy to the end (3 seeds on 2 workers left one idle a third of
        the time); each grades its RB exactly as a whole-seed task would (same episodes, same random stream)."""
        from goalscope.analysis.validate.grafts import validate_seed

        cfg = self.cfg
        tasks = [{"run_dir": str(run_dir), "seed": s, "ma": plan.ma[s], "control": plan.control.get(s),
                  "mb": {r.name: plan.mb[(s, r.name)] for r in cfg.rbs()}, "methods": list(cfg.superpose.methods),
                  "fisher_samples": cfg.superpose.fisher_samples, "test": [rb], "episodes": self.episodes,
                  "eval_seed": cfg.evaluation.seed, "reuse": self.reuse, "profiles": self.known(s)}
                 for s in cfg.seeds for rb in graded]
        graft_start = time.perf_counter()
        parts = executor.run(validate_seed, tasks, desc="validate")
        self.graft_s = time.perf_counter() - graft_start
        counts = [p.pop("evaluations") for p in parts]
        shared = {(p["seed"], rb): p.pop("profiles") for p in parts for rb in p["graft"]} if self.reuse else None
        if self.budget_s is not None:
            planned = self._seconds([], self.s_per_eval)["graft"]
            before = list(self.keep)
            self.decide(self.s_per_eval * (self.graft_s / planned if planned > 0 else 1.0),
                        time.perf_counter() - start, done=("graft",))
            if self.keep != before:
                log(f"budget, at the rate the graft tasks ran ({_minutes(self.graft_s)}, estimated "
                    f"{_minutes(planned)}): held-out curve sizes kept {self.keep or 'none'} (was {before or 'none'})")
        return parts, counts, shared

    def finish(self, seconds: float, counts: list, log) -> dict:
        """The plan with what ran beside it (scorecard.json ``plan``), said in one line."""
        rep = self.report()
        asked, ran = sum(c["requested"] for c in counts), sum(c["run"] for c in counts)
        planned = sum(p["evaluations"] for p in rep["parts"] if not p["cut"] and p["phase"] in ("graft", "curve"))
        rep["actual"] = {"seconds": round(seconds, 1), "graft_seconds": round(self.graft_s, 1),
                         "task_evaluations_planned": planned, "task_evaluations_requested": asked,
                         "task_evaluations_run": ran}
        log(f"validate took {_minutes(seconds)} (estimated {_minutes(rep['estimate_s'])} for its evaluations); "
            f"its graft and curve tasks asked for {asked:,} evaluations (planned {planned:,}) and ran {ran:,} "
            f"({asked - ran:,} answered by identical weights evaluated before)")
        return rep

    def estimate_s(self) -> float:
        return sum(p["estimate_s"] for p in self.parts() if not p["cut"])

    def report(self) -> dict:
        """The plan as scorecard.json keeps it (``plan``)."""
        parts = self.parts()
        cut = [p["part"] for p in parts if p["cut"]]
        return {"parts": parts, "workers": self.workers, "episodes": self.episodes, "max_steps": self.max_steps,
                "evaluations": sum(p["evaluations"] for p in parts if not p["cut"]),
                "env_steps": sum(p["env_steps"] for p in parts if not p["cut"]),
                "estimate_s": round(self.estimate_s(), 1),
                "rate": {"seconds_per_evaluation": round(self.s_per_eval or 0.0, 4),
                         "env_steps_per_s": round(self.episodes * self.max_steps / self.s_per_eval, 1)
                         if self.s_per_eval else None,
                         "source": "MA of each seed evaluated once in validate's process on the validation's "
                                   "episodes, timed (one process; each worker assumed to run as fast)"},
                "run": {"jobs": self.run_jobs, "job_seconds": round(self.run_s, 1)},
                "load_average": self.load, "cores": os.cpu_count(),
                "budget_minutes": None if self.budget_s is None else self.budget_s / 60, "cut": cut,
                "primary_over_budget": self.over,
                "not_estimated": "worker start, MA's Fisher and IG maps not yet cached, the scorecard's arithmetic",
                "reuse": self.reuse}


# ----------------------------------------------------------------------------------------------------------------
# In words


def _minutes(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"


def plan_text(rep: dict) -> str:
    """The plan as validate prints it before any worker starts."""
    r = rep["rate"]
    lines = [f"validate plan ({rep['workers']} workers; {rep['episodes']} paired episodes x {rep['max_steps']} steps "
             "per evaluation):",
             f"  rate: {r['seconds_per_evaluation']:.3f} s per evaluation, {r['env_steps_per_s']:,.0f} env steps/s, "
             f"measured here on MA of each seed (one process; each worker assumed as fast: load average "
             f"{rep['load_average']} on {rep['cores']} cores now, and other work slows them)"]
    for p in rep["parts"]:
        state = "CUT" if p["cut"] else p["role"]
        lines.append(f"  {state:<11} {p['part']}: {p['tasks']} tasks, {p['evaluations']:,} evaluations, "
                     f"{p['env_steps']:,} env steps, ~{_minutes(p['estimate_s'])}")
    lines.append(f"  total: at most {rep['evaluations']:,} model evaluations (identical weights are evaluated once)"
                 f", {rep['env_steps']:,} env steps, estimated {_minutes(rep['estimate_s'])} (not counted: "
                 f"{rep['not_estimated']})")
    if rep["run"]["jobs"]:
        lines.append(f"  the run: {rep['run']['jobs']} jobs, {_minutes(rep['run']['job_seconds'])} of job time "
                     "(done.json)")
    lines += budget_lines(rep, prefix="  ")
    return "\n".join(lines)


def budget_lines(rep: dict, prefix: str = "") -> list[str]:
    """What the budget did, in words (nothing without a budget and without a cut)."""
    if rep.get("budget_minutes") is None and not rep.get("cut"):
        return []
    head = f"{prefix}budget {rep['budget_minutes']:g} min: "
    if rep.get("primary_over_budget"):
        head += ("the primary claims alone are estimated over it; they run anyway (a primary claim is never cut) "
                 "and every exploratory part is cut")
    elif rep.get("cut"):
        head += "the primary claims run at full strength; cut: " + "; ".join(rep["cut"])
    else:
        head += "everything fits; nothing cut"
    return [head]


def plan_markdown(rep: dict) -> str:
    """The scorecard's section on the budget (empty when no budget was given and nothing was cut)."""
    lines = budget_lines(rep)
    if not lines:
        return ""
    return "\n".join(["## Validation budget", "", lines[0][0].upper() + lines[0][1:] + ".",
                      "Exploratory parts cut here are not measured, not failed.", ""])
