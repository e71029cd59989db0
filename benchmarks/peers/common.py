"""Helpers shared by the peer-method benchmark scripts in this folder.

Only numpy, scipy, scikit-image and tifffile are needed, so every peer venv can import
this file (the scripts put their own folder on ``sys.path``). Nothing here imports tlseg
except :func:`score`, which loads ``tlseg.metrics`` (numpy + scipy only) from ``src/``
so that sanity checks use exactly the scorer of ``tlseg evaluate``.

Layout of the data (see ``shared/data/README.md``)::

    <data>/tl/<source>/{train,val}/{images,masks}/<stem>.tif

Predictions are written as ``benchmarks/work/<peer>/<source>/<stem>_masks.tif`` (uint16),
which ``tlseg evaluate PRED_DIR <data>/tl/<source>/val/masks`` scores.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tifffile

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = (REPO / ".." / "shared" / "data").resolve()
WORK = REPO / "benchmarks" / "work"

# Sources that have a val split (aisegcell-bf is train-only and partially labelled).
VAL_SOURCES = ("usiigaci", "bbbc030-cho", "ctc-dic-hela")
ALL_SOURCES = VAL_SOURCES + ("aisegcell-bf",)


def pairs(data: Path, source: str, split: str) -> list[tuple[Path, Path]]:
    """(image, mask) paths of one source/split, sorted by stem."""
    root = Path(data) / "tl" / source / split
    images = sorted((root / "images").glob("*.tif"))
    if not images:
        raise FileNotFoundError(f"no images under {root / 'images'}")
    return [(p, root / "masks" / p.name) for p in images]


def read(path: Path) -> np.ndarray:
    """A single-plane image or label TIFF as a 2-D array."""
    a = tifffile.imread(path)
    if a.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D image, got shape {a.shape}")
    return a


def equivalent_diameters(labels: np.ndarray, *, min_area: int = 16) -> np.ndarray:
    """Equivalent-circle diameters of the labelled cells (same rule as tlseg.targets)."""
    areas = np.bincount(np.where(labels > 0, labels, 0).ravel())[1:]
    areas = areas[areas >= min_area]
    return 2.0 * np.sqrt(areas / np.pi)


def median_diameter(labels: np.ndarray) -> float | None:
    """Median equivalent-circle diameter of one label image (None if it has no cells)."""
    d = equivalent_diameters(labels)
    return float(np.median(d)) if d.size else None


def source_train_diameter(data: Path, source: str) -> float:
    """Median cell diameter over all cells of a source's TRAIN masks (never val)."""
    d = np.concatenate([equivalent_diameters(read(m)) for _, m in pairs(data, source, "train")])
    return float(np.median(d))


def write_masks(out_dir: Path, stem: str, labels: np.ndarray) -> Path:
    """Write ``<stem>_masks.tif`` (uint16, zlib) and return its path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if labels.max() > np.iinfo(np.uint16).max:
        raise ValueError("more labels than uint16 can hold")
    path = out_dir / f"{stem}_masks.tif"
    tifffile.imwrite(path, labels.astype(np.uint16), compression="zlib")
    return path


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label image to ``shape`` (labels stay labels)."""
    from skimage.transform import resize

    return resize(labels, shape, order=0, preserve_range=True, anti_aliasing=False).astype(
        labels.dtype
    )


def score(pairs_true_pred) -> dict:
    """Dataset AP (pooled counts) with tlseg's own metric, for sanity checks."""
    sys.path.insert(0, str(REPO / "src"))
    from tlseg.metrics import match_counts, summarize

    return summarize([match_counts(t, p) for t, p in pairs_true_pred])
