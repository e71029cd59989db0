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
from pathlib import Path

from ..config import PlateConfig
from ..errors import TlsegError
from ..io import atomic_path, write_json
from ..io.files import file_lock, output_folder
from .layout import Site

log = logging.getLogger(__name__)


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


@contextlib.contextmanager
def _naming(path):
    """Put the image's path in front of a :class:`TlsegError` raised about its pixels
    ("image is constant ...") so that the site's error says which channel's file."""
    try:
        yield
    except TlsegError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise TlsegError(f"{path}: {exc}") from None


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
            with _naming(site["paths"][nuc_name]):
                nuclei, ndet = _model(cfg["nuclei_model"], threads).predict_instances(
                    nuc, diameter=d_nuclei)
            if edge:
                nuclei = discard_edge(nuclei)
                ndet = {**ndet, "n_cells": int(nuclei.max())}
        with _naming(site["paths"][tl_name]):
            done = segment_and_measure(_model(cfg["model"], threads), tl, diameter=d_cells,
                                       channels=channels, nuclei=nuclei,
                                       pixel_size=cfg.get("pixel_size"), exclude_edge=edge)
        cells, det, table = done.labels, done.details, done.cells
        rec.update(shape=list(tl.shape), diameter=det["diameter"], n_cells=det["n_cells"],
                   uncounted_texture=det.get("uncounted_texture"),
                   pattern=det.get("pattern", ""))
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
    write_json(out / "sites" / f"{key}.json", rec)
    return rec


# -- client side ---------------------------------------------------------------------

def check_workers(workers: int, threads: int | None = None) -> None:
    """One-line errors for a local cluster of fewer than one worker, or fewer than one
    thread a worker."""
    if not workers >= 1:
        raise TlsegError(f"--workers must be at least 1, got {workers}")
    if threads is not None and not threads >= 1:
        raise TlsegError(f"--threads must be at least 1, got {threads}")


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
    check_workers(workers)
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           dashboard_address=":0", silence_logs=logging.ERROR)
    return Client(cluster)


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
