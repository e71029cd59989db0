"""Label-image operations: resampling between scales, renumbering, a banded watershed.

The network works at a canonical cell size; instances made there are brought back to
the image's pixels here (:func:`upsample_labels`, :func:`resize_labels`), and numbered
by position (:func:`raster_order`) so that the same cells get the same ids run to run.
Training uses :func:`resize_labels` to bring masks to the canonical scale.
:func:`banded_watershed` floods large images in bands of rows to stay small in memory.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage.segmentation import watershed


def raster_order(labels: np.ndarray) -> np.ndarray:
    """Renumber instances 1..n by the top-left corner of their bounding box, row by row.

    Seeds are numbered in the order the watershed finds them, and float-level noise
    between runs (oneDNN's sums differ across processes) can change that order while the
    cells stay the same; numbered by position, the same cells get the same ids.

    Examples
    --------
    >>> raster_order(np.array([[0, 2], [1, 1]])).tolist()
    [[0, 1], [2, 2]]
    """
    boxes = ndi.find_objects(labels)
    present = [(b[0].start, b[1].start, i + 1) for i, b in enumerate(boxes) if b is not None]
    lut = np.zeros(len(boxes) + 1, dtype=np.int32)
    for new, (_, _, old) in enumerate(sorted(present), start=1):
        lut[old] = new
    return lut[labels]


def edge_ids(labels: np.ndarray) -> np.ndarray:
    """The ids (> 0, sorted) of the objects that touch the image's edge: cut by it.

    Examples
    --------
    >>> lab = np.zeros((5, 5), int); lab[0, 1] = 3; lab[2, 2] = 1; lab[4, 4] = 2
    >>> edge_ids(lab).tolist()
    [2, 3]
    """
    rim = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    return np.unique(rim[rim > 0])


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label image to ``shape`` (pixel centres aligned)."""
    if labels.shape == tuple(shape):
        return labels
    h, w = labels.shape
    ys = np.minimum(((np.arange(shape[0]) + 0.5) * h / shape[0]).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(shape[1]) + 0.5) * w / shape[1]).astype(np.int64), w - 1)
    return labels[ys[:, None], xs[None, :]]


def upsample_labels(labels: np.ndarray, prob: np.ndarray, shape: tuple[int, int], *,
                    fg_threshold: float) -> np.ndarray:
    """Instance labels made at the canonical scale, brought up to the image's ``shape``.

    Nearest-neighbour enlarging alone leaves staircase outlines, steps as large as the
    enlargement (4 px for HeLa's 110 px cells). Instead, as Cellpose does with its maps,
    the foreground probability is enlarged smoothly (bilinear) and thresholded at full
    size: each foreground pixel keeps its nearest-neighbour label, and the foreground that
    nearest-neighbour enlarging left unlabelled takes the label beside it (within one
    step). On held-out training images this raised mean AP .5:.95 from 0.558 to 0.563 and
    AP@0.75 from 0.611 to 0.622, AP@0.5 unchanged.

    Examples
    --------
    >>> lab = np.array([[0, 1, 1, 0]]); prob = np.array([[0.1, 0.9, 0.9, 0.1]], np.float32)
    >>> upsample_labels(lab, prob, (1, 8), fg_threshold=0.5).tolist()
    [[0, 0, 1, 1, 1, 1, 0, 0]]
    """
    h, w = shape
    sh, sw = labels.shape
    big = resize_labels(labels, shape)
    if big is labels:
        big = big.copy()
    t = torch.from_numpy(np.ascontiguousarray(prob, np.float32))[None, None]
    fg = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False)[0, 0].numpy()
    fg = fg > fg_threshold
    big[~fg] = 0
    fg &= big == 0  # foreground still without a label
    if fg.any():
        step = int(math.ceil(max(h / sh, w / sw)))
        grown = ndi.grey_dilation(big, size=(2 * step + 1, 2 * step + 1))
        big[fg] = grown[fg]
    return big


def banded_watershed(image: np.ndarray, markers: np.ndarray, mask: np.ndarray, *,
                     halo: float, band: int = 1024, max_pixels: int = 2048 * 2048
                     ) -> np.ndarray:
    """scikit-image ``watershed(image, markers, mask=mask)`` in bands of rows.

    The watershed needs about 30 bytes per pixel at once; on a 4096 x 4096 canonical
    image that alone would push the peak memory past 1.5 GB. Larger images than
    ``max_pixels`` are flooded in bands of ``band`` rows, each with ``halo`` rows of
    context above and below whose result is discarded. A pixel's label then equals the
    whole-image result unless the path from its seed leaves the band and its halo, i.e.
    for cells more than ``halo`` px from their seed (3 canonical diameters: none at the
    canonical scale).
    """
    h, w = markers.shape
    if h * w <= max_pixels or h <= band:
        return watershed(image, markers, mask=mask)
    halo = int(math.ceil(halo))
    out = np.zeros((h, w), np.int32)
    for y0 in range(0, h, band):
        y1 = min(y0 + band, h)
        a, b = max(y0 - halo, 0), min(y1 + halo, h)
        part = watershed(image[a:b], markers[a:b], mask=mask[a:b])
        out[y0:y1] = part[y0 - a:y1 - a]
    return out
