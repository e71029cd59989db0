"""Segment the tl val images with DeepSea's pretrained phase-contrast cell model.

Peer method: DeepSea (Zargari et al., "DeepSea is an efficient deep-learning model for
single-cell segmentation and tracking in time-lapse microscopy", Cell Reports Methods
2023), as shipped in the PyPI wheel ``deepsea==0.0.3`` (MIT licence, A. Zargari). The
wheel holds the code and the weights ``deepsea/trained_models/segmentation.pth``. It is
fetched with ``pip download --no-deps deepsea==0.0.3`` and unzipped under
``benchmarks/work/deepsea_pretrained/wheel`` the first time (or pass ``--wheel-dir``).

What DeepSea does at inference (``deepsea/test_single_image_segmentation.py`` and
``deepsea/evaluate.py`` in the wheel), reproduced here:

1. ``img = (255 * (img - img.min()) / img.ptp()).astype(uint8)`` (min-max to 8 bit);
2. torchvision ``ToPILImage -> Resize([383, 512]) -> ToTensor -> Normalize(0.5, 0.5)``:
   a PIL bilinear resize of the WHOLE image to 383 x 512 (H x W), then ``(x/255 - .5)/.5``;
3. ``DeepSeaSegmentation(n_channels=1, n_classes=2, bilinear=True)`` -> (cell logits,
   edge logits). Only the cell head is used for instances: DeepSea trains the cell class
   with the touching-cell borders (its "wmaps") carved out and the edge head on those
   borders, so cells come out already separated;
4. ``ndi.label(remove_small_objects(argmax == 1, min_size=20, connectivity=1))``.

``model.py`` is imported from the unzipped wheel (it needs only torch). The rest of the
wheel's inference code imports torchvision, cv2 and munkres, which this venv does not
have (torchvision from PyPI would pull a CUDA torch), so steps 1, 2 and 4 are copied
here (marked "DeepSea:") with PIL doing the resize exactly as torchvision does for PIL
images. Labels are then resized back to the original image size (nearest neighbour).

Scale (``--scale``):

* ``deepsea`` (DeepSea's own pipeline): every image is squashed to 383 x 512 whatever its
  size or aspect ratio, so the cell size the model sees depends on the camera field. Its
  training images (1.5k x 2k-ish phase-contrast fields, 3:4) hold cells of a certain size
  after this resize; our fields differ (usiigaci 1022 x 1024 becomes anisotropic).
* ``diameter`` (default): the image is rescaled isotropically by
  ``target / (median cell diameter of the source's TRAIN masks)`` so cells have the
  diameter DeepSea expects, and segmented at that size (the network is fully
  convolutional). ``--target-diameter`` defaults to 22 px, the value that maximised
  AP@0.5 on the usiigaci TRAIN split (phase contrast, DeepSea's modality) in the sweep
  ``--calibrate usiigaci --calibrate-images 6 --sweep 12 15 18 22 26`` (AP@0.5 0.31,
  0.52, 0.60, 0.63, 0.61; DeepSea's fixed resize: 0.58). This gives DeepSea the same
  per-source scale knowledge our tool gets from its training data; val is never used
  to choose it.

Examples::

    benchmarks/.venv-deepsea/bin/python benchmarks/peers/deepsea_pretrained.py
    benchmarks/.venv-deepsea/bin/python benchmarks/peers/deepsea_pretrained.py --scale deepsea \\
        --out benchmarks/work/deepsea_pretrained_native
    benchmarks/.venv-deepsea/bin/python benchmarks/peers/deepsea_pretrained.py --calibrate usiigaci
    python benchmarks/accuracy.py --data ../shared/data --peers-only   # tlseg's venv

``--calibrate`` scores with tlseg's scorer, so it needs tlseg in this venv
(``benchmarks/.venv-deepsea/bin/pip install --no-deps -e .``).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import common

DEEPSEA_VERSION = "0.0.3"
# DeepSea: image_size / image_means / image_stds defaults of apply_img_segmentation().
DEEPSEA_SIZE = (383, 512)
DEEPSEA_MEAN, DEEPSEA_STD = 0.5, 0.5
DEEPSEA_MIN_SIZE = 20
DEFAULT_TARGET_DIAMETER = 22.0


def ensure_wheel(wheel_dir: Path) -> Path:
    """Folder holding the unzipped deepsea package (downloads the wheel if missing)."""
    pkg = wheel_dir / "deepsea"
    if (pkg / "model.py").exists() and (pkg / "trained_models" / "segmentation.pth").exists():
        return pkg
    wheel_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                    f"deepsea=={DEEPSEA_VERSION}", "-d", str(wheel_dir)], check=True)
    whl = next(wheel_dir.glob(f"deepsea-{DEEPSEA_VERSION}-*.whl"))
    with zipfile.ZipFile(whl) as z:
        z.extractall(wheel_dir)
    return pkg


def load_model(pkg: Path):
    import torch

    sys.path.insert(0, str(pkg))  # DeepSea's modules import each other as top-level names
    from model import DeepSeaSegmentation  # the wheel's deepsea/model.py

    net = DeepSeaSegmentation(n_channels=1, n_classes=2, bilinear=True)
    state = torch.load(pkg / "trained_models" / "segmentation.pth", map_location="cpu",
                       weights_only=True)
    net.load_state_dict(state)
    return net.eval()


def segment(net, img, *, size_hw: tuple[int, int]):
    """DeepSea's preprocessing, network and instance step at model size ``size_hw``.

    Returns labels at ``size_hw`` (int32).
    """
    import numpy as np
    import torch
    from PIL import Image
    from scipy import ndimage as ndi
    from skimage.morphology import remove_small_objects

    img = img.astype(np.float64)
    # DeepSea: img = (255 * ((img - img.min()) / img.ptp())).astype(np.uint8)
    img = (255 * ((img - img.min()) / max(np.ptp(img), 1e-12))).astype(np.uint8)
    # DeepSea: ToPILImage() -> Resize(image_size) (PIL bilinear) -> ToTensor -> Normalize
    pil = Image.fromarray(img, mode="L").resize((size_hw[1], size_hw[0]), Image.BILINEAR)
    x = np.asarray(pil, dtype=np.float32) / 255.0
    x = (x - DEEPSEA_MEAN) / DEEPSEA_STD
    with torch.no_grad():
        mask_pred, _edge_pred = net(torch.from_numpy(x)[None, None])
    fg = mask_pred.argmax(dim=1).numpy()[0] > 0
    # DeepSea: ndi.label(remove_small_objects(mask_pred > 0, min_size=20, connectivity=1))
    # (skimage >= 0.26 renamed min_size=n to max_size=n-1; same objects removed)
    try:
        kept = remove_small_objects(fg, max_size=DEEPSEA_MIN_SIZE - 1, connectivity=1)
    except TypeError:
        kept = remove_small_objects(fg, min_size=DEEPSEA_MIN_SIZE, connectivity=1)
    labels, _ = ndi.label(kept)
    return labels.astype(np.int32)


def model_size(shape, *, scale_mode: str, factor: float | None) -> tuple[int, int]:
    if scale_mode == "deepsea":
        return DEEPSEA_SIZE
    return (max(16, round(shape[0] * factor)), max(16, round(shape[1] * factor)))


def predict_source(net, data, source, split, *, scale_mode, target, out_dir=None, limit=None):
    """Segment one source/split; returns [(true, pred)] and the scale factor used."""
    factor = None
    if scale_mode == "diameter":
        factor = target / common.train_median_diameter(data, source, min_area=16)
    results = []
    for img_path, mask_path in common.pairs(data, source, split)[:limit]:
        img = common.read_image(img_path)
        lab = segment(net, img, size_hw=model_size(img.shape, scale_mode=scale_mode,
                                                   factor=factor))
        lab = common.resize_labels(lab, img.shape)
        if out_dir is not None:
            common.write_masks(out_dir, img_path.stem, lab)
        results.append((common.read_mask(mask_path), lab))
    return results, factor


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__.split("\n", 1)[1])
    p.add_argument("--data", type=Path, default=common.DEFAULT_DATA,
                   help="shared data folder holding tl/ (default: ../shared/data from the repo)")
    p.add_argument("--sources", nargs="+", default=list(common.VAL_SOURCES))
    p.add_argument("--split", default="val")
    p.add_argument("--out", type=Path, default=common.WORK / "deepsea_pretrained",
                   help="masks go to OUT/<source>/<stem>_masks.tif")
    p.add_argument("--wheel-dir", type=Path, default=common.WORK / "deepsea_pretrained" / "wheel",
                   help="where the deepsea wheel is (or will be) unzipped")
    p.add_argument("--scale", choices=["diameter", "deepsea"], default="diameter",
                   help="diameter: isotropic rescale to --target-diameter using the source's "
                        "train median diameter; deepsea: DeepSea's fixed 383x512 resize")
    p.add_argument("--target-diameter", type=float, default=DEFAULT_TARGET_DIAMETER,
                   help="cell diameter (px) fed to the network in --scale diameter")
    p.add_argument("--calibrate", metavar="SOURCE",
                   help="sweep --target-diameter on SOURCE's TRAIN split, print AP@0.5, exit")
    p.add_argument("--sweep", type=float, nargs="+", default=[12, 15, 18, 22, 26, 30])
    p.add_argument("--calibrate-images", type=int, default=None,
                   help="use only the first N train images in --calibrate (quicker)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    net = load_model(ensure_wheel(args.wheel_dir))

    if args.calibrate:
        if not common.has_scorer():
            raise SystemExit("--calibrate needs tlseg's scorer in this venv")
        rows = []
        for t in args.sweep:
            res, f = predict_source(net, args.data, args.calibrate, "train",
                                    scale_mode="diameter", target=t,
                                    limit=args.calibrate_images)
            s = common.score(res)
            rows.append({"target_diameter": t, "factor": f, **s})
            print(f"target {t:5.1f}px factor {f:.3f}  AP50 {s['ap50']:.3f}  "
                  f"AP75 {s['ap75']:.3f}  n_pred {s['n_pred']} n_true {s['n_true']}", flush=True)
        res, _ = predict_source(net, args.data, args.calibrate, "train", scale_mode="deepsea",
                                target=None, limit=args.calibrate_images)
        s = common.score(res)
        print(f"deepsea fixed 383x512 resize         AP50 {s['ap50']:.3f}  AP75 {s['ap75']:.3f}")
        best = max(rows, key=lambda r: (r["ap50"], r["map"]))
        print(f"best target diameter on {args.calibrate} train: {best['target_diameter']}")
        return 0

    info = {"peer": "deepsea_pretrained", "deepsea_version": DEEPSEA_VERSION,
            "scale": args.scale, "target_diameter": args.target_diameter, "sources": {}}
    for source in args.sources:
        t0 = time.time()
        res, f = predict_source(net, args.data, source, args.split, scale_mode=args.scale,
                                target=args.target_diameter, out_dir=args.out / source)
        s = common.score(res)
        info["sources"][source] = {"scale_factor": f, "n_images": len(res),
                                   "seconds": round(time.time() - t0, 1), "scores": s}
        print(f"{source}: {len(res)} images, factor {f}, {common.format_scores(s)} -> "
              f"{args.out / source}", flush=True)
    (args.out / f"run_{args.split}.json").write_text(json.dumps(info, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
