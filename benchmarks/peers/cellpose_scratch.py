"""Peer: Cellpose 3 trained FROM SCRATCH on our label-free training data, on a time budget.

Training (default mode):
- Data: the TRAIN splits of tl/usiigaci, tl/bbbc030-cho, tl/ctc-dic-hela and
  tl/aisegcell-bf (76 images) -- the same sources tlseg's own model is trained on. val
  is never read in this mode. aisegcell-bf is only partially labelled; Cellpose has no
  notion of "unlabelled", so its unlabelled cells are trained as background (tlseg
  masks them out with --partial; this is a handicap for Cellpose on that source only).
- Network: cellpose 3.1's default residual U-Net ``CPnet`` (nbase [2,32,64,128,256],
  the cyto/cyto2/cyto3 architecture), randomly initialised:
  ``CellposeModel(pretrained_model=False, model_type=None, diam_mean=30)`` loads no
  weights and downloads nothing.
- ``cellpose.train.train_seg`` with cellpose 3.1's CLI training defaults: SGD, lr 0.2,
  momentum 0.9, weight decay 1e-5, batch 8, 224 px crops, min_train_masks 5,
  ``rescale=True``: each training image is resized by
  30 / (its own median mask diameter) so cells are ~30 px (diam_mean), with a further
  random scale in [0.75, 1.25] (scale_range 0.5), plus random rotation/flip.
  Grayscale: channels [0, 0] (image + zero channel), 1-99 percentile normalisation.
- One train_seg "epoch" is ``--nimg-per-epoch`` images (default 8 = ONE batch, images
  drawn uniformly at random), not a full pass over the 76 images. Reason: on 2 CPU
  cores a 55 min budget buys only a few hundred SGD steps (a full pass is ~10 steps),
  and train_seg's per-epoch learning-rate schedule (10 warm-up epochs from lr 0; if
  n_epochs > 300 the last 100 epochs are halved in 10 steps, if > 100 the last 50)
  would otherwise spend a third of the run warming up and never anneal. With one batch
  per epoch the schedule keeps the shape it has in Cellpose's own long GPU trainings.
  ``--nimg-per-epoch 0`` restores train_seg's default (every image once per epoch).
- Wall-clock budget ``--budget-min`` (whole run: loading, flow computation, the
  timing probe and training). train_seg's learning-rate schedule depends on n_epochs
  (see above), so the
  model is trained in ONE train_seg call: a throw-away copy of the net is first
  trained for ``--probe-epochs`` epochs to time an epoch, then n_epochs is chosen so
  that the rest of the budget is used, and the real training starts from the same
  random initialisation. ``--epochs N`` skips the probe. The budget is soft: the
  actual wall time is recorded.
- Output: benchmarks/work/cellpose_scratch/model/models/cellpose_scratch (cellpose 3
  model file) and .../cellpose_scratch/train.json (wall time, epochs, losses); the
  training facts also go to benchmarks/results/peers.json (``training.cellpose_scratch``;
  ``--results`` elsewhere).

Prediction (``--predict``): segment every val image of usiigaci, bbbc030-cho and
ctc-dic-hela with that model, writing
benchmarks/work/cellpose_scratch/<source>/<stem>_masks.tif and summary.json. The
diameter given to Cellpose is the median cell diameter (2*sqrt(area/pi)) pooled over
the source's TRAIN masks -- a per-source constant known from training data. We do NOT
give it each val image's true diameter: tlseg estimates diameter automatically, so
that would favour Cellpose. (A from-scratch model has no size model to estimate it.)
Cellpose 3 defaults otherwise (flow_threshold 0.4, cellprob_threshold 0, no tile
augmentation).

Usage (from the repo root, Cellpose venv):
    nice -n 19 benchmarks/.venv-cellpose/bin/python benchmarks/peers/cellpose_scratch.py --budget-min 55
    nice -n 19 benchmarks/.venv-cellpose/bin/python benchmarks/peers/cellpose_scratch.py --predict
then score every peer's masks (tlseg's venv):
    python benchmarks/accuracy.py --data ../shared/data --peers-only
"""

from __future__ import annotations

import argparse
import copy
import logging
import sys
import tempfile
import time
from pathlib import Path

import common as C
import numpy as np

MODEL_NAME = "cellpose_scratch"


def load_train(data: Path, sources) -> tuple[list, list, list]:
    imgs, masks, names = [], [], []
    for s in sources:
        for img, m in C.pairs(data, s, "train"):
            imgs.append(C.read_image(img).astype(np.float32))
            masks.append(C.read_mask(m))
            names.append(f"{s}/{img.stem}")
    return imgs, masks, names


def train(args) -> int:
    import torch
    from cellpose import dynamics, models
    from cellpose import train as cptrain

    t_start = time.time()
    budget_s = args.budget_min * 60.0
    out = args.out
    (out / "model").mkdir(parents=True, exist_ok=True)

    imgs, masks, _ = load_train(args.data, args.sources)
    t = time.time()
    # the exact call train_seg makes; done once here so the probe and the real run share it
    flows = dynamics.labels_to_flows(masks, device=torch.device("cpu"))
    t_flows = time.time() - t
    C.eprint(f"{len(imgs)} train images from {args.sources}; flows {t_flows:.0f} s")

    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    model = models.CellposeModel(gpu=False, pretrained_model=False, model_type=None,
                                 mkldnn=False, diam_mean=30.0, nchan=2)
    init_state = copy.deepcopy(model.net.state_dict())
    kw = {"train_data": imgs, "train_labels": flows, "channels": [0, 0], "normalize": True,
          "rescale": True, "batch_size": args.batch_size, "learning_rate": args.lr,
          "weight_decay": args.weight_decay, "momentum": 0.9, "SGD": True,
          "min_train_masks": 5, "bsize": 224, "nimg_per_epoch": args.nimg_per_epoch or None}

    t_probe, epoch_s = 0.0, None
    n_epochs = args.epochs
    if n_epochs is None:
        probe = copy.deepcopy(model.net)
        with tempfile.TemporaryDirectory() as tmp:
            t = time.time()
            cptrain.train_seg(probe, n_epochs=args.probe_epochs, save_path=tmp,
                              model_name="probe", save_every=10**9, **kw)
            t_probe = time.time() - t
        del probe
        epoch_s = t_probe / args.probe_epochs  # includes per-call setup: conservative
        left = budget_s - (time.time() - t_start) - args.reserve_s
        n_epochs = max(1, int(left // epoch_s))
        C.eprint(f"probe: {t_probe:.0f} s for {args.probe_epochs} epochs "
                 f"({epoch_s:.1f} s/epoch) -> n_epochs {n_epochs} for {left:.0f} s left")

    model.net.load_state_dict(init_state)
    t = time.time()
    path, train_losses, _ = cptrain.train_seg(
        model.net, n_epochs=n_epochs, save_path=out / "model", model_name=MODEL_NAME,
        save_every=max(50, n_epochs // 5), **kw)
    t_train = time.time() - t
    wall = time.time() - t_start
    per_epoch = args.nimg_per_epoch or len(imgs)
    steps = n_epochs * -(-per_epoch // args.batch_size)
    facts = {
        "peer": "cellpose_scratch", "model": str(path), "cellpose": _cp_version(),
        "sources": list(args.sources), "n_train_images": len(imgs),
        "budget_min": args.budget_min, "wall_s": round(wall, 1),
        "flows_s": round(t_flows, 1), "probe_s": round(t_probe, 1),
        "probe_epochs": args.probe_epochs if epoch_s else 0,
        "probe_epoch_s": round(epoch_s, 2) if epoch_s else None,
        "train_s": round(t_train, 1), "n_epochs": n_epochs,
        "nimg_per_epoch": per_epoch, "train_epoch_s": round(t_train / n_epochs, 2),
        "steps": steps, "step_s": round(t_train / steps, 2),
        "images_seen": n_epochs * per_epoch,
        "full_passes": round(n_epochs * per_epoch / len(imgs), 1),
        "full_pass_s": round(t_train / (n_epochs * per_epoch / len(imgs)), 1),
        "hyper": {"optimizer": "SGD", "lr": args.lr, "momentum": 0.9,
                  "weight_decay": args.weight_decay, "batch_size": args.batch_size,
                  "bsize": 224, "rescale": True, "scale_range": 0.5, "diam_mean": 30.0,
                  "seed": args.seed, "threads": args.threads},
        "diam_labels": float(model.net.diam_labels.item()),
        "final_train_loss": float(train_losses[-1]),
        "train_losses": [round(float(x), 4) for x in train_losses]}
    C.dump_json(out / "train.json", facts)
    C.record_training("cellpose_scratch", {k: facts[k] for k in (
        "cellpose", "n_train_images", "budget_min", "wall_s", "train_s", "n_epochs",
        "nimg_per_epoch", "images_seen")}, args.results)
    C.eprint(f"saved {path}; {n_epochs} epochs, {t_train:.0f} s training, {wall:.0f} s total")
    return 0


def predict(args) -> int:
    from cellpose import models

    path = args.out / "model" / "models" / MODEL_NAME
    if not path.is_file():
        raise SystemExit(f"{path}: no trained model (run without --predict first)")
    model = models.CellposeModel(gpu=False, pretrained_model=str(path))
    t0 = time.time()
    summary = C.predict_sources(model, args.data, args.out, args.val_sources, args.limit,
                                log=C.eprint)
    C.dump_json(args.out / "summary.json", {
        "peer": "cellpose_scratch", "model": str(path), "cellpose": _cp_version(),
        "diam_mean": float(model.diam_mean),
        "diameter_policy": "median cell diameter of the source's TRAIN masks",
        "channels": [0, 0], "augment": False, "limit": args.limit,
        "threads": args.threads, "predict_wall_s": round(time.time() - t0, 1),
        "sources": summary})
    return 0


def _cp_version() -> str:
    from importlib.metadata import version

    return version("cellpose")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--data", type=Path, default=C.DEFAULT_DATA,
                    help="shared data root holding tl/ (default: ../shared/data from the repo)")
    ap.add_argument("--out", type=Path, default=C.WORK / "cellpose_scratch")
    ap.add_argument("--results", type=Path, default=C.PEERS_RESULTS,
                    help="the results file whose training.cellpose_scratch gets the "
                         "training facts (default: benchmarks/results/peers.json)")
    ap.add_argument("--predict", action="store_true",
                    help="segment the val images with the trained model (no training)")
    ap.add_argument("--budget-min", type=float, default=55.0,
                    help="wall-clock budget of the whole training run, minutes")
    ap.add_argument("--epochs", type=int, help="fixed n_epochs (skips the timing probe)")
    ap.add_argument("--probe-epochs", type=int, default=5)
    ap.add_argument("--nimg-per-epoch", type=int, default=8,
                    help="images per train_seg epoch (0: all train images, train_seg's default)")
    ap.add_argument("--reserve-s", type=float, default=30.0,
                    help="seconds of the budget kept for setup/saving after the probe")
    ap.add_argument("--sources", nargs="+", default=list(C.TRAIN_SOURCES),
                    help="training sources (tl/<source>/train)")
    ap.add_argument("--val-sources", nargs="+", default=list(C.VAL_SOURCES))
    ap.add_argument("--limit", type=int, help="predict: only the first N val images per source")
    ap.add_argument("--lr", type=float, default=0.2)
    ap.add_argument("--weight-decay", type=float, default=1e-5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    C.set_threads(args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        stream=sys.stderr)
    return predict(args) if args.predict else train(args)


if __name__ == "__main__":
    sys.exit(main())
