"""How much of a field's cell-like texture lies outside the cells counted: a check for
missed cells.

A model that meets cells unlike its training images (a confluent monolayer, a culture
it has never seen) does not fail loudly: it reads them as background, and the field is
counted low with nothing to show for it. What it leaves behind is texture. Cells, in
phase contrast, brightfield or DIC, have edges and grain; empty background has camera
noise. So the texture of the cells a model did find is the yardstick: where the
background away from every found cell is at least half as textured as their interiors,
over a patch of a cell's area or more, something was left uncounted.

:func:`textured_outside` marks those patches, :func:`uncounted_texture` sums them in
cell areas ``A`` and returns ``A / (n + A)`` for ``n`` cells counted: about the share of
the field's cells left out if every patch were cells. On the fields of
``benchmarks/uncounted_texture.py`` it is under 0.5 on 69 of the 70 where the model found
most cells (the other shows a channel's wall), and 0.61-0.99 on synthetic monolayers the
model reads as background and on an unseen neuronal culture (``docs/benchmarks.md``,
*Uncounted texture*). Patches that are not cells count too: a chip's wall, a well's
edge, a cloud of debris. A high value therefore says "look at the masks", not how many
cells were missed.

The texture is a band-pass of the image (Gaussians of ``BAND`` cell diameters, so
neither shading nor pixel noise counts), after a chip's lattice of posts or traps has
been subtracted as before the network (:func:`tlseg.inference.repeats.remove_pattern`),
its absolute value smoothed over ``SMOOTH`` diameters. Everything is measured in units
of the cell diameter, at the image's own resolution, or at 15 px a cell where cells are
larger (:func:`scipy.ndimage` filters, :func:`skimage.measure.label` for the patches).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..errors import TlsegError
from ..inference.labels import resize_labels
from ..inference.preprocess import rescale
from ..inference.repeats import remove_pattern

#: band-pass Gaussians, in cell diameters: finer than cells' grain, coarser than shading
BAND = (1 / 30, 4 / 30)
#: the texture map's smoothing, in cell diameters
SMOOTH = 0.1
#: background closer than this (cell diameters) to a found cell is its halo, not a miss
CLEARANCE = 0.2
#: background as textured as this share of the found cells' median interior is "cell-like"
TEXTURE_SHARE = 0.5
#: a patch must cover this many cell areas (a speck of debris does not)
MIN_PATCH = 1.0
#: :func:`uncounted_texture` from which a field is worth a look
FLAG = 0.5
#: cells are measured at this size or smaller (larger cells: the image is shrunk first;
#: at 30 px the values of benchmarks/uncounted_texture.py differ by at most 0.03)
WORK_DIAMETER = 15.0


def _working(image, labels, diameter) -> tuple[np.ndarray, np.ndarray, float]:
    """The checked inputs at the working resolution: the image (float32, a chip's lattice
    subtracted) and labels shrunk so that cells are at most ``WORK_DIAMETER`` px, and the
    diameter there."""
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.ndim != 2:
        raise TlsegError(f"uncounted_texture: expected a 2-D image, got shape {image.shape}")
    if labels.shape != image.shape:
        raise TlsegError(f"uncounted_texture: labels of shape {labels.shape} do not match "
                         f"the image's {image.shape}; pass the labels segmented from it")
    if not np.issubdtype(labels.dtype, np.integer):
        raise TlsegError(f"uncounted_texture: labels must be integers, got {labels.dtype}")
    if not diameter or not diameter > 0:
        raise TlsegError(f"uncounted_texture: diameter must be > 0 pixels, got {diameter}")
    # a chip's lattice of posts or traps is subtracted, as before the network
    # (:func:`tlseg.inference.repeats.remove_pattern`): it is texture, but not cells
    image = remove_pattern(image.astype(np.float32), float(diameter))
    factor = min(1.0, WORK_DIAMETER / float(diameter))
    if factor < 1.0:
        image = rescale(image, factor)
        labels = resize_labels(labels, image.shape)
        diameter = float(diameter) * factor
    return image.astype(np.float32, copy=False), labels, float(diameter)


def textured_outside(image: np.ndarray, labels: np.ndarray, diameter: float
                     ) -> tuple[np.ndarray | None, float]:
    """Patches of cell-like texture outside every found cell (module docstring).

    Parameters
    ----------
    image : ndarray (H, W)
        The transmitted-light image the labels were segmented from.
    labels : ndarray of int (H, W)
        Its cells, 0 = background.
    diameter : float
        The cell diameter the image was segmented at, in pixels.

    Returns
    -------
    patches : ndarray of bool or None
        The patches, at the working resolution (the image's, or shrunk to
        ``WORK_DIAMETER`` px a cell); None when there are no cell interiors to measure
        texture against.
    diameter : float
        The cell diameter at that resolution.
    """
    x, labels, d = _working(image, labels, diameter)
    cells = labels > 0
    interior = ndi.binary_erosion(cells, iterations=max(1, round(2 * d / 30)))
    if interior.sum() < 20:
        return None, d
    fine = ndi.gaussian_filter(x, BAND[0] * d) - ndi.gaussian_filter(x, BAND[1] * d)
    texture = ndi.gaussian_filter(np.abs(fine), SMOOTH * d)
    level = float(np.median(texture[interior]))
    clear = ndi.distance_transform_edt(~cells) >= CLEARANCE * d
    marked = clear & (texture > TEXTURE_SHARE * level)
    patches, n = ndi.label(marked)
    if n == 0:
        return marked, d
    sizes = np.bincount(patches.ravel())
    keep = sizes >= MIN_PATCH * np.pi / 4 * d * d
    keep[0] = False
    return keep[patches], d


def uncounted_texture(image: np.ndarray, labels: np.ndarray, diameter: float) -> float | None:
    """The share of a field's cell-like texture that lies outside the cells counted: a
    check for missed cells (module docstring).

    ``A / (n + A)``, with ``A`` the area of :func:`textured_outside`'s patches in cell
    areas and ``n`` the cells in ``labels``. A field over :data:`FLAG` (0.5) is worth a
    look at its masks: missed cells (a confluent monolayer, an unfamiliar culture), or a
    structure (a chip's wall, a well's edge) or debris.

    Parameters
    ----------
    image, labels, diameter
        As :func:`textured_outside`.

    Returns
    -------
    float in [0, 1], or None when no cell was found (nothing to measure against).

    Examples
    --------
    >>> import tlseg
    >>> field = tlseg.synthetic_field((256, 256), diameter=30, n_cells=40, seed=0)
    >>> truth = field["labels"]
    >>> round(uncounted_texture(field["tl"], truth, 30), 2)
    0.0
    >>> few = np.where(np.isin(truth, [1, 2, 3, 4]), truth, 0)   # 4 of the cells found
    >>> uncounted_texture(field["tl"], few, 30) > 0.5
    True
    """
    patches, d = textured_outside(image, labels, diameter)
    if patches is None:
        return None
    n = len(np.unique(labels[labels > 0]))
    missed = float(patches.sum()) / (np.pi / 4 * d * d)
    return round(missed / (n + missed), 4)


def uncounted_patches(image: np.ndarray, labels: np.ndarray, diameter: float) -> np.ndarray:
    """Where :func:`uncounted_texture` found cell-like texture outside the cells: the
    patches of :func:`textured_outside` as a boolean mask of the image's shape (all False
    when no cell was found to measure against). The plate report draws them for the
    wells it flags, and the napari widget shows them as a layer.

    Parameters
    ----------
    image, labels, diameter
        As :func:`textured_outside`.

    Examples
    --------
    >>> import tlseg
    >>> field = tlseg.synthetic_field((256, 256), diameter=30, n_cells=40, seed=0)
    >>> few = np.where(np.isin(field["labels"], [1, 2, 3, 4]), field["labels"], 0)
    >>> patches = uncounted_patches(field["tl"], few, 30)
    >>> patches.shape, bool((patches & (few > 0)).any())
    ((256, 256), False)
    """
    patches, _ = textured_outside(image, labels, diameter)
    if patches is None:
        return np.zeros(np.shape(image), bool)
    return resize_labels(patches.astype(np.uint8), np.shape(image)) > 0


def flagged(value) -> bool:
    """Whether an :func:`uncounted_texture` value is over :data:`FLAG`, worth a look at the
    masks; False for a field without a value (None, or NaN in a table).

    Examples
    --------
    >>> flagged(0.61), flagged(0.43), flagged(None), flagged(float("nan"))
    (True, False, False, False)
    """
    return value is not None and bool(np.isfinite(value)) and value > FLAG


__all__ = ["FLAG", "flagged", "textured_outside", "uncounted_patches", "uncounted_texture"]
