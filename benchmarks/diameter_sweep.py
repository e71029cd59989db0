"""Label-free counts on the real paired fields at a ladder of given diameters.

Run::

    python benchmarks/diameter_sweep.py --data ../shared/data [--model tl-cells]

A diagnostic beside ``count_validation.py``: is a field's count wrong because its
diameter estimate is off, or wrong at every diameter? Each paired field (the same plate
layout as ``count_validation.py``) is segmented with ``--diameter`` set to each rung of
a ladder; the automatic estimate is printed beside it. For aiSEGcell fields the ladder
is in multiples of the median true-nucleus diameter (cells there are round, a little
larger than their nucleus); the neuronal quadrants, without ground truth, get fixed
diameters, 30 px (the canonical size: no resampling) and 31 px among them.
Results: ``benchmarks/results/diameter_sweep.json``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
import tifffile
from skimage.measure import regionprops_table

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_and_model, write_results  # noqa: E402
from count_validation import layout_plate  # noqa: E402

NUCLEUS_MULTIPLES = (1.0, 1.5, 2.0, 2.5)
ISL_DIAMETERS = (20.0, 25.0, 30.0, 31.0, 36.0, 47.0)


def main(argv=None) -> int:
    args, model = data_and_model(__doc__, argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plate = Path(tmp) / "plate"
        fields = layout_plate(args.data, plate)
        for f in fields.itertuples():
            image = tifffile.imread(plate / f"paired_{f.well}_s1_w1.tif").astype(np.float32)
            row = {"well": f.well, "field": f.field, "true_count": f.true_count,
                   "estimated_diameter": round(model.estimate_diameter(image) or 0.0, 1)}
            if f.source == "aisegcell":
                nuc = tifffile.imread(args.data / "paired" / "aisegcell" / "nuc_labels"
                                      / f"{f.field}.tif")
                nd = float(np.median(regionprops_table(nuc, properties=["equivalent_diameter_area"])
                                     ["equivalent_diameter_area"]))
                row["nucleus_diameter"] = round(nd, 1)
                ladder = [round(k * nd, 1) for k in NUCLEUS_MULTIPLES]
            else:
                ladder = list(ISL_DIAMETERS)
            counts = {}
            for d in ladder:
                labels, _ = model.predict_instances(image, diameter=d)
                counts[str(d)] = int(labels.max())
            row["counts_by_diameter"] = counts
            rows.append(row)
            print(f"{f.well} {f.field[-28:]:>28s} true {f.true_count:>5} "
                  f"estimate {row['estimated_diameter']:5.1f} px  counts {counts}", flush=True)
    out = write_results("diameter_sweep", argv=argv, payload={
        "model": args.model, "fields": rows,
    })
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
