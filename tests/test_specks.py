"""Opaque specks of debris (dark throughout, smaller than a cell) are dropped; cells of
every modality, cells cut by the edge and cell-sized dark objects are kept."""


import numpy as np
import pytest
from scipy import ndimage as ndi

from tlseg.config import InstanceConfig
from tlseg.inference.specks import drop_opaque, opaque_objects
from tlseg.synthetic import synthetic_field

CANON = 30.0


def _disc(shape, y, x, r):
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return np.hypot(yy - y, xx - x) < r


def _field_with(objects, seed=0):
    """An empty synthetic field (canonical scale) with ``objects``: (y, x, r, inside,
    centre) discs drawn as multiples of the background, labelled 1..n."""
    f = synthetic_field((256, 256), diameter=CANON, n_cells=0, debris=0, seed=seed)
    image = f["tl"].astype(np.float32)
    labels = np.zeros(image.shape, np.int32)
    for i, (y, x, r, inside, centre) in enumerate(objects, 1):
        disc = _disc(image.shape, y, x, r)
        image[disc] *= inside
        image[_disc(image.shape, y, x, r / 2)] *= centre / inside
        labels[disc] = i
    return image, labels, (labels > 0).astype(np.float32)


def test_dark_particles_are_flagged_and_cells_are_not():
    image, labels, prob = _field_with([
        (60, 60, 6, 0.4, 0.4),      # 1: an opaque particle
        (60, 180, 9, 0.6, 0.6),     # 2: a larger one, still under a cell's area
        (180, 60, 7, 0.5, 1.4),     # 3: dark with a bright centre: refracts, kept
        (180, 180, 20, 0.5, 0.5),   # 4: as large as a cell: kept
        (128, 253, 6, 0.4, 0.4),    # 5: cut by the image's edge: kept
    ])
    found = opaque_objects(labels, image, prob, min_darkness=12.0, canonical_diameter=CANON)
    assert found.tolist() == [True, True, False, False, False]
    kept = drop_opaque(labels, image, prob, min_darkness=12.0, canonical_diameter=CANON)
    assert kept.max() == 3 and kept[180, 180] > 0 and kept[60, 60] == 0
    # off, or nothing to measure the background on: nothing dropped
    assert np.array_equal(drop_opaque(labels, image, prob, min_darkness=0.0,
                                      canonical_diameter=CANON), labels)
    assert not opaque_objects(labels, image, np.ones_like(prob), min_darkness=12.0,
                              canonical_diameter=CANON).any()


@pytest.mark.parametrize("modality", ["phase", "brightfield", "dic"])
def test_cells_are_not_opaque(modality):
    for seed in (1, 2):
        f = synthetic_field((384, 384), diameter=CANON, n_cells=14, modality=modality,
                            seed=seed)
        labels = f["labels"].astype(np.int32)
        prob = ndi.binary_dilation(labels > 0, iterations=2).astype(np.float32)
        assert not opaque_objects(labels, f["tl"], prob, min_darkness=12.0,
                                  canonical_diameter=CANON).any()


def test_the_model_drops_specks_and_keeps_cells(tl_cells_without, assert_same_cells):
    model, off = tl_cells_without(opaque_darkness=0.0)
    assert model.config.instances.opaque_darkness > 0
    rng = np.random.default_rng(0)
    found = np.zeros(2, int)  # objects on empty fields strewn with dark particles: on, off
    for seed in range(3):
        f = synthetic_field((384, 384), diameter=30, n_cells=0, debris=0, seed=seed)
        image = f["tl"].astype(np.float32)
        for y, x in rng.uniform(40, 344, (12, 2)):
            image[_disc(image.shape, y, x, rng.uniform(4, 8))] *= rng.uniform(0.2, 0.5)
        found += [m.segment(image, diameter=30).max() for m in (model, off)]
    assert found[0] < found[1]
    assert_same_cells(model, off)
    with pytest.raises(ValueError, match="opaque_darkness"):
        InstanceConfig(opaque_darkness=-1.0)
