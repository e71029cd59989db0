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

With ``--leave-one-out`` every field of an experiment is counted once, by a model
calibrated on the experiment's other fields (the ``--k`` of them with the most nuclei;
each calibration then sees only its own fields and the left-out one), and the agreement
is also pooled over all fields.

    python benchmarks/calibration.py --data ../shared/data [--experiments E ...] [--k 1]
    python benchmarks/calibration.py --data ../shared/data --leave-one-out --k 1

Results: ``benchmarks/results/calibration.json``, one entry per protocol (``one_field``,
``leave_one_out``).
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import time

import numpy as np
import pandas as pd
import tifffile
from common import WORK, count_errors, update_results

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


def count_fields(base, model, src, fields, d):
    """Base and calibrated counts of ``fields`` (rows of fields.csv) at diameter ``d``."""
    rows = []
    for f, n_true, n_cells in zip(fields["field"], fields["n_nuclei"], fields["n_cells"]):
        image = tlseg.read_image(src / "tl" / f"{f}.tif")
        rows.append({"field": f, "true": int(n_true), "true_cells": int(n_cells),
                     "base": int(base.segment(image, diameter=d).max()),
                     "calibrated": int(model.segment(image, diameter=d).max())})
    return rows


def summaries(rows) -> dict:
    return {"base": summary(rows, "base"), "calibrated": summary(rows, "calibrated"),
            "base_vs_cells": summary(rows, "base", "true_cells"),
            "calibrated_vs_cells": summary(rows, "calibrated", "true_cells")}


def calibrate_on(base, work, plate, wells, fields, d, steps):
    """Calibrate ``base`` on ``fields`` (their wells) into ``work/model``."""
    shutil.rmtree(work / "model", ignore_errors=True)
    t0 = time.perf_counter()
    model = tlseg.calibrate(plate, work / "model", tl_channel="w1", nuclei_channel="w2",
                            wells=[wells[f] for f in fields], base=base, steps=steps,
                            diameter=d)
    return model, round(time.perf_counter() - t0, 1)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--experiments", nargs="*", help="default: every experiment")
    p.add_argument("--k", type=int, default=1, help="calibration fields per experiment")
    p.add_argument("--leave-one-out", action="store_true",
                   help="count every field once, calibrated on the experiment's other "
                        "fields (the --k of them with the most nuclei)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--base", default="tl-cells", help="label-free model to calibrate")
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
    base = tlseg.load_model(args.base)
    results = {}
    for exp in experiments:
        fields = table[table["experiment"] == exp]
        work = WORK / "calibration" / exp
        shutil.rmtree(work, ignore_errors=True)
        wells = layout_experiment(src, fields, work / "plate")
        by_name = fields.sort_values("field")["field"].tolist()
        spread = [by_name[i] for i in
                  np.linspace(0, len(by_name) - 1, min(4, len(by_name))).round().astype(int)]
        d = weighted_diameter(base, [tlseg.read_image(src / "tl" / f"{f}.tif") for f in spread])
        if args.leave_one_out:
            rows, folds = [], []
            for i in range(len(fields)):
                left = fields.iloc[[i]]
                calib = fields.drop(fields.index[i])["field"].tolist()[: args.k]
                # a plate of the calibration fields and the left-out one, which is then
                # the only held-aside well the calibration counts
                fold = work / "fold"
                shutil.rmtree(fold, ignore_errors=True)
                fold.mkdir()
                for w in [wells[f] for f in calib + left["field"].tolist()]:
                    for path in (work / "plate").glob(f"exp_{w}_*"):
                        os.link(path, fold / path.name)
                try:
                    model, seconds = calibrate_on(base, work, fold, wells, calib, d,
                                                  args.steps)
                except tlseg.TlsegError as exc:  # too few nuclei: the base model counts
                    print(f"{exp} {left['field'].iloc[0]}: {exc}", flush=True)
                    model, seconds = base, None
                rows += count_fields(base, model, src, left, d)
                folds.append({"field": left["field"].iloc[0], "calibration_fields": calib,
                              "calibration_s": seconds,
                              "instances_changed": (model.card.get("calibration", {}).get(
                                  "instances") or {}).get("settings_changed")})
                print(f"{exp} {rows[-1]}", flush=True)
            results[exp] = {"diameter": d, "folds": folds, "fields": rows, **summaries(rows)}
        else:
            calib = fields["field"].tolist()[: args.k]
            model, seconds = calibrate_on(base, work, work / "plate", wells, calib, d,
                                          args.steps)
            rows = count_fields(base, model, src, fields.iloc[args.k:], d)
            results[exp] = {"calibration_fields": calib, "diameter": d,
                            "calibration_s": seconds,
                            "labels": model.card["calibration"]["labels"],
                            "instances": model.card["calibration"].get("instances"),
                            "fields": rows, **summaries(rows)}
        for k in ("base", "calibrated", "base_vs_cells", "calibrated_vs_cells"):
            print(f"{exp} {k:>20}", results[exp][k])
    protocol = "leave_one_out" if args.leave_one_out else "one_field"
    if args.leave_one_out:
        pooled = [r for e in results.values() for r in e["fields"]]
        results = {"experiments": results, "all_fields": summaries(pooled)}
        for k, v in results["all_fields"].items():
            print(f"all fields {k:>20}", v)
    else:
        results = {"experiments": results}
    update_results("calibration", (protocol,), {"k": args.k, "steps": args.steps,
                                                "base": args.base, **results},
                   out=args.out and Path(args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
