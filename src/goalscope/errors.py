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
