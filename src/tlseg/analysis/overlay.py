"""Overlays: an image with its cells' outlines, as a PNG to look at."""

from __future__ import annotations

import numpy as np

from ..errors import TlsegError
from ..io.files import atomic_path


def write_overlay(path, image: np.ndarray, labels: np.ndarray) -> None:
    """Write a PNG of an image with its cells' outlines in colour (atomically).

    Parameters
    ----------
    path : path
        PNG file to write.
    image : ndarray (H, W)
        The image, shown with its shading flattened and robustly scaled to 8 bit
        (:func:`tlseg.inference.preprocess.display_gray`).
    labels : ndarray (H, W) of int
        Instance labels; each cell's outline gets its own saturated hue.
    """
    import imageio.v3 as iio
    from skimage.segmentation import find_boundaries

    from ..inference.preprocess import display_gray

    if np.shape(image) != np.shape(labels) or np.ndim(image) != 2:
        raise TlsegError(f"write_overlay: image of shape {np.shape(image)} and labels of "
                         f"shape {np.shape(labels)}; give one 2-D image and its labels")
    gray = display_gray(image)
    rgb = np.repeat((gray * 255).astype(np.uint8)[..., None], 3, axis=2)
    edges = find_boundaries(labels, mode="inner")
    if labels.max() > 0:
        from skimage.color import hsv2rgb

        # fully saturated hues: they read on dark (fluorescence) and bright (transmitted
        # light) backgrounds alike, where pale colours vanish on a bright nucleus
        hue = np.random.default_rng(0).random(int(labels.max()) + 1)
        hsv = np.stack([hue, np.ones_like(hue), np.ones_like(hue)], axis=1)
        palette = (hsv2rgb(hsv[None])[0] * 255).astype(np.uint8)
        rgb[edges] = palette[labels[edges]]
    with atomic_path(path) as tmp:
        iio.imwrite(tmp, rgb, extension=".png")
