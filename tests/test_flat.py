"""Objects as flat as the background (a scratch's flank, the inside of a bubble) are
dropped; cells, sparse or crowded, in every modality, are kept."""

import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from tlseg.config import InstanceConfig
from tlseg.inference.flat import (
    LINE_DARKNESS,
    LINE_REACH,
    LINE_REACH_OUT,
    detail,
    drop_flat,
    drop_flat_as_set,
    flat_objects,
    foreign_lines,
)
from tlseg.synthetic import synthetic_field
from tlseg.training.structures import structure_relief


def _enclosed_background(seed: int):
    """An empty field crossed by a channel (two dark walls), the background between and
    beside the walls labelled as if the network had read it as cells."""
    f = synthetic_field((256, 256), diameter=30, n_cells=0, seed=seed)
    image = f["tl"].astype(np.float32)
    walls = np.zeros(image.shape, bool)
    walls[:, 60:64] = walls[:, 150:154] = True
    image[walls] *= 0.5
    labels = np.zeros(image.shape, np.int32)
    for i, y in enumerate(range(20, 220, 50)):  # pieces inside the channel, under
        labels[y:y + 40, 80:130] = i + 1  # three cell areas
    labels[100:140, 180:230] = labels.max() + 1  # and one in the open
    return image, labels


def _flows_to_centres(labels):
    """Unit flows (2, H, W) pointing from each object's pixels to its centroid."""
    yy, xx = np.mgrid[:labels.shape[0], :labels.shape[1]].astype(np.float32)
    ids = np.arange(1, labels.max() + 1)
    cy = np.r_[0, ndi.mean(yy, labels, ids)][labels]
    cx = np.r_[0, ndi.mean(xx, labels, ids)][labels]
    flow = np.stack([cy - yy, cx - xx]) * (labels > 0)
    return flow / np.maximum(np.hypot(*flow), 1e-6)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_background_read_as_cells_is_flagged(seed):
    image, labels = _enclosed_background(seed)
    prob = (labels > 0).astype(np.float32)
    assert flat_objects(labels, image, prob, None, min_texture=1.3,
                        canonical_diameter=30).all()
    inward = _flows_to_centres(labels)
    # flows that point away from the objects' centres: still flagged
    assert flat_objects(labels, image, prob, -inward, min_texture=1.3,
                        canonical_diameter=30, max_coherence=0.9).all()
    # flows that converge on them, as on a cell: kept
    assert not flat_objects(labels, image, prob, inward, min_texture=1.3,
                            canonical_diameter=30, max_coherence=0.9).any()
    assert np.array_equal(drop_flat(labels, image, prob, None, min_texture=0.0,
                                    canonical_diameter=30), labels)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_large_object_is_read_inside_its_walls(seed):
    """A round chamber read as one object takes in a few pixels of its wall: its
    texture is read deeper inside than a cell's, where the wall is out."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 2, (160, 160)).astype(np.float32)
    r = np.hypot(*(np.mgrid[:160, :160] - 80.0))
    image[(r >= 36) & (r < 40)] = 50  # the wall, inside the object's outline
    labels = (r < 40).astype(np.int32)  # ~7 canonical cell areas
    prob = ndi.binary_dilation(labels > 0, iterations=6).astype(np.float32)
    assert flat_objects(labels, image, prob, None, min_texture=1.3, canonical_diameter=30)[0]
    # the same object, smaller than a canonical cell, is read 2 px in: the wall counts
    assert not flat_objects(labels, image, prob, None, min_texture=1.3,
                            canonical_diameter=120)[0]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_large_objects_are_held_to_more(seed):
    """An object of several cell areas whose flows converge is still dropped when its
    inside is flat (a small bubble) or, textured, when its flows do not converge (a
    band of the well's wall); a large textured cell with converging flows is kept."""
    rng = np.random.default_rng(seed)
    image = rng.normal(100, 2, (200, 300)).astype(np.float32)
    r1 = np.hypot(*(np.mgrid[:200, :300] - np.array([100.0, 70.0])[:, None, None]))
    r2 = np.hypot(*(np.mgrid[:200, :300] - np.array([100.0, 220.0])[:, None, None]))
    labels = np.zeros(image.shape, np.int32)
    labels[r1 < 30] = 1  # 4 canonical cell areas: flat inside, texture 1.4x the noise
    labels[r2 < 30] = 2  # the same size, textured like a cell
    image[r1 < 30] = 100 + rng.normal(0, 2.8, (r1 < 30).sum())
    image[r2 < 30] += rng.normal(0, 12, (r2 < 30).sum())
    prob = ndi.binary_dilation(labels > 0, iterations=2).astype(np.float32)
    inward = _flows_to_centres(labels)
    found = flat_objects(labels, image, prob, inward, min_texture=1.3,
                         canonical_diameter=30, max_coherence=0.9)
    assert found.tolist() == [True, False]
    # at half the size, the flat object is an ordinary one: its flows keep it
    assert not flat_objects(labels, image, prob, inward, min_texture=1.3,
                            canonical_diameter=60, max_coherence=0.9).any()
    outward = inward.copy()
    outward[:, labels == 2] *= -1  # the textured object's flows point away from it
    assert flat_objects(labels, image, prob, outward, min_texture=1.3,
                        canonical_diameter=30, max_coherence=0.9).tolist() == [True, True]


def test_the_diameter_estimate_reads_the_objects_segmenting_keeps(tl_cells_without):
    """The size statistic of the diameter refinement leaves out what the flat filter
    drops (a small bubble read as one large object would pull it up), and reads every
    object when the model's flat filter is off."""
    rng = np.random.default_rng(0)
    image = rng.normal(100, 2, (200, 300)).astype(np.float32)
    yy, xx = np.mgrid[:200, :300]
    labels = np.zeros(image.shape, np.int32)
    labels[np.hypot(yy - 100, xx - 70) < 30] = 1  # 4 cell areas, flat inside
    cell = np.hypot(yy - 100, xx - 220) < 15
    labels[cell] = 2
    image[cell] += rng.normal(0, 12, cell.sum())
    maps = np.zeros((5, *image.shape), np.float32)
    maps[0] = ndi.binary_dilation(labels > 0, iterations=2)
    maps[3:5] = _flows_to_centres(labels)  # converging on both, as on cells
    model, off = tl_cells_without(flat_texture=0.0)
    kept = drop_flat_as_set(labels, image, maps, model.config)
    assert int(kept.max()) == 1 and kept[100, 220] == 1 and kept[100, 70] == 0
    assert np.array_equal(drop_flat_as_set(labels, image, maps, off.config), labels)


@pytest.mark.parametrize("modality", ["phase", "brightfield", "dic"])
def test_cells_are_not_flat(modality):
    for seed in (1, 2):
        f = synthetic_field((384, 384), diameter=30, n_cells=12, modality=modality, seed=seed)
        labels = f["labels"].astype(np.int32)
        prob = ndi.binary_dilation(labels > 0, iterations=2).astype(np.float32)
        assert not flat_objects(labels, f["tl"], prob, None, min_texture=1.3,
                                canonical_diameter=30).any()


def test_a_field_without_background_is_left_alone():
    f = synthetic_field((256, 256), diameter=30, n_cells=0, seed=4)
    labels = np.arange(1, 17, dtype=np.int32).repeat(16 * 256).reshape(256, 256)
    prob = np.ones(labels.shape, np.float32)  # the network sees cells everywhere
    assert not flat_objects(labels, f["tl"], prob, None, min_texture=1.3,
                            canonical_diameter=30).any()


def test_the_model_drops_flat_objects_and_keeps_cells(tl_cells_without, assert_same_cells):
    model, off = tl_cells_without(flat_texture=0.0)
    assert model.config.instances.flat_texture > 0
    found = np.zeros(2, int)  # objects on empty fields with a structure: on, off
    for kind, seed in (("scratch", 0), ("bubble", 0), ("bubble", 1), ("bubble", 2)):
        f = synthetic_field((384, 384), diameter=30, n_cells=0, seed=seed)
        relief = structure_relief(384, 384, kind, 30.0, torch.Generator().manual_seed(seed))
        image = f["tl"].astype(np.float32) * (1 + relief.numpy())
        found += [m.segment(image, diameter=30).max() for m in (model, off)]
    assert found[0] < found[1]
    assert_same_cells(model, off)
    with pytest.raises(ValueError, match="flat_coherence"):
        InstanceConfig(flat_coherence=0.0)
    with pytest.raises(ValueError, match="flat_texture"):
        InstanceConfig(flat_texture=-1.0)


@pytest.mark.parametrize("seed", [1, 2])
def test_a_fibre_running_through_background_is_not_its_texture(seed):
    """The stretch of background a fibre's curl encloses, with the fibre running through
    it and on across the field, reads as flat as the background; a cell the fibre
    crosses keeps its own texture. Without leaving the fibre out, the background reads
    1.35-1.51 times the noise and is kept."""
    f = synthetic_field((256, 256), diameter=30, n_cells=0, seed=seed)
    image = f["tl"].astype(np.float32)
    yy, xx = np.mgrid[:256, :256]
    fibre = np.abs(yy - 128 - 20 * np.sin(xx / 25)) < 2.5  # across the whole field
    labels = np.zeros(image.shape, np.int32)
    labels[105:145, 45:85] = 1  # enclosed background, the fibre through it
    cell = np.hypot(yy - 125, xx - 190) < 16
    labels[cell] = 2  # a cell on the fibre's path
    rng = np.random.default_rng(seed)
    image[cell] *= 1 + 0.15 * rng.standard_normal(cell.sum())
    image[fibre] *= 0.4
    prob = ndi.binary_dilation(labels > 0, iterations=2).astype(np.float32)
    assert flat_objects(labels, image, prob, None, min_texture=1.3,
                        canonical_diameter=30).tolist() == [True, False]


def test_lines_looked_at_near_the_read_objects_are_those_of_the_whole_field():
    """foreign_lines with ``ids`` looks only at the lines near those objects; near them
    it marks what the whole field's lines mark."""
    f = synthetic_field((300, 300), diameter=30, n_cells=15, seed=5)
    image = f["tl"].astype(np.float32)
    yy, xx = np.mgrid[:300, :300]
    image[np.abs(yy - 150 - 30 * np.sin(xx / 30)) < 2] *= 0.4  # a fibre across
    image[np.abs(xx - 40 - 10 * np.cos(yy / 20)) < 2] *= 0.4  # and another
    labels = f["labels"].astype(np.int32)
    fine = detail(image)
    whole = foreign_lines(labels, fine, 2.0, canonical_diameter=30)
    for ids in (np.array([1, 2, 3]), np.arange(4, labels.max() + 1)):
        near = ndi.binary_dilation(np.isin(labels, ids), iterations=LINE_REACH)
        some = foreign_lines(labels, fine, 2.0, canonical_diameter=30, ids=ids)
        assert np.array_equal(some[near], whole[near])
    assert whole.any()


def _foreign_lines_by_definition(labels, fine, noise, canonical_diameter):
    """The lines of dark pixels that come within LINE_REACH steps of an object and have a
    pixel LINE_REACH_OUT diameters or more from every object (a distance transform of
    the whole field), grown by LINE_REACH."""
    parts, n = ndi.label(fine < -LINE_DARKNESS * noise, structure=np.ones((3, 3)))
    away = ndi.distance_transform_edt(labels == 0)
    far = np.zeros(n + 1, bool)
    far[np.unique(parts[away >= LINE_REACH_OUT * canonical_diameter])] = True
    near = np.zeros(n + 1, bool)
    steps = ndi.distance_transform_cdt(labels == 0, metric="taxicab")
    near[np.unique(parts[steps <= LINE_REACH])] = True
    far &= near
    far[0] = False
    return ndi.binary_dilation(far[parts], iterations=LINE_REACH)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_foreign_lines_are_those_of_their_definition(seed):
    """The k-d tree over the objects' rims finds the lines a distance transform of the
    whole field finds: fibres across, short scratches, specks, near cells and far."""
    rng = np.random.default_rng(seed)
    f = synthetic_field((320, 280), diameter=24, n_cells=int(rng.integers(5, 25)), seed=seed)
    image = f["tl"].astype(np.float32)
    yy, xx = np.mgrid[:320, :280]
    for _ in range(3):
        a, p, y0 = rng.uniform(5, 40), rng.uniform(15, 60), rng.uniform(0, 320)
        x0, x1 = sorted(rng.uniform(0, 280, 2))
        line = (np.abs(yy - y0 - a * np.sin(xx / p)) < rng.uniform(1, 2.5)) & (xx >= x0) & (xx <= x1)
        image[line] *= 0.4
    for y, x in rng.uniform(0, 280, (10, 2)):
        image[np.hypot(yy - y, xx - x) < 2] *= 0.4
    labels = f["labels"].astype(np.int32)
    fine = detail(image)
    mine = foreign_lines(labels, fine, 2.0, canonical_diameter=24)
    assert np.array_equal(mine, _foreign_lines_by_definition(labels, fine, 2.0, 24))
    assert mine.any()


def test_a_line_is_foreign_from_exactly_half_a_cell_away():
    """Lines running straight and diagonally out of an object: foreign where their far
    end lies half a canonical diameter (12 px here) or more from it, Euclidean."""
    labels = np.zeros((200, 400), np.int32)
    fine = np.zeros(labels.shape)
    lengths = {1: ("across", 11), 2: ("across", 12), 3: ("diagonal", 8), 4: ("diagonal", 9)}
    for i, (way, k) in lengths.items():
        y, x = 60, 20 + (i - 1) * 90
        labels[y:y + 20, x:x + 20] = i
        for step in range(1, k + 1):  # from the object's right edge, or its lower corner
            fine[(y + 10, x + 19 + step) if way == "across" else (y + 19 + step, x + 19 + step)] = -10
    out = foreign_lines(labels, fine, 1.0, canonical_diameter=24)
    ends = [out[60 + 10, 20 + 19 + 11], out[60 + 10, 110 + 19 + 12],
            out[60 + 19 + 8, 200 + 19 + 8], out[60 + 19 + 9, 290 + 19 + 9]]
    assert [bool(e) for e in ends] == [False, True, False, True]
