"""Which size statistic should the diameter estimate use? Compared on held-out images.

Run::

    python benchmarks/diameter_statistic.py --data ../shared/data

``tlseg.diameter.refine_diameter`` segments a central window and takes the equivalent diameter of
the instances' :func:`tlseg.diameter.typical_area`. Two statistics are compared on the
held-out training images that ``tlseg train`` tuned tl-cells on (the same split; val is
never read):

- ``area-weighted``: the area-weighted median (shipped);
- ``median above a quarter``: the plain median of the objects at least a quarter of the
  area-weighted median (specks still dropped, merged pairs no longer dominate).

For each: the uncalibrated estimate over the true median diameter per image, and the
held-out pooled AP@0.5 at every calibration factor (:func:`tlseg.tune.calibrate_diameter`,
the rule that sets the shipped factor). Results:
``benchmarks/results/diameter_statistic.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_and_model, tl_cells_heldout, write_results  # noqa: E402

import tlseg.diameter as td  # noqa: E402
from tlseg.targets import median_diameter  # noqa: E402
from tlseg.tune import _image_at_canonical, calibrate_diameter  # noqa: E402

SHIPPED = td.typical_area


def median_above_a_quarter(areas) -> float:
    areas = np.asarray(areas, dtype=float)
    areas = areas[areas > 0]
    return float(np.median(areas[areas >= SHIPPED(areas) / 4]))


def main(argv=None) -> int:
    args, model = data_and_model(__doc__, argv)
    held = tl_cells_heldout(args.data, model.config.canonical_diameter)
    out = {}
    for name, fn in (("area-weighted", SHIPPED), ("median above a quarter", median_above_a_quarter)):
        td.typical_area = fn
        ratios = []
        for s in held:
            d = model.estimate_diameter(_image_at_canonical(s), calibrate=False)
            true = median_diameter(np.where(s.labels > 0, s.labels, 0))
            ratios.append({"image": s.name, "source": s.source, "estimate_over_true":
                           round(d / true, 3) if d else None})
        factor, record = calibrate_diameter(model, held)
        curve = record["pooled_ap50_by_factor"]
        out[name] = {"estimate_over_true": ratios, "best_factor": factor,
                     "best_pooled_ap50": curve[factor], "pooled_ap50_by_factor": curve}
        r = [x["estimate_over_true"] for x in ratios if x["estimate_over_true"]]
        print(f"{name}: estimate/true {min(r):.2f}-{max(r):.2f}; best factor {factor} "
              f"-> held-out pooled AP@0.5 {curve[factor]:.3f}", flush=True)
    td.typical_area = SHIPPED
    path = write_results("diameter_statistic", argv=argv, payload={
        "model": args.model, "n_held_out": len(held), "results": out})
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
