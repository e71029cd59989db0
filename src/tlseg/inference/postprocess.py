"""Turning network maps into cell instances.

Two ways, chosen per model by :class:`InstanceConfig` ``use_flows`` (tuned on held-out
images at training time):

- **distance seeds** (:func:`maps_to_instances` without flows): foreground = probability
  above ``fg_threshold``; seeds = connected regions where the normalised distance is above
  ``seed_threshold`` — the distance drops to 0 on the border between two touching cells,
  so each cell keeps its own seed; a watershed on the inverted distance grows the seeds
  out to the foreground (scikit-image ``watershed``);
- **flows** (:func:`tlseg.inference.flows.flows_to_instances`, as in Cellpose): every foreground
  pixel follows the predicted flow field to its cell's centre, and pixels that end up
  together form one cell. Touching cells flow to different centres, so they separate even
  where no distance valley divides them.

The two combine (``flow_split``): distance seeds make the cells, and a cell whose pixels
flow to two or more large sinks is split along them (:func:`tlseg.inference.flows.split_by_flows`).
Distance seeds alone are precise but merge touching cells; flows alone split them but
also fragment cells and keep debris; together they keep the precision and most of the
splits. Last, two filters drop objects that are not cells: faint ones (``min_mean_prob``)
and ones whose flows do not converge on them (``min_flow_coherence``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import relabel_sequential

from ..config import InstanceConfig
from .flows import flow_coherence, flows_to_instances, split_by_flows
from .labels import banded_watershed, edge_ids


def instances_from_maps(maps: np.ndarray, *, canonical_diameter: float,
                        config: InstanceConfig, flow_labels: np.ndarray | None = None
                        ) -> np.ndarray:
    """Instance labels from a model's stacked maps (3 or 5, H, W) (see :mod:`tlseg.inference.network`).

    ``flow_labels``: :func:`flows_to_instances` of the same foreground, when already
    computed (the threshold tuner reuses them across settings).
    """
    flow = maps[3:5] if maps.shape[0] >= 5 else None
    return maps_to_instances(maps[0], maps[1], canonical_diameter=canonical_diameter,
                             config=config, flow=flow, flow_labels=flow_labels)


def maps_to_instances(
    prob: np.ndarray,
    dist: np.ndarray,
    *,
    canonical_diameter: float,
    config: InstanceConfig = InstanceConfig(),
    flow: np.ndarray | None = None,
    flow_labels: np.ndarray | None = None,
) -> np.ndarray:
    """Instance labels (int32, 0 = background) from foreground and distance maps.

    Parameters
    ----------
    prob, dist : ndarray (H, W)
        Foreground probability and normalised distance, both in [0, 1], at the canonical
        scale.
    canonical_diameter : float
        Cell diameter in pixels that the maps are at; sets the minimum object size.
    flow : ndarray (2, H, W), optional
        Flow maps (y, x); needed when ``config.use_flows`` or ``config.flow_split``.
    flow_labels : ndarray (H, W), optional
        :func:`flows_to_instances` of the same foreground, when already computed.

    Examples
    --------
    >>> yy, xx = np.mgrid[:40, :60]
    >>> d = np.maximum(1 - np.hypot(yy - 20, xx - 15) / 10, 1 - np.hypot(yy - 20, xx - 34) / 10)
    >>> lab = maps_to_instances((d > 0).astype(float), d.clip(0), canonical_diameter=20)
    >>> int(lab.max())
    2
    """
    if config.min_flow_coherence > 0 and flow is None:
        raise ValueError("min_flow_coherence needs flow maps (a model with flows)")
    labels = _grow_instances(prob, dist, canonical_diameter=canonical_diameter, config=config,
                             flow=flow, flow_labels=flow_labels)
    labels = drop_faint(labels, prob, config.min_mean_prob)
    labels = drop_incoherent(labels, flow, config.min_flow_coherence)
    return drop_small_for_field(labels, config.min_area_of_median)


def keep_objects(labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``labels`` with only the ids where ``keep[id]`` is true, renumbered 1..n."""
    keep = np.concatenate([[False], keep])
    new_ids = np.cumsum(keep).astype(labels.dtype) * keep
    return new_ids[labels]


def drop_faint(labels: np.ndarray, prob: np.ndarray, min_mean_prob: float) -> np.ndarray:
    """``labels`` without the cells whose mean of ``prob`` is below ``min_mean_prob``,
    renumbered 1..n."""
    if min_mean_prob <= 0 or labels.max() == 0:
        return labels
    mean = ndi.mean(prob, labels, np.arange(1, labels.max() + 1))
    return keep_objects(labels, np.asarray(mean) >= min_mean_prob)


#: objects not cut by the image's edge that an image needs for a median object size
MIN_OBJECTS_FOR_MEDIAN = 10
#: ``min_area_of_median`` of fluorescent-nucleus models (``nuclei``, and those
#: ``tlseg train`` makes with subtractive background): 0.2 keeps 99.75 % of BBBC039's
#: annotated training nuclei (its annotation specks, under 0.15 of the median, aside) and
#: the two daughter nuclei of a mitosis in DSB2018 val (0.23 and 0.24 of their field's
#: median), which 0.25 drops (docs/benchmarks.md, *Accuracy of nuclei*)
NUCLEUS_SIZE_FLOOR = 0.2


def drop_small_for_field(labels: np.ndarray, fraction: float) -> np.ndarray:
    """``labels`` without the objects smaller than ``fraction`` of the median area of the
    field's objects, renumbered 1..n. Objects cut by the image's edge neither count in the
    median nor are dropped (their visible part says little of their size); with fewer
    than :data:`MIN_OBJECTS_FOR_MEDIAN` uncut objects the labels are left alone.

    Examples
    --------
    >>> lab = np.zeros((60, 60), np.int32)
    >>> for k in range(12):                        # twelve 4 x 4 nuclei and one 1 x 2 speck
    ...     lab[2 + 5 * (k // 6): 6 + 5 * (k // 6), 2 + 5 * (k % 6): 6 + 5 * (k % 6)] = k + 1
    >>> lab[30, 30:32] = 13
    >>> int(drop_small_for_field(lab, 0.25).max()), int(drop_small_for_field(lab, 0.1).max())
    (12, 13)
    """
    n = int(labels.max()) if labels.size else 0
    if fraction <= 0 or n == 0:
        return labels
    sizes = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    cut = np.isin(np.arange(1, n + 1), edge_ids(labels))
    uncut = sizes[~cut & (sizes > 0)]
    if len(uncut) < MIN_OBJECTS_FOR_MEDIAN:
        return labels
    return keep_objects(labels, cut | (sizes >= fraction * np.median(uncut)))


def drop_incoherent(labels: np.ndarray, flow: np.ndarray | None, min_coherence: float
                    ) -> np.ndarray:
    """``labels`` without the cells whose :func:`flow_coherence` is below
    ``min_coherence``, renumbered 1..n."""
    if min_coherence <= 0 or flow is None or labels.max() == 0:
        return labels
    return keep_objects(labels, flow_coherence(labels, flow) >= min_coherence)


def _grow_instances(prob, dist, *, canonical_diameter, config, flow, flow_labels):
    """Instances before the faint-cell filter (see :func:`maps_to_instances`)."""
    fg = prob > config.fg_threshold
    cell_area = np.pi * (canonical_diameter / 2) ** 2
    min_area = config.min_area_fraction * cell_area
    if config.needs_flows and flow_labels is None:
        if flow is None:
            raise ValueError("these instance settings need flow maps (a model with flows)")
        flow_labels = flows_to_instances(fg, flow, canonical_diameter=canonical_diameter)
    if config.use_flows:
        return _finish(flow_labels.copy(), dist, min_area, config.merge_threshold)
    seeds, n = ndi.label((dist > config.seed_threshold) & fg)
    if n == 0:
        return np.zeros(prob.shape, np.int32)
    # seeds too small to be a cell core are noise; drop them before growing
    sizes = np.bincount(seeds.ravel())
    small = sizes < max(2.0, 0.1 * min_area)
    small[0] = False
    seeds[small[seeds]] = 0
    labels = banded_watershed(-dist, seeds, fg, halo=3 * canonical_diameter)
    split = config.flow_split * cell_area
    return _finish(labels, dist, min_area, config.merge_threshold,
                   flow_labels=flow_labels if split > 0 else None, split=split)



def _finish(labels: np.ndarray, dist: np.ndarray, min_area: float, merge: float, *,
            flow_labels: np.ndarray | None = None, split: float = 0.0) -> np.ndarray:
    """Ridge merge and flow split (optional), drop objects under ``min_area``, relabel."""
    if merge > 0:
        labels = merge_across_ridges(labels, dist, merge)
    if flow_labels is not None:
        labels = split_by_flows(labels, flow_labels, min_part=split)
    sizes = np.bincount(labels.ravel())
    too_small = sizes < min_area
    too_small[0] = False
    labels[too_small[labels]] = 0
    return relabel_sequential(labels)[0].astype(np.int32, copy=False)



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
    # per-cell peak distance (ndimage.maximum would sort full-size copies: 13x slower and
    # a few hundred MB more on a 4096 x 4096 image)
    cells = labels > 0
    peak = np.zeros(n, np.float64)
    np.maximum.at(peak, labels[cells], dist[cells])
    del cells
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
    roots = np.array([root(i) for i in range(n)], dtype=np.int32)
    return roots[labels]
