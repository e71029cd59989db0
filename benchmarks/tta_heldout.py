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

import sys
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import data_and_model, tl_cells_heldout, write_results  # noqa: E402

from tlseg.metrics import match_counts, summarize  # noqa: E402

BLUR_SIGMAS = (0.0, 0.4, 0.6, 0.8)


def _ap50(held, counts) -> dict:
    """AP@0.5 per source and pooled (AP@0.5 and mean AP) of per-image match counts."""
    per_source: dict[str, list] = {}
    for s, c in zip(held, counts):
        per_source.setdefault(s.source, []).append(c)
    pooled = summarize(counts)
    out = {src: round(summarize(cs)["ap50"], 4) for src, cs in per_source.items()}
    return {**out, "pooled": round(pooled["ap50"], 4), "pooled_map": round(pooled["map"], 4)}


def main(argv=None) -> int:
    args, model = data_and_model(__doc__, argv)
    held = tl_cells_heldout(args.data, model.config.canonical_diameter)
    images = [s.image[0].numpy() for s in held]
    truths = [np.where(s.labels > 0, s.labels, 0) for s in held]
    counts: dict[str, list] = {"plain": [], "tta": []}
    for image, true in zip(images, truths):
        d = model.estimate_diameter(image)
        for name, augment in (("plain", False), ("tta", True)):
            labels, _ = model.predict_instances(image, diameter=d, augment=augment)
            counts[name].append(match_counts(true, labels))
    results = {name: _ap50(held, c) for name, c in counts.items()}
    for name, r in results.items():
        print(f"{name:6s}", r, flush=True)
    blur = {}
    for sigma in BLUR_SIGMAS:
        c = []
        for image, true in zip(images, truths):
            if sigma:
                image = ndi.gaussian_filter(image, sigma)
            labels, _ = model.predict_instances(image, diameter=model.config.canonical_diameter)
            c.append(match_counts(true, labels))
        blur[str(sigma)] = _ap50(held, c)
        print(f"blur {sigma}, true diameter:", blur[str(sigma)], flush=True)
    out = write_results("tta_heldout", argv=argv, payload={
        "model": args.model, "n_held_out_images": len(held),
        "diameter": "estimated (calibrated), as users run it",
        "ap50": results,
        "ap50_true_diameter_by_input_blur_sigma": blur,
    })
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
