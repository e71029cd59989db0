"""What kind of errors does tl-cells make on the val splits?

Run::

    python benchmarks/error_analysis.py --data ../shared/data

Each image is segmented as in ``accuracy.py`` (diameter estimated); predicted and true
cells are matched one-to-one at IoU >= 0.5 (Hungarian, as ``tlseg evaluate``). Every
unmatched cell is put in one class:

- false positive *on background*: more than half of the predicted cell lies on
  unlabelled pixels (debris, or a cell the annotators left out);
- false positive *fragment*: more than 60 % of it lies inside one true cell (a cell cut
  in pieces);
- false negative *merged*: its best-overlapping prediction also covers at least 20 % of
  another true cell (touching cells not separated);
- false negative *missed*: less than 30 % of it is covered by any prediction;
- *other*: poorly outlined (overlap below IoU 0.5).

Results: ``benchmarks/results/error_analysis.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VAL_SOURCES, val_pairs, write_results  # noqa: E402

from tlseg.io import read_image, read_labels  # noqa: E402
from tlseg.metrics import overlap_counts  # noqa: E402
from tlseg.model import Model  # noqa: E402

CLASSES = ("tp", "fp_background", "fp_fragment", "fp_other", "fn_merged", "fn_missed",
           "fn_other")


def classify(true: np.ndarray, pred: np.ndarray) -> dict:
    """Counts of each class in CLASSES for one image."""
    inter = overlap_counts(true, pred).astype(float)
    t_area, p_area = inter.sum(1), inter.sum(0)
    t_ids = np.flatnonzero(t_area[1:]) + 1
    p_ids = np.flatnonzero(p_area[1:]) + 1
    out = dict.fromkeys(CLASSES, 0)
    if len(t_ids) and len(p_ids):
        sub = inter[np.ix_(t_ids, p_ids)]
        iou = sub / (t_area[t_ids, None] + p_area[None, p_ids] - sub)
        r, c = linear_sum_assignment(-iou)
        ok = iou[r, c] >= 0.5
        matched_t, matched_p = set(t_ids[r[ok]]), set(p_ids[c[ok]])
    else:
        matched_t, matched_p = set(), set()
    out["tp"] = len(matched_t)
    for j in p_ids:
        if j in matched_p:
            continue
        if inter[0, j] / p_area[j] > 0.5:
            out["fp_background"] += 1
        elif inter[1:, j].max() / p_area[j] > 0.6:
            out["fp_fragment"] += 1
        else:
            out["fp_other"] += 1
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


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--model", default="tl-cells")
    args = p.parse_args(argv)
    model = Model.load(args.model)
    results = {}
    for source in VAL_SOURCES:
        total = dict.fromkeys(CLASSES, 0)
        n_true = 0
        for img, mask in val_pairs(Path(args.data), source):
            image = read_image(img)
            true = read_labels(mask, shape=image.shape)
            pred, _ = model.predict_instances(image)
            for k, v in classify(true, pred).items():
                total[k] += v
            n_true += len(np.unique(true[true > 0]))
        results[source] = {**total, "n_true": n_true}
        print(source, results[source], flush=True)
    out = write_results("error_analysis", {
        "command": "python benchmarks/error_analysis.py " + " ".join(argv or sys.argv[1:]),
        "model": args.model, "results": results})
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
