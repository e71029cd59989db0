"""Train StarDist 2D from scratch on the tl TRAIN splits, then segment the val images.

Peer method: StarDist (Schmidt et al., MICCAI 2018; Weigert et al., WACV 2020), package
``stardist`` + ``csbdeep`` on ``tensorflow-cpu``, run from the venv
``benchmarks/.venv-stardist``. No pretrained weights: the model is trained here, within a
wall-clock budget, following StarDist's example notebook ``examples/2D/2_training.ipynb``:

* images normalised with csbdeep ``normalize(x, 1, 99.8)`` (per image), labels with
  ``fill_label_holes``;
* ``Config2D(n_rays=32, grid=(2, 2), n_channel_in=1)``, otherwise StarDist's defaults
  (U-Net, patch 256 x 256, batch 4, Adam lr 3e-4, 100 steps per epoch, best weights
  by validation loss, ReduceLROnPlateau);
* the notebook's augmenter: random flips / 90-degree rotations, intensity change
  ``x * U(0.6, 2) + U(-0.2, 0.2)`` and Gaussian noise (copied below, BSD-3 StarDist);
* ``model.optimize_thresholds`` on held-out images.

Scale. Cell sizes differ ~5x between sources (median diameters: usiigaci ~57 px,
bbbc030-cho ~53, ctc-dic-hela ~112, aisegcell-bf ~22), more than one StarDist field of
view handles well. Each TRAIN image (and its mask, nearest neighbour) is rescaled so that
its own median cell diameter becomes ``--diameter`` (30 px). At prediction time each val
image is rescaled by ``30 / (median diameter of that source's TRAIN masks)`` and the
labels are resized back (nearest). This gives StarDist the same per-source scale
knowledge our tool gets from its training data (tlseg also brings every training image
to a canonical diameter from its masks); val masks are never used for it. Images
smaller than the patch after rescaling (ctc-dic-hela: 512 -> ~137 px) are padded with
their median grey value and background labels.

Held-out data. The last ``--holdout`` fraction (by sorted name, at least one image) of
each source's TRAIN split is kept out of training: it is StarDist's validation data
(best-weights selection) and the data ``optimize_thresholds`` runs on. For ctc-dic-hela
(time-lapse) that is the last frames, the least correlated with the training frames.

aisegcell-bf is skipped by default: its masks miss some cells and StarDist's loss has no
"unknown" label, so unlabelled cells would be trained as background. ``--include-partial``
adds it anyway (as plain fully-labelled data).

Time budget. ``--budget-min`` covers training plus threshold optimisation: a Keras
callback stops training after the epoch at which the time left would not fit another
epoch plus ``--reserve-min`` for ``optimize_thresholds``. ``--steps-per-epoch`` keeps the
notebook's 100 by default; the script prints seconds per step after the first epoch.

Outputs (``benchmarks/work/stardist_scratch/`` by default)::

    model/                      StarDist model folder (config.json, weights_best.h5,
                                thresholds.json, train_info.json)
    <source>/<stem>_masks.tif   predicted val masks (uint16), with --predict
    predict_info.json           wall times, epochs, thresholds, AP per source

The training facts also go to ``benchmarks/results/peers.json``
(``training.stardist_scratch``; ``--results`` elsewhere).

Examples::

    nice -n 19 benchmarks/.venv-stardist/bin/python benchmarks/peers/stardist_scratch.py \\
        --train --budget-min 55 --predict
    benchmarks/.venv-stardist/bin/python benchmarks/peers/stardist_scratch.py --predict
    python benchmarks/accuracy.py --data ../shared/data --peers-only   # tlseg's venv
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import common

PEER = "stardist_scratch"


# --- augmentation: copied from StarDist examples/2D/2_training.ipynb (BSD-3-Clause) ---
def random_fliprot(img, mask):
    import numpy as np

    assert img.ndim >= mask.ndim
    axes = tuple(range(mask.ndim))
    perm = tuple(np.random.permutation(axes))
    img = img.transpose(perm + tuple(range(mask.ndim, img.ndim)))
    mask = mask.transpose(perm)
    for ax in axes:
        if np.random.rand() > 0.5:
            img = np.flip(img, axis=ax)
            mask = np.flip(mask, axis=ax)
    return img, mask


def random_intensity_change(img):
    import numpy as np

    return img * np.random.uniform(0.6, 2) + np.random.uniform(-0.2, 0.2)


def augmenter(x, y):
    """Flips/rot90, intensity change and some Gaussian noise (the notebook's augmenter)."""
    import numpy as np

    x, y = random_fliprot(x, y)
    x = random_intensity_change(x)
    sig = 0.02 * np.random.uniform(0, 1)
    return x + sig * np.random.normal(0, 1, x.shape), y
# --- end of copied code ---


def rescale_image(img, factor: float):
    """Bilinear rescale (anti-aliased when shrinking) of a float image."""
    import numpy as np
    from skimage.transform import rescale

    if abs(factor - 1) < 1e-3:
        return img.astype(np.float32)
    return rescale(img.astype(np.float32), factor, order=1, preserve_range=True,
                   anti_aliasing=factor < 1).astype(np.float32)


def prepare(img, *, factor: float):
    """Rescale, then csbdeep percentile normalisation (1, 99.8) as in the notebook."""
    from csbdeep.utils import normalize

    return normalize(rescale_image(img, factor), 1, 99.8, axis=(0, 1)).astype("float32")


def pad_to(x, y, patch):
    """Pad image (median grey) and labels (background) up to the patch size if smaller."""
    import numpy as np

    ph, pw = max(0, patch[0] - x.shape[0]), max(0, patch[1] - x.shape[1])
    if ph == 0 and pw == 0:
        return x, y
    pad = ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2))
    return (np.pad(x, pad, constant_values=float(np.median(x))), np.pad(y, pad))


def load_train(data, sources, *, diameter, holdout, patch):
    """Rescaled, normalised training and held-out (X, Y) lists, plus a summary."""
    from stardist import fill_label_holes

    X, Y, Xv, Yv, summary = [], [], [], [], {}
    for source in sources:
        ps = common.pairs(data, source, "train")
        n_val = max(1, round(holdout * len(ps)))
        facs = []
        for i, (ip, mp) in enumerate(ps):
            lab = common.read_mask(mp)
            d = common.median_diameter(lab)
            if d is None:
                continue
            f = diameter / d
            facs.append(f)
            x = prepare(common.read_image(ip), factor=f)
            y = fill_label_holes(common.resize_labels(lab, x.shape).astype("int32"))
            x, y = pad_to(x, y, patch)
            (Xv if i >= len(ps) - n_val else X).append(x)
            (Yv if i >= len(ps) - n_val else Y).append(y)
        summary[source] = {"n_train": len(ps) - n_val, "n_holdout": n_val,
                           "scale_factor_range": [round(min(facs), 3), round(max(facs), 3)]}
    return X, Y, Xv, Yv, summary


def make_time_callback(deadline: float, log):
    from csbdeep.utils.tf import keras_import

    Callback = keras_import("callbacks", "Callback")

    class TimeBudget(Callback):
        """Stop after the epoch at which another epoch would overrun the deadline."""

        def on_train_begin(self, logs=None):
            self.t_begin = time.time()
            self.epoch_times, self.t_batch0 = [], None

        def on_epoch_begin(self, epoch, logs=None):
            self.t_epoch = time.time()

        def on_train_batch_begin(self, batch, logs=None):
            if batch == 1 and self.t_batch0 is None:
                self.t_batch0 = time.time()

        def on_train_batch_end(self, batch, logs=None):
            if batch == 5 and self.t_batch0 is not None and not self.epoch_times:
                log["sec_per_step_first_batches"] = (time.time() - self.t_batch0) / 5
                print(f"\n[time] {log['sec_per_step_first_batches']:.2f} s/step "
                      "(batches 2-6 of epoch 1)", flush=True)

        def on_epoch_end(self, epoch, logs=None):
            dt = time.time() - self.t_epoch
            self.epoch_times.append(dt)
            log["epochs_done"] = epoch + 1
            log["sec_per_epoch"] = float(sum(self.epoch_times) / len(self.epoch_times))
            left = deadline - time.time()
            print(f"[time] epoch {epoch + 1}: {dt:.0f} s, {left / 60:.1f} min left in the "
                  "training budget", flush=True)
            if left < 1.05 * max(self.epoch_times):
                self.model.stop_training = True
                log["stopped_by_budget"] = True

    return TimeBudget()


def train(args) -> None:
    import numpy as np
    import tensorflow as tf
    from stardist.models import Config2D, StarDist2D

    t0 = time.time()
    deadline = t0 + 60 * (args.budget_min - args.reserve_min)
    np.random.seed(args.seed)
    tf.random.set_seed(args.seed)
    sources = list(common.VAL_SOURCES) + (["aisegcell-bf"] if args.include_partial else [])
    patch = (args.patch, args.patch)
    X, Y, Xv, Yv, summary = load_train(args.data, sources, diameter=args.diameter,
                                       holdout=args.holdout, patch=patch)
    print(f"{len(X)} training / {len(Xv)} held-out images loaded in {time.time() - t0:.0f} s: "
          f"{json.dumps(summary)}", flush=True)

    conf = Config2D(n_rays=32, grid=(2, 2), n_channel_in=1, use_gpu=False,
                    train_patch_size=patch, train_tensorboard=False,
                    train_steps_per_epoch=args.steps_per_epoch)
    model = StarDist2D(conf, name=args.model_name, basedir=str(args.out))
    fov = np.array(model._axes_tile_overlap("YX"))
    print(f"median object size {args.diameter} px, network field of view {fov}", flush=True)

    log = {"epochs_done": 0, "stopped_by_budget": False}
    model.prepare_for_training()
    model.callbacks.append(make_time_callback(deadline, log))
    model.train(X, Y, validation_data=(Xv, Yv), augmenter=augmenter, epochs=args.max_epochs,
                steps_per_epoch=args.steps_per_epoch, seed=args.seed)
    t_train = time.time() - t0

    t1 = time.time()
    thresholds = model.optimize_thresholds(Xv, Yv)
    t_thr = time.time() - t1
    info = {
        "peer": PEER, "sources": sources, "per_source": summary, "diameter": args.diameter,
        "budget_min": args.budget_min, "reserve_min": args.reserve_min,
        "steps_per_epoch": args.steps_per_epoch, "batch_size": conf.train_batch_size,
        "patch": list(patch), **log,
        "train_wall_s": round(t_train, 1), "optimize_thresholds_wall_s": round(t_thr, 1),
        "total_wall_s": round(time.time() - t0, 1), "thresholds": thresholds,
        "threads": args.threads,
        "versions": {"tensorflow": tf.__version__, "stardist": __import__("stardist").__version__,
                     "csbdeep": __import__("csbdeep").__version__},
    }
    (args.out / args.model_name / "train_info.json").write_text(json.dumps(info, indent=2))
    common.record_training(PEER, {
        **{k: info[k] for k in (
            "peer", "diameter", "budget_min", "reserve_min", "steps_per_epoch", "batch_size",
            "epochs_done", "stopped_by_budget", "sec_per_step_first_batches", "sec_per_epoch",
            "train_wall_s", "optimize_thresholds_wall_s", "total_wall_s", "threads")
           if k in info},
        "trained": f"{info['epochs_done']} epochs x {info['steps_per_epoch']} steps (batch "
                   f"{info['batch_size']}, {patch[0]}x{patch[1]} patches) in "
                   f"{info['train_wall_s'] / 60:.1f} min, then threshold optimisation "
                   f"({info['optimize_thresholds_wall_s']:.0f} s); budget "
                   f"{info['budget_min']:g} min"}, args.results)
    print(f"trained {log['epochs_done']} epochs in {t_train / 60:.1f} min, thresholds "
          f"{thresholds} ({t_thr:.0f} s)", flush=True)


def predict(args) -> None:
    from stardist.models import StarDist2D

    model = StarDist2D(None, name=args.model_name, basedir=str(args.out))
    info_path = args.out / args.model_name / "train_info.json"
    out = {"peer": PEER, "model": str(args.out / args.model_name),
           "train": json.loads(info_path.read_text()) if info_path.exists() else None,
           "thresholds": {"prob": model.thresholds.prob, "nms": model.thresholds.nms},
           "sources": {}}
    for source in args.sources:
        t0 = time.time()
        d_train = common.train_median_diameter(args.data, source, min_area=16)
        factor = args.diameter / d_train
        res = []
        for ip, mp in common.pairs(args.data, source, args.split):
            img = common.read_image(ip)
            x = prepare(img, factor=factor)
            n_tiles = tuple(max(1, math.ceil(s / 1024)) for s in x.shape)
            lab, _ = model.predict_instances(x, n_tiles=n_tiles, show_tile_progress=False)
            lab = common.resize_labels(lab, img.shape)
            common.write_masks(args.out / source, ip.stem, lab)
            res.append((common.read_mask(mp), lab))
        s = common.score(res)
        out["sources"][source] = {"train_median_diameter": round(d_train, 2),
                                  "scale_factor": round(factor, 4), "n_images": len(res),
                                  "wall_s": round(time.time() - t0, 1), "scores": s}
        print(f"{source}: factor {factor:.3f}, {common.format_scores(s)} -> "
              f"{args.out / source}", flush=True)
    (args.out / f"predict_info_{args.split}.json").write_text(json.dumps(out, indent=2))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--data", type=Path, default=common.DEFAULT_DATA,
                   help="shared data folder holding tl/ (default: ../shared/data from the repo)")
    p.add_argument("--out", type=Path, default=common.WORK / PEER,
                   help="work folder: model in OUT/<model-name>, masks in OUT/<source>")
    p.add_argument("--model-name", default="model")
    p.add_argument("--results", type=Path, default=common.PEERS_RESULTS,
                   help="the results file whose training.stardist_scratch gets the training "
                        "facts (default: benchmarks/results/peers.json)")
    p.add_argument("--train", action="store_true", help="train a new model (overwrites)")
    p.add_argument("--predict", action="store_true", help="segment the val images")
    p.add_argument("--budget-min", type=float, default=55.0,
                   help="wall-clock minutes for training + threshold optimisation")
    p.add_argument("--reserve-min", type=float, default=4.0,
                   help="minutes of the budget kept for optimize_thresholds")
    p.add_argument("--steps-per-epoch", type=int, default=100)
    p.add_argument("--max-epochs", type=int, default=400, help="StarDist's default; the "
                   "budget normally stops training first")
    p.add_argument("--patch", type=int, default=256, help="training patch size (px)")
    p.add_argument("--diameter", type=float, default=30.0,
                   help="median cell diameter (px) images are rescaled to")
    p.add_argument("--holdout", type=float, default=0.15,
                   help="fraction of each source's train images held out")
    p.add_argument("--include-partial", action="store_true",
                   help="also train on aisegcell-bf (partially labelled)")
    p.add_argument("--sources", nargs="+", default=list(common.VAL_SOURCES),
                   help="sources to predict")
    p.add_argument("--split", default="val", help="split to predict")
    p.add_argument("--threads", type=int, default=2, help="TensorFlow CPU threads")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not (args.train or args.predict):
        p.error("give --train and/or --predict")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.train:
        train(args)
    if args.predict:
        predict(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
