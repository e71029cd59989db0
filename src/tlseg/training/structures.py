"""Structure negatives: man-made things in the light path that are not cells.

Plates and chips put structures into transmitted-light fields that a cell model has never
been told are background: the posts of a microfluidic chamber, its walls and channels,
scratches in the plastic, air bubbles, the edge of a well. Round posts about a cell wide
are outlined as cells, and straight edges cut into cell-like pieces.

:func:`add_structures` draws one such structure, at random, over the *known background*
of a training crop (pixels labelled background, at least ``CLEARANCE`` canonical pixels
from any cell or unknown pixel), as a multiplicative relief on the raw intensities like
the other photometric augmentations. The labels are not changed: under the structure
the crop stays background, which is what the network must learn.

Each kind is drawn at the canonical cell scale (a cell is ``diameter`` pixels across):

- ``posts``: a lattice of round posts, 0.4-1.5 cell diameters across, a dark refraction
  rim and a flat inside;
- ``wall``: a straight edge with a dark line and a bright fringe, the material on one
  side darker or brighter; ``channel``: two parallel walls 2-5 cells apart;
- ``scratch``: 1-3 long thin lines, dark or bright;
- ``bubble``: a ring of 2-6 cell radii with a thick dark rim;
- ``well_edge``: the arc of a well's rim with the meniscus darkening outside it.
"""

from __future__ import annotations

import math

import torch

from ..inference.preprocess import gaussian_blur
from .augment import _p, _u

KINDS = ("posts", "wall", "channel", "scratch", "bubble", "well_edge")
CLEARANCE = 3.0  # canonical pixels between a drawn structure and a cell or unknown pixel


def _gauss(d: torch.Tensor, width: float) -> torch.Tensor:
    return torch.exp(-0.5 * (d / width) ** 2)


def structure_relief(h: int, w: int, kind: str, diameter: float,
                     rng: torch.Generator) -> torch.Tensor:
    """Relative intensity change (H, W) of one structure of ``kind`` (module docstring),
    for cells ``diameter`` pixels across; the image is multiplied by ``1 + relief``.

    Examples
    --------
    >>> r = structure_relief(64, 64, "posts", 16.0, torch.Generator().manual_seed(0))
    >>> tuple(r.shape), bool(r.min() < -0.1)
    ((64, 64), True)
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    relief = torch.zeros(h, w)
    theta = _u(rng, 0, math.pi)
    c, s = math.cos(theta), math.sin(theta)
    if kind == "posts":
        r = diameter * _u(rng, 0.2, 0.75)  # radius
        pitch_a, pitch_b = r * _u(rng, 2.5, 4.5), r * _u(rng, 2.5, 4.5)
        a = (yy * c + xx * s - _u(rng, 0, pitch_a)) % pitch_a - pitch_a / 2
        b = (-yy * s + xx * c - _u(rng, 0, pitch_b)) % pitch_b - pitch_b / 2
        d = torch.hypot(a, b) - r
        rim = _u(rng, 1.0, 3.5)
        relief = -_u(rng, 0.15, 0.5) * _gauss(d, rim) + _u(rng, -0.1, 0.15) * (d < 0)
        relief = relief + _u(rng, 0.0, 0.25) * _gauss(d - 2.5 * rim, rim)  # halo
    elif kind in ("wall", "channel"):
        t = (yy - h / 2) * c + (xx - w / 2) * s - _u(rng, -h / 3, h / 3)
        sides = [t] if kind == "wall" else [t, diameter * _u(rng, 2, 5) - t]
        for side in sides:
            relief = relief - _u(rng, 0.2, 0.6) * _gauss(side, _u(rng, 1.0, 4.0))
            relief = relief + _u(rng, 0.0, 0.25) * _gauss(side - _u(rng, 3, 8), 2.0)
            relief = relief + _u(rng, -0.3, 0.2) * (side < 0)  # the material itself
    elif kind == "scratch":
        for _ in range(int(_u(rng, 1, 4))):
            t0 = _u(rng, 0, math.pi)
            dist = (yy - _u(rng, 0, h)) * math.cos(t0) + (xx - _u(rng, 0, w)) * math.sin(t0)
            sign = 1.0 if _u(rng, 0, 1) < 0.4 else -1.0
            relief = relief + sign * _u(rng, 0.1, 0.4) * _gauss(dist, _u(rng, 0.6, 1.5))
    elif kind == "bubble":
        r = diameter / 2 * _u(rng, 2, 6)
        d = torch.hypot(yy - _u(rng, 0, h), xx - _u(rng, 0, w)) - r
        relief = -_u(rng, 0.3, 0.7) * _gauss(d, _u(rng, 2, 6)) + _u(rng, 0.05, 0.3) * (d < 0)
    else:  # well_edge: a rim of radius R well beyond the crop, crossing it
        big = max(h, w) * _u(rng, 2, 6)
        inside = big - max(h, w) * _u(rng, 0.1, 0.4)
        cy, cx = h / 2 + s * inside, w / 2 + c * inside
        d = torch.hypot(yy - cy, xx - cx) - big
        relief = -_u(rng, 0.4, 0.8) * torch.sigmoid(d / _u(rng, 3, 15)) - 0.3 * _gauss(d, 3.0)
    return gaussian_blur(relief[None, None], 0.7)[0, 0]


def add_structures(x: torch.Tensor, targets: torch.Tensor, rng: torch.Generator, *,
                   fraction: float, diameter: float) -> torch.Tensor:
    """Draw one random structure over the known background of a ``fraction`` of the raw
    crops ``x`` (B, 1, H, W), whose targets (B, 6+, H, W) stay as they are (background);
    ``diameter`` is the cell size in the crops (the canonical diameter)."""
    if fraction <= 0:
        return x
    out = x.clone()
    _, _, h, w = x.shape
    for i in range(x.shape[0]):
        if not _p(rng, fraction):
            continue
        fg, valid = targets[i, 0], targets[i, 3]
        background = ((fg == 0) & (valid >= 1)).float()[None, None]
        # clear of cells and unknown pixels by CLEARANCE, with a soft edge
        clear = 1 - torch.nn.functional.max_pool2d(1 - background, 2 * int(CLEARANCE) + 1,
                                                   stride=1, padding=int(CLEARANCE))
        mask = gaussian_blur(clear, 1.0)[0, 0] * clear[0, 0]
        if mask.sum() < 0.1 * h * w:
            continue
        kind = KINDS[int(_u(rng, 0, len(KINDS))) % len(KINDS)]
        relief = structure_relief(h, w, kind, diameter, rng)
        out[i, 0] = x[i, 0] * (1 + relief * mask).clamp_min(0.05)
    return out
