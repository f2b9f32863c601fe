"""User-facing errors.

Every failure a user can cause (bad config, unknown reward, corrupt checkpoint, ...) is raised as a
:class:`GoalscopeError`; the CLI prints its message as one line and exits with status 2. Anything else that
escapes is a bug in goalscope and keeps its traceback.

May import: nothing from goalscope (every module may import this one).
"""


class GoalscopeError(Exception):
    """A problem with the user's input, explained in one line."""


class ConfigError(GoalscopeError):
    """An invalid config field or command-line argument."""


class CheckpointError(GoalscopeError):
    """A missing, corrupt, foreign or mismatched checkpoint."""


class TrainingDiverged(GoalscopeError):
    """Training produced NaN/inf; the last good checkpoint is kept."""


def check_fields(cls, data, where: str, extra: tuple[str, ...] = ()) -> dict:
    """``data`` as keyword arguments for the dataclass ``cls``; a key it lacks is a ConfigError naming it.

    ``extra`` keys are accepted and dropped (e.g. an env config's ``family``, which chose ``cls``).
    """
    from dataclasses import fields

    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a table, got {data!r}")
    known = [f.name for f in fields(cls)]
    for key in data:
        if key not in known and key not in extra:
            raise ConfigError(f"{where}: unknown field {key!r} (known: {', '.join(sorted([*known, *extra]))})")
    return {k: v for k, v in data.items() if k not in extra}


def import_failure(package: str, need: str, install: str, error: ImportError) -> str:
    """The one line for an optional ``package`` that did not import: ``need`` (what needs it) and ``install`` (the
    command) when it is absent; its own error when it is installed and its import fails (pandas built for another
    numpy, say), which the install command would not fix and ``from None`` would otherwise hide."""
    missing = isinstance(error, ModuleNotFoundError) and (error.name or "").split(".")[0] == package
    if missing:
        return f"{need}: {install}"
    return f"{need}, and {package} is installed but its import failed ({type(error).__name__}: {error})"
