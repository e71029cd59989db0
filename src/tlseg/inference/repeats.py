"""Objects on a repeating pattern: microfluidic posts, traps and walls, not cells.

A chip's posts or traps are copies of one shape laid out on a lattice, and a channel wall
continues unchanged along itself; all are seen through the same optics. So the image
around such an object reappears, shifted by a fixed vector, elsewhere in the field. The
image around a cell does not: each cell has its own outline and texture, and cells lie
where they settled. Two steps:

1. :func:`lattice_vectors`: the image's autocorrelation (high-passed, computed with FFTs,
   normalised by the overlap so that it is a correlation coefficient at every shift) has
   peaks at the shifts that map the pattern onto itself. Its local maxima at shifts of at
   least ``MIN_SHIFT`` canonical cell diameters that reach ``min_peak`` are the field's
   lattice vectors. A field of cells seldom has one (the highest such peak on the real
   cell images of ``benchmarks/false_cells.py`` is near 0.5, the median near 0.1); then
   nothing further is done.
2. :func:`repeat_similarity`: each object, with a rim of ``RIM`` pixels, is compared
   (normalised cross-correlation, which ignores brightness and contrast) with the same
   pixels shifted by each lattice vector, either way. An object whose pixels repeat
   (``min_similarity``) is part of the pattern. A cell among the posts is kept: one
   vector away lies a post or background, not another copy of it.

:func:`drop_repeated` removes them, after the network. Before it,
:func:`remove_pattern` subtracts the pattern itself: the median of the image's lattice
copies (:func:`pattern_component`), kept only where the pixel's neighbourhood matches it,
so that the network sees the cells without the posts and reads neither the gaps between
traps as cells nor a cell and a post as one object. All of it runs at the canonical
scale, and only on fields with a lattice.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import fft
from scipy import ndimage as ndi
from skimage.feature import peak_local_max
from skimage.segmentation import expand_labels

from .postprocess import keep_objects

REPEAT_SIMILARITY = 0.8  # the setting transmitted-light models use (InstanceConfig)
MIN_PEAK = 0.5  # autocorrelation a shift needs to be a lattice vector
MIN_SHIFT = 0.8  # lattice vectors are at least this many canonical diameters long
ACF_SIDE = 512  # the autocorrelation is computed on at most the central 512² pixels, at
#                half resolution for fields over 512 px (the central 1024²)
MAX_SHIFT = 0.5  # lattice vectors reach at most this fraction of the compared image
MAX_VECTORS = 6  # strongest lattice vectors tested (each also reversed)
HALF_SIDE = 0.75  # the compared square reaches this many canonical diameters either way
PATCH = 32  # samples a side of the compared square
MIN_OVERLAP = 0.5  # share of an object's samples whose shifted copy must lie in the image
MIN_SAMPLES = 16  # fewest samples compared
RIM = 3  # canonical pixels around an object compared with it
CHUNK = 512  # objects compared at once
ROWS = 256  # rows of the pattern computed at once (24 copies of them in memory)
MIN_COPIES = 3  # fewest lattice copies of a pixel inside the image for a pattern value
LOCAL_SIGMA = 0.3  # window (canonical diameters) in which a pixel matches the pattern
LOCAL_CORR = (0.5, 0.8)  # local correlation at which the pattern is kept from 0 to all
NOISE_SIGMA = 1.0  # canonical px: the Gaussian that takes pixel noise out of comparisons


def _block_mean(image: np.ndarray, k: int) -> np.ndarray:
    """``image`` shrunk k times by averaging k x k blocks (a partial last block is cut)."""
    h, w = image.shape[0] // k, image.shape[1] // k
    return image[:h * k, :w * k].reshape(h, k, w, k).mean(axis=(1, 3))


def _detrend(image: np.ndarray, canonical_diameter: float) -> np.ndarray:
    """The image less its smooth background (a Gaussian of 2 canonical diameters,
    computed on blocks of a quarter diameter and enlarged back)."""
    image = np.asarray(image, np.float32)
    h, w = image.shape
    k = max(1, min(int(canonical_diameter // 4), h // 4, w // 4))
    smooth = ndi.gaussian_filter(_block_mean(image, k), 2 * canonical_diameter / k,
                                 mode="nearest")
    smooth = ndi.zoom(smooth, (h / smooth.shape[0], w / smooth.shape[1]), order=1,
                      mode="nearest", grid_mode=True)
    return image - smooth[:h, :w]


def _denoise(image: np.ndarray) -> np.ndarray:
    """``image`` with its pixel noise taken out (a Gaussian of ``NOISE_SIGMA`` px), for
    comparing images: white noise lowers every correlation by its share of the variance,
    and on a noisy field a chip's lattice of posts correlated under 0.5."""
    return ndi.gaussian_filter(image, NOISE_SIGMA, mode="nearest")


def _highpass(image: np.ndarray, canonical_diameter: float) -> np.ndarray:
    """:func:`_detrend`, without pixel noise (:func:`_denoise`), scaled to unit
    variance."""
    hp = _denoise(_detrend(image, canonical_diameter))
    return hp / max(float(hp.std()), 1e-6)


def lattice_vectors(image: np.ndarray, canonical_diameter: float, *,
                    min_peak: float = MIN_PEAK) -> tuple[np.ndarray, np.ndarray]:
    """Shifts (k, 2) that map the image's pattern onto itself, and their correlations.

    Local maxima of the autocorrelation at shifts of at least ``MIN_SHIFT`` canonical
    diameters and at most half the image along each axis (within the ellipse of those
    half-sides; the image is its central ``ACF_SIDE`` pixels a side,
    at half resolution when it is larger); one of each pair (t, -t) is returned,
    strongest first and, among equally strong ones, shortest first.
    """
    hp = np.asarray(image, np.float32)
    f = 2 if max(hp.shape) > ACF_SIDE else 1  # half resolution for large fields
    if f == 2:
        hp = _block_mean(hp, 2)
    y0, x0 = max(0, (hp.shape[0] - ACF_SIDE) // 2), max(0, (hp.shape[1] - ACF_SIDE) // 2)
    hp = hp[y0:y0 + ACF_SIDE, x0:x0 + ACF_SIDE]  # the centre is enough for a lattice
    hp = _highpass(hp, canonical_diameter / f)
    h, w = hp.shape
    shape = (2 * h, 2 * w)  # zero padding: a linear, not circular, correlation
    spec = fft.rfft2(hp, shape)
    acf = fft.irfft2(spec * np.conj(spec), shape)
    del spec
    my, mx = int(h * MAX_SHIFT), int(w * MAX_SHIFT)
    acf = np.concatenate([acf[-my:], acf[:my + 1]])
    acf = np.concatenate([acf[:, -mx:], acf[:, :mx + 1]], axis=1)  # shift 0 at (my, mx)
    ty, tx = np.ogrid[-my:my + 1, -mx:mx + 1]
    acf /= (h - np.abs(ty)) * (w - np.abs(tx)) * max(float(hp.var()), 1e-12)
    # shifts within the ellipse of half-sides (my, mx), not the box: at a corner of the
    # box the overlap is a quarter of the image and noise alone makes peaks; a ridge
    # (a straight edge) then peaks at the ellipse
    acf[np.hypot(ty / max(my, 1), tx / max(mx, 1)) > 1] = -1.0
    # local maxima of the whole correlation, so that the slope of the central peak (a
    # smooth image correlates with itself at small shifts) is never taken for a lattice
    peaks = peak_local_max(acf, min_distance=max(2, int(canonical_diameter / 4 / f)),
                           threshold_abs=min_peak, exclude_border=False)
    py, px = peaks[:, 0] - my, peaks[:, 1] - mx
    keep = ((np.hypot(py, px) * f >= MIN_SHIFT * canonical_diameter)
            & ((py > 0) | ((py == 0) & (px > 0))))  # one of t, -t
    peaks = peaks[keep]
    # strongest first (to 0.05), the shortest first among equals
    strength = np.round(acf[peaks[:, 0], peaks[:, 1]] / 0.05)
    peaks = peaks[np.lexsort((np.hypot(py[keep], px[keep]), -strength))][:MAX_VECTORS]
    if len(peaks) == 0:
        return np.zeros((0, 2)), np.zeros(0)
    # sub-pixel position: a parabola through each peak and its neighbours, per axis
    pad = np.pad(acf, 1, mode="edge")
    c = pad[peaks[:, 0] + 1, peaks[:, 1] + 1]
    offsets = []
    for dy, dx in ((1, 0), (0, 1)):
        lo = pad[peaks[:, 0] + 1 - dy, peaks[:, 1] + 1 - dx]
        hi = pad[peaks[:, 0] + 1 + dy, peaks[:, 1] + 1 + dx]
        curve = lo - 2 * c + hi
        offsets.append(np.where(curve < 0, 0.5 * (lo - hi) / np.where(curve < 0, curve, -1), 0))
    vectors = (peaks - [my, mx] + np.clip(np.stack(offsets, 1), -0.5, 0.5)) * f
    return vectors, acf[peaks[:, 0], peaks[:, 1]]

def repeated_objects(labels: np.ndarray, image: np.ndarray, canonical_diameter: float, *,
                     min_similarity: float = 0.8, min_peak: float = MIN_PEAK,
                     vectors: np.ndarray | None = None) -> np.ndarray:
    """Which objects of ``labels`` lie on a repeating pattern of ``image``: those whose
    :func:`repeat_similarity` reaches ``min_similarity``.

    Parameters
    ----------
    labels : ndarray of int (H, W)
        Objects numbered 1..n, at the canonical scale.
    image : ndarray (H, W)
        The image they were found in, at the same scale.
    canonical_diameter : float
        Cell diameter in pixels at that scale.
    min_similarity : float
        Normalised cross-correlation between an object's surroundings and the same
        surroundings one lattice vector away above which it is part of the pattern.
    min_peak : float
        Autocorrelation a shift needs to be a lattice vector (:func:`lattice_vectors`).
    vectors : ndarray (k, 2), optional
        The image's lattice vectors when already found (then ``min_peak`` is unused).

    Returns
    -------
    ndarray of bool (n,)
        True for the objects (id - 1) on the pattern.

    Examples
    --------
    >>> yy, xx = np.mgrid[:240, :240]
    >>> image = np.ones((240, 240), np.float32)
    >>> labels = np.zeros((240, 240), np.int32)
    >>> for i, (y, x) in enumerate([(y, x) for y in range(30, 240, 60) for x in range(30, 240, 60)]):
    ...     r = np.hypot(yy - y, xx - x)
    ...     image -= 0.5 * np.exp(-0.5 * ((r - 12) / 2) ** 2)  # a dark ring: one post
    ...     labels[r < 12] = i + 1
    >>> cell = np.hypot(yy - 60, xx - 60) < 12  # a cell between four posts
    >>> image[cell] += np.sin(xx[cell] / 2.0)
    >>> labels[cell] = 17
    >>> repeated_objects(labels, image, 30).astype(int)
    array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0])
    """
    return repeat_similarity(labels, image, canonical_diameter, min_peak=min_peak,
                             vectors=vectors) >= min_similarity


def repeat_similarity(labels: np.ndarray, image: np.ndarray, canonical_diameter: float, *,
                      min_peak: float = MIN_PEAK,
                      vectors: np.ndarray | None = None) -> np.ndarray:
    """For each object (id - 1), the highest normalised cross-correlation between its
    pixels (with a rim of ``RIM`` px) and the same pixels one lattice vector away, either
    way; -1 where the field has no lattice (:func:`lattice_vectors`) or too little of
    the shifted copy lies inside the image. ``vectors``: as in :func:`repeated_objects`."""
    n = int(labels.max(initial=0))
    best = np.full(n, -1.0)
    if vectors is None:
        vectors, _ = lattice_vectors(image, canonical_diameter, min_peak=min_peak)
    if n == 0 or len(vectors) == 0:
        return best
    hp = _highpass(image, canonical_diameter)
    h, w = hp.shape
    ids = np.arange(1, n + 1)
    ones = np.ones(labels.shape, np.float32)
    centres = np.asarray(ndi.center_of_mass(ones, labels, ids)).reshape(n, 2)
    radius = np.sqrt(np.asarray(ndi.sum_labels(ones, labels, ids)) / np.pi)
    half = np.maximum(HALF_SIDE * canonical_diameter, 1.5 * radius)[:, None]
    grid = np.linspace(-1.0, 1.0, PATCH)
    gy, gx = (g.ravel()[None] * half for g in np.meshgrid(grid, grid, indexing="ij"))

    def sample(points, sl, values, order):  # samples (len, PATCH²), and which lie inside
        ys, xs = points[:, :1] + gy[sl], points[:, 1:] + gx[sl]
        inside = (ys >= 0) & (ys <= h - 1) & (xs >= 0) & (xs <= w - 1)
        v = ndi.map_coordinates(values, [ys.ravel(), xs.ravel()], order=order,
                                mode="nearest").reshape(len(points), -1)
        return v, inside

    # the object and a rim of RIM px around it: what is compared
    grown = expand_labels(labels, RIM)
    for start in range(0, n, CHUNK):  # bounded memory: CHUNK objects at a time
        sl = slice(start, start + CHUNK)
        c, i = centres[sl], ids[sl]
        own_ids, own_inside = sample(c, sl, grown, 0)
        mine = (own_ids == i[:, None]) & own_inside
        own, _ = sample(c, sl, hp, 1)
        need = np.maximum(MIN_OVERLAP * mine.sum(axis=1), MIN_SAMPLES)
        for t in np.concatenate([vectors, -vectors]):
            other, inside = sample(c + t, sl, hp, 1)
            both = mine & inside
            count = both.sum(axis=1)
            k = np.maximum(count, 1)[:, None]
            a = np.where(both, own - (own * both).sum(1, keepdims=True) / k, 0)
            b = np.where(both, other - (other * both).sum(1, keepdims=True) / k, 0)
            norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
            sim = (a * b).sum(1) / np.maximum(norm, 1e-6)
            ok = count >= need
            best[sl] = np.where(ok, np.maximum(best[sl], sim), best[sl])
    return best


def drop_repeated(labels: np.ndarray, image: np.ndarray, canonical_diameter: float,
                  min_similarity: float, vectors: np.ndarray | None = None) -> np.ndarray:
    """``labels`` without the objects of :func:`repeated_objects`, renumbered 1..n;
    unchanged when ``min_similarity`` is 0."""
    if min_similarity <= 0 or labels.max(initial=0) == 0:
        return labels
    found = repeated_objects(labels, image, canonical_diameter, min_similarity=min_similarity,
                             vectors=vectors)
    return keep_objects(labels, ~found) if found.any() else labels


def lattice_shifts(vectors: np.ndarray) -> np.ndarray | None:
    """The shifts i·a + j·b (i, j in -2..2, not both 0) of the lattice spanned by the
    strongest vector ``a`` and the strongest one not parallel to it ``b``; None when
    every vector is parallel to ``a`` (a wall, a straight edge: a pattern in one
    direction only)."""
    a = vectors[0]
    for b in vectors[1:]:
        if abs(a[0] * b[1] - a[1] * b[0]) > 0.25 * np.hypot(*a) * np.hypot(*b):
            return np.array([i * a + j * b for i in range(-2, 3) for j in range(-2, 3)
                             if i or j])
    return None


def pattern_kind(vectors: np.ndarray) -> str:
    """What a field's lattice vectors (:func:`lattice_vectors`) say it holds: ``"none"``
    (no repeating pattern), ``"line"`` (a pattern along one direction: a channel wall, a
    well edge; the objects on it are dropped by the structure filter) or ``"lattice"``
    (two directions: a chip's posts or traps; also subtracted by :func:`remove_pattern`).

    >>> pattern_kind(np.zeros((0, 2)))
    'none'
    >>> pattern_kind(np.array([[0.0, 60.0], [0.0, 120.0]]))
    'line'
    >>> pattern_kind(np.array([[0.0, 60.0], [52.0, 30.0]]))
    'lattice'
    """
    if len(vectors) == 0:
        return "none"
    return "line" if lattice_shifts(vectors) is None else "lattice"


def pattern_component(image: np.ndarray, canonical_diameter: float, *,
                      min_peak: float = MIN_PEAK,
                      vectors: np.ndarray | None = None) -> np.ndarray | None:
    """The part of ``image`` that repeats on its lattice (posts, traps), or None when the
    field has no lattice (:func:`lattice_vectors`) or one in a single direction only (a
    wall, an edge: :func:`lattice_shifts`; those are left to :func:`drop_repeated`).

    At each pixel the median of the image less its smooth background (:func:`_detrend`)
    one lattice shift away, over the shifts of :func:`lattice_shifts` that fall inside
    the image (at least ``MIN_COPIES``), is the pattern as its copies show it; a cell,
    present in one or two copies, does not move a median. It is kept where the pixel's own neighbourhood (a Gaussian window of
    ``LOCAL_SIGMA`` canonical diameters) correlates with it, scaled from 0 at
    ``LOCAL_CORR[0]`` to 1 at ``LOCAL_CORR[1]``: where a cell hides or replaces the
    pattern nothing is subtracted, so no ghost of a post is drawn into it. Returned in
    the image's own units, ready to subtract (:func:`remove_pattern`). ``vectors``: as
    in :func:`repeated_objects`.

    Examples
    --------
    >>> yy, xx = np.mgrid[:240, :240]
    >>> posts = sum(np.exp(-0.5 * ((np.hypot(yy - y, xx - x) - 12) / 2) ** 2)
    ...             for y in range(30, 240, 60) for x in range(30, 240, 60))
    >>> cell = np.where(np.hypot(yy - 60, xx - 60) < 12, np.sin(xx / 2.0), 0)
    >>> image = (1 - 0.5 * posts + cell).astype(np.float32)
    >>> left = image - pattern_component(image, 30)
    >>> ring = np.abs(np.hypot(yy - 150, xx - 150) - 12) < 2  # where a post was
    >>> bool(np.ptp(left[ring]) < 0.2 * np.ptp(image[ring]))  # the post is gone
    True
    >>> inside = np.hypot(yy - 60, xx - 60) < 10  # the cell between four posts stays
    >>> bool(np.abs(left - image)[inside].max() < 0.05)
    True
    """
    if vectors is None:
        vectors, _ = lattice_vectors(image, canonical_diameter, min_peak=min_peak)
    if len(vectors) == 0:
        return None
    shifts = lattice_shifts(vectors)
    if shifts is None:
        return None
    hp = _detrend(image, canonical_diameter)
    h, w = hp.shape
    template = np.zeros_like(hp)
    for y0 in range(0, h, ROWS):  # bounded memory: ROWS rows at a time
        y1 = min(h, y0 + ROWS)
        yy, xx = np.mgrid[y0:y1, 0:w].astype(np.float32)
        copies = np.stack([ndi.map_coordinates(hp, [yy + sy, xx + sx], order=1,
                                               mode="constant", cval=np.nan)
                           for sy, sx in shifts])  # outside the image: NaN
        enough = np.isfinite(copies).sum(axis=0) >= MIN_COPIES
        copies[:, ~enough] = 0.0  # no pattern where too few copies lie inside
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            template[y0:y1] = np.nanmedian(copies, axis=0)
    sigma = LOCAL_SIGMA * canonical_diameter

    def g(a):
        return ndi.gaussian_filter(a, sigma, mode="nearest")

    a, b = _denoise(hp), _denoise(template)  # compared without pixel noise
    ma, mb = g(a), g(b)
    cov = g(a * b) - ma * mb
    var = np.maximum(g(a * a) - ma * ma, 0) * np.maximum(g(b * b) - mb * mb, 0)
    corr = cov / np.sqrt(np.maximum(var, 1e-12))
    lo, hi = LOCAL_CORR
    weight = np.clip((corr - lo) / (hi - lo), 0.0, 1.0)
    return weight * template


def remove_pattern(image: np.ndarray, canonical_diameter: float, *,
                   vectors: np.ndarray | None = None) -> np.ndarray:
    """``image`` less its :func:`pattern_component`; unchanged without a lattice."""
    pattern = pattern_component(image, canonical_diameter, vectors=vectors)
    return np.asarray(image, np.float32) if pattern is None else image - pattern
