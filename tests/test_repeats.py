"""Objects on a repeating pattern (chip posts) are found and the pattern is removed; cells,
alone or crowded, are not touched."""

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
from scipy import ndimage as ndi

import tlseg
from tlseg.analysis.metrics import match_counts
from tlseg.analysis.pipeline import segment_folder
from tlseg.config import InstanceConfig
from tlseg.inference.repeats import (
    drop_repeated,
    lattice_vectors,
    remove_pattern,
    repeated_objects,
)
from tlseg.synthetic import synthetic_field
from tlseg.training.structures import structure_relief


def _chip(seed: int, modality: str = "phase"):
    """A synthetic field of a few cells over a lattice of posts, at the canonical scale
    (cells 30 px), labelled: the cells, then each post that no cell touches."""
    f = synthetic_field((384, 384), diameter=30, n_cells=8, modality=modality, seed=seed)
    relief = structure_relief(384, 384, "posts", 30.0, torch.Generator().manual_seed(seed))
    relief = relief.numpy()
    image = f["tl"].astype(np.float32) * (1 + relief)
    cells = f["labels"]
    posts, _ = ndi.label(ndi.binary_fill_holes(relief < 0.5 * relief.min()))
    near_cell = np.unique(posts[ndi.binary_dilation(cells > 0, iterations=3)])
    posts[np.isin(posts, near_cell)] = 0
    labels = cells.copy()
    big = [p for p in np.unique(posts[posts > 0]) if (posts == p).sum() > 20]
    for i, p in enumerate(big):
        labels[posts == p] = cells.max() + i + 1
    return image, labels, int(cells.max())


def test_posts_are_found_and_cells_on_the_chip_are_kept():
    lattices = 0
    for seed in range(1, 7):
        image, labels, n_cells = _chip(seed)
        found = repeated_objects(labels, image, 30)
        assert not found[:n_cells].any()  # every cell kept, on every chip
        if len(lattice_vectors(image, 30)[0]) == 0:
            continue  # posts faint against the cells: no lattice, nothing dropped
        lattices += 1
        posts = found[n_cells:]
        assert posts.size >= 4 and posts.mean() >= 0.8
        kept = drop_repeated(labels, image, 30, 0.8)
        assert kept.max() == len(found) - found.sum()
        assert np.array_equal(drop_repeated(labels, image, 30, 0.0), labels)  # 0 = off
    assert lattices >= 4


def test_a_noisy_chip_keeps_its_lattice():
    # pixel noise as strong as the field itself lowers every correlation by its share of
    # the variance: the posts' lattice peak fell under 0.5 and the chip went unseen
    lattices = 0
    for seed in range(1, 7):
        image, labels, n_cells = _chip(seed)
        noise = np.random.default_rng(seed).normal(0, image.std(), image.shape)
        noisy = (image + noise).astype(np.float32)
        found = repeated_objects(labels, noisy, 30)
        assert not found[:n_cells].any()
        if len(lattice_vectors(noisy, 30)[0]):
            lattices += 1
            assert found[n_cells:].mean() >= 0.8
    assert lattices >= 4


@pytest.mark.parametrize("modality", ["phase", "brightfield", "dic"])
@pytest.mark.parametrize("confluent", [False, True])
def test_fields_of_cells_alone_have_no_lattice(modality, confluent):
    f = synthetic_field((384, 384), diameter=30, modality=modality, confluent=confluent,
                        seed=4)
    assert not repeated_objects(f["labels"], f["tl"], 30).any()


def test_the_model_drops_posts_only_when_its_setting_asks(tl_cells_without):
    image, _, _ = _chip(5)
    model, off = tl_cells_without(repeat_similarity=0.0, remove_pattern=False)
    assert model.config.instances.repeat_similarity == 0.8
    with_filter = model.segment(image, diameter=30)
    assert with_filter.max() < off.segment(image, diameter=30).max()
    with pytest.raises(ValueError, match="repeat_similarity"):
        InstanceConfig(repeat_similarity=1.0)


def test_what_the_field_holds_is_reported(tl_cells_without, tmp_path, caplog):
    # a chip's lattice is named, a field of cells has none, and a model without the
    # structure steps does not look
    image, _, _ = _chip(5)
    model, off = tl_cells_without(repeat_similarity=0.0, remove_pattern=False)
    details = model.predict_instances(image, diameter=30)[1]
    assert details["pattern"] == "lattice"
    cells = synthetic_field((384, 384), diameter=30, n_cells=8, seed=5)["tl"]
    assert model.predict_instances(cells, diameter=30)[1]["pattern"] == "none"
    assert "pattern" not in off.predict_instances(image, diameter=30)[1]
    tifffile.imwrite(tmp_path / "chip.tif", image)
    tifffile.imwrite(tmp_path / "cells.tif", cells)
    with caplog.at_level("INFO", logger="tlseg"):
        counts = segment_folder([tmp_path / "chip.tif", tmp_path / "cells.tif"],
                                tmp_path / "out", model=model, diameter=30)
    assert counts.set_index("image")["pattern"].to_dict() == {"chip.tif": "lattice",
                                                              "cells.tif": "none"}
    chip_line = [r.getMessage() for r in caplog.records if r.getMessage().startswith("chip")]
    assert "repeating lattice" in chip_line[0]


def test_pattern_removal_takes_the_posts_and_leaves_the_cells(tl_cells_without):
    model, off = tl_cells_without(remove_pattern=False)
    assert model.config.instances.remove_pattern
    change = np.zeros(2)  # mean |change| on the cells, on the posts
    found = np.zeros(2, int)  # cells found (IoU 0.5) with the removal, without it
    n_true = 0
    for seed in range(1, 7):
        image, labels, n_cells = _chip(seed)
        if len(lattice_vectors(image, 30)[0]) == 0:
            assert np.array_equal(remove_pattern(image, 30), image)  # no lattice: as it was
            continue
        moved = np.abs(remove_pattern(image, 30) - image)
        change += moved[(labels > 0) & (labels <= n_cells)].mean(), moved[labels > n_cells].mean()
        cells = np.where(labels <= n_cells, labels, 0)
        found += [match_counts(cells, m.segment(image, diameter=30))["tp"][0]
                  for m in (model, off)]
        n_true += n_cells
    assert change[1] > 4 * change[0]  # the posts go, the cells stay
    assert found[0] > found[1] and found[0] >= 0.85 * n_true


def test_the_plate_report_lists_the_sites_with_a_structure(tmp_path, finished_plate_run):
    out = tmp_path / "run"
    patterns = {("A01", 1): "lattice", ("A02", 1): "none", ("B01", 1): "line"}
    finished_plate_run(out, {s: {"pattern": p} for s, p in patterns.items()})
    html = tlseg.validate_plate(out)["report"].read_text()
    assert "At 2 of 3 sites a repeating structure was found" in html
    assert "posts or traps, subtracted before segmenting: A01" in html
    assert "along one direction: B01" in html
    assert pd.read_csv(out / "sites.csv")["pattern"].tolist() == ["lattice", "none", "line"]
    plain = tmp_path / "plain"
    finished_plate_run(plain, {s: {"pattern": "none"} for s in patterns})
    assert "<h2>Structures" not in tlseg.validate_plate(plain)["report"].read_text()
