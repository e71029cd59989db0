"""Example sites for ``report.html``: each site whole, and a zoom on its busiest part.

A plate image shrunk to a thumbnail hides what a user needs to judge the segmentation:
cells of 20 px in a 2304 px field become 3 px, and uneven illumination turns half of
it black or white. So each example is two panels: the whole site, shading flattened
for display (:func:`tlseg.inference.preprocess.display_gray`), with the cells tinted and a box
where the zoom is; and that box, about ``ZOOM_CELLS`` cell diameters a side around
where most cells were found, at native resolution or larger, with the outlines of the
cells (green) and nuclei (magenta).

For a site the check for missed cells flags (:mod:`tlseg.analysis.coverage`), the
patches of cell-like texture outside the cells it counted are drawn too (orange), and
the zoom goes where most of them lie: that is where a user tells missed cells from
debris, a structure or a well's edge.
"""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from scipy import ndimage as ndi
from skimage.segmentation import find_boundaries
from skimage.transform import resize

from ..inference.preprocess import display_gray

CELL, NUCLEUS, BOX = (0.2, 1.0, 0.3), (1.0, 0.3, 1.0), "#ffd21f"
UNCOUNTED = (1.0, 0.55, 0.0)  # cell-like texture outside the cells counted
ZOOM_CELLS = 10  # the zoom is this many cell diameters a side
PANEL = 360  # display pixels of each panel's longer side


def busiest_window(labels: np.ndarray, side: int) -> tuple[int, int]:
    """Top-left corner (y, x) of the ``side`` x ``side`` window that holds the most cell
    pixels (the image's centre when there are none)."""
    h, w = labels.shape
    side_y, side_x = min(side, h), min(side, w)
    fg = labels > 0
    if not fg.any():
        return (h - side_y) // 2, (w - side_x) // 2
    step = max(1, side // 16)
    coarse = fg[::step, ::step].astype(np.float32)
    box = (max(1, side_y // step), max(1, side_x // step))
    score = ndi.uniform_filter(coarse, box, mode="constant")
    cy, cx = np.unravel_index(int(np.argmax(score)), score.shape)
    y0 = int(np.clip(cy * step - side_y // 2, 0, h - side_y))
    x0 = int(np.clip(cx * step - side_x // 2, 0, w - side_x))
    # the best windows form a plateau (any that holds the whole cluster): centre the
    # chosen one on the cells it holds
    ys, xs = np.nonzero(fg[y0:y0 + side_y, x0:x0 + side_x])
    if not ys.size:
        return y0, x0
    y0 = int(np.clip(y0 + (ys.min() + ys.max()) // 2 - side_y // 2, 0, h - side_y))
    x0 = int(np.clip(x0 + (xs.min() + xs.max()) // 2 - side_x // 2, 0, w - side_x))
    return y0, x0


def _outlined(gray: np.ndarray, cells: np.ndarray, nuclei: np.ndarray | None,
              shape: tuple[int, int], uncounted: np.ndarray | None = None) -> np.ndarray:
    """RGB at display ``shape``: ``gray`` resampled, with the outlines of ``uncounted``
    (a boolean mask), ``cells`` and ``nuclei`` drawn at that resolution (so they stay one
    display pixel wide)."""
    rgb = np.repeat(resize(gray, shape, order=1)[..., None], 3, axis=2)
    for lab, colour in ((uncounted, UNCOUNTED), (cells, CELL), (nuclei, NUCLEUS)):
        if lab is not None:
            shown = resize(lab, shape, order=0, preserve_range=True, anti_aliasing=False)
            rgb[find_boundaries(shown.astype(np.int64), mode="inner")] = colour
    return rgb


def _display_shape(h: int, w: int, size: int) -> tuple[int, int]:
    k = size / max(h, w)
    return max(1, round(h * k)), max(1, round(w * k))


def example_figure(image: np.ndarray, cells: np.ndarray, nuclei: np.ndarray | None = None,
                   *, diameter: float | None = None, zoom_cells: int = ZOOM_CELLS,
                   size: int = PANEL, uncounted: np.ndarray | None = None) -> Figure:
    """The two panels of one example site (see the module's docstring).

    ``diameter``: the cell diameter the site was segmented at (input pixels); sets the
    zoom's side. Without it, the median area of ``cells`` gives it. ``uncounted``: a
    boolean mask of the image's shape, the cell-like texture outside the cells
    (:func:`tlseg.uncounted_patches`); drawn in orange, and the zoom goes where most of it is.
    """
    if cells.shape != image.shape:
        raise ValueError(f"masks of shape {cells.shape} for an image of shape {image.shape}")
    if nuclei is not None and nuclei.shape != image.shape:
        nuclei = None
    if uncounted is not None and (uncounted.shape != image.shape or not uncounted.any()):
        uncounted = None
    if not diameter and cells.max() > 0:
        areas = np.bincount(cells.ravel())[1:]
        diameter = 2 * np.sqrt(np.median(areas[areas > 0]) / np.pi)
    gray = display_gray(image)
    h, w = image.shape
    side = int(np.clip(round(zoom_cells * (diameter or 30)), 64, max(h, w)))
    y0, x0 = busiest_window(cells if uncounted is None else uncounted, side)
    sy, sx = min(side, h), min(side, w)
    whole = np.repeat(resize(gray, _display_shape(h, w, size), order=1)[..., None], 3, axis=2)
    for mask, colour in ((uncounted, UNCOUNTED), (cells, CELL)):
        if mask is not None:
            tint = resize(mask > 0, whole.shape[:2], order=0, anti_aliasing=False)
            whole[tint] = 0.6 * whole[tint] + 0.4 * np.array(colour)
    crop = (slice(y0, y0 + sy), slice(x0, x0 + sx))
    zoom = _outlined(gray[crop], cells[crop], None if nuclei is None else nuclei[crop],
                     _display_shape(sy, sx, size),
                     None if uncounted is None else uncounted[crop])
    fig = Figure(figsize=(6.6, 3.4 * max(h / w, sy / sx, 0.6)))
    left, right = fig.subplots(1, 2)
    left.imshow(whole, extent=(0, w, h, 0), interpolation="nearest")
    left.add_patch(Rectangle((x0, y0), sx, sy, fill=False, edgecolor=BOX, lw=1.2))
    left.set_title(f"whole site, {w} x {h} px", fontsize=8)
    right.imshow(zoom, extent=(x0, x0 + sx, y0 + sy, y0), interpolation="nearest")
    n_zoom = len(np.setdiff1d(np.unique(cells[crop]), [0]))
    right.set_title(f"zoom, {sx} x {sy} px: {n_zoom} cell{'' if n_zoom == 1 else 's'}",
                    fontsize=8)
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    right.spines[:].set_color(BOX)
    fig.tight_layout()
    return fig


__all__ = ["busiest_window", "example_figure"]
