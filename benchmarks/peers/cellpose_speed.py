"""Time Cellpose 3 CPU inference on a synthetic uint16 image (peer for tlseg's speed benchmark).

For each ``--size`` N a synthetic N x N uint16 image is made (bright disks of ~30 px
diameter on a grid with jitter, blurred, on a noisy background: ~1 cell per 45 x 45 px,
so e.g. ~8,000 cells at 4096^2) and segmented ``--repeats`` times with a cellpose 3
``CellposeModel`` (``CPnet``, the cyto/cyto2/cyto3 residual U-Net, nbase
[2,32,64,128,256]), ``diameter=30`` with the model's diam_mean forced to 30 (so the
image is run at its own size), channels [0, 0], cellpose 3 defaults otherwise
(tiles of 224 px, 10 % overlap, no augmentation, MKL-DNN if torch has it, dynamics and
mask creation included). Weights: the converted Cellpose cyto v1 net
(benchmarks/work/cellpose_cyto_v1/cyto_0.pth, made by cellpose_cyto_v1.py
--convert-only) if present, else ``--weights``, else random weights (timings of the
network are the same, but the mask step may then be unrepresentative: a warning and
``"weights": "random"`` are recorded).

One untimed warm-up run on a 256 x 256 image goes first (numba JIT, MKL-DNN set-up).
Output: one JSON line per repeat on stdout, then a summary line
``{"tool", "size", "repeats", "seconds_per_image" (median), "seconds_min", "seconds",
"peak_rss_mb", "n_masks", ...}``; ``--json OUT`` writes the summary (with all sizes as
a list if several were given). peak_rss_mb is the process's ru_maxrss, i.e. the peak
over everything this process did so far -- run one size per process (as the caller
does) for per-size memory.

Usage (from the repo root):
    benchmarks/.venv-cellpose/bin/python benchmarks/peers/cellpose_speed.py \\
        --size 1024 --repeats 3 --json OUT.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import time
import warnings
from pathlib import Path

import common as C
import numpy as np

DEFAULT_WEIGHTS = C.WORK / "cellpose_cyto_v1" / "cyto_0.pth"


def synthetic_image(n: int, diameter: float = 30.0, seed: int = 0) -> np.ndarray:
    """uint16 n x n image of blurred bright disks (~diameter px) on a noisy background."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed)
    step = 45
    r = diameter / 2
    img = np.zeros((n, n), np.float32)
    h = step // 2
    yy, xx = np.mgrid[-h:h + 1, -h:h + 1]
    for cy in range(h, n - h, step):
        for cx in range(h, n - h, step):
            jy, jx = rng.integers(-5, 6, 2)
            rad = r * rng.uniform(0.8, 1.2)
            disk = ((yy - jy) ** 2 + (xx - jx) ** 2) <= rad ** 2
            sl = (slice(cy - h, cy + h + 1), slice(cx - h, cx + h + 1))
            img[sl] = np.maximum(img[sl], disk * rng.uniform(0.6, 1.0))
    img = gaussian_filter(img, 1.5)
    img = 1000 + 3000 * img + rng.normal(0, 60, img.shape)
    return np.clip(img, 0, 65535).astype(np.uint16)


def make_model(weights: Path | None):
    from cellpose import models

    model = models.CellposeModel(gpu=False, pretrained_model=False, model_type=None,
                                 diam_mean=30.0, nchan=2)
    used = "random"
    if weights is not None and Path(weights).is_file():
        model.net.load_model(str(weights), device=model.device)
        used = str(weights)
    else:
        C.eprint("warning: random weights (no converted cyto v1 net found); network time is "
                 "representative, the mask step may not be")
    model.net.diam_mean.data[:] = 30.0  # run at the image's own size for diameter 30
    model.diam_mean = 30.0
    model.net.eval()
    return model, used


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--data", type=Path, default=C.DEFAULT_DATA,
                    help="unused (synthetic image); accepted for a uniform interface")
    ap.add_argument("--size", type=int, nargs="+", default=[1024],
                    help="image side(s) in px, e.g. 1024 2048 4096")
    ap.add_argument("--image", type=Path,
                    help="time this TIFF instead of a synthetic image (overrides --size)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--diameter", type=float, default=30.0)
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS,
                    help="cellpose 3 CPnet state dict (default: converted cyto v1)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, help="write the summary here")
    args = ap.parse_args()

    C.set_threads(args.threads)
    logging.disable(logging.WARNING)  # keep stdout/stderr quiet
    warnings.filterwarnings("ignore", message="Sparse invariant checks")
    from importlib.metadata import version

    import torch

    model, used = make_model(args.weights)
    model.eval(synthetic_image(256, args.diameter), channels=[0, 0],
               diameter=args.diameter)  # warm-up, untimed

    summaries = []
    sizes = [None] if args.image else args.size
    for n in sizes:
        if args.image:
            import tifffile

            img = tifffile.imread(args.image)
            n = img.shape[0]
        else:
            img = synthetic_image(n, args.diameter)
        secs, n_masks = [], 0
        for i in range(args.repeats):
            t = time.perf_counter()
            masks = model.eval(img, channels=[0, 0], diameter=args.diameter)[0]
            secs.append(time.perf_counter() - t)
            n_masks = int(masks.max())
            print(json.dumps({"tool": "cellpose3", "size": n, "repeat": i,
                              "seconds": round(secs[-1], 3), "n_masks": n_masks,
                              "peak_rss_mb": round(C.peak_rss_mb(), 1)}), flush=True)
        s = {"tool": "cellpose3", "size": n, "repeats": args.repeats,
             "seconds_per_image": round(statistics.median(secs), 3),
             "seconds_min": round(min(secs), 3), "seconds": [round(x, 3) for x in secs],
             "peak_rss_mb": round(C.peak_rss_mb(), 1), "n_masks": n_masks,
             "diameter": args.diameter, "threads": args.threads,
             "torch_threads": torch.get_num_threads(), "mkldnn": bool(model.mkldnn),
             "weights": used, "cellpose": version("cellpose"), "torch": torch.__version__}
        print(json.dumps(s), flush=True)
        summaries.append(s)
    if args.json:
        C.dump_json(args.json, summaries[0] if len(summaries) == 1 else summaries)
    return 0


if __name__ == "__main__":
    sys.exit(main())
