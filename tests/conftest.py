import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import tifffile

import tlseg
from tlseg.plate.demo import make_demo_plate
from tlseg.synthetic import synthetic_field


@pytest.fixture(scope="session")
def field():
    return synthetic_field((256, 256), diameter=30, seed=7)


@pytest.fixture
def image_dir(tmp_path, field):
    d = tmp_path / "images"
    d.mkdir()
    tifffile.imwrite(d / "a.tif", field["tl"], compression="lzw")
    f2 = synthetic_field((200, 240), diameter=30, seed=8)
    tifffile.imwrite(d / "b.tif", f2["tl"])
    gt = tmp_path / "gt"
    gt.mkdir()
    tifffile.imwrite(gt / "a.tif", field["labels"].astype(np.uint16))
    tifffile.imwrite(gt / "b.tif", f2["labels"].astype(np.uint16))
    return d


@pytest.fixture(scope="session")
def plate(tmp_path_factory):
    """2 densities x 2 replicate wells x 2 sites of 192x192, TL (w1) + nuclei (w2)."""
    root = tmp_path_factory.mktemp("plate")
    made = make_demo_plate(root, replicates=2, sites=2, size=192, seed=1)
    # keep only two density levels to stay fast: rows A and B
    for f in made["plate"].glob("*_[CD]0*"):
        f.unlink()
    pm = pd.read_csv(made["plate_map"])
    pm[pm["well"].str[0].isin(["A", "B"])].to_csv(made["plate_map"], index=False)
    return made


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A training data folder: 4 synthetic 128x128 images and their masks (cells of 24 px)."""
    d = tmp_path_factory.mktemp("data")
    (d / "images").mkdir()
    (d / "masks").mkdir()
    for i in range(4):
        f = synthetic_field((128, 128), diameter=24, seed=100 + i)
        tifffile.imwrite(d / "images" / f"s{i}.tif", f["tl"])
        tifffile.imwrite(d / "masks" / f"s{i}.tif", f["labels"].astype(np.uint16))
    return d


@pytest.fixture(scope="session")
def tl_cells_without():
    """A function: ``tl-cells`` and a copy of it, on the same network, with the instance
    settings given (a filter switched off) -- ``model, off = tl_cells_without(x=0.0)``."""
    model = tlseg.load_model("tl-cells")

    def pair(**settings):
        cfg = model.config
        off = tlseg.Model(replace(cfg, instances=replace(cfg.instances, **settings)),
                          model.net)
        return model, off

    return pair


@pytest.fixture(scope="session")
def assert_same_cells():
    """A function that asserts two models find as many cells on a synthetic 384² field of
    each modality (a filter that must leave cells alone)."""

    def check(model, off):
        for modality in ("phase", "brightfield", "dic"):
            f = synthetic_field((384, 384), diameter=30, modality=modality, seed=1)
            assert model.segment(f["tl"], diameter=30).max() == off.segment(
                f["tl"], diameter=30).max()

    return check


@pytest.fixture(scope="session")
def finished_plate_run():
    """A function that writes what a finished ``tlseg plate run`` leaves in ``out`` for
    ``validate_plate``: ``run.json`` and, per ``(well, site)`` of ``sites``, a segmented
    site's record (with the fields given for it) and a table of its 5 cells."""

    def write(out, sites: dict):
        for sub in ("sites", "cells"):
            (out / sub).mkdir(parents=True, exist_ok=True)
        run = {"plate": "p", "layout": "imagexpress", "skipped_sites": [],
               "unparsed_files": [], "config": {"tl_channel": "w1"}}
        (out / "run.json").write_text(json.dumps(run))
        for (well, site), fields in sites.items():
            key = f"{well}_s{site}"
            record = {"well": well, "site": site, "key": key, "paths": {"w1": "gone.tif"},
                      "status": "ok", "shape": [100, 100], "diameter": 20.0, "n_cells": 5,
                      **fields}
            (out / "sites" / f"{key}.json").write_text(json.dumps(record))
            pd.DataFrame({"well": well, "site": site, "label": np.arange(1, 6), "area": 300.0}
                         ).to_parquet(out / "cells" / f"{key}.parquet")

    return write
