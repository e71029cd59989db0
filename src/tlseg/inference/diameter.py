"""How big are the cells? The automatic diameter estimate.

A model segments at its canonical scale, so an image must first be zoomed so that its
cells are ``canonical_diameter`` pixels across. When the user gives no ``--diameter``,
:func:`estimate_diameter` finds it in two stages, both on one window of the image
(:mod:`tlseg.inference.window` picks where): the network's size head reads the apparent size over a
ladder of zooms (:func:`size_head_diameter`), then segmenting at that reading and
measuring the cells found refines it (:func:`refine_diameter`), as Cellpose's size
model does. Measured by ``benchmarks/diameter_estimate.py``.
"""

from __future__ import annotations

import math
from typing import Protocol

import numpy as np

from .flat import drop_flat_as_set
from .postprocess import instances_from_maps
from .window import estimation_crop, structure_map


class Model(Protocol):
    """What the estimate needs of a :class:`tlseg.inference.model.Model` (which calls in
    here): its settings and its maps."""

    config: object

    def predict_maps(self, image: np.ndarray, **kwargs) -> np.ndarray: ...

# candidate cell diameters (input pixels) for the automatic estimate, half an octave apart
# (the size head is trained on +-1 octave around canonical)
DIAMETER_LADDER = tuple(float(12 * 2 ** (k / 2)) for k in range(11))  # 12 .. 384
# a size-head reading from rungs that saw fewer cells than this (foreground area over a
# canonical cell's) is weak evidence: a clump of small cells zoomed far out reads as one
# big cell, consistently over several rungs, and then loses to a reading that saw more
# cells and agrees within this many octaves (benchmarks/diameter_estimate.py)
WEAK_EVIDENCE_CELLS = 5.0
CONSISTENT_OCTAVES = 0.4


def estimate_diameter(model: Model, image: np.ndarray, *, window: int = 384,
                      refine: bool = True, calibrate: bool = True) -> float | None:
    """Estimate the cell diameter (input pixels) to segment an image at.

    A coarse estimate from the network's size head (:func:`size_head_diameter`) is
    refined, with ``refine``, by segmenting (:func:`refine_diameter`) and, with
    ``calibrate``, multiplied by the model's ``diameter_calibration`` (the factor that
    made segmenting at the estimate score best on held-out training images).
    Returns None when no cells are found at any scale. A taught model whose own
    estimate proved unreliable on its taught images returns its ``taught_diameter``
    instead (with ``calibrate``; without, the network's own reading).
    """
    if calibrate and model.config.taught_diameter:
        return float(model.config.taught_diameter)
    structure = structure_map(image)  # where the cells are: read by both stages
    d = size_head_diameter(model, image, window=window, structure=structure)
    if d is not None and refine:
        d = refine_diameter(model, image, d, structure=structure,
                            statistic=model.config.size_statistic)
    if d is not None and calibrate:
        d *= model.config.diameter_calibration
    return d


def refine_diameter(model: Model, image: np.ndarray, diameter: float, *, window: int = 768,
                    rounds: int = 2, min_cells: int = 3,
                    structure: tuple[np.ndarray, int] | None = None,
                    statistic: str = "area-weighted") -> float:
    """Refine a diameter estimate by segmenting at it and measuring the cells found.

    As Cellpose's size model does: a window (``window`` canonical pixels a
    side, central unless the cells are elsewhere: :mod:`tlseg.inference.window`) is segmented at
    the current estimate and the equivalent diameter of its
    instances' typical area becomes the next estimate (``statistic``:
    ``'area-weighted'``, :func:`typical_area`, or ``'robust'``, :func:`robust_area`; a
    model's ``size_statistic``) (each round moves at
    most 1.5x, all rounds together at most 2x). Cells still
    segment well when the estimate is off by a factor 1.5, so this corrects the size
    head where it reads a modality poorly (sparse brightfield fields, for one). With
    fewer than ``min_cells`` cells found the estimate is kept. ``structure``:
    :func:`tlseg.inference.window.structure_map` of ``image``, computed when not given.

    The statistic reads the objects that segmenting keeps after the model's flat filter
    (:mod:`tlseg.inference.flat`, when its ``flat_texture`` is on): a band of a well's
    wall or a bubble read as a few objects of several cell areas would otherwise pull
    the estimate up (Usiigaci val image set30, cells of 38.0 px: 50.8 px with them,
    40.8 px without, calibrated; ``docs/decisions.md``).
    """
    canon = model.config.canonical_diameter
    start = diameter
    if structure is None:
        structure = structure_map(image)
    for _ in range(rounds):
        crop = estimation_crop(image, canon / diameter, window, structure)
        if min(crop.shape) < 32:
            break
        maps = model.predict_maps(crop)
        labels = drop_flat_as_set(instances_from_maps(maps, canonical_diameter=canon,
                                                      config=model.config.instances),
                                  crop, maps, model.config)
        if labels.max() < min_cells:
            break
        area = SIZE_STATISTICS[statistic](np.bincount(labels.ravel())[1:])
        new = diameter * 2.0 * math.sqrt(area / math.pi) / canon
        new = float(np.clip(new, max(diameter / 1.5, start / 2),
                            min(diameter * 1.5, start * 2)))
        done = abs(math.log2(new / diameter)) < 0.05
        diameter = new
        if done:
            break
    return diameter


def size_head_diameter(model: Model, image: np.ndarray, *, window: int = 384,
                       structure: tuple[np.ndarray, int] | None = None) -> float | None:
    """Coarse estimate of the median cell diameter (input pixels) from the size head.

    The network's size head reads the apparent cell size (log2 of apparent over
    canonical diameter), but only within about an octave of canonical; far outside
    that its reading is meaningless. So a window (central unless the cells are
    elsewhere: :mod:`tlseg.inference.window`) is zoomed as if cells had
    each diameter of a ladder half an octave apart, and every rung gives an estimate
    ``rung * 2**reading``. Rungs within the head's range agree with each other, rungs
    outside do not: the three neighbouring rungs whose estimates agree best are
    averaged (in log space), unless they saw fewer than ``WEAK_EVIDENCE_CELLS``
    cells and another group that agrees within ``CONSISTENT_OCTAVES`` saw more.
    Returns None when no cells are found at any rung. ``structure``: as for
    :func:`refine_diameter`.
    """
    canon = model.config.canonical_diameter
    estimates: dict[int, float] = {}
    cells: dict[int, float] = {}  # foreground area in canonical cells
    if structure is None:
        structure = structure_map(image)
    for k, rung in enumerate(DIAMETER_LADDER):
        crop = estimation_crop(image, canon / rung, window, structure)
        if min(crop.shape) < 32:
            break
        maps = model.predict_maps(crop)
        prob, logsize = maps[0], maps[2]
        fg = prob > model.config.instances.fg_threshold
        if fg.sum() >= 0.25 * canon**2:
            estimates[k] = math.log2(rung) + float(np.median(logsize[fg]))
            cells[k] = float(fg.sum()) / (math.pi / 4 * canon**2)
    if not estimates:
        return None
    groups = []  # (spread, mean, fewest cells seen) of each three neighbouring rungs
    for k in estimates:
        ks = [j for j in (k - 1, k, k + 1) if j in estimates]
        if len(ks) < min(3, len(estimates)):
            continue
        group = [estimates[j] for j in ks]
        groups.append((float(np.ptp(group)), float(np.mean(group)),
                       min(cells[j] for j in ks)))
    if not groups:  # no complete neighbourhood: fall back to all rungs
        return float(2.0 ** float(np.median(list(estimates.values()))))
    best = min(groups)
    if best[2] < WEAK_EVIDENCE_CELLS:
        consistent = [g for g in groups if g[0] <= CONSISTENT_OCTAVES and g[2] > best[2]]
        if consistent:
            best = max(consistent, key=lambda g: g[2])
    return float(2.0 ** best[1])


def typical_area(areas: np.ndarray) -> float:
    """The typical cell area among instance areas: their area-weighted median, the size
    of the object at which half the segmented area is reached.

    Weighting by area keeps the few cells of a sparse field from being outvoted by specks
    of debris. In dense fields a few merged pairs inflate it (10-15 % on usiigaci), which
    the model's ``diameter_calibration`` absorbs; :func:`robust_area`, the other
    ``size_statistic``, tracks the true size more closely (docs/decisions.md).

    Examples
    --------
    >>> typical_area(np.array([4, 5, 6, 100, 110, 120, 130, 400]))  # specks, cells, a merge
    130.0
    """
    areas = np.asarray(areas, dtype=float)
    areas = areas[areas > 0]
    return weighted_median(areas, areas)


def robust_area(areas: np.ndarray) -> float:
    """The median area of the objects of at least half the area-weighted median diameter
    (:func:`typical_area`): specks are still outvoted, and a few merged pairs do not
    inflate it.

    Examples
    --------
    >>> robust_area(np.array([4, 5, 6, 100, 110, 120, 130, 400]))  # specks, cells, a merge
    120.0
    """
    areas = np.asarray(areas, dtype=float)  # the bound is > 0: empty labels drop out too
    return float(np.median(areas[areas >= typical_area(areas) / 4]))


#: the typical cell area of a segmented window, by name (``ModelConfig.size_statistic``)
SIZE_STATISTICS = {"area-weighted": typical_area, "robust": robust_area}

__all__ = [
    "DIAMETER_LADDER",
    "SIZE_STATISTICS",
    "estimate_diameter",
    "refine_diameter",
    "robust_area",
    "size_head_diameter",
    "typical_area",
]


def weighted_median(values, weights) -> float:
    """The value at which half the total weight is reached.

    Examples
    --------
    >>> weighted_median([1.49, 1.0], [1, 4]), weighted_median([1.0, 2.0, 3.0], [1, 1, 1])
    (1.0, 2.0)
    """
    order = np.argsort(values)
    v, w = np.asarray(values, float)[order], np.asarray(weights, float)[order]
    # the last cumulative sum can round below the pairwise total: stay in range
    k = min(int(np.searchsorted(np.cumsum(w), w.sum() / 2)), len(v) - 1)
    return float(v[k])
