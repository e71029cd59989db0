"""Crowded training fields (copy-paste of real annotated cells), border weights in the
loss, and synthetic confluent monolayers."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from tlseg.config import ModelConfig, TrainConfig
from tlseg.synthetic import synthetic_field
from tlseg.training.crowd import (
    border_weights,
    crowded_samples,
    monolayer_samples,
    weight_borders,
)
from tlseg.training.data import CropSampler, make_sample
from tlseg.training.targets import UNKNOWN
from tlseg.training.train import load_folders, masked_loss, train_samples


def _samples(n=3, size=192, diameter=24):
    out = []
    for i in range(n):
        f = synthetic_field((size, size), diameter=diameter, seed=40 + i)
        out.append(make_sample(f["tl"].astype(np.float32), f["labels"], diameter=diameter,
                               canonical_diameter=diameter, name=f"s{i}", source="syn"))
    return out


def test_crowded_fields_are_denser_and_their_labels_consistent():
    samples = _samples()
    crowded = crowded_samples(samples, n=3, size=160, canonical_diameter=24,
                              rng=np.random.default_rng(0))
    assert len(crowded) == 3
    base_fill = np.mean([(s.labels > 0).mean() for s in samples])
    for c in crowded:
        assert c.source == "syn" and c.name.startswith("crowded-syn-")
        assert c.image.shape == (1, 160, 160) and c.targets.shape[1:] == (160, 160)
        fill = (c.labels > 0).mean()
        assert fill > 0.55 > base_fill + 0.2
        # every cell is one connected piece of the size of a real cell, and the loss
        # knows nothing of the unknown remnants
        ids = np.unique(c.labels[c.labels > 0])
        assert len(ids) > 20
        assert (c.targets[3].numpy()[c.labels == UNKNOWN] == 0).all()
        assert not c.complete
    # the same random stream gives the same fields (a resumed run rebuilds them)
    again = crowded_samples(samples, n=3, size=160, canonical_diameter=24,
                            rng=np.random.default_rng(0))
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(crowded, again))


def test_relief_pasting_carries_the_halo_and_draws_no_seam():
    from tlseg.training.crowd import _paste

    # a dark cell with a bright halo on a background of 100, cut out with its margin
    yy, xx = np.mgrid[:30, :30]
    r = np.hypot(yy - 15, xx - 15)
    patch = np.where(r < 8, 60.0, np.where(r < 9.5, 140.0, 100.0)).astype(np.float32)
    mask = r < 8
    for blend in ("feather", "relief"):
        canvas = np.full((60, 60), 50.0, np.float32)  # a dimmer place
        canvas[:, 40:] = 80.0  # and a neighbour's edge on the right
        labels = np.zeros((60, 60), np.int64)
        assert _paste(canvas, labels, patch, mask, 10, 20, 1, 1.0, blend)
        assert (labels == 1).sum() == mask.sum()
        inside = canvas[25, 35]  # the cell's body, brought to the new place's level
        assert abs(inside - 30.0) < 1
        if blend == "relief":
            assert canvas[25, 26] > 60  # the halo came along, at the new level
            assert canvas[25, 46] == 80.0  # beyond the halo the field is untouched
            assert abs(canvas[25, 44] - 80.0 * 1.4) < 20  # the halo lies over the edge
    with pytest.raises(ValueError, match="crowded_blend must be"):
        TrainConfig(crowded_blend="paste")


def test_crowded_fields_need_fully_labelled_images():
    samples = _samples()
    for s in samples:
        s.labels = np.where(s.labels == 0, UNKNOWN, s.labels)  # partial labels
    assert crowded_samples(samples, n=2, size=128, canonical_diameter=24,
                           rng=np.random.default_rng(0)) == []


def test_border_weights_ride_in_the_valid_target_and_weigh_the_loss():
    s = _samples(1)[0]
    before = s.targets.clone()
    weight_borders(s, 3.0)
    valid = s.targets[3]
    touching = border_weights(s.labels, weight=3.0) > 1
    assert touching.any()
    assert torch.equal(valid[~torch.from_numpy(touching)],
                       before[3][~torch.from_numpy(touching)])
    assert (valid[torch.from_numpy(touching)] == 4.0).all()
    # the loss is that of weight 0 where no pixel is weighted, and larger otherwise
    pred = torch.zeros((1, 5) + valid.shape)
    plain, _ = masked_loss(pred, before[None])
    weighted, _ = masked_loss(pred, s.targets[None])
    assert weighted > plain
    same, _ = masked_loss(pred, before[None])
    assert same == plain


def test_training_with_crowded_fields_and_border_weights(data_dir, tmp_path):
    samples = load_folders([data_dir], canonical_diameter=24)
    targets = [s.targets.clone() for s in samples]
    tc = TrainConfig(epochs=1, steps_per_epoch=3, batch_size=2, crop=64, crowded=0.5,
                     border_weight=2.0, holdout_fraction=0.25)
    model = train_samples(samples, tmp_path / "m", train_config=tc,
                          model_config=ModelConfig(name="tiny", channels=(8, 16),
                                                   canonical_diameter=24), tune=False)
    assert model.card["train_config"]["crowded"] == 0.5
    # the caller's samples are left as they were
    assert all(torch.equal(a, s.targets) for a, s in zip(targets, samples))
    with pytest.raises(ValueError, match="crowded must be in"):
        replace(tc, crowded=1.5)
    with pytest.raises(ValueError, match="border_weight must be"):
        replace(tc, border_weight=-1)


def test_monolayers_fill_the_field_and_are_drawn_for_their_fraction():
    layers = monolayer_samples(n=2, size=128, canonical_diameter=24,
                               rng=np.random.default_rng(0))
    assert [s.name for s in layers[::2]] == ["monolayer-phase-0", "monolayer-brightfield-0",
                                             "monolayer-dic-0"]
    for s in layers:
        assert s.source == "synthetic monolayer" and not s.complete
        assert (s.labels > 0).mean() > 0.85  # background only in gaps along the edges
        assert s.labels.max() > 15  # many cells of about the canonical size
        assert s.targets[0].mean() > 0.8 and s.image.shape[1:] == s.labels.shape
    again = monolayer_samples(n=2, size=128, canonical_diameter=24,
                              rng=np.random.default_rng(0))
    assert all(np.array_equal(a.labels, b.labels) for a, b in zip(layers, again))
    # the sampler draws them for their fraction of the crops, the images for the rest
    images = _samples(n=2)
    sampler = CropSampler(images, crop=64, max_log2_scale=0.0, rng=np.random.default_rng(1),
                          monolayers=layers, monolayer_fraction=0.25)
    picks = [sampler._pick()[0].source for _ in range(2000)]
    assert 0.2 < picks.count("synthetic monolayer") / len(picks) < 0.3
    with pytest.raises(ValueError, match="crowded \\+ monolayers"):
        TrainConfig(crowded=0.6, monolayers=0.6)


def test_dense_crops_are_centred_where_cells_crowd():
    # one field: a tight cluster of small cells on the left, cells spread on the right
    lab = np.zeros((200, 400), np.int32)
    k = 0
    for y in range(20, 180, 14):
        for x in range(20, 120, 14):
            k += 1
            lab[y:y + 10, x:x + 10] = k
    for y, x in [(30, 250), (150, 300), (60, 360), (120, 220)]:
        k += 1
        lab[y:y + 10, x:x + 10] = k
    s = make_sample(np.where(lab > 0, 1.0, 0.5).astype(np.float32), lab, diameter=12.0,
                    canonical_diameter=12.0, name="a", source="syn")
    plain = CropSampler([s], crop=64, max_log2_scale=0.0, rng=np.random.default_rng(0))
    dense = CropSampler([s], crop=64, max_log2_scale=0.0, rng=np.random.default_rng(0),
                        dense_fraction=0.5, dense_radius=24.0)
    left = []
    for sampler in (plain, dense):
        picks = [sampler._pick() for _ in range(1000)]
        centres = [c for _, c in picks if c is not None]
        left.append(np.mean([c[1] < 130 for c in centres]) if centres else None)
        if sampler is dense:
            assert 0.45 < len(centres) / len(picks) < 0.55
            assert left[-1] > 0.99  # a cell in the cluster has 5-9 neighbours, one apart 1
    assert left[0] is None  # without it every centre is drawn uniformly, as before
    with pytest.raises(ValueError, match="dense must be in"):
        TrainConfig(dense=1.5)


def test_training_with_monolayers_records_them(data_dir, tmp_path):
    samples = load_folders([data_dir], canonical_diameter=24)
    tc = TrainConfig(epochs=1, steps_per_epoch=2, batch_size=2, crop=64, monolayers=0.5,
                     holdout_fraction=0.25)
    model = train_samples(samples, tmp_path / "m", train_config=tc,
                          model_config=ModelConfig(name="tiny", channels=(8, 16),
                                                   canonical_diameter=24), tune=False)
    assert model.card["train_config"]["monolayers"] == 0.5
    assert "synthetic monolayer" not in model.card.get("sources", [])


@pytest.mark.parametrize("modality", ["phase", "brightfield", "dic"])
def test_synthetic_confluent_monolayer(modality):
    f = synthetic_field((256, 256), diameter=24, modality=modality, confluent=True, seed=1)
    labels = f["labels"]
    assert (labels > 0).mean() > 0.95  # no background between the cells
    n = len(np.unique(labels[labels > 0]))
    hexagon = np.sqrt(3) / 2 * 24**2  # area per cell of a hexagonal grid of pitch 24
    assert 0.8 < n * hexagon / labels.size < 1.4
    assert f["n_cells"] == n and f["tl"].dtype == np.uint16
