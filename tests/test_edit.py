import numpy as np
import pytest

from tlseg.teaching import edit
from tlseg.training.targets import UNKNOWN


@pytest.fixture
def lab():
    a = np.zeros((20, 30), np.int32)
    a[2:18, 2:14] = 1
    a[2:18, 16:28] = 4
    return a


def test_operations_return_new_arrays(lab):
    before = lab.copy()
    for out in (
        edit.paint(lab, lab == 0),
        edit.erase(lab, lab > 0),
        edit.delete(lab, 1),
        edit.merge(lab, [1, 4]),
        edit.split_along_line(lab, (0, 8), (19, 8)),
        edit.relabel(lab),
    ):
        assert out is not lab
    np.testing.assert_array_equal(lab, before)


def test_paint_and_erase_amend_one_cell(lab):
    brush = np.zeros_like(lab, bool)
    brush[10, 14:16] = True
    grown = edit.paint(lab, brush, cell=1)
    assert (grown == 1).sum() == (lab == 1).sum() + 2
    new = edit.paint(lab, brush)
    assert new.max() == 5 and (new == 5).sum() == 2
    brush[:, :] = False
    brush[2:18, 12:20] = True
    shrunk = edit.erase(lab, brush, cell=1)  # cell 4 under the brush is untouched
    assert (shrunk == 4).sum() == (lab == 4).sum() and (shrunk == 1).sum() == 16 * 10


def test_background_unknown_delete_merge(lab):
    m = np.zeros_like(lab, bool)
    m[:, :5] = True
    assert (edit.paint_background(lab, m)[:, :5] == 0).all()
    assert (edit.mark_unknown(lab, m)[:, :5] == UNKNOWN).all()
    assert set(np.unique(edit.delete(lab, [4]))) == {0, 1}
    assert set(np.unique(edit.merge(lab, [4, 1]))) == {0, 1}


def test_split_along_line_and_at_seeds(lab):
    cut = edit.split_along_line(lab, (0, 8), (19, 8))
    assert len(np.unique(cut)) == 4  # bg, two halves of 1, untouched 4
    assert (cut > 0).sum() == (lab > 0).sum()  # the cut line leaves no gap
    assert (cut == 4).sum() == (lab == 4).sum()
    seeds = edit.split_at_seeds(lab, 4, [(5, 22), (15, 22)])
    sizes = sorted(np.bincount(seeds[seeds > 0])[[1, 4, 5]].tolist())
    assert sizes[0] > 60 and sizes[1] > 60
    with pytest.raises(ValueError, match="two seed points"):
        edit.split_at_seeds(lab, 4, [(5, 22)])


def test_relabel_keeps_unknown(lab):
    lab[0, 0] = UNKNOWN
    r = edit.relabel(lab)
    assert set(np.unique(r)) == {UNKNOWN, 0, 1, 2} and r[0, 0] == UNKNOWN


def test_bad_input(lab):
    with pytest.raises(ValueError, match="2-D integer"):
        edit.paint(lab.astype(float), lab > 0)
    with pytest.raises(ValueError, match="differs"):
        edit.paint(lab, np.zeros((3, 3), bool))
