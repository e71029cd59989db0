"""Before a plate run: check the settings and channels, fix the diameters, write run.json.

:func:`plan_run` checks the settings and the channels against the plate before anything
is written. :func:`prepare_run` then checks them against an earlier run in the output
folder (a resumed run must be of the same plate, with the same settings), fixes the
diameters (an earlier run's; given; or estimated once for the plate, or per group of
wells, by :func:`plate_diameter`) and writes ``OUTDIR/run.json``.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import replace
from pathlib import Path

from ..config import PlateConfig
from ..errors import TlsegError, check_positive
from ..io import atomic_path, write_json
from .layout import Plate, Site

RUN_FORMAT = 1

log = logging.getLogger(__name__)

#: settings that :func:`prepare_run` fills in; an earlier run's values are kept on resume
_ESTIMATED = ("diameter", "nuclei_diameter", "well_diameters")


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
    check_positive("diameter", cfg.diameter)
    check_positive("nuclei_diameter", cfg.nuclei_diameter)
    check_positive("pixel_size", cfg.pixel_size, "µm")
    from ..inference.model import Model

    for name in [cfg.model] + ([cfg.nuclei_model] if cfg.nuclei_channel else []):
        Model.load(name)  # a missing or unreadable model: one line, nothing written yet
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


def _check_same_plate(earlier: Path, plate: Path, out: Path) -> None:
    """A resumed run must be of the plate ``out`` holds: its finished sites are skipped by
    well and site, so another plate's run would report the first plate's counts. A plate
    folder that has moved (its recorded path is gone) resumes, with a warning."""
    if not earlier.is_absolute() or earlier == plate:
        return  # run.json of a relative path cannot be placed; nothing to compare
    if earlier.exists():
        raise TlsegError(f"{out} holds the run of another plate ({earlier}), not of "
                         f"{plate}; give this plate another -o")
    log.warning(f"{out} holds the run of {earlier}, which is gone; resuming it from {plate}")


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
        _check_same_plate(Path(earlier.get("plate") or ""), plate.folder.resolve(), out)
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
        "plate": str(plate.folder.resolve()),  # absolute: the plate browser reopens it
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
    write_json(run_file, record)
    return sites, record, cfg
