"""``tlseg segment``: a folder of images → masks, per-cell tables and one counts table.

For each image ``<stem>``, written atomically into the output folder:

- ``<stem>_masks.tif``: instance labels (0 = background);
- ``<stem>_cells.csv``: one row per cell, the plate run's measurements
  (:func:`tlseg.analysis.measure.measure_site`: centroid, area, perimeter, eccentricity,
  solidity, mean intensity);
- ``<stem>_overlay.png`` with ``overlay``.

``counts.csv`` has one row per image (``image``, ``status``, ``n_cells``, ``diameter``,
``diameter_source``, ``mean_area_px``, ``error``), rewritten after every image: a run
stopped part-way keeps the rows of the images it finished, and a re-run (which skips
images whose masks exist) keeps the rows it does not redo.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from ..errors import TlsegError
from ..io import read_image, write_labels, write_table
from .overlay import write_overlay
from ..inference.model import Model

COUNT_COLUMNS = ("image", "status", "n_cells", "diameter", "diameter_source", "mean_area_px",
                 "error")


def _read_counts(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    try:
        table = pd.read_csv(path, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return {}  # damaged by hand: rebuilt from this run's rows
    return {r["image"]: r for r in table.to_dict("records") if "image" in r}


def _write_counts(path: Path, rows: dict[str, dict]) -> None:
    write_table(path, pd.DataFrame(list(rows.values()), columns=list(COUNT_COLUMNS)))


def segment_files(
    files: list[Path],
    model: Model,
    out,
    *,
    diameter: float | None = None,
    channel: int | None = None,
    plane: int | None = None,
    tile: int = 1024,
    tta: bool = False,
    overlay: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    progress: Callable = lambda it: it,
) -> int:
    """Segment ``files`` into ``out`` (see the module docstring); return how many failed.

    An image that cannot be read or segmented is logged and skipped, with its error in
    ``counts.csv``; a single image's error is raised instead (as :class:`TlsegError`).
    """
    from .measure import measure_site

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    counts_path = out / "counts.csv"
    rows = _read_counts(counts_path)
    failed = 0
    for f in progress(files):
        mask_path = out / f"{f.stem}_masks.tif"
        if mask_path.exists() and not overwrite:
            log(f"{f.name}: {mask_path.name} exists, skipped (use --overwrite to redo)")
            continue
        try:
            image = read_image(f, channel=channel, plane=plane)
            labels, details = model.predict_instances(image, diameter=diameter, tile=tile,
                                                      augment=tta)
        except TlsegError as exc:
            msg = str(exc) if str(exc).startswith(str(f)) else f"{f}: {exc}"
            if len(files) == 1:
                raise TlsegError(msg) from None
            print(f"error: {msg} (skipped)", file=sys.stderr)
            rows[f.name] = {"image": f.name, "status": "error", "error": msg}
            _write_counts(counts_path, rows)
            failed += 1
            continue
        cells = measure_site(labels, {"image": image})
        write_table(out / f"{f.stem}_cells.csv", cells)
        write_labels(mask_path, labels)
        if overlay:
            write_overlay(out / f"{f.stem}_overlay.png", image, labels)
        rows[f.name] = {"image": f.name, "status": "ok", "n_cells": details["n_cells"],
                        "diameter": round(details["diameter"], 2),
                        "diameter_source": details["diameter_source"],
                        "mean_area_px": round(float(cells["area"].mean()), 1) if len(cells)
                        else 0.0, "error": ""}
        _write_counts(counts_path, rows)
        log(f"{f.name}: {details['n_cells']} cells "
            f"(diameter {details['diameter']:.1f} px, {details['diameter_source']})")
    return failed


__all__ = ["COUNT_COLUMNS", "segment_files"]
