import os

import imageio.v3 as iio
import numpy as np
import pytest
import tifffile

from tlseg.errors import TlsegError
from tlseg.io import as_gray_2d, list_images, read_image, read_labels, write_labels


def test_reads_lzw_tiff_8_16_bit_and_float(tmp_path, field):
    for dtype in (np.uint8, np.uint16, np.float32):
        data = (field["tl"] // (16 if dtype == np.uint8 else 1)).astype(dtype)
        p = tmp_path / f"x_{np.dtype(dtype).name}.tif"
        tifffile.imwrite(p, data, compression="lzw")
        img = read_image(p)
        assert img.dtype == np.float32 and img.shape == field["tl"].shape
        np.testing.assert_array_equal(img, data.astype(np.float32))


def test_rgb_png_and_jpeg_become_gray(tmp_path):
    rgb = np.zeros((32, 40, 3), np.uint8)
    rgb[..., 1] = 200
    for ext in (".png", ".jpg"):
        p = tmp_path / f"c{ext}"
        iio.imwrite(p, rgb)
        img = read_image(p)
        assert img.shape == (32, 40)
        assert 130 < img.mean() < 155  # luminance of pure green 200


def test_stack_needs_plane_and_channel_choice(tmp_path):
    stack = np.random.default_rng(0).integers(0, 255, (5, 32, 32), dtype=np.uint8)
    p = tmp_path / "stack.tif"
    tifffile.imwrite(p, stack)
    with pytest.raises(TlsegError, match="--plane"):
        read_image(p)
    np.testing.assert_array_equal(read_image(p, plane=2), stack[2])
    with pytest.raises(TlsegError, match="out of range"):
        read_image(p, plane=9)
    multi = np.zeros((2, 32, 32), np.uint16)
    with pytest.raises(TlsegError, match="--channel"):
        as_gray_2d(multi, "CYX", name="m")
    assert as_gray_2d(multi, "CYX", name="m", channel=1).shape == (32, 32)
    with pytest.raises(TlsegError, match="4-D stack"):
        as_gray_2d(np.zeros((2, 3, 32, 32)), "TZYX", name="m")


@pytest.mark.parametrize(
    "data, match",
    [
        (np.zeros((16, 16), complex), "unsupported pixel type"),
        (np.zeros((16, 16), bool), "unsupported pixel type"),
        (np.full((16, 16), np.nan, np.float32), "NaN"),
        (np.zeros((1, 1), np.uint8), "too small"),
        (np.zeros((4,), np.uint8), "not an image"),
    ],
)
def test_bad_arrays_give_one_line_errors(data, match):
    with pytest.raises(TlsegError, match=match) as err:
        as_gray_2d(data, name="bad.tif")
    assert "\n" not in str(err.value) and "bad.tif" in str(err.value)


def test_empty_and_corrupt_files(tmp_path, field, capfd):
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    with pytest.raises(TlsegError, match="empty"):
        read_image(empty)
    good = tmp_path / "good.tif"
    tifffile.imwrite(good, field["tl"], compression="zlib")
    truncated = tmp_path / "truncated.tif"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(TlsegError, match="truncated.tif: cannot read image"):
        read_image(truncated)
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not a png at all")
    with pytest.raises(TlsegError, match="cannot read image"):
        read_image(junk)
    # a damaged header: tifffile's own complaint becomes the reason, and it prints nothing
    header = tmp_path / "header.tif"
    header.write_bytes(b"II*\x00garbage" * 10)
    with pytest.raises(TlsegError, match=r"header.tif: cannot read image \(invalid offset"):
        read_image(header)
    assert capfd.readouterr().err == ""


def test_labels_shape_mismatch_and_dtype(tmp_path):
    p = tmp_path / "m.tif"
    tifffile.imwrite(p, np.ones((10, 12), np.uint16))
    with pytest.raises(TlsegError, match="differs from the image"):
        read_labels(p, shape=(10, 10))
    q = tmp_path / "f.tif"
    tifffile.imwrite(q, np.full((10, 10), 0.5, np.float32))
    with pytest.raises(TlsegError, match="integers"):
        read_labels(q)


def test_write_labels_is_atomic_and_round_trips(tmp_path, monkeypatch):
    lab = np.arange(100, dtype=np.int32).reshape(10, 10)
    out = tmp_path / "o" / "x_masks.tif"
    write_labels(out, lab)
    np.testing.assert_array_equal(tifffile.imread(out), lab)
    assert tifffile.imread(out).dtype == np.uint16
    # permissions as a plain open() would give, not mkstemp's owner-only 0600
    umask = os.umask(0)
    os.umask(umask)
    assert out.stat().st_mode & 0o777 == 0o666 & ~umask

    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(tifffile, "imwrite", boom)
    with pytest.raises(RuntimeError):
        write_labels(out, lab * 2)
    # the earlier file is intact and no temporary file is left behind
    np.testing.assert_array_equal(tifffile.imread(out), lab)
    assert [f.name for f in out.parent.iterdir()] == ["x_masks.tif"]


def test_list_images_skips_outputs(tmp_path):
    (tmp_path / "a.tif").write_bytes(b"x")
    (tmp_path / "a_masks.tif").write_bytes(b"x")
    (tmp_path / "a_overlay.png").write_bytes(b"x")
    assert [p.name for p in list_images([tmp_path])] == ["a.tif"]
    with pytest.raises(TlsegError, match="no such file"):
        list_images([tmp_path / "nope.tif"])


def test_a_folder_without_images_names_the_subfolder_that_holds_them(tmp_path):
    (tmp_path / "run" / "images").mkdir(parents=True)
    (tmp_path / "run" / "images" / "a.tif").write_bytes(b"x")
    with pytest.raises(TlsegError, match=r"no images .*e\.g\. .*run.images$"):
        list_images([tmp_path / "run"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(TlsegError, match=r"no images .*in this directory$"):
        list_images([tmp_path / "empty"])


def test_overlay_outlines_are_saturated_on_bright_and_dark_cells(tmp_path):
    """Outlines must read on a white nucleus as well as on a dark background."""
    from tlseg.analysis.overlay import write_overlay

    image = np.zeros((40, 80), np.float32)
    image[10:30, 10:30] = 1000.0  # a bright, saturated nucleus
    labels = np.zeros((40, 80), np.int32)
    labels[10:30, 10:30] = 1
    labels[10:30, 50:70] = 2  # a cell on the dark background
    write_overlay(tmp_path / "o.png", image, labels)
    rgb = iio.imread(tmp_path / "o.png").astype(int)
    for y, x in ((10, 20), (10, 60)):  # a top-edge pixel of each cell
        assert rgb[y, x].max() - rgb[y, x].min() > 200  # a colour, not white or grey
