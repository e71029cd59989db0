"""Where the learning curve levels off: 20 ROIs and every train image fully annotated.

Run (after ``learning_curve.py``, whose base model it reuses)::

    python benchmarks/learning_ceiling.py --data ../shared/data

The learning-curve target asks that 10 corrected ROIs beat 5 by more than the seed SD.
That can only happen if more annotation still has room to help. This benchmark
measures the room: the same base model (tl-cells recipe without ``bbbc030-cho``), the
same fine-tuning (``tlseg train PROJECT --mode finetune``, default steps) and the same
scoring (AP@0.5 on the CHO val images, diameter estimated and known) as
``learning_curve.py``, with

- ``random 20`` and ``suggested 20``: twice the largest ROI count of the curve (the first
  10 random boxes of a seed are the curve's 10);
- ``all``: each of the 20 train images annotated in full (one ROI the size of the
  image), the most a user of this source could teach — fine-tuned (3 seeds) and
  retrained (seed 0).

Results: ``benchmarks/results/learning_ceiling.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, split_pairs, train_median_diameter, write_results  # noqa: E402
from learning_curve import (  # noqa: E402
    SOURCE,
    _reset,
    base_model,
    build_project,
    mean_sd_table,
    print_table,
    random_boxes,
    score,
    suggested_boxes,
)

from tlseg.io import read_labels  # noqa: E402
from tlseg.teach import teach  # noqa: E402


def whole_images(train):
    """Every train image as one ROI covering all of it."""
    return [(img, mask, (0, 0, *read_labels(mask).shape)) for img, mask in train]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--epochs", type=int, default=20, help="base-model epochs, as learning_curve.py")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--k", type=int, default=20)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    data = Path(args.data)
    train, val = split_pairs(data, SOURCE, "train"), split_pairs(data, SOURCE, "val")
    base = base_model(data, args.epochs)
    diameter = train_median_diameter(data, SOURCE)
    work = WORK / "learning_ceiling"
    runs = {f"random {args.k}": [], f"suggested {args.k}": [], "all": []}
    walls = {key: [] for key in runs}
    sugg = suggested_boxes(base, train, args.k)
    full = whole_images(train)
    for seed in range(args.seeds):
        rand = random_boxes(train, args.k, np.random.default_rng(seed))
        for key, picks in ((f"random {args.k}", rand), (f"suggested {args.k}", sugg),
                           ("all", full)):
            root = work / f"{key.replace(' ', '-')}-s{seed}"
            _reset(root)
            project = build_project(root / "project", picks)
            t = time.time()
            model = teach(project, base, root / "model", mode="finetune", seed=seed)
            walls[key].append(round(time.time() - t, 1))
            runs[key].append(score(model, val, diameter))
            print(f"{key} seed={seed}: AP50 {runs[key][-1]['auto']:.3f} (known diameter "
                  f"{runs[key][-1]['known']:.3f}; {walls[key][-1]:.0f} s)", flush=True)
    root = work / "all-retrain-s0"
    _reset(root)
    project = build_project(root / "project", full)
    t = time.time()
    retrained = teach(project, base, root / "model", mode="retrain", seed=0)
    retrain = {"ap50": score(retrained, val, diameter), "wall_s": round(time.time() - t, 1),
               "steps": retrained.card["train_config"]["steps_per_epoch"]}
    print(f"all, retrain seed=0: AP50 {retrain['ap50']['auto']:.3f} (known diameter "
          f"{retrain['ap50']['known']:.3f}; {retrain['wall_s']:.0f} s)", flush=True)
    table = mean_sd_table(runs)
    print_table(table, "annotation")
    out = write_results("learning_ceiling", argv=argv, payload={
        "source": SOURCE, "seeds": args.seeds, "known_diameter": diameter,
        "base_model": str(WORK / "base-no-cho-s8"), "results": table,
        "finetune_wall_s": walls, "all_retrain_seed0": retrain})
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
