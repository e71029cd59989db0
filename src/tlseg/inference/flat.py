"""Objects as flat as the background: background enclosed by a structure, not cells.

A channel's walls, a fibre's loop or a scratch enclose stretches of empty background,
and the network can read such a stretch as a cell: its outline is there, drawn by the
structure. What is inside is not. A cell, in phase contrast, DIC or brightfield, has
texture of its own (granules, a nucleus, relief), so the fine detail inside it is
stronger than the camera noise of the empty background around it; the inside of an
enclosed stretch of background is that background. Such objects are also the ones whose
predicted flows converge least: the network sees no cell to flow to.

:func:`flat_objects` marks the objects whose interior texture (robust SD of the image
less its local mean, :func:`detail`, over the object shrunk by ``ERODE`` pixels, or by a
quarter of its radius where that is more and it is larger than a canonical cell) is
below ``min_texture`` times that of the field's background (the pixels the network calls
background, ``BACKGROUND_PROB``, ``CLEARANCE`` pixels or more from every object in x and
y), and whose flow coherence (:func:`tlseg.inference.flows.flow_coherence`) is below
``max_coherence`` (only those objects have their texture read).

A structure that runs through an object is not its texture: a fibre crossing the
stretch of background its curl encloses, or a wall along it. The pixels of dark lines
that reach far from every object (:func:`foreign_lines`: darker than the local mean by
``LINE_DARKNESS`` times the noise, connected, some of them ``LINE_REACH_OUT`` canonical
cell diameters or more from every object, and the ``LINE_REACH`` pixels around them
whose detail their darkness sets) are left out of the texture. A cell's own dark
outline, granules and nucleus lie inside it, between touching cells or, as a DIC
shadow, along its rim, and count.

Large objects, ``LARGE_AREA`` canonical cell areas or more, are held to more: at the
canonical scale a cell is rarely that large, and a bubble, a stretch of channel or a band
of the well's wall often is. Their texture is read whatever their flows, against
``LARGE_TEXTURE`` times the noise where that is more than ``min_texture`` (the inside of a
small bubble is flat, and the network's flows converge on it as on a round cell), and
those whose flow coherence is below ``LARGE_COHERENCE`` are flagged too. On the real
images of ``benchmarks/false_cells.py`` the 24 large objects that match an annotated
cell have a texture of 2.35 or more times the noise and a coherence of 0.76 or more.
:func:`drop_flat` removes the flagged objects. A field with too little background to
measure its noise (``MIN_BACKGROUND`` pixels: a confluent monolayer) is left as it is.
Where the network misses most cells of a monolayer, the cells it misses are taken for
the background and some of those it found are dropped (``docs/decisions.md``). Both
run at the canonical scale, after the network; ``benchmarks/false_cells.py`` measures
what they drop on structure fields and on real images of cells.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi
from scipy.spatial import cKDTree

from .flows import flow_coherence
from .postprocess import keep_objects

# the settings transmitted-light models use (InstanceConfig): on the 154 real cell images
# of benchmarks/false_cells.py they drop 12 of 5,853 objects, one an annotated cell
# (docs/benchmarks.md, *False cells on fields without cells*)
FLAT_TEXTURE = 1.3
FLAT_COHERENCE = 0.9
DETAIL_SIGMA = 2.0  # canonical px: the local mean that detail is measured against
ERODE = 2  # canonical px taken off an object's rim before its texture is read
# ... and from an object larger than a canonical cell, this fraction of its equivalent
# radius where that is more: the rim of a stretch of channel is wall
ERODE_RADIUS = 0.25
BACKGROUND_PROB = 0.2  # foreground probability under which a pixel is background
CLEARANCE = 3  # canonical px between background pixels and the nearest object
MIN_BACKGROUND = 1000  # background pixels needed to measure the noise (~1.4 cells)
MIN_INTERIOR = 10  # pixels; a smaller shrunk object is read whole
LINE_DARKNESS = 4.0  # background noise multiples under the local mean: a dark line's pixel
LINE_REACH = 4  # px around a line whose detail it sets (2 x DETAIL_SIGMA)
LINE_REACH_OUT = 0.5  # canonical cell diameters from every object a foreign line reaches
LARGE_AREA = 3.5  # canonical cell areas from which an object is held to more
LARGE_TEXTURE = 1.5  # background noise multiples a large object's texture must reach
LARGE_COHERENCE = 0.6  # and the flow coherence it must reach (models with flows)


def detail(image: np.ndarray) -> np.ndarray:
    """The image less its local mean (Gaussian, ``DETAIL_SIGMA``): fine texture and noise,
    not shading."""
    image = np.asarray(image, dtype=np.float32)
    return image - ndi.gaussian_filter(image, DETAIL_SIGMA)


def robust_sd(values: np.ndarray) -> float:
    """1.4826 x the median absolute deviation: the SD of Gaussian noise, unmoved by a
    few outliers (a speck of dust, a bit of wall).

    >>> round(robust_sd(np.array([1.0, 2.0, 3.0, 4.0, 100.0])), 3)
    1.483
    """
    values = np.asarray(values, dtype=float)
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def foreign_lines(labels: np.ndarray, fine: np.ndarray, noise: float, *,
                  canonical_diameter: float, ids: np.ndarray | None = None) -> np.ndarray:
    """The pixels of dark lines that reach ``LINE_REACH_OUT`` cell diameters or more
    from every object, and those within ``LINE_REACH`` of them (module docstring): what
    :func:`interior_texture` leaves out. With ``ids``, only the lines within
    ``LINE_REACH`` of those objects are looked at (the others cannot reach their
    insides). The distance from every object is found with a k-d tree over the objects'
    rims (``scipy.spatial.cKDTree``), for the lines' pixels only.

    >>> labels = np.zeros((40, 90), np.int32)
    >>> labels[10:30, 10:30] = 1
    >>> fine = np.zeros((40, 90))
    >>> fine[20, :] = -10.0   # a fibre across the field, through the object
    >>> fine[15, 15] = -10.0  # a granule inside it
    >>> fine[8, 8:32] = -10.0  # a shadow along its rim
    >>> out = foreign_lines(labels, fine, noise=1.0, canonical_diameter=30)
    >>> bool(out[20, 20]), bool(out[24, 20]), bool(out[25, 20]), bool(out[15, 15])
    (True, True, False, False)
    >>> bool(out[10, 20])
    False
    """
    dark = fine < -LINE_DARKNESS * noise
    parts, n = ndi.label(dark, structure=np.ones((3, 3)))
    if n == 0:
        return dark
    objects = labels > 0
    if ids is None:
        near = objects
    else:  # a look-up table: np.isin would hold int64 copies of the field
        chosen = np.zeros(int(labels.max(initial=0)) + 1, bool)
        chosen[ids] = True
        near = chosen[labels]
    lines = np.unique(parts[ndi.binary_dilation(near, iterations=LINE_REACH) & dark])
    lines = lines[lines > 0]
    foreign = np.zeros(n + 1, bool)
    if lines.size:
        # a line is foreign where one of its pixels outside the objects lies at `reach`
        # or more from every object pixel; the nearest object pixel is always on an
        # object's rim, so only the rims are searched
        reach = LINE_REACH_OUT * canonical_diameter
        on_line = np.zeros(n + 1, bool)
        on_line[lines] = True
        ys, xs = np.nonzero(on_line[parts] & ~objects)
        rims = np.argwhere(objects & ~ndi.binary_erosion(objects, border_value=1))
        if rims.size == 0:
            far = np.ones(ys.size, bool)
        else:
            distance, _ = cKDTree(rims).query(np.column_stack([ys, xs]),
                                              distance_upper_bound=reach + 1)
            far = distance >= reach
        foreign[np.unique(parts[ys[far], xs[far]])] = True
    out = foreign[parts]
    rows, cols = np.flatnonzero(out.any(axis=1)), np.flatnonzero(out.any(axis=0))
    if rows.size:  # grown by LINE_REACH, in the box around the foreign lines only
        box = (slice(max(rows[0] - LINE_REACH, 0), rows[-1] + LINE_REACH + 1),
               slice(max(cols[0] - LINE_REACH, 0), cols[-1] + LINE_REACH + 1))
        out[box] = ndi.binary_dilation(out[box], iterations=LINE_REACH)
    return out


def interior_texture(labels: np.ndarray, fine: np.ndarray, ids: np.ndarray | None = None,
                     *, canonical_diameter: float,
                     exclude: np.ndarray | None = None) -> np.ndarray:
    """Robust SD of ``fine`` (:func:`detail`) inside each object 1..n (or only those of
    ``ids``; the others read inf), shrunk by ``ERODE`` pixels (the whole object where
    fewer than ``MIN_INTERIOR`` pixels remain), less the pixels of ``exclude``
    (:func:`foreign_lines`) where ``MIN_INTERIOR`` pixels remain without them.

    An object larger than a canonical cell (``canonical_diameter`` across) is shrunk by
    ``ERODE_RADIUS`` of its equivalent radius where that is more: a stretch of channel
    enclosed by walls, 2-10 cell areas, has a few pixels of wall inside its outline,
    enough to lift its texture to a cell's when only 2 px are taken off. Smaller objects
    keep the 2 px: a small DIC cell's relief is at its rim."""
    n = int(labels.max(initial=0))
    out = np.full(n, np.inf)
    cell_area = np.pi / 4 * canonical_diameter**2
    cross = ndi.generate_binary_structure(2, 1)
    boxes = ndi.find_objects(labels)
    for i in (range(1, n + 1) if ids is None else ids):
        sl = boxes[i - 1]
        if sl is None:
            continue
        sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        mask = labels[sl] == i
        area = int(mask.sum())
        depth = ERODE
        if area > cell_area:
            depth = max(ERODE, round(ERODE_RADIUS * np.sqrt(area / np.pi)))
        inner = ndi.binary_erosion(mask, cross, iterations=depth)
        if inner.sum() < MIN_INTERIOR:
            inner = mask
        if exclude is not None:
            own = inner & ~exclude[sl]
            if own.sum() >= MIN_INTERIOR:
                inner = own
        out[i - 1] = robust_sd(fine[sl][inner])
    return out


def background_noise(labels: np.ndarray, prob: np.ndarray, fine: np.ndarray) -> float | None:
    """Robust SD of ``fine`` over the field's background (module docstring), or None when
    fewer than ``MIN_BACKGROUND`` pixels are background."""
    clear = ~ndi.maximum_filter(labels > 0, size=2 * CLEARANCE + 1)
    background = clear & (prob < BACKGROUND_PROB)
    if background.sum() < MIN_BACKGROUND:
        return None
    # every second pixel each way is plenty for a median, and four times faster
    noise = robust_sd(fine[::2, ::2][background[::2, ::2]])
    return noise if noise > 0 else None


def field_noise(labels: np.ndarray, image: np.ndarray,
                prob: np.ndarray) -> tuple[np.ndarray, float | None]:
    """The field's fine detail (:func:`detail`) and its background noise
    (:func:`background_noise`), which the flat and speck filters share."""
    fine = detail(image)
    return fine, background_noise(labels, prob, fine)


def flat_objects(labels: np.ndarray, image: np.ndarray, prob: np.ndarray,
                 flow: np.ndarray | None, *, min_texture: float,
                 canonical_diameter: float, max_coherence: float = 1.0,
                 field: tuple[np.ndarray, float | None] | None = None) -> np.ndarray:
    """Boolean per object 1..n: its interior is flatter than ``min_texture`` times the
    background's noise and (with ``flow``, the network's (2, H, W) flow maps) its flow
    coherence is below ``max_coherence``; or it is a large object (``LARGE_AREA`` cell
    areas or more) flatter than ``LARGE_TEXTURE`` times the noise or with a flow
    coherence below ``LARGE_COHERENCE`` (module docstring). All False where the
    background cannot be measured.

    ``image`` is the field at the canonical scale (cells ``canonical_diameter`` px
    across), ``prob`` the network's foreground
    probability on the same grid, ``field`` what :func:`field_noise` returns for them
    (computed when omitted). Only the objects that pass the coherence test, and the large
    ones, have their texture read, so a field of cells whose flows converge costs
    little.
    """
    n = int(labels.max(initial=0))
    flat = np.zeros(n, bool)
    if n == 0 or min_texture <= 0:
        return flat
    fine, noise = field_noise(labels, image, prob) if field is None else field
    if noise is None:
        return flat
    ids = np.arange(1, n + 1)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    large = areas >= LARGE_AREA * np.pi / 4 * canonical_diameter**2
    coherence = flow_coherence(labels, flow) if flow is not None else None
    if coherence is not None and max_coherence < 1.0:
        ids = ids[(coherence < max_coherence) | large]
    if ids.size == 0:  # every object's flows converge: nothing to read
        return flat
    texture = interior_texture(labels, fine, ids, canonical_diameter=canonical_diameter,
                               exclude=foreign_lines(labels, fine, noise, ids=ids,
                                                     canonical_diameter=canonical_diameter))
    flat[ids - 1] = texture[ids - 1] < min_texture * noise
    flat |= large & (texture < max(min_texture, LARGE_TEXTURE) * noise)
    if coherence is not None:
        flat |= large & (coherence < LARGE_COHERENCE)
    return flat


def drop_flat(labels: np.ndarray, image: np.ndarray, prob: np.ndarray,
              flow: np.ndarray | None, *, min_texture: float, canonical_diameter: float,
              max_coherence: float = 1.0,
              field: tuple[np.ndarray, float | None] | None = None) -> np.ndarray:
    """``labels`` without the objects of :func:`flat_objects`, renumbered 1..n; unchanged
    when ``min_texture`` is 0.

    Examples
    --------
    A square of empty background enclosed by a dark wall is dropped; the textured disc
    beside it, a cell, is kept:

    >>> rng = np.random.default_rng(0)
    >>> image = rng.normal(100, 2, (120, 200)).astype(np.float32)
    >>> image[20:23, 20:80] = image[77:80, 20:80] = 60  # the wall
    >>> image[20:80, 20:23] = image[20:80, 77:80] = 60
    >>> yy, xx = np.mgrid[:120, :200]
    >>> disc = np.hypot(yy - 50, xx - 140) < 15
    >>> image[disc] += rng.normal(0, 12, disc.sum())
    >>> labels = np.zeros(image.shape, np.int32)
    >>> labels[24:76, 24:76] = 1
    >>> labels[disc] = 2
    >>> prob = (labels > 0).astype(np.float32)
    >>> kept = drop_flat(labels, image, prob, None, min_texture=1.3, canonical_diameter=30)
    >>> int(kept.max()), bool(kept[50, 140])
    (1, True)
    """
    if min_texture <= 0 or labels.max(initial=0) == 0:
        return labels
    found = flat_objects(labels, image, prob, flow, min_texture=min_texture,
                         canonical_diameter=canonical_diameter,
                         max_coherence=max_coherence, field=field)
    return keep_objects(labels, ~found) if found.any() else labels


def drop_flat_as_set(labels: np.ndarray, image: np.ndarray, maps: np.ndarray, config, *,
                     field: tuple[np.ndarray, float | None] | None = None) -> np.ndarray:
    """:func:`drop_flat` with the settings of ``config`` (a
    :class:`tlseg.config.ModelConfig`: its ``instances.flat_texture`` and
    ``flat_coherence``, its ``canonical_diameter``) and the network's stacked ``maps``
    (3 or 5, H, W; the flows are maps 3-4) on ``image``'s canonical grid: what
    segmenting and the diameter estimate both drop."""
    inst = config.instances
    return drop_flat(labels, image, maps[0], maps[3:5] if maps.shape[0] >= 5 else None,
                     min_texture=inst.flat_texture,
                     canonical_diameter=config.canonical_diameter,
                     max_coherence=inst.flat_coherence, field=field)


__all__ = ["drop_flat", "drop_flat_as_set", "field_noise", "flat_objects", "foreign_lines"]
