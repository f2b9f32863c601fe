"""The run report: one self-contained HTML page that answers the experiment's questions with figures and numbers.

``goalscope report runs/NAME`` reads a finished run directory and writes ``runs/NAME/report/``:

    index.html              every figure embedded as a base64 PNG, no external JS, CSS or fonts (opens offline)
    <figure>.png / .svg     each figure on its own, raster and vector
    <figure>.csv            the tidy data behind each figure
    rollout_MA.gif, ..._MB  the animated rollouts (embedded too), when the env renders rgb_array frames

Sections (each opens with the question it answers):

    1. learning curves          did MA, the MBs and the controls learn?            train_log.csv of every stage
    2. behaviour profiles       what does each model collect?                      profile.json, 95% hierarchical CIs
    3. update-signal heatmaps   where in the network do the Δs live?               heatmaps/*.safetensors
    4. cosine similarity        are the Δs goal-specific or shared drift?          signals/cosine.json
    5. negate and retrain       does MA − αΔ lean away from RB, beyond controls?   records.csv, summary.json
    6. maze pictures            what do MA, an MB and an MB* actually do?          checkpoints, rolled out here
    7. validation               grafting curves, localisation AUROC                scorecard.json, when present
    8. config and provenance    what was run, with what, and how long it took      experiment.json, meta.json
    ...
    11. rollouts                what do MA and an MB do, step by step?             checkpoints, rolled out here

Nothing here trains or changes the run; the only computation beyond reading files is bootstrapping CIs and rolling
out three policies for the maze pictures and two for the animated rollouts. matplotlib is imported inside the
functions that draw.

This module owns the page: its CSS, the header and answer cards, and the writing of the sections
(:mod:`goalscope.report.sections`, in their order) into the frame both share (:class:`~goalscope.report.common.Page`;
the sections never import this module); the figures are drawn by the ``figures_*`` modules and the run is read by
:mod:`goalscope.report.run`. May import: goalscope.report and goalscope.analysis.
"""

from __future__ import annotations

import datetime as _dt
import math
import re
import traceback
from pathlib import Path

from goalscope.analysis.effects.competence import below_gate
from goalscope.errors import GoalscopeError
from goalscope.report.common import Page, esc, pca_note, pct
from goalscope.report.run import SCORECARD, Run, read_run, read_scorecard
from goalscope.report.sections import SECTION_WRITERS, SECTIONS, applies

REPORT_DIR = "report"


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1250px;margin:1.5em auto;padding:0 1em;
color:#222;line-height:1.45}
h1{margin-bottom:.2em}h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}h3{margin-bottom:.3em}
.q{color:#555;font-style:italic;margin-top:-.4em}
figure{margin:1em 0;padding:.5em;border:1px solid #e4e4e4;border-radius:4px;background:#fff}
figure img{max-width:100%;height:auto;display:block;margin:auto}
figcaption{font-size:.85em;color:#555;margin-top:.4em}
table{border-collapse:collapse;font-size:.85em;margin:.6em 0}
th,td{border:1px solid #ddd;padding:.25em .55em;text-align:left;vertical-align:top}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.key{display:flex;flex-wrap:wrap;gap:.8em;margin:1em 0}
.key div{background:#f6f8fa;border:1px solid #e1e4e8;border-radius:4px;padding:.5em .8em;min-width:11em}
.key>div>b{display:block;font-size:1.3em}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(15em,1fr))}
.answer div{flex:1 1 30em;background:#eef6ee;border-color:#b7d7b7}.answer p{margin:.4em 0}
.note{background:#fff8e1;border-left:4px solid #f0b400;padding:.5em .8em}
.err{background:#fdecea;border-left:4px solid #d93025;padding:.5em .8em}
.lean{color:#0b6e2e;font-weight:600}.more{color:#b3261e;font-weight:600}
pre{background:#f6f8fa;border:1px solid #e1e4e8;padding:.7em;overflow-x:auto;font-size:.8em}
nav a{margin-right:1em}
.rollouts{display:flex;flex-wrap:wrap;gap:1.5em;justify-content:center;text-align:center}
figure img.rollout{width:240px;image-rendering:pixelated;display:inline-block}
"""


def write_report(run_dir: str | Path, out_dir: str | Path | None = None, *, strict: bool = False, log=print) -> Path:
    """Write the report of the run in ``run_dir`` to ``out_dir`` (default ``run_dir/report``); returns index.html.

    A section that fails to draw is replaced by an error note (the rest of the report is still written) unless
    ``strict``, when the error is raised.
    """
    from goalscope.outputs import check_unlocked, confine, make_dir

    check_unlocked(run_dir)  # a run still being written by a live process has not finished
    run = read_run(run_dir)
    out = Path(out_dir) if out_dir is not None else run.path / REPORT_DIR
    with confine(out):  # nothing is written through a link planted in the report directory
        make_dir(out)
        return _write_page(run, out, strict, log)


def _write_page(run, out: Path, strict: bool, log) -> Path:
    from goalscope.outputs import atomic_write_bytes

    page = Page(out)
    try:
        _header(run, page)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:  # fields of the wrong shape
        raise GoalscopeError(f"{run.path / 'summary.json'} is damaged ({type(e).__name__}: {e}); rewrite it with "
                             f"`goalscope run EXPERIMENT --out {run.path}` (finished stages are reused)") from None
    for anchor, fn in SECTION_WRITERS:
        try:
            fn(run, page)
        except Exception as e:
            from goalscope.outputs import UnsafePathError

            if strict or isinstance(e, UnsafePathError):
                raise
            log(f"report: section {anchor} failed: {type(e).__name__}: {e}")
            page.add(f"<div class='err'>This section could not be drawn: {esc(type(e).__name__)}: {esc(e)}"
                     f"<pre>{esc(traceback.format_exc())}</pre></div>")
    page.add("</body></html>")
    index = out / "index.html"
    atomic_write_bytes(index, "".join(page.parts).encode("utf-8"))
    return index


def _header(run: Run, page: Page) -> None:
    s = run.summary
    title = f"goalscope report: {s.get('experiment', run.cfg.name)}"
    page.add(f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{esc(title)}</title>"
             f"<style>{CSS}</style></head><body>")
    page.add(f"<h1>{esc(title)}</h1>")
    page.add(f"<p>Run <code>{esc(run.path.resolve())}</code>, report written "
             f"{_dt.datetime.now().strftime('%Y-%m-%d %H:%M')}. RA = <b>{esc(run.ra.name)}</b>; "
             f"RBs = {esc(', '.join(rb.name for rb in run.rbs))}; seeds {esc(run.cfg.seeds)}; "
             f"{len(run.ok)} of {len(run.status)} stages finished OK.</p>")
    page.add("<p>goalscope trains MA on RA, fine-tunes copies on other rewards RB<sub>i</sub> (MB<sub>i</sub>), "
             "takes the update signals Δ<sub>i</sub> = MB<sub>i</sub> − MA, tests them by negating and retraining "
             "(MB* = MA − αΔ retrained on RA, against controls), and superposes them into per-parameter heatmaps.</p>")
    page.add(_answer_cards(run))
    page.add("<nav>" + "".join(f"<a href='#{a}'>{esc(t)}</a>" for a, t in SECTIONS if applies(run, a)) + "</nav>")
    if s.get("failed_jobs"):
        page.add(f"<p class='err'>{len(s['failed_jobs'])} jobs failed and are left out: "
                 f"{esc(', '.join(s['failed_jobs'][:10]))}{' …' if len(s['failed_jobs']) > 10 else ''}</p>")
    cards = _competence_cards(run) or [("MA on RA", f"{pct(s.get('ma_fraction_of_oracle'))} of oracle",
                                        _ma_seed_range(run))]
    neg = s.get("negation") or []
    if neg and below_gate(s):
        cards.append(("negation leans away from RB", "not interpretable", "models below the competence bar"))
    elif neg:
        leans = sum(1 for e in neg if (e.get("retrained_MA") or {}).get("verdict") == "leans toward minimising RB")
        cards.append(("negation leans away from RB", f"{leans} / {len(neg)}", "RB×α vs MA retrained (Holm, t over seeds)"))
    page.add("<div class='key cards'>" + "".join(f"<div>{esc(a)}<b>{esc(b)}</b><small>{esc(c)}</small></div>" for a, b, c in cards)
             + "</div>")


def _answer_cards(run: Run) -> str:
    """:func:`answer_cards` from the run's scorecard.json, which is blamed (with `goalscope validate`, which
    rewrites it) when its fields have the wrong shape: the cards drawn from summary.json alone then work."""
    card = read_scorecard(run.path)
    try:
        return answer_cards(run, card)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        if card is None:
            raise
        answer_cards(run, None)  # raises again if summary.json is (also) to blame
        raise GoalscopeError(f"{run.path / SCORECARD} is damaged ({type(e).__name__}: {e}); rewrite it with "
                             f"`goalscope validate {run.path}`") from None


def _competence_cards(run: Run) -> list[tuple[str, str, str]]:
    """One card per model from the competence gate: fraction of the oracle where the env has one, otherwise the
    preference for its rewarded objects with its interval; a model below the bar says so on its card."""
    cards = []
    for model, c in (run.summary.get("competence") or {}).items():
        m, lo, hi = c["preference"]
        if c.get("fraction_of_oracle") is not None:
            value = f"{pct(c['fraction_of_oracle'])} of oracle"
        else:
            value = f"{m:+.2f} preference" + (f" [{lo:+.2f}, {hi:+.2f}]" if math.isfinite(lo) else "")
        where = "on RA" if model == "MA" else "on its RB"
        cards.append((f"{model} {where}", value, ("" if c["passes"] else "below the bar: ") + c["verdict"]))
    return cards


def _ma_seed_range(run: Run) -> str:
    vals = [r["value"] for r in run.records if r["stage"] == "performance" and r["model"] == "MA"
            and r["reward"] == run.ra.name and r["metric"] == "fraction_of_oracle"]
    if len(vals) < 2:
        return f"{len(vals)} seed"
    return f"seeds: {min(vals):.1%} – {max(vals):.1%}"


def _family_text(card: dict | None, summary: dict) -> str:
    fams = []
    for name, info in ((card or {}).get("families") or {}).items():
        if "claims" in info:  # one Holm family per claim (a ranking on this measure), one test per null
            fams.append(f"{name} ({info['claims']} claims of up to {info['family_size']} tests)")
        else:
            fams.append(f"{name} ({info.get('tests')} tests)")
    neg = summary.get("negation_family")
    if neg:
        fams.append(f"negation ({neg.get('tests')} tests)")
    return ", ".join(fams)


def _undecided(card: dict | None) -> list[str]:
    """'ranking (measure): underpowered at N seeds, K would do' / '... not tested' for every verdict that could not
    decide, so the card says so rather than leaving a negative-sounding label to stand for it."""
    out = []
    verdicts = (card or {}).get("verdicts") or {}
    items = [(f"{n} ({f})", v) for n, by in verdicts.items() if isinstance(by, dict) for f, v in by.items()]
    items += [(f"{m} (localisation)", v) for m, v in ((card or {}).get("localisation_verdicts") or {}).items()]
    for what, v in items:
        label = str(v).split(" (")[0]
        if label.startswith("underpowered") or "not tested" in label:
            out.append(f"{what}: {label}")
        elif m := re.search(r"not tested: (.*?)(?:; | \(one-sided|\)$)", str(v)):
            out.append(f"{what}: {m.group(1)} not tested")
    return out


def answer_cards(run: Run, card: dict | None) -> str:
    """The two cards the page opens with: where the objective is, and how sure we are, in plain words."""
    from goalscope.analysis.stats import MIN_SEEDS
    from goalscope.analysis.validate.grafts import ATTRIBUTION, HELD_OUT, PER_RB

    s = run.summary
    where, sure, wrong = [], [], []
    if card and card.get("verdicts") and all(isinstance(x, dict) for x in card["verdicts"].values()):
        v = card["verdicts"]
        if PER_RB in v:
            where.append(f"<b>An RB's own most-changed parameters</b> (top-k of |Δ<sub>i</sub>|), grafted into MA: "
                         f"{esc(v[PER_RB]['graft'])}. Ablating them from MB: {esc(v[PER_RB]['ablation'])}.")
        if ATTRIBUTION in v:
            area = (card.get("graft") or {}).get("area") or {}
            beside = (f" (graft area {area[ATTRIBUTION]:.3f} vs |Δ<sub>i</sub>| {area[PER_RB]:.3f})"
                      if area.get(ATTRIBUTION) is not None and area.get(PER_RB) is not None else "")
            where.append(f"<b>Attribution of the behaviour change</b> (top-k of |IG<sub>i</sub>|, integrated gradients of "
                         f"KL(π<sub>MB</sub> ‖ π) along MA → MB<sub>i</sub>), grafted into MA{beside}: "
                         f"{esc(v[ATTRIBUTION]['graft'])}. Ablating them from MB: {esc(v[ATTRIBUTION]['ablation'])}.")
        held = {n[:-len(HELD_OUT)]: x["graft"].split(" (")[0] for n, x in v.items() if n.endswith(HELD_OUT)}
        if held:
            where.append("<b>Superposition heatmaps, judged on RBs they were built without:</b> "
                         + "; ".join(f"{esc(m)}: {esc(lab)}" for m, lab in held.items()) + ".")
        area = (card.get("graft") or {}).get("area") or {}
        if PER_RB in area and held:
            best = max(held, key=lambda m: area.get(m + HELD_OUT, -math.inf))
            b_area, d_area = area.get(best + HELD_OUT), area.get(PER_RB)
            if b_area is not None and d_area is not None and b_area <= d_area:
                where.append(f"No aggregator beats plain |Δ<sub>i</sub>|: the best held-out heatmap ({esc(best)}, graft "
                             f"area {b_area:.3f}) recovers less than |Δ<sub>i</sub>| ({d_area:.3f}). An honest null.")
            elif b_area is not None and d_area is not None:
                where.append(f"The best held-out heatmap ({esc(best)}) has a larger graft area than |Δ<sub>i</sub>| "
                             f"({b_area:.3f} vs {d_area:.3f}); see its verdict for whether that beats the nulls.")
    elif card:
        where.append("This run's scorecard was written by an older goalscope without sensitivity-matched nulls; run "
                     f"<code>goalscope validate {esc(run.path)}</code> again for verdicts against them.")
    else:
        where.append(f"Validation has not been run (no {SCORECARD}); run <code>goalscope validate {esc(run.path)}</code> "
                     "for the graft and ablation verdicts against the nulls.")
    neg = s.get("negation") or []
    if neg:
        lean = {c: sum(1 for e in neg if (e.get(c) or {}).get("verdict") == "leans toward minimising RB")
                for c in ("retrained_MA", "random_direction")}
        where.append(f"<b>Negate and retrain:</b> MB* leans away from RB (specific lean, Holm-corrected) in "
                     f"{lean['retrained_MA']} of {len(neg)} (RB, α) against MA retrained alike and in "
                     f"{lean['random_direction']} of {len(neg)} against fresh random directions of the same size.")
    below = below_gate(s)
    if below:  # the headline is withheld: an objective read off agents that fail their gate may be learning noise
        kept = [w for w in where if w.startswith("Validation has not been run") or "older goalscope" in w]
        where = [f"<b>Not interpretable:</b> {esc(', '.join(below))} {'is' if len(below) == 1 else 'are'} below the "
                 "competence bar (the cards below), so what the update signals localise may be learning noise. The "
                 "verdicts are withheld here and kept, for reference, in the sections further down."] + kept
    n_seeds = len(run.cfg.seeds)
    sure.append(f"{n_seeds} MA seeds, {run.cfg.finetune.seeds_per_ma} fine-tune seed(s) per RB per MA, "
                f"{run.cfg.negate.random_directions if run.cfg.negate.random_control else 0} random directions per "
                "(seed, RB, α). Verdicts rest on a t test over per-seed means (the bootstrap over 3–5 seeds is close to a "
                f"min/max rule and under-covers); where a claim's family cannot pass at this seed count (always below "
                f"{MIN_SEEDS}) its verdict says “underpowered at N seeds” and how many would do, and a null that was "
                "not run is “not tested”, never passed.")
    fam = _family_text(card, s)
    if fam:
        sure.append(f"Holm–Bonferroni within each family of verdicts: {esc(fam)}; α = 0.05 family-wise. A graft or "
                    "ablation claim is one ranking against its nulls, one pre-registered comparison per null; the "
                    "other comparisons are shown as exploratory, unadjusted.")
    undecided = _undecided(card)
    if undecided:
        sure.append("Verdicts this run cannot give: " + "; ".join(esc(x) for x in undecided) + ".")
    if card:
        sure.append("Nulls every graft and ablation is compared with: random, MA's Fisher alone (sensitivity, no RB "
                    "information), the RA-control drift |Δ<sub>ctrl</sub>| (where MA moves with no RB), and another RB's "
                    "mask (where fine-tuning on some RB writes). Recovery counts the specific lean (RB objects minus "
                    "the other non-RA types), not raw RB objects.")
        w = ((card.get("stability") or {}).get("within_ma") or {})
        same, diff = w.get("same RB, other fine-tune seed") or {}, w.get("different RBs, same MA") or {}
        if same.get("jaccard") is not None:
            sure.append(f"Within-MA stability of top-1% |Δ| sets: same RB, other fine-tune seed {same['jaccard']:.3f} "
                        f"(tensor-stratified chance {same['chance']:.3f}); different RBs {diff.get('jaccard')} "
                        f"(chance {diff.get('chance')}).")
        elif run.cfg.finetune.seeds_per_ma < 2:
            sure.append("Stability where units line up needs ≥ 2 fine-tune seeds per MA (finetune.seeds_per_ma); "
                        "this run has 1, so no within-MA stability is measured.")
        wrong += [f"{c['check']}: {c['detail']}" for c in card.get("checks") or [] if c.get("ok") is False]
    cos = s.get("cosine") or {}
    if s.get("degenerate_signals"):
        wrong.append(s["degenerate_signals"])
    if cos.get("same_rb_across_seeds") is not None and cos.get("rb_vs_rb_same_seed") is not None \
            and cos["same_rb_across_seeds"] <= cos["rb_vs_rb_same_seed"]:
        wrong.append(f"update signals of the same RB from different MA seeds are less alike (cosine "
                     f"{cos['same_rb_across_seeds']:+.3f}) than different RBs of one MA ({cos['rb_vs_rb_same_seed']:+.3f}): "
                     "units of independently initialised networks do not line up, so this comparison cannot show "
                     "goal-specificity; the within-MA stability above is the one that can")
    for m, h in (s.get("heatmaps") or {}).items():
        if h.get("warning"):
            wrong.append(f"heatmap {m}: {h['warning']}")
    pca = pca_note(run)
    if pca:
        sure.append(esc(pca["note"]) + ".")
    out = ["<div class='key answer'>",
           "<div><b>Where is the objective?</b>" + "".join(f"<p>{x}</p>" for x in where) + "</div>",
           "<div><b>How sure are we?</b>" + "".join(f"<p>{x}</p>" for x in sure) + "</div></div>"]
    if wrong:
        out.append("<div class='err'><b>Built-in checks that went the wrong way or need a caveat</b><ul>"
                   + "".join(f"<li>{esc(x)}</li>" for x in wrong) + "</ul></div>")
    return "".join(out)
