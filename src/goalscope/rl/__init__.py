"""Reinforcement learning: the PPO loop, evaluation into behaviour profiles, snapshots/resume and training logs.

May import: goalscope.agents, goalscope.envs and the core helpers.
"""
