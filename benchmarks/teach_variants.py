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
- ``finetune, no distillation``; ``finetune, BatchNorm learnt``; ``finetune, EMA``
  (the saved weights are a running average, decay 0.98, of the last ~50 steps');
  ``retrain`` (the shipped retrain mode).

``--boxes random suggested`` runs the variants on both kinds of ROI: ``random`` draws
new boxes for each seed (as the learning curve does); ``suggested`` is the one set that
``tlseg roi suggest``'s ranking picks from the pool, so only the training seed varies;
``representative`` the set that ranking picks with ``--representative``
(:func:`tlseg.suggest.suggest_representative`).
``--variants`` picks variants by name.

Results: ``benchmarks/results/teach_variants_<source>.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, split_pairs, train_median_diameter, write_results
from learning_curve import (
    base_model,
    mean_sd_table,
    print_table,
    random_boxes,
    score,
    suggested_boxes,
    teach_and_score,
)

VARIANTS = {
    "finetune": ("finetune", {}),
    "finetune, no distillation": ("finetune", {"distill": 0.0}),
    "finetune, BatchNorm learnt": ("finetune", {"freeze_norm": False}),
    "finetune, EMA": ("finetune", {"ema": 0.98}),
    "retrain": ("retrain", {}),
}


def heldout_split(pairs: list) -> tuple[list, list]:
    """(pool, held): every third training image is held out and scored; ROIs come from
    the rest."""
    held = pairs[::3]
    return [q for q in pairs if q not in held], held


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--source", default="usiigaci")
    p.add_argument("--epochs", type=int, default=10, help="base-model epochs, as learning_curve.py")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--boxes", nargs="+", default=["random"],
                   choices=["random", "suggested", "representative"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--name", default=None, help="results name (default teach_variants_SOURCE)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    data, source = Path(args.data), args.source
    pool, held = heldout_split(split_pairs(data, source, "train"))
    base = base_model(data, args.epochs, source=source)
    diameter = train_median_diameter(data, source)
    results = {"base": score(base, held, diameter)}
    print(f"base: {results['base']}", flush=True)
    walls = {}
    fixed = {b: suggested_boxes(base, pool, args.k, representative=b == "representative")
             for b in args.boxes if b != "random"}
    for seed in range(args.seeds):
        for boxes in args.boxes:
            picks = (random_boxes(pool, args.k, np.random.default_rng(seed))
                     if boxes == "random" else fixed[boxes])
            for name in args.variants:
                mode, override = VARIANTS[name]
                label = name if args.boxes == ["random"] else f"{boxes} ROIs, {name}"
                slug = label.replace(", ", "-").replace(" ", "_")
                root = WORK / f"teach_variants_{source}" / f"{slug}-s{seed}"
                ap, wall = teach_and_score(root, picks, base, held, diameter, mode=mode,
                                           seed=seed, **override)
                walls.setdefault(label, []).append(round(wall, 1))
                results.setdefault(label, []).append(ap)
                print(f"{label} seed={seed}: {results[label][-1]} ({walls[label][-1]} s)",
                      flush=True)
    print_table(mean_sd_table({k: v for k, v in results.items() if k != "base"}), "variant")
    out = write_results(args.name or f"teach_variants_{source}", argv=argv, payload={
        "source": source, "k": args.k, "seeds": args.seeds, "known_diameter": diameter,
        "boxes": args.boxes,
        "held_out_train_images": [q[0].name for q in held],
        "results_ap50": results, "wall_s": walls})
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
