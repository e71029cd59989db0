"""Plate maps: the user's CSV of conditions per well, and the columns tlseg writes beside them.

:func:`read_plate_map` reads the CSV (a ``well`` column plus condition columns, with
pandas), normalises its well names (:func:`~tlseg.plate.layout.normalize_well`) and
refuses condition columns named like the columns tlseg writes into ``wells.csv`` and
``conditions.csv``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import TlsegError
from .layout import normalize_well, split_well

#: columns tlseg writes into wells.csv beside the plate map's (:mod:`~tlseg.plate.summary`)
WELL_COLUMNS = ("well", "n_sites", "n_cells", "n_nuclei", "cells_per_site",
                "uncounted_texture", "mean_area_px",
                "mean_area_um2", "cells_per_mm2", "cells_without_nucleus",
                "cells_with_several_nuclei", "nuclei_outside_cells", "n_failed_sites")
#: wells.csv columns that conditions.csv summarises as a mean and an SD
COUNT_COLUMNS = ("n_cells", "n_nuclei", "cells_per_mm2")
#: columns tlseg writes into conditions.csv beside the plate map's
CONDITION_COLUMNS = ("n_wells", *(f"{c}_{s}" for c in COUNT_COLUMNS for s in ("mean", "sd")),
                     "wells")


def read_plate_map(path, wells: list[str] | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Read a plate-map CSV (a ``well`` column plus condition columns).

    Returns the map indexed by normalised well name and a list of warnings: wells in the
    map without images, and imaged wells missing from the map.
    """
    path = Path(path)
    try:
        pm = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError:
        raise TlsegError(f"{path}: plate map not found") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise TlsegError(f"{path}: not a readable CSV plate map ({exc})") from None
    cols = {c.lower().strip(): c for c in pm.columns}
    if "well" not in cols:
        raise TlsegError(f"{path}: the plate map needs a 'well' column (found: {', '.join(pm.columns)})")
    pm = pm.rename(columns={cols["well"]: "well"})
    # A condition column named like a column tlseg writes would collide in wells.csv and
    # conditions.csv. Refused rather than renamed: a silently renamed column would not
    # be the name the screener looks for, nor the one --density-column refers to.
    reserved = [c for c in pm.columns if c != "well" and c in WELL_COLUMNS + CONDITION_COLUMNS]
    if reserved:
        raise TlsegError(
            f"{path}: plate-map column {reserved[0]!r} is a name tlseg writes into wells.csv "
            f"or conditions.csv (reserved: {', '.join(WELL_COLUMNS + CONDITION_COLUMNS)}); "
            "rename it in the plate map")
    try:
        pm["well"] = [normalize_well(w) for w in pm["well"]]
    except TlsegError as exc:
        raise TlsegError(f"{path}: {exc}") from None
    dup = pm["well"][pm["well"].duplicated()].unique().tolist()
    if dup:
        raise TlsegError(f"{path}: wells listed twice in the plate map: {', '.join(dup)}")
    for c in pm.columns:  # numeric condition columns (e.g. seeding density) become numbers
        if c != "well":
            num = pd.to_numeric(pm[c], errors="coerce")
            if num.notna().all() and len(num):
                pm[c] = num
    warnings = []
    if wells is not None:
        no_images = sorted(set(pm["well"]) - set(wells), key=split_well)
        no_map = sorted(set(wells) - set(pm["well"]), key=split_well)
        if no_images:
            warnings.append(f"plate map lists {len(no_images)} well(s) with no images: "
                            + ", ".join(no_images))
        if no_map:
            warnings.append(f"{len(no_map)} imaged well(s) are not in the plate map: "
                            + ", ".join(no_map))
    return pm.set_index("well"), warnings
