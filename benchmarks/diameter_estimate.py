"""How close is the automatic diameter estimate to the true cell size? Dense and sparse fields.

Run::

    python benchmarks/diameter_estimate.py --data ../shared/data

``Model.estimate_diameter`` (uncalibrated: the calibration factor is a deliberate
offset) against the true cell size as training measures it (median equivalent-circle
diameter of the whole cells, :func:`tlseg.training.targets.median_diameter`), per image, for

- the val splits of the label-free sources (``tl-cells``) and of the nuclei sources and
  the aiSEGcell paired nuclear channel (``nuclei``): real, mostly dense fields;
- sparse synthetic fields: a 384² synthetic field of cells (16, 30 or 45 px, two seeds)
  pasted into a corner of an empty 1536² field, so the image centre holds no cell, as
  in the low-density wells of a dilution series; and the 384² field alone (dense);
- dense fields: the densest val image of each label-free source (cells per canonical
  cell area), and its densest quarter as a crop;
- crowded real cells: val cells of each label-free source pasted densely (60-90 % of
  the field, :func:`tlseg.training.crowd.crowded_samples`, 512² canonical pixels),
  shown with cells of 18, 30 and 45 px;
- synthetic confluent monolayers (``synthetic_field(confluent=True)``, 512²): cells of
  16, 24 and 40 px in phase contrast, brightfield and DIC, no background between them;
- the 33 brightfield fields of ``paired/aisegcell-s10`` (1024²-2304², sparse to
  crowded, some vignetted to black in a corner), against their whole-cell masks;
- small cells (a 4x or 10x objective with a binned camera): the first two val images of
  each label-free source shrunk so that their cells are 6 or 8 px across, and the first
  field of each aiSEGcell-s10 experiment shrunk to cells of 6 px.

Three estimators: ``central window`` (the size head and the refinement read the image
centre, and the three neighbouring ladder rungs that agree best win), ``shipped``
(:mod:`tlseg.inference.window` puts the window where the image has structure, and a
reading from rungs that saw fewer than ``WEAK_EVIDENCE_CELLS`` cells loses to a
consistent one that saw more; the refinement reads the model's ``size_statistic``) and
``other statistic`` (the shipped estimator with the other size statistic).
Error = |log2(estimate / true)|; 0.32 is a factor 1.25, 0.5 a factor 1.41.
Results: ``benchmarks/results/diameter_estimate.json`` (``--out`` for a trial run, with
``--limit``; ``--sets`` rescores some sets and keeps the others' rows).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from contextlib import contextmanager
from dataclasses import replace
from itertools import islice
from pathlib import Path

import numpy as np
import tifffile
from common import confluent_fields, crowded_val_fields, density
from results_file import add_out, results_path, write_results

import tlseg
from tlseg.config import SIZE_STATISTICS
from tlseg.inference.labels import resize_labels
from tlseg.inference.preprocess import rescale
from tlseg.training.targets import median_diameter as true_diameter

TL_SOURCES = ("usiigaci", "bbbc030-cho", "ctc-dic-hela")
ESTIMATORS = ("central window", "shipped", "other statistic")
NUCLEI_SOURCES = ("bbbc039", "dsb2018-examples")
SPARSE = [(d, seed) for d in (16, 30, 45) for seed in (1, 2)]
CANON = 30.0


def densest_quarter(mask: np.ndarray) -> tuple[slice, slice]:
    """The half-height, half-width window holding the most cell pixels (in steps of an
    eighth of the image)."""
    h, w = mask.shape
    best = None
    for y in range(0, h // 2 + 1, max(1, h // 8)):
        for x in range(0, w // 2 + 1, max(1, w // 8)):
            fg = int((mask[y:y + h // 2, x:x + w // 2] > 0).sum())
            if best is None or fg > best[0]:
                best = (fg, y, x)
    _, y, x = best
    return slice(y, y + h // 2), slice(x, x + w // 2)


def dense_fields(data: Path, limit: int | None = None):
    """The densest val image of each label-free source, its densest quarter, and crowded
    fields of its val cells at three cell sizes (density: :func:`common.density`)."""
    for src in TL_SOURCES[:limit]:
        pairs = [(p, data / "tl" / src / "val" / "masks" / p.name)
                 for p in sorted((data / "tl" / src / "val" / "images").glob("*.tif"))]
        masks = {p: tifffile.imread(m) for p, m in pairs}
        p = max(masks, key=lambda q: density(masks[q]))
        image, mask = tlseg.read_image(p), masks[p]
        yield "tl-cells", "densest val image", image, true_diameter(mask)
        ys, xs = densest_quarter(mask)
        yield "tl-cells", "densest val quarter", image[ys, xs], true_diameter(mask[ys, xs])
        for crowded, labels, _ in crowded_val_fields(data, src, 1):
            for d in (18, 30, 45):
                img = rescale(crowded, d / CANON)
                lab = resize_labels(labels, img.shape)
                yield "tl-cells", "crowded real cells", img, true_diameter(lab)
    for modality, f in confluent_fields(None if limit is None else 3 * limit):
        yield "tl-cells", f"synthetic confluent ({modality})", f["tl"], true_diameter(f["labels"])


def fields(data: Path, limit: int | None = None):
    """(model name, set name, image, true diameter) for every image scored (the first
    ``limit`` of each real set and of the sparse synthetic fields)."""
    for model, root, sources in (("tl-cells", data / "tl", TL_SOURCES),
                                 ("nuclei", data / "nuclei", NUCLEI_SOURCES)):
        for src in sources:
            for p in sorted((root / src / "val" / "images").glob("*.tif"))[:limit]:
                mask = tifffile.imread(root / src / "val" / "masks" / p.name)
                yield model, src, tlseg.read_image(p), true_diameter(mask)
    paired = data / "paired" / "aisegcell"
    for p in sorted((paired / "nuc").glob("*.tif"))[:limit]:
        mask = tifffile.imread(paired / "nuc_labels" / p.name)
        yield "nuclei", "aisegcell nuclear channel", tlseg.read_image(p), true_diameter(mask)
    s10 = data / "paired" / "aisegcell-s10"
    for p in sorted((s10 / "tl").glob("*.tif"))[:limit]:
        mask = tifffile.imread(s10 / "cell_labels" / p.name)
        yield "tl-cells", "aisegcell-s10 brightfield fields", tlseg.read_image(p), \
            true_diameter(mask)
    for d, seed in islice(SPARSE, limit):
        empty = tlseg.synthetic_field((1536, 1536), n_cells=0, diameter=d, seed=seed)
        cells = tlseg.synthetic_field((384, 384), diameter=d, seed=seed + 10)
        for channel, model, labels in (("tl", "tl-cells", "labels"),
                                       ("nuclei", "nuclei", "nuclei_labels")):
            patch = cells[channel].astype(np.float32)
            sparse = empty[channel].astype(np.float32)
            sparse[40:424, 1100:1484] = patch - np.median(patch) + np.median(sparse)
            truth = true_diameter(cells[labels])
            yield model, f"synthetic sparse ({channel})", sparse, truth
            yield model, f"synthetic dense ({channel})", patch, truth
    yield from dense_fields(data, limit)
    yield from small_fields(data, limit)


def small_fields(data: Path, limit: int | None = None):
    """Val images of each label-free source shrunk to cells of 6 and 8 px, and the first
    field of each aiSEGcell-s10 experiment to cells of 6 px."""
    def shrunk(image, mask, d):
        img = rescale(image, d / true_diameter(mask))
        return img, true_diameter(resize_labels(mask, img.shape))

    for src in TL_SOURCES:
        for p in sorted((data / "tl" / src / "val" / "images").glob("*.tif"))[:min(2, limit or 2)]:
            mask = tifffile.imread(data / "tl" / src / "val" / "masks" / p.name)
            for d in (6, 8):
                yield "tl-cells", f"val cells shown at {d} px", *shrunk(tlseg.read_image(p), mask, d)
    s10, seen = data / "paired" / "aisegcell-s10", set()
    for p in sorted((s10 / "tl").glob("*.tif")):
        if p.name.split("_")[0] in seen or len(seen) == (limit or 5):
            continue
        seen.add(p.name.split("_")[0])
        mask = tifffile.imread(s10 / "cell_labels" / p.name)
        yield "tl-cells", "aisegcell-s10 fields shown at 6 px", *shrunk(tlseg.read_image(p), mask, 6)


@contextmanager
def central_window():
    """The central-window estimator: the window at the image centre whatever it holds,
    and the ladder rungs that agree best win however few cells they saw."""
    import tlseg.inference.diameter as td
    import tlseg.inference.window as tw

    saved = tw.PREFER_CENTRE, td.WEAK_EVIDENCE_CELLS
    tw.PREFER_CENTRE, td.WEAK_EVIDENCE_CELLS = math.inf, 0.0
    try:
        yield
    finally:
        tw.PREFER_CENTRE, td.WEAK_EVIDENCE_CELLS = saved


def summary(errors: list[float]) -> dict:
    e = np.asarray(errors, dtype=float)
    return {"n": int(e.size), "median_log2_error": round(float(np.median(e)), 3),
            "max_log2_error": round(float(e.max()), 3),
            "within_1.25x": int((e <= math.log2(1.25)).sum()),
            "within_1.5x": int((e <= math.log2(1.5)).sum())}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--limit", type=int,
                   help="only the first N images of each real set and N sparse fields")
    p.add_argument("--sets", nargs="+", metavar="SET",
                   help="score only these sets (names as in the results) and keep the "
                        "other sets' rows of the results file")
    add_out(p, "diameter_estimate")
    args = p.parse_args(argv)
    tlseg.set_threads()
    models = {name: tlseg.load_model(name) for name in ("tl-cells", "nuclei")}
    rows = []
    other = {name: tlseg.Model(replace(m.config, size_statistic=next(
        s for s in SIZE_STATISTICS if s != m.config.size_statistic)), m.net)
        for name, m in models.items()}
    if args.sets:
        kept = results_path("diameter_estimate", args.out)
        if kept.is_file():
            rows = [r for r in json.loads(kept.read_text())["images"]
                    if r["set"] not in args.sets]
    for model, name, image, truth in fields(args.data, args.limit):
        if args.sets and name not in args.sets:
            continue
        row = {"model": model, "set": name, "true": round(truth, 2)}
        for estimator in ESTIMATORS:
            if estimator == "central window":
                with central_window():
                    est = models[model].estimate_diameter(image, calibrate=False)
            elif estimator == "shipped":
                est = models[model].estimate_diameter(image, calibrate=False)
            else:
                est = other[model].estimate_diameter(image, calibrate=False)
            row[estimator] = None if est is None else round(est, 2)
        rows.append(row)
        print(f"{name:28s} true {truth:6.1f}  " + "  ".join(
            f"{e} {row[e]}" for e in ESTIMATORS), flush=True)

    def err(row, estimator):  # no estimate counts as a factor 2**9 off
        est = row[estimator]
        return 9.0 if est is None else abs(math.log2(est / row["true"]))

    sets = list(dict.fromkeys(r["set"] for r in rows))
    table = {s: {e: summary([err(r, e) for r in rows if r["set"] == s])
                 for e in ESTIMATORS} for s in sets}
    print(f"\n{'set':32s} " + " ".join(f"{e:>36s}" for e in ESTIMATORS))
    for s, by in table.items():
        cells = [f"{v['median_log2_error']:.2f} / {v['max_log2_error']:.2f}, "
                 f"{v['within_1.25x']}/{v['n']} within 1.25x" for v in by.values()]
        print(f"{s:32s} " + " ".join(f"{c:>36s}" for c in cells))
    print("(median / max |log2(estimate / true)|, uncalibrated estimate)")
    statistics = {name: m.config.size_statistic for name, m in models.items()}
    out = write_results("diameter_estimate", {"size_statistic": statistics, "sets": table,
                                              "images": rows}, argv=argv, out=args.out)
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
