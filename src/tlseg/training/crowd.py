"""Crowded training fields: real annotated cells pasted densely, and borders that count.

Confluent monolayers are the common case in screening, but most annotated images are
sparse or half full. Two additions to training show a network crowded fields:

- :func:`crowded_samples` (copy-paste augmentation, as in Ghiasi et al. 2021): a
  training image of one source at the canonical scale is filled with real annotated
  cells cut from that source's other images, each feathered into its new background and
  brought to its local background level (or laid on as its relief, ``blend="relief"``),
  until 60-90 % of the field is cells. Pasted
  cells may touch and overlap their neighbours a little; a cell left with less than half
  its area under later pastes becomes unknown to the loss.
- :func:`monolayer_samples`: synthetic confluent monolayers
  (:func:`tlseg.synthetic.synthetic_field` with ``confluent=True``) in phase contrast,
  brightfield and DIC, cells filling the whole field with no background between them,
  which no annotated image here shows. Every cell is labelled.
- :func:`border_weights`: pixels where two cells meet (or nearly meet) weigh more in the
  loss, as in U-Net's weight map (Ronneberger et al. 2015); the weight rides in the
  ``valid`` target (1 + w), so no target channel is added and a weight of 0 trains
  exactly as before.

They work on :class:`tlseg.training.data.Sample` objects and are switched on by
``TrainConfig.crowded``, ``TrainConfig.monolayers`` and ``TrainConfig.border_weight``.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage as ndi

from ..inference.labels import edge_ids
from ..synthetic import MODALITIES, synthetic_field
from .data import Sample, make_sample
from .targets import UNKNOWN, cut_cells, make_targets, median_diameter


def border_weights(labels: np.ndarray, *, weight: float, radius: int = 3) -> np.ndarray:
    """Per-pixel loss weight (H, W): ``1 + weight`` within ``radius`` px of two
    different cells, 1 elsewhere.

    Examples
    --------
    >>> lab = np.zeros((8, 12), int); lab[2:6, 1:6] = 1; lab[2:6, 6:11] = 2
    >>> w = border_weights(lab, weight=4.0, radius=1)
    >>> float(w[3, 5]), float(w[3, 6]), float(w[3, 2])   # the shared border, a centre
    (5.0, 5.0, 1.0)
    """
    lab = np.where(labels > 0, labels, 0).astype(np.int64)
    size = 2 * radius + 1
    hi = ndi.maximum_filter(lab, size=size)
    lo = -ndi.maximum_filter(np.where(lab > 0, -lab, np.iinfo(np.int64).min), size=size)
    two = (hi > 0) & (lo > 0) & (hi != lo)
    return np.where(two, 1.0 + weight, 1.0).astype(np.float32)


def weight_borders(sample: Sample, weight: float) -> None:
    """Put :func:`border_weights` into a sample's ``valid`` target, in place, where the
    whole cell or the background is known (``valid`` >= 1)."""
    if weight <= 0:
        return
    w = torch.from_numpy(border_weights(sample.labels, weight=weight))
    valid = sample.targets[3]
    sample.targets[3] = torch.where(valid >= 1, valid * w, valid)


def _cell_bank(samples: list[Sample], margin: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(patch, mask) of every whole annotated cell of the samples, with ``margin`` px of
    its surroundings; cells cut by the image edge or by unknown pixels are left out."""
    bank = []
    for s in samples:
        image = s.image[0].numpy()
        lab = s.labels
        h, w = lab.shape
        cut = set(cut_cells(lab).tolist())
        edge = set(edge_ids(lab).tolist())
        for i, sl in enumerate(ndi.find_objects(np.where(lab > 0, lab, 0)), start=1):
            if sl is None or i in cut or i in edge:
                continue
            y0, x0 = max(sl[0].start - margin, 0), max(sl[1].start - margin, 0)
            y1, x1 = min(sl[0].stop + margin, h), min(sl[1].stop + margin, w)
            mask = lab[y0:y1, x0:x1] == i
            if mask.sum() < 16:
                continue
            bank.append((image[y0:y1, x0:x1].astype(np.float32), mask))
    return bank


def _paste(canvas, labels, patch, mask, y, x, new_id, feather, blend="feather"):
    """Paste one cell with its top-left corner at (y, x); returns False if it does not fit.

    ``blend="feather"`` replaces the pixels under the cell (its outline widened by 1 px
    and feathered over ``feather`` px) by the cell brought to the local background level.
    ``blend="relief"`` multiplies them by the cell's relief (the patch over its
    surrounding background, less 1) within 3 px of its outline, tapered over ``feather``
    px: its halo comes along, and what lies under the rim (a neighbour's edge) stays, so
    no seam is drawn.
    """
    h, w = mask.shape
    if y < 0 or x < 0 or y + h > canvas.shape[0] or x + w > canvas.shape[1]:
        return False
    under = labels[y:y + h, x:x + w]
    if (under[mask] == UNKNOWN).any():
        return False
    region = canvas[y:y + h, x:x + w]
    ring = ndi.binary_dilation(mask, iterations=4) & ~ndi.binary_dilation(mask, iterations=1)
    src_bg = float(np.median(patch[ring])) if ring.any() else float(np.median(patch))
    if blend == "relief":
        if src_bg <= 0:
            return False
        reach = ndi.gaussian_filter(ndi.binary_dilation(mask, iterations=3).astype(np.float32),
                                    feather)
        region[:] = region * (1 + np.clip(reach * 1.5, 0, 1) * (patch / src_bg - 1))
        under[mask] = new_id
        return True
    # bring the cell to the local background level of its new place
    dst_bg = float(np.median(region[ring & (under == 0)])) if (ring & (under == 0)).any() \
        else float(np.median(region))
    scaled = patch * (dst_bg / src_bg) if src_bg > 0 else patch
    alpha = ndi.gaussian_filter(ndi.binary_dilation(mask, iterations=1).astype(np.float32),
                                feather)
    alpha = np.clip(alpha * 1.5, 0, 1)
    region[:] = alpha * scaled + (1 - alpha) * region
    under[mask] = new_id
    return True


def crowded_samples(samples: list[Sample], *, n: int, size: int, canonical_diameter: float,
                    rng: np.random.Generator, blend: str = "feather") -> list[Sample]:
    """``n`` crowded fields per source: real cells of a source pasted densely into
    ``size``² crops of its images at the canonical scale (module docstring); ``blend``:
    how a cell is put in (``"feather"`` or ``"relief"``, see :func:`_paste`).

    Only samples without unknown pixels (no ROIs, no partial labels) give a canvas and
    cells, so pasted cells never cover an unlabelled cell. The new samples are named
    ``crowded-<source>-<k>`` and keep their source, so source balancing is unchanged.
    """
    out = []
    by_source: dict[str, list[Sample]] = {}
    for s in samples:
        if not s.focus and not (s.labels == UNKNOWN).any():
            by_source.setdefault(s.source, []).append(s)
    margin = 6
    for source, group in sorted(by_source.items()):
        bank = _cell_bank(group, margin)
        if len(bank) < 10:
            continue
        for k in range(n):
            base = group[rng.integers(len(group))]
            img = base.image[0].numpy()
            h, w = img.shape
            ch, cw = min(size, h), min(size, w)
            y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            canvas = img[y0:y0 + ch, x0:x0 + cw].astype(np.float32).copy()
            labels = base.labels[y0:y0 + ch, x0:x0 + cw].astype(np.int64).copy()
            areas0 = np.bincount(np.where(labels > 0, labels, 0).ravel())
            target = rng.uniform(0.6, 0.9)
            next_id = int(labels.max()) + 1
            for _ in range(40 * max(1, int(ch * cw / canonical_diameter**2))):
                if (labels > 0).mean() >= target:
                    break
                patch, mask = bank[rng.integers(len(bank))]
                if rng.random() < 0.5:
                    patch, mask = patch[::-1], mask[::-1]
                y = int(rng.integers(-margin, ch - mask.shape[0] + margin + 1))
                x = int(rng.integers(-margin, cw - mask.shape[1] + margin + 1))
                y, x = min(max(y, 0), ch - mask.shape[0]), min(max(x, 0), cw - mask.shape[1])
                if y < 0 or x < 0:
                    continue
                overlap = (labels[y:y + mask.shape[0], x:x + mask.shape[1]][mask] > 0).mean()
                if overlap > 0.15:
                    continue
                if _paste(canvas, labels, patch, mask, y, x, next_id, rng.uniform(0.5, 1.2),
                          blend):
                    next_id += 1
            # cells mostly covered by later pastes: their remnants are not cells to learn
            areas = np.bincount(np.where(labels > 0, labels, 0).ravel(), minlength=next_id)
            areas0 = np.pad(areas0, (0, next_id - len(areas0)))
            lost = np.flatnonzero((areas0 > 0) & (areas < 0.5 * areas0))
            labels[np.isin(labels, lost)] = UNKNOWN
            targets = make_targets(labels, canonical_diameter=canonical_diameter)
            out.append(Sample(
                name=f"crowded-{source}-{k}", source=source,
                image=torch.from_numpy(canvas)[None], targets=torch.from_numpy(targets),
                labels=labels.astype(np.int32), diameter=base.diameter,
                reference=base.reference, complete=False))
    return out


def monolayer_samples(*, n: int, size: int, canonical_diameter: float,
                      rng: np.random.Generator) -> list[Sample]:
    """``n`` synthetic confluent monolayers per transmitted-light modality, ``size``² at
    the canonical scale, cells 0.8-1.2x the canonical diameter before the crop zoom.

    Illumination gradient (0-0.5), camera noise (1-4 %) and the cells' shapes vary per
    field. The samples' source is ``synthetic monolayer``; they are drawn only for
    ``TrainConfig.monolayers`` of the crops and never held out to tune on.
    """
    out = []
    for modality in MODALITIES:
        for k in range(n):
            f = synthetic_field((size, size), modality=modality, confluent=True,
                                diameter=canonical_diameter * 2 ** rng.uniform(-0.3, 0.3),
                                shading=rng.uniform(0.0, 0.5), noise=rng.uniform(0.01, 0.04),
                                seed=int(rng.integers(2**31)))
            sample = make_sample(f["tl"].astype(np.float32), f["labels"],
                                 diameter=median_diameter(f["labels"]),
                                 canonical_diameter=canonical_diameter,
                                 name=f"monolayer-{modality}-{k}", source="synthetic monolayer")
            sample.complete = False  # a training device, not an image to tune on
            out.append(sample)
    return out


__all__ = ["border_weights", "crowded_samples", "monolayer_samples", "weight_borders"]
