"""Flow maps: following them to cell centres, and checking that cells agree with them.

Models with flows predict, at every cell pixel, the unit direction to its cell's centre
(the gradient of heat diffused from the centre, as in Cellpose; :mod:`tlseg.training.targets`).

- :func:`flows_to_instances`: every foreground pixel follows the flow field for a fixed
  number of unit steps (bilinear interpolation with torch ``grid_sample``, all pixels at
  once); the points where pixels end up are clustered into sinks, and each pixel takes
  the label of its sink. Touching cells flow to different centres, so they separate even
  where no distance valley divides them.
- :func:`split_by_flows`: split a cell made by distance seeds whose pixels flow to two or
  more large sinks.
- :func:`flow_coherence`: how well a cell's flows converge on it (gaps between cells read
  as cells have flows that point away, to the cells around them).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage as ndi
from skimage.segmentation import watershed

from .labels import banded_watershed


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
    >>> from tlseg.training.targets import cell_flow
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


def flow_coherence(labels: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Per cell (index id - 1): the mean cosine between the flow (2, H, W) at its pixels and
    their direction to the cell's centroid; 1 = every flow points at the centre.

    Examples
    --------
    >>> lab = np.zeros((9, 9), int); lab[2:7, 2:7] = 1
    >>> yy, xx = np.mgrid[:9, :9]; inward = np.stack([4 - yy, 4 - xx]).astype(float)
    >>> [round(float(c), 2) for c in flow_coherence(lab, inward)]
    [1.0]
    >>> [round(float(c), 2) for c in flow_coherence(lab, -inward)]
    [-1.0]
    """
    out = np.ones(int(labels.max()), np.float32)
    for i, sl in enumerate(ndi.find_objects(labels)):
        if sl is None:
            continue
        ys, xs = np.nonzero(labels[sl] == i + 1)
        dy, dx = ys.mean() - ys, xs.mean() - xs
        fy, fx = flow[0][sl][ys, xs], flow[1][sl][ys, xs]
        norm = np.hypot(dy, dx) * np.hypot(fy, fx)
        inside = norm > 0  # the centre pixel and flowless pixels have no direction
        cos = (fy * dy + fx * dx)[inside] / norm[inside]
        out[i] = cos.mean() if cos.size else 1.0
    return out
