"""Turning instance labels into training targets (and the cell size of a label image).

Targets at the canonical scale, per pixel:

- ``fg``: 1 inside a cell, 0 in the background;
- ``dist``: distance to the cell's own border divided by that cell's largest distance
  (0 on borders and background, 1 at the centre). Touching cells get a valley of 0
  between them, which is what lets seeds split them;
- ``logsize``: log2(equivalent diameter of the pixel's cell / canonical diameter);
- ``valid``: 1 where the label is known. Pixels marked ``UNKNOWN`` (-1) in the labels —
  outside annotated ROIs, or far from any labelled cell in partially labelled data —
  are ignored by the loss.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

UNKNOWN = -1


def median_diameter(labels: np.ndarray, *, min_area: int = 16) -> float | None:
    """Median equivalent-circle diameter of the cells in a label image (None if empty)."""
    lab = np.where(labels > 0, labels, 0)
    areas = np.bincount(lab.ravel())[1:]
    areas = areas[areas >= min_area]
    if areas.size == 0:
        return None
    return float(np.median(2.0 * np.sqrt(areas / np.pi)))


def make_targets(labels: np.ndarray, *, canonical_diameter: float) -> np.ndarray:
    """Targets (4, H, W) float32: fg, dist, logsize, valid (see module docstring).

    Examples
    --------
    >>> lab = np.zeros((20, 20), int); lab[2:9, 2:9] = 1; lab[2:9, 9:16] = 2
    >>> t = make_targets(lab, canonical_diameter=8)
    >>> float(t[1, 5, 5]), float(t[1, 5, 8]) < 0.5   # centre of cell 1, its shared border
    (1.0, True)
    """
    labels = np.asarray(labels)
    out = np.zeros((4,) + labels.shape, dtype=np.float32)
    out[3] = labels != UNKNOWN
    lab = np.where(labels > 0, labels, 0).astype(np.int32)
    out[0] = lab > 0
    for i, sl in enumerate(ndi.find_objects(lab), start=1):
        if sl is None:
            continue
        # pad by one pixel so that the image border does not count as a cell border
        sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        cell = lab[sl] == i
        d = ndi.distance_transform_edt(cell)
        out[1][sl][cell] = d[cell] / d.max()
        diameter = 2.0 * np.sqrt(cell.sum() / np.pi)
        out[2][sl][cell] = np.log2(max(diameter, 1.0) / canonical_diameter)
    return out


def known_near_cells(labels: np.ndarray, *, margin: float) -> np.ndarray:
    """Mark background farther than ``margin`` px from any labelled cell as UNKNOWN.

    For partially labelled data (some cells left unlabelled): only the background next to
    labelled cells is trusted as background.
    """
    far = ndi.distance_transform_edt(labels == 0) > margin
    return np.where(far, UNKNOWN, labels)
