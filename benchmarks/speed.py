"""Speed and peak memory of `tlseg segment` vs Cellpose 3 inference, in one run.

Run::

    python benchmarks/speed.py            # sizes 1024 2048 4096

For each size a synthetic phase-contrast field (cells 30 px across, so neither tool
rescales) is written to a temporary TIFF. Each measurement runs in a fresh process:
``tlseg segment`` (the CLI itself, diameter given, then estimated) and Cellpose 3
(``benchmarks/peers/cellpose_speed.py`` in its own venv, cyto-style network, diameter 30).
Reported: median seconds per image over repeats, seconds per megapixel, peak RSS of the
process, and the Cellpose / tlseg time ratio. Results: ``benchmarks/results/speed.json``.
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import REPO, write_results  # noqa: E402

CELLPOSE_PY = REPO / "benchmarks" / ".venv-cellpose" / "bin" / "python"


def _child(argv) -> int:
    """Run in a fresh process: segment one image `repeats` times, print timings as JSON."""
    import torch

    from tlseg.io import read_image, write_labels
    from tlseg.model import Model

    path, repeats, diameter = argv[0], int(argv[1]), argv[2]
    torch.set_num_threads(2)
    t0 = time.perf_counter()
    model = Model.from_pretrained("tl-cells")
    image = read_image(path)
    load_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        labels, det = model.predict_instances(image, diameter=None if diameter == "auto" else float(diameter))
        write_labels(Path(path).with_name("out_masks.tif"), labels)
        times.append(time.perf_counter() - t)
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"times": times, "load_s": load_s, "peak_rss_mb": rss_mb,
                      "n_cells": det["n_cells"]}))
    return 0


def _run(cmd) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="*", type=int, default=[1024, 2048, 4096])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-cellpose", action="store_true")
    args = p.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            img = Path(tmp) / f"field_{size}.tif"
            # made in a separate process: a child's peak RSS starts at its parent's RSS
            # when forked, so the parent must never hold a large image
            subprocess.run([sys.executable, __file__, "--make", str(img), str(size)], check=True)
            mp = size * size / 1e6
            reps = args.repeats if size <= 2048 else 1
            row = {"size": size, "megapixels": round(mp, 2)}
            for label, diam in (("tlseg", "30"), ("tlseg_auto_diameter", "auto")):
                r = _run([sys.executable, __file__, "--child", str(img), str(reps), diam])
                med = float(np.median(r["times"]))
                row[label] = {"s_per_image": round(med, 3), "s_per_megapixel": round(med / mp, 3),
                              "peak_rss_mb": round(r["peak_rss_mb"]), "n_cells": r["n_cells"]}
            if not args.no_cellpose and CELLPOSE_PY.exists():
                r = _run([str(CELLPOSE_PY), str(REPO / "benchmarks/peers/cellpose_speed.py"),
                          "--image", str(img), "--repeats", str(reps), "--threads", "2"])
                med = float(r["seconds_per_image"])
                row["cellpose3"] = {"s_per_image": round(med, 3), "s_per_megapixel": round(med / mp, 3),
                                    "peak_rss_mb": round(r["peak_rss_mb"])}
                row["speedup_vs_cellpose"] = round(med / row["tlseg"]["s_per_image"], 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{'size':>6} {'tlseg s/MP':>11} {'auto-d s/MP':>12} {'RSS MB':>7} {'Cellpose s/MP':>14} {'speed-up':>9}")
    for r in rows:
        cp = r.get("cellpose3", {})
        print(f"{r['size']:>6} {r['tlseg']['s_per_megapixel']:>11.3f} "
              f"{r['tlseg_auto_diameter']['s_per_megapixel']:>12.3f} {r['tlseg']['peak_rss_mb']:>7} "
              f"{cp.get('s_per_megapixel', float('nan')):>14.3f} {r.get('speedup_vs_cellpose', float('nan')):>9.2f}")
    out = write_results("speed", argv=argv, payload={"threads": 2, "rows": rows})
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--make":
        from tlseg.synthetic import synthetic_field

        n = int(sys.argv[3])
        tifffile.imwrite(sys.argv[2], synthetic_field((n, n), diameter=30, seed=n)["tl"])
        sys.exit(0)
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(_child(sys.argv[2:]))
    sys.exit(main())
