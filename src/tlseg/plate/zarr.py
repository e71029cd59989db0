"""OME-Zarr plates: read an OME-NGFF HCS plate, and write its segmentations back into it.

An OME-NGFF high-content-screening plate is a Zarr hierarchy plate → row → column
(the well) → field, each field a multiscale image whose ``omero`` metadata names its
channels. tlseg names the well as everywhere else (row letter + 2-digit column: ``A01``)
and numbers the sites by the field's place in the well's ``images`` list, from 1.

:func:`~tlseg.plate.layout.scan_plate` reads a ``.zarr`` plate through
:func:`plate_fields`; :mod:`~tlseg.plate.convert` writes one from a plate folder.
A site's channel travels through the plate run as an *address*, ``<field>#c=<index>``
(the field group's folder and the channel's index on the ``c`` axis), in the place a
folder plate puts a file path: :class:`~tlseg.plate.layout.Site`, ``run.json`` and
``sites.csv`` stay as they are, and :func:`read_channel` reads either kind.

Written into each field by ``tlseg plate run --write-zarr``:

- ``labels/cells`` and ``labels/nuclei``: the instance labels as NGFF label images
  (``multiscales`` + ``image-label``, the field's own axes less ``c`` and its pixel
  scale), listed in ``labels``'s ``labels`` attribute, as napari-ome-zarr expects;
- ``tables/cells``: the per-cell table as a *feature table* of the ngio / Fractal table
  specification (group attributes ``type: feature_table``, ``region`` pointing at
  ``../labels/cells``, ``backend: parquet``, ``index_key: label``) with the rows in
  ``table.parquet`` beside them. NGFF has no table specification yet and napari-ome-zarr
  reads no tables; ngio (Fractal) does, and its Parquet backend is the same Parquet the
  run writes to ``cells/``, so no AnnData dependency is needed.

Library: ome-zarr-py (the ``ome-zarr`` package), not ngio or iohub: it is the OME
reference implementation, the one napari-ome-zarr is built with, and it reads and
writes both NGFF 0.4 (Zarr v2) and 0.5 (Zarr v3). Metadata goes through its
``ome_zarr.io`` location (which finds the version) and its writer; pixels are read and
label arrays written with zarr directly, because ome-zarr's array writer runs a Dask
computation, which inside a Dask worker would be sent back to the plate's cluster.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import TlsegError
from ..io import atomic_path

#: ``<field group folder>#c=<channel index>``: one channel of one field
_ADDRESS = re.compile(r"^(?P<field>.+)#c=(?P<c>\d+)$")
#: side of the square chunks written (fields smaller than this are one chunk)
CHUNK = 1024


def is_zarr(path) -> bool:
    """Whether ``path`` is a Zarr group (a ``.zarr`` folder, or one with Zarr metadata)."""
    path = Path(path)
    return path.is_dir() and (path.suffix.lower() == ".zarr" or (path / "zarr.json").is_file()
                              or (path / ".zgroup").is_file())


def _location(path):
    """ome-zarr's view of ``path``, opened with the NGFF version its Zarr format implies
    (asking for the current one would log a 'version mismatch' for every 0.4 group)."""
    import zarr
    from ome_zarr.format import FormatV04, FormatV05
    from ome_zarr.io import parse_url

    try:
        group = zarr.open_group(str(path), mode="r")
    except (FileNotFoundError, ValueError, KeyError) as exc:
        raise TlsegError(f"{path}: not a Zarr group ({type(exc).__name__})") from None
    fmt = FormatV04() if group.metadata.zarr_format == 2 else FormatV05()
    loc = parse_url(str(path), mode="r", fmt=fmt)
    if loc is None:
        raise TlsegError(f"{path}: not a Zarr group")
    return loc


def _axis_names(multiscale: dict) -> list[str]:
    axes = multiscale.get("axes")
    if axes is None:  # NGFF 0.1 / 0.2: always 5-D
        return list("tczyx")
    return [a["name"] if isinstance(a, dict) else str(a) for a in axes]


def _channel_names(attrs: dict, n: int) -> list[str]:
    """Channel names from ``omero`` labels; ``c0``, ``c1``... where a label is missing.
    A label two channels share gets its index appended, so every name is unique."""
    omero = (attrs.get("omero") or {}).get("channels") or []
    labels = [str(omero[i].get("label") or f"c{i}").strip() if i < len(omero) else f"c{i}"
              for i in range(n)]
    return [name if labels.count(name) == 1 else f"{name} (c{i})"
            for i, name in enumerate(labels)]


def plate_fields(path) -> tuple[list[dict], list[str]]:
    """The fields of an OME-NGFF HCS plate, one row per field and channel.

    :func:`~tlseg.plate.layout.scan_plate` turns these into a
    :class:`~tlseg.plate.layout.Plate` (well names, sorting).

    Parameters
    ----------
    path : path
        The plate's ``.zarr`` folder (NGFF 0.4 on Zarr v2 or 0.5 on Zarr v3).

    Returns
    -------
    fields : list of dict
        ``row`` and ``col`` (the plate's row and column names), ``site`` (the field's
        place in its well's ``images`` list + 1), ``channel`` (its name), ``plane`` (1)
        and ``path``: the channel's address ``<field>#c=<index>``, read with
        :func:`read_channel`.
    problems : list of str
        A message per well or field left out.

    Raises
    ------
    TlsegError
        Not a Zarr group, or not an HCS plate.
    """
    path = Path(path)
    loc = _location(path)
    plate = loc.root_attrs.get("plate")
    if not plate:
        kind = "an image" if "multiscales" in loc.root_attrs else "a Zarr group"
        raise TlsegError(f"{path}: {kind}, not an OME-Zarr HCS plate (no 'plate' metadata)")
    rows = [r["name"] for r in plate.get("rows", [])]
    cols = [c["name"] for c in plate.get("columns", [])]
    fields, problems = [], []
    for well in plate.get("wells", []):
        wpath = well["path"]
        try:
            if "rowIndex" in well and "columnIndex" in well:
                row, col = rows[well["rowIndex"]], cols[well["columnIndex"]]
            else:  # NGFF 0.1-0.3: the path is row/column
                row, col = wpath.split("/")
        except (IndexError, ValueError, TypeError):
            problems.append(f"{path}: well {wpath!r} is not in the plate's rows and "
                            "columns; well skipped")
            continue
        images = (loc.create(wpath).root_attrs.get("well") or {}).get("images", [])
        for index, image in enumerate(images):
            field_dir = path / wpath / image["path"]
            attrs = loc.create(f"{wpath}/{image['path']}").root_attrs
            if not attrs.get("multiscales"):
                problems.append(f"{field_dir}: no image in this field; site skipped")
                continue
            ms = attrs["multiscales"][0]
            axes = _axis_names(ms)
            n = 1
            if "c" in axes:
                import zarr

                arr = zarr.open_array(str(field_dir / ms["datasets"][0]["path"]), mode="r")
                n = arr.shape[axes.index("c")]
            for c, channel in enumerate(_channel_names(attrs, n)):
                fields.append({"row": str(row), "col": str(col), "site": index + 1,
                               "channel": channel, "plane": 1, "path": f"{field_dir}#c={c}"})
    return fields, problems


def field_of(path) -> Path | None:
    """The field folder of a channel address; None for an image file."""
    m = _ADDRESS.match(str(path))
    return Path(m.group("field")) if m else None


def _field_image(field: Path):
    """(multiscale metadata, axis names, level-0 zarr array) of a field."""
    import zarr

    loc = _location(field)
    multiscales = loc.root_attrs.get("multiscales")
    if not multiscales:
        raise TlsegError(f"{field}: not an OME-Zarr image (no multiscales metadata)")
    ms = multiscales[0]
    arr = zarr.open_array(str(field / ms["datasets"][0]["path"]), mode="r")
    return ms, _axis_names(ms), arr


def read_channel(path) -> np.ndarray:
    """One channel of one site as a 2-D float32 image: an image file (as
    :func:`tlseg.read_image`) or a channel address of an OME-Zarr field.

    Of a field, the one plane of the channel is read from the full-resolution level.

    Raises
    ------
    TlsegError
        The file or field cannot be read, or the field has several z-planes or time
        points (tlseg segments one 2-D plane per site).
    """
    from ..io import read_image
    from ..io.images import as_gray_2d

    m = _ADDRESS.match(str(path))
    if m is None:
        return read_image(path)
    field, c = Path(m.group("field")), int(m.group("c"))
    _, axes, arr = _field_image(field)
    shape = dict(zip(axes, arr.shape))
    stacked = [f"{shape[a]} {'z-planes' if a == 'z' else 'time points' if a == 't' else a}"
               for a in axes if a not in "cyx" and shape[a] > 1]
    if stacked:
        raise TlsegError(
            f"{field}: field of shape {tuple(arr.shape)} (axes {''.join(axes)}) has "
            f"{' and '.join(stacked)}; tlseg segments one 2-D plane per site: export a "
            "single plane (or a projection) per field")
    index = tuple(c if a == "c" else slice(None) if a in "yx" else 0 for a in axes)
    try:
        data = np.asarray(arr[index])
    except (OSError, ValueError, RuntimeError) as exc:  # a missing or corrupt chunk
        raise TlsegError(f"{field}: cannot read channel {c} ({type(exc).__name__}: {exc})"
                         ) from None
    return as_gray_2d(data, "YX", name=f"{field} channel {c}")


# -- writing segmentations back --------------------------------------------------------

def _attrs(group) -> dict:
    attrs = group.attrs.asdict()
    return dict(attrs.get("ome", attrs)) if group.metadata.zarr_format == 3 else attrs


def _set_attrs(group, fmt, **values) -> None:
    """Merge ``values`` into a group's NGFF attributes (under ``ome`` on Zarr v3)."""
    if group.metadata.zarr_format == 3:
        group.attrs["ome"] = {**_attrs(group), "version": fmt.version, **values}
    else:
        group.attrs.update(values)


def _write_label_image(field_group, fmt, ms: dict, axes: list[str], name: str,
                       labels: np.ndarray) -> None:
    """``labels/<name>``: a one-level NGFF label image with the field's axes less ``c``."""
    from ome_zarr.writer import write_multiscales_metadata

    label_axes = [a for a in ms.get("axes", [{"name": a} for a in axes])
                  if (a["name"] if isinstance(a, dict) else a) != "c"]
    names = [a["name"] if isinstance(a, dict) else a for a in label_axes]
    # the field's level-0 pixel size, so that napari lays the labels over the image
    scale = dict.fromkeys(axes, 1.0)
    for t in ms["datasets"][0].get("coordinateTransformations", []):
        if t.get("type") == "scale":
            scale = dict(zip(axes, t["scale"]))
    data = labels.reshape((1,) * (len(names) - 2) + labels.shape)
    data = data.astype(np.uint16 if labels.max(initial=0) < 2**16 else np.uint32)
    group = field_group.require_group(f"labels/{name}")
    chunks = (1,) * (len(names) - 2) + tuple(min(n, CHUNK) for n in labels.shape)
    extra = ({"chunk_key_encoding": {"name": "v2", "separator": "/"}} if fmt.zarr_format == 2
             else {"dimension_names": names})
    arr = group.create_array("0", shape=data.shape, dtype=data.dtype, chunks=chunks,
                             overwrite=True, **extra)
    arr[...] = data
    write_multiscales_metadata(
        group, datasets=[{"path": "0", "coordinateTransformations": [
            {"type": "scale", "scale": [scale.get(a, 1.0) for a in names]}]}],
        fmt=fmt, axes=label_axes, name=name)
    _set_attrs(group, fmt, **{"image-label": {"version": fmt.version,
                                              "source": {"image": "../../"}}})


def write_field_results(field, *, cells: np.ndarray, nuclei: np.ndarray | None,
                        table: pd.DataFrame) -> None:
    """Write a site's labels and per-cell table into its OME-Zarr field.

    ``labels/cells`` (and ``labels/nuclei``) as NGFF label images, and ``tables/cells``
    as an ngio feature table with a Parquet backend (see the module docstring).

    Zarr arrays cannot be written atomically (a chunk at a time, and object stores have
    no rename to swap a finished group in), so this is not tried: the plate run calls
    this last, after the site's files in the output folder and before its
    ``sites/<key>.json``, which stays the one record of a finished site. A run killed
    while writing leaves that site without its JSON, and the resumed run writes the
    site again, over whatever half was there. A label's name enters the ``labels``
    list only after its array and metadata are complete, so a reader following the
    list never meets a label image without metadata; the table's Parquet file, a plain
    file, is written through a temporary file and a rename.
    """
    import zarr
    from ome_zarr.format import FormatV04, FormatV05

    field = Path(field)
    ms, axes, _ = _field_image(field)
    group = zarr.open_group(str(field), mode="r+")
    fmt = FormatV04() if group.metadata.zarr_format == 2 else FormatV05()
    written = []
    for name, labels in (("cells", cells), ("nuclei", nuclei)):
        if labels is not None:
            _write_label_image(group, fmt, ms, axes, name, labels)
            written.append(name)
    labels_group = group.require_group("labels")
    listed = list(_attrs(labels_group).get("labels", []))
    _set_attrs(labels_group, fmt, labels=listed + [n for n in written if n not in listed])
    tables = group.require_group("tables")
    tgroup = tables.require_group("cells")
    tgroup.attrs.update({"type": "feature_table", "table_version": "1",
                         "region": {"path": "../labels/cells"}, "instance_key": "label",
                         "backend": "parquet", "index_key": "label", "index_type": "int"})
    with atomic_path(field / "tables" / "cells" / "table.parquet") as tmp:
        table.to_parquet(tmp, index=False)
    listed = list(tables.attrs.get("tables", []))
    if "cells" not in listed:
        tables.attrs["tables"] = listed + ["cells"]
