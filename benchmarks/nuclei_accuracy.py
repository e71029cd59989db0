"""Accuracy of the `nuclei` model on every real nuclei set it was not trained on.

Run::

    python benchmarks/nuclei_accuracy.py --data ../shared/data [--models nuclei PATH ...]

Three sets, each image segmented with the diameter estimated automatically (as a user
runs it), scored like ``tlseg evaluate`` (AP@0.5, AP@0.75, mean AP 0.5:0.95, pooled over
the set's images) plus counted vs true nuclei:

- ``bbbc039`` val: U2OS, Hoechst, ImageXpress (the training source's val split);
- ``dsb2018-examples`` val: two DSB2018 fluorescence images (other labs, smaller nuclei);
- ``aisegcell`` paired fields: the nuclear-marker channel of the seven paired
  brightfield fields against their published nucleus masks (``nuc_labels/``). Primary
  cells, another microscope and stain: the hardest test of generalisation. Those masks
  are drawn tight (median area about half of the stained nucleus) and miss some real
  nuclei (see ``paired/aisegcell/SOURCE.md``), so AP by IoU says little there: this set
  is scored by *detection* instead — a predicted nucleus that holds a true nucleus's
  centroid finds it (one-to-one) — as precision, recall, F1 and counts, and where the
  extra objects come from: predictions that touch no true mask, and true nuclei touched
  by several predictions (each beyond the first counted as a split).

``bbbc039, fragments ignored`` scores the same bbbc039 predictions once more with the
val masks' annotation fragments (objects under 15 % of the median area, not cut by the
image border; :func:`tlseg.training.targets.ignore_fragments`) as unknown: neither
missed nuclei nor false positives. Both rows are reported; the first is the masks as
published.

Every set also gets the per-image count error a plate user sees, mean |counted - true| /
true over its images (``mean_abs_count_error``; on bbbc039 against the masks without
their fragments in the ``fragments ignored`` row).

``--size-floor 0 0.15 0.2 ...`` scores the shipped weights once per value of the field-relative
size floor (``min_area_of_median``: objects under that fraction of the field's median object
area dropped) and replaces only the file's ``size_floor`` entry::

    python benchmarks/nuclei_accuracy.py --data ../shared/data --size-floor 0 0.15 0.2 0.25 0.3 0.4

Several models can be compared in one run (``--models nuclei runs/nuclei-v2``).
Results: ``benchmarks/results/nuclei_accuracy.json`` (``--out`` for a trial run, with
``--limit``). ``--counts`` scores the shipped ``nuclei`` model alone and replaces only the
file's ``counts`` entry, keeping the comparison of models::

    python benchmarks/nuclei_accuracy.py --data ../shared/data --counts
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from results_file import add_out, update_results, write_results
from skimage.measure import regionprops

import tlseg
from tlseg.analysis.metrics import match_counts, overlap_counts, summarize
from tlseg.training.targets import ignore_fragments

BY_DETECTION = ("aisegcell",)
FRAGMENTS = 0.15  # as the nuclei model's training (--fragments)
NO_FRAGMENTS = "bbbc039, fragments ignored"


def nuclei_sets(data: Path, limit: int | None = None) -> dict[str, list[tuple[Path, Path]]]:
    """(image, mask) paths of each scored set (the first ``limit`` of each)."""
    sets = {}
    for source in ("bbbc039", "dsb2018-examples"):
        folder = data / "nuclei" / source / "val"
        sets[source] = [(p, folder / "masks" / p.name)
                        for p in sorted((folder / "images").glob("*.tif"))][:limit]
    folder = data / "paired" / "aisegcell"
    sets["aisegcell"] = [(p, folder / "nuc_labels" / p.name)
                         for p in sorted((folder / "nuc").glob("*.tif"))][:limit]
    return sets


def detections(true, pred) -> dict:
    """Centroid detection counts: a predicted object holding a true object's centroid
    finds it, each prediction at most once."""
    found = set()
    n_true = 0
    for r in regionprops(true):
        n_true += 1
        y, x = (round(float(v)) for v in r.centroid)
        if pred[y, x] and pred[y, x] not in found:
            found.add(int(pred[y, x]))
    # where the extra objects come from: predictions touching no true mask, and true
    # nuclei touched by more than one prediction (one counted, the rest extra)
    hits = overlap_counts(true, pred)[1:, 1:] > 0
    present = np.bincount(pred.ravel().astype(np.int64), minlength=hits.shape[1] + 1)[1:] > 0
    per_true = hits.sum(1)
    return {"tp": len(found), "n_true": n_true, "n_pred": int(present.sum()),
            "no_true_mask": int((~hits.any(0) & present).sum()),
            "split_extra": int((per_true[per_true > 1] - 1).sum())}


def detection_summary(counts: list[dict]) -> dict:
    tp = sum(c["tp"] for c in counts)
    n_true = sum(c["n_true"] for c in counts)
    n_pred = sum(c["n_pred"] for c in counts)
    precision, recall = tp / max(n_pred, 1), tp / max(n_true, 1)
    return {"precision": precision, "recall": recall,
            "no_true_mask": sum(c["no_true_mask"] for c in counts),
            "split_extra": sum(c["split_extra"] for c in counts),
            "f1": 2 * precision * recall / max(precision + recall, 1e-9),
            "n_pred": n_pred, "n_true": n_true,
            "mean_abs_count_error": float(np.mean(
                [abs(c["n_pred"] - c["n_true"]) / max(c["n_true"], 1) for c in counts]))}


def score_model(model: tlseg.Model, sets: dict) -> tuple[dict, dict]:
    """Scores per set (AP sets pooled over both) and per-image counts and diameters."""
    counts, per_image = {}, {}
    for name, pairs in sets.items():
        for img_path, mask_path in pairs:
            image = tlseg.read_image(img_path)
            true = tlseg.read_labels(mask_path, shape=image.shape)
            labels, det = model.predict_instances(image)
            c = detections(true, labels) if name in BY_DETECTION else match_counts(true, labels)
            counts.setdefault(name, []).append(c)
            row = {"image": img_path.stem, "n_pred": int(det["n_cells"]),
                   "n_true": int(c["n_true"]), "diameter": round(det["diameter"], 1)}
            if name == "bbbc039":
                whole = match_counts(ignore_fragments(true, fraction=FRAGMENTS), labels)
                counts.setdefault(NO_FRAGMENTS, []).append(whole)
                row["n_true_no_fragments"] = int(whole["n_true"])
            per_image.setdefault(name, []).append(row)
            print(f"  {name}/{img_path.stem}: {det['n_cells']} nuclei, {c['n_true']} true, "
                  f"diameter {det['diameter']:.1f}", flush=True)
    table = {name: (detection_summary(c) if name in BY_DETECTION else summarize(c))
             for name, c in counts.items()}
    table["pooled AP sets"] = summarize(
        [x for name, c in counts.items() if name in sets and name not in BY_DETECTION
         for x in c])
    for name, rows in per_image.items():
        if name not in BY_DETECTION:
            table[name]["mean_abs_count_error"] = count_error(rows)
    if "bbbc039" in per_image:
        table[NO_FRAGMENTS]["mean_abs_count_error"] = count_error(
            per_image["bbbc039"], truth="n_true_no_fragments")
    return table, per_image


def count_error(images: list[dict], truth: str = "n_true") -> float:
    """Mean |counted - true| / true over the images (``truth``: which true count).

    >>> count_error([{"n_pred": 9, "n_true": 10}, {"n_pred": 22, "n_true": 20}])
    0.1
    """
    return float(np.mean([abs(r["n_pred"] - r[truth]) / max(r[truth], 1) for r in images]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--models", nargs="+", default=["nuclei"])
    p.add_argument("--limit", type=int, help="only the first N images of each set")
    p.add_argument("--counts", action="store_true",
                   help="score the shipped nuclei model alone and replace only the "
                        "results file's 'counts' entry")
    p.add_argument("--size-floor", nargs="+", type=float, metavar="FRACTION",
                   help="score the shipped weights at each field-relative size floor "
                        "(min_area_of_median) and replace only the 'size_floor' entry")
    add_out(p, "nuclei_accuracy")
    args = p.parse_args(argv)
    tlseg.set_threads()
    sets = nuclei_sets(args.data, args.limit)
    t0 = time.time()
    if args.counts:
        return shipped_counts(sets, argv, args.out, t0)
    if args.size_floor:
        return size_floors(sets, args.size_floor, argv, args.out, t0)
    results, images = {}, {}
    for m in args.models:
        print(f"{m}:", flush=True)
        results[m], images[m] = score_model(tlseg.load_model(m), sets)
    names = [n for n in sets if n not in BY_DETECTION] + ["pooled AP sets", NO_FRAGMENTS]
    print(f"\n{'model':28s}" + "".join(f"{n[:17]:>18s}" for n in names) + f"{'aisegcell':>26s}")
    for m, row in results.items():
        a = row["aisegcell"]
        print(f"{m:28s}" + "".join(f"{row[n]['ap50']:10.3f} / {row[n]['map']:.3f}" for n in names)
              + f"  F1 {a['f1']:.3f}, count error {100 * a['mean_abs_count_error']:.1f} %, "
              f"{a['n_pred']} counted / {a['n_true']} true: {a['no_true_mask']} on no true "
              f"mask, {a['split_extra']} from splits")
    print("(AP@0.5 / mean AP 0.5:0.95; aisegcell: centroid detection F1, mean |count error|,"
          " where the extra objects are)")
    out = write_results("nuclei_accuracy", argv=argv, out=args.out, payload={
        "diameter": "estimated automatically per image",
        "results": results,
        "images": images,
        "wall_s": round(time.time() - t0, 1),
    })
    print(f"written {out}")
    return 0


def shipped_counts(sets: dict, argv, out: Path | None, t0: float) -> int:
    """``--counts``: the shipped nuclei model's per-image counts and count errors."""
    table, images = score_model(tlseg.load_model("nuclei"), sets)
    errors = {name: row["mean_abs_count_error"] for name, row in table.items()
              if "mean_abs_count_error" in row}
    for name, e in errors.items():
        print(f"{name:28s} mean |count error| {100 * e:.1f} %")
    path = update_results("nuclei_accuracy", ("counts",), argv=argv, out=out, payload={
        "model": "nuclei (shipped)",
        "diameter": "estimated automatically per image",
        "mean_abs_count_error": errors,
        "images": images,
        "wall_s": round(time.time() - t0, 1),
    })
    print(f"written {path}")
    return 0


def size_floors(sets: dict, fractions: list[float], argv, out: Path | None, t0: float) -> int:
    """``--size-floor``: the shipped weights and settings, with ``min_area_of_median`` at
    each of ``fractions``; per set AP@0.5, mean AP, counted objects and count error."""
    shipped = tlseg.load_model("nuclei")
    rows = {}
    for f in fractions:
        inst = replace(shipped.config.instances, min_area_of_median=f)
        model = tlseg.Model(replace(shipped.config, instances=inst), shipped.net,
                            card=shipped.card)
        table, _ = score_model(model, sets)
        rows[str(f)] = {name: {k: row[k] for k in ("ap50", "map", "f1", "n_pred", "n_true",
                                                   "no_true_mask", "mean_abs_count_error")
                               if k in row}
                        for name, row in table.items()}
        a = table["aisegcell"]
        print(f"size floor {f}: bbbc039 AP@0.5 {table['bbbc039']['ap50']:.3f}, dsb2018 "
              f"{table['dsb2018-examples']['ap50']:.3f}, bbbc039 count error (fragments "
              f"ignored) {100 * table[NO_FRAGMENTS]['mean_abs_count_error']:.1f} %; "
              f"aisegcell {a['n_pred']} counted / {a['n_true']} true, count error "
              f"{100 * a['mean_abs_count_error']:.1f} %", flush=True)
    path = update_results("nuclei_accuracy", ("size_floor",), argv=argv, out=out, payload={
        "model": "nuclei (shipped weights and settings), min_area_of_median varied",
        "shipped_value": shipped.config.instances.min_area_of_median,
        "diameter": "estimated automatically per image",
        "floors": rows,
        "wall_s": round(time.time() - t0, 1),
    })
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
