"""Per-site records → per-well and per-condition tables (pandas)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import TlsegError
from ..io import write_table
from .layout import split_well
from .plate_map import COUNT_COLUMNS


def load_sites(out) -> pd.DataFrame:
    """All site records in ``out/sites`` (ok and failed) as a table."""
    rows = []
    for f in sorted((Path(out) / "sites").glob("*.json")):
        try:
            rows.append(json.loads(f.read_text()))
        except (json.JSONDecodeError, OSError):
            continue
    if not rows:
        raise TlsegError(f"{out}: no site results (run `tlseg plate run` first)")
    df = pd.DataFrame(rows)
    df["row"], df["col"] = zip(*[split_well(w) for w in df["well"]])
    return df.sort_values(["row", "col", "site"]).reset_index(drop=True)


def load_cells(out) -> pd.DataFrame:
    """The plate's per-cell Parquet dataset (``out/cells/*.parquet``)."""
    folder = Path(out) / "cells"
    files = sorted(folder.glob("[!.]*.parquet"))
    if not files:
        return pd.DataFrame(columns=["well", "site", "label", "area"])
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def plate_map(out) -> pd.DataFrame | None:
    f = Path(out) / "plate_map.csv"
    if not f.is_file():
        return None
    pm = pd.read_csv(f, keep_default_na=False)
    return pm.set_index("well")


def flagged_wells(wells: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``wells`` whose ``uncounted_texture`` is flagged
    (:func:`tlseg.analysis.coverage.flagged`), worst first; empty without the column."""
    from ..analysis.coverage import flagged

    if "uncounted_texture" not in wells:
        return wells.iloc[:0]
    high = wells[[flagged(v) for v in wells["uncounted_texture"]]]
    return high.sort_values("uncounted_texture", ascending=False)


def summarize(out) -> dict[str, pd.DataFrame]:
    """Write ``sites.csv``, ``wells.csv`` and (with a plate map) ``conditions.csv``.

    wells.csv: well, n_sites, n_cells (label-free count, summed over the well's sites),
    n_nuclei (when a nuclei channel was segmented), cells_per_site, uncounted_texture
    (the largest of the well's sites, :func:`tlseg.uncounted_texture`), mean_area_px,
    mean_area_um2 and cells_per_mm2 (when the pixel size is known), n_failed_sites, and
    the plate-map columns; with a nuclei channel also :func:`nucleus_check`'s columns.
    conditions.csv: per combination of plate-map columns, the number of replicate wells
    and the mean and SD of each count over them.
    """
    out = Path(out)
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
    px = (run.get("config") or {}).get("pixel_size")
    sites = load_sites(out)
    ok = sites[sites["status"] == "ok"].copy()
    if ok.empty:  # no site segmented: failed records carry no counts
        ok = ok.reindex(columns=[*ok.columns, *(c for c in ("n_cells", "shape") if c not in ok)])
    has_nuclei = "n_nuclei" in ok.columns and ok["n_nuclei"].notna().any()
    agg = {"n_sites": ("site", "size"), "n_cells": ("n_cells", "sum")}
    if has_nuclei:
        agg["n_nuclei"] = ("n_nuclei", "sum")
    wells = ok.groupby("well", sort=False).agg(**agg).reset_index()
    wells["n_cells"] = wells["n_cells"].astype(int)
    if has_nuclei:
        wells["n_nuclei"] = wells["n_nuclei"].astype(int)
    wells["cells_per_site"] = wells["n_cells"] / wells["n_sites"]
    if "uncounted_texture" in ok.columns and ok["uncounted_texture"].notna().any():
        texture = pd.to_numeric(ok["uncounted_texture"]).groupby(ok["well"]).max()
        wells["uncounted_texture"] = wells["well"].map(texture)
    cells = load_cells(out)
    if len(cells):
        wells = wells.merge(cells.groupby("well")["area"].mean().rename("mean_area_px"),
                            left_on="well", right_index=True, how="left")
    if has_nuclei and "n_nuclei" in cells.columns:
        wells = wells.join(nucleus_check(cells, wells), on="well")
    if px:
        wells["mean_area_um2"] = wells.get("mean_area_px", np.nan) * px**2
        pix = ok.assign(px=[s[0] * s[1] for s in ok["shape"]]).groupby("well")["px"].sum()
        wells["cells_per_mm2"] = wells["n_cells"].to_numpy() / (
            pix.loc[wells["well"]].to_numpy() * (px * 1e-3) ** 2)
    failed = sites[sites["status"] != "ok"].groupby("well").size()
    # wells whose every site failed still get a row, so nothing silently disappears; no
    # count there (empty in wells.csv), not a count of 0 cells
    missing = sorted(set(failed.index) - set(wells["well"]), key=split_well)
    if missing:
        wells = pd.concat([wells, pd.DataFrame({"well": missing, "n_sites": 0,
                                                "n_cells": np.nan})], ignore_index=True)
    wells["n_failed_sites"] = wells["well"].map(failed).fillna(0).astype(int)
    pm = plate_map(out)
    if pm is not None:
        wells = wells.merge(pm, left_on="well", right_index=True, how="left")
    wells = wells.sort_values("well", key=lambda s: s.map(split_well)).reset_index(drop=True)
    write_table(out / "wells.csv", wells)
    site_cols = [c for c in ("well", "site", "status", "n_cells", "n_nuclei", "diameter",
                             "nuclei_diameter", "uncounted_texture", "pattern", "shape",
                             "seconds", "error") if c in sites]
    write_table(out / "sites.csv", sites[site_cols])
    result = {"sites": sites, "wells": wells, "cells": cells}
    if pm is not None and len(pm.columns):
        result["conditions"] = conditions(wells, list(pm.columns))
        write_table(out / "conditions.csv", result["conditions"])
    return result


def nucleus_check(cells: pd.DataFrame, wells: pd.DataFrame) -> pd.DataFrame:
    """Where a well's label-free and nuclei counts part, from the nuclei inside each cell.

    Per well: ``cells_without_nucleus`` (label-free objects with no nucleus centre inside:
    debris or a cell cut in two), ``cells_with_several_nuclei`` (touching cells drawn as
    one, or a dividing cell) and ``nuclei_outside_cells`` (nuclei no cell covers: cells
    the label-free model missed). The label-free minus the nuclei count is
    ``cells_without_nucleus`` minus ``nuclei_outside_cells`` minus the extra nuclei of the
    cells with several.

    Examples
    --------
    >>> cells = pd.DataFrame({"well": ["A01"] * 4, "n_nuclei": [1, 0, 2, 1]})
    >>> wells = pd.DataFrame({"well": ["A01"], "n_nuclei": [5]})
    >>> nucleus_check(cells, wells).loc["A01"].tolist()
    [1, 1, 1]
    """
    g = cells.groupby("well")["n_nuclei"]
    out = pd.DataFrame({
        "cells_without_nucleus": g.agg(lambda k: int((k == 0).sum())),
        "cells_with_several_nuclei": g.agg(lambda k: int((k >= 2).sum())),
        "inside": g.sum(),
    }).reindex(wells["well"]).fillna(0).astype(int)
    total = wells.set_index("well")["n_nuclei"]
    out["nuclei_outside_cells"] = (total - out.pop("inside")).clip(lower=0).astype(int)
    return out


def conditions(wells: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Mean and SD (ddof=1) of the counts over the replicate wells of each condition."""
    counts = [c for c in COUNT_COLUMNS if c in wells]
    used = wells[wells["n_sites"] > 0].dropna(subset=columns, how="all")
    g = used.groupby(columns, dropna=False, sort=True)
    df = g.size().rename("n_wells").to_frame()
    for c in counts:
        df[f"{c}_mean"] = g[c].mean()
        df[f"{c}_sd"] = g[c].std(ddof=1)
    df["wells"] = g["well"].agg(lambda w: " ".join(w))
    return df.reset_index()
