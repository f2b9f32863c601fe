"""Agents: the architectures (one module each), their registry, checkpoints on disk and the SB3 importer.

May import: goalscope.envs and the core helpers (errors, inputs, outputs). Nothing here trains.
"""
