"""Correcting a segmentation: pure functions on label images (no GUI inside).

Every function takes an instance-label image and returns a NEW one (the input is never
modified), so a GUI keeps undo by keeping the previous arrays. Labels: 0 = background,
1.. = cells, ``UNKNOWN`` (-1) = not annotated (see :mod:`tlseg.training.targets`).

Examples
--------
>>> lab = np.zeros((8, 8), np.int32); lab[1:7, 1:7] = 1
>>> halves = split_along_line(lab, (0, 4), (7, 4))
>>> sorted(np.unique(halves).tolist())
[0, 1, 2]
>>> int(merge(halves, [1, 2]).max())
1
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.draw import line as draw_line
from skimage.segmentation import relabel_sequential as _relabel
from skimage.segmentation import watershed

from ..training.targets import UNKNOWN


def _check(labels: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise ValueError(f"labels must be a 2-D integer array, got {labels.dtype} {labels.shape}")
    if mask is not None and np.shape(mask) != labels.shape:
        raise ValueError(f"brush mask shape {np.shape(mask)} differs from labels {labels.shape}")
    return labels.astype(np.int32, copy=True)


def paint(labels: np.ndarray, mask: np.ndarray, cell: int | None = None) -> np.ndarray:
    """Paint ``mask`` into ``cell`` (amend an outline outward); a new cell if ``cell`` is None."""
    out = _check(labels, mask)
    if cell is None:
        cell = int(out.max()) + 1
    out[np.asarray(mask, bool)] = cell
    return out


def erase(labels: np.ndarray, mask: np.ndarray, cell: int | None = None) -> np.ndarray:
    """Set ``mask`` to background, only inside ``cell`` if given (amend an outline inward)."""
    out = _check(labels, mask)
    m = np.asarray(mask, bool)
    if cell is not None:
        m &= out == cell
    out[m] = 0
    return out


def paint_background(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mark ``mask`` as known background (removes cells and unknown pixels there)."""
    return erase(labels, mask)


def mark_unknown(labels: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Mark ``mask`` as not annotated: the loss will ignore it."""
    out = _check(labels, mask)
    out[np.asarray(mask, bool)] = UNKNOWN
    return out


def delete(labels: np.ndarray, cells) -> np.ndarray:
    """Remove whole cells (they become background)."""
    out = _check(labels)
    out[np.isin(out, np.atleast_1d(cells)) & (out > 0)] = 0
    return out


def merge(labels: np.ndarray, cells) -> np.ndarray:
    """Merge cells into the smallest of their ids."""
    cells = [int(c) for c in np.atleast_1d(cells) if c > 0]
    out = _check(labels)
    if len(cells) < 2:
        return out
    out[np.isin(out, cells)] = min(cells)
    return out


def split_along_line(labels: np.ndarray, start, end, *, width: int = 1) -> np.ndarray:
    """Split every cell the line from ``start`` to ``end`` (row, col) crosses into its parts.

    The pixels under the line go to the part on their side, so no gap remains.
    """
    out = _check(labels)
    h, w = out.shape
    rr, cc = draw_line(int(start[0]), int(start[1]), int(end[0]), int(end[1]))
    keep = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
    cut = np.zeros(out.shape, bool)
    cut[rr[keep], cc[keep]] = True
    if width > 1:
        cut = ndi.binary_dilation(cut, iterations=width // 2)
    next_id = int(out.max()) + 1
    for cell in np.unique(out[cut]):
        if cell <= 0:
            continue
        body = out == cell
        parts, n = ndi.label(body & ~cut)
        if n < 2:
            continue
        # pixels under the cut join the nearest part
        grown = watershed(np.zeros(out.shape), parts, mask=body)
        for k in range(2, n + 1):
            out[grown == k] = next_id
            next_id += 1
    return out


def split_at_seeds(labels: np.ndarray, cell: int, seeds) -> np.ndarray:
    """Split ``cell`` into one cell per seed point (row, col): each pixel joins its nearest seed.

    Nearness is measured inside the cell (a flood from the seeds), so a part never jumps
    across background.
    """
    out = _check(labels)
    body = out == cell
    seeds = [tuple(map(int, s)) for s in seeds]
    if not body.any():
        raise ValueError(f"no cell {cell} in the labels")
    inside = [s for s in seeds if 0 <= s[0] < out.shape[0] and 0 <= s[1] < out.shape[1] and body[s]]
    if len(inside) < 2:
        raise ValueError("give at least two seed points inside the cell to split it")
    markers = np.zeros(out.shape, np.int32)
    for k, (r, c) in enumerate(inside, start=1):
        markers[r, c] = k
    parts = watershed(np.zeros(out.shape, np.float32), markers, mask=body)
    next_id = int(out.max()) + 1
    for k in range(2, len(inside) + 1):
        out[parts == k] = next_id
        next_id += 1
    return out


def relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber cells 1..N keeping background (0) and unknown (-1) as they are."""
    out = _check(labels)
    cells = np.where(out > 0, out, 0)
    seq = _relabel(cells)[0].astype(np.int32)
    seq[out == UNKNOWN] = UNKNOWN
    return seq
