"""Calibration from a nuclear stain on real paired fields: `tlseg plate calibrate`.

Per experiment of ``paired/aisegcell-s10`` (brightfield + nuclear stain, nucleus
ground truth), its fields are laid out as one ImageXpress plate (one well per field),
the shipped ``tl-cells`` is calibrated on its ``--k`` fields with the most nuclei (default
1, the targets' case: one stained field; a lab calibrates on a well-populated well, and
calibration needs 30 nuclei), and the other fields of the experiment are
counted with the base and the calibrated model, both at one diameter for the experiment
estimated as ``tlseg plate run`` estimates a plate's (the median of the estimates on 4
fields spread over it, weighted by the cells found at each), since a single dense field
can mislead the estimate. Counts are compared with the true nucleus count and with the true
whole-cell count (the masks are connected components, so touching cells count as one;
in 210930MA20 and 220524DS30 the nucleus masks miss up to a third of the cells): per
field, mean |relative error| over fields with >= 20 true objects, mean absolute error in
cells below 20, the paired t-test over the experiment's counted fields.

    python benchmarks/calibration.py --data ../shared/data [--experiments E ...] [--k 1]

Results: ``benchmarks/results/calibration.json``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time

import numpy as np
import pandas as pd
import tifffile
from common import WORK, count_errors, write_results

import tlseg
from tlseg.plate.run import weighted_diameter
from tlseg.plate.validate import agreement


def layout_experiment(src, fields: pd.DataFrame, plate):
    """One well per field: A01, A02, ... (12 columns a row)."""
    plate.mkdir(parents=True, exist_ok=True)
    wells = {}
    for i, f in enumerate(fields["field"]):
        well = f"{'ABCDEFGH'[i // 12]}{i % 12 + 1:02d}"
        wells[f] = well
        for channel, folder in (("w1", "tl"), ("w2", "nuc")):
            image = tifffile.imread(src / folder / f"{f}.tif")
            tifffile.imwrite(plate / f"exp_{well}_s1_{channel}.tif", image)
    return wells


def summary(rows, column, truth="true"):
    true = np.array([r[truth] for r in rows], float)
    got = np.array([r[column] for r in rows], float)
    out = {**count_errors(got, true), "total": int(got.sum()), "true_total": int(true.sum())}
    if len(rows) >= 3:
        a = agreement(got, true)
        out.update(paired_p=a.get("paired_p"), bias=a.get("bias"))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--experiments", nargs="*", help="default: every experiment")
    p.add_argument("--k", type=int, default=1, help="calibration fields per experiment")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", help="results file (default benchmarks/results/calibration.json)")
    args = p.parse_args(argv)
    logging.getLogger("tlseg").setLevel(logging.INFO)
    logging.getLogger("tlseg").addHandler(logging.StreamHandler())
    tlseg.set_threads()
    from pathlib import Path

    src = Path(args.data) / "paired" / "aisegcell-s10"
    table = pd.read_csv(src / "fields.csv").sort_values(["n_nuclei", "field"],
                                                         ascending=[False, True])
    experiments = args.experiments or sorted(table["experiment"].unique())
    base = tlseg.load_model("tl-cells")
    results = {}
    for exp in experiments:
        fields = table[table["experiment"] == exp]
        work = WORK / "calibration" / exp
        shutil.rmtree(work, ignore_errors=True)
        wells = layout_experiment(src, fields, work / "plate")
        calib = [wells[f] for f in fields["field"][: args.k]]
        by_name = fields.sort_values("field")["field"].tolist()
        spread = [by_name[i] for i in
                  np.linspace(0, len(by_name) - 1, min(4, len(by_name))).round().astype(int)]
        d = weighted_diameter(base, [tlseg.read_image(src / "tl" / f"{f}.tif") for f in spread])
        t0 = time.perf_counter()
        model = tlseg.calibrate(work / "plate", work / "model", tl_channel="w1",
                                nuclei_channel="w2", wells=calib, steps=args.steps,
                                diameter=d)
        seconds = time.perf_counter() - t0
        rows = []
        rest = fields.iloc[args.k:]
        for f, n_true, n_cells in zip(rest["field"], rest["n_nuclei"], rest["n_cells"]):
            image = tlseg.read_image(src / "tl" / f"{f}.tif")
            rows.append({"field": f, "true": int(n_true), "true_cells": int(n_cells),
                         "base": int(base.segment(image, diameter=d).max()),
                         "calibrated": int(model.segment(image, diameter=d).max())})
        results[exp] = {"calibration_fields": list(fields["field"][: args.k]),
                        "diameter": d, "calibration_s": round(seconds, 1),
                        "labels": model.card["calibration"]["labels"],
                        "instances": model.card["calibration"].get("instances"),
                        "fields": rows,
                        "base": summary(rows, "base"),
                        "calibrated": summary(rows, "calibrated"),
                        "base_vs_cells": summary(rows, "base", "true_cells"),
                        "calibrated_vs_cells": summary(rows, "calibrated", "true_cells")}
        for k in ("base", "calibrated", "base_vs_cells", "calibrated_vs_cells"):
            print(f"{exp} {k:>20}", results[exp][k])
    write_results("calibration", {"k": args.k, "steps": args.steps, "experiments": results},
                  out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
