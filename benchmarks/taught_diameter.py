"""Does the taught-diameter rule help? Re-decide saved taught models, held-out images.

Run (after ``teach_variants.py --boxes random suggested representative``, whose
fine-tuned models and projects it reads from ``benchmarks/work/teach_variants_<source>``)::

    python benchmarks/taught_diameter.py --data ../shared/data

Each saved model was taught before :func:`tlseg.teach.choose_diameter` existed. Its
diameter is decided again exactly as ``teach`` now does (:func:`tlseg.teach.
calibrate_to_rois` on its own project) and it is scored on the held-out training
images (``teach_variants.heldout_split``) with the diameter estimated — the
only score the rule can change — beside the score the model had without the rule.
The val split is not used.

Results: ``benchmarks/results/taught_diameter_<source>.json``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import WORK, split_pairs, train_median_diameter, write_results  # noqa: E402
from learning_curve import score  # noqa: E402
from teach_variants import heldout_split  # noqa: E402

from tlseg.model import Model  # noqa: E402
from tlseg.project import Project  # noqa: E402
from tlseg.teach import calibrate_to_rois  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--source", default="usiigaci")
    p.add_argument("--runs", default="*ROIs-finetune-s*",
                   help="which saved teach_variants runs (a glob)")
    args = p.parse_args(argv)
    torch.set_num_threads(2)
    data, source = Path(args.data), args.source
    _, held = heldout_split(split_pairs(data, source, "train"))
    diameter = train_median_diameter(data, source)
    runs = sorted((WORK / f"teach_variants_{source}").glob(args.runs))
    if not runs:
        raise SystemExit(f"no saved runs matching {args.runs}: run teach_variants.py first")
    results = {}
    for run in runs:
        model = Model.from_folder(run / "model")
        before = score(model, held, diameter)["auto"]
        factor, record = calibrate_to_rois(model, Project.open(run / "project"))
        cfg = replace(model.config, taught_diameter=record.get("taught_diameter"),
                      diameter_calibration=factor or model.config.diameter_calibration)
        after = score(Model(cfg, model.net, card=model.card), held, diameter)["auto"]
        results[run.name] = {"taught_diameter": record.get("taught_diameter"),
                             "auto_before": before, "auto_after": after}
        print(f"{run.name:<36} taught diameter {record.get('taught_diameter')}: "
              f"AP50 {before:.3f} -> {after:.3f}", flush=True)
    groups = {}
    for name, r in results.items():
        groups.setdefault(name.rsplit("-s", 1)[0], []).append(r)
    summary = {g: {k: float(np.mean([r[k] for r in rs])) for k in ("auto_before", "auto_after")}
               for g, rs in groups.items()}
    for g, s in summary.items():
        print(f"{g:<36} mean AP50 {s['auto_before']:.3f} -> {s['auto_after']:.3f}")
    out = write_results(f"taught_diameter_{source}", argv=argv, payload={
        "source": source, "known_diameter": diameter,
        "held_out_train_images": [q[0].name for q in held],
        "runs": results, "mean": summary})
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
