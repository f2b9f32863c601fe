"""goalscope: find where a reinforcement-learning agent's objective lives in its weights."""

__version__ = "0.1.0"
