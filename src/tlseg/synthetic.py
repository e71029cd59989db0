"""Synthetic transmitted-light fields with known cells, for tests and the demo.

Cells are irregular ellipses (a few random radial harmonics) packed at random with some
touching in clusters; each holds a nucleus. The transmitted-light image draws them the
way phase contrast shows them (dark body, bright halo at the border, darker nucleus),
or brightfield (faint body, dark rim), or DIC (shadow-cast relief), under an illumination
gradient and vignette, with dark debris and camera noise. A matching fluorescent nuclei
channel and both label images come along, so every count is known.

Examples
--------
>>> image, labels = synthetic_cells((128, 128), diameter=24, seed=1)
>>> image.dtype, bool(labels.max() > 3)
(dtype('uint16'), True)
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

MODALITIES = ("phase", "brightfield", "dic")
#: amplitude of the cells' inner texture (fraction of the background level) per modality:
#: cell texture / background noise has a median of about 5, the lowest real source's
#: (0.05 and 0.08 make cells 4-6x smoother than any real source's, and pockets of
#: background between them then look like cells; docs/decisions.md)
TEXTURE = {"phase": 0.55, "brightfield": 0.5}


def _place_centres(shape, n, diameter, rng, cluster_fraction):
    """Centres at least 0.8 diameter apart; a fraction placed next to an earlier cell."""
    h, w = shape
    centres = []
    tries = 0
    while len(centres) < n and tries < 50 * n:
        tries += 1
        if centres and rng.random() < cluster_fraction:
            cy, cx = centres[rng.integers(len(centres))]
            ang = rng.uniform(0, 2 * np.pi)
            d = diameter * rng.uniform(0.85, 1.0)
            y, x = cy + d * np.sin(ang), cx + d * np.cos(ang)
        else:
            y, x = rng.uniform(0, h), rng.uniform(0, w)
        if not (0 <= y < h and 0 <= x < w):
            continue
        if all(np.hypot(y - a, x - b) > 0.8 * diameter for a, b in centres):
            centres.append((y, x))
    return centres


def _grid_centres(shape, diameter, rng):
    """Centres of a confluent monolayer: a hexagonal grid of pitch ``diameter``, each
    point moved at random by up to a fifth of it, the whole grid turned at random."""
    h, w = shape
    ang = rng.uniform(0, np.pi / 3)
    c, s = np.cos(ang), np.sin(ang)
    reach = int(np.hypot(h, w) / diameter) + 2
    centres = []
    for i in range(-reach, reach + 1):
        for j in range(-reach, reach + 1):
            u = (j + 0.5 * (i % 2)) * diameter
            v = i * diameter * np.sqrt(3) / 2
            y = h / 2 + s * u + c * v + rng.uniform(-0.2, 0.2) * diameter
            x = w / 2 + c * u - s * v + rng.uniform(-0.2, 0.2) * diameter
            if 0 <= y < h and 0 <= x < w:
                centres.append((y, x))
    return centres


def _shapes(shape, centres, diameter, rng, fill=1.0):
    """Label image where each pixel goes to the cell whose shape function is smallest;
    ``fill`` > 1 grows every shape so that neighbours meet (a monolayer)."""
    h, w = shape
    best = np.full(shape, np.inf, np.float32)
    labels = np.zeros(shape, np.int32)
    nuclei = np.zeros(shape, np.int32)
    r_max = int(diameter * fill)
    for i, (cy, cx) in enumerate(centres, start=1):
        y0, y1 = max(0, int(cy) - r_max), min(h, int(cy) + r_max + 1)
        x0, x1 = max(0, int(cx) - r_max), min(w, int(cx) + r_max + 1)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dy, dx = yy - cy, xx - cx
        theta = rng.uniform(0, np.pi)
        ecc = rng.uniform(1.0, 1.6)
        u = dx * np.cos(theta) + dy * np.sin(theta)
        v = -dx * np.sin(theta) + dy * np.cos(theta)
        ang = np.arctan2(v, u)
        radius = fill * diameter / 2 * rng.uniform(0.85, 1.15)
        wobble = 1 + sum(rng.uniform(-0.08, 0.08) * np.cos(k * ang + rng.uniform(0, 6.28))
                         for k in (2, 3, 5))
        rho = np.hypot(u / np.sqrt(ecc), v * np.sqrt(ecc)) / (radius * wobble)
        win = best[y0:y1, x0:x1]
        take = (rho < 1) & (rho < win)
        win[take] = rho[take]
        labels[y0:y1, x0:x1][take] = i
        nuc = np.hypot(u / np.sqrt(ecc) - 0.1 * radius, v * np.sqrt(ecc)) < 0.45 * radius / fill
        nuclei[y0:y1, x0:x1][nuc & take] = i
    return labels, nuclei


def synthetic_field(
    shape: tuple[int, int] = (256, 256),
    *,
    n_cells: int | None = None,
    diameter: float = 30.0,
    modality: str = "phase",
    cluster_fraction: float = 0.3,
    shading: float = 0.4,
    debris: int | None = None,
    noise: float = 0.02,
    texture: float | None = None,
    confluent: bool = False,
    seed: int | None = None,
) -> dict:
    """One synthetic field with a transmitted-light and a nuclei channel.

    Parameters
    ----------
    shape : (int, int)
        Image height and width.
    n_cells : int, optional
        Number of cells to try to place (default: ~25 % confluence).
    diameter : float
        Mean cell diameter in pixels.
    modality : {'phase', 'brightfield', 'dic'}
        How cells look in transmitted light.
    cluster_fraction : float
        Fraction of cells placed touching an earlier cell.
    shading : float
        Strength of the illumination gradient and vignette (0 = flat).
    debris : int, optional
        Number of unlabelled dark particles (default: one per ~4 cells).
    noise : float
        Camera noise, as a fraction of the background level.
    texture : float, optional
        Amplitude of the cells' inner texture in phase contrast and brightfield
        (default :data:`TEXTURE` of the modality).
    confluent : bool
        A confluent monolayer: cells on a jittered hexagonal grid of pitch ``diameter``,
        grown until every cell meets its neighbours, with no background between them
        (``n_cells`` and ``cluster_fraction`` are then unused).
    seed : int, optional
        Random seed.

    Returns
    -------
    dict with ``tl`` (uint16), ``nuclei`` (uint16), ``labels`` and ``nuclei_labels``
    (int32, matching ids), and ``n_cells`` (the true count).
    """
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    rng = np.random.default_rng(seed)
    grain = TEXTURE.get(modality, 0.0) if texture is None else texture
    h, w = shape
    if n_cells is None:
        n_cells = max(1, int(0.25 * h * w / (np.pi * (diameter / 2) ** 2)))
    if confluent:
        centres = _grid_centres(shape, diameter, rng)
        labels, nuclei_labels = _shapes(shape, centres, diameter, rng, fill=1.4)
    else:
        centres = _place_centres(shape, n_cells, diameter, rng, cluster_fraction)
        labels, nuclei_labels = _shapes(shape, centres, diameter, rng)
    # keep only cells with a visible part (a cell cut by the border still counts)
    present = np.unique(labels[labels > 0])
    cell = (labels > 0).astype(np.float32)
    if confluent:  # cells are thinner towards their borders, which then show
        cell = np.sqrt(np.clip(ndi.distance_transform_edt(labels == ndi.grey_erosion(
            labels, size=3)) / (0.25 * diameter), 0, 1)).astype(np.float32) * cell
    nuc = (nuclei_labels > 0).astype(np.float32)
    border = (labels != ndi.grey_erosion(labels, size=3)) | (labels != ndi.grey_dilation(labels, size=3))
    border &= labels > 0
    outside = ndi.distance_transform_edt(labels == 0)
    halo = np.exp(-outside / max(1.5, diameter / 15)) * (labels == 0)
    pattern = ndi.gaussian_filter(rng.normal(size=shape), 1.5).astype(np.float32)
    body = ndi.gaussian_filter(cell, 1.0)
    if modality == "phase":
        relief = -0.35 * body - 0.15 * ndi.gaussian_filter(nuc, 1.0) + 0.45 * halo
        relief += -0.15 * border + grain * pattern * cell
    elif modality == "brightfield":
        relief = -0.06 * body - 0.35 * ndi.gaussian_filter(border.astype(np.float32), 1.0)
        relief += grain * pattern * cell - 0.05 * ndi.gaussian_filter(nuc, 1.0)
    else:  # DIC: directional derivative of the optical path
        opl = ndi.gaussian_filter(cell + 0.4 * nuc + 0.2 * pattern * cell, 2.0)
        relief = 0.8 * (ndi.shift(opl, (1, 1), order=1, mode="nearest")
                          - ndi.shift(opl, (-1, -1), order=1, mode="nearest"))
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / max(h, w), xx / max(h, w)
    ang = rng.uniform(0, 2 * np.pi)
    illum = 1 + shading * (np.cos(ang) * (xx - 0.5) + np.sin(ang) * (yy - 0.5))
    illum *= 1 - shading * 0.8 * ((yy - 0.5) ** 2 + (xx - 0.5) ** 2)
    tl = illum * (1 + relief)
    n_debris = max(1, len(centres) // 4) if debris is None else debris
    for _ in range(n_debris):
        y, x = rng.uniform(0, h), rng.uniform(0, w)
        s = rng.uniform(1.0, max(1.5, diameter / 10))
        tl *= 1 - 0.5 * np.exp(-((yy * max(h, w) - y) ** 2 + (xx * max(h, w) - x) ** 2) / (2 * s**2))
    background = 2000.0
    tl = background * tl + background * noise * rng.normal(size=shape)
    tl = np.clip(tl + 100, 0, 4095).astype(np.uint16)  # 12-bit camera with an offset
    fluo = ndi.gaussian_filter(nuc * rng.uniform(0.6, 1.0, size=len(centres) + 1)[nuclei_labels], 1.0)
    fluo = 150 + 2500 * fluo + 40 * rng.normal(size=shape)
    fluo = np.clip(fluo, 0, 4095).astype(np.uint16)
    return {
        "tl": tl,
        "nuclei": fluo,
        "labels": labels,
        "nuclei_labels": nuclei_labels,
        "n_cells": len(present),
    }


def synthetic_cells(shape=(256, 256), *, diameter: float = 30.0, seed=None, **kwargs):
    """Transmitted-light image (uint16) and its instance labels; see :func:`synthetic_field`."""
    f = synthetic_field(shape, diameter=diameter, seed=seed, **kwargs)
    return f["tl"], f["labels"]


def write_demo_images(out) -> None:
    """Write the images of ``tlseg demo``: one synthetic 512² field per modality.

    Parameters
    ----------
    out : path
        Folder; gets ``images/<modality>.tif`` (cells of 24, 32 and 40 px) and
        ``ground_truth/<modality>.tif`` (their true labels).
    """
    from pathlib import Path

    import tifffile

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "ground_truth").mkdir(parents=True, exist_ok=True)
    for i, modality in enumerate(MODALITIES):
        f = synthetic_field((512, 512), diameter=(24, 32, 40)[i], modality=modality, seed=i)
        tifffile.imwrite(out / "images" / f"{modality}.tif", f["tl"], compression="lzw")
        tifffile.imwrite(out / "ground_truth" / f"{modality}.tif", f["labels"].astype("uint16"))
