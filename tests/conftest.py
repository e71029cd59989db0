import os

import numpy as np
import pytest
import tifffile
import torch

from tlseg.synthetic import synthetic_field

torch.set_num_threads(min(2, os.cpu_count() or 1))


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
