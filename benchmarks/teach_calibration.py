"""Does a taught model's own diameter estimate match the user's cells? Training images.

Run (after ``benchmarks/learning_curve.py``, whose models it reads)::

    python benchmarks/learning_curve.py --data ../shared/data --epochs 10
    python benchmarks/teach_calibration.py --data ../shared/data

For the base model of the learning curve (never trained on CHO) and every model it
fine-tuned on CHO ROIs, the uncalibrated automatic diameter (``diameter_calibration``
set to 1) is compared, on each of the 20 ``bbbc030-cho`` *training* images, with the
image's true median cell diameter; printed: the median and quartiles of true /
estimated, next to the factor that :func:`tlseg.teach.calibrate_to_rois` chose from the
ROIs. This is the evidence for the prior in :func:`tlseg.teach.roi_calibration` (a
taught model's reading is nearly right); val images are not read.

Results: ``benchmarks/results/teach_calibration.json``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, write_results  # noqa: E402

from tlseg.cli import set_threads  # noqa: E402
from tlseg.io import read_image, read_labels  # noqa: E402
from tlseg.model import Model  # noqa: E402
from tlseg.targets import median_diameter  # noqa: E402


def ratios(model: Model, pairs) -> list[float]:
    """true / uncalibrated estimated diameter on each (image, true diameter) pair."""
    model = Model(replace(model.config, diameter_calibration=1.0), model.net)
    return [t / model.estimate_diameter(image) for image, t in pairs]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = p.parse_args(argv)
    set_threads()
    train = args.data / "tl" / "bbbc030-cho" / "train"
    pairs = [(read_image(f), median_diameter(read_labels(train / "masks" / f.name)))
             for f in sorted((train / "images").glob("*.tif"))]
    folders = [WORK / "base-no-cho-s8"] + sorted((WORK / "learning_curve").glob("*/model"))
    rows = {}
    for folder in folders:
        if not (folder / "weights.pt").is_file():
            continue
        model = Model.from_folder(folder)
        r = np.array(ratios(model, pairs))
        name = folder.name if folder.name != "model" else folder.parent.name
        rows[name] = {"median": round(float(np.median(r)), 3),
                      "quartiles": [round(float(q), 3) for q in np.percentile(r, [25, 75])],
                      "factor_from_rois": model.config.diameter_calibration}
        print(f"{name:22s} true/estimated {rows[name]['median']:.3f} "
              f"(IQR {rows[name]['quartiles'][0]:.3f}-{rows[name]['quartiles'][1]:.3f}); "
              f"calibration {model.config.diameter_calibration:.3f}", flush=True)
    out = write_results("teach_calibration", argv=argv, payload={
        "images": "bbbc030-cho train (20)", "models": rows})
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
