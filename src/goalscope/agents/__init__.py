"""Agents: the architectures (one module each), their registry, checkpoints on disk, the SB3 importer and
goalscope's CNN as an SB3 features extractor (``sb3``, needs stable-baselines3).

May import: goalscope.envs and the core helpers (errors, inputs, outputs). Nothing here trains.
"""
