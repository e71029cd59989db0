from dataclasses import replace

import numpy as np
import pytest
import tifffile
import torch
from scipy import ndimage as ndi

from tlseg.cli import main
from tlseg.config import ModelConfig, TrainConfig
from tlseg.errors import TlsegError
from tlseg.inference.labels import resize_labels
from tlseg.inference.model import Model
from tlseg.synthetic import synthetic_field
from tlseg.training.data import UNKNOWN
from tlseg.training.train import load_folders, train_samples

TINY = ModelConfig(name="tiny", channels=(8, 16))
TC = TrainConfig(epochs=1, steps_per_epoch=6, batch_size=2, crop=64, checkpoint_every=2,
                 holdout_fraction=0.25)


def test_train_cli_smoke(data_dir, tmp_path, capsys):
    rc = main(["train", str(data_dir), "-o", str(tmp_path / "m"), "--epochs", "1",
               "--steps-per-epoch", "3", "--batch-size", "2", "--canonical-diameter", "20",
               "--channels", "8", "16"])
    assert rc == 0
    model = Model.from_folder(tmp_path / "m")
    assert model.config.channels == (8, 16)
    assert model.card["n_train_images"] == 3 and model.card["n_holdout_images"] == 1
    assert model.config.canonical_diameter == 20
    # transmitted light: the structure filter is on, and tuning keeps it
    assert model.config.instances.repeat_similarity == 0.8
    assert model.config.instances.min_area_of_median == 0.0
    assert (tmp_path / "m" / "train_log.csv").read_text().count("\n") >= 2
    assert not (tmp_path / "m" / "checkpoint.pt").exists()


def test_a_fluorescence_model_gets_the_nucleus_size_floor_and_tuning_keeps_it(data_dir,
                                                                              tmp_path):
    from tlseg.inference.postprocess import NUCLEUS_SIZE_FLOOR

    rc = main(["train", str(data_dir), "-o", str(tmp_path / "n"), "--epochs", "1",
               "--steps-per-epoch", "2", "--batch-size", "2", "--canonical-diameter", "20",
               "--channels", "8", "16", "--flatfield", "subtract"])
    assert rc == 0
    instances = Model.from_folder(tmp_path / "n").config.instances
    assert instances.min_area_of_median == NUCLEUS_SIZE_FLOOR > 0
    assert instances.repeat_similarity == 0.0  # the chip filters are for transmitted light


def test_train_from_a_base_model_with_incomplete_masks(data_dir, tmp_path):
    base = Model(ModelConfig(name="tinybase", channels=(8, 16), canonical_diameter=20))
    base.save(tmp_path / "base")
    rc = main(["train", str(data_dir), "-o", str(tmp_path / "m"), "--epochs", "1",
               "--steps-per-epoch", "2", "--batch-size", "2", "--base", str(tmp_path / "base"),
               "--incomplete", str(data_dir)])
    assert rc == 0
    model = Model.from_folder(tmp_path / "m")
    # the base model's architecture and scale; its name recorded as the parent
    assert model.config.channels == (8, 16) and model.config.canonical_diameter == 20
    assert model.card["parent"] == "tinybase" and model.card["incomplete"] == [str(data_dir)]
    # incomplete masks: all background trusted, but never held out to tune on
    assert model.card["n_holdout_images"] == 0
    samples = load_folders([data_dir], canonical_diameter=20, incomplete_dirs=[data_dir])
    assert all(not s.complete and bool((s.targets[3] > 0).all()) for s in samples)
    partial = load_folders([data_dir], canonical_diameter=20, partial_dirs=[data_dir])
    assert all(not s.complete for s in partial)
    with pytest.raises(TlsegError, match="more than one of --partial, --incomplete"):
        load_folders([data_dir], canonical_diameter=20, partial_dirs=[data_dir],
                     incomplete_dirs=[data_dir])
    (tmp_path / "other" / "images").mkdir(parents=True)
    with pytest.raises(TlsegError, match="not among the training data"):
        load_folders([data_dir], canonical_diameter=20, partial_dirs=[tmp_path / "other"])


def test_a_nuclear_stain_judges_incomplete_masks(tmp_path, capsys):
    # masks that leave one cell out, and the field's nuclear stain beside them
    d = tmp_path / "stained"
    for sub in ("images", "masks", "stain"):
        (d / sub).mkdir(parents=True)
    f = synthetic_field((256, 256), n_cells=8, diameter=24, modality="brightfield", seed=7)
    cells = f["labels"]
    left_out = int(cells.max())
    tifffile.imwrite(d / "images" / "a.tif", f["tl"])
    tifffile.imwrite(d / "masks" / "a.tif", np.where(cells == left_out, 0, cells).astype(np.uint16))
    tifffile.imwrite(d / "stain" / "a.tif", f["nuclei"])
    (s,) = load_folders([d], canonical_diameter=24, stained_dirs=[d])
    assert not s.complete  # never held out to tune on
    small = resize_labels(cells, s.labels.shape)  # at the canonical scale
    gone = s.labels[small == left_out]
    assert (gone == UNKNOWN).mean() > 0.9  # a cell with a nucleus, unlabelled: unknown
    kept = np.unique(s.labels[s.labels > 0])
    assert len(kept) >= 0.8 * (left_out - 1)  # the labelled cells stay cells
    far = resize_labels((ndi.distance_transform_edt(f["nuclei_labels"] == 0) > 36
                         ).astype(np.int32), s.labels.shape) > 0
    assert far.any() and (s.labels[far] == 0).all()  # far from every nucleus: background
    # without the stain the left-out cell is trusted background
    (plain,) = load_folders([d], canonical_diameter=24, incomplete_dirs=[d])
    assert (plain.labels[small == left_out] == 0).all()
    tifffile.imwrite(d / "stain" / "a.tif", f["nuclei"][:200])  # another field's shape
    with pytest.raises(TlsegError, match="its nuclear stain is 256 x 200 px"):
        load_folders([d], canonical_diameter=24, stained_dirs=[d])
    (d / "stain" / "a.tif").unlink()
    with pytest.raises(TlsegError, match="no nuclear stain with the same name"):
        load_folders([d], canonical_diameter=24, stained_dirs=[d])
    # the command line: one line, exit code 2, no model folder written
    assert main(["train", str(d), "-o", str(tmp_path / "m"), "--stain", str(d),
                 "--epochs", "1", "--steps-per-epoch", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no nuclear stain with the same name" in err[0]
    assert not (tmp_path / "m").exists()
    with pytest.raises(TlsegError, match="more than one of"):
        load_folders([d], canonical_diameter=24, stained_dirs=[d], incomplete_dirs=[d])


def test_annotation_fragments_are_ignored_not_cells(data_dir, tmp_path):
    # a copy of the data with 2-pixel specks labelled as cells of their own
    d = tmp_path / "specks"
    (d / "images").mkdir(parents=True)
    (d / "masks").mkdir()
    for img in sorted((data_dir / "images").iterdir()):
        lab = tifffile.imread(data_dir / "masks" / img.name)
        free = np.argwhere(lab[5:-5, 5:-5] == 0)[0] + 5
        lab[free[0], free[1]:free[1] + 2] = lab.max() + 1
        tifffile.imwrite(d / "masks" / img.name, lab)
        (d / "images" / img.name).write_bytes(img.read_bytes())
    plain = load_folders([d], canonical_diameter=20)
    clean = load_folders([d], canonical_diameter=20, fragments=0.15)
    # the specks are unknown to the loss; the images stay complete (held out to tune on)
    assert all(not (s.labels < 0).any() for s in plain)
    assert all((s.labels < 0).any() and s.complete for s in clean)
    assert [s.diameter for s in clean] == pytest.approx([s.diameter for s in plain], rel=0.05)
    rc = main(["train", str(d), "-o", str(tmp_path / "m"), "--epochs", "1",
               "--steps-per-epoch", "2", "--batch-size", "2", "--canonical-diameter", "20",
               "--channels", "8", "16", "--fragments", "0.15"])
    model = Model.from_folder(tmp_path / "m")
    assert rc == 0 and model.card["fragments"] == 0.15 and model.card["n_holdout_images"] == 1
    with pytest.raises(TlsegError, match="--fragments must be a fraction"):
        load_folders([d], canonical_diameter=20, fragments=1.5)


@pytest.mark.slow
@pytest.mark.parametrize("ema", [0.0, 0.5])
def test_interrupted_training_resumes_to_the_same_weights(data_dir, tmp_path, ema):
    # training runs under repeatable(): no thread pinning or deterministic mode needed here
    samples = load_folders([data_dir], canonical_diameter=TINY.canonical_diameter)
    tc = replace(TC, ema=ema)
    ref = train_samples(samples, tmp_path / "ref", model_config=TINY, train_config=tc)

    def stop_at_3(step, total, parts):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_samples(samples, tmp_path / "run", model_config=TINY, train_config=tc,
                      progress=stop_at_3)
    assert (tmp_path / "run" / "checkpoint.pt").exists()
    assert not (tmp_path / "run" / "weights.pt").exists()
    with pytest.raises(TlsegError, match="--resume"):
        train_samples(samples, tmp_path / "run", model_config=TINY, train_config=tc)
    resumed = train_samples(samples, tmp_path / "run", model_config=TINY, train_config=tc,
                            resume=True)
    for a, b in zip(ref.net.state_dict().values(), resumed.net.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_the_same_training_repeats_bit_for_bit_on_the_cpu(data_dir, tmp_path):
    samples = load_folders([data_dir], canonical_diameter=TINY.canonical_diameter)
    a, b = (train_samples(samples, tmp_path / name, model_config=TINY, train_config=TC,
                          tune=False) for name in ("a", "b"))
    for wa, wb in zip(a.net.state_dict().values(), b.net.state_dict().values()):
        assert torch.equal(wa, wb)
    image = synthetic_field((160, 160), diameter=30, seed=1)["tl"]
    assert np.array_equal(a.predict_maps(image), a.predict_maps(image))
    assert not torch.are_deterministic_algorithms_enabled()  # restored after


def test_averaged_weights_and_training_without_tuning(data_dir, tmp_path):
    samples = load_folders([data_dir], canonical_diameter=TINY.canonical_diameter)
    last = train_samples(samples, tmp_path / "last", model_config=TINY, train_config=TC,
                         tune=False)
    ema = train_samples(samples, tmp_path / "ema", model_config=TINY,
                        train_config=replace(TC, ema=0.9), tune=False)
    # the saved weights are the running average, not the last step's
    differ = [not torch.equal(a, b) for a, b in
              zip(last.net.state_dict().values(), ema.net.state_dict().values())]
    assert any(differ)
    card = Model.from_folder(tmp_path / "ema").card
    assert card["train_config"]["ema"] == 0.9
    # held-out images are kept aside but not tuned on (tlseg tune does it later)
    assert card["n_holdout_images"] == 1 and card["holdout_scores"] == {}
    with pytest.raises(ValueError, match="ema"):
        TrainConfig(ema=1.0)


def test_training_data_errors(tmp_path):
    with pytest.raises(TlsegError, match="not a training data folder"):
        load_folders([tmp_path], canonical_diameter=30)
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    tifffile.imwrite(tmp_path / "images" / "a.tif", np.zeros((32, 32), np.uint8))
    with pytest.raises(TlsegError, match="no mask"):
        load_folders([tmp_path], canonical_diameter=30)
    tifffile.imwrite(tmp_path / "masks" / "a.tif", np.zeros((30, 32), np.uint16))
    with pytest.raises(TlsegError, match="differs from the image"):
        load_folders([tmp_path], canonical_diameter=30)


def test_exclude_and_device_arguments(data_dir, tmp_path):
    names = {s.name for s in load_folders([data_dir], canonical_diameter=24, exclude=["s1.*"])}
    assert names == {"s0", "s2", "s3"}
    samples = load_folders([data_dir], canonical_diameter=24)
    with pytest.raises(TlsegError, match="not a device name"):
        train_samples(samples, tmp_path / "m", model_config=TINY, train_config=TC, device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(TlsegError, match="no CUDA GPU"):
            train_samples(samples, tmp_path / "m", model_config=TINY, train_config=TC,
                          device="cuda")


def test_crops_turn_flows_with_the_image():
    """A rotated, flipped, zoomed crop's flows equal the flows of the cropped labels."""
    from skimage.segmentation import clear_border

    from tlseg.training.data import CropSampler, make_sample
    from tlseg.training.targets import make_targets

    f = synthetic_field((256, 256), diameter=24, seed=5)
    s = make_sample(f["tl"], f["labels"], diameter=24.0, canonical_diameter=24.0,
                    name="s", source="syn")
    sampler = CropSampler([s], crop=128, max_log2_scale=0.5, rng=np.random.default_rng(3))
    cos = []
    for _ in range(6):
        _, tgt = sampler._crop(s)
        # flows computed afresh on the crop's whole cells must point the same way
        whole = clear_border(_crop_labels(tgt))
        again = make_targets(whole, canonical_diameter=24.0)
        inner = (whole > 0) & (again[1] > 0.3)
        cos.append((tgt[4].numpy() * again[4] + tgt[5].numpy() * again[5])[inner])
    cos = np.concatenate(cos)
    assert cos.size > 300 and np.median(cos) > 0.9 and np.mean(cos > 0.5) > 0.9


def _crop_labels(tgt):
    # instance labels of a crop, rebuilt from its foreground and distance targets
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    fg, dist = tgt[0].numpy() > 0, tgt[1].numpy()
    seeds, _ = ndi.label(dist > 0.6)
    return watershed(-dist, seeds, mask=fg)


def test_cells_cut_by_a_roi_edge_count_as_foreground_only():
    """A ROI cuts cells at its edge: they are cells, but their shape is not known."""
    from tlseg.training.targets import FG_ONLY, UNKNOWN, make_targets, median_diameter
    from tlseg.training.train import masked_loss

    f = synthetic_field((192, 192), diameter=30, seed=7)
    full = f["labels"].astype(np.int32)
    roi = np.full_like(full, UNKNOWN)
    roi[40:140, 50:150] = full[40:140, 50:150]
    t = make_targets(roi, canonical_diameter=30.0)
    inside = roi > 0
    edge = np.unique(np.concatenate([roi[40, 50:150], roi[139, 50:150],
                                     roi[40:140, 50], roi[40:140, 149]]))
    edge = edge[edge > 0]
    whole = np.setdiff1d(np.unique(roi[inside]), edge)
    assert edge.size and whole.size
    cut = np.isin(roi, edge)
    assert (t[3][cut] == FG_ONLY).all() and (t[0][cut] == 1).all()  # foreground only
    assert not t[1][cut].any() and not t[4:, cut].any()              # no shape targets
    assert (t[3][np.isin(roi, whole)] == 1).all() and (t[3][roi == 0] == 1).all()
    assert not t[3][roi == UNKNOWN].any()
    # whole cells keep the targets they have in the full image
    ref = make_targets(full, canonical_diameter=30.0)
    m = np.isin(full, whole)
    assert np.allclose(t[:3, m], ref[:3, m]) and np.allclose(t[4:, m], ref[4:, m], atol=1e-5)
    # the ROI's cell size is that of its whole cells
    assert median_diameter(roi) == median_diameter(np.where(m, full, 0))
    # the loss: a wrong shape on a cut cell costs nothing, a wrong foreground does
    tgt = torch.from_numpy(t)[None]
    pred = torch.zeros(1, 5, *roi.shape)
    pred[:, 0] = torch.from_numpy(np.where(t[0] > 0, 6.0, -6.0))
    pred[:, 1] = torch.from_numpy(np.where(t[1] > 0.5, 6.0, -6.0))
    base, _ = masked_loss(pred, tgt)
    bad_shape = pred.clone()
    bad_shape[:, 1:, torch.from_numpy(cut)] = 5.0
    assert masked_loss(bad_shape, tgt)[1]["dist"] == masked_loss(pred, tgt)[1]["dist"]
    bad_fg = pred.clone()
    bad_fg[:, 0, torch.from_numpy(cut)] = -6.0
    assert masked_loss(bad_fg, tgt)[0] > base + 0.1


def test_train_refuses_options_the_kind_of_data_does_not_use(data_dir, tmp_path, capsys):
    # a project trains by --mode/--steps; folder-only options would be silently ignored
    from tlseg.teaching.project import Project

    project = Project.init(tmp_path / "proj")
    rc = main(["train", str(project.root), "-o", str(tmp_path / "m"), "--ema", "0.999",
               "--no-tune"])
    assert rc == 2
    err = capsys.readouterr().err
    assert "--ema --no-tune: not used for a PROJECT" in err and len(err.strip().splitlines()) == 1
    # and data folders do not take the project's --mode/--steps
    rc = main(["train", str(data_dir), "-o", str(tmp_path / "m"), "--mode", "retrain"])
    assert rc == 2
    assert "--mode: not used for training from data folders" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_every_train_option_says_which_kind_of_data_uses_it():
    # a new option left out of these lists would be silently ignored for one kind of data
    from tlseg.cli.main import _build_parser
    from tlseg.cli.train import FOLDERS_ONLY, PROJECT_ONLY, TRAIN_COMMON

    args = _build_parser().parse_args(["train", "x", "-o", "y"])
    dests = {a.dest for a in args.train_parser._actions if a.dest != "help"}
    groups = [set(FOLDERS_ONLY), set(PROJECT_ONLY), set(TRAIN_COMMON)]
    assert sum(len(g) for g in groups) == len(set().union(*groups))  # disjoint
    assert set().union(*groups) == dests


def test_noise_augmentation_strength(data_dir, tmp_path):
    from tlseg.training.augment import augment_raw

    x = torch.full((64, 1, 32, 32), 10.0)
    ref = torch.full((64,), 10.0)

    def spread(max_noise):
        out = augment_raw(x, ref, torch.Generator().manual_seed(0), max_noise=max_noise)
        # pixel-to-pixel differences: noise, not the smooth shading the other steps add
        return float(torch.stack([(o[..., 1:] - o[..., :-1]).std() for o in out]).max())

    # the same crops and random draws: stronger noise only where --max-noise allows it
    assert spread(0.3) > 3 * spread(0.06)
    with pytest.raises(ValueError, match="max_noise"):
        TrainConfig(max_noise=1.5)
    rc = main(["train", str(data_dir), "-o", str(tmp_path / "m"), "--max-noise", "-1"])
    assert rc == 2 and not (tmp_path / "m").exists()


def test_texture_augmentation_adds_grain_only_when_asked():
    from tlseg.training.augment import augment_raw

    x = torch.full((32, 1, 48, 48), 10.0)
    ref = torch.full((32,), 10.0)

    def run(texture):
        return augment_raw(x, ref, torch.Generator().manual_seed(1), max_noise=0.0,
                           texture=texture)

    # off: exactly the crops of a recipe without the option (no extra random draws)
    assert torch.equal(run(0.0), augment_raw(x, ref, torch.Generator().manual_seed(1),
                                             max_noise=0.0))
    plain, grainy = run(0.0), run(0.8)
    detail = [float((g[..., 1:] - g[..., :-1]).std() - (p[..., 1:] - p[..., :-1]).std())
              for g, p in zip(grainy, plain)]
    assert max(detail) > 0.05  # some crops got grain; the others are left alone
    with pytest.raises(ValueError, match="texture"):
        TrainConfig(texture=2.0)


def test_speck_augmentation_darkens_small_spots_only_when_asked():
    from tlseg.training.augment import _speck_field, augment_raw

    x = torch.full((16, 1, 64, 64), 10.0)
    ref = torch.full((16,), 10.0)
    # off: exactly the crops of a recipe without the option (no extra random draws)
    assert torch.equal(
        augment_raw(x, ref, torch.Generator().manual_seed(2), max_noise=0.0, specks=0.0),
        augment_raw(x, ref, torch.Generator().manual_seed(2), max_noise=0.0))
    assert not torch.equal(
        augment_raw(x, ref, torch.Generator().manual_seed(2), max_noise=0.0, specks=1.0),
        augment_raw(x, ref, torch.Generator().manual_seed(2), max_noise=0.0))
    for seed in range(10):
        field = _speck_field(128, 128, torch.Generator().manual_seed(seed))
        assert field.shape == (1, 128, 128) and float(field.max()) <= 1.0
        assert float(field.min()) < 0.75  # a dark speck ...
        assert float((field < 0.9).float().mean()) < 0.15  # ... small against the crop
    with pytest.raises(ValueError, match="specks"):
        TrainConfig(specks=1.5)


def test_optics_augmentation_renders_the_same_cells_through_other_optics():
    from tlseg.training.augment import optics

    yy, xx = torch.meshgrid(torch.arange(96.0), torch.arange(96.0), indexing="ij")
    cell = ((yy - 48) ** 2 + (xx - 48) ** 2 < 15**2).float()  # a 30 px cell, canonical
    x = (0.8 * cell - 0.1 + 0.01 * torch.randn(32, 1, 96, 96,
                                                generator=torch.Generator().manual_seed(0)))
    g = torch.Generator().manual_seed(3)
    state = g.get_state()
    assert torch.equal(optics(x, g, 0.0), x)  # off: the crops as they were ...
    assert torch.equal(g.get_state(), state)  # ... and no random numbers drawn
    y = optics(x, torch.Generator().manual_seed(3), 1.0)
    assert y.shape == x.shape and bool(torch.isfinite(y).all())
    changed = [not torch.allclose(a, b) for a, b in zip(y, x)]
    assert sum(changed) >= 30
    near = ((yy - 48) ** 2 + (xx - 48) ** 2 < 20**2)  # the cell and its rim
    for crop in y[:, 0]:
        q = torch.quantile(crop.flatten(), torch.tensor([0.005, 0.5, 0.995]))
        assert abs(float(q[1])) < 0.05 and 0.9 < float(q[2] - q[0]) < 1.1  # normalised
        # what stands out of the background is still the cell, wherever the optics put it
        assert float(crop[near].abs().mean()) > 3 * float(crop[~near].abs().mean())
    half = optics(x, torch.Generator().manual_seed(3), 0.5)
    assert 5 <= sum(not torch.equal(a, b) for a, b in zip(half, x)) <= 27
    with pytest.raises(ValueError, match="optics"):
        TrainConfig(optics=1.5)
