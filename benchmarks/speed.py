"""Speed and peak memory of tlseg segmentation vs Cellpose 3 inference, and the nuclei model per plate site.

Run::

    python benchmarks/speed.py            # sizes 1024 2048 4096, then the nuclei model

For each size a synthetic phase-contrast field (cells 30 px across, so neither tool
rescales) is written to a temporary TIFF. Each measurement is one timed call in a fresh
process, after an untimed call on the same image, so that each is the time per image of a
run that has started (a folder or a plate): tl-cells (``tlseg.load_model`` +
``Model.predict_instances`` + ``tlseg.write_labels``, what ``tlseg segment`` does per
image; diameter given, then estimated) and Cellpose 3
(``benchmarks/peers/cellpose_speed.py`` in its own venv, cyto-style network, diameter
30). The three take turns for ``--repeats`` rounds (1 at 4096²), so that load on the
shared machine affects them alike. Reported: median seconds per image over the rounds,
seconds per megapixel, the highest peak RSS of the rounds' processes, and the Cellpose /
tlseg time ratio.

Nuclei: a synthetic 1024² nuclear-stain site (``tlseg.synthetic_field``, 150 cells,
nuclei ~14 px) is segmented at its known nucleus diameter by each of
``--nuclei-models`` (default: the shipped ``nuclei``), ``--nuclei-repeats`` times,
alternating between the models so that load on the machine affects them alike; the
median wall time per model and the ratio to the first model are reported.

ONNX (``--onnx-only``, needs ``pip install -e '.[export]'``): the tl-cells network alone
on a 1024² canonical-scale input, in PyTorch, in PyTorch with BatchNorm folded into the
convolutions, and exported to ONNX in onnxruntime, 2 threads each, interleaved; median
seconds and the speed-up over PyTorch (docs/export.md), under the key ``onnx``.

Size limit (``--limit-only``): peak memory and time of one field at the largest size
tlseg segments, 8192² at the canonical scale (a 1024² synthetic brightfield field tiled
8 x 8, diameter given), measured as the size rows are (key ``limit``).

Results: ``benchmarks/results/speed.json`` (the nuclei timings under ``nuclei``; a full
run keeps the entries of the ``--...-only`` runs);
the Cellpose 3 rows also go to ``benchmarks/results/peers.json`` (key ``speed``).
``--nuclei-only`` times only the nuclei model and rewrites only that key.
``--uncounted-texture-only`` times the check for missed cells
(:func:`tlseg.uncounted_texture`) against segmenting the same field, on synthetic
phase-contrast fields of 1024² and 2048² with cells of 30 px and 15 px (the check works
at the image's resolution up to 15 px a cell), interleaved (key ``uncounted_texture``).
``--structure-filter-only`` times ``tl-cells`` with its structure filter
(``repeat_similarity``), pattern removal (``remove_pattern``), flat filter
(``flat_texture``) and speck filter (``opaque_darkness``) on and off, interleaved,
on plain 1024² and 2048² fields and the same with a lattice of posts (key
``structure_filter``).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from common import REPO
from results_file import add_out, results_path, stamp, update_results, write_results

CELLPOSE_PY = REPO / "benchmarks" / ".venv-cellpose" / "bin" / "python"
#: the keys of speed.json that only their own ``--...-only`` run rewrites
PART_KEYS = ("structure_filter", "uncounted_texture", "onnx", "limit")
NUCLEUS_DIAMETER = 14.0


def _child(argv) -> int:
    """Run in a fresh process: segment one image once untimed, then once timed; print
    the time and memory as JSON."""
    import tlseg

    path, diameter = argv[0], argv[1]
    tlseg.set_threads(2)
    t0 = time.perf_counter()
    model = tlseg.load_model("tl-cells")
    image = tlseg.read_image(path)
    load_s = time.perf_counter() - t0
    rss_before_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    diameter = None if diameter == "auto" else float(diameter)
    model.predict_instances(image, diameter=diameter)  # untimed: set-up, first faults
    t = time.perf_counter()
    labels, det = model.predict_instances(image, diameter=diameter)
    tlseg.write_labels(Path(path).with_name("out_masks.tif"), labels)
    seconds = time.perf_counter() - t
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "load_s": load_s, "peak_rss_mb": rss_mb,
                      "rss_before_mb": rss_before_mb, "n_cells": det["n_cells"]}))
    return 0


def _run(cmd) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_tl_cells(sizes, repeats: int, cellpose: bool) -> list[dict]:
    """One row per image size: tl-cells with the diameter given and estimated, and
    Cellpose 3 where its venv exists."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            img = Path(tmp) / f"field_{size}.tif"
            # made in a separate process: a child's peak RSS starts at its parent's RSS
            # when forked, so the parent must never hold a large image
            subprocess.run([sys.executable, __file__, "--make", str(img), str(size)], check=True)
            mp = size * size / 1e6
            reps = repeats if size <= 2048 else 1
            # one timed call a process, the tools in turn, so that load on the machine
            # affects them alike; the median over the rounds
            runs = {"tlseg": [], "tlseg_auto_diameter": []}
            with_cellpose = cellpose and CELLPOSE_PY.exists()
            if with_cellpose:
                runs["cellpose3"] = []
            for _ in range(reps):
                for label, diam in (("tlseg", "30"), ("tlseg_auto_diameter", "auto")):
                    runs[label].append(_run([sys.executable, __file__, "--child", str(img),
                                             diam]))
                if with_cellpose:
                    runs["cellpose3"].append(_run(
                        [str(CELLPOSE_PY), str(REPO / "benchmarks/peers/cellpose_speed.py"),
                         "--image", str(img), "--repeats", "2", "--threads", "2"]))
            row = {"size": size, "megapixels": round(mp, 2), "rounds": reps}
            for label, rs in runs.items():
                # Cellpose's script warms up on a 256² image: its first call is untimed here
                times = [r["seconds"][-1] if label == "cellpose3" else r["seconds"]
                         for r in rs]
                med = float(np.median(times))
                row[label] = {"s_per_image": round(med, 3), "s_per_megapixel": round(med / mp, 3),
                              "peak_rss_mb": round(max(r["peak_rss_mb"] for r in rs))}
                if label != "cellpose3":
                    row[label]["n_cells"] = rs[0]["n_cells"]
            if with_cellpose:
                row["speedup_vs_cellpose"] = round(row["cellpose3"]["s_per_image"]
                                                   / row["tlseg"]["s_per_image"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'size':>6} {'tlseg s/MP':>11} {'auto-d s/MP':>12} {'RSS MB':>7} {'Cellpose s/MP':>14} {'speed-up':>9}")
    for r in rows:
        cp = r.get("cellpose3", {})
        print(f"{r['size']:>6} {r['tlseg']['s_per_megapixel']:>11.3f} "
              f"{r['tlseg_auto_diameter']['s_per_megapixel']:>12.3f} {r['tlseg']['peak_rss_mb']:>7} "
              f"{cp.get('s_per_megapixel', float('nan')):>14.3f} {r.get('speedup_vs_cellpose', float('nan')):>9.2f}")
    return rows


#: the field at the largest size tlseg segments (``MAX_CANONICAL_PIXELS``, 8192² at the
#: canonical scale): a 1024² synthetic brightfield field with 30 px cells, tiled 8 x 8
LIMIT_TILE, LIMIT_TILES = 1024, 8


def measure_limit() -> dict:
    """Peak memory and time of segmenting one field at the size limit (:data:`LIMIT_TILE`
    x :data:`LIMIT_TILES`, diameter given: 30 px, so no rescaling), as the size rows are
    measured: in a fresh process that loads ``tl-cells``, reads the TIFF, segments it
    (once untimed, then timed) and writes the labels; also the process's peak before
    segmenting."""
    with tempfile.TemporaryDirectory() as tmp:
        img = Path(tmp) / "limit.tif"
        subprocess.run([sys.executable, __file__, "--make-limit", str(img)], check=True)
        r = _run([sys.executable, __file__, "--child", str(img), "30"])
    side = LIMIT_TILE * LIMIT_TILES
    row = {"field": f"{LIMIT_TILE}² synthetic brightfield field (30 px cells) tiled "
                    f"{LIMIT_TILES} x {LIMIT_TILES}", "size": side,
           "megapixels": round(side * side / 1e6, 1), "s_per_image": round(r["seconds"], 1),
           "peak_rss_mb": round(r["peak_rss_mb"]),
           "rss_before_segmenting_mb": round(r["rss_before_mb"]), "n_cells": r["n_cells"]}
    print(json.dumps(row))
    return row


def time_nuclei(model_names, repeats: int) -> dict:
    """Median time per nuclei model to segment one synthetic 1024² nuclear-stain site."""
    import tlseg

    tlseg.set_threads()
    f = tlseg.synthetic_field((1024, 1024), n_cells=150, diameter=28, modality="brightfield",
                              seed=3)
    image = f["nuclei"].astype(np.float32)
    models = {m: tlseg.load_model(m) for m in model_names}
    for m in models.values():  # warm-up
        m.predict_instances(image, diameter=NUCLEUS_DIAMETER)
    times: dict[str, list[float]] = {m: [] for m in models}
    counts = {}
    for _ in range(repeats):
        for name, m in models.items():
            t0 = time.perf_counter()
            _, det = m.predict_instances(image, diameter=NUCLEUS_DIAMETER)
            times[name].append(time.perf_counter() - t0)
            counts[name] = det["n_cells"]
    first = float(np.median(times[model_names[0]]))
    rows = {name: {"median_s": round(float(np.median(t)), 3),
                   "ratio_to_first": round(float(np.median(t)) / first, 2),
                   "n_nuclei": counts[name]} for name, t in times.items()}
    for name, r in rows.items():
        print(f"{name:24s} {r['median_s']:.2f} s  ({r['ratio_to_first']:.2f}x)  "
              f"{r['n_nuclei']} nuclei")
    return {"site": "1024x1024 synthetic nuclear stain, 150 cells, nuclei ~14 px",
            "true_nuclei": int(len(np.unique(f["nuclei_labels"])) - 1),
            "repeats": repeats, "results": rows}


def time_onnx(repeats: int) -> dict:
    """Network only (no pre- or post-processing): the tl-cells U-Net on a 1024² normalised
    canonical-scale input in PyTorch, in PyTorch with BatchNorm folded into the
    convolutions, and as ONNX in onnxruntime (``tlseg export``), 2 threads each,
    interleaved so that load on the machine affects them alike."""
    import copy

    import onnxruntime as ort
    import torch
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    import tlseg
    from tlseg.inference.onnx_export import example_input

    torch.set_num_threads(2)
    model = tlseg.load_model("tl-cells")
    folded = copy.deepcopy(model.net)
    for seq in [m for m in folded.modules() if isinstance(m, torch.nn.Sequential)]:
        for i in range(len(seq) - 1):
            if isinstance(seq[i], torch.nn.Conv2d) and isinstance(seq[i + 1], torch.nn.BatchNorm2d):
                seq[i], seq[i + 1] = fuse_conv_bn_eval(seq[i], seq[i + 1]), torch.nn.Identity()
    x = example_input(model, (1024, 1024))
    xt = torch.from_numpy(x)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 2, 1
    with tempfile.TemporaryDirectory() as tmp:
        session = ort.InferenceSession(str(tlseg.export_model(model, tmp)), opts,
                                       providers=["CPUExecutionProvider"])
    runs = {"pytorch": lambda: model.net(xt), "pytorch_bn_folded": lambda: folded(xt),
            "onnxruntime": lambda: session.run(None, {"image": x})}
    times: dict[str, list[float]] = {k: [] for k in runs}
    with torch.inference_mode():
        for run in runs.values():  # warm-up
            run()
        for _ in range(repeats):
            for name, run in runs.items():
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
    med = {k: float(np.median(v)) for k, v in times.items()}
    rows = {k: {"median_s": round(v, 3), "speedup_vs_pytorch": round(med["pytorch"] / v, 2)}
            for k, v in med.items()}
    for name, r in rows.items():
        print(f"{name:18s} {r['median_s']:.3f} s  ({r['speedup_vs_pytorch']:.2f}x)")
    return {"input": "tl-cells network, 1x1x1024x1024 canonical-scale input", "threads": 2,
            "repeats": repeats, "onnxruntime_version": ort.__version__, "results": rows}


def time_structure_filter(sizes, repeats: int) -> dict:
    """Median seconds of ``predict_instances`` (diameter given) on synthetic phase-contrast
    fields with tl-cells' structure filter, pattern removal, flat and speck filters on
    and off, interleaved, and their ratio: on plain fields (no lattice: the
    autocorrelation, the field's noise, the flat filter's texture of the cells whose flows
    converge poorly and the speck filter's ring around each cell under a canonical cell's
    area are the cost) and on the same fields with a lattice of posts
    (``training.structures``) drawn over them (the pattern is found, subtracted and the
    objects on it compared)."""
    from dataclasses import replace

    import torch

    import tlseg
    from tlseg.synthetic import synthetic_field
    from tlseg.training.structures import structure_relief

    tlseg.set_threads(2)
    on = tlseg.load_model("tl-cells")
    off = tlseg.Model(replace(on.config, instances=replace(
        on.config.instances, repeat_similarity=0.0, remove_pattern=False,
        flat_texture=0.0, opaque_darkness=0.0)), on.net)
    rows = []
    for n in sizes:
        plain = synthetic_field((n, n), diameter=30, seed=n)["tl"].astype(np.float32)
        relief = structure_relief(n, n, "posts", 30.0, torch.Generator().manual_seed(n))
        for field, image in (("plain", plain), ("posts", plain * (1 + relief.numpy()))):
            times = {"on": [], "off": []}
            for _ in range(repeats):
                for name, model in (("off", off), ("on", on)):
                    t0 = time.perf_counter()
                    model.predict_instances(image, diameter=30)
                    times[name].append(time.perf_counter() - t0)
            med = {k: float(np.median(v)) for k, v in times.items()}
            rows.append({"size": n, "field": field, "filter_on_s": round(med["on"], 3),
                         "filter_off_s": round(med["off"], 3),
                         "ratio": round(med["on"] / med["off"], 3)})
            print(f"{n}² {field}: structure, flat and speck filters and pattern removal on "
                  f"{med['on']:.3f} s, "
                  f"off {med['off']:.3f} s ({med['on'] / med['off']:.3f}x)")
    return {"threads": 2, "repeats": repeats, "rows": rows}


def time_uncounted_texture(sizes, repeats: int) -> dict:
    """Median seconds of ``predict_instances`` (diameter given) and of
    :func:`tlseg.uncounted_texture` on its labels, interleaved, and the time a
    transmitted-light site takes with the check over the time without it."""
    import tlseg
    from tlseg.synthetic import synthetic_field

    tlseg.set_threads(2)
    model = tlseg.load_model("tl-cells")
    rows = []
    for n in sizes:
        for d in (30, 15):
            image = synthetic_field((n, n), diameter=d, seed=n)["tl"].astype(np.float32)
            times = {"segment": [], "check": []}
            for _ in range(repeats):
                t0 = time.perf_counter()
                labels = model.predict_instances(image, diameter=d)[0]
                t1 = time.perf_counter()
                tlseg.uncounted_texture(image, labels, d)
                times["segment"].append(t1 - t0)
                times["check"].append(time.perf_counter() - t1)
            med = {k: float(np.median(v)) for k, v in times.items()}
            ratio = (med["segment"] + med["check"]) / med["segment"]
            rows.append({"size": n, "diameter": d, "segment_s": round(med["segment"], 3),
                         "check_s": round(med["check"], 3), "ratio": round(ratio, 3)})
            print(f"{n}², cells {d} px: segment {med['segment']:.3f} s, check "
                  f"{med['check']:.3f} s ({ratio:.3f}x)")
    return {"threads": 2, "repeats": repeats, "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="*", type=int, default=[1024, 2048, 4096])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-cellpose", action="store_true")
    p.add_argument("--nuclei-models", nargs="+", default=["nuclei"],
                   help="nuclei models to time (names or folders); the first is the reference")
    p.add_argument("--nuclei-repeats", type=int, default=5)
    part = p.add_mutually_exclusive_group()
    part.add_argument("--nuclei-only", action="store_true",
                      help="time only the nuclei models; rewrite only the 'nuclei' key")
    part.add_argument("--skip-nuclei", action="store_true",
                      help="do not time the nuclei models; keep the stored 'nuclei' key")
    part.add_argument("--structure-filter-only", action="store_true",
                      help="time tl-cells with its structure filter and pattern removal on "
                           "and off (sizes 1024 "
                           "and 2048 unless --sizes); rewrite only the 'structure_filter' key")
    part.add_argument("--uncounted-texture-only", action="store_true",
                      help="time the check for missed cells against segmenting (sizes "
                           "1024 and 2048 unless --sizes); rewrite only the "
                           "'uncounted_texture' key")
    part.add_argument("--limit-only", action="store_true",
                      help="peak memory and time of one field at the size limit (8192² at "
                           "the canonical scale); rewrite only the 'limit' key")
    part.add_argument("--onnx-only", action="store_true",
                      help="time only the network in PyTorch vs onnxruntime (needs "
                           "'tlseg[export]'); rewrite only the 'onnx' key")
    add_out(p, "speed", " (and peers.json's 'speed')")
    args = p.parse_args(argv)
    if args.limit_only:
        limit = measure_limit()
        print(f"written {update_results('speed', ('limit',), limit, argv=argv, out=args.out)}")
        return 0
    if args.onnx_only:
        onnx = time_onnx(max(args.repeats, 7))
        print(f"written {update_results('speed', ('onnx',), onnx, argv=argv, out=args.out)}")
        return 0
    # the filter and check timings default to 1024² and 2048² unless --sizes is given
    given = "--sizes" in (sys.argv[1:] if argv is None else argv)
    sizes = args.sizes if given else [1024, 2048]
    if args.structure_filter_only:
        timing = time_structure_filter(sizes, max(args.repeats, 5))
        print(f"written {update_results('speed', ('structure_filter',), timing, argv=argv, out=args.out)}")
        return 0
    if args.uncounted_texture_only:
        timing = time_uncounted_texture(sizes, max(args.repeats, 5))
        print(f"written {update_results('speed', ('uncounted_texture',), timing, argv=argv, out=args.out)}")
        return 0
    if args.nuclei_only:
        nuclei = time_nuclei(args.nuclei_models, args.nuclei_repeats)
        print(f"written {update_results('speed', ('nuclei',), nuclei, argv=argv, out=args.out)}")
        return 0
    rows = time_tl_cells(args.sizes, args.repeats, not args.no_cellpose)
    path = results_path("speed", args.out)
    stored = json.loads(path.read_text()) if path.is_file() else {}
    # the entries the --...-only runs write, each with its own date and command, are kept
    kept = {k: stored[k] for k in PART_KEYS if k in stored}
    if args.skip_nuclei:
        nuclei = {"nuclei": stored["nuclei"]} if "nuclei" in stored else {}
    else:
        nuclei = {"nuclei": {**stamp(argv),
                             **time_nuclei(args.nuclei_models, args.nuclei_repeats)}}
    out = write_results("speed", argv=argv, out=args.out,
                        payload={"threads": 2, "rows": rows, **nuclei, **kept})
    print(f"written {out}")
    if all("cellpose3" in r for r in rows) and rows:
        peers_out = (None if args.out is None or out.resolve() == results_path("speed")
                     else out.with_name(f"{out.stem}_peers.json"))
        cp_rows = [{k: r[k] for k in ("size", "megapixels", "cellpose3", "tlseg",
                                      "speedup_vs_cellpose")} for r in rows]
        print(f"written {update_results('peers', ('speed',), {'rows': cp_rows}, argv=argv, out=peers_out)}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--make":
        from tlseg import synthetic_field

        n = int(sys.argv[3])
        tifffile.imwrite(sys.argv[2], synthetic_field((n, n), diameter=30, seed=n)["tl"])
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--make-limit":
        from tlseg import synthetic_field

        tile = synthetic_field((LIMIT_TILE, LIMIT_TILE), diameter=30, modality="brightfield",
                               seed=1)["tl"]
        tifffile.imwrite(sys.argv[2], np.tile(tile, (LIMIT_TILES, LIMIT_TILES)))
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(_child(sys.argv[2:]))
    sys.exit(main())
