"""Reading images and label masks: the first stage of the data's journey.

tifffile (with imagecodecs for LZW/zlib/JPEG-compressed instrument TIFFs) reads TIFF and
OME-TIFF; imageio reads PNG/JPEG. Every reader error becomes a one-line
:class:`~tlseg.errors.TlsegError` naming the file.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import TlsegError

IMAGE_SUFFIXES = (".tif", ".tiff", ".png", ".jpg", ".jpeg")
JPEG_SUFFIXES = (".jpg", ".jpeg")
#: a JPEG whose steps at its 8 x 8 block edges are this many times its other pixel steps
#: is warned about: on the flat background of a faint brightfield field the blocks are read
#: as cells (a field of 24 cells: 1,399 at quality 85, blockiness 2.8; 24 at quality 95,
#: 1.4). Natural images and lossless files read about 1.0
BLOCKY = 1.5


def jpeg_blockiness(image: np.ndarray) -> float:
    """How much JPEG's 8 x 8 blocks show: the mean absolute step between neighbouring
    pixels across block edges over the mean step elsewhere, averaged over rows and
    columns (1.0 without blocks; see :data:`BLOCKY`).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> noise = rng.normal(100, 5, (64, 64))
    >>> round(jpeg_blockiness(noise), 1)
    1.0
    >>> blocks = np.kron(rng.normal(100, 5, (8, 8)), np.ones((8, 8)))  # flat 8 x 8 tiles
    >>> jpeg_blockiness(blocks + rng.normal(0, 1, (64, 64))) > BLOCKY
    True
    """
    x = np.asarray(image, dtype=np.float32)
    ratios = []
    for axis in (0, 1):
        if x.shape[axis] < 17:
            continue
        steps = np.abs(np.diff(x, axis=axis))
        edge = np.zeros(steps.shape[axis], bool)
        edge[7::8] = True  # the step from pixel 8k-1 to 8k
        across = np.compress(edge, steps, axis=axis).mean()
        inside = np.compress(~edge, steps, axis=axis).mean()
        if inside > 0:
            ratios.append(float(across / inside))
    return float(np.mean(ratios)) if ratios else 1.0


def list_images(paths) -> list[Path]:
    """Expand files and directories into a sorted list of image files.

    Parameters
    ----------
    paths : path or list of paths
        Image files (TIFF, PNG, JPEG) and folders of them (not recursive).

    Returns
    -------
    list of Path
        Files named ``*_masks.tif`` and ``*_overlay.png`` (tlseg's own outputs) are
        skipped when a folder is expanded.

    Raises
    ------
    TlsegError
        A path that does not exist, or no image at all.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(
                f
                for f in p.iterdir()
                if f.suffix.lower() in IMAGE_SUFFIXES
                and not f.stem.endswith(("_masks", "_overlay"))
                and not f.name.startswith(".")
            )
            if not found:
                raise TlsegError(f"{p}: no images (.tif, .png, .jpg) in this directory"
                                 f"{subfolder_hint(p)}")
            out.extend(found)
        elif p.exists():
            out.append(p)
        else:
            raise TlsegError(f"{p}: no such file or directory")
    return out


def subfolder_hint(folder: Path) -> str:
    """For an error on a folder without images: "; give the folder that holds them, e.g.
    FOLDER/SUB" when a subfolder holds images (a plate's ``plate/``), else ""."""
    inside = [d for d in sorted(Path(folder).iterdir()) if d.is_dir()
              and not d.name.startswith(".")
              and any(f.suffix.lower() in IMAGE_SUFFIXES for f in d.iterdir())]
    return f"; give the folder that holds them, e.g. {inside[0]}" if inside else ""


def _read_raw(path: Path) -> tuple[np.ndarray, str]:
    if path.stat().st_size == 0:
        raise TlsegError(f"{path}: file is empty (0 bytes); re-export or remove it")
    # tifffile logs what it finds wrong with a damaged file (then often fails with a
    # bare IndexError): keep its first complaint for our one-line message instead of
    # letting it print
    complaints = _Complaints()
    tiff_log = logging.getLogger("tifffile")
    tiff_log.addHandler(complaints)
    propagate, tiff_log.propagate = tiff_log.propagate, False
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            import tifffile

            with tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                data = series.asarray()
                axes = series.axes
        else:
            import imageio.v3 as iio

            data = np.asarray(iio.imread(path))
            axes = "YXS" if data.ndim == 3 else "YX"
    except TlsegError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure: truncated, corrupt, codec
        msg = complaints.first or (str(exc).splitlines()[0] if str(exc) else
                                   type(exc).__name__)
        raise TlsegError(f"{path}: cannot read image ({msg}); is the file complete?") from None
    finally:
        tiff_log.removeHandler(complaints)
        tiff_log.propagate = propagate
    return _squeeze_axes(data, axes)


class _Complaints(logging.Handler):
    """Keeps the first warning a reader logs (its text without the object's repr)."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.first: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.first is None:
            text = record.getMessage().splitlines()[0]
            self.first = text.split("> ", 1)[-1] if text.startswith("<") else text


def _squeeze_axes(data: np.ndarray, axes: str) -> tuple[np.ndarray, str]:
    """Drop singleton axes, keeping the axis letters in step."""
    keep = [i for i, n in enumerate(data.shape) if n > 1 or axes[i] in "YX"]
    data = data.reshape([data.shape[i] for i in keep])
    return data, "".join(axes[i] for i in keep)


def read_image(
    path,
    *,
    channel: int | None = None,
    plane: int | None = None,
) -> np.ndarray:
    """Read one 2-D gray image as float32.

    Parameters
    ----------
    path : str or Path
        TIFF/OME-TIFF, PNG or JPEG file.
    channel : int, optional
        Which channel of a multi-channel image to use. RGB(A) images without a choice
        are converted to gray (luminance).
    plane : int, optional
        Which plane (Z or T) of a stack to use. Stacks without a choice are an error.

    Returns
    -------
    image : ndarray of float32, shape (Y, X)

    Raises
    ------
    TlsegError
        Empty, corrupt or unsupported file; unsupported dtype; NaN/Inf pixels; a stack
        or multi-channel image without ``channel``/``plane``; a degenerate shape.

    Examples
    --------
    >>> import tlseg, tifffile, tempfile, numpy as np
    >>> path = tempfile.mktemp(suffix=".tif")
    >>> tifffile.imwrite(path, np.zeros((5, 64, 64), np.uint16))
    >>> tlseg.read_image(path, plane=1).shape
    (64, 64)
    >>> tlseg.read_image(path)
    Traceback (most recent call last):
    ...
    tlseg.errors.TlsegError: ...: 3-D stack of 5 planes; choose one with --plane N (0..4)
    """
    path = Path(path)
    data, axes = _read_raw(path)
    return as_gray_2d(data, axes, name=str(path), channel=channel, plane=plane)


def as_gray_2d(
    data: np.ndarray,
    axes: str | None = None,
    *,
    name: str = "image",
    channel: int | None = None,
    plane: int | None = None,
) -> np.ndarray:
    """Check an array and reduce it to one 2-D float32 image.

    ``axes`` uses tifffile's letters (``Y``, ``X``, ``S`` samples, ``C`` channel, ``Z``,
    ``T``, ``Q`` unknown). Without axes, a trailing axis of 3 or 4 is taken as RGB(A) and
    any other leading axis as planes.
    """
    data = np.asarray(data)
    if data.dtype == bool or data.dtype.kind in "cOUSV":
        raise TlsegError(
            f"{name}: unsupported pixel type {data.dtype}; save the image as 8/16-bit "
            "integer or float"
        )
    if data.ndim < 2:
        raise TlsegError(f"{name}: not an image (shape {data.shape}); expected a 2-D image")
    if axes is None:
        if data.ndim == 3 and data.shape[-1] in (3, 4):
            axes = "YXS"
        else:
            axes = "Q" * (data.ndim - 2) + "YX"
    axes = axes.replace("I", "Q")
    # colour samples (RGB) -> gray, unless a channel was chosen
    if "S" in axes:
        s = axes.index("S")
        if channel is not None:
            data = _take(data, s, channel, name, "channel")
        else:
            data = _rgb_to_gray(np.moveaxis(data, s, -1))
            channel = -1  # consumed
        axes = axes.replace("S", "")
    if "C" in axes:
        c = axes.index("C")
        if channel is None or channel == -1:
            raise TlsegError(
                f"{name}: image has {data.shape[c]} channels; choose one with --channel N "
                f"(0..{data.shape[c] - 1})"
            )
        data = _take(data, c, channel, name, "channel")
        axes = axes.replace("C", "")
    extra = [i for i, a in enumerate(axes) if a not in "YX"]
    if len(extra) > 1:
        raise TlsegError(
            f"{name}: {data.ndim}-D stack (axes {axes}, shape {data.shape}); "
            "export one 2-D plane"
        )
    if extra:
        if plane is None:
            raise TlsegError(
                f"{name}: 3-D stack of {data.shape[extra[0]]} planes; choose one with "
                f"--plane N (0..{data.shape[extra[0]] - 1})"
            )
        data = _take(data, extra[0], plane, name, "plane")
    if data.ndim != 2:
        raise TlsegError(f"{name}: cannot reduce shape {data.shape} to a 2-D image")
    if min(data.shape) < 8:
        raise TlsegError(
            f"{name}: image of {data.shape[0]}x{data.shape[1]} pixels is too small to "
            "segment (need at least 8x8)"
        )
    image = data.astype(np.float32, copy=False)
    if not np.isfinite(image).all():
        n = int((~np.isfinite(image)).sum())
        raise TlsegError(
            f"{name}: {n} pixels are NaN or infinite; replace them (e.g. with the median) "
            "before segmenting"
        )
    return image


def _take(data, axis, index, name, what):
    n = data.shape[axis]
    if not -n <= index < n:
        raise TlsegError(f"{name}: --{what} {index} is out of range (0..{n - 1})")
    return np.take(data, index, axis=axis)


def _rgb_to_gray(rgb: np.ndarray) -> np.ndarray:
    rgb = rgb[..., :3].astype(np.float32)
    return rgb @ np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)


def read_labels(path, *, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read an instance-label image (0 = background) as int32.

    Parameters
    ----------
    path : path
        TIFF or PNG of integer labels.
    shape : (int, int), optional
        The shape the labels must have (their image's); a mismatch is an error.

    Returns
    -------
    ndarray of int32 (H, W)

    Raises
    ------
    TlsegError
        Unreadable file, not 2-D, negative labels, or a shape other than ``shape``.
    """
    path = Path(path)
    data, _ = _read_raw(path)
    if data.ndim != 2:
        raise TlsegError(f"{path}: label image must be 2-D, got shape {data.shape}")
    if data.dtype.kind not in "ui" and not (
        data.dtype.kind == "f" and np.all(np.mod(data, 1) == 0)
    ):
        raise TlsegError(f"{path}: labels must be integers, got {data.dtype}")
    if shape is not None and tuple(data.shape) != tuple(shape):
        raise TlsegError(
            f"{path}: mask shape {data.shape[0]}x{data.shape[1]} differs from the image "
            f"({shape[0]}x{shape[1]}); masks must match their image pixel for pixel"
        )
    if data.min() < 0:
        raise TlsegError(f"{path}: labels must be >= 0 (0 = background)")
    if data.max() > np.iinfo(np.int32).max:
        raise TlsegError(f"{path}: label values up to {data.max()} do not fit in 32 bits; "
                         "renumber the cells 1..n (e.g. skimage.segmentation.relabel_sequential)")
    return data.astype(np.int32)
