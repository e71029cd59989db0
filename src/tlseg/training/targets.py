"""Turning instance labels into training targets (and the cell size of a label image).

Targets at the canonical scale, per pixel:

- ``fg``: 1 inside a cell, 0 in the background;
- ``dist``: distance to the cell's own border divided by that cell's largest distance
  (0 on borders and background, 1 at the centre). Touching cells get a valley of 0
  between them, which is what lets seeds split them;
- ``logsize``: log2(equivalent diameter of the pixel's cell / canonical diameter);
- ``valid``: 1 where the label is known, 0 where it is not: pixels marked ``UNKNOWN``
  (-1) in the labels — outside annotated ROIs, or far from any labelled cell in
  partially labelled data — are ignored by the loss. ``FG_ONLY`` (0.5) marks a cell cut
  by the edge of a ROI (it touches unknown pixels): it is a cell, but its shape beyond
  the edge is not known, so only its foreground counts; distance, size and flow targets
  computed from the part inside would be wrong;
- ``flow_y``, ``flow_x``: a unit vector pointing along the path to the cell's centre
  (0 in the background), as in Cellpose: heat is diffused from the centre pixel inside
  the cell and the flow is the normalised gradient of log(1 + heat). Following it moves
  every pixel of a cell to the same sink, however irregular the cell, and pixels of two
  touching cells to two different sinks (see :func:`tlseg.inference.flows.flows_to_instances`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..inference.labels import edge_ids

UNKNOWN = -1
FG_ONLY = 0.5  # ``valid`` of a cell cut by a ROI edge: only its foreground is known
N_TARGETS = 6  # fg, dist, logsize, valid, flow_y, flow_x


def cut_cells(labels: np.ndarray) -> np.ndarray:
    """Ids of the cells that touch an ``UNKNOWN`` pixel (cut by the edge of a ROI).

    Examples
    --------
    >>> lab = np.full((6, 8), UNKNOWN); lab[1:5, 1:7] = 0
    >>> lab[1:3, 0:3] = 1; lab[2:4, 4:6] = 2   # cell 1 crosses the ROI's left edge
    >>> cut_cells(lab).tolist()
    [1]
    """
    labels = np.asarray(labels)
    unknown = labels == UNKNOWN
    if not unknown.any():
        return np.zeros(0, dtype=labels.dtype)
    near = ndi.binary_dilation(unknown, structure=np.ones((3, 3), bool))
    return np.unique(labels[near & (labels > 0)])


def whole_cell_diameters(labels: np.ndarray, *, min_area: int = 16) -> np.ndarray:
    """Equivalent-circle diameters of the whole cells in a label image.

    Cells cut by the edge of a ROI (:func:`cut_cells`) would bias them low and are left out.
    """
    lab = np.where(labels > 0, labels, 0)
    areas = np.bincount(lab.ravel())[1:]
    areas[cut_cells(labels) - 1] = 0
    areas = areas[areas >= min_area]
    return 2.0 * np.sqrt(areas / np.pi)


def median_diameter(labels: np.ndarray, *, min_area: int = 16) -> float | None:
    """Median equivalent-circle diameter of the whole cells in a label image (None if none)."""
    d = whole_cell_diameters(labels, min_area=min_area)
    return float(np.median(d)) if d.size else None


def make_targets(labels: np.ndarray, *, canonical_diameter: float) -> np.ndarray:
    """Targets (6, H, W) float32: fg, dist, logsize, valid, flow_y, flow_x (module docstring).

    Examples
    --------
    >>> lab = np.zeros((20, 20), int); lab[2:9, 2:9] = 1; lab[2:9, 9:16] = 2
    >>> t = make_targets(lab, canonical_diameter=8)
    >>> float(t[1, 5, 5]), float(t[1, 5, 8]) < 0.5   # centre of cell 1, its shared border
    (1.0, True)
    >>> float(t[5, 5, 3]) > 0.9, float(t[5, 5, 8]) < -0.9  # flows point to each centre
    (True, True)
    """
    labels = np.asarray(labels)
    out = np.zeros((N_TARGETS,) + labels.shape, dtype=np.float32)
    out[3] = labels != UNKNOWN
    lab = np.where(labels > 0, labels, 0).astype(np.int32)
    out[0] = lab > 0
    cut = np.isin(lab, cut_cells(labels))
    out[3][cut] = FG_ONLY
    lab[cut] = 0  # no shape targets for cut cells
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
        fy, fx = cell_flow(cell)
        out[4][sl][cell] = fy[cell]
        out[5][sl][cell] = fx[cell]
    return out


def cell_flow(cell: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit flow (fy, fx) towards the centre of one cell given as a boolean mask.

    The centre is the cell pixel nearest the median of its coordinates; heat is released
    there at every step and spread by a 3x3 mean that is zero outside the cell, for
    2 x (height + width) steps. The flow is the gradient of log(1 + heat), normalised.
    """
    m = np.pad(cell, 1).astype(np.float64)
    ys, xs = np.nonzero(m)
    k = np.argmin((ys - np.median(ys)) ** 2 + (xs - np.median(xs)) ** 2)
    cy, cx = ys[k], xs[k]
    heat = np.zeros_like(m)
    for _ in range(2 * (m.shape[0] + m.shape[1])):
        heat[cy, cx] += 1.0
        heat = ndi.uniform_filter(heat, 3, mode="constant") * m
    t = np.log1p(heat)
    gy = np.zeros_like(t)
    gx = np.zeros_like(t)
    gy[1:-1] = t[2:] - t[:-2]
    gx[:, 1:-1] = t[:, 2:] - t[:, :-2]
    norm = np.hypot(gy, gx)
    norm[norm == 0] = 1.0
    return (gy / norm * m)[1:-1, 1:-1], (gx / norm * m)[1:-1, 1:-1]


def known_near_cells(labels: np.ndarray, *, margin: float) -> np.ndarray:
    """Mark background farther than ``margin`` px from any labelled cell as UNKNOWN.

    For partially labelled data (some cells left unlabelled): only the background next to
    labelled cells is trusted as background.
    """
    far = ndi.distance_transform_edt(labels == 0) > margin
    return np.where(far, UNKNOWN, labels)


def ignore_fragments(labels: np.ndarray, *, fraction: float) -> np.ndarray:
    """Mark labelled objects smaller than ``fraction`` of the median object area as UNKNOWN.

    For masks with annotation fragments: BBBC039's hold a few hundred specks of 10-20 px,
    most on the dark background at a nucleus's rim, each labelled as a nucleus of its own.
    Trained on, they teach a model to draw small objects beside real ones. Objects cut by
    the image border are kept (they are small because they are cut). The pixels become
    unknown rather than background, since a few may be real (micronuclei).

    Examples
    --------
    >>> lab = np.zeros((12, 12), int); lab[2:8, 2:8] = 1; lab[2:8, 8:12] = 2
    >>> lab[9, 3] = 3        # a 1-pixel speck
    >>> lab[0:2, 0:2] = 4    # small, but cut by the image border
    >>> np.unique(ignore_fragments(lab, fraction=0.15)).tolist()
    [-1, 0, 1, 2, 4]
    """
    labels = np.asarray(labels)
    areas = np.bincount(np.where(labels > 0, labels, 0).ravel())
    ids = np.flatnonzero(areas[1:]) + 1
    if fraction <= 0 or ids.size == 0:
        return labels
    small = ids[areas[ids] < fraction * np.median(areas[ids])]
    small = np.setdiff1d(small, edge_ids(labels))
    return np.where(np.isin(labels, small), UNKNOWN, labels)
