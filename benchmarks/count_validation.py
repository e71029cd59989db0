"""Label-free vs nuclei vs true counts on the REAL paired fields of ../shared/data/paired.

The paired fields are laid out as an ImageXpress plate (one field = one well, site 1;
w1 = transmitted light, w2 = nuclear stain) and run through ``tlseg.run_plate`` (what
``tlseg plate run`` calls) as a user would, with the shipped tl-cells and nuclei models:

- ``aisegcell``: 7 brightfield + nuclear-marker fields of primary (blood) cells, with
  true nucleus counts (3 to 71 per field; one nucleus per cell, so the true cell count).
- ``aisegcell-s10``: 33 brightfield + nuclear fields of 5 experiments (6 to 103 true
  nuclei; one nucleus per cell). 7 of them are also ``tl/aisegcell-bf``'s training
  images, on which tl-cells trains, and 5 more are other time points of those positions
  (:func:`common.trained_images`, :func:`common.seen`, from the label-free model's card):
  each well's ``seen`` says which, and the rows ``aisegcell-s10 not seen`` keep only
  the 21 fields of positions the model never saw. Reported per experiment;
  181024TK20 is imaged in a microfluidic chip whose pillars show in every field. These
  fields also have whole-cell masks, and in 210930MA20 and 220524DS30 they hold up to
  50 % more cells than nucleus masks (not every nucleus is annotated): the label-free
  count is also compared with the true *cell* count (``true_cells``; the masks are
  connected components, so touching cells count as one and it is a lower bound), and
  so is the nuclei model's (one nucleus per cell). The whole-cell masks also outline
  debris, specks a tenth of a cell's area with no DNA in them (55 of the 1,551):
  ``*_vs_true_cells_no_debris`` leaves them out (``true_cells_no_debris``,
  :func:`common.cells_without_debris`). Those masks are connected components (touching
  cells are one annotation) and leave out some cells whose nucleus is annotated; with one
  nucleus a cell, ``*_vs_true_cells_curated`` counts each annotation as the annotated
  nuclei in it, debris as none, and adds the annotated nuclei outside every annotation
  (``true_cells_curated``, :func:`common.curated_cells`). How far the two annotations
  agree is reported too: ``annotated_cells_vs_true`` counts the whole-cell annotation's
  cells off the edge (``true_cells_inner``) against the nucleus masks, scored as a
  model's count would be: the agreement a counter of exactly the annotated cells
  would reach there.
- The aiSEGcell nucleus masks leave out every nucleus that touches the field's edge (none
  of their 1,665 does; 71 of the 1,551 aisegcell-s10 whole cells do), so against the true
  nucleus count both models' objects touching the edge are not counted
  (:func:`tlseg.discard_edge`, ``tlseg plate run --exclude-edge``): ``n_cells_inner``,
  ``n_nuclei_inner``; ``nuclei_vs_true_with_edge`` counts them too. Against the
  whole-cell masks, which keep them, every cell counts. Where the nuclei model's objects
  lie against the aisegcell-s10 annotation (on the edge, on an annotated nucleus, a
  second one on it, in an annotated cell without an annotated nucleus, outside every
  annotated cell) is reported per experiment, and so is where the label-free cells lie
  against the whole-cell annotation (:func:`cell_breakdown`: matched, a split or a
  fragment of an annotated cell, merged, outside every annotated cell, with or without
  nuclear stain).
- ``isl-phase-dapi``: one 1024² phase-contrast + DAPI field of a neuronal culture, cut
  into 4 quadrants of 512² (so its count varies); no ground truth, nuclei counts only.

Fields come from different experiments and magnifications, so the plate map has an
``acquisition`` column (the aiSEGcell experiment id, e.g. ``210930MA20``; the neuronal
field's four quadrants are one acquisition) and diameters are estimated once per
acquisition (``diameter_by="acquisition"``, ``tlseg plate run --diameter-by
acquisition``), as a user imaging with one objective per acquisition would;
``--per-site-diameter`` estimates on every field.

Reports, for label-free vs nuclei counts and each against the true count: R², Lin's
CCC, Bland–Altman bias with 95 % limits, the paired t-test, the mean |relative error|
over fields with >= 20 true nuclei, the mean absolute error in cells over fields with
fewer, and the largest count / true ratio; per source and per set of experiments. On the
aisegcell-s10 fields the label-free model also counts each field at its own true median
cell diameter (``n_cells_true_diameter``; key ``label_free_at_true_diameter_vs_true_cells*``):
what the plate's one diameter per acquisition costs. Writes
benchmarks/results/count_validation.json (``--out`` for a trial run).

    python benchmarks/count_validation.py --data ../shared/data [--resume]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import tifffile
from common import (
    WORK,
    count_errors,
    nuclei_per_cell,
    quadrants,
    read_paired,
    seen,
    stain_halfway,
    trained_images,
    true_cell_counts,
)
from results_file import add_out, write_results
from scipy import ndimage as ndi

import tlseg
from tlseg.analysis.metrics import matched_pairs
from tlseg.plate.validate import agreement
from tlseg.training.targets import median_diameter

#: the whole-cell truths of a field without whole-cell masks
NO_CELL_MASKS = dict.fromkeys(("true_cells", "true_cells_no_debris", "true_cells_curated",
                               "true_cells_inner"), np.nan)


def scored(counts, truth) -> dict:
    """Agreement statistics and count errors of ``counts`` against ``truth``."""
    return {**agreement(counts, truth), **count_errors(counts, truth)}


def layout_plate(data: Path, plate: Path) -> pd.DataFrame:
    """Write the paired fields as an ImageXpress plate; return the plate map."""
    if plate.exists():
        shutil.rmtree(plate)
    plate.mkdir(parents=True)
    rows = []
    fields = pd.read_csv(data / "paired" / "aisegcell" / "fields.csv")
    for i, f in enumerate(fields.itertuples()):
        well = f"A{i + 1:02d}"
        for ch, sub in (("w1", "tl"), ("w2", "nuc")):
            shutil.copy(data / "paired" / "aisegcell" / sub / f"{f.field}.tif",
                        plate / f"paired_{well}_s1_{ch}.tif")
        rows.append({"well": well, "source": "aisegcell", "field": f.field,
                     "acquisition": f.field.split("_")[1],  # experiment id, e.g. 210930MA20
                     "true_count": int(f.n_nuclei), **NO_CELL_MASKS})
    s10 = data / "paired" / "aisegcell-s10"
    fields = pd.read_csv(s10 / "fields.csv").sort_values("field")
    for i, f in enumerate(fields.itertuples()):
        well = f"{'CDEFG'[i // 12]}{i % 12 + 1:02d}"
        for ch, sub in (("w1", "tl"), ("w2", "nuc")):
            shutil.copy(s10 / sub / f"{f.field}.tif", plate / f"paired_{well}_s1_{ch}.tif")
        rows.append({"well": well, "source": "aisegcell-s10", "field": f.field,
                     "acquisition": f.experiment, "true_count": int(f.n_nuclei),
                     "true_cells": int(f.n_cells), **true_cell_counts(s10, f.field)})
    isl = data / "paired" / "isl-phase-dapi"
    tl, nuc = tifffile.imread(isl / "tl" / "A4.tif"), tifffile.imread(isl / "nuc" / "A4.tif")
    for q, pair in enumerate(zip(quadrants(tl), quadrants(nuc))):
        well = f"B{q + 1:02d}"
        for ch, img in zip(("w1", "w2"), pair):
            tifffile.imwrite(plate / f"paired_{well}_s1_{ch}.tif", img, compression="zlib")
        rows.append({"well": well, "source": "isl-phase-dapi", "field": f"A4 quadrant {q + 1}",
                     "acquisition": "isl-A4", "true_count": np.nan, **NO_CELL_MASKS})
    return pd.DataFrame(rows)


def nucleus_breakdown(kept: np.ndarray, edge: int, nuclei: np.ndarray,
                      cells: np.ndarray) -> dict:
    """Where a model's nuclei lie against the annotation: ``edge`` of them touched the
    field's edge (which the masks leave out) and were dropped from ``kept``; each of the
    others lies on an annotated nucleus (the first ``matched``, any further one a
    ``split``), inside an annotated cell whose nucleus is not annotated, or outside
    every annotated cell; ``missed``: annotated nuclei no object overlaps."""
    out = {"edge": int(edge), "matched": 0, "split": 0, "in_cell_without_nucleus": 0,
           "outside_cells": 0}
    hit = np.zeros(int(nuclei.max()) + 1, bool)
    for i, sl in enumerate(ndi.find_objects(kept), start=1):
        if sl is None:
            continue
        inside = kept[sl] == i
        under = nuclei[sl][inside]
        if under.any():
            j = np.bincount(under[under > 0]).argmax()
            out["split" if hit[j] else "matched"] += 1
            hit[j] = True
        elif (cells[sl][inside] > 0).mean() > 0.5:
            out["in_cell_without_nucleus"] += 1
        else:
            out["outside_cells"] += 1
    out["missed"] = int((~hit[1:]).sum())
    return out


def cell_breakdown(found: np.ndarray, cells: np.ndarray, nuclei: np.ndarray,
                   stain: np.ndarray) -> dict:
    """Where the label-free cells ``found`` lie against a field's whole-cell annotation
    ``cells``: matched to an annotated cell at IoU >= 0.5 (``matched``), mostly inside an
    annotated cell that another object matches (``split``) or that none matches
    (``fragment``), over half or more of two or more annotated cells (``merged``), or
    mostly outside every annotated cell (``outside_cells``; ``outside_with_stain``: those
    whose smoothed nuclear stain passes halfway to the annotated nuclei's, by eye mostly
    cells no one annotated, :func:`common.stain_halfway`); ``missed``: annotated cells no
    object matches. ``pieces_in_doublets``: the splits and fragments that lie in an
    annotation holding two or more annotated nuclei, touching cells outlined as one."""
    pairs = matched_pairs(cells, found)
    several, _ = nuclei_per_cell(cells, nuclei)
    matched_true = {t for t, _ in pairs}
    matched_found = {f for _, f in pairs}
    smooth, halfway = stain_halfway(cells, nuclei, stain)
    true_area = np.bincount(cells.ravel())
    out = {"matched": len(pairs), "split": 0, "fragment": 0, "pieces_in_doublets": 0,
           "merged": 0, "outside_cells": 0, "outside_with_stain": 0}
    for i, sl in enumerate(ndi.find_objects(found), start=1):
        if sl is None or i in matched_found:
            continue
        inside = found[sl] == i
        under = cells[sl][inside]
        ids, overlap = np.unique(under[under > 0], return_counts=True)
        if (overlap >= 0.5 * true_area[ids]).sum() >= 2:
            out["merged"] += 1
        elif overlap.sum() > 0.5 * inside.sum():
            host = ids[overlap.argmax()]
            out["split" if host in matched_true else "fragment"] += 1
            out["pieces_in_doublets"] += int(several[host] >= 2)
        else:
            out["outside_cells"] += 1
            out["outside_with_stain"] += int(smooth[sl][inside].max() > halfway)
    out["missed"] = int(len(true_area[1:].nonzero()[0]) - len(matched_true))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--work", type=Path, default=WORK / "count_validation")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--model", default="tl-cells", help="label-free model (name or folder)")
    p.add_argument("--nuclei-model", default="nuclei", help="nuclei model (name or folder)")
    p.add_argument("--per-site-diameter", action="store_true",
                   help="estimate on every field (default: once per acquisition)")
    p.add_argument("--resume", action="store_true",
                   help="keep the finished sites of an earlier run (same settings)")
    add_out(p, "count_validation")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("tlseg").setLevel(logging.INFO)  # tlseg's progress, not Dask's

    plate, out = args.work / "plate", args.work / "results"
    pmap = layout_plate(args.data, plate)
    pmap.to_csv(args.work / "plate_map.csv", index=False)
    if out.exists() and not args.resume:
        shutil.rmtree(out)
    t0 = time.perf_counter()
    result = tlseg.run_plate(
        plate, out, tl_channel="w1", nuclei_channel="w2", model=args.model,
        nuclei_model=args.nuclei_model, plate_map=args.work / "plate_map.csv",
        workers=args.workers,
        **({"diameter_mode": "site"} if args.per_site_diameter
           else {"diameter_by": "acquisition"}))
    rc = 2 if result["failed"] else 0  # the exit code of `tlseg plate run`
    wall = time.perf_counter() - t0
    wells = pd.read_csv(out / "wells.csv")
    sites = pd.read_csv(out / "sites.csv").set_index("well")
    wells["diameter"] = wells["well"].map(sites["diameter"]).round(1)
    wells["nuclei_diameter"] = wells["well"].map(sites["nuclei_diameter"]).round(1)
    def inner(well, what):  # the nucleus masks' convention: no object on the edge
        return tlseg.discard_edge(tlseg.read_labels(out / "masks" / f"{well}_s1_{what}.tif"))

    inner_nuclei = {w: inner(w, "nuclei") for w in wells["well"]}  # also for the break-down
    wells["n_nuclei_inner"] = [int(inner_nuclei[w].max()) for w in wells["well"]]
    wells["n_cells_inner"] = [int(inner(w, "cells").max()) for w in wells["well"]]
    # a field the label-free model trained on (or another time point of its position)
    # is in-sample: the rows "not seen" leave them out
    model = tlseg.load_model(args.model)
    trained = trained_images(model, args.data)
    wells["seen"] = [seen(f, trained) if s.startswith("aisegcell") else "not seen"
                     for f, s in zip(wells["field"], wells["source"])]
    # the same model at each field's own true median cell diameter (its whole-cell mask):
    # how much of the error is the plate's one diameter per acquisition
    wells["true_diameter"] = np.nan
    wells["n_cells_true_diameter"] = np.nan
    src = args.data / "paired" / "aisegcell-s10"
    for i, r in wells[wells["source"] == "aisegcell-s10"].iterrows():
        d = median_diameter(tifffile.imread(src / "cell_labels" / f"{r.field}.tif"))
        image = tlseg.read_image(src / "tl" / f"{r.field}.tif")
        wells.loc[i, "true_diameter"] = round(d, 1)
        wells.loc[i, "n_cells_true_diameter"] = int(model.segment(image, diameter=d).max())
    cols = ["well", "source", "field", "acquisition", "seen", "true_count", "true_cells",
            "true_cells_no_debris", "true_cells_curated", "true_cells_inner", "n_nuclei",
            "n_cells", "n_nuclei_inner", "n_cells_inner", "diameter", "true_diameter",
            "n_cells_true_diameter",
            "nuclei_diameter", "cells_without_nucleus", "cells_with_several_nuclei",
            "nuclei_outside_cells"]
    print(wells[cols].to_string(index=False))
    res = {"model": args.model, "nuclei_model": args.nuclei_model,
           "diameters": "per field" if args.per_site_diameter else "once per acquisition "
                        "(tlseg plate run --diameter-by acquisition)",
           "exit_code": rc, "wall_s": round(wall, 1), "resumed": args.resume,
           "wells": wells[cols].to_dict("records")}
    s10 = wells[wells["source"] == "aisegcell-s10"]
    parts = pd.DataFrame([{"acquisition": r.acquisition, **nucleus_breakdown(
        inner_nuclei[r.well], r.n_nuclei - r.n_nuclei_inner,
        tifffile.imread(src / "nuc_labels" / f"{r.field}.tif"),
        tifffile.imread(src / "cell_labels" / f"{r.field}.tif"))} for r in s10.itertuples()])
    parts = parts.groupby("acquisition").sum()
    parts.loc["all"] = parts.sum()
    print(parts.to_string())
    res["nuclei_model_objects_aisegcell_s10"] = parts.to_dict("index")
    parts = pd.DataFrame([{"acquisition": r.acquisition, **cell_breakdown(
        tlseg.read_labels(out / "masks" / f"{r.well}_s1_cells.tif"),
        *read_paired(src, r.field))} for r in s10.itertuples()])
    parts = parts.groupby("acquisition").sum()
    parts.loc["all"] = parts.sum()
    print(parts.to_string())
    res["label_free_objects_aisegcell_s10"] = parts.to_dict("index")
    sets = [("all", wells), ("all not seen", wells[wells["seen"] == "not seen"]),
            ("aisegcell", wells[wells["source"] == "aisegcell"]),
            ("aisegcell-s10", s10),
            ("aisegcell-s10 not seen", s10[s10["seen"] == "not seen"]),
            ("aisegcell-s10 seen", s10[s10["seen"] != "not seen"])]
    sets += [(f"aisegcell-s10 {e}", s10[s10["acquisition"] == e])
             for e in sorted(s10["acquisition"].unique())]
    sets += [("isl-phase-dapi", wells[wells["source"] == "isl-phase-dapi"])]
    for name, sub in sets:
        entry = {"label_free_vs_nuclei": agreement(sub["n_cells"], sub["n_nuclei"])}
        truth = sub.dropna(subset=["true_count"])
        if len(truth) >= 2:
            for key, column in (("label_free_vs_true", "n_cells_inner"),
                                ("nuclei_vs_true", "n_nuclei_inner"),
                                ("nuclei_vs_true_with_edge", "n_nuclei")):
                entry[key] = scored(truth[column], truth["true_count"])
            # the whole-cell annotation itself, counted as the nucleus masks count:
            # how far two annotations of the same fields agree
            both = truth.dropna(subset=["true_cells_inner"])
            if len(both) >= 2:
                entry["annotated_cells_vs_true"] = scored(both["true_cells_inner"],
                                                          both["true_count"])
        cells = sub.dropna(subset=["true_cells"])
        if len(cells) >= 2:
            for key, column in (("label_free_vs_true_cells", "n_cells"),
                                ("label_free_at_true_diameter_vs_true_cells",
                                 "n_cells_true_diameter"),
                                ("nuclei_vs_true_cells", "n_nuclei")):
                for suffix, truth_column in (("", "true_cells"),
                                             ("_no_debris", "true_cells_no_debris"),
                                             ("_curated", "true_cells_curated")):
                    entry[key + suffix] = scored(cells[column], cells[truth_column])
        res[name] = entry
        for k, s in entry.items():
            if s.get("r2") is not None:
                rel = s.get("mean_abs_rel_error_20plus")
                print(f"{name[:40]:>40} {k:<24} n={s['n']:2d}  R² {s['r2']:.3f}  CCC "
                      f"{s['ccc']:.3f}  bias {s['bias']:+.1f} cells  mean |bias| "
                      f"{s.get('mean_abs_bias_percent', float('nan')):.1f} %"
                      + (f"  |rel err| >=20: {rel:.1%}" if rel is not None else ""))
    path = write_results("count_validation", res, argv=argv, out=args.out)
    print(f"written {path}; report: {out / 'report.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
