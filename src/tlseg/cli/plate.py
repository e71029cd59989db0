"""``tlseg plate run|validate`` and ``tlseg demo-plate``: the command line of :mod:`tlseg.plate`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..config import PlateConfig, default


def add_parsers(sub) -> None:
    pl = sub.add_parser("plate", help="batch-segment a plate, measure cells, validate counts")
    pls = pl.add_subparsers(dest="plate_command", required=True)
    r = pls.add_parser("run", help="segment every site of a plate folder (Dask, resumable)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    r.add_argument("plate_dir", help="folder of the plate's images")
    r.add_argument("-o", "--out", required=True, help="output folder (a re-run resumes it)")
    r.add_argument("--tl-channel", required=True,
                   help="transmitted-light channel as in the file names (e.g. w1, ch1)")
    r.add_argument("--nuclei-channel", help="nuclear-stain channel, for nuclei counts and validation")
    r.add_argument("--plate-map", help="CSV with a 'well' column and condition columns")
    r.add_argument("--model", default=default(PlateConfig, "model"),
                   help="label-free model (name or folder)")
    r.add_argument("--nuclei-model", default=default(PlateConfig, "nuclei_model"),
                   help="nuclei model (name or folder)")
    r.add_argument("--diameter", type=float,
                   help="cell diameter in pixels (default: estimated once for the plate)")
    r.add_argument("--nuclei-diameter", type=float, help="nucleus diameter in pixels")
    r.add_argument("--per-site-diameter", action="store_true",
                   help="estimate the diameters on every site (sites from different "
                        "objectives) instead of once for the plate")
    r.add_argument("--diameter-by", metavar="COLUMN",
                   help="plate-map column (e.g. objective): wells sharing its value share "
                        "one automatic diameter, estimated per group")
    r.add_argument("--pixel-size", type=float, help="µm per pixel (adds µm² areas and cells/mm²)")
    r.add_argument("--layout", default="auto", choices=["auto", "imagexpress", "incell", "operetta"])
    r.add_argument("--pattern", help="regex for file names with named groups well (or row, col), "
                                     "site, channel; overrides --layout")
    r.add_argument("--workers", type=int, default=2, help="local Dask worker processes")
    r.add_argument("--threads", type=int,
                   help="torch threads per worker (default: CPU cores / workers)")
    r.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. "
                                       "tcp://10.0.0.5:8786 (default: a local cluster)")
    r.add_argument("--density-column", help="plate-map column with the seeding density")
    v = pls.add_parser("validate", help="(re)compute wells.csv, validation.json and report.html")
    v.add_argument("out", help="output folder of `tlseg plate run`")
    v.add_argument("--density-column", help="plate-map column with the seeding density")

    d = sub.add_parser("demo-plate", help="write a synthetic ImageXpress dilution plate "
                                          "(known counts), optionally run it")
    d.add_argument("out")
    d.add_argument("--replicates", type=int, default=4)
    d.add_argument("--sites", type=int, default=2)
    d.add_argument("--size", type=int, default=512, help="site side in pixels")
    d.add_argument("--run", action="store_true", help="then run `tlseg plate run` on it and "
                                                      "compare the counts with the truth")
    d.add_argument("--workers", type=int, default=2)


def plate(args) -> int:
    import tlseg

    if args.plate_command == "validate":
        tlseg.validate_plate(args.out, density=args.density_column)
        return 0
    return _run(args.plate_dir, args.out, args)


def _run(plate_dir, out, args) -> int:
    from tqdm import tqdm

    import tlseg

    cfg = tlseg.PlateConfig(tl_channel=args.tl_channel, nuclei_channel=args.nuclei_channel,
                    model=args.model, nuclei_model=args.nuclei_model, diameter=args.diameter,
                    nuclei_diameter=args.nuclei_diameter, pixel_size=args.pixel_size,
                    diameter_mode="site" if getattr(args, "per_site_diameter", False) else "plate",
                    diameter_by=getattr(args, "diameter_by", None))
    bar = None

    def progress(rec, i, n):
        nonlocal bar
        if bar is None:
            bar = tqdm(total=n, unit="site", file=sys.stderr, desc="segmenting")
        bar.update(1)

    result = tlseg.run_plate(plate_dir, out, cfg, plate_map=args.plate_map,
                       layout=getattr(args, "layout", "auto"), pattern=getattr(args, "pattern", None),
                       workers=args.workers, scheduler=getattr(args, "scheduler", None),
                       threads=getattr(args, "threads", None),
                       density=getattr(args, "density_column", None), progress=progress)
    if bar is not None:
        bar.close()
    print(f"{result['processed']} site(s) segmented this run; results in {out}")
    return 2 if result["failed"] else 0


def demo_plate(args) -> int:
    import tlseg

    made = tlseg.make_demo_plate(args.out, replicates=args.replicates, sites=args.sites, size=args.size)
    print(f"synthetic plate written to {made['plate']} (plate map {made['plate_map']})")
    if not args.run:
        return 0
    out = Path(args.out) / "results"
    ns = argparse.Namespace(tl_channel="w1", nuclei_channel="w2", model="tl-cells",
                            nuclei_model="nuclei", diameter=None, nuclei_diameter=None,
                            pixel_size=0.65, plate_map=str(made["plate_map"]), workers=args.workers)
    rc = _run(made["plate"], out, ns)
    import pandas as pd

    cmp = tlseg.compare_truth(pd.read_csv(out / "wells.csv"), made["truth"])
    cols = ["well", "seeding_density", "true_cells", "n_cells", "cells_error", "true_nuclei",
            "n_nuclei", "nuclei_error"]
    print(cmp[cols].to_string(index=False, float_format=lambda v: f"{v:+.1%}" if abs(v) < 1 else f"{v:g}"))
    print(f"largest per-well error: label-free {cmp['cells_error'].abs().max():.1%}, "
          f"nuclei {cmp['nuclei_error'].abs().max():.1%}; open {out / 'report.html'}")
    return rc
