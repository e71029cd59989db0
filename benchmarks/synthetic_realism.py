"""How real the synthetic fields look: cell texture and camera noise, real vs generated.

Run::

    python benchmarks/synthetic_realism.py --data ../shared/data

Two image statistics (no model involved), on the TRAIN images of every transmitted-light
source in ../shared/data and on fields from ``tlseg.synthetic`` (the tests' and the demo
plate's data, 28 px cells as on the demo plate):

- **camera noise**: robust SD of the high-pass residual (image minus a 2 px Gaussian
  blur) over background pixels more than 4 px from any cell, as a fraction of the
  background level;
- **cell texture / noise**: per cell, the SD of the normalised image (the network's
  input, at the canonical 30 px scale) over the cell eroded by 2 px (its rim left out),
  divided by the robust SD of the background there.

Session 13 found the synthetic brightfield cells 4-6x smoother than any real source's
(median texture / noise 1.5 against 4.9-39), with the noise in the real range, and set
``synthetic.TEXTURE`` so that the generated median is about the lowest real median.

Results: ``benchmarks/results/synthetic_realism.json`` (``--texture brightfield=0.05
phase=0.08 --name synthetic_realism_before`` measures the generator before session 13).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import tifffile
import torch
from scipy import ndimage as ndi
from skimage.transform import rescale

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TL_CELLS_SOURCES, write_results  # noqa: E402

from tlseg.config import ModelConfig  # noqa: E402
from tlseg.preprocess import normalize  # noqa: E402
from tlseg.synthetic import MODALITIES, TEXTURE, synthetic_field  # noqa: E402


def _background(labels: np.ndarray) -> np.ndarray:
    return (labels == 0) & (ndi.distance_transform_edt(labels == 0) > 4)


def _robust_sd(values: np.ndarray) -> float:
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


def camera_noise(image: np.ndarray, labels: np.ndarray) -> float:
    """High-pass noise SD over the background, as a fraction of the background level."""
    image = image.astype(np.float64)
    bg = _background(labels)
    return _robust_sd((image - ndi.gaussian_filter(image, 2))[bg]) / float(np.median(image[bg]))


def cell_texture(image: np.ndarray, labels: np.ndarray, diameter: float) -> np.ndarray:
    """Per cell: SD inside the cell (rim eroded) / background SD, on the network's input."""
    cfg = ModelConfig()
    scale = cfg.canonical_diameter / diameter
    small = rescale(image.astype(np.float32), scale, order=3, preserve_range=True)
    lab = rescale(labels, scale, order=0, preserve_range=True, anti_aliasing=False).astype(int)
    x = normalize(torch.from_numpy(small.astype(np.float32))[None, None],
                  flatfield=cfg.flatfield,
                  sigma=cfg.background_sigma * cfg.canonical_diameter)[0, 0].numpy()
    inner = ndi.grey_erosion(np.where(lab > 0, lab, 0), size=5)
    ids = np.unique(inner[inner > 0])
    if ids.size == 0:
        return np.empty(0)
    return np.asarray(ndi.standard_deviation(x, inner, ids)) / _robust_sd(x[_background(lab)])


def _summary(texture, noise) -> dict:
    t = np.asarray(texture, float)
    return {"cells": int(t.size),
            "texture_over_noise_p5_p25_p50": [round(float(v), 2)
                                              for v in np.percentile(t, [5, 25, 50])],
            "camera_noise_percent_median": round(100 * float(np.median(noise)), 2)}


def main(argv=None) -> int:
    from tlseg.targets import median_diameter

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--fields", type=int, default=4, help="synthetic fields per modality")
    p.add_argument("--texture", nargs="*", default=[], metavar="MODALITY=AMPLITUDE",
                   help="texture amplitudes other than synthetic.TEXTURE, e.g. "
                        "brightfield=0.05 phase=0.08 (the values before session 13)")
    p.add_argument("--name", default="synthetic_realism", help="results file name")
    args = p.parse_args(argv)
    amplitude = dict(TEXTURE, **{k: float(v) for k, v in (t.split("=") for t in args.texture)})
    rows = {}
    for source in TL_CELLS_SOURCES:
        folder = args.data / "tl" / source / "train"
        texture, noise = [], []
        for path in sorted((folder / "images").glob("*.tif")):
            image = tifffile.imread(path)
            image = image[..., 0] if image.ndim == 3 else image
            labels = tifffile.imread(folder / "masks" / path.name).astype(np.int64)
            labels[labels < 0] = 0
            noise.append(camera_noise(image, labels))
            texture.extend(cell_texture(image, labels, median_diameter(labels)))
        rows[source] = _summary(texture, noise)
    for modality in MODALITIES:
        texture, noise = [], []
        for seed in range(args.fields):
            f = synthetic_field((512, 512), n_cells=40, diameter=28.0, modality=modality,
                                texture=amplitude.get(modality), seed=seed)
            noise.append(camera_noise(f["tl"], f["labels"]))
            texture.extend(cell_texture(f["tl"], f["labels"], 28.0))
        rows[f"synthetic {modality}"] = _summary(texture, noise)
    print(f"{'images':<24} {'cells':>6} {'texture/noise p5 p25 p50':>26} {'noise %':>8}")
    for name, r in rows.items():
        t = r["texture_over_noise_p5_p25_p50"]
        print(f"{name:<24} {r['cells']:>6} {t[0]:>8.2f} {t[1]:>8.2f} {t[2]:>8.2f} "
              f"{r['camera_noise_percent_median']:>8.2f}")
    out = write_results(args.name, argv=argv, payload={
        "synthetic_texture_amplitude": amplitude, "results": rows})
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
