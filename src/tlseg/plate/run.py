"""Batch-segment a plate, site by site, on a Dask cluster; resumable.

Each site is one task: read its channels, segment cells in the transmitted-light channel
(and nuclei in the nuclear channel), measure every cell, and write

- ``OUTDIR/masks/<well>_s<site>_cells.tif`` (and ``_nuclei.tif``): instance labels;
- ``OUTDIR/cells/<well>_s<site>.parquet``: one row per cell (the plate's Parquet dataset);
- ``OUTDIR/sites/<well>_s<site>.json``: counts and status, written LAST.

While a run writes, it holds ``OUTDIR/.lock`` (an OS file lock, :func:`lock_output`), so
a second run on the same folder is refused instead of racing the first.

Every file is written atomically (temp file + rename), and a site counts as done only
when its JSON exists, so a run killed at any moment loses only the sites in flight and a
re-run skips the finished ones. A site whose image is corrupt is recorded as failed (and
retried on the next run) without stopping the others.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from ..config import PlateConfig
from ..errors import TlsegError
from ..io import atomic_path
from ..io.files import file_lock, output_folder
from .layout import Plate, Site

RUN_FORMAT = 1

log = logging.getLogger(__name__)


#: settings that :func:`prepare_run` fills in; an earlier run's values are kept on resume
_ESTIMATED = ("diameter", "nuclei_diameter", "well_diameters")


def _write_json(path: Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str))


@contextlib.contextmanager
def lock_output(out) -> Iterator[Path]:
    """Make the output folder ``out`` and hold its lock file (``out/.lock``) exclusively.

    An OS file lock (``flock`` on POSIX, ``msvcrt.locking`` on Windows) on a file that
    stays: the operating system drops it when the holder ends, however it ends (killed,
    crashed, power cut on a network share's client), so there is no stale lock to clean
    up. A second run on the same folder is refused rather than queued: two runs meant for
    one folder are almost always a double start, and a queued one would only resume a
    finished plate or, with other settings, be refused after the wait.

    Raises
    ------
    TlsegError
        ``out`` is a file, cannot be made or written, or another run holds it.
    """
    out = output_folder(out)
    try:
        with file_lock(out / ".lock", wait=False):
            yield out
    except BlockingIOError:
        raise TlsegError(f"another `tlseg plate run` is writing to {out}; wait for it to "
                         "finish (or stop it), or give another -o") from None
    except OSError as exc:  # e.g. ENOLCK: a network share without locks, or no .lock
        raise TlsegError(f"{out}: cannot lock {out / '.lock'} ({exc.strerror or exc}); "
                         "give -o a folder on a disk that supports file locks") from None


# -- worker side ---------------------------------------------------------------------

_MODELS: dict = {}


def _model(name: str, threads: int):
    import torch

    from ..inference.model import Model

    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    if name not in _MODELS:
        _MODELS[name] = Model.load(name)
    return _MODELS[name]


def process_site(site: dict, cfg: dict, out: str, threads: int = 1,
                 write_zarr: bool = False) -> dict:
    """Segment and measure one site; write its outputs. Runs on a Dask worker.

    A site of an OME-Zarr plate is read from its field; with ``write_zarr`` its labels
    and per-cell table are also written into the field (:mod:`~tlseg.plate.zarr`).

    Returns the site's record (also written to ``sites/<key>.json``). Never raises for a
    bad image: the record then has ``status: 'error'`` and the message.
    """
    from ..analysis.measure import discard_edge
    from ..analysis.pipeline import segment_and_measure
    from ..io import write_labels
    from .layout import read_channel
    from .zarr import field_of, write_field_results

    out = Path(out)
    key = f"{site['well']}_s{site['site']}"
    rec = {"well": site["well"], "site": site["site"], "key": key,
           "paths": {c: str(p) for c, p in site["paths"].items()}}
    t0 = time.perf_counter()
    try:
        tl_name, nuc_name = cfg["tl_channel"], cfg.get("nuclei_channel")
        tl = read_channel(site["paths"][tl_name])
        channels = {tl_name: tl}
        nuc = None
        if nuc_name:
            nuc = read_channel(site["paths"][nuc_name])
            if nuc.shape != tl.shape:
                raise TlsegError(f"{site['paths'][nuc_name]}: {nuc.shape[0]}x{nuc.shape[1]} "
                                 f"pixels but the {tl_name} image is {tl.shape[0]}x{tl.shape[1]}")
            channels[nuc_name] = nuc
        d_cells, d_nuclei = cfg["diameter"], cfg.get("nuclei_diameter")
        by_well = (cfg.get("well_diameters") or {}).get(site["well"])
        if by_well:
            d_cells, d_nuclei = d_cells or by_well[0], d_nuclei or by_well[1]
        nuclei = ndet = None
        edge = bool(cfg.get("exclude_edge"))
        if nuc is not None:
            nuclei, ndet = _model(cfg["nuclei_model"], threads).predict_instances(
                nuc, diameter=d_nuclei)
            if edge:
                nuclei = discard_edge(nuclei)
                ndet = {**ndet, "n_cells": int(nuclei.max())}
        done = segment_and_measure(_model(cfg["model"], threads), tl, diameter=d_cells,
                                   channels=channels, nuclei=nuclei,
                                   pixel_size=cfg.get("pixel_size"), exclude_edge=edge)
        cells, det, table = done.labels, done.details, done.cells
        rec.update(shape=list(tl.shape), diameter=det["diameter"], n_cells=det["n_cells"],
                   uncounted_texture=det.get("uncounted_texture"))
        if ndet is not None:
            rec.update(nuclei_diameter=ndet["diameter"], n_nuclei=ndet["n_cells"])
        table.insert(0, "site", site["site"])
        table.insert(0, "well", site["well"])
        write_labels(out / "masks" / f"{key}_cells.tif", cells)
        if nuclei is not None:
            write_labels(out / "masks" / f"{key}_nuclei.tif", nuclei)
        with atomic_path(out / "cells" / f"{key}.parquet") as tmp:
            table.to_parquet(tmp, index=False)
        field = field_of(site["paths"][tl_name])
        if write_zarr and field is not None:  # last: sites/<key>.json records it done
            write_field_results(field, cells=cells, nuclei=nuclei, table=table)
            rec["zarr"] = str(field)
        rec["status"] = "ok"
    except TlsegError as exc:
        rec.update(status="error", error=str(exc))
    except (OSError, ValueError, MemoryError) as exc:  # keep the batch going, report it
        rec.update(status="error", error=f"{type(exc).__name__}: {exc}")
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    _write_json(out / "sites" / f"{key}.json", rec)
    return rec


# -- client side ---------------------------------------------------------------------

def open_client(workers: int, scheduler: str | None, *, timeout: float = 10.0):
    """A Dask client: on ``scheduler`` if given, else on a new local cluster of processes."""
    from dask.distributed import Client, LocalCluster

    if scheduler:
        try:
            return Client(scheduler, timeout=f"{timeout}s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise TlsegError(
                f"cannot reach the Dask scheduler at {scheduler} within {timeout:.0f} s "
                f"({type(exc).__name__}); check the address, or leave out --scheduler "
                "to run on this machine"
            ) from None
    if workers < 1:
        raise TlsegError(f"--workers must be at least 1, got {workers}")
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=logging.ERROR)
    return Client(cluster)


def weighted_diameter(model, images) -> float | None:
    """One diameter for several fields: the median of their estimates, each weighted by
    the number of cells found at it (None when no field has cells).

    Weighting keeps a near-empty field from setting the size of a well-filled one: in a
    field of 3 nuclei and camera noise the estimate can read the noise (136 px for
    nuclei of 10 px in the real aiSEGcell field A04), and an unweighted median of two
    fields is their mean. A field the model cannot segment (a constant image) is skipped.
    """
    import numpy as np

    from ..inference.diameter import weighted_median

    found, cells = [], []
    for image in images:
        try:
            d = model.estimate_diameter(image)
            if d:
                cells.append(model.predict_instances(image, diameter=d)[1]["n_cells"])
                found.append(d)
        except TlsegError:
            continue
    if not found:
        return None
    if sum(cells) == 0:
        return float(np.median(found))
    return weighted_median(found, cells)


def plate_diameter(model, sites: list[Site], channel: str, n: int = 4) -> float | None:
    """Automatic diameter over up to ``n`` sites spread over the plate
    (:func:`weighted_diameter`): what ``tlseg plate run`` estimates, and ``tlseg plate
    calibrate`` too. ``model``: a :class:`~tlseg.inference.model.Model`, or its name or
    folder."""
    import numpy as np

    from ..inference.model import Model
    from .layout import read_channel

    picks = [sites[i] for i in np.unique(np.linspace(0, len(sites) - 1, n).round().astype(int))]
    images = []
    for s in picks:
        try:
            images.append(read_channel(s.paths[channel]).astype(np.float32))
        except TlsegError:  # a corrupt site is reported when it is run
            continue
    return weighted_diameter(model if isinstance(model, Model) else Model.load(model), images)


def _estimate_by_group(cfg: PlateConfig, sites: list[Site], plate_map) -> dict:
    """{well: [cell diameter, nucleus diameter]}: one estimate per value of the plate-map
    column ``cfg.diameter_by`` (wells missing from the map form one more group)."""
    col = cfg.diameter_by
    if plate_map is None or col not in plate_map.columns:
        have = ", ".join(plate_map.columns) if plate_map is not None else "no --plate-map"
        raise TlsegError(f"--diameter-by {col}: no such plate-map column ({have}); "
                         "name a column of the plate map, e.g. the objective")
    groups: dict[str, list[Site]] = {}
    for s in sites:
        value = plate_map[col].get(s.well) if s.well in plate_map.index else None
        groups.setdefault("(not in the plate map)" if value is None else str(value), []).append(s)
    out = {}
    for value, members in groups.items():
        d = cfg.diameter or plate_diameter(cfg.model, members, cfg.tl_channel)
        nd = None
        if cfg.nuclei_channel:
            nd = cfg.nuclei_diameter or plate_diameter(cfg.nuclei_model, members, cfg.nuclei_channel)
        log.info(f"{col} = {value}: {len({s.well for s in members})} well(s), cell diameter "
            + (f"{d:.1f} px" if d else "not found (model default)")
            + (f", nucleus diameter {nd:.1f} px" if nd else ""))
        for s in members:
            out[s.well] = [d, nd]
    return out


def plan_run(plate: Plate, cfg: PlateConfig) -> tuple[list[Site], list[str], PlateConfig]:
    """Check the settings against the plate, before anything is written.

    Returns the sites that have every channel, a message per site that lacks one, and
    the settings with the channels as the plate names them.
    """
    if cfg.diameter_mode not in ("plate", "site"):
        raise TlsegError(f"diameter mode must be 'plate' or 'site', got {cfg.diameter_mode!r}")
    if cfg.diameter_by and cfg.diameter_mode == "site":
        raise TlsegError("--diameter-by and --per-site-diameter exclude each other: "
                         "estimate per group of wells or per site, not both")
    chans = [cfg.tl_channel] + ([cfg.nuclei_channel] if cfg.nuclei_channel else [])
    cfg = replace(cfg, tl_channel=plate.resolve_channel(cfg.tl_channel))
    if cfg.nuclei_channel:
        cfg = replace(cfg, nuclei_channel=plate.resolve_channel(cfg.nuclei_channel))
    sites, problems = plate.sites(chans)
    if not sites:
        raise TlsegError(f"{plate.folder}: no site has all of the channels {', '.join(chans)}")
    return sites, problems, cfg


def prepare_run(plate: Plate, out, planned: tuple[list[Site], list[str], PlateConfig], *,
                plate_map=None) -> tuple[list[Site], dict, PlateConfig]:
    """Check the settings against an earlier run in ``out``, fix the diameters, write run.json.

    ``planned`` is what :func:`plan_run` returns. Returns the sites to process, the run
    record and the settings with the diameters filled in (an earlier run's, or estimated).
    """
    out = Path(out)
    sites, problems, cfg = planned
    run_file = out / "run.json"
    earlier = None
    if run_file.is_file():
        try:
            earlier = json.loads(run_file.read_text())
        except json.JSONDecodeError:
            raise TlsegError(f"{run_file} is corrupt; move it away or use another -o") from None
        if earlier.get("format", 0) > RUN_FORMAT:
            raise TlsegError(f"{out} was written by a newer tlseg (run format "
                             f"{earlier['format']}); upgrade tlseg or use another -o")
        same = {k: v for k, v in earlier["config"].items() if k not in _ESTIMATED}
        mine = {k: v for k, v in cfg.result_keys().items() if k not in _ESTIMATED}
        given = {k: v for k, v in cfg.result_keys().items()
                 if k in ("diameter", "nuclei_diameter") and v is not None}
        diff = [k for k in mine if mine[k] != same.get(k)]
        diff += [k for k, v in given.items() if earlier["config"].get(k) != v]
        if diff:
            raise TlsegError(
                f"{out} holds results made with other settings ({', '.join(sorted(diff))}); "
                "use another -o, or repeat the earlier settings to resume that run"
            )
        cfg = replace(cfg, **{k: earlier["config"].get(k) for k in _ESTIMATED})
    elif cfg.diameter_mode == "plate" and cfg.diameter_by:
        cfg = replace(cfg, well_diameters=_estimate_by_group(cfg, sites, plate_map))
    elif cfg.diameter_mode == "plate":
        if cfg.diameter is None:
            cfg = replace(cfg, diameter=plate_diameter(cfg.model, sites, cfg.tl_channel))
            log.info("cell diameter estimated on the plate: "
                + (f"{cfg.diameter:.1f} px" if cfg.diameter else "failed, model default used"))
        if cfg.nuclei_channel and cfg.nuclei_diameter is None:
            cfg = replace(cfg, nuclei_diameter=plate_diameter(cfg.nuclei_model, sites,
                                                         cfg.nuclei_channel))
            log.info("nucleus diameter estimated on the plate: "
                + (f"{cfg.nuclei_diameter:.1f} px" if cfg.nuclei_diameter else
                   "failed, model default used"))
    record = {
        "format": RUN_FORMAT,
        "plate": str(plate.folder),
        "layout": plate.layout,
        "pattern": plate.pattern,
        "config": cfg.result_keys(),
        "n_sites": len(sites),
        "skipped_sites": problems,
        "unparsed_files": [str(p) for p in plate.unparsed],
        "started": earlier["started"] if earlier else time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    out.mkdir(parents=True, exist_ok=True)
    if plate_map is not None:
        with atomic_path(out / "plate_map.csv") as tmp:
            plate_map.reset_index().to_csv(tmp, index=False)
    _write_json(run_file, record)
    return sites, record, cfg


def done_sites(out) -> dict[str, dict]:
    """Records of finished sites (status 'ok') in ``out``."""
    done = {}
    for f in sorted((Path(out) / "sites").glob("*.json")):
        try:
            rec = json.loads(f.read_text())
        except (json.JSONDecodeError, OSError):
            continue  # cannot happen with atomic writes, but never trust a disk
        if rec.get("status") == "ok":
            done[rec["key"]] = rec
    return done


def run_sites(sites: list[Site], out, cfg: PlateConfig, *, workers: int = 2,
              scheduler: str | None = None, threads: int | None = None,
              progress: Callable[[dict, int, int], None] | None = None,
              write_zarr: bool = False) -> list[dict]:
    """Process every site not yet done in ``out``; returns the records of this run's sites.

    With ``write_zarr`` (an OME-Zarr plate), a site done by an earlier run without it is
    done again, so that its field gets its labels.
    """
    out = Path(out)
    for sub in ("masks", "cells", "sites"):
        (out / sub).mkdir(parents=True, exist_ok=True)
        for stale in (out / sub).glob(".*"):  # temp files of a killed run
            stale.unlink(missing_ok=True)
    done = done_sites(out)
    todo = [s for s in sites if s.key not in done or (write_zarr and "zarr" not in done[s.key])]
    if not todo:
        return []
    if threads is None:
        threads = max(1, (os.cpu_count() or 1) // max(workers, 1))
    client = open_client(workers, scheduler)
    records = []
    try:
        from dask.distributed import as_completed

        payload = [{"well": s.well, "site": s.site, "paths": {k: str(v) for k, v in s.paths.items()}}
                   for s in todo]
        futures = client.map(process_site, payload, cfg=cfg.result_keys(), out=str(out),
                             threads=threads, write_zarr=write_zarr, pure=False)
        for i, fut in enumerate(as_completed(futures), start=1):
            rec = fut.result()
            records.append(rec)
            if progress:
                progress(rec, i, len(todo))
    finally:
        cluster = getattr(client, "cluster", None)
        client.close()
        if cluster is not None and not scheduler:
            cluster.close()
    return records
