"""``tlseg plate run|validate|convert`` and ``tlseg demo-plate``: the command line of
:mod:`tlseg.plate`."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..config import PlateConfig, default
from .progress import StepBar


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Adds "(default: X)" to an option's help only where X says something: not for
    None, a flag's False, or help that already names its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, argparse.SUPPRESS) or "default" in text:
            return text
        return super()._get_help_string(action)


def add_parsers(sub) -> None:
    pl = sub.add_parser("plate", help="batch-segment a plate, measure cells, validate counts")
    pls = pl.add_subparsers(dest="plate_command", required=True)
    r = pls.add_parser("run", help="segment every site of a plate folder (Dask, resumable)",
                       formatter_class=_Defaults)
    r.add_argument("plate_dir", help="folder of the plate's images (with its .HTD file if "
                                     "any), a MetaXpress acquisition (folder with a .jdce "
                                     "descriptor), or an OME-Zarr plate (PLATE.zarr)")
    r.add_argument("-o", "--out", required=True, help="output folder (a re-run resumes it)")
    r.add_argument("--tl-channel", required=True,
                   help="transmitted-light channel as in the file names (e.g. w1, ch1) or "
                        "the instrument's metadata (e.g. TL)")
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
    r.add_argument("--exclude-edge", action="store_true",
                   help="discard cells and nuclei that touch a site's edge before counting "
                        "and measuring (as annotations that leave cut cells out)")
    r.add_argument("--layout", default="auto", choices=["auto", "imagexpress", "incell", "operetta"],
                   help="file-name layout")
    r.add_argument("--pattern", help="regex for file names with named groups well (or row, col), "
                                     "site, channel; overrides --layout")
    r.add_argument("--workers", type=int, default=2, help="local Dask worker processes")
    r.add_argument("--threads", type=int,
                   help="torch threads per worker (default: CPU cores / workers)")
    r.add_argument("--scheduler", help="address of an existing Dask scheduler, e.g. "
                                       "tcp://10.0.0.5:8786 (default: a local cluster)")
    r.add_argument("--density-column", help="plate-map column with the seeding density")
    r.add_argument("--write-zarr", action="store_true",
                   help="OME-Zarr plate: also write each field's labels/cells, labels/nuclei "
                        "and tables/cells into the plate")
    v = pls.add_parser("validate", help="(re)compute wells.csv, validation.json and report.html")
    v.add_argument("out", help="output folder of `tlseg plate run`")
    v.add_argument("--density-column", help="plate-map column with the seeding density")
    for p in (r, v):
        p.add_argument("--table-style", choices=["tlseg", "cellprofiler"], default="tlseg",
                       help="cellprofiler: also write cellprofiler/Image.csv and Cells.csv "
                            "with CellProfiler's column names (for pycytominer)")
    c = pls.add_parser("convert", help="turn a plate folder into an OME-Zarr plate",
                       formatter_class=_Defaults)
    c.add_argument("plate_dir", help="folder of the plate's images")
    c.add_argument("-o", "--out", required=True, help="the OME-Zarr plate to make (PLATE.zarr)")
    c.add_argument("--layout", default="auto", choices=["auto", "imagexpress", "incell", "operetta"],
                   help="file-name layout")
    c.add_argument("--pattern", help="regex for file names with named groups well (or row, col), "
                                     "site, channel; overrides --layout")
    c.add_argument("--pixel-size", type=float, help="µm per pixel, written as the pixel scale")
    c.add_argument("--ngff-version", default="0.4", choices=["0.4", "0.5"],
                   help="0.4 (Zarr v2) opens in every NGFF viewer; 0.5 (Zarr v3) in newer ones")

    k = pls.add_parser("calibrate", help="fine-tune the label-free model on this plate's "
                       "cells, with the paired nuclear stain as labels (no annotation)",
                       formatter_class=_Defaults)
    k.add_argument("plate_dir", help="folder of the plate's images")
    k.add_argument("-o", "--out", required=True, help="model folder to write (then "
                   "`tlseg plate run ... --model OUT` counts without the stain)")
    k.add_argument("--tl-channel", required=True, help="transmitted-light channel")
    k.add_argument("--nuclei-channel", required=True, help="nuclear-stain channel")
    k.add_argument("--wells", help="calibration wells, e.g. A01,B03, or with --plate-map "
                   "conditions COLUMN=VALUE, e.g. role=calibration (the others are held "
                   "aside to measure it; default: all but every third well)")
    k.add_argument("--plate-map", help="CSV with a 'well' column and condition columns (for "
                   "--wells COLUMN=VALUE; the calibration wells' conditions go in the card)")
    k.add_argument("--base", default=default(PlateConfig, "model"),
                   help="label-free model to calibrate (name or folder)")
    k.add_argument("--nuclei-model", default=default(PlateConfig, "nuclei_model"),
                   help="nuclei model (name or folder)")
    k.add_argument("--diameter", type=float, help="cell diameter in pixels (default: estimate)")
    k.add_argument("--nuclei-diameter", type=float, help="nucleus diameter in pixels")
    k.add_argument("--steps", type=int, default=300, help="fine-tuning steps")
    k.add_argument("--seed", type=int, default=0, help="random seed of the fine-tuning")
    k.add_argument("--resume", action="store_true", help="continue an interrupted calibration")
    k.add_argument("--layout", default="auto", choices=["auto", "imagexpress", "incell", "operetta"],
                   help="file-name layout")
    k.add_argument("--pattern", help="regex for file names with named groups well (or row, "
                   "col), site, channel; overrides --layout")

    d = sub.add_parser("demo-plate", help="write a synthetic ImageXpress dilution plate "
                                          "(known counts), optionally run it")
    d.add_argument("out")
    d.add_argument("--replicates", type=int, default=4)
    d.add_argument("--sites", type=int, default=2)
    d.add_argument("--size", type=int, default=512, help="site side in pixels")
    d.add_argument("--run", action="store_true", help="then run `tlseg plate run` on it and "
                                                      "compare the counts with the truth")
    d.add_argument("--workers", type=int, default=2)
    d.add_argument("--metadata", choices=("htd", "acquisition"),
                   help="also write the ImageXpress .HTD file (channels TL, DAPI), or write "
                        "the plate as a MetaXpress acquisition (.jdce descriptor, manifest, "
                        "timepoint0/)")


def plate(args) -> int:
    import tlseg

    if args.plate_command == "convert":
        out = tlseg.convert_plate(args.plate_dir, args.out, layout=args.layout,
                                  pattern=args.pattern, pixel_size=args.pixel_size,
                                  ngff_version=args.ngff_version)
        print(f"OME-Zarr plate written to {out}")
        return 0
    if args.plate_command == "calibrate":
        return _calibrate(args)
    if args.plate_command == "validate":
        tlseg.validate_plate(args.out, density=args.density_column,
                             table_style=args.table_style)
        return 0
    return _run(args.plate_dir, args.out, args)


def _run(plate_dir, out, args) -> int:
    import tlseg

    cfg = tlseg.PlateConfig(tl_channel=args.tl_channel, nuclei_channel=args.nuclei_channel,
                    model=args.model, nuclei_model=args.nuclei_model, diameter=args.diameter,
                    nuclei_diameter=args.nuclei_diameter, pixel_size=args.pixel_size,
                    diameter_mode="site" if getattr(args, "per_site_diameter", False) else "plate",
                    diameter_by=getattr(args, "diameter_by", None),
                    exclude_edge=getattr(args, "exclude_edge", False))
    bar = StepBar("segmenting", "site")
    result = tlseg.run_plate(plate_dir, out, cfg, plate_map=args.plate_map,
                       layout=getattr(args, "layout", "auto"), pattern=getattr(args, "pattern", None),
                       workers=args.workers, scheduler=getattr(args, "scheduler", None),
                       threads=getattr(args, "threads", None),
                       density=getattr(args, "density_column", None),
                       table_style=getattr(args, "table_style", "tlseg"),
                       progress=lambda rec, i, n: bar(i, n),
                       write_zarr=getattr(args, "write_zarr", False))
    bar.close()
    done = result["processed"] - len(result["failed"])
    failed = f" ({len(result['failed'])} failed)" if result["failed"] else ""
    print(f"{done} site(s) segmented this run{failed}; results in {out}")
    return 2 if result["failed"] else 0


def _calibrate(args) -> int:
    import tlseg
    from tlseg.plate.calibrate import NOT_MEASURED, conditions_text

    tlseg.set_threads()
    bar = StepBar("calibrating", "step",
                   after="fine-tuned; now tuning the instance settings to the nuclei and "
                         "counting any held-aside wells before and after")

    wells = [w.strip() for w in args.wells.split(",") if w.strip()] if args.wells else None
    model = tlseg.calibrate(args.plate_dir, args.out, tl_channel=args.tl_channel,
                            nuclei_channel=args.nuclei_channel, wells=wells, base=args.base,
                            nuclei_model=args.nuclei_model, diameter=args.diameter,
                            nuclei_diameter=args.nuclei_diameter, steps=args.steps,
                            seed=args.seed, resume=args.resume, layout=args.layout,
                            pattern=args.pattern, plate_map=args.plate_map,
                            progress=lambda step, total, parts: bar(step, total))
    bar.close()
    c = model.card["calibration"]
    conds = conditions_text(c.get("conditions"))
    print(f"calibrated model written to {args.out} (wells {', '.join(c['wells'])}"
          + (f"; {conds}" if conds else "") + ")")
    lab = c["labels"]
    print(f"  labels: {lab['cells_kept']} training cells from {lab['nuclei']} nuclei, "
          f"{lab['known_fraction']:.0%} of the pixels known (label-free cells split at "
          f"their nuclei: {lab['cells_split']}; cells seeded at packed nuclei that no "
          f"label-free cell holds: {lab.get('cells_seeded', 0)})")
    if "before" in c:
        for when in ("before", "after"):
            s = c[when]
            err = s.get("mean_abs_rel_error")
            wells = c.get("checked_wells") or c["held_aside_wells"]
            print(f"  {when:6s} on {s['n_sites']} sites of held-aside wells {', '.join(wells)}: "
                  f"{s['label_free']} label-free cells for {s['nuclei']} nuclei"
                  + (f", mean |relative error| {err:.1%}" if err is not None else ""))
    elif not c["held_aside_wells"]:
        print(f"  {NOT_MEASURED}")
    return 0


def demo_plate(args) -> int:
    import tlseg

    from ..plate.demo import WAVE_NAMES

    made = tlseg.make_demo_plate(args.out, replicates=args.replicates, sites=args.sites,
                                 size=args.size, metadata=args.metadata)
    print(f"synthetic plate written to {made['plate']} (plate map {made['plate_map']})")
    if not args.run:
        return 0
    out = Path(args.out) / "results"
    tl, nuc = WAVE_NAMES if args.metadata == "acquisition" else ("w1", "w2")
    ns = argparse.Namespace(tl_channel=tl, nuclei_channel=nuc, model="tl-cells",
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
