"""Turning network maps into cell instances (seeded watershed).

Foreground = probability above ``fg_threshold``. Seeds = connected regions where the
normalised distance is above ``seed_threshold``: the distance drops to 0 on the border
between two touching cells, so each cell keeps its own seed. A watershed on the inverted
distance grows the seeds out to the foreground (scikit-image ``watershed``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential, watershed


@dataclass(frozen=True)
class InstanceConfig:
    """Thresholds that turn maps into instances (tuned on held-out training images).

    Attributes
    ----------
    fg_threshold : float
        Foreground probability above which a pixel belongs to a cell.
    seed_threshold : float
        Normalised distance above which a pixel is a seed (cell core).
    min_area_fraction : float
        Objects smaller than this fraction of a canonical cell's area are dropped.
    merge_threshold : float
        Merge neighbours whose border's mean distance exceeds this fraction of the lower
        of their peak distances; 0 turns merging off.
    """

    fg_threshold: float = 0.5
    seed_threshold: float = 0.5
    min_area_fraction: float = 0.08
    merge_threshold: float = 0.0

    def __post_init__(self):
        for name in ("fg_threshold", "seed_threshold"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {v}")
        if not 0.0 <= self.min_area_fraction < 1.0:
            raise ValueError(f"min_area_fraction must be in [0, 1), got {self.min_area_fraction}")
        if not 0.0 <= self.merge_threshold <= 1.0:
            raise ValueError(f"merge_threshold must be in [0, 1], got {self.merge_threshold}")


def maps_to_instances(
    prob: np.ndarray,
    dist: np.ndarray,
    *,
    canonical_diameter: float,
    config: InstanceConfig = InstanceConfig(),
) -> np.ndarray:
    """Instance labels (int32, 0 = background) from foreground and distance maps.

    Parameters
    ----------
    prob, dist : ndarray (H, W)
        Foreground probability and normalised distance, both in [0, 1], at the canonical
        scale.
    canonical_diameter : float
        Cell diameter in pixels that the maps are at; sets the minimum object size.

    Examples
    --------
    >>> yy, xx = np.mgrid[:40, :60]
    >>> d = np.maximum(1 - np.hypot(yy - 20, xx - 15) / 10, 1 - np.hypot(yy - 20, xx - 34) / 10)
    >>> lab = maps_to_instances((d > 0).astype(float), d.clip(0), canonical_diameter=20)
    >>> int(lab.max())
    2
    """
    fg = prob > config.fg_threshold
    min_area = config.min_area_fraction * np.pi * (canonical_diameter / 2) ** 2
    seeds, n = ndi.label((dist > config.seed_threshold) & fg)
    if n == 0:
        return np.zeros(prob.shape, np.int32)
    # seeds too small to be a cell core are noise; drop them before growing
    sizes = np.bincount(seeds.ravel())
    small = sizes < max(2.0, 0.1 * min_area)
    small[0] = False
    seeds[small[seeds]] = 0
    labels = watershed(-dist, seeds, mask=fg)
    if config.merge_threshold > 0:
        labels = merge_across_ridges(labels, dist, config.merge_threshold)
    sizes = np.bincount(labels.ravel())
    too_small = sizes < min_area
    too_small[0] = False
    labels[too_small[labels]] = 0
    return relabel_sequential(labels)[0].astype(np.int32)


def merge_across_ridges(labels: np.ndarray, dist: np.ndarray, threshold: float) -> np.ndarray:
    """Merge touching cells whose shared border runs along a distance ridge, not a valley.

    For each pair of 4-connected neighbouring cells, the mean ``dist`` over their border
    pixels is compared with the lower of the two cells' peak ``dist``; pairs above
    ``threshold`` times that peak are merged (union-find, strongest ridge first).

    Examples
    --------
    >>> lab = np.array([[1, 1, 2, 2]]); d = np.array([[0.5, 0.9, 0.9, 0.5]])
    >>> merge_across_ridges(lab, d, 0.5).tolist()
    [[1, 1, 1, 1]]
    >>> merge_across_ridges(lab, np.array([[0.9, 0.1, 0.1, 0.9]]), 0.5).tolist()
    [[1, 1, 2, 2]]
    """
    labels = np.asarray(labels)
    pairs, values = [], []
    for a, b, da, db in ((labels[:, :-1], labels[:, 1:], dist[:, :-1], dist[:, 1:]),
                         (labels[:-1], labels[1:], dist[:-1], dist[1:])):
        m = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.stack([np.minimum(a[m], b[m]), np.maximum(a[m], b[m])], axis=1))
        values.append((da[m] + db[m]) / 2)
    pairs, values = np.concatenate(pairs), np.concatenate(values)
    if len(pairs) == 0:
        return labels
    uniq, inverse = np.unique(pairs, axis=0, return_inverse=True)
    inverse = inverse.ravel()
    border = np.bincount(inverse, values) / np.bincount(inverse)
    n = int(labels.max()) + 1
    peak = ndi.maximum(dist, labels, index=np.arange(n))
    lower_peak = np.minimum(peak[uniq[:, 0]], peak[uniq[:, 1]])
    ratio = border / np.maximum(lower_peak, 1e-6)
    parent = np.arange(n)

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for k in np.argsort(-ratio):
        if ratio[k] <= threshold:
            break
        ri, rj = root(uniq[k, 0]), root(uniq[k, 1])
        if ri != rj:
            parent[rj] = ri
    roots = np.array([root(i) for i in range(n)])
    return roots[labels]
