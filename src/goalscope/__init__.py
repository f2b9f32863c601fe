"""goalscope: find where a reinforcement-learning agent's objective lives in its weights."""

__version__ = "0.1.0"


def _register_gym_envs() -> None:
    # Gymnasium 1.x has no plugin entry points: importing the package is how `gym.make("goalscope/...")` finds its
    # envs (as with minigrid). Registration stores a string entry point; nothing heavy is imported for it.
    from goalscope.envs.gym import register_envs

    register_envs()


_register_gym_envs()
