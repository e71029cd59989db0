"""The napari plate browser, driven offscreen on a hand-made plate results folder."""

import json
import os
import shutil

import numpy as np
import pandas as pd
import pytest
import tifffile

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
napari = pytest.importorskip("napari")

from tlseg.napari.plate_browser import PlateBrowser


@pytest.fixture
def results(tmp_path):
    """wells.csv with two wells (A01: 2 sites, B02: 1 site), site JSONs, images and masks."""
    out, images = tmp_path / "out", tmp_path / "plate"
    (out / "sites").mkdir(parents=True)
    (out / "masks").mkdir()
    images.mkdir()
    rng = np.random.default_rng(0)
    data = {}
    for well, site, n in (("A01", 1, 3), ("A01", 2, 2), ("B02", 1, 4)):
        key = f"{well}_s{site}"
        tl = rng.random((40, 48)).astype(np.float32)
        cells = np.zeros((40, 48), np.uint16)
        nuclei = np.zeros((40, 48), np.uint16)
        for i in range(n):
            cells[2 + 9 * i: 9 + 9 * i, 4:20] = i + 1
            nuclei[4 + 9 * i: 7 + 9 * i, 8:12] = i + 1
        paths = {"w1": str(images / f"{key}_w1.tif"), "w2": str(images / f"{key}_w2.tif")}
        tifffile.imwrite(paths["w1"], tl)
        tifffile.imwrite(paths["w2"], np.zeros((40, 48), np.uint16))
        tifffile.imwrite(out / "masks" / f"{key}_cells.tif", cells)
        tifffile.imwrite(out / "masks" / f"{key}_nuclei.tif", nuclei)
        (out / "sites" / f"{key}.json").write_text(json.dumps(
            {"well": well, "site": site, "key": key, "paths": paths, "shape": [40, 48],
             "n_cells": n, "n_nuclei": n, "status": "ok"}))
        data[key] = (tl, cells, nuclei)
    pd.DataFrame({"well": ["A01", "B02"], "n_sites": [2, 1], "n_cells": [5, 4],
                  "n_nuclei": [5, 4], "uncounted_texture": [0.1, 0.9], "cell_line": ["HeLa", "U2OS"],
                  "seeding_density": [1250, 2500]}).to_csv(out / "wells.csv", index=False)
    (out / "run.json").write_text(json.dumps({"config": {"tl_channel": "w1",
                                                          "nuclei_channel": "w2"}}))
    return out, data


@pytest.fixture
def browser(qtbot):
    from napari.components import ViewerModel

    viewer = ViewerModel()
    w = PlateBrowser(viewer)
    qtbot.addWidget(w.native)
    w.native.show()
    return w


def test_manifest_lists_the_plate_browser():
    from npe2 import PluginManifest

    pm = PluginManifest.from_distribution("tlseg")
    assert "tlseg.plate_browser" in {c.id for c in pm.contributions.commands}
    assert "Plate browser" in {w.display_name for w in pm.contributions.widgets}


@pytest.mark.slow
def test_browse_wells_and_sites(browser, results):
    out, data = results
    viewer = browser.viewer
    browser.folder.value = out
    assert list(browser.well.choices) == ["A01", "B02"]
    # the grid is a plate (rows A.., columns 1..) with counts in the wells that have images
    grid = browser.grid
    assert grid.rowCount() >= 2 and grid.columnCount() >= 2
    assert grid.verticalHeaderItem(1).text() == "B" and grid.horizontalHeaderItem(1).text() == "2"
    assert grid.item(0, 0).text() == "5" and grid.item(1, 1).text() == "4!"
    assert "look for missed cells" in grid.item(1, 1).toolTip()  # B02 may hide cells
    assert grid.item(0, 1).text() == ""  # A02: no images (grey)
    # opening selects the first well: its first site is shown
    assert [layer.name for layer in viewer.layers] == ["transmitted light", "cells", "nuclei"]
    tl, cells, nuclei = data["A01_s1"]
    assert np.allclose(viewer.layers["transmitted light"].data, tl)
    assert np.array_equal(viewer.layers["cells"].data, cells)
    assert np.array_equal(viewer.layers["nuclei"].data, nuclei)
    assert viewer.layers["cells"].contour == 1 and viewer.layers["nuclei"].contour == 1
    assert "HeLa" in browser.info.value and "n_cells" in browser.info.value
    # click B02 in the grid: layers are updated in place, the info shows B02's row
    grid.cellClicked.emit(1, 1)
    tl, cells, nuclei = data["B02_s1"]
    assert browser.well.value == "B02" and list(browser.site.choices) == [1]
    assert len(viewer.layers) == 3
    assert np.allclose(viewer.layers["transmitted light"].data, tl)
    assert np.array_equal(viewer.layers["cells"].data, cells)
    assert np.array_equal(viewer.layers["nuclei"].data, nuclei)
    assert "U2OS" in browser.info.value and "2500" in browser.info.value
    assert ">4<" in browser.info.value  # n_cells and n_nuclei of B02
    assert "4 cells, 4 nuclei" in browser.status.value
    # napari resets dock widgets' choices when layers change: the wells must survive it
    browser.reset_choices()
    assert list(browser.well.choices) == ["A01", "B02"] and browser.well.value == "B02"
    # choose A01 site 2 with the combo boxes
    browser.well.value = "A01"
    browser.site.value = 2
    assert np.array_equal(viewer.layers["cells"].data, data["A01_s2"][1])
    assert len(np.unique(viewer.layers["cells"].data)) - 1 == 2
    # a grey well says it is not in the run; a non-results folder is an error, not a crash
    grid.cellClicked.emit(3, 5)
    assert "not in this plate run" in browser.status.value
    browser.folder.value = out / "sites"
    assert browser.status.value.startswith("error:")


def test_calibration_summary_line():
    from tlseg.napari.plate_calibrate import summary

    assert summary({"wells": ["B03"]}) == "calibrated on B03; no well held aside to check it on"


def test_calibration_needs_a_nuclear_channel(browser, results):
    out, _ = results
    (out / "run.json").write_text(json.dumps({"plate": str(out), "config": {"tl_channel": "w1"}}))
    browser.folder.value = out
    panel = browser.calibration
    assert not panel.button.enabled and "nuclear channel" in panel.result.value
    assert panel.calibrate() is None and panel.result.value.startswith("error:")


@pytest.mark.slow
def test_calibrate_the_well_shown_from_the_browser(browser, tmp_path, qtbot):
    import tlseg

    made = tlseg.make_demo_plate(tmp_path / "p", replicates=2, sites=1, size=320, seed=4)
    out = tmp_path / "results"
    (out / "sites").mkdir(parents=True)
    wells = sorted({f.name.split("_")[1] for f in made["plate"].glob("*_w1.tif")})
    for well in wells:
        paths = {c: str(next(made["plate"].glob(f"*_{well}_s1_{c}.tif"))) for c in ("w1", "w2")}
        (out / "sites" / f"{well}_s1.json").write_text(json.dumps(
            {"well": well, "site": 1, "key": f"{well}_s1", "paths": paths, "status": "ok"}))
    pd.DataFrame({"well": wells, "n_cells": range(len(wells))}).to_csv(out / "wells.csv",
                                                                        index=False)
    (out / "run.json").write_text(json.dumps({"plate": str(made["plate"]), "layout": "auto",
                                              "config": {"tl_channel": "w1",
                                                         "nuclei_channel": "w2",
                                                         "diameter": 28,
                                                         "nuclei_diameter": 14}}))
    browser.folder.value = out
    panel = browser.calibration
    assert panel.button.enabled and panel.out_dir.value.endswith("results-calibrated")
    browser.select("D01")
    assert panel.wells.native.placeholderText().startswith("D01")
    assert panel.settings()["wells"] == ["D01"]  # the well shown, by default
    shutil.copy(made["plate_map"], out / "plate_map.csv")  # as a run with --plate-map keeps it
    panel.wells.value = "seeding_density=5000, d01"  # a plate-map condition, and a well
    assert panel.settings()["plate_map"] == str(out / "plate_map.csv")
    panel.steps.value = 4
    worker = panel.calibrate()
    qtbot.waitUntil(lambda: panel.button.enabled, timeout=300_000)
    assert worker is not None and not panel.result.value.startswith("error"), panel.result.value
    card = tlseg.load_model(panel.out_dir.value).card["calibration"]
    assert card["wells"] == ["C01", "C02", "D01"] and "D02" in card["held_aside_wells"]
    assert "held-aside wells" in panel.result.value and "--model" in panel.result.value
    assert panel.progress.value == panel.progress.max == 4
    # a second click refuses to overwrite the model it wrote
    panel.calibrate()
    qtbot.waitUntil(lambda: panel.button.enabled, timeout=60_000)
    assert "holds a trained model" in panel.result.value
