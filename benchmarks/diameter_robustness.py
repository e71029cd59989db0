"""How much does segmentation suffer when the diameter is wrong?

Run::

    python benchmarks/diameter_robustness.py --data ../shared/data --models tl-cells [MODEL ...]

A model segments at the diameter it is given or estimates; an estimate off by a factor
shows the cells at the wrong size. This benchmark segments tl-cells' held-out training
images (the 10 images ``tlseg train`` tuned on, at the canonical scale: cells 30 px
across; val is never read) as if their cells had diameter ``30 x f`` for f = 0.67 (cells
shown 1.5x too big), 1, 1.5 and 2 (shown at half size), and reports pooled AP@0.5 and
the number of cells found per model. Used to compare training recipes (a recipe that
makes a model drop small-looking objects as debris should lose more at f = 1.5-2).
Results: ``benchmarks/results/diameter_robustness.json`` (or ``--name``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import tl_cells_heldout, write_results  # noqa: E402

from tlseg.cli import set_threads  # noqa: E402
from tlseg.metrics import match_counts, summarize  # noqa: E402
from tlseg.model import Model  # noqa: E402
from tlseg.tune import _image_at_canonical  # noqa: E402

FACTORS = (0.67, 1.0, 1.5, 2.0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--models", nargs="+", default=["tl-cells"])
    p.add_argument("--name", default="diameter_robustness")
    args = p.parse_args(argv)
    set_threads()
    models = {name: Model.load(name) for name in args.models}
    canon = {m.config.canonical_diameter for m in models.values()}
    if len(canon) != 1:
        raise SystemExit("the models work at different canonical diameters; compare them "
                         "one at a time")
    canonical = canon.pop()
    held = tl_cells_heldout(args.data, canonical)
    out = {}
    for name, model in models.items():
        out[name] = {}
        for f in FACTORS:
            counts = [match_counts(s.labels, model.predict_instances(
                _image_at_canonical(s), diameter=canonical * f)[0]) for s in held]
            s = summarize(counts)
            out[name][str(f)] = {"ap50": round(s["ap50"], 3), "n_pred": s["n_pred"],
                                 "n_true": s["n_true"]}
        print(name, "  ".join(f"x{f}: AP@0.5 {r['ap50']:.3f} ({r['n_pred']} found)"
                              for f, r in out[name].items()), flush=True)
    path = write_results(args.name, argv=argv, payload={
        "held_out_images": [s.name for s in held], "factors": list(FACTORS),
        "results": out})
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
