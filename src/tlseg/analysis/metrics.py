"""Scoring instance segmentations against ground truth.

Average precision as in the StarDist and Cellpose papers: at an IoU threshold t, predicted
and true cells are matched one-to-one so as to maximise the number of matches with
IoU >= t (Hungarian assignment, scipy ``linear_sum_assignment``), and
AP = TP / (TP + FP + FN).
"""

from __future__ import annotations

import logging

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix

from ..errors import TlsegError

log = logging.getLogger(__name__)

IOU_THRESHOLDS = tuple(np.round(np.arange(0.5, 0.96, 0.05), 2))


def overlap_counts(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Pixels shared by true id i and predicted id j, for all ids (row and column 0 are
    the background)."""
    if true.shape != pred.shape:
        raise ValueError(f"shapes differ: true {true.shape} vs pred {pred.shape}")
    t = true.ravel().astype(np.int64)
    p = pred.ravel().astype(np.int64)
    nt, np_ = int(t.max(initial=0)) + 1, int(p.max(initial=0)) + 1
    return coo_matrix((np.ones_like(t), (t, p)), shape=(nt, np_)).toarray()


def iou_matrix(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU of every true cell (rows, ids 1..) with every predicted cell (columns, ids 1..)."""
    inter = overlap_counts(true, pred)
    area_t = inter.sum(1, keepdims=True)
    area_p = inter.sum(0, keepdims=True)
    union = area_t + area_p - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return iou[1:, 1:]


def _present(labels: np.ndarray) -> np.ndarray:
    return np.bincount(labels.ravel().astype(np.int64))[1:] > 0


def _assign(iou: np.ndarray, t: float) -> tuple[np.ndarray, np.ndarray]:
    """Rows and columns of the one-to-one pairs with IoU >= t, as many as possible
    (ties broken by IoU)."""
    if 0 in iou.shape:
        return np.zeros(0, int), np.zeros(0, int)
    score = (iou >= t) + 1e-3 * iou * (iou >= t)
    r, c = linear_sum_assignment(score, maximize=True)
    ok = iou[r, c] >= t
    return r[ok], c[ok]


def matched_pairs(true: np.ndarray, pred: np.ndarray, threshold: float = 0.5
                  ) -> list[tuple[int, int]]:
    """The (true id, predicted id) pairs that :func:`match_counts` counts as true
    positives at IoU ``threshold``.

    Examples
    --------
    >>> t = np.zeros((8, 8), int); t[:4] = 3; t[4:] = 5
    >>> p = np.zeros((8, 8), int); p[:4] = 1; p[5:] = 2
    >>> matched_pairs(t, p)
    [(3, 1), (5, 2)]
    """
    iou = iou_matrix(true, pred)
    t_ids = np.flatnonzero(_present(true)) + 1
    p_ids = np.flatnonzero(_present(pred)) + 1
    r, c = _assign(iou[t_ids - 1][:, p_ids - 1] if iou.size else iou, threshold)
    return [(int(t_ids[i]), int(p_ids[j])) for i, j in zip(r, c)]


def ignore_unknown(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``true`` with its unknown pixels (negative, e.g. ignored annotation fragments) set
    to background, and ``pred`` without the cells lying mostly on them, which count as
    neither right nor wrong.

    Examples
    --------
    >>> t = np.zeros((4, 6), int); t[:, :2] = 1; t[:2, 4:] = -1
    >>> p = np.zeros((4, 6), int); p[:, :2] = 1; p[:2, 4:] = 2; p[3, 3:] = 3
    >>> t2, p2 = ignore_unknown(t, p)
    >>> int(t2.min()), np.unique(p2).tolist()
    (0, [0, 1, 3])
    """
    unknown = true < 0
    if not unknown.any():
        return true, pred
    pred = np.asarray(pred)
    p = np.where(pred > 0, pred, 0).ravel().astype(np.int64)
    on_unknown = np.bincount(p, weights=unknown.ravel(), minlength=p.max(initial=0) + 1)
    area = np.bincount(p, minlength=on_unknown.size)
    drop = np.flatnonzero(on_unknown > 0.5 * np.maximum(area, 1))
    drop = drop[drop > 0]
    return np.where(unknown, 0, true), np.where(np.isin(pred, drop), 0, pred)


def match_counts(true: np.ndarray, pred: np.ndarray, thresholds=IOU_THRESHOLDS) -> dict:
    """TP, FP, FN per IoU threshold plus the cell counts, for one image.

    Label ids need not be consecutive; absent ids are ignored. Negative ``true`` pixels
    are unknown (:func:`ignore_unknown`).
    """
    true, pred = ignore_unknown(np.asarray(true), pred)
    iou = iou_matrix(true, pred)
    iou = iou[_present(true)][:, _present(pred)]  # absent ids are no cells
    n_true, n_pred = iou.shape
    tp = np.array([len(_assign(iou, t)[0]) for t in thresholds])
    return {
        "thresholds": [float(t) for t in thresholds],
        "tp": tp.tolist(),
        "fp": (n_pred - tp).tolist(),
        "fn": (n_true - tp).tolist(),
        "n_true": n_true,
        "n_pred": n_pred,
    }


def summarize(counts: dict | list[dict]) -> dict:
    """AP@0.5, AP@0.75, mean AP over 0.5:0.05:0.95, precision/recall/F1 at 0.5.

    Given a list of per-image counts, they are pooled (summed) first: the dataset AP.
    """
    if isinstance(counts, dict):
        counts = [counts]
    thr = np.array(counts[0]["thresholds"])
    tp = np.sum([c["tp"] for c in counts], axis=0).astype(float)
    fp = np.sum([c["fp"] for c in counts], axis=0).astype(float)
    fn = np.sum([c["fn"] for c in counts], axis=0).astype(float)
    denom = tp + fp + fn
    ap = np.where(denom > 0, tp / np.maximum(denom, 1), 1.0)
    i50 = int(np.argmin(np.abs(thr - 0.5)))
    i75 = int(np.argmin(np.abs(thr - 0.75)))
    prec = tp[i50] / max(tp[i50] + fp[i50], 1)
    rec = tp[i50] / max(tp[i50] + fn[i50], 1)
    f1 = 2 * prec * rec / max(prec + rec, 1e-12)
    return {
        "ap50": float(ap[i50]),
        "ap75": float(ap[i75]),
        "map": float(ap.mean()),
        "precision": float(prec),
        "recall": float(rec),
        "f1": float(f1),
        "n_pred": int(sum(c["n_pred"] for c in counts)),
        "n_true": int(sum(c["n_true"] for c in counts)),
    }


def average_precision(true: np.ndarray, pred: np.ndarray) -> dict:
    """Scores of one prediction against its ground truth (see :func:`summarize`).

    Examples
    --------
    >>> gt = np.zeros((10, 10), int); gt[1:5, 1:5] = 1; gt[6:9, 6:9] = 2
    >>> average_precision(gt, gt)["ap50"]
    1.0
    >>> average_precision(gt, np.zeros_like(gt))["ap50"]
    0.0
    """
    return summarize(match_counts(true, pred))


#: the keys of :func:`evaluate` and the :func:`summarize` keys they come from
_EVALUATE_KEYS = {"AP50": "ap50", "AP75": "ap75", "mAP": "map", "precision": "precision",
                  "recall": "recall", "f1": "f1", "n_true": "n_true", "n_pred": "n_pred"}


def evaluate(pred_labels, true_labels) -> dict:
    """Score predicted instance labels against ground truth, as ``tlseg evaluate`` does.

    Cells are matched one-to-one by IoU (Hungarian matching, as in the StarDist and
    Cellpose papers); AP = TP / (TP + FP + FN) at an IoU threshold.

    Parameters
    ----------
    pred_labels, true_labels : ndarray (H, W) of int, or lists of them
        Instance labels, 0 = background; negative ground-truth pixels are unknown. Given
        lists (one array per image), the matches are pooled over the images first: the
        dataset score.

    Returns
    -------
    dict
        ``AP50``, ``AP75`` (AP at IoU 0.5 and 0.75), ``mAP`` (mean AP over IoU
        0.5:0.05:0.95), ``precision``, ``recall``, ``f1`` (at IoU 0.5), ``n_true`` and
        ``n_pred`` (cells in the ground truth and in the prediction).

    Examples
    --------
    >>> import tlseg
    >>> gt = np.zeros((10, 10), int); gt[1:5, 1:5] = 1; gt[6:9, 6:9] = 2
    >>> pred = gt.copy(); pred[pred == 2] = 0
    >>> s = tlseg.evaluate(pred, gt)
    >>> s["AP50"], s["precision"], s["recall"], s["n_true"], s["n_pred"]
    (0.5, 1.0, 0.5, 2, 1)
    """
    if isinstance(pred_labels, np.ndarray) != isinstance(true_labels, np.ndarray):
        raise TlsegError("evaluate: give two label images, or two lists of them")
    preds = [pred_labels] if isinstance(pred_labels, np.ndarray) else list(pred_labels)
    trues = [true_labels] if isinstance(true_labels, np.ndarray) else list(true_labels)
    if len(preds) != len(trues) or not preds:
        raise TlsegError(f"evaluate: {len(preds)} predictions for {len(trues)} ground truths")
    counts = []
    for i, (p, t) in enumerate(zip(preds, trues)):
        p, t = np.asarray(p), np.asarray(t)
        if p.shape != t.shape:
            raise TlsegError(f"evaluate: image {i}: prediction {p.shape} and ground truth "
                             f"{t.shape} differ in shape; masks must match pixel for pixel")
        counts.append(match_counts(t, p))
    s = summarize(counts)
    return {k: s[v] for k, v in _EVALUATE_KEYS.items()}


def evaluate_folders(pred_dir, gt_dir, *, json_path=None) -> dict:
    """Score a folder of ``<stem>_masks.tif`` (as ``tlseg segment`` writes them) against
    ``GT_DIR/<stem>.tif`` (or ``.tiff``, ``.png``) ground-truth labels: ``tlseg evaluate``.

    Returns
    -------
    dict
        ``images``: one row per matched image (``image`` and the :func:`summarize` keys
        ``ap50``, ``ap75``, ``map``, ``precision``, ``recall``, ``f1``, ``n_pred``,
        ``n_true``); ``overall``: the pooled scores; ``unmatched``: predicted masks
        without a ground truth (skipped). With ``json_path`` the per-image rows and the
        pooled scores are also written there as JSON (atomically).
    """
    from pathlib import Path

    from ..io import read_labels

    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    for d in (pred_dir, gt_dir):
        if not d.is_dir():
            raise TlsegError(f"{d}: no such directory")
    preds = sorted(pred_dir.glob("*_masks.tif"))
    if not preds:
        raise TlsegError(f"{pred_dir}: no *_masks.tif files (run `tlseg segment` first)")
    rows, counts, unmatched = [], [], []
    for p in preds:
        stem = p.name[: -len("_masks.tif")]
        gt = next((gt_dir / (stem + s) for s in (".tif", ".tiff", ".png")
                   if (gt_dir / (stem + s)).is_file()), None)
        if gt is None:
            log.warning("%s: no ground truth %s.tif in %s, skipped", p.name, stem, gt_dir)
            unmatched.append(p.name)
            continue
        true = read_labels(gt)
        pred = read_labels(p, shape=true.shape)
        c = match_counts(true, pred)
        counts.append(c)
        rows.append({"image": stem, **summarize(c)})
    if not counts:
        raise TlsegError(f"no predicted masks in {pred_dir} match a ground truth in {gt_dir}")
    overall = summarize(counts)
    if json_path is not None:
        import json

        from ..io import atomic_path

        with atomic_path(json_path) as tmp:
            tmp.write_text(json.dumps({"images": rows, "overall": overall}, indent=2))
    return {"images": rows, "overall": overall, "unmatched": unmatched}
