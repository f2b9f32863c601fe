"""The experiment program: a validated config, the jobs it plans (cached by the hash of their inputs), the executors
that run them and the runner that orders them in waves.

May import: goalscope.signals, goalscope.rl, goalscope.agents, goalscope.envs and the core helpers.
"""
