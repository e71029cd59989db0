"""Accuracy of tl-cells and its peers on every val source of ../shared/data.

Run::

    python benchmarks/accuracy.py --data ../shared/data

For each val image of each label-free source it runs tl-cells with the diameter
estimated automatically (as a user would run it) and scores AP@0.5, AP@0.75 and mean AP
0.5:0.95 (pooled over the source's images). It also runs tl-cells on the same images
(a) rescaled 0.5x and 2x (scale robustness: the estimate must follow),
(b) with a synthetic illumination gradient and vignette added (shading robustness),
(c) crowded: the source's val cells pasted densely into 512² canonical-pixel fields of
its val images (60-90 % cells, :func:`tlseg.training.crowd.crowded_samples`, four per
source), shown at the source's own scale,
(d) synthetic confluent monolayers (:func:`tlseg.synthetic_field` with ``confluent=True``,
512², cells of 16, 24 and 40 px in phase contrast, brightfield and DIC: the fields of
``diameter_estimate.py``), diameter estimated and given (key ``synthetic_monolayers``),
and a classical watershed floor. AP@0.5 is also pooled by density (cells per
canonical cell area, :func:`common.density`; bins :data:`common.DENSITY_BINS`) over the
val images of every source. Peers whose masks exist under
``benchmarks/work/<peer>/<source>/`` (written by ``benchmarks/peers/*.py``) are scored on
the same images. Results: ``benchmarks/results/accuracy.json``; the peers' scores go to
``benchmarks/results/peers.json`` (key ``accuracy``), which ``--peers-only`` rewrites
without running tl-cells. ``--out`` (with ``--sources`` or ``--limit`` for a trial on
part of the data) writes elsewhere.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from common import (
    VAL_SOURCES,
    WORK,
    confluent_fields,
    crowded_val_fields,
    density,
    density_bin,
    train_median_diameter,
    val_pairs,
)
from results_file import add_out, results_path, update_results, write_results
from scipy import ndimage as ndi

import tlseg
from tlseg.analysis.metrics import match_counts, summarize
from tlseg.inference.labels import resize_labels
from tlseg.inference.preprocess import rescale
from tlseg.training.targets import median_diameter

PEERS = {
    "cellpose_scratch": "Cellpose 3, trained from scratch on the same train split, same wall time",
    "stardist_scratch": "StarDist 2D, trained from scratch on the same train split, same wall time",
    "cellpose_cyto_v1": "Cellpose cyto v1, net 0 of 4 (pretrained, from the cellpose==0.0.1.6 wheel)",
    "deepsea_pretrained": "DeepSea segmentation model (pretrained, deepsea==0.0.3 wheel)",
}
PEER_DIAMETER = ("each source's median training diameter (peers are given it; tl-cells "
                 "estimates its own)")


def shade(image: np.ndarray) -> np.ndarray:
    """Multiply by a 2.5x linear gradient and a vignette falling to 55 % in the corners."""
    h, w = image.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    yy, xx = yy / h - 0.5, xx / w - 0.5
    gradient = 1 + 0.85 * (0.8 * xx + 0.6 * yy)  # 0.4 .. 1.6 across the diagonal
    vignette = 1 - 0.9 * (xx**2 + yy**2)
    return image * gradient * vignette


def watershed_floor(image: np.ndarray, diameter: float) -> np.ndarray:
    """Classical pipeline: local contrast, Otsu, fill holes, distance-transform watershed."""
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.segmentation import watershed

    img = image / ndi.gaussian_filter(image, 3 * diameter).clip(1e-6)
    # transmitted-light cells differ from background by texture, not level
    s = max(1.0, diameter / 10)
    var = gaussian((img - gaussian(img, s)) ** 2, s)
    mask = var > threshold_otsu(var)
    mask = ndi.binary_fill_holes(ndi.binary_closing(mask, iterations=2))
    parts, _ = ndi.label(mask)  # drop objects of up to 0.15 of a cell's area
    big = np.bincount(parts.ravel()) > int(0.15 * np.pi * (diameter / 2) ** 2)
    big[0] = False
    mask = big[parts]
    dist = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(dist, min_distance=max(3, int(diameter / 3)), labels=mask,
                           exclude_border=False)
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=mask)


def crowded_fields(data: Path, source: str, limit: int | None = None, n: int = 4):
    """(image, labels) of ``n`` crowded fields of a source's val cells
    (:func:`common.crowded_val_fields`), at the source's median val cell size."""
    for image, labels, d in crowded_val_fields(data, source, n, limit):
        image = rescale(image, d / 30.0)
        yield image, resize_labels(labels, image.shape)


def monolayer_scores(model) -> dict:
    """AP@0.5 per modality on the synthetic monolayers (:func:`common.confluent_fields`),
    with the diameter estimated (``auto``) and given as the fields' true median
    (``known``)."""
    counts: dict = {}
    for modality, f in confluent_fields():
        true = f["labels"]
        for key, diameter in (("auto", None), ("known", median_diameter(true))):
            labels, _ = model.predict_instances(f["tl"], diameter=diameter)
            counts.setdefault(key, {}).setdefault(modality, []).append(match_counts(true, labels))
    return {key: {m: summarize(c) for m, c in per.items()} for key, per in counts.items()}


def _score_peers(data: Path, sources, limit: int | None = None) -> dict:
    table = {}
    for peer in PEERS:
        per_source = {}
        for source in sources:
            pairs = val_pairs(data, source)[:limit]
            preds = [WORK / peer / source / f"{img.stem}_masks.tif" for img, _ in pairs]
            if not all(p.is_file() for p in preds):
                continue
            per_source[source] = [
                match_counts(t := tlseg.read_labels(m), tlseg.read_labels(p, shape=t.shape))
                for (_, m), p in zip(pairs, preds)]
        if per_source:
            row = {s: summarize(c) for s, c in per_source.items()}
            if len(per_source) == len(sources):
                row["pooled"] = summarize([x for c in per_source.values() for x in c])
            table[peer] = row
    return table


def _write_peers(peers: dict, *, argv=None, out: Path | None = None) -> Path:
    """The peers' scores into peers.json's ``accuracy`` entry (or ``out``)."""
    return update_results("peers", ("accuracy",), argv=argv, out=out, payload={
        "diameter": PEER_DIAMETER,
        "peers": {k: v for k, v in PEERS.items() if k in peers},
        "results": peers,
    })


def _peers_only(args, argv=None) -> int:
    peers = _score_peers(Path(args.data), args.sources, args.limit)
    if not peers:
        raise SystemExit(f"no peer masks under {WORK}/<peer>/<source>/ "
                         "(run the scripts in benchmarks/peers/ first)")
    _print_table(peers, args.sources)
    print(f"written {_write_peers(peers, argv=argv, out=args.out)}")
    return 0


def _print_table(table, sources):
    print(f"\n{'method':<22}" + "".join(f"{s[:14]:>16}" for s in sources) + f"{'pooled':>16}")
    for method, row in table.items():
        cells = [row.get(s) for s in sources] + [row.get("pooled")]
        print(f"{method:<22}" + "".join(
            f"{c['ap50']:>8.3f}/{c['map']:.3f}" if c else f"{'-':>16}" for c in cells))
    print("(AP@0.5 / mean AP 0.5:0.95)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--model", default="tl-cells")
    p.add_argument("--sources", nargs="*", default=list(VAL_SOURCES))
    p.add_argument("--limit", type=int, help="only the first N val images of each source")
    p.add_argument("--no-variants", action="store_true", help="skip the 0.5x/2x/shading runs")
    p.add_argument("--peers-only", action="store_true",
                   help="only (re)score the peers' masks into peers.json")
    add_out(p, "accuracy", " (peers.json with --peers-only)")
    args = p.parse_args(argv)
    if args.peers_only:
        return _peers_only(args, argv)
    tlseg.set_threads(2)
    model = tlseg.load_model(args.model)
    conditions = ["tl-cells", "watershed"]
    if not args.no_variants:
        conditions += ["tl-cells 0.5x", "tl-cells 2x", "tl-cells shading", "tl-cells crowded"]
    by_density: dict = {}
    counts: dict = {c: {} for c in conditions}
    diam_log = {}
    t_start = time.time()
    for source in args.sources:
        d_train = train_median_diameter(Path(args.data), source)
        for img_path, mask_path in val_pairs(Path(args.data), source)[:args.limit]:
            image = tlseg.read_image(img_path)
            true = tlseg.read_labels(mask_path, shape=image.shape)
            labels, det = model.predict_instances(image)
            counts["tl-cells"].setdefault(source, []).append(match_counts(true, labels))
            by_density.setdefault(density_bin(density(true)), []).append(
                (source, img_path.stem, round(density(true), 3), counts["tl-cells"][source][-1]))
            diam_log.setdefault(source, []).append(det["diameter"])
            counts["watershed"].setdefault(source, []).append(
                match_counts(true, watershed_floor(image, d_train)))
            if not args.no_variants:
                for f in (0.5, 2.0):
                    small = rescale(image, f)
                    t_small = resize_labels(true, small.shape)
                    lab, _ = model.predict_instances(small)
                    counts[f"tl-cells {f:g}x"].setdefault(source, []).append(match_counts(t_small, lab))
                lab, _ = model.predict_instances(shade(image))
                counts["tl-cells shading"].setdefault(source, []).append(match_counts(true, lab))
            print(f"{source}/{img_path.stem}: {det['n_cells']} cells, "
                  f"{len(np.unique(true)) - 1} true, diameter {det['diameter']:.1f}", flush=True)
        if not args.no_variants:
            for image, true in crowded_fields(Path(args.data), source, args.limit):
                lab, _ = model.predict_instances(image)
                counts["tl-cells crowded"].setdefault(source, []).append(match_counts(true, lab))
    table = {}
    for method, per_source in counts.items():
        row = {src: summarize(c) for src, c in per_source.items()}
        row["pooled"] = summarize([x for c in per_source.values() for x in c])
        table[method] = row
    _print_table(table, args.sources)
    layers = None if args.no_variants else monolayer_scores(model)
    for key, per in (layers or {}).items():
        print(f"synthetic monolayers, diameter {key}: " + ", ".join(
            f"{m} {r['ap50']:.3f} ({r['n_pred']}/{r['n_true']})" for m, r in per.items()))
    density_table = {b: {"n_images": len(v), "densities": [x[2] for x in v],
                         **summarize([x[3] for x in v])}
                     for b, v in sorted(by_density.items(), key=lambda kv: kv[1][0][2])}
    print("\ntl-cells AP@0.5 by density (cells per canonical cell area), val images pooled")
    for b, row in density_table.items():
        print(f"  {b:>10s}: {row['ap50']:.3f} over {row['n_images']} images "
              f"({row['n_true']} cells)")
    out = write_results("accuracy", argv=argv, out=args.out, payload={
        "model": args.model,
        "diameter": "estimated automatically per image",
        "estimated_diameters": {s: [round(d, 1) for d in v] for s, v in diam_log.items()},
        "results": table,
        "by_density": density_table,
        **({"synthetic_monolayers": layers} if layers else {}),
        "wall_s": round(time.time() - t_start, 1),
    })
    print(f"written {out}")
    peers = _score_peers(Path(args.data), args.sources, args.limit)
    if peers:  # the peers' masks found are scored on the same images
        _print_table(peers, args.sources)
        peers_out = (None if args.out is None or out.resolve() == results_path("accuracy")
                     else out.with_name(f"{out.stem}_peers.json"))
        print(f"written {_write_peers(peers, argv=argv, out=peers_out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
