"""Preparing an image for the network: canonical cell scale, shading correction, normalisation.

The same torch code runs at training time (on augmented crops) and at inference (on the
whole image), so the network always sees data prepared the same way.

Transmitted light is *multiplicative*: the recorded image is the illumination field times
the specimen's transmission. Dividing by a heavily smoothed copy of the image (a flat
field estimated from the image itself, sigma = several cell diameters) removes gradients,
vignetting and the camera's bit depth at once; a robust percentile scaling around the
median (the background) then gives the same numbers for 8-, 12- and 16-bit data.
Fluorescence is *additive* over a dark background, so there the smooth background is
subtracted instead.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..config import FLATFIELD_MODES


def rescale(image: np.ndarray, factor: float) -> np.ndarray:
    """Resize a 2-D float image by ``factor``.

    Shrinking is bilinear with antialiasing. Enlarging (cells smaller than canonical) is
    bicubic: bilinear enlarging blurs, and the network reads cells from their sharp
    texture. On synthetic fields at 26-28 px (a 1.07-1.15x enlargement) bicubic raised
    AP@0.5 from 0.877-0.954 to 0.928-0.977; on a sparse brightfield field it kept debris
    from setting the diameter (docs/decisions.md).
    """
    if abs(factor - 1.0) < 1e-3:
        return np.ascontiguousarray(image, dtype=np.float32)
    h, w = image.shape
    size = (max(1, round(h * factor)), max(1, round(w * factor)))
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    if factor > 1:
        out = F.interpolate(t, size=size, mode="bicubic", align_corners=False)
    else:
        out = F.interpolate(t, size=size, mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0].numpy()


def _gaussian_kernel(sigma: float) -> torch.Tensor:
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of a (B, 1, H, W) tensor with reflected borders."""
    if sigma <= 0:
        return x
    k = _gaussian_kernel(sigma)
    r = (len(k) - 1) // 2
    h, w = x.shape[-2:]
    # reflect padding needs pad < size; fall back to replicate for tiny inputs
    mode = "reflect" if r < min(h, w) else "replicate"
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1))
    return F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1))


def smooth_background(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Very smooth background of (B, 1, H, W) images: blur a downsampled copy, upsample."""
    h, w = x.shape[-2:]
    f = max(1, int(sigma // 8))
    small = F.avg_pool2d(x, f, ceil_mode=True) if f > 1 else x
    small = gaussian_blur(small, sigma / f)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def _monomials(h: int, w: int, degree: int) -> torch.Tensor:
    """Monomials y**i * x**j (i + j <= degree) on an h x w grid in [-1, 1], shape (K, h, w)."""
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    return torch.stack(
        [yy**i * xx**j for i in range(degree + 1) for j in range(degree + 1 - i)]
    )


def polynomial_shading(x: torch.Tensor, *, degree: int = 3, size: int = 64) -> torch.Tensor:
    """Smooth multiplicative shading of (B, 1, H, W) images, as a polynomial in log space.

    Illumination gradients and vignetting are smooth over the whole field, and a
    low-order surface fitted to the log image (robustly, so cells and debris do not pull
    it) follows them up to the image border, where a blur's padding would not.
    """
    b, _, h, w = x.shape
    f = max(1, max(h, w) // size)
    small = F.avg_pool2d(x, f, ceil_mode=True) if f > 1 else x
    sh, sw = small.shape[-2:]
    grid = _monomials(sh, sw, degree)  # (K, sh, sw)
    basis = grid.flatten(1).T  # (P, K)
    logs = torch.log(small.clamp_min(1e-6)).flatten(1)  # (B, P)
    out = torch.empty_like(small)
    for i in range(b):
        keep = torch.ones(logs.shape[1], dtype=torch.bool)
        for _ in range(3):  # iteratively drop outliers (cells, debris) from the fit
            coef = torch.linalg.lstsq(basis[keep], logs[i, keep, None]).solution
            resid = logs[i] - (basis @ coef)[:, 0]
            mad = resid[keep].abs().median().clamp_min(1e-6)
            keep = resid.abs() < 2.5 * 1.4826 * mad
            if keep.sum() < basis.shape[1] * 4:
                break
        out[i, 0] = torch.exp(torch.einsum("k,khw->hw", coef[:, 0], grid))
    # the surface is smooth: evaluate it coarsely and interpolate
    return F.interpolate(out, size=(h, w), mode="bilinear", align_corners=False)


def _quantiles(x: torch.Tensor, qs: tuple[float, ...], *, step: int | None = None
               ) -> torch.Tensor:
    """Per-image quantiles of (B, 1, H, W) on every ``step``-th pixel (default: the
    step that reads at most ~250k pixels each)."""
    flat = x.flatten(1)
    if step is None:
        step = max(1, flat.shape[1] // 250_000)
    return torch.quantile(flat[:, ::step], torch.tensor(qs, dtype=x.dtype), dim=1).T


def normalize(
    x: torch.Tensor,
    *,
    flatfield: str = "divide",
    sigma: float = 90.0,
    low: float = 0.005,
    high: float = 0.995,
) -> torch.Tensor:
    """Shading-correct and normalise a batch of raw images, shape (B, 1, H, W).

    Parameters
    ----------
    flatfield : {'divide', 'subtract', 'none'}
        'divide' for transmitted light (multiplicative shading), 'subtract' for
        fluorescence (additive background), 'none' to skip.
    sigma : float
        Smoothing of the background estimate in pixels (several cell diameters).
    low, high : float
        Quantiles whose distance sets the contrast unit.

    Returns
    -------
    Tensor of the same shape: background at 0, contrast range ~1.

    Examples
    --------
    >>> x = torch.rand(1, 1, 64, 64) * 4000 + 1000
    >>> y8 = normalize(x / 16)  # same image at lower bit depth
    >>> bool(torch.allclose(normalize(x), y8, atol=1e-4))
    True
    """
    if flatfield not in FLATFIELD_MODES:
        raise ValueError(f"flatfield must be one of {FLATFIELD_MODES}, got {flatfield!r}")
    x = x.float()
    if flatfield == "divide":
        x = x.clamp_min(0)
        x = x / polynomial_shading(x)
        bg = smooth_background(x, sigma)
        floor = 1e-3 * bg.flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
        x = x / (bg + floor)
    elif flatfield == "subtract":
        x = x - smooth_background(x, sigma)
    q = _quantiles(x, (low, 0.5, high))
    lo, med, hi = (q[:, i].view(-1, 1, 1, 1) for i in range(3))
    scale = (hi - lo).clamp_min(1e-6 * (hi.abs() + 1e-6))
    return (x - med) / scale


def display_gray(image: np.ndarray) -> np.ndarray:
    """``image`` in [0, 1] for display (overlays, the plate report): divided by its
    smooth shading (:func:`polynomial_shading`, which follows a gradient up to the
    border), then stretched between its 0.5 and 99.5 percentiles, so that uneven
    illumination does not hide the cells."""
    img = np.asarray(image, np.float32)
    img = img - min(0.0, float(img.min()))  # the fit is in log space
    x = torch.from_numpy(np.ascontiguousarray(img))[None, None]
    flat = (x / polynomial_shading(x).clamp_min(1e-6))[0, 0].numpy()
    lo, hi = np.percentile(flat, [0.5, 99.5])
    return np.clip((flat - lo) / max(hi - lo, 1e-6), 0, 1)


def is_constant(image: np.ndarray) -> bool:
    """True when an image has no contrast at all (nothing to segment)."""
    return bool(np.ptp(image) <= 1e-6 * max(1.0, float(np.abs(image).max())))


#: pixels further than this many robust ranges (0.1-99.9 percentile) outside that range
#: are clipped to it: a hot or corrupt pixel of 3e38 would otherwise overflow float32
#: statistics, while real bright debris stays far inside this bound
OUTLIER_RANGES = 100.0


def clip_outliers(image: np.ndarray, *, ranges: float = OUTLIER_RANGES) -> tuple[np.ndarray, int]:
    """Clip absurd pixel values; return the image and how many pixels were clipped.

    The bound is ``ranges`` robust ranges beyond the 0.1 and 99.9 percentiles (read on
    every 4th pixel of every 4th row). An image with no such pixel is returned as it is.

    Examples
    --------
    >>> image = np.tile(np.linspace(100, 200, 64, dtype=np.float32), (64, 1))
    >>> image[5, 5] = 3e38
    >>> clipped, n = clip_outliers(image)
    >>> n, bool(clipped.max() < 1e5), bool((clipped == image)[image < 1e5].all())
    (1, True, True)
    """
    lo, hi = np.percentile(image[::4, ::4], [0.1, 99.9])
    span = max(float(hi - lo), 1e-6 * max(1.0, abs(float(hi))))
    low, high = lo - ranges * span, hi + ranges * span
    outside = (image < low) | (image > high)
    n = int(outside.sum())
    if n == 0:
        return image, 0
    return np.clip(image, low, high).astype(image.dtype, copy=False), n


#: a line at the image's edge is a sensor artefact when its median departs from the trend
#: of the lines inside by more than this fraction of the image's robust range (0.1-99.9
#: percentile) and by more than EDGE_LINE_Z times the scatter of the inner lines' medians
EDGE_LINE_CONTRAST = 0.05
EDGE_LINE_Z = 6.0


def repair_edge_lines(image: np.ndarray, *, max_lines: int = 2) -> tuple[np.ndarray, int]:
    """Replace darker or brighter edge rows and columns (sensor edge artefacts) by the
    nearest normal line; return the image and how many lines were replaced.

    Some cameras record their outermost row or column a few percent darker than the rest.
    Mirrored at the border for the network, such a line reads as a cell outline and
    brings a row of false cells along that edge. On each side, the medians of the 12
    outermost lines are compared with a straight-line trend fitted to lines
    ``max_lines`` to 11 (illumination gradients keep to the trend); the outermost
    ``max_lines`` lines that depart from it by more than :data:`EDGE_LINE_CONTRAST` of
    the robust range and :data:`EDGE_LINE_Z` times the trend's scatter (or the noise of
    a line median, when larger) are replaced by the first line inside them. An image
    with no such line is returned as it is.

    Examples
    --------
    >>> image = np.random.default_rng(0).normal(100, 2, (64, 64)).astype(np.float32)
    >>> image[-1] -= 8
    >>> repaired, n = repair_edge_lines(image)
    >>> n, bool((repaired[-1] == image[-2]).all()), bool((repaired[:-1] == image[:-1]).all())
    (1, True, True)
    >>> repair_edge_lines(image[:-1])[1]
    0
    """
    k = 12
    if min(image.shape) < 4 * k:
        return image, 0
    lo, hi = np.percentile(image[::4, ::4], [0.1, 99.9])
    span = float(hi - lo)
    if span <= 0:
        return image, 0
    # noise of one pixel (robust, from neighbour differences) -> of a line's median
    noise = 1.4826 * float(np.median(np.abs(np.diff(image[::4], axis=1)))) / np.sqrt(2)
    idx = np.arange(max_lines, k)
    design = np.stack([np.ones(len(idx)), idx], 1)
    out, n = image, 0
    for axis, flip in ((0, False), (0, True), (1, False), (1, True)):
        view = image if axis == 0 else image.T
        lines = (view[::-1] if flip else view)[:k]
        med = np.median(lines, axis=1).astype(np.float64)
        coef, *_ = np.linalg.lstsq(design, med[max_lines:], rcond=None)
        scatter = 1.4826 * float(np.median(np.abs(med[max_lines:] - design @ coef)))
        scatter = max(scatter, 1.25 * noise / np.sqrt(lines.shape[1]))
        dev = np.abs(med[:max_lines] - (coef[0] + coef[1] * np.arange(max_lines)))
        bad = np.flatnonzero((dev > EDGE_LINE_CONTRAST * span) & (dev > EDGE_LINE_Z * scatter))
        if len(bad) == 0:
            continue
        depth = int(bad.max()) + 1  # lines 0..depth-1 from this edge are replaced
        if out is image:
            out = image.copy()
        target = out if axis == 0 else out.T
        size = target.shape[0]
        rows = np.arange(size - depth, size) if flip else np.arange(depth)
        target[rows] = target[size - depth - 1] if flip else target[depth]
        n += depth
    return out, n
