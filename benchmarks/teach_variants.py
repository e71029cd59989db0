"""Which teaching settings carry a base model to a new modality? (train images only)

Run (after ``learning_curve.py --source usiigaci``, whose base model it reuses)::

    python benchmarks/teach_variants.py --data ../shared/data

The learning curve on Usiigaci (phase contrast, which the base never saw) climbs from a
low start and stays far below tl-cells. This benchmark asks which of fine-tuning's
safeguards hold it back, without touching the val split: the source's TRAIN images are
split into a pool (ROIs are drawn from it, as in the learning curve) and every third
image, held out and scored (AP@0.5, diameter known and estimated). Variants of
``teach`` on the same 10 random ROIs:

- ``finetune``: the shipped fine-tuning (BatchNorm statistics frozen, distillation 0.5
  from the base outside the ROIs);
- ``finetune, no distillation``; ``finetune, BatchNorm learnt``; ``retrain`` (the
  shipped retrain mode).

Results: ``benchmarks/results/teach_variants_<source>.json``.
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
from learning_curve import _reset, base_model, build_project, random_boxes, score  # noqa: E402

from tlseg import teach as teach_mod  # noqa: E402

VARIANTS = {
    "finetune": ("finetune", {}),
    "finetune, no distillation": ("finetune", {"distill": 0.0}),
    "finetune, BatchNorm learnt": ("finetune", {"freeze_norm": False}),
    "retrain": ("retrain", {}),
}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--source", default="usiigaci")
    p.add_argument("--epochs", type=int, default=10, help="base-model epochs, as learning_curve.py")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seeds", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    data, source = Path(args.data), args.source
    pairs = split_pairs(data, source, "train")
    held = pairs[::3]
    pool = [q for q in pairs if q not in held]
    base = base_model(data, args.epochs, source=source)
    diameter = train_median_diameter(data, source)
    results = {"base": score(base, held, diameter)}
    print(f"base: {results['base']}", flush=True)
    walls = {}
    for seed in range(args.seeds):
        picks = random_boxes(pool, args.k, np.random.default_rng(seed))
        for name, (mode, override) in VARIANTS.items():
            slug = name.replace(", ", "-").replace(" ", "_")
            root = WORK / f"teach_variants_{source}" / f"{slug}-s{seed}"
            _reset(root)
            project = build_project(root / "project", picks)
            saved = teach_mod.MODES[mode]
            teach_mod.MODES[mode] = {**saved, **override}
            try:
                t = time.time()
                model = teach_mod.teach(project, base, root / "model", mode=mode, seed=seed)
                walls.setdefault(name, []).append(round(time.time() - t, 1))
            finally:
                teach_mod.MODES[mode] = saved
            results.setdefault(name, []).append(score(model, held, diameter))
            print(f"{name} seed={seed}: {results[name][-1]} ({walls[name][-1]} s)", flush=True)
    out = write_results(f"teach_variants_{source}", argv=argv, payload={
        "source": source, "k": args.k, "seeds": args.seeds, "known_diameter": diameter,
        "held_out_train_images": [q[0].name for q in held],
        "results_ap50": results, "wall_s": walls})
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
