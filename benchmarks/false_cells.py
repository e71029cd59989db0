"""False cells on fields without cells: empty background and structures that are not cells.

Run::

    python benchmarks/false_cells.py --data ../shared/data [--model tl-cells other/model]
        [--labels NAME ...]

Every cell found on a field that holds no cell is a false count. The fields are real:
384² crops of the ``paired/aisegcell-s10`` brightfield fields that lie at least
``MARGIN`` px from every annotated whole cell (80 crops from 5 experiments; the whole-cell
masks are complete there). Each is segmented as it is (``empty``) and with one kind of
structure drawn over it, as a multiplicative relief, by this script's own renderer (not
the one training uses, :mod:`tlseg.training.structures`; its shapes and profiles differ):

- ``round posts``: a hexagonal lattice of posts 0.6-2 cells across, a dark edge with a
  bright halo outside (phase-like) and a slightly darker inside;
- ``square posts``: a lattice of rounded squares 0.6-1.5 cells across, dark outline;
- ``traps``: a row of U-shaped cell traps (rings open on one side, 0.6-1 cell radius);
- ``curved channel``: a meandering channel 3-6 cells wide with dark walls;
- ``dust and fibres``: sharp dark particles of 2-6 px and a curly fibre;
- ``well edge``: the dark wall of the well over a third to a half of the field, its
  border an arc of a large circle with a bright meniscus line and a mottled rim;
- ``bubbles``: one to three air bubbles 2-8 cells across, a thick dark ring round a
  bright centre;
- ``scratches``: one to three long straight scratches, a dark line with bright flanks.

A filter that drops false cells must keep the real ones, so the same fields are also
segmented with their cells (``cells among posts``: the central 384² of each of the 33
fields, round posts drawn over the background at least ``MARGIN_CELLS`` px from every
annotated cell, as cells sit between a chip's posts), scored against the whole-cell
masks: AP@0.5, recall and cells found per field with the posts and without them.

Each crop is segmented at its experiment's true median cell diameter (as a plate run
would use a diameter estimated over the whole plate). Reported per model and kind: mean
and largest number of false cells per field, and the share of fields with at most one
(the target is at most one false cell on a field with structures but no cells). 7 of the
33 fields are training images of ``tl-cells`` (``tl/aisegcell-bf``, whose background it
learns as background), 5 more other time points of their positions: ``fields not seen``
repeats the summaries over the crops of the other fields (:func:`common.seen`), and so
does ``cells among posts``.

Last, the first model's structure filter (``repeat_similarity``), flat filter and speck
filter are run on every real image of cells here (the train and val images of the ``tl``
sources and the 33 aisegcell-s10 fields, diameter estimated): how many objects each would
drop and how many of those are annotated cells (none is the aim), and the highest lattice
peak those fields show.

Results: ``benchmarks/results/false_cells.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tifffile
from common import TL_CELLS_SOURCES, seen, split_pairs, trained_images
from results_file import add_out, write_results
from scipy import ndimage as ndi

import tlseg
from tlseg.analysis.metrics import match_counts, matched_pairs, summarize
from tlseg.training.targets import median_diameter

CROP = 384
MARGIN = 40  # px between a crop and the nearest annotated cell
MARGIN_CELLS = 8  # px between a drawn post and the nearest annotated cell
KINDS = ("empty", "round posts", "square posts", "traps", "curved channel", "dust and fibres",
         "well edge", "bubbles", "scratches")
PER_KIND = 20  # crops drawn (with a fixed seed) for each structure kind


def experiment_diameters(data: Path) -> dict[str, float]:
    """Each aisegcell-s10 experiment's median over its fields of the median cell diameter."""
    root = data / "paired" / "aisegcell-s10"
    diameters = {}
    for path in sorted((root / "cell_labels").glob("*.tif")):
        d = median_diameter(tifffile.imread(path))
        if d:
            diameters.setdefault(path.name.split("_")[0], []).append(d)
    return {e: float(np.median(v)) for e, v in diameters.items()}


def empty_crops(data: Path, diameters: dict[str, float]) -> list[dict]:
    """Cell-free crops of the aisegcell-s10 fields, with their experiment's diameter
    (:func:`experiment_diameters`)."""
    root = data / "paired" / "aisegcell-s10"
    crops = []
    for path in sorted((root / "tl").glob("*.tif")):
        experiment = path.name.split("_")[0]
        image = tifffile.imread(path)
        cells = tifffile.imread(root / "cell_labels" / path.name)
        far = ndi.distance_transform_edt(cells == 0) > MARGIN
        for y in range(0, image.shape[0] - CROP + 1, CROP):
            for x in range(0, image.shape[1] - CROP + 1, CROP):
                if far[y:y + CROP, x:x + CROP].all():
                    crops.append({"field": path.stem, "experiment": experiment, "y": y,
                                  "x": x, "image": image[y:y + CROP, x:x + CROP]})
    for c in crops:
        c["diameter"] = diameters[c["experiment"]]
    return crops


def _g(d, width):
    return np.exp(-0.5 * (d / width) ** 2)


def _lattice(h, w, pitch, rng, hexagonal=True):
    oy, ox = rng.uniform(0, pitch, 2)
    row = pitch * (np.sqrt(3) / 2 if hexagonal else 1)
    for i, y in enumerate(np.arange(oy - pitch, h + pitch, row)):
        shift = pitch / 2 if hexagonal and i % 2 else 0
        for x in np.arange(ox - pitch + shift, w + pitch, pitch):
            yield y, x


def structure(kind: str, shape, d: float, rng) -> np.ndarray:
    """Relief (H, W) of one structure kind for cells ``d`` px across (module docstring)."""
    h, w = shape
    yy, xx = np.mgrid[:h, :w].astype(np.float32)
    rel = np.zeros(shape, np.float32)
    if kind == "round posts":
        r = d * rng.uniform(0.3, 1.0)
        edge, halo = rng.uniform(1.5, 3), rng.uniform(0.1, 0.35)
        for y, x in _lattice(h, w, r * rng.uniform(2.4, 3.5), rng):
            dr = np.hypot(yy - y, xx - x) - r
            rel += -0.35 * _g(dr, edge) + halo * _g(dr - 2 * edge, 1.5 * edge) - 0.08 * (dr < 0)
    elif kind == "square posts":
        a, t = d * rng.uniform(0.3, 0.75), rng.uniform(0, np.pi / 2)
        c, s = np.cos(t), np.sin(t)
        for y, x in _lattice(h, w, a * rng.uniform(2.5, 4), rng, hexagonal=False):
            u, v = (yy - y) * c + (xx - x) * s, -(yy - y) * s + (xx - x) * c
            dr = (np.abs(u) ** 6 + np.abs(v) ** 6) ** (1 / 6) - a
            rel += -rng.uniform(0.25, 0.45) * _g(dr, 2.0)
    elif kind == "traps":
        r = d * rng.uniform(0.6, 1.0)
        opening = rng.uniform(0, 2 * np.pi)
        for y, x in _lattice(h, w, r * rng.uniform(3, 4), rng):
            dr = np.hypot(yy - y, xx - x) - r
            angle = np.angle(np.exp(1j * (np.arctan2(yy - y, xx - x) - opening)))
            rel += -0.4 * _g(dr, 2.5) * (np.abs(angle) > 0.9)
    elif kind == "curved channel":
        width, period = d * rng.uniform(3, 6), rng.uniform(0.7, 1.5) * w
        amp, y0 = rng.uniform(0.05, 0.2) * h, rng.uniform(0.3, 0.7) * h
        centre = y0 + amp * np.sin(2 * np.pi * xx / period + rng.uniform(0, 6.3))
        slope = np.gradient(centre, axis=1)
        across = (yy - centre) / np.sqrt(1 + slope ** 2)
        for side in (-1, 1):
            rel += -0.45 * _g(across - side * width / 2, 2.5)
        rel += rng.uniform(0.05, 0.2) * (np.abs(across) < width / 2)
    elif kind == "dust and fibres":
        for _ in range(rng.integers(5, 20)):
            rr = np.hypot(yy - rng.uniform(0, h), xx - rng.uniform(0, w))
            rel += -rng.uniform(0.3, 0.7) * (rr < rng.uniform(2, 6))
        steps = np.cumsum(rng.normal(0, 0.25, 400))  # a curly fibre: a smooth random walk
        py = rng.uniform(0, h) + np.cumsum(np.sin(steps)) * 1.5
        px = rng.uniform(0, w) + np.cumsum(np.cos(steps)) * 1.5
        fibre = np.zeros(shape, np.float32)
        ok = (py >= 0) & (py < h) & (px >= 0) & (px < w)
        fibre[py[ok].astype(int), px[ok].astype(int)] = 1
        rel += -0.5 * np.clip(ndi.gaussian_filter(fibre, 0.8) * 4, 0, 1)
    elif kind == "well edge":  # a circle of radius 5-20 fields, its centre off the field
        radius, t = rng.uniform(5, 20) * h, rng.uniform(0, 2 * np.pi)
        reach = rng.uniform(0.3, 0.5) * h  # how far the wall reaches into the field
        cy = h / 2 + (radius + h / 2 - reach) * np.sin(t)
        cx = w / 2 + (radius + w / 2 - reach) * np.cos(t)
        inside = radius - np.hypot(yy - cy, xx - cx)  # > 0 on the wall
        mottle = ndi.gaussian_filter(rng.normal(0, 1, shape), d / 8).astype(np.float32)
        mottle /= mottle.std() + 1e-6
        rel += -0.7 / (1 + np.exp(-inside / 3)) + 0.35 * _g(inside + 4, 2.5)
        rel += 0.12 * mottle * _g(inside - d / 2, d / 2) * (inside > -4)
    elif kind == "bubbles":
        for _ in range(rng.integers(1, 4)):
            r = d * rng.uniform(1, 4)
            dr = np.hypot(yy - rng.uniform(0, h), xx - rng.uniform(0, w)) - r
            ring = rng.uniform(0.15, 0.3) * r
            rel += -0.5 * _g(dr + ring / 2, ring / 2) + 0.15 * (dr < -ring)
    elif kind == "scratches":
        for _ in range(rng.integers(1, 4)):
            t, off = rng.uniform(0, np.pi), rng.uniform(-0.4, 0.4) * h
            across = (yy - h / 2) * np.cos(t) - (xx - w / 2) * np.sin(t) - off
            width = rng.uniform(1, 3)
            rel += -0.45 * _g(across, width) + 0.2 * _g(np.abs(across) - 2.5 * width, width)
    return ndi.gaussian_filter(rel, 0.6)


def false_cells(model: tlseg.Model, crops: list[dict], seed: int = 0) -> dict:
    """Per kind: (crop index, cells found) for each cell-free field drawn."""
    rng = np.random.default_rng(seed)
    found = {}
    for kind in KINDS:
        picks = range(len(crops)) if kind == "empty" else rng.choice(
            len(crops), PER_KIND, replace=False)
        found[kind] = []
        for i in picks:
            c = crops[int(i)]
            image = c["image"].astype(np.float32)
            if kind != "empty":
                image = image * np.clip(1 + structure(kind, image.shape, c["diameter"], rng),
                                        0.05, None)
            labels, _ = model.predict_instances(image, diameter=c["diameter"])
            found[kind].append((int(i), int(labels.max())))
    return found


def cells_among_posts(model: tlseg.Model, data: Path, diameters: dict[str, float],
                      seed: int = 0, trained: set[str] = frozenset()) -> dict:
    """AP@0.5 and recall on the aisegcell-s10 fields' central crops, with round posts
    drawn between their cells and without (module docstring); also over the fields of
    positions the model did not train on (``trained``: :func:`common.trained_images`)."""
    root = data / "paired" / "aisegcell-s10"
    rng = np.random.default_rng(seed)
    counts = {"with posts": [], "without": []}
    fresh = []
    for path in sorted((root / "tl").glob("*.tif")):
        image, cells = tifffile.imread(path), tifffile.imread(root / "cell_labels" / path.name)
        y, x = (image.shape[0] - CROP) // 2, (image.shape[1] - CROP) // 2
        image = image[y:y + CROP, x:x + CROP].astype(np.float32)
        cells = cells[y:y + CROP, x:x + CROP]
        d = diameters[path.name.split("_")[0]]
        clear = ndi.distance_transform_edt(cells == 0) > MARGIN_CELLS
        posts = image * np.clip(1 + structure("round posts", image.shape, d, rng) * clear,
                                0.05, None)
        for kind, im in (("with posts", posts), ("without", image)):
            counts[kind].append(match_counts(cells, model.predict_instances(im, diameter=d)[0]))
        fresh.append(seen(path.stem, trained) == "not seen")
    for kind in list(counts):
        counts[f"{kind}, fields not seen"] = [c for c, f in zip(counts[kind], fresh) if f]
    out = {}
    for kind, c in counts.items():
        s = summarize(c)
        out[kind] = {"fields": len(c), "ap50": round(s["ap50"], 3),
                     "recall": round(s["recall"], 3),
                     "cells_per_field": round(float(np.mean([x["n_pred"] for x in c])), 1),
                     "true_per_field": round(float(np.mean([x["n_true"] for x in c])), 1)}
    return out


def filter_on_cell_images(model: tlseg.Model, data: Path) -> dict:
    """What the structure filters would drop on real images of cells, where they must drop
    no cell: per set, the images, the objects the model finds (diameter estimated), those
    on a repeating pattern at the model's ``repeat_similarity`` and at 0.7, the highest
    lattice peak of the autocorrelation (:func:`tlseg.inference.repeats.lattice_vectors`
    reports none below 0.5), the objects the flat filter (:mod:`tlseg.inference.flat`, the
    model's ``flat_texture`` and ``flat_coherence``) drops and, of the objects left, those
    the speck filter (:mod:`tlseg.inference.specks`, ``opaque_darkness``) drops; of the
    repeats at the setting, the flat objects and the specks, those that match an
    annotated cell (IoU >= 0.5)."""
    from tlseg.inference.flat import flat_objects
    from tlseg.inference.labels import resize_labels
    from tlseg.inference.postprocess import instances_from_maps, keep_objects
    from tlseg.inference.repeats import lattice_vectors, repeat_similarity
    from tlseg.inference.specks import opaque_objects

    cd = model.config.canonical_diameter
    inst = model.config.instances
    setting = inst.repeat_similarity
    sets = {f"{s} {split}": split_pairs(data, s, split)
            for s in TL_CELLS_SOURCES for split in ("train", "val")}
    s10 = data / "paired" / "aisegcell-s10"
    sets["aisegcell-s10"] = [(p, s10 / "cell_labels" / p.name)
                             for p in sorted((s10 / "tl").glob("*.tif"))]
    out = {}
    for name, pairs in sets.items():
        if not pairs:
            continue
        row = {"images": 0, "objects": 0, "dropped": 0, "dropped_matched": 0,
               "dropped_at_0.7": 0, "top_peak": 0.0,
               "flat_dropped": 0, "flat_dropped_matched": 0, "opaque_dropped": 0,
               "opaque_dropped_matched": 0}
        for path, mask_path in pairs:
            image = tlseg.read_image(path).astype(np.float32)
            maps, det = model.canonical_maps(image, keep_image=True)
            labels = instances_from_maps(maps, canonical_diameter=cd, config=inst)
            peaks = lattice_vectors(det["image"], cd, min_peak=0.0)[1]
            sim = repeat_similarity(labels, det["image"], cd)
            row["images"] += 1
            row["objects"] += int(labels.max())
            row["dropped"] += int((sim >= setting).sum()) if setting > 0 else 0
            row["dropped_at_0.7"] += int((sim >= 0.7).sum())
            row["top_peak"] = round(max(row["top_peak"], float(peaks.max(initial=0))), 3)
            if labels.max() == 0:
                continue
            truth = resize_labels(tifffile.imread(mask_path), labels.shape)
            if setting > 0:
                row["dropped_matched"] += int(
                    matched_objects(labels, truth)[sim >= setting].sum())
            if inst.flat_texture > 0:
                flat = flat_objects(labels, det["image"], maps[0],
                                    maps[3:5] if maps.shape[0] >= 5 else None,
                                    min_texture=inst.flat_texture,
                                    canonical_diameter=cd,
                                    max_coherence=inst.flat_coherence)
                row["flat_dropped"] += int(flat.sum())
                row["flat_dropped_matched"] += int(matched_objects(labels, truth)[flat].sum())
                labels = keep_objects(labels, ~flat)
            if inst.opaque_darkness > 0 and labels.max() > 0:
                opaque = opaque_objects(labels, det["image"], maps[0],
                                        min_darkness=inst.opaque_darkness,
                                        canonical_diameter=cd)
                row["opaque_dropped"] += int(opaque.sum())
                row["opaque_dropped_matched"] += int(
                    matched_objects(labels, truth)[opaque].sum())
        out[name] = row
        print(f"{name:24s} {row}", flush=True)
    return out


def matched_objects(labels: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Boolean per object 1..n of ``labels``: it is matched to an object of ``truth`` at
    IoU >= 0.5 (:func:`tlseg.analysis.metrics.matched_pairs`)."""
    matched = np.zeros(int(labels.max(initial=0)), bool)
    for _, j in matched_pairs(truth, labels):
        matched[j - 1] = True
    return matched


def summary(counts: list[int]) -> dict:
    counts = np.asarray(counts)
    return {"fields": len(counts), "mean": round(float(counts.mean()), 2),
            "max": int(counts.max()), "at_most_one": round(float((counts <= 1).mean()), 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--model", nargs="+", default=["tl-cells"],
                   help="models to compare (names of shipped models or model folders)")
    p.add_argument("--labels", nargs="+", default=None,
                   help="a name for each model in the results (default: --model)")
    add_out(p, "false_cells")
    args = p.parse_args(argv)
    tlseg.set_threads()
    diameters = experiment_diameters(args.data)
    crops = empty_crops(args.data, diameters)
    print(f"{len(crops)} cell-free {CROP}² crops from "
          f"{len({c['field'] for c in crops})} fields")
    labels = args.labels or args.model
    if len(labels) != len(args.model):
        p.error("--labels needs one name for each --model")
    results = {}
    models = [tlseg.load_model(path) for path in args.model]
    for model, name in zip(models, labels):
        found = false_cells(model, crops)
        trained = trained_images(model, args.data)
        fresh = [seen(c["field"], trained) == "not seen" for c in crops]
        results[name] = {kind: summary([n for _, n in v]) for kind, v in found.items()}
        results[name]["all structures"] = summary(
            [n for kind, v in found.items() if kind != "empty" for _, n in v])
        # the crops of fields the model never saw (nor their position) in training
        results[name]["fields not seen"] = {
            "empty": summary([n for i, n in found["empty"] if fresh[i]]),
            "all structures": summary([n for kind, v in found.items() if kind != "empty"
                                       for i, n in v if fresh[i]])}
        results[name]["cells among posts"] = cells_among_posts(model, args.data, diameters,
                                                               trained=trained)
        print(f"\n{name}\n{'kind':18s} {'mean':>6s} {'max':>5s} {'<=1':>6s}")
        for kind, s in results[name].items():
            if kind not in ("cells among posts", "fields not seen"):
                print(f"{kind:18s} {s['mean']:6.2f} {s['max']:5d} {s['at_most_one']:6.2f}")
        for kind, s in results[name]["fields not seen"].items():
            print(f"{kind + ', fields not seen':18s} {s['mean']:6.2f} {s['max']:5d} "
                  f"{s['at_most_one']:6.2f} ({s['fields']} fields)")
        for kind, s in results[name]["cells among posts"].items():
            print(f"cells, {kind}: AP@0.5 {s['ap50']:.3f}, recall {s['recall']:.3f}, "
                  f"{s['cells_per_field']} found for {s['true_per_field']} a field")
    print(f"\nthe structure filters of {labels[0]} on real images of cells")
    on_cells = filter_on_cell_images(models[0], args.data)
    out = write_results("false_cells", {"crop": CROP, "margin_px": MARGIN,
                                        "models": results,
                                        "structure_filter_on_cell_images": {
                                            "model": labels[0], "sets": on_cells}},
                        argv=argv, out=args.out)
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
