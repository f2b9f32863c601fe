"""Confinement: writes into a run directory never follow a symbolic link and never leave its real path.

A run (report, sweep, pointers) directory someone else made is data, never a write path. A command that writes
into one enters :func:`confine` first, which refuses a symbolic link planted anywhere inside it (one line naming
the link); while confined, every write below the root (:func:`guard`, called by
:func:`goalscope.outputs.atomic_write_bytes`, :func:`make_dir` and :func:`remove_tree`, and by job workers with
the run as an explicit root) checks each path component again with ``lstat`` and that the real path stays inside
the root's real path, so a link planted while the command runs is refused at the write.

This module may import only :mod:`goalscope.errors` and the standard library.
"""

from __future__ import annotations

import os
import shutil
import stat
import threading
from contextlib import contextmanager
from pathlib import Path

from goalscope.errors import GoalscopeError

_ROOTS: list[Path] = []  # absolute (not resolved) roots this process writes into now
_ROOTS_LOCK = threading.Lock()


def _abs(path: Path) -> Path:
    return Path(os.path.abspath(path))


def find_link(root: Path) -> Path | None:
    """The first symbolic link anywhere inside ``root`` (walked without following links), or None."""
    root = Path(root)
    if not root.is_dir() or root.is_symlink():
        return None
    for top, dirs, files in os.walk(root, followlinks=False):
        for name in sorted(dirs + files):
            p = Path(top) / name
            if p.is_symlink():
                return p
    return None


class UnsafePathError(GoalscopeError):
    """A write refused by the output policy (a symbolic link on the way, or a path outside the run): never caught
    and turned into a note, always the command's one-line error."""


def _link_error(link: Path, root: Path, verb: str = "writes") -> GoalscopeError:
    try:
        target = os.readlink(link)
    except OSError:
        target = "?"
    return UnsafePathError(f"{link} is a symbolic link (to {target}); goalscope never {verb} through a symbolic link "
                          f"inside {root}: remove it, or copy the run")


def refuse_links(root: Path) -> None:
    """Refuse to read a run (report, results, the Python API) with a symbolic link planted anywhere inside it: a
    heatmap, stage or ``.lock`` that is a link would make goalscope read (and show, or act on) a file of someone
    else's choosing as if the run had written it."""
    link = find_link(root)
    if link is not None:
        raise _link_error(link, _abs(root), "reads")


def guard(path: Path, root: Path | None = None) -> Path:
    """``path`` if goalscope may write there: below every confined root (or ``root``) it lies under, no component
    is a symbolic link and its real path is inside the root's real path. Raises naming the link otherwise."""
    path = _abs(path)
    with _ROOTS_LOCK:
        roots = list(_ROOTS)
    if root is not None:
        roots.append(_abs(root))
    for r in roots:
        if path != r and r not in path.parents:
            continue
        current = r
        for part in path.relative_to(r).parts:
            current = current / part
            try:
                mode = os.lstat(current).st_mode
            except FileNotFoundError:
                break  # what does not exist yet is made by goalscope, below checked components
            except OSError:
                break
            if stat.S_ISLNK(mode):
                raise _link_error(current, r)
        real_root, real = os.path.realpath(r), os.path.realpath(path)
        if real != real_root and not real.startswith(real_root.rstrip(os.sep) + os.sep):
            raise UnsafePathError(f"{path} resolves to {real}, outside {r}; goalscope writes only inside the run's "
                                 "real path")
    return Path(path)


def innermost_root(path: Path) -> Path | None:
    """The deepest confined root ``path`` lies below (None when it lies below none)."""
    path = _abs(path)
    with _ROOTS_LOCK:
        roots = [r for r in _ROOTS if r in path.parents]
    return max(roots, key=lambda r: len(r.parts), default=None)


_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
NOFOLLOW_WRITES = hasattr(os, "O_NOFOLLOW") and {os.open, os.mkdir, os.rename, os.unlink} <= os.supports_dir_fd


def open_dir_below(root: Path, directory: Path) -> int:
    """A file descriptor of ``directory`` (made if missing), reached from ``root`` one component at a time with
    ``O_NOFOLLOW``: no component below the root can be a symbolic link, even one planted after :func:`guard`
    looked. The caller closes it."""
    fd = os.open(root, _DIR_FLAGS)  # the root itself was named by the user: a link there is their choice
    try:
        current = Path(root)
        for part in Path(directory).relative_to(root).parts:
            current = current / part
            for attempt in (0, 1):
                try:
                    child = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
                    break
                except FileNotFoundError:
                    if attempt:
                        raise
                    try:
                        os.mkdir(part, dir_fd=fd)
                    except FileExistsError:
                        pass
                except OSError as e:
                    if os.path.islink(current):
                        raise _link_error(current, Path(root)) from None
                    raise UnsafePathError(f"{current} is not a directory ({e.strerror})") from None
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def make_dir(path: Path, root: Path | None = None) -> Path:
    """``mkdir -p path`` after :func:`guard` (so no component is followed through a link)."""
    guard(path, root)
    Path(path).mkdir(parents=True, exist_ok=True)
    return Path(path)


def remove_tree(path: Path, root: Path | None = None) -> None:
    """``rm -rf path`` after :func:`guard` (never deletes through a link to somewhere else)."""
    guard(path, root)
    shutil.rmtree(path, ignore_errors=True)


@contextmanager
def confine(root: Path, walk: bool = True):
    """Write only inside ``root`` for the duration: refuse now if a symbolic link is planted anywhere inside it
    (``walk``; a job worker inside a confined run skips the walk), and make :func:`guard` check every later write
    below it."""
    root = _abs(root)
    link = find_link(root) if walk else None
    if link is not None:
        raise _link_error(link, root)
    with _ROOTS_LOCK:
        _ROOTS.append(root)
    try:
        yield root
    finally:
        with _ROOTS_LOCK:
            _ROOTS.remove(root)
