"""Does the check for missed cells (tlseg.uncounted_texture) tell fields counted well from
fields where the model missed cells?

Run::

    python benchmarks/uncounted_texture.py --data ../shared/data

Every field is segmented with the shipped ``tl-cells`` (diameter estimated, except where
said) and scored with :func:`tlseg.uncounted_texture`, the share of its cell-like texture
outside the cells counted; a field over ``tlseg.analysis.coverage.FLAG`` is flagged. Sets:

- the val splits of the three label-free sources (recall at IoU 0.5 against their masks);
- the 33 brightfield fields of ``paired/aisegcell-s10`` against their whole-cell masks;
- the 7 ``paired/aisegcell`` fields (their masks are nuclei: the count ratio only);
- the four quadrants of the neuronal ``paired/isl-phase-dapi`` field, a culture
  ``tl-cells`` was not trained on, at 46.5 px (the count validation's diameter); the
  nuclei model's count of the DAPI channel stands for the truth;
- val cells of each source pasted densely (:func:`common.crowded_val_fields`, 2 fields
  each, at the canonical scale and diameter);
- synthetic confluent monolayers (:data:`common.CONFLUENT`), which the shipped model
  mostly reads as background.

Per field: cells found, true cells, recall, share, flagged. Results:
``benchmarks/results/uncounted_texture.json`` (``--out`` and ``--limit`` for a trial run).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tifffile
from common import (
    VAL_SOURCES,
    confluent_fields,
    crowded_val_fields,
    quadrants,
    val_pairs,
)
from results_file import add_out, write_results

import tlseg
from tlseg.analysis.coverage import FLAG, flagged


def fields(data: Path, limit: int | None):
    """(set, name, image, true labels or None, true count or None, diameter or None)."""
    for source in VAL_SOURCES:
        for img, mask in val_pairs(data, source)[:limit]:
            yield f"val {source}", img.stem, tlseg.read_image(img), tifffile.imread(mask), None, None
    s10 = data / "paired" / "aisegcell-s10"
    for img in sorted((s10 / "tl").glob("*.tif"))[:limit]:
        yield ("aisegcell-s10", img.stem, tlseg.read_image(img),
               tifffile.imread(s10 / "cell_labels" / img.name), None, None)
    a7 = data / "paired" / "aisegcell"
    for img in sorted((a7 / "tl").glob("*.tif"))[:limit]:
        nuclei = tifffile.imread(a7 / "nuc_labels" / img.name)
        yield "aisegcell (7)", img.stem, tlseg.read_image(img), None, len(np.unique(nuclei)) - 1, None
    neuronal = data / "paired" / "isl-phase-dapi"
    nuclei_model = tlseg.load_model("nuclei")
    for img in sorted((neuronal / "tl").glob("*.tif"))[:limit]:
        tl, dapi = tlseg.read_image(img), tlseg.read_image(neuronal / "nuc" / img.name)
        for q, (tl_q, dapi_q) in enumerate(zip(quadrants(tl), quadrants(dapi))):
            n = int(tlseg.discard_edge(nuclei_model.segment(dapi_q)).max())
            yield "neuronal quadrants", f"{img.stem} q{q + 1}", tl_q, None, n, 46.5
    for source in VAL_SOURCES:
        for i, (image, labels, _) in enumerate(crowded_val_fields(data, source, 2, limit)):
            yield "val cells pasted densely", f"{source} {i}", image, labels, None, 30.0
    for i, (modality, field) in enumerate(confluent_fields(limit)):
        yield "synthetic monolayers", f"{modality} {i}", field["tl"], field["labels"], None, None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--limit", type=int, help="only the first N fields of each set")
    add_out(p, "uncounted_texture")
    args = p.parse_args(argv)
    tlseg.set_threads()
    model = tlseg.load_model("tl-cells")
    rows = []
    for name, field, image, truth, n_true, diameter in fields(args.data, args.limit):
        labels, details = model.predict_instances(image, diameter=diameter)
        share = tlseg.uncounted_texture(image, labels, details["diameter"])
        row = {"set": name, "field": field, "diameter": round(details["diameter"], 1),
               "found": int(labels.max()), "share": share,
               "flagged": flagged(share)}
        if truth is not None:
            row["true"] = len(np.unique(truth[truth > 0]))
            row["recall"] = round(tlseg.evaluate(labels, truth)["recall"], 3)
        elif n_true is not None:
            row["true"] = n_true
        if row.get("true"):
            row["ratio"] = round(row["found"] / row["true"], 3)
        rows.append(row)
        print(f"{name:26s} {field:38s} found {row['found']:5d} true {row.get('true', '-')!s:>5} "
              f"recall {row.get('recall', '-')!s:>5}  share {share}", flush=True)
    summary = {}
    for name in dict.fromkeys(r["set"] for r in rows):
        mine = [r for r in rows if r["set"] == name]
        shares = [r["share"] for r in mine if r["share"] is not None]
        recalls = [r["recall"] for r in mine if "recall" in r]
        summary[name] = {
            "fields": len(mine), "flagged": sum(r["flagged"] for r in mine),
            "no_cell_found": sum(r["share"] is None for r in mine),
            "share_median": round(float(np.median(shares)), 3) if shares else None,
            "share_min": round(min(shares), 3) if shares else None,
            "share_max": round(max(shares), 3) if shares else None,
            "recall_median": round(float(np.median(recalls)), 3) if recalls else None}
        print(f"{name:26s} " + "  ".join(f"{k} {v}" for k, v in summary[name].items()))
    scored = [r for r in rows if "recall" in r and r["share"] is not None]
    missed = np.array([1 - r["recall"] for r in scored])
    shares = np.array([r["share"] for r in scored])
    pearson = round(float(np.corrcoef(shares, missed)[0, 1]), 3) if len(scored) > 2 else None
    print(f"share vs 1 - recall over {len(scored)} fields with masks: Pearson r {pearson}")
    path = write_results("uncounted_texture", {
        "flag": FLAG, "summary": summary,
        "share_vs_missed": {"fields": len(scored), "pearson_r": pearson}, "fields": rows},
        argv=argv, out=args.out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
