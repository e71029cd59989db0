"""Photometric augmentation of raw crops: what real transmitted-light images throw at us.

Applied to raw intensities *before* normalisation (so the model learns to rely on the
normalisation to undo shading): gamma, illumination gradients and vignetting, stray-light
offset, dark or bright debris, defocus blur, camera noise. After normalisation, optionally
another microscope's optics (:func:`optics`: the shear relief of DIC, the halo of phase
contrast), then contrast inversion (phase contrast and brightfield flip polarity with
defocus and DIC with shear direction) and a contrast jitter.
"""

from __future__ import annotations

import math

import torch

from ..inference.preprocess import _quantiles, gaussian_blur


def _u(rng: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=rng))


def _p(rng: torch.Generator, p: float) -> bool:
    return float(torch.rand((), generator=rng)) < p


def augment_raw(x: torch.Tensor, reference: torch.Tensor, rng: torch.Generator, *,
                max_noise: float = 0.06, texture: float = 0.0,
                specks: float = 0.0) -> torch.Tensor:
    """Augment raw crops (B, 1, H, W); ``reference`` (B,) is each image's bright level;
    camera noise up to ``max_noise`` of each crop's mean level; multiplicative grain up
    to ``texture`` and sharp dark specks of debris on a ``specks`` fraction of the crops
    (0 = off, and no random numbers drawn for them, so recipes without them train
    exactly as before)."""
    out = []
    _, _, h, w = x.shape
    yy, xx = torch.meshgrid(
        torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij"
    )
    for img, ref in zip(x, reference):
        img = (img / ref).clamp_min(0)
        if _p(rng, 0.5):
            img = img ** math.exp(_u(rng, -0.4, 0.4))
        field = torch.ones_like(img)
        if _p(rng, 0.6):  # linear illumination gradient across the crop
            a = _u(rng, 0.1, 0.7)
            t = _u(rng, 0, 2 * math.pi)
            field = field * (1 + a * (math.cos(t) * xx + math.sin(t) * yy).clamp(-1, 1))
        if _p(rng, 0.5):  # vignetting around an off-centre point
            v = _u(rng, 0.1, 0.6)
            cy, cx = _u(rng, -1, 1), _u(rng, -1, 1)
            r2 = ((yy - cy) ** 2 + (xx - cx) ** 2) / 8
            field = field * (1 - v * r2.clamp(max=1))
        if _p(rng, 0.3):  # debris: out-of-focus particles that absorb or scatter
            for _ in range(int(_u(rng, 1, 6))):
                sig = _u(rng, 2, 10) / (h / 2)
                cy, cx = _u(rng, -1, 1), _u(rng, -1, 1)
                blob = torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sig**2))
                field = field * (1 + _u(rng, -0.6, 0.4) * blob)
        img = img * field
        if texture > 0 and _p(rng, 0.3):  # grain inside cells: chromatin, organelles
            grain = gaussian_blur(torch.randn((1, *img.shape), generator=rng), _u(rng, 1, 2))[0]
            grain = grain / grain.std().clamp_min(1e-6)
            img = (img * (1 + _u(rng, 0, texture) * grain)).clamp_min(0)
        if specks > 0 and _p(rng, specks):  # in-focus debris, smaller than a cell
            img = img * _speck_field(h, w, rng)
        mean = float(img.mean())
        if _p(rng, 0.3):
            img = img + _u(rng, 0, 0.3) * mean
        if _p(rng, 0.25):
            img = gaussian_blur(img[None], _u(rng, 0.5, 2.0))[0]
        if _p(rng, 0.5):
            img = img + torch.randn(img.shape, generator=rng) * _u(rng, 0.005, max_noise) * mean
        out.append(img)
    return torch.stack(out)


def augment_normalized(x: torch.Tensor, rng: torch.Generator) -> torch.Tensor:
    """Contrast inversion and jitter on normalised crops (B, 1, H, W)."""
    b = x.shape[0]
    sign = torch.where(torch.rand(b, generator=rng) < 0.25, -1.0, 1.0)
    gain = torch.exp((torch.rand(b, generator=rng) - 0.5) * 0.5)
    return x * (sign * gain).view(b, 1, 1, 1)


def optics(x: torch.Tensor, rng: torch.Generator, fraction: float) -> torch.Tensor:
    """Show a ``fraction`` of normalised crops (B, 1, H, W) through other optics.

    Each chosen crop becomes a random blend of three renderings of the same cells, each
    scaled to the crop's contrast unit (its 0.5-99.5 % quantile range):

    - the crop itself;
    - its *shear relief*: the derivative along a random direction of the crop smoothed
      by 0.5-4 px, which is how DIC renders optical path (relief lit from one side);
    - its *halo*: the crop less its blur over 4-16 px (a quarter to half a canonical
      cell), the high-pass that gives phase-contrast cells their bright or dark halo.

    The weights are squared uniform draws normalised to sum to 1 (so one rendering
    often dominates), the relief's with a random sign; the blend is re-centred on its
    median and scaled to the contrast unit again, as
    :func:`tlseg.inference.preprocess.normalize` leaves its output. Labels are
    untouched: the cells are where they were. A source then teaches the network its
    cells under optics it never saw (random convolutions for domain generalisation, Xu
    et al., ICLR 2021, here restricted to the transfer functions of transmitted-light
    microscopes). ``fraction`` 0 draws no random numbers, so recipes without it train as
    before.

    Examples
    --------
    >>> g = torch.Generator().manual_seed(0)
    >>> x = torch.zeros(2, 1, 64, 64)
    >>> x[:, :, 20:40, 20:40] = 1.0
    >>> y = optics(x, g, 1.0)
    >>> y.shape, bool(torch.isfinite(y).all())
    (torch.Size([2, 1, 64, 64]), True)
    >>> torch.equal(optics(x, g, 0.0), x)
    True
    """
    if fraction <= 0:
        return x
    out = []
    for img in x:
        if not _p(rng, fraction):
            out.append(img)
            continue
        t = _u(rng, 0, 2 * math.pi)
        smooth = gaussian_blur(img[None], _u(rng, 0.5, 4.0))[0]
        gy, gx = torch.gradient(smooth[0])
        relief = (math.cos(t) * gx + math.sin(t) * gy)[None]
        halo = img - gaussian_blur(img[None], _u(rng, 4.0, 16.0))[0]
        w = torch.rand(3, generator=rng) ** 2
        w = w / w.sum().clamp_min(1e-6)
        sign = 1.0 if _p(rng, 0.5) else -1.0
        blend = (w[0] * _unit(img) + sign * w[1] * _unit(relief) + w[2] * _unit(halo))
        out.append(_unit(blend - blend.median()))
    return torch.stack(out)


def _unit(img: torch.Tensor) -> torch.Tensor:
    """``img`` (1, H, W) divided by its 0.5-99.5 % quantile range (the contrast unit of
    :func:`tlseg.inference.preprocess.normalize`), read on every 4th pixel."""
    q = _quantiles(img[None], (0.005, 0.995), step=4)[0]
    return img / (q[1] - q[0]).clamp_min(1e-6)


def _speck_field(h: int, w: int, rng: torch.Generator) -> torch.Tensor:
    """A multiplicative field (1, H, W) with 1-8 sharp dark specks: rotated ellipses of
    2-10 px radius (a cell is 30 px across at the canonical scale), 30-70 % darker, with
    edges softened over under a pixel."""
    yy, xx = torch.meshgrid(torch.arange(h, dtype=torch.float32),
                            torch.arange(w, dtype=torch.float32), indexing="ij")
    field = torch.ones(h, w)
    for _ in range(int(_u(rng, 1, 9))):
        cy, cx, t = _u(rng, 0, h), _u(rng, 0, w), _u(rng, 0, math.pi)
        ry, rx = _u(rng, 2, 10), _u(rng, 2, 10)
        u = ((yy - cy) * math.cos(t) + (xx - cx) * math.sin(t)) / ry
        v = (-(yy - cy) * math.sin(t) + (xx - cx) * math.cos(t)) / rx
        inside = (u * u + v * v <= 1).float()
        inside = gaussian_blur(inside[None, None], _u(rng, 0.3, 0.8))[0, 0]
        field = field * (1 - _u(rng, 0.3, 0.7) * inside)
    return field[None]
