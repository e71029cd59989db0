"""Per-cell measurements of one site (scikit-image ``regionprops_table``), and the
objects a count keeps (:func:`discard_edge`)."""

from __future__ import annotations

import re
from collections.abc import Mapping

import numpy as np
import pandas as pd
from scipy import ndimage as ndi
from skimage.measure import regionprops_table
from skimage.segmentation import clear_border, relabel_sequential

from ..errors import TlsegError

PROPERTIES = ("label", "centroid", "area", "perimeter", "eccentricity", "solidity")


def _safe(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_") or "channel"


def discard_edge(labels: np.ndarray) -> np.ndarray:
    """The label image without the objects that touch its edge, renumbered 1..n
    (scikit-image ``clear_border``): CellProfiler's "discard objects touching the
    border". A cell cut by the field's edge is then neither counted nor measured, the
    convention of annotations that leave such cells out.

    Examples
    --------
    >>> import numpy as np
    >>> lab = np.zeros((6, 6), int); lab[0:2, 0:2] = 1; lab[2:4, 2:4] = 2
    >>> discard_edge(lab).max()
    np.int64(1)
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"discard_edge: expected a 2-D label image, got shape {labels.shape}")
    return relabel_sequential(clear_border(labels))[0]


def nucleus_centres(nuclei: np.ndarray) -> np.ndarray:
    """Centre of mass (y, x) of every nucleus, an (N, 2) float array in label order."""
    ids = np.unique(nuclei[nuclei > 0])
    if len(ids) == 0:
        return np.zeros((0, 2))
    centres = ndi.center_of_mass(np.ones_like(nuclei, dtype=np.uint8), nuclei, ids)
    return np.asarray(centres, dtype=np.float64).reshape(-1, 2)


def centres_per_cell(cells: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Number of points (an (N, 2) array of y, x in ``cells``' pixels, rounded to the
    nearest pixel and clipped to the image) inside each cell.

    Returns an array indexed by cell label (index 0 counts points outside every cell).
    """
    yx = np.rint(np.asarray(centres, dtype=np.float64).reshape(-1, 2)).astype(np.int64)
    yx[:, 0] = yx[:, 0].clip(0, cells.shape[0] - 1)
    yx[:, 1] = yx[:, 1].clip(0, cells.shape[1] - 1)
    return np.bincount(cells[yx[:, 0], yx[:, 1]], minlength=int(cells.max()) + 1)


def nuclei_per_cell(cells: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    """Number of nuclei whose centre lies inside each cell.

    Returns an array indexed by cell label (index 0 counts nuclei outside every cell).
    """
    return centres_per_cell(cells, nucleus_centres(nuclei))


def measure_cells(
    cells: np.ndarray,
    channels: dict[str, np.ndarray],
    *,
    nuclei: np.ndarray | None = None,
    pixel_size: float | None = None,
) -> pd.DataFrame:
    """Measure every cell of a label image (scikit-image ``regionprops_table``).

    Parameters
    ----------
    cells : ndarray (H, W) of int
        Instance labels, 0 = background.
    channels : dict of str to ndarray (H, W)
        Images whose mean intensity per cell is measured, by name.
    nuclei : ndarray (H, W) of int, optional
        Nucleus labels: adds ``n_nuclei``, the nuclei whose centre lies in each cell.
    pixel_size : float, optional
        µm per pixel: adds ``area_um2`` and ``perimeter_um``.

    Returns
    -------
    pandas.DataFrame
        One row per cell: ``label``, ``centroid_y``, ``centroid_x``, ``area`` (px),
        ``perimeter``, ``eccentricity``, ``solidity``, ``mean_<channel>`` per channel.

    Examples
    --------
    >>> import numpy as np, tlseg
    >>> cells = np.zeros((20, 20), int); cells[2:8, 2:8] = 1; cells[10:18, 10:18] = 2
    >>> table = tlseg.measure_cells(cells, {"tl": np.ones((20, 20))})
    >>> table[["label", "area", "mean_tl"]].to_dict("list")
    {'label': [1, 2], 'area': [36, 64], 'mean_tl': [1.0, 1.0]}
    """
    cells = np.asarray(cells)
    if cells.ndim != 2:
        raise TlsegError(f"measure_cells: expected 2-D cell labels, got shape {cells.shape}")
    if not isinstance(channels, Mapping):
        raise TlsegError("measure_cells: give the images to measure as a dict of name to "
                         f"image, e.g. {{'tl': image}}, not a {type(channels).__name__}")
    for what, arr in [*((f"channel {c!r}", channels[c]) for c in channels),
                      ("nuclei", nuclei)]:
        if arr is not None and np.shape(arr) != cells.shape:
            raise TlsegError(f"measure_cells: {what} has shape {np.shape(arr)} but the cell "
                             f"labels {cells.shape}; give images and labels of one field")
    intensity = None
    names = list(channels)
    if names:
        intensity = np.stack([np.asarray(channels[c], dtype=np.float32) for c in names], axis=-1)
    props = list(PROPERTIES) + (["intensity_mean"] if intensity is not None else [])
    table = regionprops_table(cells.astype(np.int32, copy=False), intensity_image=intensity,
                              properties=props)
    df = pd.DataFrame(table).rename(columns={"centroid-0": "centroid_y", "centroid-1": "centroid_x"})
    for i, c in enumerate(names):
        df = df.rename(columns={f"intensity_mean-{i}": "mean_" + _safe(c)})
    df["area"] = df["area"].astype(np.int64)
    if pixel_size:
        df["area_um2"] = df["area"] * pixel_size**2
        df["perimeter_um"] = df["perimeter"] * pixel_size
    if nuclei is not None:
        counts = nuclei_per_cell(cells, nuclei)
        df["n_nuclei"] = counts[df["label"].to_numpy()] if len(df) else np.zeros(0, np.int64)
    return df
