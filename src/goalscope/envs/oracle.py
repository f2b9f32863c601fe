"""A shortest-path oracle: the reference return that agent returns are reported against.

At every step it walks one step along a shortest path to the *nearest* object the reward pays for, routing around
objects the reward penalises where another route exists. Greedy nearest-first is not the optimal tour, so an agent
can occasionally beat it; it is a fixed, reproducible yardstick, not an upper bound.

Distances are computed for all envs at once by relaxing a distance grid (a vectorised breadth-first search).

May import: goalscope.envs.maze.
"""

from __future__ import annotations

import numpy as np

from goalscope.envs.maze import MazeVecEnv

_INF = np.iinfo(np.int32).max // 2


def _distance_to(targets: np.ndarray, passable: np.ndarray) -> np.ndarray:
    """Steps from every cell to the nearest target through passable cells, for ``(N, H, W)`` boolean grids."""
    dist = np.where(targets & passable, 0, _INF).astype(np.int32)
    while True:
        best = dist.copy()
        np.minimum(best[:, 1:, :], dist[:, :-1, :] + 1, out=best[:, 1:, :])
        np.minimum(best[:, :-1, :], dist[:, 1:, :] + 1, out=best[:, :-1, :])
        np.minimum(best[:, :, 1:], dist[:, :, :-1] + 1, out=best[:, :, 1:])
        np.minimum(best[:, :, :-1], dist[:, :, 1:] + 1, out=best[:, :, :-1])
        best = np.where(passable, best, _INF)
        if np.array_equal(best, dist):
            return dist
        dist = best


def oracle_actions(env: MazeVecEnv) -> np.ndarray:
    """The oracle's action for every env in its current state."""
    g = env.grid_state()
    walls, objects, pos = g["walls"], g["objects"], g["pos"]
    n = len(pos)
    ar = np.arange(n)
    value = g["weights"][ar[:, None, None], objects]  # objects == -1 reads the last column, 0
    targets = value > 0
    open_cells = ~walls
    safe = open_cells & ~(value < 0)
    safe[ar, pos[:, 0], pos[:, 1]] = True  # the agent's own cell never blocks it
    dist = _distance_to(targets, safe)
    # Where penalised objects cut every route, accept walking over them.
    stuck = dist[ar, pos[:, 0], pos[:, 1]] >= _INF
    if stuck.any():
        dist[stuck] = _distance_to(targets[stuck], open_cells[stuck])
    moves = np.array([[-1, 0], [0, 1], [1, 0], [0, -1]])
    nbr = pos[:, None, :] + moves[None, :, :]  # (N, 4, 2)
    nd = dist[ar[:, None], nbr[..., 0], nbr[..., 1]].astype(np.int64)
    # Nothing left to collect: step somewhere harmless (into a wall or an empty cell) and wait.
    harmless = walls[ar[:, None], nbr[..., 0], nbr[..., 1]] | (value[ar[:, None], nbr[..., 0], nbr[..., 1]] == 0)
    nd = np.where(nd >= _INF, np.where(harmless, _INF, _INF + 1), nd)
    return np.argmin(nd, axis=1)
