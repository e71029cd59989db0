"""Re-tune a trained model's instance settings on its held-out training images.

    python scripts/retune.py MODEL_DIR DATA... [--partial DATA...] [--incomplete DATA...]
                              [--exclude GLOB...] [--fragments FRACTION]

Use it when the post-processing gains a setting after a model was trained: it rebuilds
the same held-out split that ``tlseg train`` used (the last 15 % of each fully labelled
source's training images, by name), runs :func:`tlseg.training.tune.tune_model` (instance
thresholds, then the diameter calibration), and writes the winning settings into
``config.yaml`` and the held-out scores into ``card.yaml`` (the card records that the
model was re-tuned, and with what). Validation images are never read.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict

from tlseg.config import TrainConfig
from tlseg.training.data import split_holdout
from tlseg.inference.model import Model
from tlseg.training.train import load_folders
from tlseg.training.tune import tune_model


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="model folder (rewritten in place)")
    p.add_argument("data", nargs="+", help="the data folders the model was trained on")
    p.add_argument("--partial", nargs="*", default=[])
    p.add_argument("--incomplete", nargs="*", default=[])
    p.add_argument("--exclude", nargs="*", default=[])
    p.add_argument("--fragments", type=float, default=0.0, metavar="FRACTION",
                   help="score annotated objects under this fraction of the median area as "
                        "unknown, as `tlseg train --fragments` does")
    args = p.parse_args(argv)
    model = Model.from_folder(args.model)
    samples = load_folders(args.data, canonical_diameter=model.config.canonical_diameter,
                           partial_dirs=args.partial, incomplete_dirs=args.incomplete,
                           exclude=args.exclude, fragments=args.fragments)
    _, held = split_holdout(samples, TrainConfig().holdout_fraction)
    print(f"{len(held)} held-out images; before: {model.config.instances}")
    card = dict(model.card)
    before = {**asdict(model.config.instances),
              "diameter_calibration": model.config.diameter_calibration}
    tuned, scores, auto = tune_model(model, held)
    print(f"after: {tuned.config.instances}")
    for src, sc in scores.items():
        print(f"  held-out {src}: AP50 {sc['ap50']:.3f}  mAP {sc['map']:.3f}")
    print(f"diameter calibration: {tuned.config.diameter_calibration} (pooled AP50 by "
          f"factor: {auto.get('pooled_ap50_by_factor')})")
    for src, sc in auto.items():
        if isinstance(sc, dict) and "ap50" in sc:
            print(f"  held-out {src}, estimated diameter: AP50 {sc['ap50']:.3f}")
    card["holdout_scores"] = scores
    card["holdout_scores_estimated_diameter"] = auto
    card["retuned"] = {"by": "scripts/retune.py " + " ".join(sys.argv[1:]), "before": before}
    tuned.save(args.model, card=card)
    return 0


if __name__ == "__main__":
    sys.exit(main())
