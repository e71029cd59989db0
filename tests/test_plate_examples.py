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
