"""The napari dock widget, driven offscreen: segment, correct, add ROIs, teach, cancel."""

import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
napari = pytest.importorskip("napari")

from tlseg.napari.widget import TlsegWidget  # noqa: E402
from tlseg.synthetic import synthetic_field  # noqa: E402
from tlseg.teaching.project import Project  # noqa: E402

WAIT = 120_000  # ms; generous, CI machines are shared


@pytest.fixture
def widget(qtbot):
    # a headless ViewerModel: no OpenGL canvas is needed (CI has no GPU or display); the
    # dock widget itself is a real Qt widget on the offscreen platform
    from napari.components import ViewerModel

    viewer = ViewerModel()
    f = synthetic_field((256, 256), diameter=30, modality="brightfield", seed=2)
    viewer.add_image(f["tl"], name="field")
    w = TlsegWidget(viewer)
    qtbot.addWidget(w.native)
    w.native.show()
    w.diameter.value = 30
    w.segment()
    qtbot.waitUntil(lambda: "field cells" in viewer.layers, timeout=WAIT)
    return w


def _centroid(lab, cell):
    yy, xx = np.nonzero(lab == cell)
    return yy.mean(), xx.mean()


def test_manifest_is_valid():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("tlseg")
    assert {c.id for c in pm.contributions.commands} >= {"tlseg.widget", "tlseg.sample_phase"}


@pytest.mark.slow
def test_a_monolayer_read_as_a_few_cells_is_pointed_out(widget, qtbot):
    viewer = widget.viewer
    assert "missed" not in widget.status.value
    sheet = synthetic_field((256, 256), diameter=24, modality="brightfield", confluent=True,
                            seed=1)
    widget.image.value = viewer.add_image(sheet["tl"], name="sheet")
    widget.diameter.value = 24
    widget.segment()
    qtbot.waitUntil(lambda: "sheet cells" in viewer.layers, timeout=WAIT)
    assert "outside them: look for missed cells in the 'sheet uncounted texture' layer" in (
        widget.status.value)
    where = np.asarray(viewer.layers["sheet uncounted texture"].data) > 0
    cells = np.asarray(viewer.layers["sheet cells"].data) > 0
    assert where.shape == cells.shape and where.any() and not (where & cells).any()
    assert viewer.layers.selection.active.name == "sheet cells"  # still the one to edit
    assert "field uncounted texture" not in viewer.layers  # the sparse field is not flagged


@pytest.mark.slow
def test_a_chip_is_named(widget, qtbot):
    import torch

    from tlseg.training.structures import structure_relief

    f = synthetic_field((384, 384), diameter=30, n_cells=8, seed=5)
    relief = structure_relief(384, 384, "posts", 30.0, torch.Generator().manual_seed(5))
    widget.image.value = widget.viewer.add_image(f["tl"] * (1 + relief.numpy()), name="chip")
    widget.segment()
    qtbot.waitUntil(lambda: "chip cells" in widget.viewer.layers, timeout=WAIT)
    assert "repeating lattice (a chip's posts or traps) was taken out" in widget.status.value


@pytest.mark.slow
def test_segment_and_edit_with_undo(widget):
    viewer = widget.viewer
    layer = viewer.layers["field cells"]
    lab0 = np.asarray(layer.data).copy()
    n0 = len(np.unique(lab0)) - 1
    assert n0 > 5 and "cells" in widget.status.value
    ids = [i for i in np.unique(lab0) if i > 0][:2]
    viewer.add_points([_centroid(lab0, i) for i in ids], name="picks")
    widget._edit("merge")
    assert len(np.unique(layer.data)) - 1 == n0 - 1
    widget.undo()
    assert np.array_equal(layer.data, lab0)
    viewer.layers["picks"].data = [_centroid(lab0, ids[0])]
    widget._edit("delete")
    assert ids[0] not in np.unique(layer.data)
    widget.undo()
    # split the biggest cell along a line through its centre, then at two seeds
    big = max(ids, key=lambda i: (lab0 == i).sum())
    yy, xx = np.nonzero(lab0 == big)
    cy, cx = yy.mean(), xx.mean()
    viewer.add_shapes([np.array([[yy.min() - 2, cx], [yy.max() + 2, cx]])], shape_type="line",
                      name="cut")
    widget._edit("split_line")
    assert len(np.unique(layer.data)) - 1 == n0 + 1
    widget.undo()
    viewer.layers["picks"].data = [(cy, xx.min() + 2), (cy, xx.max() - 2)]
    widget._edit("split_seeds")
    assert len(np.unique(layer.data)) - 1 == n0 + 1


@pytest.mark.slow
def test_roi_training_in_a_worker_and_cancel(widget, qtbot, tmp_path):
    viewer = widget.viewer
    widget.project_dir.value = tmp_path / "project"
    assert "draw a ROI box first" in (widget.add_roi() or widget.status.value)
    widget.draw_roi()
    viewer.layers["ROI"].add_rectangles([np.array([[10, 20], [150, 200]])])
    unknown = np.zeros((256, 256), np.int32)
    unknown[10:20, 20:40] = 1
    viewer.add_labels(unknown, name="unknown")
    roi = widget.add_roi()
    assert roi is not None and roi.box == (10, 20, 150, 200)
    assert (roi.labels[:10, :20] == -1).all() and (roi.labels >= -1).all()
    project = Project.open(tmp_path / "project")
    assert len(project.rois()) == 1
    # fine-tune a few steps in the worker; the progress bar moves while the GUI runs
    widget.steps = 4
    widget.out_dir.value = tmp_path / "tuned"
    widget.train()
    qtbot.waitUntil(lambda: "trained" in widget.status.value or "error" in widget.status.value,
                    timeout=WAIT)
    assert "trained" in widget.status.value, widget.status.value
    assert widget.model.value == "tuned" and (tmp_path / "tuned" / "weights.pt").is_file()
    # cancel a long run: no model is written, the tuned one stays current
    widget.steps = 100_000
    widget.out_dir.value = tmp_path / "long"
    widget.train()
    qtbot.waitUntil(lambda: widget.progress.value >= 1, timeout=WAIT)
    widget.cancel()
    qtbot.waitUntil(lambda: "cancelled" in widget.status.value or "error" in widget.status.value,
                    timeout=WAIT)
    assert "cancelled" in widget.status.value, widget.status.value
    assert not (tmp_path / "long" / "weights.pt").exists()
    assert widget.model.value == "tuned" and widget.train_btn.enabled


@pytest.mark.slow
def test_suggested_rois_layer(widget, qtbot):
    widget.n_suggest.value = 2
    widget.suggest()
    qtbot.waitUntil(lambda: "suggested" in widget.status.value or "error" in widget.status.value,
                    timeout=WAIT)
    assert len(widget.viewer.layers["suggested ROIs"].data) == 2
