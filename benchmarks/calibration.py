"""Calibration from a nuclear stain on real paired fields: `tlseg plate calibrate`.

Per experiment of ``paired/aisegcell-s10`` (brightfield + nuclear stain, nucleus
ground truth), its fields are laid out as one ImageXpress plate (one well per field),
the shipped ``tl-cells`` is calibrated on the first ``--k`` fields by name, and the
other fields of the experiment are counted with the base and the calibrated model,
both at one diameter estimated on the calibration fields. Counts are compared with the
true nucleus count (one nucleus per cell): per field, mean |relative error| over fields
with >= 20 true nuclei, mean absolute error in cells below 20.

    python benchmarks/calibration.py --data ../shared/data [--experiments E ...] [--k 3]

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


def summary(rows, column):
    true = np.array([r["true"] for r in rows], float)
    got = np.array([r[column] for r in rows], float)
    return {**count_errors(got, true), "total": int(got.sum()), "true_total": int(true.sum())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--experiments", nargs="*", help="default: every experiment")
    p.add_argument("--k", type=int, default=3, help="calibration fields per experiment")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--out", help="results file (default benchmarks/results/calibration.json)")
    args = p.parse_args(argv)
    logging.getLogger("tlseg").setLevel(logging.INFO)
    logging.getLogger("tlseg").addHandler(logging.StreamHandler())
    tlseg.set_threads()
    from pathlib import Path

    src = Path(args.data) / "paired" / "aisegcell-s10"
    table = pd.read_csv(src / "fields.csv").sort_values("field")
    experiments = args.experiments or sorted(table["experiment"].unique())
    base = tlseg.load_model("tl-cells")
    results = {}
    for exp in experiments:
        fields = table[table["experiment"] == exp]
        work = WORK / "calibration" / exp
        shutil.rmtree(work, ignore_errors=True)
        wells = layout_experiment(src, fields, work / "plate")
        calib = [wells[f] for f in fields["field"][: args.k]]
        t0 = time.perf_counter()
        model = tlseg.calibrate(work / "plate", work / "model", tl_channel="w1",
                                nuclei_channel="w2", wells=calib, steps=args.steps)
        seconds = time.perf_counter() - t0
        d = model.card["calibration"]["diameter"]
        rows = []
        for f, n_true in zip(fields["field"][args.k:], fields["n_nuclei"][args.k:]):
            image = tlseg.read_image(src / "tl" / f"{f}.tif")
            rows.append({"field": f, "true": int(n_true),
                         "base": int(base.segment(image, diameter=d).max()),
                         "calibrated": int(model.segment(image, diameter=d).max())})
        results[exp] = {"calibration_fields": list(fields["field"][: args.k]),
                        "diameter": d, "calibration_s": round(seconds, 1),
                        "labels": model.card["calibration"]["labels"], "fields": rows,
                        "base": summary(rows, "base"),
                        "calibrated": summary(rows, "calibrated")}
        print(exp, "base", results[exp]["base"], "\n   calibrated", results[exp]["calibrated"])
    write_results("calibration", {"k": args.k, "steps": args.steps, "experiments": results},
                  out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
