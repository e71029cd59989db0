"""Training labels from a plate's own label-free cells and nuclear stain, with no human
input: what :func:`tlseg.calibrate` learns from (:func:`calibration_labels`).

- a label-free cell holding exactly one nucleus stays a cell;
- a label-free object holding no nucleus and lying entirely farther than one cell
  diameter from every nucleus is background (debris, structures, well edges), and so is
  every other pixel that far from every nucleus;
- a cell holding two or more nuclei (touching cells read as one) is split at its
  nuclei: each of its pixels goes to the nearest of them it can reach inside the cell
  (:func:`split_at_nuclei`);
- a nucleus outside every label-free object marks a cell the model missed. Where the
  nuclei are packed, the pixels in no label-free object (or in one holding no nucleus)
  that are nearer to it than to any other nucleus become that cell
  (:func:`seed_missed`): in a confluent monolayer, which a model may read as background
  throughout, these regions tile the field and give every cell an outline. Around a
  lone missed nucleus nothing tells the outline, and what lies near it stays unknown;
- an object without a nucleus near one, and the rest of what lies near a nucleus, are
  *unknown* to the loss.

:func:`nucleus_match` counts how a site's cells and nuclei pair up, the score the
calibrated model's instance settings are tuned on.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential, watershed

from ..analysis.measure import centres_per_cell, nuclei_per_cell, nucleus_centres
from .targets import UNKNOWN

#: a missed cell's region reaches at most this fraction of a cell diameter beyond its
#: nucleus: in a packed field its neighbours' regions stop it first, even where the
#: diameter is under-estimated by half
SEED_REACH = 1.0
#: ... and is kept when at most this fraction of its rim borders free pixels
OPEN_RIM = 0.25


def calibration_labels(cells: np.ndarray, nuclei: np.ndarray, *, diameter: float,
                       split: bool = True, seed: bool = True) -> np.ndarray:
    """Training labels from label-free cells and nuclei (see the module docstring).

    Parameters
    ----------
    cells, nuclei : ndarray (H, W) of int
        Label-free cells and nuclei of one site, 0 = background.
    diameter : float
        Cell diameter in pixels: background must be farther than this from every
        nucleus.
    split : bool
        Split the cells that hold several nuclei at them (:func:`split_at_nuclei`);
        without, they are unknown.
    seed : bool
        Give each nucleus outside every label-free object a cell (:func:`seed_missed`);
        without, what lies near it is unknown.

    Returns
    -------
    ndarray of int32 (H, W)
        Cell ids (> 0), background (0) and unknown (-1).

    Examples
    --------
    >>> cells = np.zeros((60, 60), int)
    >>> cells[5:15, 5:15] = 1; cells[5:15, 40:50] = 2; cells[40:50, 40:50] = 3
    >>> nuclei = np.zeros_like(cells); nuclei[8:12, 8:12] = 1
    >>> labels = calibration_labels(cells, nuclei, diameter=10)
    >>> int(labels[10, 10]), int(labels[10, 45]), int(labels[45, 45]), int(labels[10, 20])
    (1, 0, 0, -1)
    """
    counts = nuclei_per_cell(cells, nuclei)
    far = ndi.distance_transform_edt(nuclei == 0) > diameter
    labels = np.where(far, 0, UNKNOWN).astype(np.int32)
    ids = np.arange(len(counts))
    one = ids[(counts == 1) & (ids > 0)]
    several = ids[(counts >= 2) & (ids > 0)]
    # an object without a nucleus is background only if all of it is far from nuclei
    if cells.max() > 0:
        near = ndi.maximum(~far, cells, index=ids[1:]) if len(ids) > 1 else np.zeros(0)
        doubtful = ids[1:][(counts[1:] == 0) & (near > 0)]
        labels[np.isin(cells, np.concatenate([doubtful, several]))] = UNKNOWN
    keep = np.isin(cells, one)
    labels[keep] = cells[keep]
    if split and len(several):
        parts = split_at_nuclei(np.where(np.isin(cells, several), cells, 0), nuclei)
        inside = parts > 0
        labels[inside] = parts[inside] + int(cells.max())
    if seed:
        missed = seed_missed(cells, nuclei, diameter=diameter)
        new = missed > 0
        labels[new] = missed[new] + int(labels.max(initial=0))
    return labels


def nucleus_homes(cells: np.ndarray,
                  nuclei: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The nuclei's ids, their centres rounded to the nearest pixel ((N, 2) y, x) and the
    label-free object holding each centre (0: none), in label order.

    >>> cells = np.zeros((5, 9), int); cells[:, :4] = 3
    >>> nuclei = np.zeros_like(cells); nuclei[1:4, 1:3] = 1; nuclei[1:4, 6:8] = 2
    >>> [a.tolist() for a in nucleus_homes(cells, nuclei)]
    [[1, 2], [[2, 2], [2, 6]], [3, 0]]
    """
    ids = np.unique(nuclei[nuclei > 0])
    yx = np.rint(nucleus_centres(nuclei)).astype(np.int64)
    return ids, yx, cells[yx[:, 0], yx[:, 1]]


def seed_missed(cells: np.ndarray, nuclei: np.ndarray, *, diameter: float) -> np.ndarray:
    """A cell for each nucleus whose centre lies outside every label-free object, where
    its neighbours tell its outline: the free pixels (in no object, or in an object that
    holds no nucleus: a fragment of a cell) that are nearer to that nucleus than to any
    other missed one (their Voronoi regions, from scipy's distance transform), at most
    ``SEED_REACH`` x ``diameter`` beyond it, kept only when at most ``OPEN_RIM`` of the
    region's rim borders free pixels outside every region rather than another region, a
    cell holding a nucleus or the image's edge. In a packed field the regions meet and
    tile it; a lone nucleus's region is a disc in free space and is left out (unknown):
    its outline would be a guess.

    Returns labels numbered 1..n over the seeded cells, 0 elsewhere.

    Examples
    --------
    Two touching cells the model missed, nuclei side by side, between two label-free
    cells: each nucleus gets the part of the gap nearer to it.

    >>> cells = np.zeros((7, 24), int); cells[:, :3] = 1; cells[:, 21:] = 2
    >>> nuclei = np.zeros_like(cells); nuclei[2:5, 6:9] = 1; nuclei[2:5, 14:17] = 2
    >>> nuclei[3, 0] = 3; nuclei[3, 23] = 4  # the label-free cells' own nuclei
    >>> seed_missed(cells, nuclei, diameter=14)[3].tolist()
    [0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0]
    >>> lone = np.zeros((40, 40), int); lone[18:21, 18:21] = 1  # a nucleus in free space
    >>> int(seed_missed(np.zeros_like(lone), lone, diameter=14).max())
    0
    """
    ids, _, home = nucleus_homes(cells, nuclei)
    lost = ids[home == 0]
    if len(lost) == 0:
        return np.zeros(cells.shape, np.int32)
    free = (cells == 0) | ~np.isin(cells, home[home > 0])
    # each free pixel goes to the nearest missed nucleus: the cells the model found, with
    # their nuclei, are there already
    dist, (iy, ix) = ndi.distance_transform_edt(~np.isin(nuclei, lost), return_indices=True)
    region = np.where(free & (dist <= SEED_REACH * diameter), nuclei[iy, ix], 0)
    # a rim pixel is open where a 4-neighbour is free and in no region
    cross = ndi.generate_binary_structure(2, 1)
    outside = np.pad(free & (region == 0), 1, constant_values=False)
    near_free = ndi.binary_dilation(outside, cross)[1:-1, 1:-1]
    inner = ndi.grey_erosion(region, footprint=cross, mode="nearest")
    outer = ndi.grey_dilation(region, footprint=cross, mode="nearest")
    rim = (region > 0) & ((inner != region) | (outer != region) | near_free)
    n = int(nuclei.max()) + 1
    open_rim = np.bincount(region[rim & near_free], minlength=n)
    all_rim = np.bincount(region[rim], minlength=n)
    closed = np.flatnonzero(open_rim <= OPEN_RIM * np.maximum(all_rim, 1))
    region[~np.isin(region, closed[closed > 0])] = 0
    return relabel_sequential(region)[0].astype(np.int32)


def split_at_nuclei(cells: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    """Split each cell at the nuclei whose centres it holds: a watershed from those
    nuclei on the distance to the nearest of them, flooding only the cell (scikit-image
    ``watershed``), so each pixel goes to the nearest nucleus it can reach inside the cell.

    Returns labels numbered 1..n over the parts; the pixels of a cell that no nucleus
    reaches, and the cells without a nucleus, are 0.

    Examples
    --------
    >>> cells = np.zeros((5, 12), int); cells[1:4, 1:11] = 7
    >>> nuclei = np.zeros_like(cells); nuclei[2, 2:4] = 1; nuclei[2, 8:10] = 2
    >>> split_at_nuclei(cells, nuclei)[2].tolist()
    [0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 0]
    """
    ids, yx, home = nucleus_homes(cells, nuclei)
    if len(ids) == 0 or cells.max() == 0:
        return np.zeros(cells.shape, np.int32)
    lut = np.zeros(int(nuclei.max()) + 1, np.int64)
    lut[ids] = home
    # a nucleus marks the cell that holds its centre, with its pixels in that cell
    markers = np.where((nuclei > 0) & (lut[nuclei] == cells) & (cells > 0), nuclei, 0)
    housed = home > 0
    markers[yx[housed, 0], yx[housed, 1]] = ids[housed]
    parts = np.zeros(cells.shape, np.int64)
    for cell, box in enumerate(ndi.find_objects(cells), start=1):
        if box is None:
            continue
        mask = cells[box] == cell
        seeds = np.where(mask, markers[box], 0)
        if seeds.any():
            flooded = watershed(ndi.distance_transform_edt(seeds == 0), seeds, mask=mask)
            parts[box][mask] = flooded[mask]
    return relabel_sequential(parts)[0].astype(np.int32)


def nucleus_match(cells: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """How cells and nuclei pair up: matched (cells holding exactly one nucleus centre),
    cells holding none, and nuclei left unmatched (outside every cell, or the second and
    later nucleus of a cell), as an int array of 3.

    ``centres`` are (N, 2) positions (y, x) in ``cells``' pixels
    (:func:`~tlseg.analysis.measure.centres_per_cell`).

    Examples
    --------
    >>> cells = np.zeros((10, 10), int); cells[1:4, 1:4] = 1; cells[6:9, 6:9] = 2
    >>> cells[1:4, 6:9] = 3
    >>> nucleus_match(cells, np.array([[2, 2], [7, 7], [7, 8], [5, 5]])).tolist()
    [1, 1, 2]
    """
    per = centres_per_cell(cells, centres)
    return np.array([(per[1:] == 1).sum(), (per[1:] == 0).sum(),
                     per[0] + np.clip(per[1:] - 1, 0, None).sum()], np.int64)


__all__ = ["calibration_labels", "nucleus_homes", "nucleus_match", "seed_missed",
           "split_at_nuclei"]
