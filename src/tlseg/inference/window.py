"""Where in an image to read the cell size: the window the diameter estimate looks at.

The automatic diameter estimate (:func:`tlseg.inference.diameter.estimate_diameter`) runs the
network on one window of the image, not all of it. The centre is the natural window,
but in a sparse field (the low-density wells of a dilution series, a near-empty site)
the centre can hold no cell at all, and the estimate then reads background texture or
noise: on a 1536² synthetic field with its cells in one corner, ``tl-cells`` estimated
~300 px for cells of 16-45 px. So the window is placed where the image has structure:
:func:`structure_map` marks, on a coarse grid, the blocks whose texture stands out from
the background's by more than the noise (shading, even a corner that falls to black, is
smooth and stays unmarked), and :func:`pick_window` keeps the centre unless
another window holds at least twice its structure.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

from .preprocess import rescale

#: longest side of the coarse grid the structure is measured on
MAX_GRID = 512
#: a window off centre must hold this many times the centre's structure to be chosen
PREFER_CENTRE = 2.0


def structure_map(image: np.ndarray, *, max_grid: int = MAX_GRID) -> tuple[np.ndarray, int]:
    """Blocks of ``image`` whose texture stands out from the background's by more than
    the noise.

    Texture is the root mean square, over ``2 f + 1`` pixels around each block of ``f`` x
    ``f`` pixels, of the image less its local mean over as many (which a linear ramp
    equals), capped at 2.5 robust SDs (``f`` makes the longest side at most ``max_grid``
    blocks). A block counts as structure where its texture exceeds the local background
    texture (the median of tiles of 1/8 of the grid, interpolated) by more than 4 robust
    SDs (1.4826 x the median absolute deviation) of all blocks, and has such a neighbour
    (an opening with a 2 x 2 square drops lone noisy blocks). Cells, bright or dark, in
    transmitted light or fluorescence, have edges and grain; flat background and camera
    noise do not, and neither does shading, however steep: a corner vignetted to black
    is smooth (block means departing from a smoothed background would mark it, and send
    the window to an empty corner).

    Returns the boolean block map and ``f``.

    Examples
    --------
    >>> image = np.zeros((600, 600), np.float32)
    >>> image[500:520, 40:60] = 10.0
    >>> grid, f = structure_map(image, max_grid=200)
    >>> f, grid.shape, bool(grid[166:174, 12:21].any()), bool(grid[50, 150])
    (3, (200, 200), True, False)
    """
    h, w = image.shape
    f = max(1, math.ceil(max(h, w) / max_grid))
    hb, wb = h // f, w // f
    x = np.asarray(image, dtype=np.float32)
    k = 2 * f + 1
    # the local mean of a ramp is its centre value: subtracting it leaves grain and edges
    detail = x - ndi.uniform_filter(x, k, mode="reflect")
    # capped at 2.5 robust SDs: a lone outlier of heavy-tailed camera noise must not
    # light up every window it falls in
    cap = 2.5 * 1.4826 * float(np.median(np.abs(detail[::f, ::f])))
    if cap > 0:
        detail = np.clip(detail, -cap, cap)
    texture = np.sqrt(ndi.uniform_filter(detail * detail, k, mode="reflect"))
    texture = texture[f // 2 : hb * f : f, f // 2 : wb * f : f]
    residual = texture - _tile_median(texture, max(4, max(hb, wb) // 8))
    mad = float(np.median(np.abs(residual - np.median(residual))))
    if mad == 0.0:  # mostly perfectly flat: any texture is structure
        marked = residual > 1e-6 * (float(texture.max()) + 1e-12)
    else:
        marked = residual > 4 * 1.4826 * mad
    # lone blocks are noise (heavy-tailed camera noise passes any threshold somewhere)
    return ndi.binary_opening(marked, structure=np.ones((2, 2), bool)), f


def _tile_median(values: np.ndarray, tile: int) -> np.ndarray:
    """The median of each ``tile`` x ``tile`` tile of ``values``, interpolated back to
    its shape: a background that a cell (a few percent of a tile) does not move."""
    h, w = values.shape
    th, tw = math.ceil(h / tile), math.ceil(w / tile)
    padded = np.pad(values, ((0, th * tile - h), (0, tw * tile - w)), mode="edge")
    medians = np.median(padded.reshape(th, tile, tw, tile), axis=(1, 3))
    if medians.size == 1:
        return np.full_like(values, medians.item())
    full = ndi.zoom(medians, tile, order=1, mode="nearest", grid_mode=True)
    return full[:h, :w]


def pick_window(structure: np.ndarray, side: int, *,
                prefer_centre: float | None = None) -> tuple[int, int]:
    """Top-left corner (in blocks) of the ``side`` x ``side``-block window to read.

    The central window, unless the window holding the most structure holds more than
    ``prefer_centre`` (default :data:`PREFER_CENTRE`) times as much (in dense fields every
    window is alike, so the estimate stays where it always was; in sparse ones it moves
    to the cells).

    Examples
    --------
    >>> s = np.zeros((100, 100), bool)
    >>> s[80:90, 5:15] = True          # the only cells, in a corner
    >>> pick_window(s, 30)
    (60, 0)
    >>> s[45:55, 45:55] = True         # as many at the centre: the centre stays
    >>> pick_window(s, 30)
    (35, 35)
    """
    hb, wb = structure.shape
    sy, sx = min(side, hb), min(side, wb)
    cy, cx = (hb - sy) // 2, (wb - sx) // 2
    if sy == hb and sx == wb:
        return 0, 0
    table = np.pad(structure.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = table[sy:, sx:] - table[:-sy, sx:] - table[sy:, :-sx] + table[:-sy, :-sx]
    best = np.unravel_index(int(np.argmax(sums)), sums.shape)
    factor = PREFER_CENTRE if prefer_centre is None else prefer_centre
    if math.isinf(factor):  # the centre whatever it holds
        return cy, cx
    if sums[best] > factor * sums[cy, cx]:
        return int(best[0]), int(best[1])
    return cy, cx


def estimation_crop(image: np.ndarray, scale: float, window: int,
                    structure: tuple[np.ndarray, int] | None = None) -> np.ndarray:
    """The part of ``image`` that is ``window`` pixels a side after rescaling by ``scale``,
    rescaled (smaller where the image is smaller): placed by :func:`pick_window` on
    ``structure`` (:func:`structure_map`'s result), or central without it."""
    h, w = image.shape
    side = math.ceil(window / scale)
    y0, x0 = max(0, (h - side) // 2), max(0, (w - side) // 2)
    if structure is not None and side < max(h, w):
        grid, f = structure
        by, bx = pick_window(grid, max(1, side // f))
        y0, x0 = min(by * f, max(0, h - side)), min(bx * f, max(0, w - side))
    return rescale(image[y0 : y0 + side, x0 : x0 + side], scale)
