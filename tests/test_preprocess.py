import numpy as np
import pytest
import torch

from tlseg.inference.labels import raster_order
from tlseg.inference.postprocess import InstanceConfig, maps_to_instances
from tlseg.inference.preprocess import normalize, repair_edge_lines, rescale
from tlseg.synthetic import synthetic_field
from tlseg.training.targets import UNKNOWN, make_targets, median_diameter


def test_normalisation_ignores_bit_depth_and_shading():
    f = synthetic_field((256, 256), shading=0.0, noise=0.0, seed=1)
    x = torch.from_numpy(f["tl"].astype(np.float32))[None, None]
    ref = normalize(x, sigma=90)
    as8bit = normalize(x / 16, sigma=90)
    assert torch.allclose(ref, as8bit, atol=1e-3)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 256), torch.linspace(0, 1, 256), indexing="ij")
    shaded = normalize(x * (0.5 + xx)[None, None], sigma=90)  # 3x gradient across the field
    bg = torch.from_numpy(f["labels"] == 0)[None, None]
    # background stays flat: left and right halves agree after correction
    left, right = shaded[..., :, :128][bg[..., :, :128]], shaded[..., :, 128:][bg[..., :, 128:]]
    assert abs(float(left.median() - right.median())) < 0.02
    raw_l = (x * (0.5 + xx))[..., :, :128][bg[..., :, :128]].median()
    raw_r = (x * (0.5 + xx))[..., :, 128:][bg[..., :, 128:]].median()
    assert float(raw_r / raw_l) > 1.5  # the gradient was real


def test_rescale_shapes():
    img = np.random.default_rng(0).random((100, 60)).astype(np.float32)
    assert rescale(img, 0.5).shape == (50, 30)
    assert rescale(img, 2.0).shape == (200, 120)
    assert rescale(img, 1.0) is not None


def test_targets_split_touching_cells_and_mark_unknown():
    lab = np.zeros((30, 40), int)
    lab[5:25, 5:20] = 1
    lab[5:25, 20:35] = 2
    lab[0:2, :] = UNKNOWN
    t = make_targets(lab, canonical_diameter=20)
    fg, dist, logsize, valid, flow_y, flow_x = t
    assert valid[0].sum() == 0 and valid[10].all()
    assert dist[15, 19] < 0.2 and dist[15, 12] > 0.8  # valley between, peak inside
    # a seeded watershed on the targets recovers both cells
    inst = maps_to_instances(fg, dist, canonical_diameter=20)
    assert inst.max() == 2
    # so does following the flows, which point into each cell, towards its centre
    assert flow_x[15, 19] < -0.9 and flow_x[15, 20] > 0.9 and flow_y[6, 12] > 0.9
    inst = maps_to_instances(fg, dist, canonical_diameter=20, flow=t[4:6],
                             config=InstanceConfig(use_flows=True))
    assert inst.max() == 2 and len(np.unique(inst[5:25, 5:20])) == 1
    assert median_diameter(lab) == np.float64(2 * np.sqrt(300 / np.pi))


def test_enlarging_keeps_fine_texture():
    """Small cells are enlarged to the canonical size; a blurring resize hides their texture."""
    import torch.nn.functional as F

    rng = np.random.default_rng(0)
    image = rng.normal(size=(64, 64)).astype(np.float32)
    up = rescale(image, 1.5)
    blurry = F.interpolate(torch.from_numpy(image)[None, None], size=up.shape, mode="bilinear",
                           align_corners=False)[0, 0].numpy()
    detail = lambda a: np.abs(np.diff(a, axis=1)).mean()  # noqa: E731
    assert detail(up) > 1.1 * detail(blurry)
    assert rescale(image, 0.5).shape == (32, 32)  # shrinking stays antialiased bilinear


def test_raster_order_numbers_cells_by_position_whatever_their_ids():
    from tlseg.synthetic import synthetic_field

    labels = synthetic_field((96, 96), diameter=20, seed=3)["labels"].astype(np.int32)
    perm = np.random.default_rng(0).permutation(labels.max()) + 1
    shuffled = np.where(labels > 0, np.concatenate([[0], perm])[labels], 0)
    a, b = raster_order(labels), raster_order(shuffled)
    np.testing.assert_array_equal(a, b)
    assert sorted(np.unique(a).tolist()) == list(range(labels.max() + 1))
    tops = [np.nonzero(a == i)[0].min() for i in range(1, a.max() + 1)]
    assert tops == sorted(tops)


@pytest.mark.parametrize("modality", ["phase", "brightfield", "dic"])
def test_synthetic_cells_are_textured_like_real_ones(modality):
    # real cells vary inside (rim left out) 5-30x the camera noise of their background
    # (median per source, docs/decisions.md, *Synthetic data*); cells smoother than that
    # made pockets of background between them look like cells on the demo plate
    from scipy import ndimage as ndi

    f = synthetic_field((256, 256), n_cells=20, diameter=28, modality=modality, seed=2)
    image, labels = f["tl"].astype(float), f["labels"]
    bg = (labels == 0) & (ndi.distance_transform_edt(labels == 0) > 4)
    noise = np.std((image - ndi.gaussian_filter(image, 2))[bg])
    inner = ndi.grey_erosion(labels, size=5)
    ids = np.unique(inner[inner > 0])
    texture = np.median(ndi.standard_deviation(image, inner, ids))
    assert texture > 3 * noise


@pytest.mark.parametrize("modality", ["phase", "dic", "brightfield"])
def test_only_edge_lines_unlike_the_image_are_repaired(modality):
    for seed in range(3):  # shading, cells at the border and noise are left alone
        f = synthetic_field((256, 320), diameter=30, modality=modality, shading=0.5, seed=seed)
        clean = f["tl"].astype(np.float32)
        assert repair_edge_lines(clean)[1] == 0
    lo, hi = np.percentile(clean, [0.1, 99.9])
    dark = clean.copy()
    dark[-1] -= 0.08 * (hi - lo)  # a sensor's darker last row
    dark[:, :2] += 0.06 * (hi - lo)  # and two brighter first columns
    fixed, n = repair_edge_lines(dark)
    assert n == 3
    np.testing.assert_array_equal(fixed[-1, 2:], clean[-2, 2:])
    np.testing.assert_array_equal(fixed[:-1, 0], fixed[:-1, 2])
    np.testing.assert_array_equal(fixed[:-1, 2:], clean[:-1, 2:])
