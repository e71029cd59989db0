"""A plate run's tables with CellProfiler's column names (``--table-style cellprofiler``).

Screening labs feed CellProfiler's per-image and per-object tables (ExportToSpreadsheet's
``Image.csv`` and ``<Objects>.csv``) to pycytominer and CytoTable. This module writes a
finished run's results in that shape, beside tlseg's own tables:

- ``OUTDIR/cellprofiler/Image.csv``: one row per segmented site (``ImageNumber``,
  ``Metadata_*``, ``Count_Cells``, ``Count_Nuclei``, ``FileName_*``, ``PathName_*``);
- ``OUTDIR/cellprofiler/Cells.csv``: one row per label-free cell (``ImageNumber``,
  ``ObjectNumber``, ``AreaShape_*``, ``Location_Center_*``, ``Intensity_MeanIntensity_*``,
  ``Children_Nuclei_Count``).

Only measurements tlseg makes are written, each under the CellProfiler name that means
the same thing (:data:`CELL_COLUMNS`). A run keeps nuclei as label images only, with no
per-nucleus measurements, so there is no ``Nuclei.csv``.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from ..analysis.measure import _safe
from ..errors import TlsegError
from ..io import write_table
from .layout import split_well
from .summary import load_cells, load_sites, plate_map

log = logging.getLogger(__name__)

#: ``--table-style`` values
TABLE_STYLES = ("tlseg", "cellprofiler")

#: tlseg per-cell column -> CellProfiler feature (MeasureObjectSizeShape, the Identify
#: modules' locations, RelateObjects); ``mean_<channel>`` becomes
#: ``Intensity_MeanIntensity_<channel>`` (MeasureObjectIntensity)
CELL_COLUMNS = {
    "label": "ObjectNumber",
    "centroid_x": "Location_Center_X",
    "centroid_y": "Location_Center_Y",
    "area": "AreaShape_Area",
    "perimeter": "AreaShape_Perimeter",
    "eccentricity": "AreaShape_Eccentricity",
    "solidity": "AreaShape_Solidity",
    "n_nuclei": "Children_Nuclei_Count",
}

#: the folder of ``OUTDIR`` that holds the CellProfiler-style tables
FOLDER = "cellprofiler"

_SITE_KEYS = ["Metadata_Plate", "Metadata_Well", "Metadata_Site"]


def check_table_style(table_style: str) -> str:
    """``table_style`` if it is one of :data:`TABLE_STYLES`; else a TlsegError."""
    if table_style not in TABLE_STYLES:
        raise TlsegError(f"table style must be one of {', '.join(TABLE_STYLES)}, "
                         f"got {table_style!r}")
    return table_style


def cellprofiler_tables(out, *, sites: pd.DataFrame | None = None,
                        cells: pd.DataFrame | None = None) -> dict[str, pd.DataFrame]:
    """A plate run's per-site and per-cell results with CellProfiler's column names.

    Parameters
    ----------
    out : path
        Output folder of :func:`tlseg.run_plate`.
    sites, cells : pandas.DataFrame, optional
        The run's site records and per-cell table, if already loaded
        (:func:`~tlseg.plate.summary.load_sites`, :func:`~tlseg.plate.summary.load_cells`).

    Returns
    -------
    dict
        ``Image`` (one row per segmented site, numbered 1, 2, ... in ``ImageNumber`` in
        well and site order) and ``Cells`` (one row per cell; ``ObjectNumber`` is the
        cell's label in ``masks/``).

    Examples
    --------
    >>> import json, tempfile
    >>> from pathlib import Path
    >>> out = Path(tempfile.mkdtemp())
    >>> (out / "sites").mkdir(); (out / "cells").mkdir()
    >>> _ = (out / "run.json").write_text(json.dumps({"plate": "/data/P1"}))
    >>> rec = {"well": "B03", "site": 1, "key": "B03_s1", "status": "ok", "n_cells": 2,
    ...        "paths": {"w1": "/data/P1/P1_B03_s1_w1.tif"}}
    >>> _ = (out / "sites" / "B03_s1.json").write_text(json.dumps(rec))
    >>> pd.DataFrame({"well": "B03", "site": 1, "label": [1, 2], "area": [40, 52],
    ...               "mean_w1": [0.5, 0.7]}).to_parquet(out / "cells" / "B03_s1.parquet")
    >>> t = cellprofiler_tables(out)
    >>> t["Image"].iloc[0].to_dict()  # doctest: +NORMALIZE_WHITESPACE
    {'ImageNumber': 1, 'Metadata_Plate': 'P1', 'Metadata_Well': 'B03', 'Metadata_Site': 1,
     'Count_Cells': 2, 'FileName_w1': 'P1_B03_s1_w1.tif', 'PathName_w1': '/data/P1'}
    >>> t["Cells"][["ImageNumber", "ObjectNumber", "AreaShape_Area",
    ...             "Intensity_MeanIntensity_w1"]].to_dict("list")
    {'ImageNumber': [1, 1], 'ObjectNumber': [1, 2], 'AreaShape_Area': [40, 52], 'Intensity_MeanIntensity_w1': [0.5, 0.7]}
    """
    out = Path(out)
    if sites is None:
        sites = load_sites(out)
    if cells is None:
        cells = load_cells(out)
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
    plate_name = Path(run.get("plate") or out.resolve()).name

    ok = sites[sites["status"] == "ok"]
    order = sorted(range(len(ok)), key=lambda i: (split_well(ok["well"].iloc[i]),
                                                  int(ok["site"].iloc[i])))
    ok = ok.iloc[order]
    image = pd.DataFrame({
        "ImageNumber": range(1, len(ok) + 1),
        "Metadata_Plate": plate_name,
        "Metadata_Well": ok["well"].to_numpy(),
        "Metadata_Site": ok["site"].astype(int).to_numpy(),
    })
    pm = plate_map(out)
    if pm is not None:
        for col in pm.columns:
            name = f"Metadata_{_safe(str(col))}"
            if name in image:
                log.warning("plate-map column %r is left out of Image.csv: its name "
                            "%s is taken", col, name)
                continue
            image[name] = image["Metadata_Well"].map(pm[col]).to_numpy()
    image["Count_Cells"] = ok["n_cells"].astype(int).to_numpy()
    if "n_nuclei" in ok and ok["n_nuclei"].notna().all() and len(ok):
        image["Count_Nuclei"] = ok["n_nuclei"].astype(int).to_numpy()
    paths = [rec if isinstance(rec, dict) else {} for rec in ok.get("paths", [{}] * len(ok))]
    for channel in dict.fromkeys(c for rec in paths for c in rec):
        name = _safe(str(channel))
        image[f"FileName_{name}"] = [Path(rec[channel]).name if channel in rec else None
                                     for rec in paths]
        image[f"PathName_{name}"] = [str(Path(rec[channel]).parent) if channel in rec else None
                                     for rec in paths]

    number = image.set_index(["Metadata_Well", "Metadata_Site"])["ImageNumber"]
    keys = pd.MultiIndex.from_arrays([cells["well"].astype(str), cells["site"].astype(int)])
    at = number.reindex(keys).to_numpy()
    kept = pd.notna(at)
    if not kept.all():  # cells of a site whose record says it failed: not in Image.csv
        log.warning("%d cell(s) of sites that did not finish are left out of Cells.csv",
                    int((~kept).sum()))
    cells = cells[kept]
    table = pd.DataFrame({"ImageNumber": at[kept].astype(int)})
    table["ObjectNumber"] = cells["label"].astype(int).to_numpy()
    table["Metadata_Plate"] = plate_name
    table["Metadata_Well"] = cells["well"].astype(str).to_numpy()
    table["Metadata_Site"] = cells["site"].astype(int).to_numpy()
    for src, name in CELL_COLUMNS.items():
        if src != "label" and src in cells:
            table[name] = cells[src].to_numpy()
    for src in cells.columns:
        if src.startswith("mean_"):
            table[f"Intensity_MeanIntensity_{src[len('mean_'):]}"] = cells[src].to_numpy()
    table = table.sort_values(["ImageNumber", "ObjectNumber"], kind="stable")
    return {"Image": image, "Cells": table.reset_index(drop=True)}


def write_cellprofiler_tables(out, *, sites: pd.DataFrame | None = None,
                              cells: pd.DataFrame | None = None) -> dict[str, Path]:
    """Write ``OUTDIR/cellprofiler/Image.csv`` and ``Cells.csv`` (:func:`cellprofiler_tables`).

    Each file is written atomically; returns ``{"Image": path, "Cells": path}``.
    """
    folder = Path(out) / FOLDER
    tables = cellprofiler_tables(out, sites=sites, cells=cells)
    written = {}
    for name, table in tables.items():
        written[name] = folder / f"{name}.csv"
        write_table(written[name], table)
    log.info(f"CellProfiler-style Image.csv ({len(tables['Image'])} sites) and Cells.csv "
             f"({len(tables['Cells'])} cells) written to {folder}")
    return written
