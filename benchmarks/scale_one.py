"""Does a model segment differently when an image needs no resampling at all?

Run::

    python benchmarks/scale_one.py --data ../shared/data [--model tl-cells]

Every image is zoomed so that its cells are the canonical 30 px across; when they
already are (``--diameter`` within 0.1 % of 30), :func:`tlseg.preprocess.rescale` hands
the raw pixels to the network untouched. Training crops, by contrast, are always
interpolated (a random rotation and zoom per crop), so the network never saw a raw pixel
grid. On the neuronal phase-contrast field of ``count_validation.py`` (out of domain)
that gap showed: 30.0 px vs 30.05 px gave 36 vs 12 cells in one quadrant
(``diameter_sweep.json``). This benchmark asks whether it matters in domain.

Each val image of the three fully annotated label-free sources is binned by an integer
factor (the mean of k x k pixels, as a camera bins) so that its median cell is as close
to 30 px as binning allows: a raw image whose cells are about canonical size, as a user
at the matching magnification records it. It is then segmented at three given diameters:

- ``30.0``: no resampling, the raw grid reaches the network;
- ``30.06``: a 0.2 % shrink, a near-identity bilinear resample (cells the same size);
- its true median diameter (binned), the reference.

AP@0.5 is pooled per source (val masks, binned by the mode of each block). Val is read
for reporting only; nothing is tuned here. Results: ``benchmarks/results/scale_one.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import tifffile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import VAL_SOURCES, data_and_model, val_pairs, write_results  # noqa: E402

from tlseg.metrics import match_counts, summarize  # noqa: E402
from tlseg.targets import median_diameter  # noqa: E402

CANONICAL = 30.0
DIAMETERS = {"raw grid (30.0 px)": 30.0, "near-identity resample (30.06 px)": 30.06}


def bin_image(image: np.ndarray, k: int) -> np.ndarray:
    """Mean of k x k blocks (the trailing rows/columns that do not fill a block dropped)."""
    h, w = (image.shape[0] // k) * k, (image.shape[1] // k) * k
    return image[:h, :w].astype(np.float32).reshape(h // k, k, w // k, k).mean(axis=(1, 3))


def bin_labels(labels: np.ndarray, k: int) -> np.ndarray:
    """Labels of k x k blocks: the block's centre pixel (keeps instance ids, no blending)."""
    h, w = (labels.shape[0] // k) * k, (labels.shape[1] // k) * k
    return labels[k // 2 : h : k, k // 2 : w : k]


def main(argv=None) -> int:
    args, model = data_and_model(__doc__, argv)
    out = {}
    for source in VAL_SOURCES:
        pairs = val_pairs(args.data, source)
        if not pairs:
            raise SystemExit(f"no val images for {source} under {args.data}")
        counts = {name: [] for name in (*DIAMETERS, "true diameter")}
        factors, binned_d = [], []
        for image_path, mask_path in pairs:
            image, labels = tifffile.imread(image_path), tifffile.imread(mask_path)
            k = max(1, round(median_diameter(labels) / CANONICAL))
            image, labels = bin_image(image, k), bin_labels(labels, k)
            d = median_diameter(labels)
            factors.append(k)
            binned_d.append(d)
            for name, given in (*DIAMETERS.items(), ("true diameter", d)):
                pred, _ = model.predict_instances(image, diameter=given)
                counts[name].append(match_counts(labels, pred))
        scores = {name: round(summarize(c)["ap50"], 3) for name, c in counts.items()}
        out[source] = {"n_images": len(pairs), "binning": sorted(set(factors)),
                       "median_binned_diameter": round(float(np.median(binned_d)), 1),
                       "ap50": scores}
        print(f"{source}: binned x{sorted(set(factors))}, cells "
              f"{np.median(binned_d):.1f} px; AP@0.5 {scores}", flush=True)
    path = write_results("scale_one", argv=argv, payload={"model": args.model,
                                                          "results": out})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
