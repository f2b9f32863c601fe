"""The object maze drawn in colour (``env.obs = "rgb"``): a palette in which no input channel names a type.

Every colour is over the levels 0, 128 and 255 of each channel. The floor is black, the walls grey (128,128,128),
the agent white (255,255,255). With K >= 4 object types, every value a type shows on a channel is shown on that
channel by another type too, so no function of one channel tells a type from all the others: the type is a
conjunction over channels that a network has to compute. The types also show 128 and 255 on every channel, so no
single channel names the walls or the agent either. With K < 4 no palette can do this among types (each channel's
values would have to be shared among at most 3 distinct colours, 2 and 1); each value a type shows is then the
floor's, the walls' or the agent's on that channel. Type k of K:

    K = 4:   (255,255,128) (255,128,255) (128,255,128) (128,128,255)
    K = 5:   (255,255,128) (255,128,255) (128,255,255) (255,128,128) (128,255,128)
    others:  the first K of red, green, blue, (255,128,128), (128,255,128), (128,128,255), yellow, magenta, cyan,
             (255,128,0), (128,255,0), (0,128,255), (255,0,128), (0,255,128), (128,0,255), (128,128,0)

The long list's first six use each level twice per channel, so every prefix of 6 or more keeps the property; 4 and
5 types need lists of their own (a list valid at K can only grow by colours whose values it already shows).

May import: numpy.
"""

from __future__ import annotations

import numpy as np

FLOOR_COLOUR, WALL_COLOUR, AGENT_COLOUR = (0, 0, 0), (128, 128, 128), (255, 255, 255)
_LONG = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 128, 128), (128, 255, 128), (128, 128, 255),
         (255, 255, 0), (255, 0, 255), (0, 255, 255), (255, 128, 0), (128, 255, 0), (0, 128, 255),
         (255, 0, 128), (0, 255, 128), (128, 0, 255), (128, 128, 0))
_SHORT = {4: ((255, 255, 128), (255, 128, 255), (128, 255, 128), (128, 128, 255)),
          5: ((255, 255, 128), (255, 128, 255), (128, 255, 255), (255, 128, 128), (128, 255, 128))}
MAX_TYPES = len(_LONG)


def type_colours(n_types: int) -> np.ndarray:
    """``uint8[K, 3]``: the colour of each object type (see the module note)."""
    return np.array(_SHORT.get(n_types, _LONG[:n_types]), dtype=np.uint8)


def palette(n_types: int) -> np.ndarray:
    """``uint8[3 + K, 3]``: the colour of each cell content, indexed floor, walls, agent, type 0 .. type K-1."""
    return np.concatenate([np.array([FLOOR_COLOUR, WALL_COLOUR, AGENT_COLOUR], dtype=np.uint8), type_colours(n_types)])


def render(planes: np.ndarray, colours: np.ndarray, cell_pixels: int) -> np.ndarray:
    """``uint8[N, 3, h*p, w*p]``: one-hot planes ``(N, C, h, w)`` (walls, agent, one per type, then any others,
    ignored) drawn in ``colours`` (:func:`palette`), each cell a ``p x p`` block of one colour."""
    n_contents = len(colours) - 1
    # A cell holds at most one of walls, agent, object (the agent collects what it steps on), so the sum of
    # plane * (index + 1) is the cell's palette index, 0 for the floor.
    codes = np.arange(1, n_contents + 1, dtype=np.uint8)[None, :, None, None]
    code = (planes[:, :n_contents] * codes).sum(1, dtype=np.uint8)
    img = colours[code].transpose(0, 3, 1, 2)  # (N, 3, h, w)
    p = cell_pixels
    return np.ascontiguousarray(img.repeat(p, 2).repeat(p, 3) if p > 1 else img)
