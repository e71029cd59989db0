"""Suggesting where to annotate next: regions where the model is least sure.

The model is run on the image and on its flipped copies (test-time augmentation). A
pixel is uncertain where the runs disagree, or where the foreground probability sits
within 0.25 of 0.5 (the model cannot decide cell vs. background) — the sum of both is the
uncertainty map. Boxes of the requested size are ranked by their mean uncertainty and picked
greedily without overlap. Over several images (:func:`suggest_across`) the boxes are taken
round-robin, at most one per image a round, so that one odd image (say a noisy field the
model reads as haze) cannot claim every suggestion. :func:`suggest_representative` also
weighs how well the picks cover the images' range of appearance (opt-in; measured no
better).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from ..errors import TlsegError, check_positive
from ..inference.model import Model
from ..inference.preprocess import rescale
from ..io import read_image

MIN_BOX = 32  # px a side of the smallest box suggested (the smallest tile the model takes)


def uncertainty_map(model: Model, image: np.ndarray, *, diameter: float | None = None
                    ) -> tuple[np.ndarray, float]:
    """Per-pixel uncertainty (H, W) in [0, ~1.5] and the diameter used."""
    u, diameter, _ = _analyse(model, image, diameter=diameter)
    return u, diameter


def _analyse(model: Model, image: np.ndarray, *, diameter: float | None = None,
             features: bool = False) -> tuple[np.ndarray, float, tuple | None]:
    """Uncertainty map, diameter and, with ``features``, (deepest encoder features,
    input pixels per feature pixel)."""
    check_positive("diameter", diameter)
    if diameter is None:
        diameter = model.estimate_diameter(image) or model.config.default_diameter
    scale = model.config.canonical_diameter / diameter
    small = rescale(np.asarray(image, np.float32), scale)
    runs = []
    for flip in ((), (0,), (1,), (0, 1)):
        x = np.flip(small, flip) if flip else small
        m = model.predict_maps(np.ascontiguousarray(x))
        runs.append(np.flip(m[:2], tuple(a + 1 for a in flip)) if flip else m[:2])
    runs = np.stack(runs)  # (4, 2, h, w)
    disagreement = runs.std(axis=0).sum(axis=0) * 2
    prob = runs[:, 0].mean(axis=0)
    # only probabilities within 0.25 of the 0.5 decision count: the faint haze (p ~ 0.15)
    # a model leaves over wide empty background is no risk of error, but summed over a
    # sparse field's background it outweighed the cells and sent users to empty boxes
    indecision = np.clip(1 - 2 * np.abs(2 * prob - 1), 0, None)
    # errors happen at cells, at what might be cells and at their borders: uncertainty
    # counts within a cell diameter of a pixel the model gives at least a 25 % chance
    near = ndi.binary_dilation(prob > 0.25, iterations=int(model.config.canonical_diameter))
    u = (disagreement + indecision) * near
    h, w = np.asarray(image).shape
    zoom = (h / u.shape[0], w / u.shape[1])
    feats = (model.features(small), model.net.stride / scale) if features else None
    return ndi.zoom(u, zoom, order=1)[:h, :w], float(diameter), feats


def suggest_rois(model: Model, image: np.ndarray, *, n: int = 5, size: int = 256,
                 diameter: float | None = None, exclude=()) -> list[dict]:
    """The ``n`` most uncertain non-overlapping ``size`` x ``size`` boxes of an image.

    Parameters
    ----------
    exclude : sequence of (y0, x0, y1, x1)
        Boxes already annotated; suggestions do not overlap them.

    Returns
    -------
    list of dict with ``box`` (y0, x0, y1, x1) and ``score`` (mean uncertainty), best first.
    """
    check_box_size(size)
    u, _ = uncertainty_map(model, image, diameter=diameter)
    return _rank_boxes(u, n=n, size=size, exclude=exclude)


def check_box_size(size: int) -> None:
    """A suggested box must hold at least ``MIN_BOX`` pixels a side (one-line error)."""
    if not size >= MIN_BOX:
        raise TlsegError(f"--size must be at least {MIN_BOX} pixels, got {size}")


def _rank_boxes(u: np.ndarray, *, n: int, size: int, exclude=()) -> list[dict]:
    """The ``n`` non-overlapping boxes of highest mean ``u``, greedily, best first."""
    h, w = u.shape
    size_y, size_x = min(size, h), min(size, w)
    # mean uncertainty of the box whose top-left corner is at each pixel
    mean = ndi.uniform_filter(u, size=(size_y, size_x), mode="constant")
    cy, cx = size_y // 2, size_x // 2
    score = mean[cy:cy + h - size_y + 1, cx:cx + w - size_x + 1]
    taken = np.zeros((h, w), bool)
    for y0, x0, y1, x1 in exclude:
        taken[max(0, y0):y1, max(0, x0):x1] = True
    out = []
    while len(out) < n:
        allowed = ~_overlaps(taken, size_y, size_x)  # boxes must not overlap taken pixels
        s = np.where(allowed, score, -np.inf)
        if not np.isfinite(s).any():
            break
        y0, x0 = np.unravel_index(int(np.argmax(s)), s.shape)
        out.append({"box": (int(y0), int(x0), int(y0 + size_y), int(x0 + size_x)),
                    "score": float(s[y0, x0])})
        taken[y0:y0 + size_y, x0:x0 + size_x] = True
    return out


def suggest_across(model: Model, images, *, n: int = 5, size: int = 256,
                   diameter: float | None = None, exclude=None) -> list[dict]:
    """The ``n`` most uncertain boxes over several images, spread across them.

    Every image is ranked on its own (:func:`suggest_rois`, up to ``n`` boxes); then the
    best box of each image is taken, most uncertain first, then each image's second box,
    and so on: a batch of ROIs is most useful when it covers what differs between images
    rather than one image's worst corner again and again. An image with no room for
    another box leaves its turn to the others; fewer than ``n`` boxes come back only when
    no more fit without overlap.

    Parameters
    ----------
    images : sequence of (key, image)
        ``key`` names the image in the output (a path or an id); ``image`` is an array
        or a path, read when its turn comes (so a folder of fields is not held in memory).
    exclude : dict key -> sequence of boxes, optional
        Boxes already annotated, per image.

    Returns
    -------
    list of dict with ``key``, ``box``, ``score`` and ``round`` (1 = the image's best box).
    """
    images = list(images)
    if not images:
        return []
    rounds: dict[int, list[dict]] = {}
    for key, image in images:
        if not isinstance(image, np.ndarray):
            image = read_image(image)
        done = (exclude or {}).get(key, ())
        for r, pick in enumerate(suggest_rois(model, image, n=n, size=size,
                                              diameter=diameter, exclude=done), start=1):
            rounds.setdefault(r, []).append(dict(pick, key=key, round=r))
    out = []
    for r in sorted(rounds):
        out.extend(sorted(rounds[r], key=lambda p: -p["score"]))
    return out[:n]


def suggest_representative(model: Model, images, *, n: int = 5, size: int = 256,
                           diameter: float | None = None, exclude=None,
                           candidates: int = 2) -> list[dict]:
    """``n`` uncertain boxes that together look like all the images' cells.

    "Suggestive annotation" (Yang et al., MICCAI 2017): the most uncertain boxes
    (``candidates`` x ``n`` of them, spread over the images as in :func:`suggest_across`)
    are only candidates; from them boxes are picked greedily so that every region of
    every image with cells in it (a grid of ``size`` boxes at half-box steps, each
    weighted by the fraction of it near a cell) resembles some picked box, maximising
    ``sum over regions of weight x max similarity to a pick`` (the cosine similarity of
    the network's deepest features, mean over the box, centred). Boxes already annotated
    (``exclude``) count as picked, so each new suggestion covers what they do not. A
    few ROIs then show the model the range of what it must segment, not five views of
    the same hard clump. Measured with 10 ROIs from held-out Usiigaci training
    images, 3 seeds (docs/decisions.md): AP@0.5 0.249 against 0.301
    for :func:`suggest_across` and 0.235 for random boxes, so the CLI and the plugin keep
    :func:`suggest_across`; this stays for experiments.

    Parameters and returns as :func:`suggest_across`; ``round`` is the pick order.
    """
    images = list(images)
    if not images:
        return []
    per_image = -(-candidates * n // len(images))
    cands, regions, done = [], [], []  # (key, box, score, vector); (weight, vector); vector
    for key, image in images:
        if not isinstance(image, np.ndarray):
            image = read_image(image)
        u, _, (feats, step) = _analyse(model, image, diameter=diameter, features=True)
        boxes_done = list((exclude or {}).get(key, ()))
        done += [_box_vector(feats, step, b) for b in boxes_done]
        for pick in _rank_boxes(u, n=per_image, size=size, exclude=boxes_done):
            cands.append((key, pick["box"], pick["score"], _box_vector(feats, step, pick["box"])))
        h, w = u.shape
        near = (u > 0).astype(np.float32)
        for y0 in _starts(h, size):
            for x0 in _starts(w, size):
                box = (y0, x0, min(y0 + size, h), min(x0 + size, w))
                weight = float(near[box[0]:box[2], box[1]:box[3]].mean())
                if weight > 0:
                    regions.append((weight, _box_vector(feats, step, box)))
    if not regions:  # nothing the model takes for a cell anywhere: uncertainty alone
        cands.sort(key=lambda c: -c[2])
        return [{"key": k, "box": b, "score": sc, "round": i + 1}
                for i, (k, b, sc, _) in enumerate(cands[:n])]
    vectors = np.stack([r[1] for r in regions] + [c[3] for c in cands] + done)
    centre = vectors.mean(axis=0)

    def unit(v):
        v = v - centre
        return v / max(float(np.linalg.norm(v)), 1e-8)

    weights = np.array([r[0] for r in regions])
    region_v = np.stack([unit(r[1]) for r in regions])
    cand_v = np.stack([unit(c[3]) for c in cands])
    sim = np.clip(region_v @ cand_v.T, 0, None)  # (regions, candidates)
    covered = np.zeros(len(regions))
    if done:
        covered = np.clip(region_v @ np.stack([unit(v) for v in done]).T, 0, None).max(axis=1)
    out, left = [], list(range(len(cands)))
    while left and len(out) < n:
        gains = [(weights * np.maximum(sim[:, j] - covered, 0)).sum() for j in left]
        j = left.pop(int(np.argmax(gains)))
        covered = np.maximum(covered, sim[:, j])
        key, box, score, _ = cands[j]
        out.append({"key": key, "box": box, "score": score, "round": len(out) + 1})
    return out


def _starts(length: int, size: int) -> list[int]:
    """Box origins at half-box steps covering ``length`` (the last flush with the end)."""
    if length <= size:
        return [0]
    starts = list(range(0, length - size + 1, max(1, size // 2)))
    return starts if starts[-1] == length - size else starts + [length - size]


def _box_vector(feats: np.ndarray, step: float, box) -> np.ndarray:
    """Mean feature vector over a box (input pixels) of a feature map ``step`` input
    pixels a cell."""
    c, fh, fw = feats.shape
    y0, x0, y1, x1 = box
    fy0, fx0 = min(int(y0 / step), fh - 1), min(int(x0 / step), fw - 1)
    fy1 = max(fy0 + 1, min(fh, int(np.ceil(y1 / step))))
    fx1 = max(fx0 + 1, min(fw, int(np.ceil(x1 / step))))
    return feats[:, fy0:fy1, fx0:fx1].reshape(c, -1).mean(axis=1)


def _overlaps(taken: np.ndarray, sy: int, sx: int) -> np.ndarray:
    """For each top-left corner, whether a sy x sx box there would cover a taken pixel."""
    c = np.cumsum(np.cumsum(np.pad(taken, ((1, 0), (1, 0))).astype(np.int64), 0), 1)
    h, w = taken.shape
    ys, xs = np.arange(h - sy + 1), np.arange(w - sx + 1)
    tot = (c[ys[:, None] + sy, xs[None, :] + sx] - c[ys[:, None], xs[None, :] + sx]
           - c[ys[:, None] + sy, xs[None, :]] + c[ys[:, None], xs[None, :]])
    return tot > 0
