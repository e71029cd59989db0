"""``tlseg plate run`` and ``tlseg plate validate`` as library calls."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

from ..config import PlateConfig, settings_or_config
from ..errors import TlsegError
from ..io import write_json
from .cellprofiler import check_table_style, write_cellprofiler_tables
from .layout import scan_plate
from .plate_map import read_plate_map
from .prepare import plan_run, prepare_run
from .run import check_workers, lock_output, run_sites
from .summary import flagged_wells, summarize

logger = logging.getLogger(__name__)


def run_plate(plate_dir, out, config: PlateConfig | None = None, *, plate_map=None,
              layout: str = "auto", pattern: str | None = None, workers: int = 2,
              scheduler: str | None = None, threads: int | None = None,
              density: str | None = None, table_style: str = "tlseg",
              progress: Callable[[dict, int, int], None] | None = None,
              write_zarr: bool = False, **settings) -> dict:
    """Segment, measure, summarise and (with a nuclei channel) validate one plate:
    ``tlseg plate run``.

    Every site is one task on a Dask cluster; each site's results are written
    atomically, so a re-run with the same settings resumes where a killed run stopped.

    Parameters
    ----------
    plate_dir : path
        Folder of the plate's images (ImageXpress, IN Cell Analyzer or Operetta names,
        or ``pattern``), or an OME-Zarr HCS plate (a ``.zarr`` folder).
    out : path
        Output folder: ``masks/``, ``cells/*.parquet``, ``sites/``, ``run.json``,
        ``wells.csv``, ``conditions.csv``, ``validation.json`` and ``report.html``. One
        run at a time: while this one writes, another on the same folder is refused.
    config : PlateConfig, optional
        The settings that change the results; keywords of :class:`~tlseg.config.PlateConfig`
        (``tl_channel``, ``nuclei_channel``, ``model``, ``nuclei_model``, ``diameter``,
        ``nuclei_diameter``, ``pixel_size``, ``diameter_mode``, ``diameter_by``) build one
        instead.
    plate_map : path, optional
        CSV with a ``well`` column and condition columns, joined to every table.
    layout : {'auto', 'imagexpress', 'incell', 'operetta'}
        File-name layout; ``pattern`` (a regex with named groups ``well`` or ``row`` and
        ``col``, ``site``, ``channel``) overrides it.
    workers, scheduler, threads
        Local Dask worker processes, or the address of an existing scheduler; torch
        threads per worker (default: CPU cores / workers).
    density : str, optional
        Plate-map column with the seeding density (for the linear range).
    table_style : {'tlseg', 'cellprofiler'}
        ``'cellprofiler'`` also writes ``cellprofiler/Image.csv`` and ``Cells.csv`` with
        CellProfiler's column names (:mod:`tlseg.plate.cellprofiler`), for pycytominer.
    progress : callable(site_record, done, total), optional
        Called as each site finishes.
    write_zarr : bool
        Also write each site's labels (``labels/cells``, ``labels/nuclei``) and per-cell
        table (``tables/cells``) into its field of the OME-Zarr plate
        (:mod:`~tlseg.plate.zarr`).

    Returns
    -------
    dict
        ``record`` (run.json), ``processed`` and ``failed`` (this run's sites), the tables
        ``sites``, ``wells`` and ``conditions`` (pandas), ``validation`` (with a nuclei
        channel) and ``report`` (the report's path).
    """
    if config is None and "tl_channel" not in settings:
        raise TlsegError("run_plate: name the transmitted-light channel (tl_channel=)")
    config = settings_or_config(PlateConfig, config, settings, what="run_plate")
    check_table_style(table_style)  # before the long run, not after it
    # before anything is written; a remote scheduler brings its own workers
    check_workers(1 if scheduler else workers, threads)
    log = logger.info
    out = Path(out)
    plate = scan_plate(plate_dir, layout=layout, pattern=pattern)
    if write_zarr and plate.layout != "ome-zarr":
        raise TlsegError(f"{plate.folder}: --write-zarr needs an OME-Zarr plate; convert "
                         "the folder first with `tlseg plate convert`")
    log(f"{plate.folder}: {plate.layout} layout, {len(plate.wells)} wells, "
        f"channels {', '.join(plate.channels)}")
    warnings = list(plate.duplicates)
    if plate.unparsed:
        warnings.append(f"{len(plate.unparsed)} file name(s) do not match the pattern "
                        f"{plate.pattern!r} and were skipped: "
                        + ", ".join(p.name for p in plate.unparsed[:10])
                        + (" ..." if len(plate.unparsed) > 10 else ""))
    pm = None
    if plate_map is not None:
        pm, pm_warnings = read_plate_map(plate_map, plate.wells)
        warnings += pm_warnings
    if density is not None and (pm is None or density not in pm):
        raise TlsegError(f"--density-column {density!r}: " + (
            "needs a plate map (--plate-map)" if pm is None else
            f"not a plate-map column (columns: {', '.join(map(str, pm.columns))})"))
    planned = plan_run(plate, config)  # bad settings or channels: nothing written
    with lock_output(out):  # held to the end: a second run on this folder is refused
        sites, record, config = prepare_run(plate, out, planned, plate_map=pm)
        warnings += record["skipped_sites"]
        for w in warnings:
            logger.warning(w)
        record["warnings"] = warnings
        write_json(out / "run.json", record)
        records = run_sites(sites, out, config, workers=workers, scheduler=scheduler,
                            threads=threads, progress=progress, write_zarr=write_zarr)
        failed = [r for r in records if r["status"] != "ok"]
        for r in failed:
            logger.error("%s site %s: %s (skipped)", r["well"], r["site"], r["error"])
        found = [r.get("pattern") for r in records if r["status"] == "ok"]
        n_lattice, n_line = found.count("lattice"), found.count("line")
        if n_lattice or n_line:
            logger.info("%d of %d sites show a repeating structure (%d a chip's lattice, "
                        "taken out before segmenting; %d a wall or an edge); the objects "
                        "on it are dropped (pattern in sites.csv)",
                        n_lattice + n_line, len(found), n_lattice, n_line)
        result = validate_plate(out, density=density, table_style=table_style)
    if not (result["sites"]["status"] == "ok").any():
        logger.error("no site of the plate was segmented; the errors are listed in "
                     f"{result['report']} and sites.csv")
    result.update(record=record, processed=len(records), failed=failed)
    return result


def validate_plate(out, *, density: str | None = None, table_style: str = "tlseg") -> dict:
    """Summarise a finished (or partly finished) plate run and, if nuclei were counted,
    validate the label-free counts against them: ``tlseg plate validate``.

    Writes ``wells.csv``, ``conditions.csv``, ``validation.json`` and ``report.html``.

    Parameters
    ----------
    out : path
        Output folder of :func:`run_plate`.
    density : str, optional
        Plate-map column with the seeding density (for the linear range).
    table_style : {'tlseg', 'cellprofiler'}
        ``'cellprofiler'`` also (re)writes ``cellprofiler/Image.csv`` and ``Cells.csv``
        with CellProfiler's column names (:mod:`tlseg.plate.cellprofiler`).

    Returns
    -------
    dict
        The tables ``sites``, ``wells`` and ``conditions``, ``validation`` (None without
        nuclei), ``report`` (the report's path) and ``cellprofiler`` (the paths of
        ``Image.csv`` and ``Cells.csv`` by table name; None in the tlseg style).
    """
    log = logger.info
    from .report import write_report
    from .validate import validate_counts

    out = Path(out)
    check_table_style(table_style)
    if not (out / "run.json").is_file():
        raise TlsegError(f"{out}: not a plate run folder (no run.json); run `tlseg plate run` first")
    run = json.loads((out / "run.json").read_text())
    tables = summarize(out)
    cellprofiler = None
    if table_style == "cellprofiler":
        cellprofiler = write_cellprofiler_tables(out, sites=tables["sites"],
                                                 cells=tables["cells"])
    wells, conds = tables["wells"], tables.get("conditions")
    validation = None
    if "n_nuclei" in wells:
        validation = validate_counts(wells, conds, density=density)
        parting = ("cells_without_nucleus", "cells_with_several_nuclei", "nuclei_outside_cells")
        if all(c in wells for c in parting):
            validation["parting"] = {c: int(wells[c].sum()) for c in parting}
        write_json(out / "validation.json", validation)
        s = validation["per_well"]
        if s.get("r2") is not None:
            log(f"label-free vs nuclei over {s['n']} wells: R² {s['r2']:.3f}, "
                f"CCC {s['ccc']:.3f}, bias {s['bias']:+.1f} cells "
                f"({s.get('bias_percent', float('nan')):+.1f} %), paired t-test p "
                f"{s['paired_p']:.3g}")
        if "parting" in validation:
            p = validation["parting"]
            log(f"label-free cells without a nucleus: {p['cells_without_nucleus']}, with "
                f"several: {p['cells_with_several_nuclei']}; nuclei outside every cell: "
                f"{p['nuclei_outside_cells']} (per well in wells.csv)")
    high = flagged_wells(wells)["well"].tolist()
    if high:
        from ..analysis.coverage import FLAG

        logger.warning(f"{len(high)} well(s) with more than {FLAG:.0%} of a site's "
                       f"cell-like texture outside the cells counted ({', '.join(high[:8])}"
                       f"{' …' if len(high) > 8 else ''}): look for missed cells in "
                       "report.html and their masks (uncounted_texture in wells.csv)")
    report = write_report(out, wells=wells, conds=conds, sites=tables["sites"],
                          validation=validation, run=run)
    log(f"wells.csv, report.html written to {out}")
    return {**tables, "validation": validation, "report": report,
            "cellprofiler": cellprofiler}
