"""Calibrating the label-free model on a plate's own cells from a paired nuclear stain:
``tlseg plate calibrate``.

A lab images one plate with a nuclear stain; the stain is free supervision. On the
calibration wells both models run, and their agreement becomes training labels with no
human input (:func:`tlseg.training.nucleus_labels.calibration_labels`: a cell holding one
nucleus stays a cell; an object far from every nucleus is background; a cell holding
several is split at them; where packed nuclei lie outside every cell, as in a confluent
monolayer the model reads as background, each gets the region nearer to it than to any
other; the rest is unknown to the loss).

The base model is then fine-tuned on these labels with the masked loss (the settings of
:data:`tlseg.config.TEACH_MODES` ``finetune``; outside the known pixels the base model's
own maps are the targets, as in teaching). Last, the fine-tuned model's instance settings
(thresholds, merging, splitting, minimum size, the faint-cell and flow filters) are tuned
on the calibration sites so that its cells match the nuclei one to one
(:func:`~tlseg.plate.nuclei_tuning.tune_to_nuclei`): a lab's debris, optics and culture
decide what is a cell and where touching cells part. Its automatic diameter is then set
to read the diameter it was calibrated at on the calibration plate
(:func:`~tlseg.plate.nuclei_tuning.keep_diameter`), so that a plate run with it counts
at the scale it learned. The model folder's card records the
calibration wells, the settings and the label-free vs nuclei agreement before and after
on wells held aside from the calibration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..analysis.measure import centres_per_cell, nucleus_centres
from ..config import TEACH_MODES, TrainConfig
from ..errors import TlsegError, check_positive
from ..inference.model import Model
from ..training.data import make_sample
from ..training.nucleus_labels import calibration_labels, nucleus_homes
from ..training.targets import UNKNOWN
from ..training.train import check_output_folder, train_samples
from .layout import Site, normalize_well, read_channel, scan_plate, split_well
from .nuclei_tuning import check_structures, keep_diameter, tune_instances
from .plate_map import read_plate_map
from .prepare import plate_diameter
from .validate import agreement

log = logging.getLogger(__name__)

#: fewer nuclei than this over the calibration wells is too little to learn from
MIN_NUCLEI = 30
#: fine-tuning steps (crops of 128 px at the canonical scale, batch 8)
STEPS = 300
#: what a calibration without held-aside wells says (log, CLI, report)
NOT_MEASURED = ("no well is held aside, so the calibration is not measured on wells it "
                "did not learn from (on a plate of several wells, name fewer with --wells)")
#: sites of the held-aside wells counted before and after (at most)
MAX_CHECK_SITES = 8


def wells_by_condition(chosen: list[str], plate_map) -> list[str]:
    """Wells named in ``chosen``, each entry a well (``B03``) or a plate-map condition
    ``COLUMN=VALUE`` that stands for every well of the map with that value.

    Examples
    --------
    >>> import pandas as pd
    >>> pm = pd.DataFrame({"well": ["A01", "A02", "B01"], "role": ["cal", "test", "cal"],
    ...                    "density": [5000, 20000, 5000]}).set_index("well")
    >>> wells_by_condition(["role=cal"], pm)
    ['A01', 'B01']
    >>> wells_by_condition(["density=20000", "b1"], pm)
    ['A02', 'B01']
    """
    wells: list[str] = []
    for entry in chosen:
        if "=" not in entry:
            wells.append(normalize_well(entry))
            continue
        column, value = (t.strip() for t in entry.split("=", 1))
        if plate_map is None:
            raise TlsegError(f"--wells {entry}: a condition needs a plate map (--plate-map)")
        if column not in plate_map.columns:
            raise TlsegError(f"--wells {entry}: the plate map has no column {column!r} "
                             f"(columns: {', '.join(map(str, plate_map.columns))})")
        values = plate_map[column]
        match = values.astype(str) == value
        if not match.any() and np.issubdtype(values.dtype, np.number):
            try:  # 20000 and 2e4 name the same density
                match = np.isclose(values.astype(float), float(value))
            except ValueError:
                pass
        if not match.any():
            seen = [str(v) for v in sorted(set(values.tolist()))]
            raise TlsegError(f"--wells {entry}: no well of the plate map has {column} = "
                             f"{value} (values: {', '.join(seen[:12])})")
        wells += list(plate_map.index[match])
    return list(dict.fromkeys(wells))  # in the order named, each well once


def _split_wells(wells: list[str], chosen: list[str] | None) -> tuple[list[str], list[str]]:
    """Calibration wells and wells held aside to measure it: the chosen ones and the
    rest, or, when none are chosen, every well but every third one."""
    if chosen:
        unknown = sorted(set(chosen) - set(wells))
        if unknown:
            raise TlsegError(f"--wells {','.join(unknown)}: not in the plate (wells "
                             f"{', '.join(wells[:12])}{' ...' if len(wells) > 12 else ''})")
        return [w for w in wells if w in chosen], [w for w in wells if w not in chosen]
    if len(wells) < 3:
        return list(wells), []
    return ([w for i, w in enumerate(wells) if i % 3 != 2],
            [w for i, w in enumerate(wells) if i % 3 == 2])


def _read_pair(site: Site, tl: str, nuc: str) -> tuple[np.ndarray, np.ndarray]:
    a, b = read_channel(site.paths[tl]), read_channel(site.paths[nuc])
    if a.shape != b.shape:
        raise TlsegError(f"{site.paths[nuc]}: {b.shape[0]}x{b.shape[1]} pixels but the "
                         f"{tl} image is {a.shape[0]}x{a.shape[1]}; the two channels must "
                         "be the same field")
    return a, b


def _counts(model: Model, nuclei_model: Model, pairs, d: float, nd: float) -> list[dict]:
    rows = []
    for key, tl, nuc in pairs:
        rows.append({"site": key,
                     "nuclei": int(nuclei_model.predict_instances(nuc, diameter=nd)[1]["n_cells"]),
                     "label_free": int(model.predict_instances(tl, diameter=d)[1]["n_cells"])})
    return rows


def _agreement(rows: list[dict], column: str) -> dict:
    lf = np.array([r[column] for r in rows], float)
    nu = np.array([r["nuclei"] for r in rows], float)
    out = {"n_sites": len(rows), "label_free": int(lf.sum()), "nuclei": int(nu.sum())}
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(lf - nu) / nu
    rel = rel[np.isfinite(rel)]
    out["mean_abs_rel_error"] = float(rel.mean()) if len(rel) else None
    if len(rows) >= 3:
        s = agreement(lf, nu)
        out.update(r2=s.get("r2"), ccc=s.get("ccc"), bias=s.get("bias"),
                   paired_p=s.get("paired_p"))
    return out


def worse_on_held_aside(before: dict, after: dict) -> str | None:
    """A warning when the calibrated model agrees less with the nuclei than the base model
    on the held-aside wells (their ``mean_abs_rel_error``, :func:`_agreement`), else None.

    >>> worse_on_held_aside({"mean_abs_rel_error": 0.096}, {"mean_abs_rel_error": 0.126})
    'on the held-aside wells the calibrated model agrees less with the nuclei than the base model (mean |relative error| 9.6 % -> 12.6 %): calibrate on more or other wells, or keep the base model'
    >>> worse_on_held_aside({"mean_abs_rel_error": 0.096}, {"mean_abs_rel_error": 0.045})
    """
    was, now = before.get("mean_abs_rel_error"), after.get("mean_abs_rel_error")
    if was is None or now is None or now <= was:
        return None
    return ("on the held-aside wells the calibrated model agrees less with the nuclei than "
            f"the base model (mean |relative error| {100 * was:.1f} % -> {100 * now:.1f} %): "
            "calibrate on more or other wells, or keep the base model")


def calibrate(plate_dir, out_dir, *, tl_channel: str, nuclei_channel: str,
              wells: list[str] | None = None, base="tl-cells", nuclei_model="nuclei",
              diameter: float | None = None, nuclei_diameter: float | None = None,
              steps: int = STEPS, seed: int = 0, resume: bool = False,
              layout: str = "auto", pattern: str | None = None, plate_map=None,
              seed_missed_cells: bool = True,
              progress: Callable[[int, int, dict], None] | None = None) -> Model:
    """Fine-tune the label-free model on a plate's paired nuclear stain:
    ``tlseg plate calibrate``.

    Parameters
    ----------
    plate_dir : path
        Plate folder (as for :func:`tlseg.run_plate`).
    out_dir : path
        Model folder to write; then ``tlseg plate run --model OUT`` counts label-free
        plates without the stain.
    tl_channel, nuclei_channel : str
        The transmitted-light and nuclear-stain channels as the file names call them.
    wells : list of str, optional
        Calibration wells (e.g. ``["A01", "B03"]``), or with a plate map also conditions
        ``COLUMN=VALUE`` (e.g. ``["role=calibration"]``: every well whose plate-map
        column has that value; :func:`wells_by_condition`); the plate's other wells are
        held aside to measure the calibration. Default: every well but every third one,
        which is held aside.
    base, nuclei_model : Model, str or path
        The label-free model to calibrate and the nuclei model.
    diameter, nuclei_diameter : float, optional
        Cell and nucleus diameters in pixels (default: estimated as ``tlseg plate run``
        does, on up to 4 sites spread over the plate:
        :func:`~tlseg.plate.run.plate_diameter`).
    steps : int
        Fine-tuning steps.
    seed : int
        Random seed.
    resume : bool
        Continue an interrupted calibration in ``out_dir``.
    layout, pattern
        File-name layout of the plate, as for :func:`tlseg.run_plate`.
    plate_map : path, optional
        Plate-map CSV, as for :func:`tlseg.run_plate`: conditions in ``wells``, and the
        calibration wells' conditions recorded in the card.
    seed_missed_cells : bool
        Give packed nuclei outside every label-free cell a cell in the labels
        (:func:`~tlseg.training.nucleus_labels.seed_missed`); without, what lies near them
        is unknown.
    progress : callable(step, total, losses), optional
        Called after every training step.

    Returns
    -------
    Model
        The calibrated model (also written to ``out_dir``); ``model.card["calibration"]``
        holds the wells, the labels' make-up and the agreement before and after.

    Raises
    ------
    TlsegError
        A missing channel, channels of different shapes, unknown wells or conditions, an
        unreadable plate map, or fewer than :data:`MIN_NUCLEI` nuclei on the calibration
        wells; nothing is written then.
    """
    check_positive("diameter", diameter)
    check_positive("nuclei_diameter", nuclei_diameter)
    if not steps >= 1:
        raise TlsegError(f"--steps must be at least 1, got {steps}")
    check_output_folder(out_dir, resume=resume)  # before minutes of preparation
    plate = scan_plate(plate_dir, layout=layout, pattern=pattern)
    tl, nuc = plate.resolve_channel(tl_channel), plate.resolve_channel(nuclei_channel)
    sites, problems = plate.sites([tl, nuc])
    for p in problems:
        log.warning(p)
    if not sites:
        raise TlsegError(f"{plate.folder}: no site has both channels {tl} and {nuc}")
    pm = None
    if plate_map is not None:
        pm, pm_warnings = read_plate_map(plate_map, plate.wells)
        for w in pm_warnings:
            log.warning(w)
    if wells:
        wells = wells_by_condition(wells, pm)
    calib_wells, held_wells = _split_wells(sorted({s.well for s in sites}, key=split_well),
                                           wells)
    if not held_wells:
        log.warning(NOT_MEASURED)
    base = base if isinstance(base, Model) else Model.load(base)
    nuclei_model = (nuclei_model if isinstance(nuclei_model, Model)
                    else Model.load(nuclei_model))
    pairs = [(s.key, *_read_pair(s, tl, nuc)) for s in sites if s.well in calib_wells]
    # estimated as `tlseg plate run` estimates them, over sites spread over the plate: the
    # calibrated model then learns the cells at the scale a plate run shows them
    if diameter is None or nuclei_diameter is None:
        log.info("estimating the %s on up to 4 sites spread over the plate",
                 "cell and nucleus diameters" if diameter is None and nuclei_diameter is None
                 else "cell diameter" if diameter is None else "nucleus diameter")
    d = diameter or plate_diameter(base, sites, tl) or base.config.default_diameter
    nd = (nuclei_diameter or plate_diameter(nuclei_model, sites, nuc)
          or nuclei_model.config.default_diameter)
    log.info("calibration wells %s; cell diameter %.1f px, nucleus diameter %.1f px",
             ", ".join(calib_wells), d, nd)
    canon = base.config.canonical_diameter
    samples, make_up = [], {"sites": 0, "nuclei": 0, "cells_kept": 0, "cells_split": 0,
                            "cells_seeded": 0, "background_fraction": 0.0,
                            "known_fraction": 0.0}
    centres = []  # nucleus centres per calibration site, input pixels
    for i, (key, image, stain) in enumerate(pairs):
        log.info("labels from calibration site %d of %d (%s)", i + 1, len(pairs), key)
        cells = base.predict_instances(image, diameter=d)[0]
        nuclei = nuclei_model.predict_instances(stain, diameter=nd)[0]
        centres.append(nucleus_centres(nuclei))
        labels = calibration_labels(cells, nuclei, diameter=d, seed=seed_missed_cells)
        make_up["sites"] += 1
        make_up["nuclei"] += len(centres[-1])
        make_up["cells_kept"] += len(np.unique(labels[labels > 0]))
        make_up["cells_split"] += int((centres_per_cell(cells, centres[-1])[1:] >= 2).sum())
        # a seeded cell holds the centre of the nucleus it was seeded at, outside every
        # label-free cell
        _, yx, home = nucleus_homes(cells, nuclei)
        at = labels[yx[home == 0, 0], yx[home == 0, 1]]
        make_up["cells_seeded"] += len(np.unique(at[at > 0]))
        make_up["background_fraction"] += float((labels == 0).mean())
        make_up["known_fraction"] += float((labels != UNKNOWN).mean())
        samples.append(make_sample(image, labels, diameter=d, canonical_diameter=canon,
                                   name=key, source="calibration",
                                   teacher=lambda small: base.predict_maps(small)))
    for k in ("background_fraction", "known_fraction"):
        make_up[k] = round(make_up[k] / max(make_up["sites"], 1), 3)
    if make_up["nuclei"] < MIN_NUCLEI:
        raise TlsegError(f"only {make_up['nuclei']} nuclei found on the calibration wells "
                         f"({', '.join(calib_wells)}); at least {MIN_NUCLEI} are needed: "
                         "give more or denser wells with --wells")
    settings = TEACH_MODES["finetune"].train_settings()
    tc = TrainConfig(**settings, epochs=1, steps_per_epoch=steps, seed=seed,
                     holdout_fraction=0.0, checkpoint_every=50)
    held = spread_sites([s for s in sites if s.well in held_wells], MAX_CHECK_SITES)
    card = {"parent": base.card.get("name") or base.config.name, "mode": "calibrate",
            "plate": str(plate.folder), "tl_channel": tl, "nuclei_channel": nuc,
            "calibration": {"wells": calib_wells, "held_aside_wells": held_wells,
                            "diameter": round(float(d), 2),
                            "nuclei_diameter": round(float(nd), 2), "labels": make_up}}
    if pm is not None:  # what the calibration wells hold, in the plate map's words
        card["calibration"]["conditions"] = {
            w: {str(k): v.item() if isinstance(v, np.generic) else v
                for k, v in pm.loc[w].items()}
            for w in calib_wells if w in pm.index}
    model = train_samples(samples, out_dir, model_config=replace(base.config,
                                                                 name=Path(out_dir).name),
                          train_config=tc, init=base, resume=resume, progress=progress,
                          card=card)
    model = tune_instances(model, pairs, centres, d, out_dir)
    model = check_structures(model, pairs, centres, d, out_dir)
    # a plate run with the calibrated model estimates the diameter it was calibrated at
    model = keep_diameter(model, plate_diameter(model, sites, tl), d, out_dir)
    if held:
        check = [(s.key, *_read_pair(s, tl, nuc)) for s in held]
        before = _counts(base, nuclei_model, check, d, nd)
        after = _counts(model, nuclei_model, check, d, nd)
        for b, a in zip(before, after):
            b["calibrated"] = a["label_free"]
        card = dict(model.card)
        card["calibration"] = {**card["calibration"], "sites": before,
                               "checked_wells": sorted({s.well for s in held}),
                               "before": _agreement(before, "label_free"),
                               "after": _agreement(before, "calibrated")}
        model.save_tuning(out_dir, card=card)
        log.info("held-aside sites: label-free %d -> %d cells for %d nuclei",
                 card["calibration"]["before"]["label_free"],
                 card["calibration"]["after"]["label_free"],
                 card["calibration"]["before"]["nuclei"])
        note = worse_on_held_aside(card["calibration"]["before"],
                                   card["calibration"]["after"])
        if note:
            log.warning(note)
    return model


def conditions_text(conditions: dict) -> str:
    """The calibration wells' plate-map conditions (the card's ``conditions``) in a few
    words: each column with its values over those wells; '' without any.

    Examples
    --------
    >>> conditions_text({"A01": {"drug": "DMSO", "density": 5000},
    ...                  "A02": {"drug": "DMSO", "density": 20000}})
    'drug DMSO; density 5000, 20000'
    """
    values: dict[str, list] = {}
    for row in (conditions or {}).values():
        for column, value in row.items():
            seen = values.setdefault(column, [])
            if value not in seen and value != "":
                seen.append(value)
    return "; ".join(f"{c} {', '.join(map(str, v))}" for c, v in values.items() if v)


def spread_sites(sites: list, n: int) -> list:
    """At most ``n`` of ``sites`` (objects with a ``well``, in plate order), spread over
    their wells: one site of each of ``n`` wells evenly spaced in that order, or when
    there are fewer wells, their first sites, then their second ones, and so on.

    Examples
    --------
    >>> from types import SimpleNamespace as S
    >>> sites = [S(well=w, site=k) for w in ("A01", "A02", "B01", "B02") for k in (1, 2)]
    >>> [(s.well, s.site) for s in spread_sites(sites, 2)]
    [('A01', 1), ('B02', 1)]
    >>> [(s.well, s.site) for s in spread_sites(sites, 6)]
    [('A01', 1), ('A02', 1), ('B01', 1), ('B02', 1), ('A01', 2), ('A02', 2)]
    """
    by_well: dict[str, list] = {}
    for s in sites:
        by_well.setdefault(s.well, []).append(s)
    wells = list(by_well)
    if len(wells) > n:
        keep = np.unique(np.linspace(0, len(wells) - 1, n).round().astype(int))
        return [by_well[wells[i]][0] for i in keep]
    out: list = []
    for k in range(max((len(v) for v in by_well.values()), default=0)):
        out += [v[k] for v in by_well.values() if k < len(v)]
    return out[:n]
