"""Where goalscope writes: output paths, the marker of what goalscope made, locks, and replace-after-success.

Rules every command that writes follows (``train``, ``finetune``, ``import-sb3``, ``superpose``,
``report``, ``run``):

- an existing output is never replaced without ``--force``, and ``--force`` replaces only what goalscope made: a
  directory carrying goalscope's marker (``.goalscope``, which lists the entries goalscope wrote there) or, for
  directories made before the marker existed, a checkpoint with only goalscope's own files in it;
- never the working directory or one of its parents, never through a symbolic link;
- the new result is built beside the old one (``.NAME.new-PID``) and swapped in only when complete, so a crash or a
  diverged retrain leaves the old result as it was;
- one writer at a time: a lock file whose holder is identified by pid *and* process start time, so a stale lock
  from a killed run (even one whose pid was reused) is recognised;
- a run directory (or a report, sweep or pointers directory) someone else made is data, never a write path: every
  command that writes into one first *confines* itself to it (:func:`confine`), which refuses a symbolic link
  anywhere inside it, and every write below a confined root (:func:`guard`, called by :func:`atomic_write_bytes`
  and :func:`make_dir`) checks each path component again with ``lstat`` and that its real path is inside the
  root's real path, so nothing is written through a planted link, file or directory.

This module may import only :mod:`goalscope.errors`, :mod:`goalscope.confinement` and the standard library.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from goalscope.confinement import (NOFOLLOW_WRITES, UnsafePathError, confine, find_link,  # noqa: F401 (re-exported)
                                   guard, innermost_root, make_dir, open_dir_below, refuse_links, remove_tree)
from goalscope.errors import ConfigError, GoalscopeError

MARKER = ".goalscope"
# What a checkpoint directory made by an older goalscope (no marker) may hold.
LEGACY_CHECKPOINT_ENTRIES = {"model.safetensors", "meta.json", "train_log.csv", "tb", "profile.json"}


def check_output_path(out: Path, what: str) -> Path:
    """``out`` as given, refused with one line if goalscope must not write there whatever ``--force`` says."""
    out = Path(out)
    if out.is_symlink():
        raise ConfigError(f"{out} is a symbolic link; name a real path for the {what}")
    try:
        resolved, cwd = out.resolve(), Path.cwd().resolve()
    except (OSError, RuntimeError) as e:  # e.g. a symlink loop in a parent
        raise ConfigError(f"{out} cannot be resolved as an output path ({e})") from None
    if resolved == cwd or resolved in cwd.parents:
        raise ConfigError(f"{out} is the working directory or one of its parents; name a new directory for the {what}")
    return out


def check_no_link_in_path(out: Path, what: str) -> None:
    """Refuse ``out`` when any component of it, as written, is a symbolic link: what ``--force`` replaces must be
    reached without following one (``p1/plink/new`` would replace a directory somewhere else)."""
    out = Path(out)
    path = Path(out.anchor) if out.is_absolute() else Path()
    for part in out.parts[1:] if out.is_absolute() else out.parts:
        path = path / part
        if part not in (".", "..") and path.is_symlink():
            raise ConfigError(f"{path} is a symbolic link; goalscope replaces a {what} only at a path without one "
                              f"(name the real path: {out.resolve()})")


def _marker_entries(directory: Path) -> set[str] | None:
    try:
        data = json.loads((directory / MARKER).read_text())
    except (OSError, ValueError, RecursionError):
        return None
    entries = data.get("entries") if isinstance(data, dict) else None
    return set(entries) if isinstance(entries, list) and all(isinstance(e, str) for e in entries) else None


def _is_legacy_checkpoint(directory: Path) -> bool:
    try:
        meta = json.loads((directory / "meta.json").read_text())
    except (OSError, ValueError, RecursionError):
        return False
    return isinstance(meta, dict) and str(meta.get("format", "")).startswith("goalscope-checkpoint/")


def foreign_entry(directory: Path) -> str | None:
    """The first entry of ``directory`` that goalscope did not make there (None if all of it is goalscope's)."""
    names = sorted(p.name for p in directory.iterdir())
    made = _marker_entries(directory)
    if made is None:
        if not _is_legacy_checkpoint(directory):
            return names[0] if names else None
        made = LEGACY_CHECKPOINT_ENTRIES
    made = made | {MARKER}
    return next((n for n in names if n not in made), None)


def check_replaceable(out: Path, force: bool, what: str) -> bool:
    """Whether ``out`` exists with content to replace; raises unless that is allowed (``--force``, goalscope's)."""
    out = check_output_path(out, what)
    if not out.exists():
        return False
    if not out.is_dir():
        raise ConfigError(f"{out} exists and is a file, not a {what}")
    if not any(out.iterdir()):
        return False
    if not force:
        raise ConfigError(f"{out} already exists; pass --force to replace it")
    check_no_link_in_path(out, what)
    stranger = foreign_entry(out)
    if stranger is not None:
        raise ConfigError(f"--force replaces only what goalscope made, and {out / stranger} is not goalscope's; "
                          f"move it away or choose another --out")
    return True


def write_marker(directory: Path, kind: str) -> None:
    """Mark ``directory`` as goalscope's, listing what is in it now (``--force`` may later replace exactly that)."""
    entries = sorted(p.name for p in Path(directory).iterdir() if p.name != MARKER)
    atomic_write_bytes(Path(directory) / MARKER,
                       json.dumps({"made_by": "goalscope", "kind": kind, "entries": entries}).encode())


@contextmanager
def replace_dir(out: Path, force: bool, what: str, kind: str):
    """Yield a fresh staging directory beside ``out``; on success it becomes ``out`` (replacing the old one only
    now), on any failure it is removed and ``out`` is untouched. Holds ``out``'s lock throughout."""
    out = Path(out)
    check_replaceable(out, force, what)
    parent = out.parent
    parent.mkdir(parents=True, exist_ok=True)
    with Lock(parent / f".{out.name}.lock"):
        _recover(out)
        replacing = check_replaceable(out, force, what)  # again, under the lock
        staging = parent / f".{out.name}.new-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        try:
            yield staging
            write_marker(staging, kind)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        old = parent / f".{out.name}.old-{os.getpid()}"
        if replacing or out.exists():
            os.replace(out, old)  # an empty directory left at ``out`` is replaced too
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)


def _recover(out: Path) -> None:
    """Tidy what a killed ``replace_dir`` left beside ``out``: a half-built staging directory is removed, and an
    old result moved aside in the instant before the swap is put back (so a kill never loses it)."""
    for leftover in sorted(out.parent.glob(f".{out.name}.*-*")):
        kind, _, pid = leftover.name.rpartition("-")
        if not pid.isdigit() or _alive(int(pid)) or not kind.endswith((".new", ".old")):
            continue
        if kind.endswith(".old") and not out.exists():
            os.replace(leftover, out)
        else:
            shutil.rmtree(leftover, ignore_errors=True)


def check_output_file(out: Path, force: bool, what: str, is_ours) -> None:
    """A file output: refuse a directory, a symlink, or an existing file without ``--force``; with ``--force``
    only a file ``is_ours(path)`` says goalscope wrote."""
    out = check_output_path(out, what)
    if out.is_dir():
        raise ConfigError(f"{out} is a directory; --out takes a file path for the {what}")
    if out.exists():
        if not force:
            raise ConfigError(f"{out} already exists; pass --force to replace it")
        check_no_link_in_path(out, what)
        if not is_ours(out):
            raise ConfigError(f"--force replaces only a {what} goalscope wrote, and {out} is not one; choose another --out")


# ----------------------------------------------------------------------------------------------------------------
# Locks


def _start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), which tells a reused pid from the original."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name before ")" may contain spaces


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def lock_owner() -> str:
    """This process as a lock holder: ``pid start-time``."""
    return f"{os.getpid()} {_start_time(os.getpid()) or ''}".strip()


def holds_lock(path: Path, owner: str) -> bool:
    """Whether the lock file at ``path`` is still held by ``owner``."""
    try:
        return Path(path).read_text().strip() == owner
    except OSError:
        return False


class Lock:
    """An exclusive lock file holding its owner's pid and start time.

    The file appears with its content already inside (written to a private file, then hard-linked into place,
    which fails if the lock exists), so nobody reads a half-made lock. A lock whose process is gone, or whose pid
    now belongs to a process started later, is stale and taken over. A lock of the old format (pid only) held by
    a live process that is not goalscope is reported with the command that clears it, never waited on.
    """

    def __init__(self, path: Path, reentrant: bool = False):
        self.path = Path(path)
        self.owner = lock_owner()
        self.reentrant = reentrant
        self.nested = False

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.reentrant and holds_lock(self.path, self.owner):  # held by this process already (an analysis
            self.nested = True                                     # running its jobs): entered again, kept on exit
            return self
        mine = self.path.with_name(f"{self.path.name}-{os.getpid()}")
        mine.write_text(self.owner)
        try:
            for _ in range(3):
                try:
                    os.link(mine, self.path)
                    return self
                except FileExistsError:
                    self._raise_if_live()
                    self.path.unlink(missing_ok=True)  # stale: its process is gone
            raise GoalscopeError(f"could not lock {self.path.parent}")
        finally:
            mine.unlink(missing_ok=True)

    def _raise_if_live(self) -> None:
        """Raise if the existing lock belongs to a live holder; return if it is stale."""
        try:
            fields = self.path.read_text().split()
            pid = int(fields[0])
        except (OSError, ValueError, IndexError):
            return  # vanished meanwhile, or not a lock goalscope wrote
        if not _alive(pid):
            return
        started = fields[1] if len(fields) > 1 else None
        if started is not None:
            if started != _start_time(pid):
                return  # the pid was reused by a later process
        elif "goalscope" not in _cmdline(pid):
            raise GoalscopeError(f"{self.path} names pid {pid}, which is not a goalscope process (a stale lock from a "
                                 f"killed run); if nothing else writes there, clear it with: rm {self.path}")
        raise GoalscopeError(f"{self.path.parent} is in use by another goalscope process (pid {pid}); "
                             "wait for it or point --out elsewhere")

    def __exit__(self, *exc):
        if not self.nested and holds_lock(self.path, self.owner):
            self.path.unlink(missing_ok=True)


def check_unlocked(run_dir: Path) -> None:
    """Refuse to read a run that a live goalscope process holds locked (it has not finished), or one with a
    symbolic link planted inside it (:func:`refuse_links`; the lock itself would be read through it)."""
    refuse_links(run_dir)
    lock = Lock(Path(run_dir) / ".lock")
    if not lock.path.exists() or holds_lock(lock.path, lock.owner):
        return
    try:
        lock._raise_if_live()
    except GoalscopeError:
        raise GoalscopeError(f"{run_dir} is locked by a goalscope process that is still running: the run has not "
                             "finished; wait for it") from None


@contextmanager
def analysing(run_dir: Path):
    """An analysis command writing into a finished run: confined to it (:func:`confine`) and holding its lock for
    the whole call, so it refuses a run that a live process is still writing (and two analyses never interleave)."""
    run_dir = Path(run_dir)
    if not (run_dir / "experiment.json").is_file():  # not a run: the command says so in its own words (and
        yield run_dir                                 # nobody's home directory is walked or locked first)
        return
    with confine(run_dir):
        lock = Lock(run_dir / ".lock")
        try:
            lock.__enter__()
        except GoalscopeError as e:
            if "in use by another goalscope process" in str(e):
                raise GoalscopeError(f"{run_dir} is locked by a goalscope process that is still running: the run "
                                     "has not finished (or another analysis is writing it); wait for it") from None
            raise
        try:
            remove_stale_tmp(run_dir)  # what a killed command left half-written, now that nobody else writes here
            yield run_dir
        finally:
            lock.__exit__(None, None, None)


def remove_stale_tmp(directory: Path) -> int:
    """Remove the ``.NAME.*.tmp`` files a killed :func:`atomic_write_bytes` left in ``directory``; how many."""
    n = 0
    directory = Path(directory)
    if not directory.is_dir() or directory.is_symlink():
        return 0
    for p in directory.glob(".*.tmp"):
        if p.is_file() and not p.is_symlink():
            p.unlink(missing_ok=True)
            n += 1
    return n


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a fsynced temporary file renamed into place: readers see the old file or
    the whole new one, never a part (a full disk leaves the previous file readable). Never through a symbolic link
    (:func:`guard`), nor over one."""
    path = Path(path)
    guard(path)
    if path.is_symlink():
        raise UnsafePathError(f"{path} is a symbolic link; goalscope never writes through or over one")
    root = innermost_root(path)
    if root is not None and NOFOLLOW_WRITES:  # below a run: the directory is reached without following any link
        _write_below(root, path, data)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_below(root: Path, path: Path, data: bytes) -> None:
    """:func:`atomic_write_bytes` inside a confined root: the parent directory opened component by component with
    ``O_NOFOLLOW``, the temporary file created there with ``O_EXCL | O_NOFOLLOW`` and renamed relative to it, so a
    link planted anywhere below the root at any moment is never followed."""
    import secrets

    dfd = open_dir_below(Path(os.path.abspath(root)), Path(os.path.abspath(path)).parent)
    tmp = f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600, dir_fd=dfd)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.rename(tmp, path.name, src_dir_fd=dfd, dst_dir_fd=dfd)  # replaces a link itself, never its target
        except BaseException:
            try:
                os.unlink(tmp, dir_fd=dfd)
            except OSError:
                pass
            raise
    finally:
        os.close(dfd)
