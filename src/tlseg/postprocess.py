"""Turning network maps into cell instances.

Two ways, chosen per model by :class:`InstanceConfig` ``use_flows`` (tuned on held-out
images at training time):

- **distance seeds** (:func:`maps_to_instances` without flows): foreground = probability
  above ``fg_threshold``; seeds = connected regions where the normalised distance is above
  ``seed_threshold`` — the distance drops to 0 on the border between two touching cells,
  so each cell keeps its own seed; a watershed on the inverted distance grows the seeds
  out to the foreground (scikit-image ``watershed``);
- **flows** (:func:`flows_to_instances`, as in Cellpose): every foreground pixel follows
  the predicted flow field for a fixed number of unit steps (bilinear interpolation with
  torch ``grid_sample``, all pixels at once); the points where pixels end up are
  clustered into sinks, and each pixel takes the label of its sink. Touching cells flow
  to different centres, so they separate even where no distance valley divides them.

The two combine (``flow_split``): distance seeds make the cells, and a cell whose pixels
flow to two or more large sinks is split along them (:func:`split_by_flows`). Distance
seeds alone are precise but merge touching cells; flows alone split them but also
fragment cells and keep debris; together they keep the precision and most of the splits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
import torch
import torch.nn.functional as F
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
    use_flows : bool
        Group pixels by following the flow maps (models with flows) instead of growing
        distance seeds; ``seed_threshold`` is then unused.
    flow_split : float
        With distance seeds, split a cell whose pixels flow to two or more sinks that
        each gather at least this fraction of a canonical cell's area (models with
        flows); 0 turns splitting off.
    min_mean_prob : float
        Drop cells whose mean foreground probability is below this (background enclosed
        by cells, faint debris: the network is unsure over the whole object, whereas a
        real cell is unsure only at its rim); 0 keeps every cell.
    """

    fg_threshold: float = 0.5
    seed_threshold: float = 0.5
    min_area_fraction: float = 0.08
    merge_threshold: float = 0.0
    use_flows: bool = False
    flow_split: float = 0.0
    min_mean_prob: float = 0.0

    def __post_init__(self):
        for name in ("fg_threshold", "seed_threshold"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {v}")
        if not 0.0 <= self.min_area_fraction < 1.0:
            raise ValueError(f"min_area_fraction must be in [0, 1), got {self.min_area_fraction}")
        if not 0.0 <= self.merge_threshold <= 1.0:
            raise ValueError(f"merge_threshold must be in [0, 1], got {self.merge_threshold}")
        if not 0.0 <= self.flow_split < 1.0:
            raise ValueError(f"flow_split must be in [0, 1), got {self.flow_split}")
        if not 0.0 <= self.min_mean_prob < 1.0:
            raise ValueError(f"min_mean_prob must be in [0, 1), got {self.min_mean_prob}")

    @property
    def needs_flows(self) -> bool:
        return self.use_flows or self.flow_split > 0


def instances_from_maps(maps: np.ndarray, *, canonical_diameter: float,
                        config: InstanceConfig, flow_labels: np.ndarray | None = None
                        ) -> np.ndarray:
    """Instance labels from a model's stacked maps (3 or 5, H, W) (see :mod:`tlseg.network`).

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
    labels = _grow_instances(prob, dist, canonical_diameter=canonical_diameter, config=config,
                             flow=flow, flow_labels=flow_labels)
    return drop_faint(labels, prob, config.min_mean_prob)


def drop_faint(labels: np.ndarray, prob: np.ndarray, min_mean_prob: float) -> np.ndarray:
    """``labels`` without the cells whose mean of ``prob`` is below ``min_mean_prob``,
    renumbered 1..n."""
    if min_mean_prob <= 0 or labels.max() == 0:
        return labels
    mean = ndi.mean(prob, labels, np.arange(1, labels.max() + 1))
    keep = np.concatenate([[False], mean >= min_mean_prob])
    new_ids = np.cumsum(keep).astype(labels.dtype) * keep
    return new_ids[labels]


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


def split_by_flows(labels: np.ndarray, flow_labels: np.ndarray, *, min_part: float
                   ) -> np.ndarray:
    """Split each cell whose pixels belong to two or more flow groups of >= ``min_part`` px.

    The pixels of the cell in smaller flow groups (or none) join the large group they
    touch (watershed fill inside the cell); the first large group keeps the cell's id.

    Examples
    --------
    >>> cells = np.array([[1, 1, 1, 1, 1, 1]]); groups = np.array([[3, 3, 3, 4, 4, 4]])
    >>> split_by_flows(cells, groups, min_part=3).tolist()
    [[1, 1, 1, 2, 2, 2]]
    >>> split_by_flows(cells, groups, min_part=4).tolist()
    [[1, 1, 1, 1, 1, 1]]
    """
    out = labels.copy()
    next_id = int(labels.max()) + 1
    for i, sl in enumerate(ndi.find_objects(labels), start=1):
        if sl is None:
            continue
        cell = labels[sl] == i
        groups = np.where(cell, flow_labels[sl], 0)
        ids, counts = np.unique(groups[groups > 0], return_counts=True)
        large = ids[counts >= min_part]
        if len(large) < 2:
            continue
        parts = watershed(np.zeros(cell.shape, np.float32),
                          np.where(np.isin(groups, large), groups, 0), mask=cell)
        view = out[sl]
        for g in large[1:]:
            view[parts == g] = next_id
            next_id += 1
    return out


def follow_flows(fg: np.ndarray, flow: np.ndarray, n_steps: int) -> np.ndarray:
    """End points (N, 2) float32 (y, x) of the ``fg`` pixels after ``n_steps`` steps.

    Each step moves a point by the flow bilinearly interpolated at it (zero the flow
    outside the foreground, so that points stay on their cell).
    """
    h, w = fg.shape
    ys, xs = np.nonzero(fg)
    field = torch.from_numpy(np.ascontiguousarray(flow, np.float32))[None]
    pos = torch.from_numpy(np.stack([ys, xs], axis=1).astype(np.float32))
    scale = torch.tensor([2.0 / max(h - 1, 1), 2.0 / max(w - 1, 1)])
    upper = torch.tensor([h - 1.0, w - 1.0])
    for _ in range(n_steps):
        grid = (pos * scale - 1.0).flip(1)[None, None]  # grid_sample wants (x, y)
        step = F.grid_sample(field, grid, mode="bilinear", align_corners=True)[0, :, 0]
        pos = torch.minimum(torch.clamp_min(pos + step.T, 0.0), upper)
    return pos.numpy()


def flows_to_instances(fg: np.ndarray, flow: np.ndarray, *, canonical_diameter: float,
                       n_steps: float = 3.0, sink_radius: float = 0.1, stride: int = 2
                       ) -> np.ndarray:
    """Instance labels from a foreground mask and flow maps (2, H, W) at the canonical scale.

    Every ``stride``-th foreground pixel (in y and x; 2 is 4x faster than 1 and as
    accurate) follows the flow for ``n_steps`` canonical diameters of unit steps; end
    points within ``sink_radius`` canonical diameters of each other form one sink
    (connected components of the dilated end-point histogram), and sinks that gather
    fewer pixels than 5 % of a canonical cell are dropped. Pixels not followed take the
    label of the followed pixel that their flow points to; pixels left without a label
    join the cell they touch (watershed fill).

    Examples
    --------
    >>> from tlseg.targets import cell_flow
    >>> lab = np.zeros((30, 60), int); lab[5:25, 5:30] = 1; lab[5:25, 30:55] = 2
    >>> flow = np.zeros((2, 30, 60))
    >>> for i in (1, 2): flow[:, lab == i] = np.array(cell_flow(lab == i))[:, lab == i]
    >>> int(flows_to_instances(lab > 0, flow, canonical_diameter=20).max())
    2
    """
    h, w = fg.shape
    labels = np.zeros((h, w), np.int32)
    if not fg.any():
        return labels
    start = fg.copy()
    if stride > 1:
        start[:] = False
        start[::stride, ::stride] = fg[::stride, ::stride]
    end = follow_flows(start, flow * fg, n_steps=int(n_steps * canonical_diameter))
    iy = np.rint(end[:, 0]).astype(np.int64)
    ix = np.rint(end[:, 1]).astype(np.int64)
    reached = np.zeros(h * w, np.uint8)  # 1 byte a pixel: large images stay small
    reached[iy * w + ix] = 1
    radius = max(1, int(round(sink_radius * canonical_diameter)))
    near = ndi.maximum_filter(reached.reshape(h, w), size=2 * radius + 1) > 0
    del reached
    sinks, n = ndi.label(near)
    gathered = np.bincount(sinks[iy, ix], minlength=n + 1)
    keep = gathered >= max(3.0, 0.05 * np.pi * (canonical_diameter / 2) ** 2 / stride**2)
    keep[0] = False
    ids = np.where(keep, np.arange(n + 1), 0)
    ys, xs = np.nonzero(start)
    labels[ys, xs] = ids[sinks[iy, ix]]
    if stride > 1:
        # the other pixels take the label of the followed pixel one step down their flow
        ys, xs = np.nonzero(fg & ~start)
        ty = np.rint((ys + 1.5 * flow[0, ys, xs]) / stride).astype(np.int64) * stride
        tx = np.rint((xs + 1.5 * flow[1, ys, xs]) / stride).astype(np.int64) * stride
        ok = (ty >= 0) & (ty < h) & (tx >= 0) & (tx < w)
        labels[ys[ok], xs[ok]] = labels[ty[ok], tx[ok]] * fg[ty[ok], tx[ok]]
    if (labels[fg] == 0).any():
        labels = banded_watershed(np.zeros((h, w), np.float32), labels, fg,
                                  halo=3 * canonical_diameter)
    return labels


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
