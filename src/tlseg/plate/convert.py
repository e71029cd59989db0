"""Plate folder → OME-Zarr HCS plate (``tlseg plate convert``).

Any layout :func:`~tlseg.plate.layout.scan_plate` parses (ImageXpress, IN Cell
Analyzer, Operetta, a ``--pattern``) becomes an OME-NGFF plate written with
ome-zarr-py's own writer (``write_plate_metadata``, ``write_well_metadata``,
``write_image``): rows ``A``, ``B``..., columns ``01``, ``02``... (so the folder path
``B/03`` reads like the well ``B03``), one field per site, each a ``c, y, x`` image of
the site's channels at full resolution only, named in its ``omero`` metadata.
:mod:`~tlseg.plate.zarr` reads it back.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import numpy as np

from ..errors import TlsegError, check_positive
from .layout import row_name, scan_plate, split_well
from .zarr import CHUNK

log = logging.getLogger(__name__)

#: NGFF versions :func:`convert_plate` writes: 0.4 on Zarr v2, 0.5 on Zarr v3
NGFF_VERSIONS = ("0.4", "0.5")
#: display colours of the channels, in channel order (the first is usually TL: grey)
_COLORS = ("FFFFFF", "0000FF", "00FF00", "FF0000", "FF00FF", "00FFFF")


def _read_native(path: Path) -> np.ndarray:
    """A site's 2-D image in its own pixel type (uint16 stays uint16, so the plate run
    reads the same float32 pixels from the Zarr as from the file); stacks and RGB are
    reduced as :func:`tlseg.read_image` does, to float32."""
    from ..io.images import _read_raw, as_gray_2d

    data, axes = _read_raw(Path(path))
    gray = as_gray_2d(data, axes, name=str(path))  # the same checks as a plate run's read
    return data if axes == "YX" and data.dtype.kind in "uif" else gray


def _windows(stack: np.ndarray) -> list[dict]:
    """omero display windows: each channel's 0.1-99.9 % range, within its type's range."""
    out = []
    for channel in stack:
        lo, hi = np.percentile(channel, (0.1, 99.9))
        if stack.dtype.kind in "ui":
            info = np.iinfo(stack.dtype)
            low, high = float(info.min), float(info.max)
        else:
            low, high = float(channel.min()), float(channel.max())
        out.append({"start": float(lo), "end": float(hi), "min": low, "max": high})
    return out


def convert_plate(plate_dir, out, *, layout: str = "auto", pattern: str | None = None,
                  pixel_size: float | None = None, ngff_version: str = "0.4",
                  plate_name: str | None = None) -> Path:
    """Convert a plate folder into an OME-Zarr HCS plate (``tlseg plate convert``).

    Every site becomes one field (a ``c, y, x`` image, full resolution only) of its
    well, with the channels named as in the folder (``omero`` labels). Sites that lack
    a channel are left out, with a warning. Sites are renumbered 1, 2... in each well:
    fields are listed in site order, and a plate run numbers a field by its place.

    Parameters
    ----------
    plate_dir : path
        Folder of the plate's images (ImageXpress, IN Cell Analyzer or Operetta names,
        or ``pattern``; see :func:`~tlseg.plate.layout.scan_plate`).
    out : path
        The ``.zarr`` folder to make. It must not exist; it appears only when complete
        (the plate is written beside it under a temporary name, then renamed).
    layout : {'auto', 'imagexpress', 'incell', 'operetta'}
        File-name layout; ``pattern`` overrides it.
    pattern : str, optional
        Regular expression with named groups ``well`` (or ``row`` and ``col``),
        ``site`` and ``channel``.
    pixel_size : float, optional
        µm per pixel, written as the fields' ``y`` and ``x`` scale.
    ngff_version : {'0.4', '0.5'}
        0.4 (Zarr v2, the default) opens in every current NGFF reader (napari-ome-zarr,
        Fiji/MoBIE, QuPath, OMERO, ngio); 0.5 (Zarr v3) in the newer ones only.
    plate_name : str, optional
        The plate's ``name`` metadata (default: the folder's name).

    Returns
    -------
    Path
        ``out``.

    Raises
    ------
    TlsegError
        ``out`` exists, the folder holds no plate, or a site's channels differ in size.

    Examples
    --------
    >>> import tempfile, tlseg
    >>> from tlseg.plate.layout import scan_plate
    >>> root = tempfile.mkdtemp()
    >>> made = tlseg.make_demo_plate(root, replicates=1, sites=1, size=64)
    >>> plate = scan_plate(tlseg.convert_plate(made["plate"], f"{root}/demo.zarr"))
    >>> plate.layout, plate.wells, plate.channels
    ('ome-zarr', ['A01', 'B01', 'C01', 'D01'], ['w1', 'w2'])
    """
    import dask
    import zarr
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.writer import write_image, write_plate_metadata, write_well_metadata

    if ngff_version not in NGFF_VERSIONS:
        raise TlsegError(f"NGFF version {ngff_version!r} cannot be written; use one of "
                         f"{', '.join(NGFF_VERSIONS)}")
    check_positive("pixel_size", pixel_size, "µm")
    fmt = FormatV04() if ngff_version == "0.4" else FormatV05()
    out = Path(out)
    if out.exists():
        raise TlsegError(f"{out} already exists; give another -o or remove it")
    plate = scan_plate(plate_dir, layout=layout, pattern=pattern)
    if plate.layout == "ome-zarr":
        raise TlsegError(f"{plate.folder} is already an OME-Zarr plate")
    chans = plate.channels
    sites, problems = plate.sites(chans)
    for w in plate.duplicates + problems:
        log.warning(w)
    if not sites:
        raise TlsegError(f"{plate.folder}: no site has all of the channels {', '.join(chans)}")
    by_well: dict[tuple[str, str], list] = {}
    for s in sites:
        r, c = split_well(s.well)
        by_well.setdefault((row_name(r), f"{c:02d}"), []).append(s)
    row_names = sorted({r for r, _ in by_well}, key=lambda r: (len(r), r))
    col_names = sorted({c for _, c in by_well}, key=int)
    scale = {"c": 1.0, "y": pixel_size or 1.0, "x": pixel_size or 1.0}
    units = {"y": "micrometer", "x": "micrometer"} if pixel_size else None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        root = zarr.open_group(str(tmp), mode="w", zarr_format=fmt.zarr_format)
        write_plate_metadata(root, row_names, col_names, [f"{r}/{c}" for r, c in by_well],
                             fmt=fmt, field_count=max(len(v) for v in by_well.values()),
                             name=plate_name or plate.folder.name)
        for (r, c), well_sites in by_well.items():
            well = root.require_group(f"{r}/{c}")
            write_well_metadata(well, [{"path": str(i)} for i in range(len(well_sites))],
                                fmt=fmt)
            for i, site in enumerate(well_sites):
                planes = [_read_native(site.paths[ch]) for ch in chans]
                if len({(p.shape, p.dtype) for p in planes}) > 1:
                    sizes = ", ".join(f"{ch} {p.shape[0]}x{p.shape[1]} {p.dtype}"
                                      for ch, p in zip(chans, planes))
                    raise TlsegError(f"{site.well} site {site.site}: channels differ "
                                     f"({sizes}); an OME-Zarr field holds channels of one "
                                     "size and type")
                stack = np.stack(planes)
                omero = {"channels": [
                    {"label": ch, "color": _COLORS[k % len(_COLORS)], "window": w,
                     "active": True}
                    for k, (ch, w) in enumerate(zip(chans, _windows(stack)))]}
                # ome-zarr writes through a Dask computation: run it here, in this
                # thread, rather than on a distributed client the caller may hold
                with dask.config.set(scheduler="synchronous"):
                    write_image(stack, well.require_group(str(i)), scale_factors=[],
                                fmt=fmt, axes="cyx", scale=scale, axes_units=units,
                                storage_options={"chunks": (1, min(stack.shape[1], CHUNK),
                                                            min(stack.shape[2], CHUNK))},
                                omero=omero)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info(f"{plate.folder} -> {out}: {len(by_well)} wells, {len(sites)} fields, "
             f"channels {', '.join(chans)} (OME-NGFF {fmt.version})")
    return out
