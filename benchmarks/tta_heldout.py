"""Do test-time augmentation or a light input blur help a model? Held-out training images.

Run::

    python benchmarks/tta_heldout.py --data ../shared/data [--model tl-cells]

Rebuilds the held-out split that ``tlseg train`` tuned the model on (the last 15 % of
each fully labelled source's training images; the same call as ``scripts/retune.py``),
segments each image with the diameter estimated, once plainly and once with the flipped
run averaged in, and prints AP@0.5 per source and pooled (AP@0.5 and mean AP). Then, at
the true diameter (the images are already at the canonical scale), with the input
blurred by a Gaussian of 0.4-0.8 px first: training crops are always resampled, an
image at exactly the canonical size is not. Val images are never read: whether either
becomes a default is decided here.
Results: ``benchmarks/results/tta_heldout.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from tlseg.cli import set_threads  # noqa: E402
from tlseg.config import TrainConfig  # noqa: E402
from tlseg.data import split_holdout  # noqa: E402
from tlseg.metrics import match_counts, summarize  # noqa: E402
from tlseg.model import Model  # noqa: E402
from tlseg.train import load_folders  # noqa: E402

SOURCES = ("usiigaci", "bbbc030-cho", "ctc-dic-hela", "aisegcell-bf")
BLUR_SIGMAS = (0.0, 0.4, 0.6, 0.8)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--model", default="tl-cells")
    args = p.parse_args(argv)
    set_threads()
    model = Model.load(args.model)
    tl = args.data / "tl"
    # the tl-cells training call (see its model card): aiSEGcell is never held out
    samples = load_folders([tl / s for s in SOURCES],
                           canonical_diameter=model.config.canonical_diameter,
                           incomplete_dirs=[tl / "aisegcell-bf"],
                           exclude=["181024TK20_p0002_*"])
    _, held = split_holdout(samples, TrainConfig().holdout_fraction)
    counts: dict[str, dict[str, list]] = {"plain": {}, "tta": {}}
    for s in held:
        image = s.image[0].numpy()
        true = np.where(s.labels > 0, s.labels, 0)
        d = model.estimate_diameter(image)
        for name, augment in (("plain", False), ("tta", True)):
            labels, _ = model.predict_instances(image, diameter=d, augment=augment)
            counts[name].setdefault(s.source, []).append(match_counts(true, labels))
    results = {}
    for name, per_source in counts.items():
        pooled = summarize([c for cs in per_source.values() for c in cs])
        results[name] = {src: round(summarize(cs)["ap50"], 4) for src, cs in per_source.items()}
        results[name]["pooled"] = round(pooled["ap50"], 4)
        results[name]["pooled_map"] = round(pooled["map"], 4)
        print(f"{name:6s}", results[name], flush=True)
    blur = {}
    for sigma in BLUR_SIGMAS:
        per_source = {}
        for s in held:
            image = s.image[0].numpy()
            if sigma:
                image = ndi.gaussian_filter(image, sigma)
            labels, _ = model.predict_instances(image, diameter=model.config.canonical_diameter)
            per_source.setdefault(s.source, []).append(
                match_counts(np.where(s.labels > 0, s.labels, 0), labels))
        pooled = summarize([c for cs in per_source.values() for c in cs])
        blur[str(sigma)] = {src: round(summarize(cs)["ap50"], 4) for src, cs in per_source.items()}
        blur[str(sigma)]["pooled"] = round(pooled["ap50"], 4)
        print(f"blur {sigma}, true diameter:", blur[str(sigma)], flush=True)
    out = write_results("tta_heldout", {
        "command": "python benchmarks/tta_heldout.py " + " ".join(argv or sys.argv[1:]),
        "model": args.model, "n_held_out_images": len(held),
        "diameter": "estimated (calibrated), as users run it",
        "ap50": results,
        "ap50_true_diameter_by_input_blur_sigma": blur,
    })
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
