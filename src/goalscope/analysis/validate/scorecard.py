"""The scorecard in words: built-in checks that a run's numbers make sense, and scorecard.md.

May import: goalscope.analysis.validate (planted, entry, grafts, plan), goalscope.analysis.effects.competence,
goalscope.inputs, goalscope.errors.
"""

from __future__ import annotations

import math
from pathlib import Path

from goalscope.analysis.validate.grafts import OTHER_RB_NULL, PER_RB, RANDOM
from goalscope.analysis.validate.plan import plan_markdown


def built_in_checks(card: dict) -> list[dict]:
    """Checks whose expected direction is known; each says plainly when it went the wrong way, and ``ok`` is None
    ("not measurable") where its two numbers are NaN or tied: a run that learned nothing did not fail a check."""
    out = []
    st = card.get("stability") or {}
    w = st.get("within_ma") or {}
    same, diff = (w.get("same RB, other fine-tune seed") or {}), (w.get("different RBs, same MA") or {})
    if same.get("jaccard") is not None and diff.get("jaccard") is not None:
        out.append(_check("top-1% |Δ| sets agree more for the same RB (other fine-tune seed) than for different RBs",
                          same["jaccard"], diff["jaccard"], "same RB {:.3f} vs different RBs {:.3f} (same MA)"))
    if same.get("jaccard") is not None:
        out.append(_check("same-RB top-1% overlap exceeds its tensor-stratified chance level",
                          same["jaccard"], same["chance"], "{:.3f} vs chance {:.3f}"))
    g = card.get("graft") or {}
    area = g.get("area") or {}
    if PER_RB in area and RANDOM in area:
        out.append(_check("grafting the top of |Δ_i| recovers more specific lean than a random mask",
                          area[PER_RB], area[RANDOM], "area {:.3f} vs {:.3f}"))
    if PER_RB in area and OTHER_RB_NULL in area:
        out.append(_check("|Δ_i| recovers RB_i better than another RB's mask does",
                          area[PER_RB], area[OTHER_RB_NULL], "area {:.3f} vs {:.3f}"))
    return out


def _check(check: str, a, b, detail: str) -> dict:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)):
        why = "not measurable: no MB gained specific lean, so nothing was recovered" if "area" in detail else \
            "not measurable: a value is missing"
        return {"check": check, "ok": None, "detail": why}
    if a == b:
        return {"check": check, "ok": None, "detail": "not measurable: a tie, " + detail.format(a, b)}
    return {"check": check, "ok": bool(a > b), "detail": detail.format(a, b)}


def _summary(run_dir) -> dict:
    """The run's summary.json (empty without one); a damaged one is one line naming it and the command that
    rewrites it, not a traceback halfway through validation."""
    from goalscope.errors import GoalscopeError
    from goalscope.inputs import read_json

    path = Path(run_dir) / "summary.json"
    if not path.exists():
        return {}
    advice = f"rewrite it with `goalscope run <experiment> --out {run_dir} --force analysis`"
    data = read_json(path, advice)
    if not isinstance(data, dict):
        raise GoalscopeError(f"{path} is damaged: it holds a {type(data).__name__}, not a table; {advice}")
    return data


def degenerate_signals(run_dir) -> str | None:
    """The run's note on identical update signals of different RBs (summary.json's ``degenerate_signals``)."""
    return _summary(run_dir).get("degenerate_signals")


def below_competence(run_dir) -> list[str]:
    """The models the run's competence gate flags (:func:`below_gate` of its summary.json; none without one)."""
    from goalscope.analysis.effects.competence import below_gate

    summary = _summary(run_dir)
    return below_gate(summary) if summary else []


def scorecard_markdown(card: dict) -> str:
    """scorecard.md: the verdicts, graft areas, ablations, stability, localisation and checks of a scorecard in words."""
    lines = [f"# Scorecard: {card['experiment']} ({card['arch']}, seeds {card['seeds']})", ""]
    if card.get("below_competence"):
        lines += [f"**Not interpretable:** {', '.join(card['below_competence'])} below the competence bar, so what "
                  "their update signals localise may be learning noise; the verdicts below are kept for reference.", ""]
    if plan_markdown(card.get("plan") or {}):  # what a budget cut, before any number it leaves out
        lines += [plan_markdown(card["plan"])]
    if card.get("degenerate_signals"):
        lines += [f"**{card['degenerate_signals'][0].upper()}{card['degenerate_signals'][1:]}.**", ""]
    # The planted-truth sections are rendered by their own modules (issue 11: planted.py, entry.py).
    from goalscope.analysis.validate.entry import entry_markdown
    from goalscope.analysis.validate.planted import localisation_markdown

    lines += localisation_markdown(card.get("localisation"), card.get("localisation_verdicts", {}))
    if "input_planes" in card:
        lines += ["", entry_markdown(card["input_planes"])]
    g = card["graft"]
    fam = card.get("families", {})
    lines += ["", f"## Graft curves: fraction of MB's specific lean recovered by MA + top-k% of Δ ({card.get('episodes')} "
              "paired episodes per point)", "",
              f"Measure: {g['measure']}. MB's gain per RB (lean): {g['rb_gain']}; raw RB objects: {g['rb_gain_raw']}.", "",
              "| ranking | role | " + " | ".join(f"{k:g}" for k in g["fractions"]) +
              " | area [95% t CI] | raw-RB area | RA return vs MA |",
              "|---" * (len(g["fractions"]) + 5) + "|"]
    for n, c in g["curves"].items():
        a = g["area_ci"][n]
        lines.append(f"| {n} | {g['roles'].get(n, '')} | " + " | ".join(f"{x:.2f}" for x in c) +
                     f" | {a[0]:.3f} [{a[1]:.3f}, {a[2]:.3f}] | {g['raw_area'][n]:.3f} | {g['ra_mean'][n]:.2f} |")
    lines += ["", f"Reference: {g['reference']}.", ""]
    for f_name in ("graft", "ablation"):
        info = fam.get(f_name, {})
        lines += [f"## Verdicts: {f_name} ({info.get('claims')} claims, {info.get('correction')}: up to "
                  f"{info.get('family_size')} tests each; {info.get('seeds')} MA seeds; {info.get('test')}; "
                  "beaten = Holm-adjusted p < 0.05)", ""]
        for n, v in card["verdicts"].items():
            lines.append(f"- **{n}**: {v[f_name]}")
        lines += ["", "| ranking | null | difference [95% t CI] | p | p (Holm within the claim) | beaten |",
                  "|---|---|---|---|---|---|"]
        for t in card["tests"][f_name]:
            lines.append(f"| {t['ranking']} | {t['null']} | {_diff(t['diff'])} | {t['p']:.3g} | "
                         f"{t['p_holm']:.3g} (of {t.get('family_size')}) | {'yes' if t['beaten'] else 'no'} |")
        lines.append("")
    if card.get("exploratory"):
        lines += ["## Exploratory comparisons (not pre-registered: unadjusted one-sided p, no verdict)", "",
                  "| ranking | against | measure | difference [95% t CI] | p (unadjusted) |", "|---|---|---|---|---|"]
        lines += [f"| {t['ranking']} | {t['null']} | {t['measure']} | {_diff(t['diff'])} | {t['p']:.3g} |"
                  for t in card["exploratory"]]
        lines.append("")
    if "held_out_curve" in card:
        from goalscope.analysis.validate.heldout import curve_markdown

        lines += [curve_markdown(card["held_out_curve"])]
    ab = card["ablation"]
    lines += ["## Ablation: MB with its top-k% reset to MA (mean over k = "
              f"{ab['fractions']}): fraction of the specific lean lost", "", "| ranking | lean lost [95% t CI] |", "|---|---|"]
    for n, v in ab["lean_lost_ci"].items():
        lines.append(f"| {n} | {v[0]:.3f} [{v[1]:.3f}, {v[2]:.3f}] |")
    st = card["stability"]
    lines += ["", f"## Stability of top-{st['top_fraction']:.0%} |Δ| sets where units line up ({st['seeds_per_ma']} "
              "fine-tune seeds per MA)", "", f"Chance: {st['chance_method']}.", "",
              "| pairs (same MA) | Jaccard | chance | ratio | pairs |", "|---|---|---|---|---|"]
    for n, v in st["within_ma"].items():
        lines.append(f"| {n} | {v['jaccard']} | {v['chance']} | {v.get('ratio_to_chance')} | {v['pairs']} |")
    ac = st["across_ma"]
    lines += ["", f"Across MA seeds ({ac['measure']}): same RB {ac['same RB']}, different RBs {ac['different RBs']}.", ""]
    lines += ["## Built-in checks", ""]
    for c in card.get("checks", []):
        word = "not measurable" if c["ok"] is None else "ok" if c["ok"] else "**WENT THE WRONG WAY**"
        lines.append(f"- {word}: {c['check']} ({c['detail']})")
    lines.append("")
    return "\n".join(lines)


def _diff(d) -> str:
    if not all(math.isfinite(x) for x in d):  # no seed had a gain to compare: not a difference of NaN
        return "not measurable"
    return f"{d[0]:+.3f} [{d[1]:+.3f}, {d[2]:+.3f}]"
