"""Time to segment one plate site's nuclear channel, per nuclei model (median of runs).

Run::

    python benchmarks/nuclei_speed.py --models nuclei runs/nuclei-v1

A synthetic 1024² nuclear-stain site (``tlseg.synthetic``, 150 cells, nuclei ~14 px) is
segmented at its known nucleus diameter by each model, ``--repeats`` times, alternating
between the models so that load on the shared machine affects them alike; the median
wall time per model and the ratio to the first model are printed and written to
``benchmarks/results/nuclei_speed.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from tlseg.model import Model  # noqa: E402
from tlseg.synthetic import synthetic_field  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["nuclei"])
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    from tlseg.cli import set_threads

    set_threads()
    f = synthetic_field((1024, 1024), n_cells=150, diameter=28, modality="brightfield", seed=3)
    image = f["nuclei"].astype(np.float32)
    models = {m: Model.load(m) for m in args.models}
    for m in models.values():  # warm-up
        m.predict_instances(image, diameter=14.0)
    times: dict[str, list[float]] = {m: [] for m in models}
    counts = {}
    for _ in range(args.repeats):
        for name, m in models.items():
            t0 = time.perf_counter()
            _, det = m.predict_instances(image, diameter=14.0)
            times[name].append(time.perf_counter() - t0)
            counts[name] = det["n_cells"]
    first = float(np.median(times[args.models[0]]))
    rows = {name: {"median_s": round(float(np.median(t)), 3),
                   "ratio_to_first": round(float(np.median(t)) / first, 2),
                   "n_nuclei": counts[name]} for name, t in times.items()}
    for name, r in rows.items():
        print(f"{name:24s} {r['median_s']:.2f} s  ({r['ratio_to_first']:.2f}x)  "
              f"{r['n_nuclei']} nuclei")
    out = write_results("nuclei_speed", argv=argv, payload={
        "site": "1024x1024 synthetic nuclear stain, 150 cells, nuclei ~14 px",
        "true_nuclei": int(len(np.unique(f["nuclei_labels"])) - 1),
        "repeats": args.repeats, "results": rows})
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
