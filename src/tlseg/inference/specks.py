"""Opaque specks: particles of debris that block the light, not cells.

Dust, precipitate and fragments on the plate or the optics are small dark particles. The
network reads some of them as small cells, and on a near-empty field (the low wells of a
dilution series) they can outnumber the cells. A cell, in phase contrast, DIC or
brightfield, refracts light: its outline or relief has parts brighter than the background
around it, or its inside is about as bright as that background. A particle that absorbs the
light is darker than the background throughout, and it does not bend light into a bright
halo around it as a phase-contrast cell does.

:func:`opaque_objects` marks the objects that are all of these:

- darker than the background around them on average by at least ``min_darkness`` times
  the field's noise (the robust SD of the image less its local mean over the background,
  :func:`tlseg.inference.flat.background_noise`); the background around an object is the
  median of a ring ``RING`` pixels wide around it, other objects left out;
- without a bright part: the 90th percentile of the object is under that background plus
  ``MAX_BRIGHT`` times the noise;
- without a bright halo: the 90th percentile of the ring is under that background plus
  ``MAX_HALO`` times the noise;
- smaller than ``MAX_AREA`` canonical cell areas (a cell-sized dark object can be a cell
  seen out of focus or a dense clump of cells);
- not cut by the image's edge (a cell cut by the edge can show only its dark side).

:func:`drop_opaque` removes them. Both run at the canonical scale, after the network and
the flat filter. A field with too little background to measure its noise is left as it is.
On the real images of ``benchmarks/false_cells.py`` (the ``tl`` train and val splits and
the 33 aisegcell-s10 fields, 5,853 objects) it drops 2 objects, neither an annotated cell
(``docs/decisions.md``, *Speck filter for opaque debris*).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from .flat import field_noise
from .postprocess import keep_objects

# the setting transmitted-light models use (InstanceConfig.opaque_darkness)
OPAQUE_DARKNESS = 12.0
MAX_BRIGHT = 2.0  # noise SDs over the background that the 90th percentile must stay under
MAX_HALO = 2.5  # and that the 90th percentile of the ring around it must stay under
MAX_AREA = 1.0  # canonical cell areas
RING = 8  # canonical px: the ring around an object that its background is read in
CLEAR = 2  # canonical px kept between that ring and every object
MIN_RING = 10  # ring pixels needed to read the background around an object


def opaque_objects(labels: np.ndarray, image: np.ndarray, prob: np.ndarray, *,
                   min_darkness: float, canonical_diameter: float,
                   noise: float | None = None) -> np.ndarray:
    """Boolean per object 1..n: an opaque speck (module docstring). All False where the
    background cannot be measured or ``min_darkness`` is 0.

    ``image`` is the field at the canonical scale (cells ``canonical_diameter`` px
    across), ``prob`` the network's foreground probability on the same grid, ``noise``
    the field's background noise (:func:`tlseg.inference.flat.field_noise`; measured
    when omitted).
    """
    n = int(labels.max(initial=0))
    opaque = np.zeros(n, bool)
    if n == 0 or min_darkness <= 0:
        return opaque
    image = np.asarray(image, dtype=np.float32)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    small = areas < MAX_AREA * np.pi / 4 * canonical_diameter**2
    if not small.any():
        return opaque
    if noise is None:
        noise = field_noise(labels, image, prob)[1]
    if noise is None:
        return opaque
    occupied = ndi.binary_dilation(labels > 0, iterations=CLEAR)
    h, w = labels.shape
    for i, sl in enumerate(ndi.find_objects(labels), 1):
        if sl is None or not small[i - 1]:
            continue
        if sl[0].start == 0 or sl[1].start == 0 or sl[0].stop == h or sl[1].stop == w:
            continue  # cut by the edge
        box = tuple(slice(max(s.start - RING - 2, 0), s.stop + RING + 2) for s in sl)
        mask = labels[box] == i
        ring = ndi.binary_dilation(mask, iterations=RING) & ~occupied[box]
        if ring.sum() < MIN_RING:
            continue
        inside, outside = image[box][mask], image[box][ring]
        around = float(np.median(outside))
        opaque[i - 1] = (inside.mean() < around - min_darkness * noise
                         and np.percentile(inside, 90) < around + MAX_BRIGHT * noise
                         and np.percentile(outside, 90) < around + MAX_HALO * noise)
    return opaque


def drop_opaque(labels: np.ndarray, image: np.ndarray, prob: np.ndarray, *,
                min_darkness: float, canonical_diameter: float,
                noise: float | None = None) -> np.ndarray:
    """``labels`` without the objects of :func:`opaque_objects`, renumbered 1..n;
    unchanged when ``min_darkness`` is 0.

    Examples
    --------
    A dark particle is dropped; a cell of the same size beside it, dark at its rim and
    bright inside, is kept:

    >>> rng = np.random.default_rng(0)
    >>> image = rng.normal(100, 2, (120, 200)).astype(np.float32)
    >>> yy, xx = np.mgrid[:120, :200]
    >>> speck = np.hypot(yy - 60, xx - 50) < 8
    >>> image[speck] = 40
    >>> cell = np.hypot(yy - 60, xx - 140) < 8
    >>> rim = cell & ~(np.hypot(yy - 60, xx - 140) < 5)
    >>> image[rim] -= 30
    >>> image[cell & ~rim] += 20
    >>> labels = np.zeros(image.shape, np.int32)
    >>> labels[speck] = 1
    >>> labels[cell] = 2
    >>> prob = (labels > 0).astype(np.float32)
    >>> kept = drop_opaque(labels, image, prob, min_darkness=12.0, canonical_diameter=30)
    >>> int(kept.max()), bool(kept[60, 140])
    (1, True)
    """
    if min_darkness <= 0 or labels.max(initial=0) == 0:
        return labels
    found = opaque_objects(labels, image, prob, min_darkness=min_darkness,
                           canonical_diameter=canonical_diameter, noise=noise)
    return keep_objects(labels, ~found) if found.any() else labels


__all__ = ["drop_opaque", "opaque_objects"]
