"""What kind of errors does tl-cells make on the val splits?

Run::

    python benchmarks/error_analysis.py --data ../shared/data

Each image is segmented as in ``accuracy.py`` (diameter estimated); predicted and true
cells are matched one-to-one at IoU >= 0.5 (Hungarian, as ``tlseg evaluate``). Every
unmatched cell is put in one class:

- false positive *on background*: more than half of the predicted cell lies on
  unlabelled pixels (debris, or a cell the annotators left out);
- false positive *split*: more than 60 % of it lies inside one true cell that another
  prediction matches — the model drew two cells where the annotation has one (a cell cut
  in two, or two touching cells annotated as one: look at the gallery to tell which);
- false positive *fragment*: more than 60 % of it lies inside one true cell that no
  prediction matches (a cell cut in pieces);
- false negative *merged*: its best-overlapping prediction also covers at least 20 % of
  another true cell (touching cells not separated);
- false negative *missed*: less than 30 % of it is covered by any prediction;
- *other*: poorly outlined (overlap below IoU 0.5).

With ``--gallery SOURCE`` the split and fragment false positives of that source are
drawn, 160 px around each (true outlines green, predicted red, the false positive
yellow), into ``benchmarks/results/error_gallery_<SOURCE>.png``.

Results: ``benchmarks/results/error_analysis.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from skimage.io import imsave
from skimage.segmentation import find_boundaries

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULTS, VAL_SOURCES, val_pairs, write_results  # noqa: E402

from tlseg.io import atomic_path, read_image, read_labels  # noqa: E402
from tlseg.metrics import matched_pairs, overlap_counts  # noqa: E402
from tlseg.model import Model  # noqa: E402

CLASSES = ("tp", "fp_background", "fp_split", "fp_fragment", "fp_other", "fn_merged",
           "fn_missed", "fn_other")
CROP = 160


def classify(true: np.ndarray, pred: np.ndarray, *, ids: dict | None = None) -> dict:
    """Counts of each class in CLASSES for one image; ``ids``, when given, collects the
    predicted ids of the false positives by class."""
    inter = overlap_counts(true, pred).astype(float)
    t_area, p_area = inter.sum(1), inter.sum(0)
    t_ids = np.flatnonzero(t_area[1:]) + 1
    p_ids = np.flatnonzero(p_area[1:]) + 1
    out = dict.fromkeys(CLASSES, 0)
    pairs = matched_pairs(true, pred, 0.5)
    matched_t, matched_p = {i for i, _ in pairs}, {j for _, j in pairs}
    out["tp"] = len(matched_t)
    for j in p_ids:
        if j in matched_p:
            continue
        host = int(np.argmax(inter[1:, j])) + 1
        if inter[0, j] / p_area[j] > 0.5:
            kind = "fp_background"
        elif inter[host, j] / p_area[j] > 0.6:
            kind = "fp_split" if host in matched_t else "fp_fragment"
        else:
            kind = "fp_other"
        out[kind] += 1
        if ids is not None:
            ids.setdefault(kind, []).append(int(j))
    for i in t_ids:
        if i in matched_t:
            continue
        if 1 - inter[i, 0] / t_area[i] < 0.3:
            out["fn_missed"] += 1
            continue
        j = int(np.argmax(inter[i, 1:])) + 1
        covers = inter[1:, j] / np.maximum(t_area[1:], 1)
        out["fn_merged" if (covers >= 0.2).sum() >= 2 else "fn_other"] += 1
    return out


def crop_tile(image: np.ndarray, true: np.ndarray, pred: np.ndarray, j: int) -> np.ndarray:
    """An RGB tile (CROP x CROP, floats in [0, 1]) centred on predicted cell ``j``: true
    outlines green, predicted red, cell ``j``'s outline yellow."""
    yy, xx = np.nonzero(pred == j)
    y0 = int(np.clip(yy.mean() - CROP // 2, 0, max(image.shape[0] - CROP, 0)))
    x0 = int(np.clip(xx.mean() - CROP // 2, 0, max(image.shape[1] - CROP, 0)))
    sl = np.s_[y0:y0 + CROP, x0:x0 + CROP]
    lo, hi = np.percentile(image, [1, 99.5])
    rgb = np.repeat(np.clip((image[sl] - lo) / max(hi - lo, 1e-6), 0, 1)[..., None], 3, -1)
    rgb[find_boundaries(true[sl])] = (0, 1, 0)
    p = pred[sl]
    rgb[find_boundaries(p)] = (1, 0, 0)
    rgb[find_boundaries(p) & (p == j)] = (1, 1, 0)
    tile = np.zeros((CROP, CROP, 3))
    tile[:rgb.shape[0], :rgb.shape[1]] = rgb
    return tile


def save_gallery(tiles: list[np.ndarray], path: Path, columns: int = 5) -> None:
    """Tiles in rows of ``columns``, written as an 8-bit PNG."""
    blank = np.zeros((CROP, CROP, 3))
    tiles = tiles + [blank] * (-len(tiles) % columns)
    rows = [np.concatenate(tiles[i:i + columns], 1) for i in range(0, len(tiles), columns)]
    with atomic_path(path) as tmp:
        imsave(tmp, (np.concatenate(rows, 0) * 255).astype(np.uint8), check_contrast=False)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--model", default="tl-cells")
    p.add_argument("--gallery", choices=VAL_SOURCES, nargs="*", default=[],
                   help="draw these sources' split and fragment false positives")
    args = p.parse_args(argv)
    model = Model.load(args.model)
    results, galleries = {}, {}
    for source in VAL_SOURCES:
        total = dict.fromkeys(CLASSES, 0)
        n_true, tiles = 0, []
        for img, mask in val_pairs(Path(args.data), source):
            image = read_image(img)
            true = read_labels(mask, shape=image.shape)
            pred, _ = model.predict_instances(image)
            ids: dict = {}
            for k, v in classify(true, pred, ids=ids).items():
                total[k] += v
            n_true += len(np.unique(true[true > 0]))
            if source in args.gallery:
                tiles += [crop_tile(image, true, pred, j)
                          for j in ids.get("fp_split", []) + ids.get("fp_fragment", [])]
        results[source] = {**total, "n_true": n_true}
        print(source, results[source], flush=True)
        if tiles:
            path = RESULTS / f"error_gallery_{source}.png"
            save_gallery(tiles, path)
            galleries[source] = str(path.relative_to(RESULTS.parents[1]))
            print(f"written {path}")
    out = write_results("error_analysis", argv=argv, payload={
        "model": args.model, "results": results, "galleries": galleries})
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
