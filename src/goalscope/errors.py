"""User-facing errors.

Every failure a user can cause (bad config, unknown reward, corrupt checkpoint, ...) is raised as a
:class:`GoalscopeError`; the CLI prints its message as one line and exits with status 2. Anything else that
escapes is a bug in goalscope and keeps its traceback.
"""


class GoalscopeError(Exception):
    """A problem with the user's input, explained in one line."""


class ConfigError(GoalscopeError):
    """An invalid config field or command-line argument."""


class CheckpointError(GoalscopeError):
    """A missing, corrupt, foreign or mismatched checkpoint."""


class TrainingDiverged(GoalscopeError):
    """Training produced NaN/inf; the last good checkpoint is kept."""
