"""The report's example sites: a zoom where the cells are, shading flattened for display."""

import numpy as np
import pytest

from tlseg.plate.examples import busiest_window, display_gray, example_figure


def _discs(shape, centres, r=6):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    lab = np.zeros(shape, np.int32)
    for i, (y, x) in enumerate(centres, 1):
        lab[(yy - y) ** 2 + (xx - x) ** 2 <= r * r] = i
    return lab


def test_busiest_window_is_where_the_cells_are():
    lab = _discs((400, 500), [(330, 420), (350, 450), (320, 460), (40, 40)])
    y0, x0 = busiest_window(lab, 120)
    assert 0 <= y0 <= 400 - 120 and 0 <= x0 <= 500 - 120
    assert y0 <= 320 - 6 and y0 + 120 >= 350 + 6  # all three of the cluster inside
    assert x0 <= 420 - 6 and x0 + 120 >= 460 + 6


def test_busiest_window_without_cells_is_central_and_fits_small_images():
    assert busiest_window(np.zeros((100, 300), np.int32), 60) == (20, 120)
    assert busiest_window(_discs((50, 80), [(25, 40)]), 200) == (0, 0)


def test_display_gray_flattens_a_gradient():
    rng = np.random.default_rng(0)
    ramp = np.linspace(100, 1000, 512)[None, :] * np.ones((512, 1))
    img = ramp * (1 + 0.02 * rng.standard_normal((512, 512)))
    g = display_gray(img)
    assert g.min() >= 0 and g.max() <= 1
    # a plain percentile stretch keeps the ramp (left dark, right bright); this does not
    assert abs(g[:, :100].mean() - g[:, -100:].mean()) < 0.1


def test_example_figure_has_the_site_and_the_zoom():
    rng = np.random.default_rng(1)
    lab = _discs((300, 300), [(200, 200), (220, 230), (60, 60)])
    img = 100 + 20 * (lab > 0) + rng.normal(0, 2, lab.shape)
    fig = example_figure(img, lab, lab, diameter=12)
    whole, zoom = fig.axes
    assert "300 x 300" in whole.get_title()
    assert zoom.get_title().endswith("2 cells")  # the zoom is 120 px, on the pair
    assert example_figure(img, np.zeros_like(lab)).axes[1].get_title().endswith("0 cells")
    with pytest.raises(ValueError, match="shape"):
        example_figure(img, lab[:10])


def test_example_figure_zooms_on_the_uncounted_texture():
    rng = np.random.default_rng(2)
    lab = _discs((300, 300), [(200, 200), (220, 230), (240, 210)])
    img = 100 + 20 * (lab > 0) + rng.normal(0, 2, lab.shape)
    uncounted = np.zeros(lab.shape, bool)
    uncounted[20:70, 30:90] = True  # far from the cells
    zoom = example_figure(img, lab, diameter=12, uncounted=uncounted).axes[1]
    x0, x1, y1, y0 = zoom.get_images()[0].get_extent()
    assert y0 <= 20 and y1 >= 70 and x0 <= 30 and x1 >= 90
    assert zoom.get_title().endswith("0 cells")
    # nothing uncounted, or a mask of another shape: the zoom stays on the cells
    for mask in (np.zeros_like(uncounted), uncounted[:10]):
        assert example_figure(img, lab, diameter=12, uncounted=mask).axes[1].get_title(
        ).endswith("3 cells")


def test_uncounted_patches_are_the_texture_the_check_counts():
    from tlseg import synthetic_field, uncounted_patches, uncounted_texture

    field = synthetic_field((256, 256), diameter=30, n_cells=40, seed=0)
    truth = field["labels"]
    few = np.where(np.isin(truth, [1, 2, 3, 4]), truth, 0)
    patches = uncounted_patches(field["tl"], few, 30)
    assert patches.shape == truth.shape and patches.dtype == bool
    assert uncounted_texture(field["tl"], few, 30) > 0.5
    # the missed cells are what it marks, the found ones are not
    assert (patches & (truth > 0)).sum() > 0.5 * patches.sum()
    assert not (patches & (few > 0)).any()
    assert not uncounted_patches(field["tl"], np.zeros_like(truth), 30).any()
