import numpy as np
import pytest
import torch

from tlseg.analysis.metrics import average_precision
from tlseg.config import ModelConfig
from tlseg.errors import TlsegError
from tlseg.inference import diameter
from tlseg.inference.model import Model, shipped_models
from tlseg.inference.network import UNet
from tlseg.inference.runtime import repeatable
from tlseg.inference.window import pick_window, structure_map
from tlseg.synthetic import synthetic_field
from tlseg.training.targets import median_diameter


def test_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    model = Model(ModelConfig(name="tiny", channels=(8, 16)), UNet((8, 16)))
    model.save(tmp_path / "m", card={"parent": None})
    again = Model.from_folder(tmp_path / "m")
    assert again.config == model.config
    img = np.random.default_rng(0).random((64, 64)).astype(np.float32)
    saved = again.net.state_dict()
    assert all(torch.equal(w, saved[k]) for k, w in model.net.state_dict().items())
    # same weights; oneDNN may pick another convolution algorithm on a first call (~1e-5)
    np.testing.assert_allclose(model.predict_maps(img), again.predict_maps(img), atol=1e-4)
    assert again.card == {"parent": None}


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(TlsegError, match="no shipped model named 'nope'"):
        Model.load("nope")
    with pytest.raises(TlsegError, match="not a model folder"):
        Model.from_folder(tmp_path)
    (tmp_path / "config.yaml").write_text("name: x\n")
    (tmp_path / "weights.pt").write_bytes(b"garbage")
    with pytest.raises(TlsegError, match="cannot load model"):
        Model.from_folder(tmp_path)


def test_constant_image_is_refused():
    model = Model(ModelConfig(channels=(8, 16)))
    with pytest.raises(TlsegError, match="constant"):
        model.predict_instances(np.full((64, 64), 7, np.float32), diameter=30)


@pytest.fixture(scope="module")
def tl_cells():
    assert "tl-cells" in shipped_models(), "the tl-cells weights must ship in the package"
    return Model.from_pretrained("tl-cells")


def test_tl_cells_segments_synthetic_cells(tl_cells):
    f = synthetic_field((384, 384), diameter=32, seed=3)
    labels, details = tl_cells.predict_instances(f["tl"], diameter=32)
    assert labels.shape == f["tl"].shape and labels.dtype == np.int32
    assert average_precision(f["labels"], labels)["ap50"] > 0.6
    assert abs(details["n_cells"] - f["n_cells"]) <= 0.2 * f["n_cells"]


def test_diameter_is_estimated_within_a_factor(tl_cells):
    for d in (18, 40):
        f = synthetic_field((384, 384), diameter=d, seed=4)
        est = tl_cells.estimate_diameter(f["tl"].astype(np.float32))
        assert est is not None and d / 1.5 < est < d * 1.5, (d, est)


def test_diameter_is_estimated_in_a_sparse_field(tl_cells):
    # the only cells sit in a corner of a large empty field (a low-density well): the
    # estimate reads them, not the empty centre (read there, it gives ~300 px)
    empty = synthetic_field((1536, 1536), n_cells=0, diameter=16, seed=1)["tl"]
    cells = synthetic_field((384, 384), diameter=16, seed=11)
    image = empty.astype(np.float32)
    patch = cells["tl"].astype(np.float32)
    image[40:424, 1100:1484] = patch - np.median(patch) + np.median(image)
    true = median_diameter(cells["labels"])
    est = tl_cells.estimate_diameter(image, calibrate=False)
    assert est is not None and true / 1.4 < est < true * 1.4, (true, est)


def test_estimation_window_goes_where_the_cells_are():
    structure = np.zeros((100, 100), bool)
    structure[80:90, 5:15] = True  # the only cells, in a corner
    assert pick_window(structure, 30) == (60, 0)
    structure[45:55, 45:55] = True  # as many at the centre: the centre is kept
    assert pick_window(structure, 30) == (35, 35)
    assert pick_window(structure, 200) == (0, 0)  # a window larger than the image


def test_structure_map_marks_cells_not_noise_or_shading():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:600, :600]
    image = 100 + 0.05 * xx + 0.03 * yy
    # a vignetted corner falling smoothly to black over 60 px, as a field stop makes it
    image = image * np.clip((820 - np.hypot(yy, xx)) / 60, 0, 1)
    image = image + rng.standard_t(3, (600, 600))  # heavy-tailed camera noise
    image[500:520, 40:60] += 25 + 5 * rng.normal(size=(20, 20))  # one grainy cell
    grid, f = structure_map(image.astype(np.float32), max_grid=200)
    assert f == 3 and grid.shape == (200, 200)
    assert grid[167:173, 14:20].all()
    assert grid.sum() < 2 * 9 * 9  # the cell's blocks, not the noise, gradient or corner
    assert not grid[150:, 150:].any()


def test_diameter_calibration_scales_the_estimate(tl_cells, monkeypatch):
    from dataclasses import replace

    # stub the two estimation stages so that only the calibration is under test (the
    # network's float sums vary slightly between runs with other threads busy)
    half = Model(replace(tl_cells.config, diameter_calibration=0.5), tl_cells.net)
    monkeypatch.setattr(diameter, "size_head_diameter", lambda model, image, **kw: 30.0)
    monkeypatch.setattr(diameter, "refine_diameter", lambda model, image, d, **kw: d * 4 / 3)
    image = np.ones((64, 64), np.float32)
    assert half.estimate_diameter(image, calibrate=False) == 40.0
    assert half.estimate_diameter(image) == 20.0
    with pytest.raises(ValueError, match="diameter_calibration"):
        replace(tl_cells.config, diameter_calibration=0.0)


def test_tiled_equals_untiled_up_to_border_cells(tl_cells):
    f = synthetic_field((640, 704), diameter=30, seed=5)
    whole, _ = tl_cells.predict_instances(f["tl"], diameter=30, tile=2048)
    tiled, _ = tl_cells.predict_instances(f["tl"], diameter=30, tile=192)
    s = average_precision(whole, tiled)
    # seams would cut or double cells; allow at most a few cells to differ
    assert s["n_true"] - s["precision"] * s["n_pred"] <= 3
    assert abs(s["n_true"] - s["n_pred"]) <= 2
    assert s["ap75"] > 0.95


def test_nuclei_model_counts_synthetic_nuclei():
    nuclei = Model.from_pretrained("nuclei")
    assert nuclei.config.flatfield == "subtract"
    f = synthetic_field((384, 384), diameter=30, seed=1)
    labels, details = nuclei.predict_instances(f["nuclei"])
    assert average_precision(f["nuclei_labels"], labels)["ap50"] > 0.8
    assert 10 < details["diameter"] < 22  # nuclei are ~0.45 of a 30 px cell


@pytest.mark.parametrize("channel, name", [("tl", "tl-cells"), ("nuclei", "nuclei")])
def test_an_empty_well_counts_no_cells(tl_cells, channel, name):
    # an empty control well (shading, debris, camera noise, no cells) must count 0, with
    # the diameter given (a plate run) and estimated (a single image)
    model = tl_cells if name == "tl-cells" else Model.from_pretrained(name)
    f = synthetic_field((384, 384), n_cells=0, diameter=28, modality="brightfield", debris=8,
                        seed=2)
    image = f[channel].astype(np.float32)
    assert f["n_cells"] == 0
    assert model.predict_instances(image, diameter=28 if channel == "tl" else 13)[1]["n_cells"] == 0
    assert model.predict_instances(image)[1]["n_cells"] == 0


def _peaks(centres, shape=(40, 90), radius=20.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return np.max([1 - np.hypot(yy - cy, xx - cx) / radius for cy, cx in centres], axis=0).clip(0)


def test_merge_joins_two_seeds_on_a_ridge_but_not_across_a_valley():
    from tlseg.inference.postprocess import InstanceConfig, maps_to_instances

    # an elongated cell: two distance peaks joined by a ridge that stays high
    yy, xx = np.mgrid[:40, :90]
    ridge = np.where((xx > 25) & (xx < 65), 1.6 * (1 - np.abs(yy - 20) / 20), 0).clip(0, 0.85)
    elongated = np.maximum(_peaks([(20, 25), (20, 65)]), ridge)
    # two round cells touching: the distance falls to 0 between them
    touching = _peaks([(20, 25), (20, 65)])
    for dist, expected in ((elongated, 1), (touching, 2)):
        lab = maps_to_instances((dist > 0).astype(float), dist, canonical_diameter=20,
                                config=InstanceConfig(seed_threshold=0.9, merge_threshold=0.4))
        assert lab.max() == expected
    # without merging the elongated cell is split in two
    lab = maps_to_instances((elongated > 0).astype(float), elongated, canonical_diameter=20,
                            config=InstanceConfig(seed_threshold=0.9, merge_threshold=0.0))
    assert lab.max() == 2


def test_faint_cells_are_dropped_and_the_rest_renumbered():
    from tlseg.inference.postprocess import InstanceConfig, maps_to_instances

    # three cells; the middle one's foreground probability is 0.55 throughout
    dist = _peaks([(20, 15), (20, 45), (20, 75)])
    prob = (dist > 0).astype(float)
    prob[:, 31:59] *= 0.55
    cfg = InstanceConfig(fg_threshold=0.4, seed_threshold=0.5)
    kept = maps_to_instances(prob, dist, canonical_diameter=20, config=cfg)
    assert kept.max() == 3
    lab = maps_to_instances(prob, dist, canonical_diameter=20,
                            config=InstanceConfig(fg_threshold=0.4, seed_threshold=0.5,
                                                  min_mean_prob=0.7))
    assert lab.max() == 2 and set(np.unique(lab)) == {0, 1, 2}
    assert lab[20, 45] == 0 and lab[20, 15] > 0 and lab[20, 75] > 0
    with pytest.raises(ValueError, match="min_mean_prob"):
        InstanceConfig(min_mean_prob=1.0)


def test_objects_small_for_their_field_are_dropped_where_the_field_has_enough():
    from tlseg.inference.postprocess import (
        MIN_OBJECTS_FOR_MEDIAN,
        InstanceConfig,
        maps_to_instances,
    )

    def field(n_nuclei):
        """n_nuclei discs of radius 6, a speck of radius 2 and a small disc cut by the edge"""
        yy, xx = np.mgrid[:60, :200]
        centres = [(15 + 30 * (k % 2), 10 + 15 * (k // 2)) for k in range(n_nuclei)]
        dist = np.zeros(yy.shape)
        for (cy, cx), r in [*((c, 6) for c in centres), ((30, 185), 2), ((0, 170), 3)]:
            dist = np.maximum(dist, (1 - np.hypot(yy - cy, xx - cx) / r).clip(0))
        return (dist > 0).astype(float), dist

    cfg = InstanceConfig(fg_threshold=0.4, seed_threshold=0.3, min_area_fraction=0.0)
    floor = InstanceConfig(fg_threshold=0.4, seed_threshold=0.3, min_area_fraction=0.0,
                           min_area_of_median=0.2)
    prob, dist = field(MIN_OBJECTS_FOR_MEDIAN + 2)
    everything = maps_to_instances(prob, dist, canonical_diameter=12, config=cfg)
    kept = maps_to_instances(prob, dist, canonical_diameter=12, config=floor)
    assert everything.max() == MIN_OBJECTS_FOR_MEDIAN + 4  # the nuclei, the speck, the cut one
    assert kept.max() == everything.max() - 1 and kept[30, 185] == 0 and kept[0, 170] > 0
    few = field(MIN_OBJECTS_FOR_MEDIAN - 3)  # too few nuclei for a median: nothing dropped
    assert (maps_to_instances(*few, canonical_diameter=12, config=floor).max()
            == maps_to_instances(*few, canonical_diameter=12, config=cfg).max())
    with pytest.raises(ValueError, match="min_area_of_median"):
        InstanceConfig(min_area_of_median=1.0)


def test_cells_whose_flows_point_away_are_dropped():
    from tlseg.inference.postprocess import InstanceConfig, maps_to_instances

    # three cells; the middle one's flows point away from its centre (a gap between
    # cells, whose pixels flow to the cells around it), the others' to their centres
    centres = [(20, 15), (20, 45), (20, 75)]
    dist = _peaks(centres)
    prob = (dist > 0).astype(float)
    yy, xx = np.mgrid[: dist.shape[0], : dist.shape[1]]
    near = np.argmin([np.hypot(yy - cy, xx - cx) for cy, cx in centres], axis=0)
    cy = np.array([c[0] for c in centres])[near]
    cx = np.array([c[1] for c in centres])[near]
    flow = np.stack([cy - yy, cx - xx]).astype(float)
    flow[:, near == 1] *= -1
    cfg = InstanceConfig(fg_threshold=0.4, seed_threshold=0.5)
    assert maps_to_instances(prob, dist, canonical_diameter=20, config=cfg, flow=flow).max() == 3
    strict = InstanceConfig(fg_threshold=0.4, seed_threshold=0.5, min_flow_coherence=0.3)
    lab = maps_to_instances(prob, dist, canonical_diameter=20, config=strict, flow=flow)
    assert lab.max() == 2 and lab[20, 45] == 0 and lab[20, 15] > 0 and lab[20, 75] > 0
    with pytest.raises(ValueError, match="needs flow maps"):
        maps_to_instances(prob, dist, canonical_diameter=20, config=strict)
    with pytest.raises(ValueError, match="min_flow_coherence"):
        InstanceConfig(min_flow_coherence=1.0)


def test_teaching_steps_scale_with_the_number_of_rois():
    from tlseg.teaching.teach import default_steps

    assert default_steps("finetune", 10) == 2 * default_steps("finetune", 5)
    assert default_steps("finetune", 1) == 100 and default_steps("finetune", 1000) == 1200
    assert default_steps("retrain", 10) >= default_steps("finetune", 10)


def test_banded_watershed_equals_the_whole_image_one():
    """Large images are flooded in bands of rows (memory); the result must not change."""
    from scipy import ndimage as ndi
    from skimage.segmentation import watershed

    from tlseg.inference.labels import banded_watershed
    from tlseg.training.targets import make_targets

    f = synthetic_field((600, 400), diameter=30, seed=11)
    t = make_targets(f["labels"], canonical_diameter=30.0)
    fg, dist = t[0] > 0, t[1]
    seeds, _ = ndi.label(dist > 0.5)
    whole = watershed(-dist, seeds, mask=fg)
    banded = banded_watershed(-dist, seeds, fg, halo=90, band=128, max_pixels=0)
    assert banded.dtype == whole.dtype and np.array_equal(banded, whole)
    # a halo too thin to reach the seeds does change the result: the bands are real
    thin = banded_watershed(-dist, seeds, fg, halo=0, band=128, max_pixels=0)
    assert not np.array_equal(thin, whole)


def test_outlines_enlarged_from_the_canonical_scale_are_smooth():
    """Labels made on a 4x smaller image follow the cell more closely than pixel blocks."""
    import torch

    from tlseg.inference.labels import resize_labels, upsample_labels

    yy, xx = np.mgrid[:200, :200]
    cell = np.hypot(yy - 97.3, xx - 101.6) < 61  # the true cell at full size
    prob = torch.nn.functional.avg_pool2d(torch.from_numpy(cell.astype(np.float32))[None, None],
                                          4)[0, 0].numpy()  # its probability, 4x smaller
    small = (prob > 0.5).astype(np.int32)

    def iou(a):
        return (a & cell).sum() / (a | cell).sum()

    blocky = resize_labels(small, cell.shape) > 0
    smooth = upsample_labels(small, prob, cell.shape, fg_threshold=0.5)
    assert smooth.dtype == small.dtype and set(np.unique(smooth)) == {0, 1}
    assert iou(smooth > 0) > iou(blocky) + 0.005
    assert small.max() == 1 and small.shape == (50, 50)  # the input is left alone


def test_repeatable_blocks_in_several_threads_restore_the_setting_after_the_last():
    import threading

    inside = threading.Barrier(4)
    seen = []

    def work():
        with repeatable():
            inside.wait(timeout=10)  # all four open at once
            seen.append(torch.are_deterministic_algorithms_enabled())
            inside.wait(timeout=10)  # none closes before all have looked

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == [True] * 4
    assert not torch.are_deterministic_algorithms_enabled()
