import numpy as np
import pytest

from tlseg.analysis.metrics import (
    average_precision,
    match_counts,
    matched_pairs,
    summarize,
)


def _two_cells():
    gt = np.zeros((20, 20), int)
    gt[2:8, 2:8] = 1
    gt[10:18, 10:18] = 5  # ids need not be consecutive
    return gt


def test_perfect_and_empty():
    gt = _two_cells()
    s = average_precision(gt, gt)
    assert s["ap50"] == s["map"] == 1.0 and s["n_pred"] == 2
    s = average_precision(gt, np.zeros_like(gt))
    assert s["ap50"] == 0.0 and s["recall"] == 0.0
    # nothing found: the two cells are missed, not the five ids up to the highest
    c = match_counts(gt, np.zeros_like(gt))
    assert c["n_true"] == 2 and c["fn"][0] == 2 and c["n_pred"] == 0
    c = match_counts(np.zeros_like(gt), gt)
    assert c["n_true"] == 0 and c["fp"][0] == 2


def test_partial_overlap_counts_per_threshold():
    gt = _two_cells()
    pred = np.zeros_like(gt)
    pred[2:8, 2:7] = 3  # IoU 30/36 = 0.83 with cell 1
    pred[0:2, 0:2] = 4  # a false positive
    c = match_counts(gt, pred)
    thr = np.array(c["thresholds"])
    assert c["tp"][0] == 1 and c["fp"][0] == 1 and c["fn"][0] == 1
    assert all(tp == (1 if t <= 0.83 else 0) for tp, t in zip(c["tp"], thr))
    assert summarize(c)["ap50"] == pytest.approx(1 / 3)
    # the pairs behind the counts, by id: cell 1 found as 3; 5 missed; 4 unmatched
    assert matched_pairs(gt, pred, 0.5) == [(1, 3)]
    assert matched_pairs(gt, pred, 0.9) == []


def test_pooling_sums_counts():
    gt = _two_cells()
    half = gt.copy()
    half[half == 5] = 0
    pooled = summarize([match_counts(gt, gt), match_counts(gt, half)])
    assert pooled["ap50"] == pytest.approx(3 / 4)


def test_unknown_pixels_score_nothing():
    # a speck marked unknown (an ignored annotation fragment): a prediction on it is
    # neither a false positive nor a match, and the speck is not a missed cell
    gt = _two_cells()
    gt[15:17, 2:4] = -1
    pred = gt.copy()
    pred[15:17, 2:4] = 9
    c = match_counts(gt, pred)
    assert (c["n_true"], c["n_pred"], c["fp"][0], c["fn"][0]) == (2, 2, 0, 0)
    # a cell that only touches unknown pixels still counts
    pred[14:17, 2:6] = 9
    assert match_counts(gt, pred)["fp"][0] == 1
