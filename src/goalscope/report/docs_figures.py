"""The docs' figures, made from named runs by the report's own figure functions: ``goalscope report --docs
docs/figures.toml`` (``make docs-figures``) reads the manifest and writes every image it lists.

The manifest names each run once (its directory, the command that made it, its seeds) and each figure by the name
the report gives it (``negation``, ``heatmap_mean_abs``, ``validation``, ``rollout_MA``, ... and ``headline``, the
front page's):

    machine = "2-core AMD EPYC, no GPU"
    root = ".."                      # the paths below are relative to this, itself relative to the manifest
    images = "docs/images"
    dpi = 80

    [runs.demo]
    path = "runs/demo"
    command = "make demo"
    seeds = [0, 1, 2]

    [[figures]]
    file = "demo_negation.png"
    run = "demo"
    figure = "negation"
    pages = ["docs/results/default.md"]
    caption = "Negate and retrain: MB* minus each control."

A run whose seeds differ from the manifest's is refused, so a caption never states seeds the figure was not made
from; the caption (with run, command, seeds and machine) is stamped under every PNG and is the line each page
shows under the image (:func:`markdown`, checked by tests/test_docs_figures.py). PNGs are palette-quantised at a
low DPI and GIFs are the report's capped rollouts scaled up, so the docs stay small; a file over its cap is an
error, not a silent bloat.

May import: goalscope.report (run, common, figures_*), goalscope.errors, goalscope.inputs, goalscope.outputs.
"""

from __future__ import annotations

import io
import os
import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from goalscope.errors import ConfigError, GoalscopeError
from goalscope.inputs import read_toml

MAX_PNG_BYTES = 300_000
MAX_GIF_BYTES = 400_000
GIF_WIDTH = 252  # the report shows a rollout at 240 px, pixelated; a GIF is scaled by a whole factor to about this
PNG_COLOURS = 256  # a palette keeps anti-aliased text clean and makes a figure 3-5 times smaller than RGB
REGENERATE = "make docs-figures"


@dataclass(frozen=True)
class DocFigure:
    """One image of the docs: where it goes, what draws it, from which run, and its caption."""
    file: str
    figure: str
    run: str
    run_path: Path
    command: str
    seeds: tuple
    machine: str
    caption: str
    pages: tuple
    dpi: int

    @property
    def full_caption(self) -> str:
        """The caption with its provenance: what the image shows, then run, command, seeds and machine."""
        seeds = ", ".join(map(str, self.seeds))
        return (f"{self.caption} Run {self.run_path.as_posix()} ({self.command}), seeds {seeds}; {self.machine}; "
                f"regenerate: {REGENERATE}.")


@dataclass(frozen=True)
class Manifest:
    """A read manifest: the folder its paths are relative to, the images folder, and its figures in order."""
    root: Path
    images: Path
    figures: tuple


def _field(table: dict, key: str, kind, where: str):
    value = table.get(key)
    if not isinstance(value, kind):
        raise ConfigError(f"{where}: '{key}' must be a {getattr(kind, '__name__', 'value')}, got {value!r}")
    return value


def read_manifest(path: str | Path) -> Manifest:
    """The manifest at ``path``, checked: every figure names a known run and a figure the report draws."""
    path = Path(path)
    data = read_toml(path)
    root = (path.parent / data.get("root", ".")).resolve()
    machine = _field(data, "machine", str, str(path))
    runs = _field(data, "runs", dict, str(path))
    default_dpi = data.get("dpi", 80)
    figures, files = [], set()
    for i, f in enumerate(_field(data, "figures", list, str(path))):
        where = f"{path}: figures[{i}]"
        name = _field(f, "run", str, where)
        if name not in runs:
            raise ConfigError(f"{where} names run {name!r}, which [runs] does not define (it has {sorted(runs)})")
        r = runs[name]
        figure = _field(f, "figure", str, where)
        if figure not in FIGURE_NAMES and not figure.startswith("heatmap_"):
            raise ConfigError(f"{where}: unknown figure {figure!r}; one of {', '.join(FIGURE_NAMES)} or heatmap_NAME")
        file = _field(f, "file", str, where)
        if Path(file).name != file or Path(file).suffix != (".gif" if figure.startswith("rollout_") else ".png"):
            raise ConfigError(f"{where}: file {file!r} must be a plain name ending in "
                              f"{'.gif' if figure.startswith('rollout_') else '.png'}")
        if file in files:
            raise ConfigError(f"{where}: file {file!r} is listed twice")
        files.add(file)
        figures.append(DocFigure(file=file, figure=figure, run=name, run_path=Path(_field(r, "path", str, f"runs.{name}")),
                                 command=_field(r, "command", str, f"runs.{name}"),
                                 seeds=tuple(_field(r, "seeds", list, f"runs.{name}")), machine=machine,
                                 caption=_field(f, "caption", str, where), pages=tuple(f.get("pages", ())),
                                 dpi=int(f.get("dpi", default_dpi))))
    return Manifest(root=root, images=root / data.get("images", "docs/images"), figures=tuple(figures))


def _md_text(text: str) -> str:
    # MB* and |Δ_i| in a caption would otherwise open or close the caption's own emphasis
    return re.sub(r"([*_\[\]])", r"\\\1", text)


def markdown(manifest: Manifest, fig: DocFigure, page: str) -> str:
    """The image link and the caption line under it that ``page`` (a path relative to the root) shows for ``fig``:
    the stamped caption with the run's path and command as code."""
    rel = Path(os.path.relpath(manifest.images / fig.file, (manifest.root / page).parent)).as_posix()
    seeds = ", ".join(map(str, fig.seeds))
    return (f"![{_md_text(fig.caption)}]({rel})\n\n*{_md_text(fig.caption)} Run `{fig.run_path.as_posix()}` "
            f"(`{fig.command}`), seeds {seeds}; {fig.machine}; regenerate: `{REGENERATE}`.*")


def write_docs_figures(manifest_path: str | Path, only: list[str] | None = None, log=print) -> list[Path]:
    """Draw every figure of the manifest (those of the runs in ``only``, when given) into its images folder."""
    from goalscope.outputs import atomic_write_bytes, make_dir

    manifest = read_manifest(manifest_path)
    unknown = set(only or ()) - {f.run for f in manifest.figures}
    if unknown:
        raise ConfigError(f"--only names {sorted(unknown)}, which no figure of {manifest_path} uses")
    runs, written = {}, []
    for f in manifest.figures:
        if only and f.run not in only:
            continue
        if f.run not in runs:
            runs[f.run] = _open_run(manifest.root / f.run_path, f)
        data = _draw(runs[f.run], f)
        cap = MAX_GIF_BYTES if f.file.endswith(".gif") else MAX_PNG_BYTES
        if len(data) > cap:
            raise GoalscopeError(f"{f.file} would be {len(data):,} bytes, over the docs' cap of {cap:,}; lower its "
                                 "dpi in the manifest")
        out = manifest.images / f.file
        make_dir(manifest.images)  # only once a figure is drawn: a run that is not there leaves no empty folder
        atomic_write_bytes(out, data)
        log(f"{out} ({len(data) / 1024:.0f} KB, {f.figure} of {f.run_path.as_posix()})")
        written.append(out)
    return written


def _open_run(path: Path, f: DocFigure):
    from goalscope.outputs import check_unlocked
    from goalscope.report.run import read_run

    check_unlocked(path)  # a run still being written is not yet the run the caption names
    run = read_run(path)
    if tuple(run.cfg.seeds) != f.seeds:
        raise ConfigError(f"{path} has seeds {list(run.cfg.seeds)} but the manifest says {list(f.seeds)} for run "
                          f"{f.run!r}: correct the manifest (and so every caption of that run)")
    return run


def _report_figure(run, name: str):
    """The figure the report draws under ``name`` (its PNG's name in RUN/report), from the same function."""
    from goalscope.report import figures_negation, figures_signals, figures_training, figures_validation
    from goalscope.report.figures_mazes import fig_mazes

    if name.startswith("heatmap_"):
        cache = run.__dict__.setdefault("_docs_heatmaps", {})
        if not cache:
            cache.update({n: fig for n, _, fig, _ in figures_signals.heatmap_figures(run)})
        fig = cache.get(name)
    else:
        fig = {"learning_curves": lambda: figures_training.fig_learning_curves(run),
               "behaviour": lambda: figures_training.fig_behaviour(run),
               "cosine": lambda: figures_signals.fig_cosine(run),
               "negation": lambda: figures_negation.fig_negation(run),
               "mazes": lambda: fig_mazes(run),
               "validation": lambda: figures_validation.fig_validation(run),
               "headline": lambda: figures_validation.fig_headline(run)}[name]()
    if fig is None:
        raise GoalscopeError(f"{run.path} has nothing to draw for figure {name!r} (the report leaves it out too)")
    return fig


FIGURE_NAMES = ("headline", "learning_curves", "behaviour", "cosine", "negation", "mazes", "validation",
                "rollout_MA", "rollout_MB")


def _draw(run, f: DocFigure) -> bytes:
    if f.figure.startswith("rollout_"):
        return _rollout_gif(run, f.figure)
    fig = _report_figure(run, f.figure)
    _stamp(fig, f.full_caption)
    return _png(fig, f.dpi)


def _stamp(fig, text: str) -> None:
    """Write ``text`` in a strip under the figure, outside what constrained layout arranges."""
    w, h = fig.get_size_inches()
    lines = textwrap.wrap(text, width=max(40, int(w * 15)))
    strip = 0.08 + 0.14 * len(lines)
    fig.set_size_inches(w, h + strip)
    fig.get_layout_engine().set(rect=(0, strip / (h + strip), 1, h / (h + strip)))
    fig.text(0.005, 0.04 / (h + strip), "\n".join(lines), fontsize=7, color="0.3", ha="left", va="bottom")


def _png(fig, dpi: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white")
    img = Image.open(io.BytesIO(buf.getvalue())).convert("RGB").quantize(PNG_COLOURS)
    out = io.BytesIO()
    img.save(out, format="PNG", optimize=True)
    return out.getvalue()


def _rollout_gif(run, name: str) -> bytes:
    """The report's rollout GIF of ``name`` (rollout_MA or rollout_MB), scaled up by a whole factor (nearest
    neighbour: the cells stay sharp, and a GIF of flat colours grows little)."""
    from PIL import Image, ImageSequence

    from goalscope.report.figures_rollouts import rollouts

    item = next((r for r in rollouts(run) if r.file == f"{name}.gif"), None)
    if item is None:
        raise GoalscopeError(f"{run.path} has no {name} rollout (its env renders no rgb_array frames, or the model "
                             "did not finish)")
    src = Image.open(io.BytesIO(item.gif))
    factor = max(1, round(GIF_WIDTH / src.width))
    frames = [f.convert("RGB").resize((src.width * factor, src.height * factor), Image.NEAREST)
              for f in ImageSequence.Iterator(src)]
    durations = [f.info.get("duration", 100) for f in ImageSequence.Iterator(Image.open(io.BytesIO(item.gif)))]
    out = io.BytesIO()
    frames[0].save(out, format="GIF", save_all=True, append_images=frames[1:], loop=0, duration=durations,
                   optimize=True)
    return out.getvalue()
