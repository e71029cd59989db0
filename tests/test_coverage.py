"""The check for missed cells: cell-like texture outside the cells counted."""

import logging

import numpy as np
import pandas as pd
import pytest
import tifffile

import tlseg
from tlseg import TlsegError
from tlseg.analysis.coverage import FLAG, textured_outside, uncounted_texture
from tlseg.synthetic import synthetic_field


def keep(labels, ids):
    return np.where(np.isin(labels, ids), labels, 0)


@pytest.mark.parametrize("modality", ["phase", "brightfield", "dic"])
def test_every_cell_counted_leaves_no_texture_and_missing_ones_raise_it(modality):
    field = synthetic_field((256, 256), diameter=30, n_cells=40, modality=modality, seed=3)
    truth = field["labels"]
    ids = np.unique(truth[truth > 0])
    full = uncounted_texture(field["tl"], truth, 30)
    half = uncounted_texture(field["tl"], keep(truth, ids[::2]), 30)
    few = uncounted_texture(field["tl"], keep(truth, ids[:4]), 30)
    assert full < 0.2  # a DIC cell's relief reaches a little past its outline
    # about the share of cells left out: half of them, then nine in ten
    assert 0.3 < half < 0.75 and few > 0.8 and full < half < few


def test_a_monolayer_read_as_a_few_cells_is_flagged():
    field = synthetic_field((256, 256), diameter=24, modality="phase", confluent=True, seed=1)
    truth = field["labels"]
    ids = np.unique(truth[truth > 0])
    assert uncounted_texture(field["tl"], truth, 24) < 0.1
    assert uncounted_texture(field["tl"], keep(truth, ids[::10]), 24) > FLAG


def test_specks_and_halos_are_not_missed_cells():
    """Texture closer than CLEARANCE to a cell (a phase halo) or in patches under a cell's
    area (a speck of debris) does not count."""
    rng = np.random.default_rng(0)
    image = rng.normal(100, 1, (200, 200)).astype(np.float32)
    labels = np.zeros((200, 200), np.int32)
    yy, xx = np.mgrid[:200, :200]
    cell = (yy - 60) ** 2 + (xx - 60) ** 2 < 15**2
    labels[cell] = 1
    image[cell] += rng.normal(0, 20, cell.sum())  # a textured cell ...
    halo = ((yy - 60) ** 2 + (xx - 60) ** 2 < 19**2) & ~cell
    image[halo] += 30  # ... with its bright halo
    image[140:144, 140:144] -= 80  # and a speck of debris far from it
    patches, d = textured_outside(image, labels, 30)
    assert d == 15 and not patches.any()  # measured at WORK_DIAMETER
    assert uncounted_texture(image, labels, 30) == 0


@pytest.mark.parametrize("seed", [0, 1])
def test_a_lattice_of_posts_is_not_missed_cells(seed, monkeypatch):
    """A chip's posts are texture outside the cells; their pattern is subtracted first,
    as before the network."""
    import torch

    from tlseg.analysis import coverage
    from tlseg.training.structures import structure_relief

    field = synthetic_field((384, 384), diameter=30, n_cells=15, seed=seed)
    relief = structure_relief(384, 384, "posts", 30.0, torch.Generator().manual_seed(seed))
    chip = field["tl"] * (1 + relief.numpy())
    assert uncounted_texture(chip, field["labels"], 30) < 0.1
    monkeypatch.setattr(coverage, "remove_pattern", lambda image, diameter: image)
    assert uncounted_texture(chip, field["labels"], 30) > FLAG  # the posts, left in


def test_large_cells_are_measured_on_a_shrunk_image():
    field = synthetic_field((384, 384), diameter=90, n_cells=12, seed=2)
    truth = field["labels"]
    ids = np.unique(truth[truth > 0])
    patches, d = textured_outside(field["tl"], truth, 90)
    assert d == pytest.approx(15) and patches.shape == (64, 64)
    assert uncounted_texture(field["tl"], truth, 90) < 0.1
    assert uncounted_texture(field["tl"], keep(truth, ids[:2]), 90) > FLAG


def test_no_cell_found_gives_none():
    field = synthetic_field((128, 128), diameter=30, seed=1)
    assert uncounted_texture(field["tl"], np.zeros((128, 128), np.int32), 30) is None


@pytest.mark.parametrize("image, labels, diameter, message", [
    (np.zeros((2, 50, 50)), np.zeros((2, 50, 50), int), 30, "2-D image"),
    (np.zeros((50, 50)), np.zeros((40, 50), int), 30, "do not match"),
    (np.zeros((50, 50)), np.zeros((50, 50), float), 30, "must be integers"),
    (np.zeros((50, 50)), np.zeros((50, 50), int), 0, "diameter must be > 0"),
])
def test_bad_input_gets_a_one_line_error(image, labels, diameter, message):
    with pytest.raises(TlsegError, match=message) as err:
        tlseg.uncounted_texture(image, labels, diameter)
    assert "\n" not in str(err.value)


def test_segment_folder_records_it_and_warns_on_a_monolayer(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="tlseg")
    folder = tmp_path / "images"
    folder.mkdir()
    sparse = synthetic_field((192, 192), diameter=30, seed=2)["tl"]
    sheet = synthetic_field((256, 256), diameter=24, modality="brightfield", confluent=True,
                            seed=1)["tl"]
    tifffile.imwrite(folder / "sparse.tif", sparse)
    tifffile.imwrite(folder / "sheet.tif", sheet)
    counts = tlseg.segment_folder(folder, tmp_path / "out", diameter=24).set_index("image")
    on_disk = pd.read_csv(tmp_path / "out" / "counts.csv").set_index("image")
    assert on_disk["uncounted_texture"].to_dict() == pytest.approx(
        counts["uncounted_texture"].to_dict())
    assert counts.loc["sparse.tif", "uncounted_texture"] < FLAG
    # the shipped model reads most of a synthetic monolayer as background (5 of 134 found)
    assert counts.loc["sheet.tif", "uncounted_texture"] > FLAG
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and warned[0].startswith("sheet.tif: ")
    assert "missed cells" in warned[0]


def test_nuclei_model_leaves_it_out():
    field = synthetic_field((128, 128), diameter=16, seed=1)
    done = tlseg.segment_and_measure(tlseg.load_model("nuclei"), field["nuclei"], diameter=16)
    assert "uncounted_texture" not in done.details


def test_plate_tables_and_report_name_the_wells_to_look_at(tmp_path, finished_plate_run):
    out = tmp_path / "run"
    shares = {("A01", 1): 0.02, ("A01", 2): 0.9, ("A02", 1): 0.1, ("A02", 2): None}
    finished_plate_run(out, {s: {"uncounted_texture": v} for s, v in shares.items()})
    result = tlseg.validate_plate(out)
    wells = pd.read_csv(out / "wells.csv").set_index("well")
    assert wells["uncounted_texture"].to_dict() == {"A01": 0.9, "A02": 0.1}  # a well's worst site
    sites = pd.read_csv(out / "sites.csv")
    assert "uncounted_texture" in sites
    html = result["report"].read_text()
    assert "Wells that may hide uncounted cells" in html and "In <b>1</b> of 2 wells" in html
