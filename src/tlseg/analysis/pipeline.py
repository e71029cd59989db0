"""One image through the pipeline (segment, then measure every cell), and a folder of
images through it: ``tlseg segment``.

:func:`segment_and_measure` is the per-image step that the folder run and the plate run
(:mod:`tlseg.plate.run`) share. :func:`segment_folder` writes, for each image ``<stem>``,
atomically into the output folder:

- ``<stem>_masks.tif``: instance labels (0 = background);
- ``<stem>_cells.csv``: one row per cell (:func:`tlseg.analysis.measure.measure_cells`:
  centroid, area, perimeter, eccentricity, solidity, mean intensity);
- ``<stem>_overlay.png`` with ``overlay``;
- ``segment.json``: the settings (a re-run with others is refused unless ``overwrite``).

``counts.csv`` has one row per image (``image``, ``status``, ``n_cells``, ``diameter``,
``diameter_source``, ``mean_area_px``, ``uncounted_texture``, ``pattern``, ``error``,
and the image's absolute ``path``), rewritten after every image; ``pattern`` says
whether a repeating structure was found (:func:`tlseg.inference.repeats.pattern_kind`:
a chip's lattice, subtracted before the network, or a wall along one direction), and the
log line names it, so that a field of cells taken for a chip would not pass unseen. An
image whose cell-like texture lies mostly outside the cells counted
(:func:`tlseg.uncounted_texture` over ``FLAG``, :func:`~tlseg.analysis.coverage.flagged`)
is also named in a warning. An image's row is its last write, so it is the completion
marker: a re-run skips an image only when its row says 'ok' and its mask, table and (if
asked for) overlay all exist, and redoes any other; a run killed between two writes
loses nothing on the re-run.
Hidden temporary files left by a killed run are removed when the next run starts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..config import SegmentConfig, settings_or_config
from ..errors import TlsegError
from ..inference.model import Model
from ..io import list_images, read_image, write_json, write_labels, write_table
from ..io.files import output_folder, undo_defuse
from ..io.images import BLOCKY, JPEG_SUFFIXES, jpeg_blockiness
from .coverage import flagged, uncounted_texture
from .measure import discard_edge, measure_cells
from .overlay import write_overlay

log = logging.getLogger(__name__)

COUNT_COLUMNS = ("image", "status", "n_cells", "diameter", "diameter_source", "mean_area_px",
                 "uncounted_texture", "pattern", "error", "path")


@dataclass
class Segmented:
    """One image segmented and measured: its labels, how it was segmented (``details``
    of :meth:`tlseg.Model.predict_instances`) and one row per cell (``cells``)."""

    labels: np.ndarray
    details: dict
    cells: pd.DataFrame


def segment_and_measure(model: Model, image: np.ndarray, *, diameter: float | None = None,
                        channels: dict[str, np.ndarray] | None = None,
                        nuclei: np.ndarray | None = None, pixel_size: float | None = None,
                        tile: int = 1024, tta: bool = False,
                        exclude_edge: bool = False) -> Segmented:
    """Segment an image and measure every cell: the per-image step of
    :func:`segment_folder` and of a plate run.

    Parameters
    ----------
    model : Model
        The segmentation model.
    image : ndarray (H, W)
        Gray image.
    diameter : float, optional
        Cell diameter in pixels; estimated when omitted.
    channels : dict of str to ndarray, optional
        Images whose mean intensity per cell is measured (default: ``{"image": image}``).
    nuclei : ndarray (H, W) of int, optional
        Nucleus labels: adds the nuclei inside each cell.
    pixel_size : float, optional
        µm per pixel: adds µm² areas.
    tile, tta
        As :meth:`tlseg.Model.segment`.
    exclude_edge : bool
        Drop the cells that touch the image's edge (:func:`tlseg.discard_edge`) before
        they are counted and measured; ``details["n_cells"]`` counts those kept and
        ``details["n_edge"]`` those dropped.

    Returns
    -------
    Segmented
        ``labels``, ``details`` (diameter used and its source, scale, cell count; for a
        transmitted-light model also ``uncounted_texture``,
        :func:`tlseg.uncounted_texture`) and ``cells`` (:func:`tlseg.measure_cells`).
    """
    labels, details = model.predict_instances(image, diameter=diameter, tile=tile, augment=tta)
    if model.config.flatfield == "divide":  # transmitted light: cells are texture
        details["uncounted_texture"] = uncounted_texture(image, labels, details["diameter"])
    if exclude_edge:
        kept = discard_edge(labels)
        details = {**details, "n_cells": int(kept.max()),
                   "n_edge": int(details["n_cells"]) - int(kept.max())}
        labels = kept
    cells = measure_cells(labels, channels if channels is not None else {"image": image},
                         nuclei=nuclei, pixel_size=pixel_size)
    return Segmented(labels, details, cells)


def pattern_note(details: dict) -> str:
    """What a field's repeating structure did, for its log line ('' without one)."""
    kind = details.get("pattern")
    if kind == "lattice":
        return ("; a repeating lattice (a chip's posts or traps) was taken out and the "
                "objects on it dropped")
    if kind == "line":
        return ("; a structure repeating along one direction (a wall or an edge) was "
                "found and the objects on it dropped")
    return ""


def missed_warning(name: str, share: float) -> str:
    """The one-line warning for a field whose :func:`tlseg.uncounted_texture` is over
    ``FLAG``."""
    return (f"{name}: {share:.0%} of its cell-like texture lies outside the cells counted: "
            "look at its masks for missed cells (a confluent or unfamiliar culture: "
            "calibrate with a nuclear stain or teach a few ROIs) or for structures and "
            "debris")


def _read_counts(path: Path) -> dict[str, dict]:
    if not path.is_file():
        return {}
    try:
        table = pd.read_csv(path, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError):
        return {}  # damaged by hand: rebuilt from this run's rows
    rows = [{k: undo_defuse(v) for k, v in r.items()} for r in table.to_dict("records")]
    return {r["image"]: r for r in rows if "image" in r}


def _write_counts(path: Path, rows: dict[str, dict]) -> None:
    write_table(path, pd.DataFrame(list(rows.values()), columns=list(COUNT_COLUMNS)))


def _output_folder(out) -> Path:
    """``out`` as an output folder (:func:`tlseg.io.files.output_folder`), cleared of the
    hidden temporary files of a killed run."""
    out = output_folder(out)
    for stale in out.glob(".*"):  # atomic writes' temp files (.<name>.<random><suffix>)
        if stale.is_file() and stale.suffix in (".tif", ".csv", ".png"):
            stale.unlink(missing_ok=True)
    return out


def _refuse_shared_names(files: list[Path], out: Path) -> None:
    """Two inputs whose names differ only in their folder or suffix (``a/img.tif``,
    ``b/img.tif``, ``img.png``) would write the same ``<stem>_masks.tif``: the second
    would be skipped as done, or overwrite the first's results. Refused before any work."""
    first: dict[str, Path] = {}
    for f in files:
        other = first.setdefault(f.stem.casefold(), f)
        if other is not f:
            raise TlsegError(f"{other} and {f} would both write {f.stem}_masks.tif into "
                             f"{out}: segment them into separate -o folders, or rename one")


def _refuse_other_sources(sources: dict[Path, str], rows: dict[str, dict], out: Path,
                          overwrite: bool) -> None:
    """An image whose name ``counts.csv`` already lists for another file that still
    exists (a second folder run into the same ``out``) would be skipped as done, and the
    other file's count reported for it. Refused before any work, unless ``overwrite``.
    ``sources``: each input and its absolute path."""
    for f, source in sources.items():
        earlier = str((rows.get(f.name) or {}).get("path") or "")
        if (not overwrite and earlier and earlier != source
                and Path(earlier).exists()):
            raise TlsegError(f"{out} holds the results of {earlier}, not of {f}: give it "
                             "another -o, or --overwrite to replace them")


def _settings_record(out: Path, config: SegmentConfig, model: Model | None, *,
                     done: bool) -> None:
    """Write ``out/segment.json``: the settings that make the results (model, diameter,
    channel, plane, tile, tta). Images already ``done`` are skipped on a re-run, so a run
    with other settings into the same folder would mix two segmentations: refused unless
    ``config.overwrite``."""
    import json

    if model is not None:
        name = model.config.name
    else:
        name = str(Path(config.model).resolve()) if Path(config.model).exists() else config.model
    record = {"format": 1, "model": name, "diameter": config.diameter,
              "channel": config.channel, "plane": config.plane, "tile": config.tile,
              "tta": config.tta}
    path = out / "segment.json"
    try:
        earlier = json.loads(path.read_text()) if path.is_file() else {}
    except (json.JSONDecodeError, OSError):
        earlier = {}  # damaged by hand: this run's settings replace it
    diff = [k for k in record if k in earlier and earlier[k] != record[k]]
    if diff and done and not config.overwrite:
        raise TlsegError(f"{out} holds results made with other settings "
                         f"({', '.join(f'{k} {earlier[k]}' for k in diff)}); use another "
                         "-o, repeat the earlier settings to resume, or --overwrite to redo them")
    write_json(path, record)


def segment_folder(inputs, out, config: SegmentConfig | None = None, *,
                   model: Model | str | Path | None = None,
                   progress: Callable[[Iterable], Iterable] | None = None,
                   **settings) -> pd.DataFrame:
    """Segment image files or folders into ``out``: ``tlseg segment``.

    Parameters
    ----------
    inputs : path or list of paths
        Image files and folders of images (TIFF, PNG, JPEG).
    out : path
        Output folder (see the module docstring for what is written).
    config : SegmentConfig, optional
        The run's settings; keywords (``model``, ``diameter``, ``channel``, ``plane``,
        ``tile``, ``tta``, ``overlay``, ``overwrite``) build one instead.
    model : Model, str or path, optional
        A loaded model, or a shipped model's name or a model folder (default:
        ``config.model``, else ``tl-cells``).
    progress : callable(iterable) -> iterable, optional
        Wraps the loop over the files (e.g. ``tqdm``).

    Returns
    -------
    pandas.DataFrame
        ``counts.csv``: one row per image, with ``status`` 'ok' or 'error' and the
        image's error. An image that cannot be read or segmented is logged and skipped;
        a single image's error is raised instead (as :class:`TlsegError`).

    Examples
    --------
    >>> import tlseg, tifffile, tempfile, pathlib
    >>> from tlseg.synthetic import synthetic_field
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> tifffile.imwrite(d / "a.tif", synthetic_field((160, 160), diameter=30, seed=2)["tl"])
    >>> counts = tlseg.segment_folder(d / "a.tif", d / "out", diameter=30)
    >>> list(counts["status"]), sorted(p.name for p in (d / "out").iterdir())
    (['ok'], ['a_cells.csv', 'a_masks.tif', 'counts.csv', 'segment.json'])
    """
    if model is not None and not isinstance(model, Model):
        if config is not None:
            raise TypeError("segment_folder: name the model in the SegmentConfig or as "
                            "model=, not both")
        settings["model"], model = str(model), None
    try:
        config = settings_or_config(SegmentConfig, config, settings, what="segment_folder")
    except ValueError as exc:
        raise TlsegError(str(exc)) from None
    listed = list_images([inputs] if isinstance(inputs, (str, Path)) else inputs)
    # each input and its absolute path, resolved once; a file given twice runs once
    sources = {f: str(r) for r, f in {f.resolve(): f for f in listed}.items()}
    files = list(sources)
    _refuse_shared_names(files, out)
    given = model
    model = model if model is not None else Model.load(config.model)  # before any write
    out = _output_folder(out)
    counts_path = out / "counts.csv"
    rows = _read_counts(counts_path)
    _settings_record(out, config, given,
                     done=any(r.get("status") == "ok" for r in rows.values()))
    _refuse_other_sources(sources, rows, out, config.overwrite)
    for f in (progress or (lambda it: it))(files):
        source = sources[f]
        mask_path = out / f"{f.stem}_masks.tif"
        outputs = [mask_path, out / f"{f.stem}_cells.csv"]
        if config.overlay:
            outputs.append(out / f"{f.stem}_overlay.png")
        done = (rows.get(f.name) or {}).get("status") == "ok" and all(
            p.exists() for p in outputs)
        if done and not config.overwrite:
            log.info("%s: done in %s, skipped (use --overwrite to redo)", f.name, out)
            continue
        try:
            image = read_image(f, channel=config.channel, plane=config.plane)
            result = segment_and_measure(model, image, diameter=config.diameter,
                                         tile=config.tile, tta=config.tta)
        except TlsegError as exc:
            msg = str(exc) if str(exc).startswith(str(f)) else f"{f}: {exc}"
            if len(files) == 1:
                raise TlsegError(msg) from None
            log.error("%s (skipped)", msg)
            rows[f.name] = {"image": f.name, "status": "error", "error": msg,
                            "path": source}
            _write_counts(counts_path, rows)
            continue
        labels, details, cells = result.labels, result.details, result.cells
        rows[f.name] = {"image": f.name, "status": "ok", "n_cells": details["n_cells"],
                        "diameter": round(details["diameter"], 2),
                        "diameter_source": details["diameter_source"],
                        "mean_area_px": round(float(cells["area"].mean()), 1) if len(cells)
                        else 0.0, "uncounted_texture": details.get("uncounted_texture"),
                        "pattern": details.get("pattern", ""), "error": "", "path": source}
        try:  # the counts row last: it marks the image done
            write_table(out / f"{f.stem}_cells.csv", cells)
            write_labels(mask_path, labels)
            if config.overlay:
                write_overlay(out / f"{f.stem}_overlay.png", image, labels)
            _write_counts(counts_path, rows)
        except OSError as exc:
            why = exc.strerror or exc
            raise TlsegError(f"{out}: cannot write the results of {f.name} ({why}); free "
                             "some space or choose another -o, then run again to resume"
                             ) from None
        log.info("%s: %d cells (diameter %.1f px, %s)%s", f.name, details["n_cells"],
                 details["diameter"], details["diameter_source"], pattern_note(details))
        if f.suffix.lower() in JPEG_SUFFIXES and (blocky := jpeg_blockiness(image)) >= BLOCKY:
            log.warning("%s: JPEG compression blocks show (steps at the 8 x 8 block edges "
                        "%.1fx the others); on flat background they can be read as cells: "
                        "segment the instrument's TIFF or PNG export if you have it",
                        f.name, blocky)
        share = details.get("uncounted_texture")
        if flagged(share):
            log.warning(missed_warning(f.name, share))
    return pd.DataFrame(list(rows.values()), columns=list(COUNT_COLUMNS))


__all__ = ["COUNT_COLUMNS", "Segmented", "missed_warning", "pattern_note", "segment_and_measure",
           "segment_folder"]
