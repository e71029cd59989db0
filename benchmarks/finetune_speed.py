"""Wall time of fine-tuning tl-cells on 5 and 10 ROIs of 256 x 256 (2 CPU threads).

Run::

    python benchmarks/finetune_speed.py            # --repeats 3

The learning-curve benchmark times its fine-tunes too, but it shares the machine with
whatever else runs; this one does nothing else while it times. A project of k ROIs of
256 x 256 is cut from synthetic phase-contrast fields made by the package (the number
of training steps depends on the number of ROIs, not on what they show), and
``tlseg.teach.teach(mode="finetune")`` runs ``--repeats`` times per k, each in a fresh
project. Reported: median and max seconds per fine-tune (target: <= 300 s for 10 ROIs on
2 cores). Results: ``benchmarks/results/finetune_speed.json``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from tlseg.model import Model  # noqa: E402
from tlseg.project import Project  # noqa: E402
from tlseg.synthetic import synthetic_field  # noqa: E402
from tlseg.teach import default_steps, teach  # noqa: E402

ROI = 256


def _project(root: Path, k: int, seed: int) -> Project:
    project = Project.init(root / "project", diameter=30.0)
    rng = np.random.default_rng(seed)
    for i in range((k + 1) // 2):  # two ROIs per 512 x 512 field
        f = synthetic_field((512, 512), diameter=30, seed=1000 * seed + i)
        path = root / f"field{i}.tif"
        tifffile.imwrite(path, f["tl"])
        iid = project.add_image(path)
        for y0 in (0, 256)[: k - 2 * i]:
            x0 = int(rng.integers(0, 256))
            project.add_roi(iid, (y0, x0, y0 + ROI, x0 + ROI),
                            f["labels"][y0:y0 + ROI, x0:x0 + ROI].astype(np.int32))
    return project


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ks", type=int, nargs="*", default=[5, 10])
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    base = Model.from_pretrained("tl-cells")
    rows = {}
    for k in args.ks:
        times = []
        for r in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                project = _project(Path(tmp), k, seed=r)
                t = time.perf_counter()
                teach(project, base, Path(tmp) / "model", mode="finetune", seed=r)
                times.append(time.perf_counter() - t)
            print(f"{k} ROIs, run {r + 1}: {times[-1]:.1f} s", flush=True)
        rows[str(k)] = {"steps": default_steps("finetune", k), "median_s": float(np.median(times)),
                        "max_s": float(np.max(times)), "runs_s": times}
        print(f"{k} ROIs ({rows[str(k)]['steps']} steps): median {rows[str(k)]['median_s']:.1f} s, "
              f"max {rows[str(k)]['max_s']:.1f} s", flush=True)
    out = write_results("finetune_speed", argv=argv, payload={
        "torch_threads": 2, "roi_size": ROI, "results": rows})
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
