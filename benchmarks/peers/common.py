"""Helpers shared by the peer-method benchmark scripts in this folder.

Run each peer script with its own venv (``benchmarks/.venv-cellpose``, ``-stardist``,
``-deepsea``), not with tlseg's. Only numpy, tifffile (and scikit-image for
:func:`resize_labels`) are needed at import, so every peer venv can import this file
(``python benchmarks/peers/<script>.py`` puts this folder on ``sys.path``). Nothing here
imports tlseg except :func:`score`, which uses tlseg's scorer
(``tlseg.analysis.metrics``, numpy and scipy only) where tlseg is installed in the peer
venv without its dependencies (``pip install --no-deps -e .``). Nothing reads or writes
outside ``--data`` (read only), ``benchmarks/work/`` (gitignored) and, for the training
facts of the scratch peers, ``benchmarks/results/peers.json`` (:func:`record_training`).

Layout of the data (see ``shared/data/README.md``)::

    <data>/tl/<source>/{train,val}/{images,masks}/<stem>.tif

Predictions are written as ``benchmarks/work/<peer>/<source>/<stem>_masks.tif`` (uint16),
which ``python benchmarks/accuracy.py --peers-only`` scores into ``peers.json``.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = REPO.parent / "shared" / "data"
WORK = REPO / "benchmarks" / "work"
PEERS_RESULTS = REPO / "benchmarks" / "results" / "peers.json"

# Sources with a val split (scored) and all label-free training sources.
VAL_SOURCES = ("usiigaci", "bbbc030-cho", "ctc-dic-hela")
TRAIN_SOURCES = VAL_SOURCES + ("aisegcell-bf",)
IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


def set_threads(n: int = 2) -> None:
    """Cap torch's (and BLAS's) CPU threads; call before heavy work."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(n))
    import torch

    torch.set_num_threads(n)


def tl_dir(data: Path, source: str) -> Path:
    return Path(data) / "tl" / source


def pairs(data: Path, source: str, split: str) -> list[tuple[Path, Path]]:
    """(image, mask) paths of ``tl/<source>/<split>``, sorted by stem."""
    folder = tl_dir(data, source) / split
    imgs = sorted(p for p in (folder / "images").iterdir() if p.suffix in IMAGE_SUFFIXES)
    if not imgs:
        raise SystemExit(f"{folder}/images: no images")
    out = []
    for img in imgs:
        mask = next((folder / "masks" / (img.stem + s) for s in IMAGE_SUFFIXES
                     if (folder / "masks" / (img.stem + s)).is_file()), None)
        if mask is None:
            raise SystemExit(f"{img}: no mask in {folder / 'masks'}")
        out.append((img, mask))
    return out


def read_image(path: Path) -> np.ndarray:
    import tifffile

    a = tifffile.imread(path)
    if a.ndim == 3 and a.shape[-1] in (3, 4):  # RGB(A) with identical channels
        a = a[..., 0]
    if a.ndim != 2:
        raise SystemExit(f"{path}: expected a 2-D image, got shape {a.shape}")
    return a


def read_mask(path: Path) -> np.ndarray:
    import tifffile

    return tifffile.imread(path).astype(np.int32)


def cell_diameters(mask: np.ndarray, *, min_area: int = 1) -> np.ndarray:
    """Per-cell equivalent-circle diameters 2*sqrt(area/pi) of cells of >= min_area px."""
    counts = np.bincount(np.where(mask > 0, mask, 0).ravel())[1:]
    counts = counts[counts >= max(min_area, 1)]
    return 2.0 * np.sqrt(counts / np.pi)


def median_diameter(mask: np.ndarray, *, min_area: int = 16) -> float | None:
    """Median diameter of one label image (None if it has no cells)."""
    d = cell_diameters(mask, min_area=min_area)
    return float(np.median(d)) if d.size else None


def train_median_diameter(data: Path, source: str, *, min_area: int = 1) -> float:
    """Median cell diameter pooled over all cells of the source's TRAIN masks.

    This is a per-source constant known from training data only (val is never looked
    at), which is what we hand the peers at prediction time instead of the true
    per-image diameter: tlseg estimates diameter itself, so giving a peer the val
    image's true diameter would be unfair in its favour. (The StarDist and DeepSea
    scripts drop cells under 16 px, ``min_area=16``, as tlseg's targets do.)
    """
    d = np.concatenate([cell_diameters(read_mask(m), min_area=min_area)
                        for _, m in pairs(data, source, "train")])
    return float(np.median(d))


def write_masks(out_dir: Path, stem: str, masks: np.ndarray) -> Path:
    import tifffile

    out_dir.mkdir(parents=True, exist_ok=True)
    if masks.max() > 65535:
        raise SystemExit(f"{stem}: more than 65535 masks")
    path = out_dir / f"{stem}_masks.tif"
    tmp = out_dir / f".{stem}_masks.tif.tmp"
    tifffile.imwrite(tmp, masks.astype(np.uint16), compression="zlib")
    os.replace(tmp, path)
    return path


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label image to ``shape`` (labels stay labels)."""
    from skimage.transform import resize

    return resize(labels, shape, order=0, preserve_range=True, anti_aliasing=False).astype(
        labels.dtype
    )


def has_scorer() -> bool:
    """Whether tlseg's scorer can be imported in this venv (see :func:`score`)."""
    try:
        import tlseg.analysis.metrics  # noqa: F401
    except ImportError:
        return False
    return True


def score(pairs_true_pred) -> dict | None:
    """Dataset AP (pooled counts) with tlseg's own scorer, for sanity checks and
    calibration; None (with a warning) where tlseg is not installed in this venv."""
    if not has_scorer():
        eprint("tlseg is not installed in this venv, so nothing is scored here "
               "(`pip install --no-deps -e .` from the repository root adds its scorer); "
               "`python benchmarks/accuracy.py --peers-only` scores the masks written")
        return None
    from tlseg.analysis.metrics import match_counts, summarize

    return summarize([match_counts(t, p) for t, p in pairs_true_pred])


def format_scores(s: dict | None) -> str:
    """'AP50 .. AP75 .. mAP ..' of :func:`score`, or 'not scored'."""
    if s is None:
        return "not scored"
    return f"AP50 {s['ap50']:.3f} AP75 {s['ap75']:.3f} mAP {s['map']:.3f}"


def record_training(peer: str, facts: dict, path: Path = PEERS_RESULTS) -> Path:
    """Write a scratch peer's training facts to ``peers.json["training"][peer]`` (the
    rest of the file is kept)."""
    doc = json.loads(path.read_text()) if path.is_file() else {"benchmark": "peers"}
    doc.setdefault("training", {})[peer] = facts
    dump_json(path, doc)
    return path


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (Linux: ru_maxrss is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def predict_sources(model, data: Path, out_root: Path, sources, limit: int | None,
                    augment: bool = False, log=print) -> dict:
    """Segment every val image of ``sources`` with a cellpose 3 CellposeModel.

    Diameter policy: the median diameter of the source's TRAIN masks (see
    ``train_median_diameter``). Grayscale input, channels [0, 0]; Cellpose defaults for
    everything else (flow_threshold 0.4, cellprob_threshold 0, min_size 15).
    Writes ``out_root/<source>/<stem>_masks.tif``; returns a summary dict.
    """
    summary = {}
    for source in sources:
        diam = train_median_diameter(data, source)
        items = pairs(data, source, "val")
        if limit:
            items = items[:limit]
        out_dir = out_root / source
        times = []
        for img_path, _ in items:
            img = read_image(img_path)
            t = time.perf_counter()
            masks = model.eval(img, channels=[0, 0], diameter=diam, augment=augment)[0]
            times.append(time.perf_counter() - t)
            write_masks(out_dir, img_path.stem, masks)
            log(f"{source}/{img_path.stem}: {int(masks.max())} cells, {times[-1]:.1f} s")
        summary[source] = {"diameter_px": round(diam, 2), "n_images": len(items),
                           "seconds_per_image": round(float(np.mean(times)), 3),
                           "pred_dir": str(out_dir),
                           "gt_dir": str(tl_dir(data, source) / "val" / "masks")}
    return summary


def dump_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=2) + "\n")
    os.replace(tmp, path)


def eprint(*a):
    print(*a, file=sys.stderr, flush=True)
