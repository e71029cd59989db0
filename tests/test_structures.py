"""Structure negatives: posts, walls, scratches, bubbles and well rims drawn over the
known background of training crops, never over cells or unknown pixels."""

import numpy as np
import pytest
import torch

from tlseg.config import TrainConfig
from tlseg.synthetic import synthetic_field
from tlseg.training.structures import CLEARANCE, KINDS, add_structures, structure_relief
from tlseg.training.targets import UNKNOWN, make_targets


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_the_field_and_repeats_with_its_seed(kind):
    draw = [structure_relief(96, 128, kind, 30.0, torch.Generator().manual_seed(s))
            for s in (3, 3, 4)]
    assert draw[0].shape == (96, 128) and torch.isfinite(draw[0]).all()
    assert float(draw[0].abs().max()) > 0.05  # visible against 1-6 % camera noise
    assert torch.equal(draw[0], draw[1]) and not torch.equal(draw[0], draw[2])
    with pytest.raises(ValueError, match="kind"):
        structure_relief(8, 8, "cells", 30.0, torch.Generator())


def test_structures_go_on_known_background_only_and_leave_the_targets_alone():
    f = synthetic_field((128, 128), diameter=24, n_cells=8, seed=5)
    labels = f["labels"].copy()
    labels[:, :20] = UNKNOWN  # an unannotated strip
    targets = torch.tensor(make_targets(labels, canonical_diameter=24))[None].repeat(6, 1, 1, 1)
    x = torch.tensor(f["tl"].astype(np.float32))[None, None].repeat(6, 1, 1, 1)
    kept = targets.clone()
    out = add_structures(x, targets, torch.Generator().manual_seed(0), fraction=1.0,
                         diameter=24.0)
    assert torch.equal(targets, kept)
    changed = (out != x)[:, 0]
    assert changed.any(dim=(1, 2)).sum() >= 5  # (a crop can miss a thin scratch)
    from scipy import ndimage as ndi
    near = ndi.binary_dilation(labels != 0, iterations=int(CLEARANCE))
    assert not changed[:, torch.tensor(near)].any()
    # off: the crops and the random stream are untouched
    rng = torch.Generator().manual_seed(0)
    assert add_structures(x, targets, rng, fraction=0.0, diameter=24.0) is x
    assert torch.equal(rng.get_state(), torch.Generator().manual_seed(0).get_state())
    with pytest.raises(ValueError, match="structures"):
        TrainConfig(structures=1.5)
