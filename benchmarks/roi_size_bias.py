"""How biased is the cell size measured inside a ROI?

Run::

    python benchmarks/roi_size_bias.py --data ../shared/data

A taught model learns its scale from the ROIs: the median diameter of the *whole* cells
in them (``tlseg.targets.whole_cell_diameters``; cells cut by a ROI's edge are left
out). Large cells are cut more often, so that median is biased low. Per train image of
each label-free source, 20 random 256 x 256 boxes (positions holding at least one cell
centre, as ``learning_curve.py`` draws them) are measured three ways against the
image's full-mask median diameter (what the base models train at):

- ``whole``: the plain median of the whole cells in the box;
- ``weighted``: the same cells weighted by the Miles-Lantuejoul edge correction
  1 / ((H - h) (W - w)), a cell's chance of lying wholly inside a random H x W box
  being proportional to that area for a bounding box of h x w;
- the median over an image's boxes of each, divided by the full-mask median.

Results: ``benchmarks/results/roi_size_bias.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from skimage.measure import regionprops

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VAL_SOURCES, split_pairs, write_results  # noqa: E402

from tlseg.io import read_labels  # noqa: E402
from tlseg.metrics import weighted_median  # noqa: E402
from tlseg.targets import median_diameter  # noqa: E402

ROI = 256
BOXES = 20


def box_medians(labels: np.ndarray, box) -> tuple[float, float] | None:
    """Plain and edge-corrected median diameter of the cells wholly inside ``box``."""
    y0, x0, y1, x1 = box
    h, w = y1 - y0, x1 - x0
    diam, weight = [], []
    for r in regionprops(labels[y0:y1, x0:x1]):
        r0, c0, r1, c1 = r.bbox
        if r0 == 0 or c0 == 0 or r1 == h or c1 == w:
            continue  # cut by the box's edge
        diam.append(2.0 * np.sqrt(r.area / np.pi))
        weight.append(1.0 / ((h - (r1 - r0) + 1) * (w - (c1 - c0) + 1)))
    if not diam:
        return None
    return float(np.median(diam)), weighted_median(diam, weight)


def random_box(labels: np.ndarray, rng, tries: int = 1000):
    centres = [r.centroid for r in regionprops(labels)]
    h, w = labels.shape
    for _ in range(tries):
        y0, x0 = int(rng.integers(0, h - ROI + 1)), int(rng.integers(0, w - ROI + 1))
        if any(y0 <= cy < y0 + ROI and x0 <= cx < x0 + ROI for cy, cx in centres):
            return y0, x0, y0 + ROI, x0 + ROI
    return None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    results = {}
    print(f"{'source':14s} {'images':>6s} {'whole / full':>14s} {'weighted / full':>16s}"
          "   (median over images; 5th-95th percentile)")
    for source in VAL_SOURCES:
        ratios = []
        for _, mask in split_pairs(args.data, source, "train"):
            labels = read_labels(mask)
            full = median_diameter(labels)
            if full is None or min(labels.shape) < ROI:
                continue
            per_box = [box_medians(labels, b) for b in
                       (random_box(labels, rng) for _ in range(BOXES)) if b is not None]
            per_box = [m for m in per_box if m is not None]
            if per_box:
                whole, weighted = np.median(per_box, axis=0)
                ratios.append((whole / full, weighted / full))
        r = np.array(ratios)
        results[source] = {
            "images": len(r),
            "whole_over_full": {"median": float(np.median(r[:, 0])),
                                "p5": float(np.percentile(r[:, 0], 5)),
                                "p95": float(np.percentile(r[:, 0], 95))},
            "weighted_over_full": {"median": float(np.median(r[:, 1])),
                                   "p5": float(np.percentile(r[:, 1], 5)),
                                   "p95": float(np.percentile(r[:, 1], 95))},
        }
        a, b = results[source]["whole_over_full"], results[source]["weighted_over_full"]
        print(f"{source:14s} {len(r):6d} {a['median']:8.3f} ({a['p5']:.2f}-{a['p95']:.2f})"
              f" {b['median']:8.3f} ({b['p5']:.2f}-{b['p95']:.2f})")
    out = write_results("roi_size_bias", argv=argv, payload={
        "roi": ROI, "boxes_per_image": BOXES, "seed": args.seed, "results": results})
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
