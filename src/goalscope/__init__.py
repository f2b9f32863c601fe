"""goalscope: find where a reinforcement-learning agent's objective lives in its weights.

The names below are the Python API (imported on first use, so ``import goalscope`` stays light)::

    import goalscope
    cfg = goalscope.load_experiment("experiments/default.toml")
    goalscope.run_experiment(cfg, "runs/demo")          # or `goalscope run` on the command line
    run = goalscope.load_run("runs/demo")              # the finished run, its models by role
    delta = run.delta(seed=0, rb="collect:1")          # MB - MA of the run's checkpoints
    delta = goalscope.update_signal(ma.state_dict, mb.state_dict)   # the same for any two checkpoints

See ``examples/quickstart.ipynb`` for a walk through the whole program.

The package reads as the pipeline (see the architecture table in docs/architecture.md): core helpers (errors,
inputs, outputs), then envs, agents, rl, signals, program, analysis, report and cli, each importing only the layers
below it (tests/test_layout.py). This façade may name any of them: its names are imported on first use.
"""

__version__ = "0.1.0"

_API = {
    "load_run": "goalscope.report.run", "RunView": "goalscope.report.run",
    "load_experiment": "goalscope.program.config", "experiment_from_dict": "goalscope.program.config",
    "run_experiment": "goalscope.analysis.effects.experiment",
    "MazeConfig": "goalscope.envs.maze", "parse_reward": "goalscope.envs.rewards", "Reward": "goalscope.envs.rewards",
    "PPOConfig": "goalscope.rl.ppo", "train_new": "goalscope.rl.ppo", "finetune": "goalscope.rl.ppo",
    "evaluate": "goalscope.rl.evaluation", "summarise": "goalscope.rl.evaluation",
    "Checkpoint": "goalscope.agents.checkpoints", "load_checkpoint": "goalscope.agents.checkpoints",
    "save_checkpoint": "goalscope.agents.checkpoints",
    "update_signal": "goalscope.signals.delta", "topk_mask": "goalscope.signals.delta", "add_masked": "goalscope.signals.delta",
    "register_architecture": "goalscope.agents.registry", "build_agent": "goalscope.agents.registry",
    "GoalscopeError": "goalscope.errors",
    "run_steering": "goalscope.analysis.steering.run",  # issue 17; hook points are the module goalscope.agents.hooks
}
# Only functions and classes: subpackages and modules are imported by their own paths (goalscope.signals.aggregators).
__all__ = ["__version__", *_API]


def __getattr__(name: str):
    if name in _API:
        import importlib

        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'goalscope' has no attribute {name!r}")


def __dir__():
    return sorted(__all__)


def _register_gym_envs() -> None:
    # Gymnasium 1.x has no plugin entry points: importing the package is how `gym.make("goalscope/...")` finds its
    # envs (as with minigrid). Registration stores a string entry point; nothing heavy is imported for it.
    from goalscope.envs.crafter import register_crafter
    from goalscope.envs.craftax_gym import register_craftax
    from goalscope.envs.gym import register_envs

    register_envs()
    register_crafter()
    register_craftax()


_register_gym_envs()
