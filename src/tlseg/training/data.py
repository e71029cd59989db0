"""Training data: annotated images at the canonical scale, and random augmented batches.

A data folder holds ``images/`` and ``masks/`` with matching file stems (the layout of
``../shared/data``); a folder with ``train/images`` is read from its ``train`` split, so
validation images are never trained on. Each image is rescaled once so that its median
cell diameter becomes the canonical diameter, and its targets are computed there
(:mod:`tlseg.training.targets`); batches are then random rotated, flipped and zoomed crops with
photometric augmentation (:mod:`tlseg.training.augment`).
"""

from __future__ import annotations

import fnmatch
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree

from ..analysis.measure import nucleus_centres
from ..errors import TlsegError
from ..inference.labels import resize_labels
from ..inference.preprocess import rescale
from ..io import IMAGE_SUFFIXES, read_image, read_labels
from .nucleus_labels import calibration_labels
from .targets import (
    UNKNOWN,
    ignore_fragments,
    known_near_cells,
    make_targets,
    median_diameter,
)


@dataclass
class Sample:
    """One annotated image at the canonical scale."""

    name: str
    source: str
    image: torch.Tensor  # (1, H, W) raw intensities, float32
    targets: torch.Tensor  # (6, H, W): fg, dist, logsize, valid, flow_y, flow_x (+ teacher)
    labels: np.ndarray  # (H, W) instance labels, UNKNOWN where not annotated
    diameter: float  # median cell diameter in the original image (pixels)
    reference: float  # a high percentile of the image, to put augmentations on one scale
    focus: list = field(default_factory=list)  # boxes (y0, x0, y1, x1) where labels are known
    # every cell labelled (no UNKNOWN pixels, or only ignored fragments): may be held out
    # to tune and score on
    complete: bool = True


def resolve_data_dir(path) -> Path:
    """The folder holding images/ and masks/ for a data argument (its train split if any)."""
    p = Path(path)
    if (p / "images").is_dir():
        return p
    if (p / "train" / "images").is_dir():
        return p / "train"
    raise TlsegError(
        f"{p}: not a training data folder; expected images/ and masks/ (or train/images/)"
    )


def same_stem(folder: Path, stem: str) -> Path | None:
    """The image file in ``folder`` named ``stem`` with one of the image suffixes, if any."""
    return next((f for f in (folder / (stem + s) for s in IMAGE_SUFFIXES) if f.is_file()),
                None)


def list_pairs(folder: Path, exclude=()) -> list[tuple[Path, Path]]:
    """(image, mask) pairs with the same stem; a missing mask is an error. Images whose
    file name matches one of the ``exclude`` glob patterns are then left out (a folder
    with no images at all is an error, one whose images are all excluded is not)."""
    pairs = []
    for img in sorted((folder / "images").iterdir()):
        if img.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        mask = same_stem(folder / "masks", img.stem)
        if mask is None:
            raise TlsegError(f"{img}: no mask with the same name in {folder / 'masks'}")
        pairs.append((img, mask))
    if not pairs:
        raise TlsegError(f"{folder}: no images in images/")
    return [(img, mask) for img, mask in pairs
            if not any(fnmatch.fnmatch(img.name, pat) for pat in exclude)]


def stain_path(folder: Path, image: Path) -> Path:
    """The nuclear stain of a training image: ``stain/`` beside ``images/``, same stem."""
    found = same_stem(folder / "stain", image.stem)
    if found is None:
        raise TlsegError(f"{image}: no nuclear stain with the same name in {folder / 'stain'}; "
                         "add it, or leave the folder out of --stain")
    return found


def load_sample(
    image_path: Path,
    mask_path: Path,
    *,
    canonical_diameter: float,
    source: str,
    partial: bool = False,
    incomplete: bool = False,
    fragments: float = 0.0,
    stain_nuclei: np.ndarray | None = None,
) -> Sample | None:
    """Read one annotated image and bring it to the canonical scale (None if no cells).

    ``partial``: some cells are unlabelled, so background is trusted only near labelled
    cells. ``incomplete``: a few unlabelled objects are not cells of interest (debris,
    cells without a nuclear signal), so all background is trusted. Either way the image is
    never held out to tune or score on (its unlabelled objects would count as errors).
    ``fragments`` > 0: objects smaller than that fraction of the median area are annotation
    fragments, ignored by the loss and by tuning (:func:`tlseg.training.targets.ignore_fragments`).
    ``stain_nuclei``: the nuclei of the image's nuclear stain (labels of the same shape).
    The masks are then judged by them as :func:`tlseg.calibrate` judges a model's cells
    (:func:`tlseg.training.nucleus_labels.calibration_labels`, no cell seeded): a labelled
    cell holding one nucleus stays a cell, one holding several is unknown, and
    background is trusted only farther than a cell diameter from every nucleus, so that
    debris is background and an unlabelled cell with a nucleus is unknown.
    """
    image = read_image(image_path)
    labels = read_labels(mask_path, shape=image.shape)
    labels = ignore_fragments(labels, fraction=fragments)
    diameter = median_diameter(labels)
    if diameter is None:
        return None
    if partial:
        # unlabelled cells exist: trust background only near labelled cells
        labels = known_near_cells(labels, margin=1.0 * diameter)
    if stain_nuclei is not None:
        if stain_nuclei.shape != labels.shape:
            raise TlsegError(f"{image_path}: its nuclear stain is {stain_nuclei.shape[1]} x "
                             f"{stain_nuclei.shape[0]} px, the image {labels.shape[1]} x "
                             f"{labels.shape[0]}; give the stain of the same field")
        known = np.where(labels == UNKNOWN, 0, labels)
        judged = calibration_labels(known, stain_nuclei, diameter=diameter, split=False,
                                    seed=False)
        labels = np.where(labels == UNKNOWN, UNKNOWN, judged)
    sample = make_sample(image, labels, diameter=diameter, canonical_diameter=canonical_diameter,
                         name=image_path.stem, source=source)
    sample.complete = not (partial or incomplete or stain_nuclei is not None)
    return sample


def make_sample(
    image: np.ndarray,
    labels: np.ndarray,
    *,
    diameter: float,
    canonical_diameter: float,
    name: str,
    source: str,
    focus=(),
    teacher=None,
) -> Sample:
    """Bring an image and its labels (UNKNOWN allowed) to the canonical scale.

    ``focus`` boxes (y0, x0, y1, x1) in image pixels mark where the labels are known.
    ``teacher``, a callable mapping the canonical-scale image to a model's maps (3 or 5,
    H, W), adds its foreground, distance and flow maps as more target channels (for
    distillation; see :func:`tlseg.training.train.masked_loss`).
    """
    scale = canonical_diameter / diameter
    small = rescale(image, scale)
    # nearest neighbour with pixel centres aligned, as rescale() aligns the image
    lab_small = resize_labels(labels, small.shape).astype(np.int32)
    targets = make_targets(lab_small, canonical_diameter=canonical_diameter)
    if teacher is not None:
        maps = teacher(small)
        keep = [0, 1] + list(range(3, maps.shape[0]))  # all but the size map
        targets = np.concatenate([targets, maps[keep].astype(np.float32)])
    return Sample(
        name=name,
        source=source,
        image=torch.from_numpy(small)[None],
        targets=torch.from_numpy(targets),
        labels=lab_small,
        diameter=diameter,
        reference=float(np.percentile(small, 99.5)) or 1.0,
        focus=[tuple(v * scale for v in box) for box in focus],
        complete=not bool((labels == UNKNOWN).any()),
    )


class CropSampler:
    """Random crops (rotated, flipped, zoomed) from a list of samples, balanced by source.

    Parameters
    ----------
    samples : list of Sample
    crop : int
        Output crop side in pixels.
    max_log2_scale : float
        Zoom factor 2**u with u drawn from a normal of SD max/2, clipped to +-max.
    rng : numpy Generator
    crowded : list of Sample, optional
        Crowded fields (:func:`tlseg.training.crowd.crowded_samples`), drawn for a
        ``crowded_fraction`` of the crops.
    monolayers : list of Sample, optional
        Synthetic monolayers (:func:`tlseg.training.crowd.monolayer_samples`), drawn for
        a ``monolayer_fraction`` of the crops.
    dense_fraction : float
        This fraction of the source-balanced crops is centred on a labelled cell of the
        source, drawn with a weight of the square of the number of labelled cells within
        ``dense_radius`` pixels of it, so that the densest parts of real images are seen
        more often; the other crops are centred uniformly.
    """

    def __init__(self, samples: list[Sample], *, crop: int, max_log2_scale: float, rng,
                 crowded: list[Sample] = (), crowded_fraction: float = 0.0,
                 monolayers: list[Sample] = (), monolayer_fraction: float = 0.0,
                 dense_fraction: float = 0.0, dense_radius: float = 60.0):
        if not samples:
            raise TlsegError("no annotated images to train on")
        self.samples = samples
        self.crop = crop
        self.max_log2_scale = max_log2_scale
        self.rng = rng
        # (samples, fraction of the crops) drawn before the source-balanced images
        self.extras = [(list(group), fraction) for group, fraction in
                       ((crowded, crowded_fraction), (monolayers, monolayer_fraction))
                       if len(group) and fraction > 0]
        if sum(f for _, f in self.extras) > 1:
            raise TlsegError("crowded and monolayer fractions add up to more than 1")
        self.by_source: dict[str, list[int]] = {}
        for i, s in enumerate(samples):
            self.by_source.setdefault(s.source, []).append(i)
        self.dense_fraction = dense_fraction
        self.dense: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        if dense_fraction > 0:
            for src, idx in self.by_source.items():
                table = dense_centres([samples[i] for i in idx], radius=dense_radius)
                if len(table):
                    w = table[:, 3] / table[:, 3].sum()
                    table[:, 0] = np.asarray(idx)[table[:, 0].astype(int)]
                    self.dense[src] = (table[:, :3], w)

    def _pick(self) -> tuple[Sample, tuple[float, float] | None]:
        """A sample, and the crop's centre where it is not drawn uniformly."""
        # no random number is drawn without extras: old recipes train as before
        if self.extras:
            u = self.rng.random()
            for group, fraction in self.extras:
                if u < fraction:
                    return group[self.rng.integers(len(group))], None
                u -= fraction
        sources = list(self.by_source)
        src = sources[self.rng.integers(len(sources))]
        if src in self.dense and self.rng.random() < self.dense_fraction:
            table, w = self.dense[src]
            i, cy, cx = table[self.rng.choice(len(table), p=w)]
            return self.samples[int(i)], (float(cy), float(cx))
        idx = self.by_source[src]
        return self.samples[idx[self.rng.integers(len(idx))]], None

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Raw crops (n,1,P,P), targets (n,C,P,P) and per-crop reference intensity (n,)."""
        images, targets, refs = [], [], []
        for _ in range(n):
            s, centre = self._pick()
            img, tgt = self._crop(s, centre)
            images.append(img)
            targets.append(tgt)
            refs.append(s.reference)
        return torch.stack(images), torch.stack(targets), torch.tensor(refs)

    def _crop(self, s: Sample, centre=None) -> tuple[torch.Tensor, torch.Tensor]:
        rng, p = self.rng, self.crop
        m = self.max_log2_scale
        u = float(np.clip(rng.normal(0, m / 2), -m, m)) if m > 0 else 0.0
        zoom = 2.0**u  # >1: cells look bigger
        _, h, w = s.image.shape
        half = p / (2 * zoom)  # half-extent of the crop in sample pixels
        if centre is not None:
            cy, cx = centre
        elif s.focus and rng.random() < 0.8:
            # sparse annotation: centre most crops on an annotated region
            y0, x0, y1, x1 = s.focus[rng.integers(len(s.focus))]
            cy, cx = rng.uniform(y0, y1), rng.uniform(x0, x1)
        else:
            cy = rng.uniform(min(half, h / 2), max(h - half, h / 2))
            cx = rng.uniform(min(half, w / 2), max(w - half, w / 2))
        theta = rng.uniform(0, 2 * math.pi)
        flip = -1.0 if rng.random() < 0.5 else 1.0
        # oversample 2x when shrinking, then average: cheap antialiasing
        over = 2 if zoom < 0.75 else 1
        grid = _affine_grid(p * over, cy, cx, theta, flip, zoom * over, h, w)
        img = F.grid_sample(s.image[None], grid, mode="bilinear", padding_mode="reflection",
                            align_corners=False)
        if over > 1:
            img = F.avg_pool2d(img, over)
            grid = _affine_grid(p, cy, cx, theta, flip, zoom, h, w)
        tgt = F.grid_sample(s.targets[None], grid, mode="nearest", padding_mode="zeros",
                            align_corners=False)[0]
        tgt[2] += u  # apparent size changes with the zoom
        # flows are vectors: turn them with the crop. A sample point moves by
        # M @ (dy, dx) for an output step, M = rotation(theta) @ diag(1, flip) / zoom,
        # so a flow f in the sample reads M^-1 f (up to length) in the crop.
        c, s_ = math.cos(theta), math.sin(theta)
        for k in ((4, 5), (8, 9)) if tgt.shape[0] >= 10 else ((4, 5),):
            fy, fx = tgt[k[0]].clone(), tgt[k[1]].clone()
            tgt[k[0]] = c * fy + s_ * fx
            tgt[k[1]] = flip * (-s_ * fy + c * fx)
        return img[0], tgt


def dense_centres(samples: list[Sample], *, radius: float) -> np.ndarray:
    """Labelled cells' centres and local density: rows (sample index, y, x, weight).

    The weight is the square of the number of labelled cells (the cell itself included)
    whose centres lie within ``radius`` pixels of the cell's centre.

    Examples
    --------
    >>> lab = np.zeros((40, 100), np.int32)
    >>> lab[5:10, 5:10], lab[5:10, 12:17], lab[30:35, 80:85] = 1, 2, 3
    >>> s = Sample("a", "src", torch.zeros(1, 40, 100), torch.zeros(7, 40, 100), lab, 30.0, 1.0)
    >>> dense_centres([s], radius=10)[:, 3].tolist()   # two neighbours, one alone
    [4.0, 4.0, 1.0]
    """
    rows = []
    for k, s in enumerate(samples):
        centres = nucleus_centres(np.where(s.labels > 0, s.labels, 0))
        if not len(centres):
            continue
        count = cKDTree(centres).query_ball_point(centres, radius, return_length=True)
        rows.append(np.column_stack([np.full(len(centres), k), centres,
                                     count.astype(float) ** 2]))
    return np.concatenate(rows) if rows else np.zeros((0, 4))


def _affine_grid(p, cy, cx, theta, flip, zoom, h, w) -> torch.Tensor:
    """Sampling grid (1, p, p, 2) in grid_sample's normalised coordinates."""
    v = (torch.arange(p, dtype=torch.float32) - (p - 1) / 2) / zoom
    vy, vx = torch.meshgrid(v, v * flip, indexing="ij")
    c, s_ = math.cos(theta), math.sin(theta)
    y = cy + c * vy - s_ * vx
    x = cx + s_ * vy + c * vx
    gx = (x + 0.5) / w * 2 - 1
    gy = (y + 0.5) / h * 2 - 1
    return torch.stack([gx, gy], dim=-1)[None]


def split_holdout(samples: list[Sample], fraction: float) -> tuple[list[Sample], list[Sample]]:
    """Hold out the last ``fraction`` of each fully labelled source's images (by name)."""
    train, held = [], []
    by_source: dict[str, list[Sample]] = {}
    for s in samples:
        by_source.setdefault(s.source, []).append(s)
    for group in by_source.values():
        group = sorted(group, key=lambda s: s.name)
        partial = any(not g.complete for g in group)
        k = 0 if partial or fraction == 0 else max(1, round(fraction * len(group)))
        if len(group) - k < 1:
            k = 0
        train += group[: len(group) - k]
        held += group[len(group) - k :]
    return train, held


__all__ = [
    "UNKNOWN",
    "CropSampler",
    "Sample",
    "dense_centres",
    "list_pairs",
    "load_sample",
    "make_sample",
    "resolve_data_dir",
    "same_stem",
    "split_holdout",
    "stain_path",
]
