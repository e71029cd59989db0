"""Exchanging annotations with ImageJ/Fiji: ROI zip files <-> label images (roifile).

Each cell becomes one polygon ROI (its outer contour, scikit-image ``find_contours``);
reading rasterises each polygon (``skimage.draw.polygon``) into its own label, later
ROIs drawn over earlier ones as ImageJ's "ROI map" does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import TlsegError
from .files import atomic_path


def labels_to_imagej(labels: np.ndarray, path) -> int:
    """Write every cell of a label image as a polygon ROI into an ImageJ ROI zip.

    Parameters
    ----------
    labels : ndarray (H, W) of int
        Instance labels, 0 = background.
    path : path
        ``.zip`` to write (atomically), readable by Fiji's ROI Manager.

    Returns
    -------
    int
        The number of ROIs written.
    """
    import roifile
    from scipy import ndimage as ndi
    from skimage.measure import find_contours

    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise TlsegError(f"{path}: labels must be a 2-D integer label image, got "
                         f"{labels.dtype} of shape {labels.shape}")
    rois = []
    for cell, sl in enumerate(ndi.find_objects(np.where(labels > 0, labels, 0)), start=1):
        if sl is None:
            continue
        sl = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in sl)
        patch = np.pad(labels[sl] == cell, 1)
        contours = find_contours(patch.astype(np.float32), 0.5)
        if not contours:
            continue
        c = max(contours, key=len)
        # back to image coordinates (x, y) for ImageJ
        xy = np.stack([c[:, 1] + sl[1].start - 1, c[:, 0] + sl[0].start - 1], axis=1)
        roi = roifile.ImagejRoi.frompoints(xy.astype(np.float32))
        roi.name = f"cell-{cell:05d}"
        rois.append(roi)
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.unlink()  # roiwrite appends to an existing zip
        roifile.roiwrite(tmp, rois, mode="w")
    return len(rois)


def imagej_to_labels(path, shape: tuple[int, int]) -> np.ndarray:
    """Rasterise the polygon, rectangle and oval ROIs of an ImageJ ROI file or zip.

    Parameters
    ----------
    path : path
        ``.roi`` file or ``RoiSet.zip`` (Fiji's ROI Manager).
    shape : (int, int)
        Shape of the image the ROIs were drawn on.

    Returns
    -------
    ndarray of int32 (H, W)
        One label per ROI, in the file's order; 0 = background.
    """
    import roifile
    from skimage.draw import polygon

    try:
        rois = roifile.roiread(path)
    except Exception as exc:
        raise TlsegError(f"{path}: cannot read ImageJ ROIs ({str(exc).splitlines()[0]})") from None
    if not isinstance(rois, list):
        rois = [rois]
    labels = np.zeros(shape, np.int32)
    for i, roi in enumerate(rois, start=1):
        xy = roi.coordinates()
        if xy is None or len(xy) < 3:
            continue
        rr, cc = polygon(xy[:, 1], xy[:, 0], shape=shape)
        labels[rr, cc] = i
    return labels
