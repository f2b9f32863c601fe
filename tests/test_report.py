"""`goalscope report`: every figure written and non-blank, a self-contained page with the key numbers, and a real
browser that renders it (when chromium is installed)."""

import base64
import contextlib
import io
import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from goalscope.cli import main
from goalscope.program.config import experiment_from_dict
from goalscope.errors import ConfigError
from goalscope.program.executors import LocalExecutor
from goalscope.report.figures_mazes import rollout
from goalscope.report.page import write_report
from goalscope.report.run import read_run, roles_from_stages
from goalscope.program.runner import plan_experiment
from goalscope.analysis.effects.experiment import run_experiment

from test_experiment import TINY

CHROMIUM = Path("/usr/bin/chromium")
CONFIG = {**TINY, "workers": 1, "superpose": {"methods": ["mean_abs", "pca", "control_subtracted", "fisher"]}}


def expected_figures(summary: dict) -> list[str]:
    heatmaps = [f"heatmap_{m}" for m in CONFIG["superpose"]["methods"] if m in summary["heatmaps"]]
    return ["learning_curves", "behaviour", *heatmaps, "heatmap_per_rb_tensors", "heatmap_per_rb_units", "cosine",
            "negation", "mazes"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A finished tiny run and its report, written through the CLI."""
    run = tmp_path_factory.mktemp("report") / "tiny"
    cfg = experiment_from_dict(CONFIG)
    summary = run_experiment(cfg, run, log=lambda *a: None)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", str(run)]) == 0
    index = Path(out.getvalue().strip().splitlines()[-1])
    assert index == run / "report" / "index.html" and index.exists()
    return {"cfg": cfg, "run": run, "summary": summary, "index": index, "html": index.read_text(encoding="utf-8")}


def _not_blank(png: Path) -> None:
    import matplotlib.image as mpimg

    img = mpimg.imread(str(png))
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100, png
    rgb = img[..., :3]
    assert rgb.std() > 0.03, f"{png.name} looks blank (pixel std {rgb.std():.4f})"
    assert (rgb < 0.5).mean() > 0.002, f"{png.name} has almost no dark pixels (no text or marks)"


def test_every_figure_is_written_as_png_svg_and_is_not_blank(tiny):
    out = tiny["run"] / "report"
    for name in expected_figures(tiny["summary"]):
        _not_blank(out / f"{name}.png")
        svg = (out / f"{name}.svg").read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg, name


def test_tidy_data_next_to_the_figures(tiny):
    out = tiny["run"] / "report"
    for name, columns in [("learning_curves", {"model", "step", "episode_return"}),
                          ("behaviour", {"model", "type", "mean", "ci_low", "ci_high"}),
                          ("heatmap_tensors", {"aggregator", "tensor", "enrichment"}),
                          ("heatmap_units", {"aggregator", "tensor", "unit", "enrichment"}),
                          ("cosine", {"a", "b", "cosine"}),
                          ("negation", {"rb", "alpha", "control", "metric", "value", "ci_low", "ci_high"}),
                          ("maze_trajectories", {"model", "env_seed", "t", "row", "col"}),
                          ("stages", {"key", "kind", "label", "status", "wall_s"})]:
        lines = (out / f"{name}.csv").read_text().splitlines()
        assert columns <= set(lines[0].split(",")), name
        assert len(lines) > 1, f"{name}.csv has no rows"
    # The behaviour CIs bracket their means; MA and every MB of the tiny run are there, per object type.
    import csv

    rows = list(csv.DictReader(open(out / "behaviour.csv")))
    for r in rows:
        assert float(r["ci_low"]) <= float(r["mean"]) + 1e-9 <= float(r["ci_high"]) + 2e-9
    models = {r["model"] for r in rows}
    assert {"MA", "MB[collect:1]", "MB[collect:2]", "control: MA on RA", "MB*[collect:1] a=1"} <= models
    # Learning curves cover MA's whole budget.
    steps = [float(r["step"]) for r in csv.DictReader(open(out / "learning_curves.csv")) if r["panel"] == "a"]
    assert max(steps) >= 0.75 * CONFIG["base"]["steps"]


def test_page_is_self_contained_with_one_embedded_png_per_figure(tiny):
    page = tiny["html"]
    names = expected_figures(tiny["summary"])
    imgs = re.findall(r"<img src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)
    gifs = re.findall(r"<img class='rollout' src='data:image/gif;base64,([A-Za-z0-9+/=]+)'", page)
    assert len(imgs) == len(names) == len(re.findall(r"<img\b", page)) - len(gifs)
    for name in names:
        assert f"id='fig-{name}'" in page, name
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in imgs)
    # The rollouts of MA and one MB, animated, embedded and beside the page (issue 27).
    assert len(gifs) == 2 and all(base64.b64decode(b)[:4] == b"GIF8" for b in gifs) and "href='#rollouts'" in page
    assert (tiny["run"] / "report" / "rollout_MA.gif").exists() and (tiny["run"] / "report" / "rollout_MB.gif").exists()
    # Opens offline: nothing fetched from anywhere (no URLs, scripts, stylesheets or non-data image sources).
    assert not re.search(r"https?://", page)
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r"src=['\"](?!data:)", page)
    assert "could not be drawn" not in page  # no section failed


def test_page_states_the_key_numbers(tiny):
    page, s = tiny["html"], tiny["summary"]
    assert f"{s['ma_fraction_of_oracle']:.1%} of oracle" in page
    for rb, f in s["mb_fraction_of_oracle_on_rb"].items():
        assert f"MB[{rb}] on its RB" in page and f"{f:.1%}" in page
    for e in s["negation"]:  # the verdicts table, with CIs as in summary.json
        d = e["retrained_MA"]
        m, lo, hi = d["specific_lean"]
        assert f"{m:+.3f} [{lo:+.3f}, {hi:+.3f}]" in page
        assert d["verdict"] in page
    for v in s["cosine"].values():
        assert f"{v:+.3f}" in page
    for m, h in s["heatmaps"].items():
        top = h["hottest_tensors"][0]
        assert f"{top} ×{h['enrichment'][top]:.2f}" in page
    assert "Validation has not been run" in page  # no scorecard.json in this run: a note, not a failure
    versions = json.loads(next((tiny["run"] / "stages").glob("train-*/meta.json")).read_text())["versions"]
    assert versions["torch"] in page and str(s["stage_wall_s"]["train"]) in page
    assert '&quot;name&quot;: &quot;tiny&quot;' in page  # the config, pretty-printed


def test_roles_found_from_the_stages_match_the_plan(tiny):
    cfg, run = tiny["cfg"], tiny["run"]
    plan = plan_experiment(cfg)
    found = {p.parent.name: json.loads(p.read_text()) for p in (run / "stages").glob("*/done.json")}
    roles = roles_from_stages(cfg, found)
    for attr in ("ma", "ma_other", "mb", "control", "retrain_control", "negated"):
        assert getattr(roles, attr) == getattr(plan, attr), attr
    assert read_run(run).plan.mb == plan.mb


def test_maze_rollouts_share_the_start_state(tiny):
    run = read_run(tiny["run"])
    ma = run.checkpoint(run.plan.ma[0]).build()
    mb = run.checkpoint(run.plan.mb[(0, "collect:1")]).build()
    a = rollout(ma, run.cfg.env, run.ra, env_seed=5, action_seed=5)
    b = rollout(mb, run.cfg.env, run.ra, env_seed=5, action_seed=5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and tuple(a[2][0]) == tuple(b[2][0])
    walls, objects, path, collected = a
    assert len(path) == run.cfg.env.max_steps + 1
    assert not walls[path[:, 0], path[:, 1]].any()  # never inside a wall
    assert np.abs(np.diff(path, axis=0)).sum(1).max() <= 1  # one cell per step
    for t, k, r, c in collected:
        assert objects[r, c] == k and tuple(path[t]) == (r, c)


def test_scorecard_from_validate_is_drawn(tiny, tmp_path):
    from goalscope.analysis.validate.validation import run_validation

    run = tmp_path / "run"
    shutil.copytree(tiny["run"], run, ignore=shutil.ignore_patterns("report", "tb"))
    card = run_validation(tiny["cfg"], run, LocalExecutor(1), episodes=8, log=lambda *a: None)
    # The tiny agents fail their competence gate, which withholds the headline (test_headline_is_withheld_...);
    # here every model is marked as passing so the headline's verdict lines can be checked.
    summary = json.loads((run / "summary.json").read_text())
    for c in summary["competence"].values():
        c["passes"] = True
    (run / "summary.json").write_text(json.dumps(summary))
    index = write_report(run, tmp_path / "out", strict=True)
    page = index.read_text(encoding="utf-8")
    _not_blank(tmp_path / "out" / "validation.png")
    assert "Validation has not been run" not in page and "id='fig-validation'" in page
    for m, v in card["verdicts"].items():  # every verdict, with the nulls it beat and its correction
        assert html.escape(v["graft"]) in page and html.escape(v["ablation"]) in page
    for t in card["tests"]["graft"]:
        assert html.escape(t["null"]) in page
    # The page opens with the answer: both cards come before the first section.
    first_section = page.index("<h2")
    assert -1 < page.index("Where is the objective?") < first_section
    assert -1 < page.index("How sure are we?") < first_section
    assert "Holm–Bonferroni within each family" in page[:first_section]
    # Attribution (issue 25 item 2) is shown where |Δ_i| and Fisher are: in the answer card and the verdicts.
    assert "Attribution of the behaviour change" in page[:first_section] and html.escape("|IG_i| (attribution)") in page
    assert (tmp_path / "out" / "validation_curves.csv").exists()
    assert "judged on RBs they were built without" in page[:first_section]
    _check_cosmetics(page)  # the answer card's labelled lines with a scorecard (issue 28)


def test_unfinished_run_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ConfigError, match="has no experiment.json"):
        write_report(tmp_path)
    assert main(["report", str(tmp_path / "nowhere")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_real_browser_renders_the_page(tiny, tmp_path):
    if not CHROMIUM.exists():
        pytest.skip("chromium not installed: apt-get install chromium")
    flags = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    url = tiny["index"].resolve().as_uri()
    shot = tmp_path / "shot.png"
    res = subprocess.run([*flags, f"--user-data-dir={tmp_path / 'profile1'}", f"--screenshot={shot}",
                          "--window-size=1280,4000", "--enable-logging=stderr", "--v=0", url],
                         capture_output=True, text=True, timeout=120)
    assert shot.exists(), res.stderr[-2000:]
    _not_blank(shot)
    console = [line for line in res.stderr.splitlines() if "CONSOLE" in line or "net::ERR" in line]
    assert not console, console
    dom = subprocess.run([*flags, f"--user-data-dir={tmp_path / 'profile2'}", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120).stdout
    assert len(re.findall(r"<img src=\"data:image/png;base64,", dom)) == len(expected_figures(tiny["summary"]))
    assert "1. Learning curves" in dom and "8. Config and provenance" in dom


@pytest.mark.slow  # a second full report write (~25 s); the current scorecard's drawing is in the default tier
def test_an_older_scorecard_still_draws_and_says_to_validate_again(tiny, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny["run"], run, ignore=shutil.ignore_patterns("report", "tb"))
    old = {"experiment": "tiny", "arch": "cnn", "seeds": [0, 1], "verdicts": {"mean_abs": "localises (beats |Δ| and random)"},
           "graft": {"fractions": [0.01, 1.0], "curves": {"mean_abs": [0.5, 1.0]}, "area": {"mean_abs": 0.75}}}
    (run / "scorecard.json").write_text(json.dumps(old))
    page = write_report(run, tmp_path / "out", strict=True).read_text(encoding="utf-8")
    assert "older goalscope without sensitivity-matched nulls" in page
    assert html.escape("localises (beats |Δ| and random)") in page


# Issue 28: the page's cosmetics. Orphan colons (a label's colon left at the start of the next line), a PCA
# sentence when PCA was not run, competence cards one per row, the scorecard's "fined-tuned".
def _css_rules(page: str) -> dict[str, str]:
    """selector -> declarations of the page's own <style>."""
    css = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    return {sel.strip(): body for sels, body in re.findall(r"([^{}]+)\{([^}]*)\}", css) for sel in sels.split(",")}


def _orphan_colons(page: str) -> list[str]:
    """Text that starts with a colon right after a tag (``<p>: …``, ``</b>: …``): a label's colon orphaned."""
    body = re.sub(r"<style>.*?</style>|<pre>.*?</pre>|data:image/png;base64,[A-Za-z0-9+/=]+", "", page, flags=re.S)
    return re.findall(r".{0,60}>\s*:.{0,40}", body)


def _check_cosmetics(page: str) -> None:
    assert not _orphan_colons(page), _orphan_colons(page)[:3]
    assert "fined-tuned" not in page
    for sel, body in _css_rules(page).items():  # a block <b> is a card's title only, never a label inside a line
        if re.search(r"(^|\s)b$", sel) and "display:block" in body:
            assert ">" in sel, f"{sel!r} makes every <b> in a card a block: its label's colon starts a new line"


def test_page_cosmetics(tiny):
    page, s = tiny["html"], tiny["summary"]
    assert "Negate and retrain" in page and s["competence"]  # the labelled line and the cards checked below
    _check_cosmetics(page)
    # Competence cards in a grid of equal columns that fills the row (not flex items as wide as their text).
    m = re.search(r"<div class='([^']*)'><div>MA on RA<b>", page)
    assert m, "no competence card for MA"
    rules = _css_rules(page)
    decl = "".join(rules.get(f".{c}", "") for c in m.group(1).split())
    assert "display:grid" in decl and re.search(r"grid-template-columns:repeat\(auto-(fill|fit),minmax\(", decl), decl
    # PCA ran in this run: its note is shown (and below, not shown for a run without it).
    assert "pca" in tiny["cfg"].superpose.methods and s["pca_removed_component"]["note"].startswith("PCA")
    assert "PCA&#x27;s removed component" in page


def test_no_pca_sentence_when_pca_was_not_run(tiny, tmp_path):
    from goalscope.report.page import Page, answer_cards
    from goalscope.report.sections import SECTION_WRITERS

    run = tmp_path / "run"
    shutil.copytree(tiny["run"], run, ignore=shutil.ignore_patterns("report", "tb"))
    experiment = json.loads((run / "experiment.json").read_text())
    experiment["superpose"]["methods"] = [m for m in experiment["superpose"]["methods"] if m != "pca"]
    (run / "experiment.json").write_text(json.dumps(experiment))
    summary = json.loads((run / "summary.json").read_text())
    summary["heatmaps"].pop("pca")
    (run / "summary.json").write_text(json.dumps(summary))
    (run / "heatmaps" / "pca.safetensors").unlink()
    r = read_run(run)
    assert "pca" not in r.cfg.superpose.methods and r.summary["pca_removed_component"]  # analysis writes it anyway
    (tmp_path / "out").mkdir()
    page = Page(tmp_path / "out")
    page.add(answer_cards(r, None))
    dict(SECTION_WRITERS)["heatmaps"](r, page)
    text = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", "".join(page.parts))  # base64 may spell PCA
    assert "Hottest tensors per aggregator" in text and "PCA" not in text



def test_report_modules_import_no_circle():
    """Issue 28: page.py and sections.py imported each other; every import between report modules (also under
    TYPE_CHECKING or inside a function) now points one way."""
    import ast

    import goalscope.report

    root = Path(goalscope.report.__file__).parent
    graph = {}
    for path in root.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
                names |= {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
        graph[path.stem] = {n.split(".")[2] for n in names if n.startswith("goalscope.report.")} - {path.stem}

    def reaches(a, b, seen=()):
        return any(n == b or (n not in seen and reaches(n, b, (*seen, n))) for n in graph.get(a, ()))

    assert "sections" in graph["page"]
    assert not [m for m in graph if reaches(m, m)], {m: graph[m] for m in graph if reaches(m, m)}


def test_run_view_delta_lazy_reads_and_public_names(tiny, tmp_path):
    """Issue 28's API tidy: run.delta (the old run.update_signal warns and agrees), docstrings on RunView's
    attributes, a lazy load_run, and __all__ naming only the modules' own API."""
    import goalscope
    import goalscope.agents.hooks as hooks
    import goalscope.report.run as run_module
    from goalscope.report.run import RunView, load_run

    view = load_run(tiny["run"])
    assert "_run" not in vars(view)  # nothing read yet
    rb = view.cfg.rbs()[0].name
    delta = view.delta(seed=0, rb=rb)
    with pytest.warns(DeprecationWarning, match="RunView.delta"):
        old = view.update_signal(seed=0, rb=rb)
    assert delta.keys() == old.keys() and all(bool((delta[k] == old[k]).all()) for k in delta)
    ma, mb = view.checkpoint("MA", 0), view.checkpoint("MB", 0, rb)
    assert all(bool((goalscope.update_signal(ma.state_dict, mb.state_dict)[k] == delta[k]).all()) for k in delta)
    for name in ("cfg", "path", "summary", "stage_key", "delta"):
        assert (getattr(RunView, name).__doc__ or "").strip(), name
    for module in (goalscope, hooks, run_module):
        assert all(hasattr(module, n) for n in module.__all__), module.__name__
        assert not {"torch", "nn", "Callable", "contextlib", "Path", "math", "annotations"} & set(module.__all__)
    assert {"intervene", "record", "patch", "Add"} <= set(hooks.__all__)
    assert {"RunView", "load_run", "read_run"} <= set(run_module.__all__)
    # Lazy: a run whose config cannot be read yet (here a damaged experiment.json) opens, and fails on first read.
    damaged = tmp_path / "run"
    shutil.copytree(tiny["run"], damaged, ignore=shutil.ignore_patterns("report", "tb", "stages", "heatmaps"))
    (damaged / "experiment.json").write_text("{")
    lazy = load_run(damaged)
    assert "not readable yet" in repr(lazy)
    with pytest.raises(ConfigError):
        lazy.cfg
    with pytest.raises(ConfigError, match="has no records.csv"):
        (damaged / "records.csv").unlink()
        load_run(damaged)


def test_headline_is_withheld_when_models_fail_their_gate(tiny):
    """Issue 27: the tiny run's agents are below the competence bar, so the answer card says "not interpretable"
    instead of reading verdicts off them (the negation line included); the verdicts stay in the sections."""
    page, s = tiny["html"], tiny["summary"]
    head = page[:page.index("<h2")]
    below = [m for m, c in s["competence"].items() if not c["passes"]]
    assert below and "Not interpretable:" in head and below[0] in head
    assert "Negate and retrain:" not in head and "leans away from RB (specific lean" not in head
    assert re.search(r"negation leans away from RB<b>not interpretable</b>", head)
