"""The sections of the report page, each a question, its figures (from the ``figures_*`` modules, saved
through :meth:`goalscope.report.common.Page.figure`) and its tables. The page (:mod:`goalscope.report.page`)
calls them in the order of :data:`SECTION_WRITERS`; nothing here imports it.

May import: goalscope.report (run, common, figures_*), goalscope.analysis.
"""

from __future__ import annotations

import json
import math

import numpy as np

from goalscope.errors import GoalscopeError
from goalscope.inputs import read_json
from goalscope.program.runner import CONTROL_MODELS
from goalscope.report.common import Page, ci_text, esc, html_table, num, pca_note, pct, write_csv
from goalscope.report.figures_edits import CAPTIONS as EDITS_CAPTIONS
from goalscope.report.figures_edits import found_parts as edits_parts
from goalscope.report.figures_mazes import fig_mazes
from goalscope.report.figures_negation import NEG_CONTROLS, fig_negation, negation_rows
from goalscope.report.figures_rollouts import ROLLOUT_STEPS, rollout_html, rollouts
from goalscope.report.figures_signals import fig_cosine, frozen_units, heatmap_figures
from goalscope.report.figures_steering import fig_steering
from goalscope.report.figures_training import behaviour_table, fig_behaviour, fig_learning_curves
from goalscope.report.figures_validation import fig_validation, input_planes_html
from goalscope.report.run import SCORECARD, Run, read_scorecard

SECTIONS = [("learning", "1. Learning curves"), ("behaviour", "2. Behaviour profiles"),
            ("heatmaps", "3. Where the update signals live"), ("cosine", "4. Cosine similarity of update signals"),
            ("negation", "5. Negate and retrain"), ("mazes", "6. Maze pictures"), ("validation", "7. Validation"),
            ("provenance", "8. Config and provenance"), ("edits", "9. Objective edits and decoding"),
            ("steering", "10. Steering vectors and shards"), ("rollouts", "11. Rollouts")]


def _section_learning(run: Run, page: Page) -> None:
    page.section("learning", SECTIONS[0][1], "Did MA learn RA, did each MB learn its RB, and how do the controls and "
                 "the negated models recover when retrained on RA?")
    page.figure("learning_curves", fig_learning_curves(run, page.out),
                "Mean return of the training episodes over env steps (each model under the reward it is trained on; "
                + ("training episodes end once every rewarded object is collected, so these run higher than the "
                   "full-length evaluation episodes; " if getattr(run.cfg.env, "end_when_collected", False) else "")
                + "the first point of each run counts only the episodes that ended within the first rollout, which "
                "favours quick successes). Band: min–max over seeds (and RBs where pooled).",
                ["learning_curves.csv"])


def _section_behaviour(run: Run, page: Page) -> None:
    page.section("behaviour", SECTIONS[1][1], "What does each model actually collect? A goal shows up as the object "
                 "type a model goes for; a negated goal as the type MB* avoids compared with the controls.")
    rows = behaviour_table(run)
    write_csv(page.out, "behaviour.csv", rows)
    page.figure("behaviour", fig_behaviour(run, page.out, rows),
                (f"Objects of each type collected per evaluation episode" if run.event_word == "objects" else
                 f"{run.event_word.capitalize()} of each type per evaluation episode")
                + " (paired start states across models).",
                ["behaviour.csv"])
    s = run.summary
    perf = {}
    for r in run.records:
        if r["stage"] == "performance" and r["metric"] == "fraction_of_oracle":
            perf.setdefault((r["model"], r["reward"]), []).append(r["value"])
    trs = []
    for model, reward in [("MA", run.ra.name), *[(f"MB[{rb.name}]", rb.name) for rb in run.rbs],
                          *[(f"MB[{rb.name}]", run.ra.name) for rb in run.rbs], *[(c, run.ra.name) for c in CONTROL_MODELS]]:
        v = perf.get((model, reward))
        if v:
            trs.append([esc(model), esc(reward), pct(float(np.mean(v))), f"{pct(min(v))} – {pct(max(v))}", len(v)])
    if trs:
        page.add("<h3>Fraction of the oracle's return</h3>" +
                 html_table(["model", "scored under", "mean over seeds", "seed range", "seeds"], trs, {2, 3, 4}))
    comp = s.get("competence") or {}
    if comp:
        rows = [[esc(m), esc(c["reward"]), ci_text(*c["preference"], fmt="+.2f"), c["seeds"],
                 esc(("" if c["passes"] else "below the bar: ") + c["verdict"])] for m, c in comp.items()]
        page.add("<h3>Competence: does each model prefer what it is rewarded for?</h3><p>Preference: "
                 f"{run.event_word} of the rewarded types minus the mean of the other types, per episode, with a t interval over training "
                 "seeds. The oracle decides where the env has one (bar: "
                 f"{run.cfg.evaluation.competence:.0%} of its return for MA, "
                 f"{run.cfg.evaluation.competence_mb:.0%} for each MB).</p>"
                 + html_table(["model", "reward", "preference [95% CI]", "seeds", "verdict"], rows, {2, 3}))
    if s.get("ma_fraction_of_oracle") is not None:
        page.add(f"<p>MA reaches <b>{pct(s['ma_fraction_of_oracle'])}</b> of the oracle on RA.</p>")


def _overlap_cell(h: dict, value: str, chance: str, plane: str) -> str:
    return f"{num(h.get(value))} [{num(h.get(chance))}" + (f"; {num(h[plane])}]" if h.get(plane) is not None else "]")


def _section_heatmaps(run: Run, page: Page) -> None:
    page.section("heatmaps", SECTIONS[2][1], "Which layers, tensors and units carry the update signals? A tensor "
                 "is 'enriched' when its share of the heatmap's score exceeds its share of the parameters (> 1).")
    figs = heatmap_figures(run, page.out)
    hs = run.summary.get("heatmaps") or {}
    if hs:
        trs = []
        for m, h in hs.items():
            hot = ", ".join(f"{esc(k)} ×{h['enrichment'][k]:.2f}" for k in h.get("hottest_tensors", []))
            trs.append([esc(m), hot, "n/a" if h.get("seed_jaccard_top1pct") is None else
                        _overlap_cell(h, "seed_jaccard_top1pct", "seed_jaccard_stratified_chance", "seed_jaccard_plane_stratified_chance")])
        page.add("<h3>Hottest tensors per aggregator</h3>" + html_table(
            ["aggregator", "hottest tensors (enrichment)", "top-1% overlap across MA seeds [chance: tensor; tensor × plane]"], trs, {2}))
    diag = [(m, h) for m, h in hs.items() if h.get("spearman_with")]
    if diag:
        refs = list(dict.fromkeys(r for _, h in diag for r in h["spearman_with"]))
        page.add("<h3>What each heatmap is mostly made of</h3><p>Spearman rank correlation of each heatmap with "
                 "references that know no RB; a map at ρ ≥ 0.9 with one of them mostly restates it. Top-1% overlap "
                 "is shown where units line up (another fine-tune seed of the same MA) and across MA seeds, each "
                 "beside its chance levels: the top entries placed at random within their tensor, and (where the "
                 "first layer reads the maze planes) within their tensor and input plane: an overlap at that level "
                 "is explained by reading the same input plane, not by shared units.</p>" + html_table(
                     ["aggregator", *[f"ρ with {r}" for r in refs], "top-1% Jaccard, same MA [chance: tensor; tensor × plane]",
                      "across MA seeds [chance: tensor; tensor × plane]", "warning"],
                     [[esc(m), *[num(h["spearman_with"].get(r)) for r in refs],
                       _overlap_cell(h, "within_ma_jaccard_top1pct", "within_ma_stratified_chance", "within_ma_plane_stratified_chance"),
                       _overlap_cell(h, "seed_jaccard_top1pct", "seed_jaccard_stratified_chance", "seed_jaccard_plane_stratified_chance"),
                       esc(h.get("warning") or "")] for m, h in diag], set(range(1, len(refs) + 3))))
    pca = pca_note(run)
    if pca:
        page.add(f"<p class='note'>{esc(pca['note'])} (explained variance {num(pca.get('explained_variance'))}).</p>")
    frozen = [r for r in frozen_units(run) if r["zero_max"] > 0]
    if frozen:
        page.add("<h3>Units that did not move</h3><p>Output units whose update is exactly zero in an RB's Δ (for "
                 "example ReLU units that are never active): they score 0 in every heatmap and lower their tensor's "
                 "enrichment.</p>" + html_table(
                     ["tensor", "units", "units with Δ = 0: mean over seeds × RBs", "range"],
                     [[esc(r["tensor"]), r["units"], f"{r['zero_mean']:.1f} ({r['zero_mean'] / r['units']:.0%})",
                       f"{r['zero_min']} – {r['zero_max']}"] for r in frozen], {1, 2, 3}))
    for m, err in (run.summary.get("heatmap_errors") or {}).items():
        page.add(f"<p class='note'>Aggregator {esc(m)} was not computed: {esc(err)}</p>")
    if not figs:
        page.add("<p class='note'>This run has no heatmaps.</p>")
    for name, title, fig, caption in figs:
        page.add(f"<h3>{esc(title)}</h3>")
        csvs = ["heatmap_tensors.csv", "heatmap_units.csv"] if name.startswith("heatmap_") and "per_rb" not in name \
            else [f"{name}.csv"]
        page.figure(name, fig, caption, csvs)


def _section_cosine(run: Run, page: Page) -> None:
    page.section("cosine", SECTIONS[3][1], "Are the update signals specific to each RB, or mostly a shared drift "
                 "from continued training? Goal-specific signals agree across seeds for the same RB and disagree "
                 "across RBs; shared drift makes every pair similar, the control included.")
    fig = fig_cosine(run, page.out)
    if fig is None:
        page.add("<p class='note'>This run has no signals/cosine.json.</p>")
        return
    page.figure("cosine", fig, "Cosine similarity between every pair of update signals (whole network, flattened).",
                ["cosine.csv", "cosine_groups.csv"])
    groups = [r for r in run.records if r["stage"] == "signals" and r["model"] == "cosine"]
    if groups:
        page.add(html_table(["pairs", "mean cosine", "min", "max"],
                        [[esc(g["metric"].replace("_", " ")), f"{g['value']:+.3f}", f"{g['ci_low']:+.3f}",
                          f"{g['ci_high']:+.3f}"] for g in groups], {1, 2, 3}))


def _verdict_html(v: str) -> str:
    cls = "lean" if v == "leans toward minimising RB" else ("more" if v.startswith("leans toward RB") else "")
    return f"<span class='{cls}'>{esc(v)}</span>" if cls else esc(v)


def _section_negation(run: Run, page: Page) -> None:
    page.section("negation", SECTIONS[4][1], "Does moving MA against an update signal (MA − αΔ) and retraining on RA "
                 "make it avoid RB's objects more than MA retrained alike, and more than a random step of the same "
                 "size, while keeping RA?")
    if not run.cfg.negate.enabled:
        page.add("<p class='note'>Negation is disabled in this experiment.</p>")
        return
    rows = negation_rows(run)
    fig = fig_negation(run, page.out, rows)
    if fig is None:
        page.add("<p class='note'>No negation results in records.csv (did the negate stage fail?).</p>")
        return
    page.figure("negation", fig, "Differences MB* − control per RB and α with 95% hierarchical bootstrap CIs over "
                "seeds × paired episodes; the zero line is no effect.", ["negation.csv"])
    trs = []
    for e in run.summary.get("negation") or []:
        for ctrl, label, *_ in NEG_CONTROLS:
            d = e.get(ctrl)
            if not d:
                continue
            trs.append([esc(e["rb"]), f"{e['alpha']:g}", esc(label.replace("vs ", "")), ci_text(*d["rb_objects_diff"]),
                        ci_text(*d["specific_lean"]), ci_text(*d["lean_t"]) if d.get("lean_t") else "—",
                        num(d.get("p_holm")), ci_text(*d["ra_return_diff"]), _verdict_html(d["verdict"])])
    fam = run.summary.get("negation_family") or {}
    page.add("<h3>Verdicts (summary.json)</h3><p>MB* minus control, mean [95% CI]; the verdict reads the specific "
             "lean (RB objects minus the other non-RA types, which separates a lean from plain capability loss): its "
             "t interval over per-seed means and the hierarchical bootstrap must both exclude 0, and the t test must "
             f"survive {esc(fam.get('correction', 'Holm-Bonferroni'))} over all {esc(fam.get('tests', len(trs)))} negation "
             f"tests. The random-direction control is the mean over {run.cfg.negate.random_directions} fresh "
             "directions per (seed, RB, α).</p>"
             + html_table(["RB", "α", "control", "RB objects", "specific lean (bootstrap)", "specific lean (t over seeds)",
                       "p (Holm)", "RA return", "verdict"], trs, {1, 3, 4, 5, 6, 7}))


def applies(run: Run, anchor: str) -> bool:
    """Whether a section has anything to say about this run: the maze pictures draw the object maze's grid, so
    they are left out (from the page and its contents) for any other env."""
    if anchor == "mazes":
        return getattr(run.cfg.env, "family", "object_maze") == "object_maze"
    if anchor == "rollouts":  # left out for an env that renders nothing; a failure is the section's to show
        try:
            return bool(rollouts(run))
        except Exception:
            return True
    return True


def _section_rollouts(run: Run, page: Page) -> None:
    items = rollouts(run)
    if not items:
        return
    page.section("rollouts", SECTIONS[10][1], "What do MA and an MB do, step by step? One episode each from the same "
                 "start state, in the env they were trained in.")
    page.add(rollout_html(page, items) + f"<figcaption>Animated: the start, then the picture after each action, at "
             f"most {ROLLOUT_STEPS} steps; actions sampled with a seeded generator. Any checkpoint's video: "
             "<code>goalscope video CHECKPOINT --out FILE.gif</code>.</figcaption></figure>")


def _section_mazes(run: Run, page: Page) -> None:
    if not applies(run, "mazes"):
        return
    page.section("mazes", SECTIONS[5][1], "What do the models do in the maze? The same start state for MA, an MB "
                 "and its negation MB*, each rolled out from its checkpoint.")
    fig = fig_mazes(run, page.out)
    if fig is None:
        page.add("<p class='note'>No finished MA checkpoint to roll out.</p>")
        return
    page.figure("mazes", fig, "Walls dark, objects as numbered discs (faded once collected, with the step), the "
                "path from the green square to the red cross.", ["maze_trajectories.csv"])


def _section_validation(run: Run, page: Page) -> None:
    page.section("validation", SECTIONS[6][1], "Does the heatmap localise the objective? Grafting the top-scored "
                 "parameters of MB into MA should carry RB's behaviour across; AUROC scores the localisation.")
    card = read_scorecard(run.path)
    if card is None:
        page.add(f"<p class='note'>Validation has not been run for this run (no {SCORECARD}); run "
                 f"<code>goalscope validate {esc(run.path)}</code>, then write this report again.</p>")
        return
    fig = fig_validation(run, card, page.out)
    if fig is not None:
        page.figure("validation", fig, "Graft curves: how much of MB's extra RB behaviour MA regains from only the "
                    "top-k% parameters of Δ ranked by each heatmap, against |Δ| and random rankings; localisation: "
                    "AUROC of the heatmap for the parameters that hold the planted objective.", ["validation_curves.csv"])
    _validation_details(run, card, page)
    loc = card.get("localisation")
    if isinstance(loc, dict):
        from goalscope.report.figures_planted import localisation_html

        page.add(localisation_html(loc))
        from goalscope.report.figures_planted import fig_superposition_curve

        curve = fig_superposition_curve(card, page.out)
        if curve is not None:
            page.figure("superposition_curve", curve, "Localisation of the planted objective vs the number of RBs "
                        "superposed, per aggregator (95% t CI over seeds), against nulls that need no superposition: "
                        "single-RB |Δ_i|, control drift, MA's Fisher alone, random.", ["superposition_curve.csv"])
        for m, v in (card.get("localisation_verdicts") or {}).items():
            page.add(f"<p><b>{esc(m)}:</b> {esc(v)}</p>")
    elif loc is not None:
        page.add(f"<p class='note'>Localisation: {esc(loc)}</p>")
    page.add(input_planes_html(card.get("input_planes")))
    rest = {k: v for k, v in card.items() if k not in ("graft", "localisation", "verdicts", "held_out_graft_area",
                                                      "localisation_verdicts", "tests", "families", "stability",
                                                      "ablation", "checks", "exploratory", "input_planes")}
    scalars = _scalars(rest)
    if scalars:
        page.add("<h3>Other scorecard entries</h3>" + html_table(["entry", "value"], [[esc(k), num(v)] for k, v in scalars], {1}))


def _family_words(name: str, info: dict) -> str:
    if "claims" not in info:  # an older scorecard: Holm over every test of the measure
        return f"{name}: {info.get('tests')} tests, {info.get('correction')}, {info.get('seeds')} MA seeds"
    return (f"{name}: {info['claims']} claims of up to {info['family_size']} primary tests each, Holm within each "
            f"claim, {info.get('seeds')} MA seeds")


def _validation_details(run: Run, card: dict, page: Page) -> None:
    """Verdicts with their nulls, every comparison with its Holm p, ablations, stability: the evidence."""
    from goalscope.analysis.validate.grafts import PER_RB

    fams = card.get("families") or {}
    # A scorecard from an older goalscope has one verdict string per heatmap: shown as its graft verdict.
    verdicts = {n: v if isinstance(v, dict) else {"graft": v} for n, v in (card.get("verdicts") or {}).items()}
    if verdicts:
        page.add("<h3>Verdicts (graft and ablation families)</h3><p>Each ranking against random, MA's Fisher alone, "
                 "the RA-control drift and another RB's mask; " + esc("; ".join(_family_words(f, i)
                                                                           for f, i in fams.items()))
                 + ". A null is beaten when its Holm-adjusted p < 0.05; a null that was not run is “not tested”; a "
                 "claim that cannot pass at this seed count is “underpowered at N seeds” with the seeds that would do. "
                 "Heatmaps are judged on held-out RBs; |IG_i| is the attribution of MB_i's behaviour change "
                 "(integrated gradients of KL to MB along MA → MB_i, or from the RA control), beside |Δ_i|.</p>"
                 + html_table(["ranking", "graft verdict", "ablation verdict"],
                          [[esc(n), esc(v.get("graft")), esc(v.get("ablation"))] for n, v in verdicts.items()]))
    g = card.get("graft") or {}
    if g.get("area_ci"):
        roles = g.get("roles") or {}
        ab = (card.get("ablation") or {}).get("lean_lost_ci") or {}
        page.add("<h3>Graft areas (specific lean) and ablation</h3>" + html_table(
            ["ranking", "role", "graft area [95% t CI]", "raw-RB graft area", "RA return vs MA", "ablation: lean lost [95% t CI]"],
            [[esc(n), esc(roles.get(n, "")), ci_text(*a, fmt=".3f"), num(g.get("raw_area", {}).get(n)),
              num(g.get("ra_mean", {}).get(n)), ci_text(*ab[n], fmt=".3f") if n in ab else "—"]
             for n, a in g["area_ci"].items()], {2, 3, 4, 5}))
        page.add(f"<p>MB's specific-lean gain per RB: {esc(g.get('rb_gain'))}; raw RB objects: {esc(g.get('rb_gain_raw'))} "
                 f"(the difference is collecting of every type rising, not a lean). |Δ<sub>i</sub>| is {esc(PER_RB)}.</p>")
    for fam, tests in (card.get("tests") or {}).items():
        holm_over = (f"Holm within each claim, over its {fams[fam]['family_size']} nulls" if "family_size" in fams.get(fam, {})
                     else f"Holm over {len(tests)}")  # an older scorecard: one family per measure
        page.add(f"<h3>Primary {esc(fam)} comparisons (one-sided paired t over seeds, {esc(holm_over)})</h3>" + html_table(
            ["ranking", "null", "difference [95% t CI]", "p", "p (Holm)", "beaten"],
            [[esc(t["ranking"]), esc(t["null"]), ci_text(*t["diff"]), num(t["p"]), num(t["p_holm"]),
              "yes" if t["beaten"] else "no"] for t in tests], {2, 3, 4}))
    if card.get("exploratory"):
        page.add("<h3>Exploratory comparisons</h3><p>Not pre-registered: one-sided paired t over seeds, unadjusted, "
                 "never a verdict.</p>" + html_table(
                     ["ranking", "against", "measure", "difference [95% t CI]", "p (unadjusted)"],
                     [[esc(t["ranking"]), esc(t["null"]), esc(t["measure"]), ci_text(*t["diff"]), num(t["p"])]
                      for t in card["exploratory"]], {3, 4}))
    st = card.get("stability") or {}
    if st.get("within_ma"):
        page.add("<h3>Stability where units line up</h3><p>Top-1% |Δ| sets compared between fine-tune seeds of the "
                 f"same MA; chance: {esc(st.get('chance_method'))}.</p>" + html_table(
                     ["pairs (same MA)", "Jaccard", "stratified chance", "ratio", "pairs"],
                     [[esc(n), num(v.get("jaccard")), num(v.get("chance")), num(v.get("ratio_to_chance")), v.get("pairs")]
                      for n, v in st["within_ma"].items()], {1, 2, 3, 4}))
        ac = st.get("across_ma") or {}
        page.add(f"<p>Across MA seeds (units do not line up; {esc(ac.get('measure'))}): same RB {num(ac.get('same RB'))}, "
                 f"different RBs {num(ac.get('different RBs'))}.</p>")


def _section_provenance(run: Run, page: Page) -> None:
    page.section("provenance", SECTIONS[7][1], "What exactly was run, with which software, and how long it took.")
    s = run.summary
    versions = {}
    for key in run.ok:
        meta = run.stage(key) / "meta.json"
        if meta.exists():
            try:  # bounded like every file of a run; a damaged one just names no versions
                versions = read_json(meta).get("versions") or {}
            except (GoalscopeError, AttributeError):
                continue
            if versions:
                break
    page.add("<h3>Software</h3>" + html_table(["package", "version"], [[esc(k), esc(v)] for k, v in versions.items()]))
    page.add(f"<p>Seeds: {esc(run.cfg.seeds)}; evaluation: {run.cfg.evaluation.episodes} episodes from env seed "
             f"{run.cfg.evaluation.seed}, {run.cfg.evaluation.bootstrap} bootstrap resamples.</p>")
    stage_w, job_w = s.get("stage_wall_s") or {}, s.get("job_wall_s") or {}
    kinds = list(dict.fromkeys([*stage_w, *job_w]))
    counts: dict[str, list] = {}
    for st in run.status.values():
        counts.setdefault(st.get("kind"), []).append(st.get("wall_s", math.nan))
    trs = []
    for k in kinds:
        w = [x for x in counts.get(k, []) if math.isfinite(x)]
        trs.append([esc(k), esc(stage_w.get(k, "")), esc(job_w.get(k, "")), len(counts.get(k, [])) or "",
                    f"{min(w):.1f} – {max(w):.1f}" if w else ""])
    page.add("<h3>Wall time</h3><p>Stage = elapsed time of the stage (jobs run in parallel); jobs = compute summed "
             "over its jobs.</p>" + html_table(["stage", "stage wall (s)", "summed job wall (s)", "jobs", "per job (s)"],
                                           trs, {1, 2, 3, 4}))
    rows = [{"key": k, "kind": st.get("kind"), "label": st.get("label"), "status": st.get("status"),
             "wall_s": st.get("wall_s")} for k, st in sorted(run.status.items(), key=lambda kv: str(kv[1].get("label")))]
    write_csv(page.out, "stages.csv", rows, ["key", "kind", "label", "status", "wall_s"])
    page.add("<p>Every stage: <a href='stages.csv'>stages.csv</a> (key, kind, label, status, wall time).</p>")
    page.add(f"<h3>Experiment config (experiment.json)</h3><pre>{esc(json.dumps(run.experiment, indent=2))}</pre>")


def _section_steering(run: Run, page: Page) -> None:
    """Reads RUN/steering/summary.json (written by `goalscope steer RUN`)."""
    from goalscope.analysis.steering.run import STEER_DIR
    from goalscope.analysis.steering.summary import summary_markdown

    path = run.path / STEER_DIR / "summary.json"
    page.section("steering", f"{dict(SECTIONS)['steering']} (activations beside weights)",
                 "Does adding MB_i − MA's mean activation difference to MA move RB behaviour like grafting Δ_i does, "
                 "at the same layer? Is the RB-specific change concentrated, and is MB's RB preference a reflex?")
    if not path.exists():
        page.add(f"<p>Not computed: run <code>goalscope steer {esc(run.path)}</code>.</p>")
        return
    s = read_json(path, advice=f"rewrite it with `goalscope steer {run.path}`")
    fig = fig_steering(s)
    page.figure("steering", fig, "Specific lean change relative to MA for activation (circles) and weight (squares) "
                "interventions with Δ_i and its nulls, per site (patch: MB's own activation per observation, "
                "input-dependent); right: MB's RB preference by distance.")
    page.add(f"<pre>{esc(summary_markdown(s))}</pre>")


def _scalars(d, prefix="") -> list[tuple[str, object]]:
    out = []
    if isinstance(d, dict):
        for k, v in d.items():
            out += _scalars(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(d, (int, float, str, bool)) or d is None:
        out.append((prefix, d))
    elif isinstance(d, list) and d and all(isinstance(x, (str, bool)) for x in d):
        out.append((prefix, ", ".join(map(str, d))))
    return out


def _section_edits(run: Run, page: Page) -> None:
    found = edits_parts(run.path)
    page.section("edits", SECTIONS[8][1], "Does negating Δ flip the objective (linearity)? Can an objective be written "
                 "by arithmetic or a small edit? Can it be read back from the weights?")
    if not found:
        page.add("<p>Not run: <code>goalscope edits RUN</code> and <code>goalscope decode RUN</code>.</p>")
        return
    for part, fn, res in found:
        page.figure(f"edits_{part}", fn(res), EDITS_CAPTIONS[part])


# (anchor, writer) of each section, in page order: what the page calls.
SECTION_WRITERS = [("learning", _section_learning), ("behaviour", _section_behaviour), ("heatmaps", _section_heatmaps),
                   ("cosine", _section_cosine), ("negation", _section_negation), ("mazes", _section_mazes),
                   ("validation", _section_validation), ("provenance", _section_provenance), ("edits", _section_edits),
                   ("steering", _section_steering), ("rollouts", _section_rollouts)]
