"""CLI commands of the experiment program (run, diff, negate, superpose, results)."""

COMMANDS: dict = {}


def add_commands(sub) -> None:
    return None
