"""The docs' images: regenerated from named runs by `goalscope report --docs MANIFEST` (make docs-figures) through
the report's figure functions, small, captioned with their provenance, and every image a page links exists."""

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image, ImageSequence

from goalscope.analysis.effects.experiment import run_experiment
from goalscope.analysis.validate.validation import run_validation
from goalscope.cli import main
from goalscope.errors import ConfigError
from goalscope.program.config import experiment_from_dict
from goalscope.program.executors import LocalExecutor
from goalscope.report import docs_figures
from goalscope.report.docs_figures import (GIF_WIDTH, MAX_GIF_BYTES, MAX_PNG_BYTES, markdown, read_manifest,
                                           write_docs_figures)

from test_report import CONFIG, _not_blank

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "docs" / "figures.toml"
DOCS_IMAGES_MAX = 3_000_000  # the repository stays small: all of docs/images/ together


def _manifest(tmp: Path, run: Path, seeds, figures: list[tuple[str, str]]) -> Path:
    body = [f'machine = "test machine"\nroot = "."\nimages = "images"\ndpi = 72\n\n[runs.tiny]\npath = "{run}"\n'
            f'command = "pytest"\nseeds = {list(seeds)}\n']
    for file, figure in figures:
        body.append(f'[[figures]]\nfile = "{file}"\nrun = "tiny"\nfigure = "{figure}"\npages = ["page.md"]\n'
                    f'caption = "The {figure} figure."\n')
    path = tmp / "figures.toml"
    path.write_text("\n".join(body))
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A finished, validated tiny run (validate draws the graft and held-out curves the headline shows)."""
    tmp = tmp_path_factory.mktemp("docs_figures")
    run = tmp / "tiny"
    cfg = experiment_from_dict(CONFIG)
    run_experiment(cfg, run, log=lambda *a: None)
    run_validation(cfg, run, LocalExecutor(1), episodes=8, log=lambda *a: None)
    return {"cfg": cfg, "run": run, "tmp": tmp}


FIGURES = [("headline.png", "headline"), ("negation.png", "negation"), ("behaviour.png", "behaviour"),
           ("heat.png", "heatmap_mean_abs"), ("mazes.png", "mazes"), ("ma.gif", "rollout_MA")]


def test_docs_command_regenerates_every_figure_small_and_captioned(tiny):
    manifest = _manifest(tiny["tmp"], tiny["run"], tiny["cfg"].seeds, FIGURES)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["report", "--docs", str(manifest)]) == 0
    assert out.getvalue().strip().splitlines()[-1].startswith(f"{len(FIGURES)} images, ")
    images = tiny["tmp"] / "images"
    assert sorted(p.name for p in images.iterdir()) == sorted(f for f, _ in FIGURES)
    for file, figure in FIGURES:
        path = images / file
        if file.endswith(".gif"):
            gif = Image.open(path)
            assert gif.format == "GIF" and path.stat().st_size < MAX_GIF_BYTES
            assert abs(gif.width - GIF_WIDTH) < gif.width // 2 and 1 < gif.n_frames <= 64
            assert len({f.convert("RGB").tobytes() for f in ImageSequence.Iterator(gif)}) > 1, "the agent moves"
            continue
        # a small file: a palette PNG at the manifest's DPI, well under the cap
        assert path.stat().st_size < MAX_PNG_BYTES // 2, (file, path.stat().st_size)
        assert Image.open(path).mode == "P", file
        _not_blank(path)
    # the caption is stamped under the figure: the same figure without it is shorter at the same DPI
    from goalscope.report.docs_figures import _png, _report_figure
    from goalscope.report.run import read_run

    plain = Image.open(io.BytesIO(_png(_report_figure(read_run(tiny["run"]), "negation"), 72)))
    stamped = Image.open(images / "negation.png")
    assert stamped.width == plain.width and stamped.height > plain.height + 10


def test_headline_draws_both_panels_from_the_report_functions(tiny):
    from goalscope.report.figures_validation import fig_headline
    from goalscope.report.run import read_run

    fig = fig_headline(read_run(tiny["run"]))
    a, b = fig.axes[:2]
    assert "|Δ_i|" in a.get_legend_handles_labels()[1] and "random" in a.get_legend_handles_labels()[1]
    labels = b.get_legend_handles_labels()[1]
    assert "mean_abs" in labels and "mean_abs (role-aligned)" in labels
    assert not any("(held-out)" in x for x in a.get_legend_handles_labels()[1]), "the headline keeps to |Δ_i| and nulls"


def test_a_run_whose_seeds_differ_from_the_manifest_is_refused(tiny, tmp_path):
    manifest = _manifest(tmp_path, tiny["run"], [0, 1, 2, 3], [("neg.png", "negation")])
    with pytest.raises(ConfigError, match=r"has seeds \[0, 1\] but the manifest says \[0, 1, 2, 3\]"):
        write_docs_figures(manifest, log=lambda *a: None)
    assert not (tmp_path / "images").exists()


@pytest.mark.parametrize("edit, message", [
    (lambda s: s.replace('figure = "negation"', 'figure = "negatoin"'), "unknown figure 'negatoin'"),
    (lambda s: s.replace('run = "tiny"', 'run = "tinny"'), "names run 'tinny'"),
    (lambda s: s.replace('file = "neg.png"', 'file = "../neg.png"'), "must be a plain name"),
    (lambda s: s.replace('file = "neg.png"', 'file = "neg.gif"'), "must be a plain name ending in .png"),
])
def test_a_wrong_manifest_is_one_clear_error(tmp_path, edit, message):
    manifest = _manifest(tmp_path, tmp_path / "run", [0], [("neg.png", "negation")])
    manifest.write_text(edit(manifest.read_text()))
    with pytest.raises(ConfigError, match=re.escape(message)):
        read_manifest(manifest)


def test_docs_flag_rejects_a_run_argument_and_only_needs_a_known_run(tmp_path, capsys):
    manifest = _manifest(tmp_path, tmp_path / "run", [0], [("neg.png", "negation")])
    assert main(["report", "--docs", str(manifest), str(tmp_path / "run")]) == 2
    assert "drop RUN and --out" in capsys.readouterr().err
    assert main(["report", "--docs", str(manifest), "--only", "other"]) == 2
    assert "--only names ['other']" in capsys.readouterr().err
    assert main(["report"]) == 2


# ----- the docs themselves (no runs needed) -----

IMAGE_LINK = re.compile(r"!\[[^\]]*\]\(([^)\s]+)[^)]*\)|<img [^>]*src=['\"]([^'\"]+)['\"]")


def image_links(page: Path) -> list[str]:
    """Every local image a Markdown page links, as a path relative to the page."""
    links = [a or b for a, b in IMAGE_LINK.findall(page.read_text(encoding="utf-8"))]
    return [x.split("#", 1)[0] for x in links if not re.match(r"[a-z]+:", x)]


def _pages() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]


def missing_images(pages: list[Path]) -> list[str]:
    return [f"{p.name}: {link}" for p in pages for link in image_links(p) if not (p.parent / link).is_file()]


def test_every_image_a_page_links_exists():
    # mkdocs --strict sees a missing image under docs/ (test below); README.md is outside its docs_dir
    assert not missing_images(_pages())


def test_the_image_check_sees_a_missing_image(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# t\n\n![x](images/there.png)\n\n![y](images/gone.png)\n\n<img src='images/gone2.gif'>\n")
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "there.png").write_bytes(b"png")
    assert [m.split(": ")[1] for m in missing_images([page])] == ["images/gone.png", "images/gone2.gif"]


def test_mkdocs_strict_fails_on_a_missing_image(tmp_path):
    """The repository's own link validation (mkdocs.yml) turns a missing image into a failed build."""
    import yaml

    mkdocs = Path(sys.executable).parent / "mkdocs"
    cfg = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text("# t\n\n![a figure](images/gone.png)\n")
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump({"site_name": "t", "strict": cfg["strict"],
                                                          "validation": cfg["validation"]}))
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([str(mkdocs), "build", "--strict"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode != 0 and "images/gone.png" in proc.stdout + proc.stderr


def test_docs_images_are_the_manifests_and_each_page_shows_its_figure_and_caption():
    manifest = read_manifest(MANIFEST)
    on_disk = {p.name for p in manifest.images.iterdir()}
    listed = {f.file for f in manifest.figures}
    assert on_disk == listed, f"images not drawn by the manifest: {on_disk - listed}; missing: {listed - on_disk}"
    assert sum(p.stat().st_size for p in manifest.images.iterdir()) < DOCS_IMAGES_MAX
    for f in manifest.figures:
        assert f.pages, f"{f.file} is shown on no page"
        for page in f.pages:
            # the link and the caption line with run, command, seeds and machine, exactly as the manifest makes them
            expected = markdown(manifest, f, page)
            assert expected in (manifest.root / page).read_text(encoding="utf-8"), \
                f"{page} does not show {f.file} with its caption; paste these lines:\n\n{expected}\n"
    shown = {f.file for f in manifest.figures if "README.md" in f.pages}
    assert len(shown) == 1, "README.md shows one headline figure"


def test_make_target_runs_the_manifest():
    make = (ROOT / "Makefile").read_text()
    target = make.split("\ndocs-figures:", 1)[1].split("\n\n", 1)[0]
    assert "goalscope report --docs docs/figures.toml" in target
    assert docs_figures.REGENERATE == "make docs-figures"


def test_only_draws_the_named_runs_figures(tiny, tmp_path):
    # a second run that is not there: --only must not open it
    manifest = _manifest(tmp_path, tiny["run"], tiny["cfg"].seeds, [("neg.png", "negation")])
    manifest.write_text(manifest.read_text() + '\n[runs.gone]\npath = "nowhere"\ncommand = "c"\nseeds = [0]\n\n'
                        '[[figures]]\nfile = "gone.png"\nrun = "gone"\nfigure = "negation"\ncaption = "c"\n')
    written = write_docs_figures(manifest, only=["tiny"], log=lambda *a: None)
    assert [p.name for p in written] == ["neg.png"] and not (tmp_path / "images" / "gone.png").exists()
    with pytest.raises(ConfigError, match="does not exist"):
        write_docs_figures(manifest, log=lambda *a: None)


def test_the_structural_prior_stands_out_in_the_reports_held_out_panel(tiny):
    """The null a held-out heatmap must beat is drawn in its own colour, in the report and on the front page."""
    from matplotlib.colors import to_rgba

    from goalscope.report.figures_validation import fig_headline, fig_validation
    from goalscope.report.run import read_run

    run = read_run(tiny["run"])
    for fig in (fig_validation(run), fig_headline(run)):
        lines = {ln.get_label(): ln.get_color() for ln in fig.axes[-1].get_lines()}
        prior = next(c for label, c in lines.items() if label.startswith("structural prior"))
        assert to_rgba(prior) == to_rgba("darkorange")
        assert sum(to_rgba(c) == to_rgba("darkorange") for c in lines.values()) == 1
