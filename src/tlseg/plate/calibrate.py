"""Calibrating the label-free model on a plate's own cells from a paired nuclear stain:
``tlseg plate calibrate``.

A lab images one plate with a nuclear stain; the stain is free supervision. On the
calibration wells both models run, and their agreement becomes training labels with no
human input (:func:`tlseg.plate.nucleus_labels.calibration_labels`: a cell holding one
nucleus stays a cell; an object far from every nucleus is background; a cell holding
several is split at them; where packed nuclei lie outside every cell, as in a confluent
monolayer the model reads as background, each gets the region nearer to it than to any
other; the rest is unknown to the loss).

The base model is then fine-tuned on these labels with the masked loss (the settings of
:data:`tlseg.config.TEACH_MODES` ``finetune``; outside the known pixels the base model's
own maps are the targets, as in teaching). Last, the fine-tuned model's instance settings
(thresholds, merging, splitting, minimum size, the faint-cell and flow filters) are tuned
on the calibration sites so that its cells match the nuclei one to one
(:func:`tune_to_nuclei`): a lab's debris, optics and culture decide what is a cell and
where touching cells part. The model folder's card records the calibration wells, the
settings and the label-free vs nuclei agreement before and after on wells held aside from
the calibration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..analysis.measure import centres_per_cell, nucleus_centres
from ..config import TEACH_MODES, InstanceConfig, TrainConfig
from ..errors import TlsegError
from ..inference.model import Model
from ..training.data import make_sample
from ..training.targets import UNKNOWN
from ..training.train import train_samples
from ..training.tune import instance_maker
from .layout import Site, read_channel, scan_plate
from .nucleus_labels import calibration_labels, nucleus_homes, nucleus_match
from .run import weighted_diameter
from .validate import agreement

log = logging.getLogger(__name__)

#: fewer nuclei than this over the calibration wells is too little to learn from
MIN_NUCLEI = 30
#: fine-tuning steps (crops of 128 px at the canonical scale, batch 8)
STEPS = 300
#: sites of the held-aside wells counted before and after (at most)
MAX_CHECK_SITES = 8


def _f1(counts: np.ndarray) -> float:
    tp, fp, fn = (int(c) for c in counts)
    return 2 * tp / max(2 * tp + fp + fn, 1)


#: the instance settings :func:`tune_to_nuclei` tries, one at a time. The size floor stops
#: at 0.4 of a canonical cell's area: at 0.6 it matched a calibration field's nuclei one or
#: two cells better and dropped a quarter of the cells of another field of the same
#: experiment, whose smallest cells are smaller (docs/benchmarks.md, *Calibration from a
#: nuclear stain*)
NUCLEI_TUNING_AXES = {
    "fg_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "seed_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "merge_threshold": (0.0, 0.3, 0.4, 0.5, 0.6),
    "flow_split": (0.0, 0.15, 0.25, 0.35, 0.5),
    "min_area_fraction": (0.08, 0.15, 0.25, 0.4),
    "min_mean_prob": (0.0, 0.5, 0.6, 0.7, 0.8),
    "min_flow_coherence": (0.0, 0.25, 0.35, 0.45, 0.55),
}
#: the tuned settings replace the model's only when they match this much better (F1)
MIN_F1_GAIN = 0.01


def tune_to_nuclei(model: Model, sites: list[tuple[np.ndarray, np.ndarray]], *,
                   passes: int = 2) -> tuple[InstanceConfig, dict]:
    """Instance settings under which the model's cells match the nuclei one to one.

    Parameters
    ----------
    model : Model
    sites : list of (maps, centres)
        Per calibration site, the model's maps at the canonical scale
        (:meth:`~tlseg.inference.model.Model.canonical_maps`) and the nuclei's centres in
        those maps' pixels.
    passes : int
        Rounds of coordinate ascent: each setting of :data:`NUCLEI_TUNING_AXES` in turn
        takes the value with the best pooled F1 of :func:`nucleus_match`, the others
        held.

    Returns
    -------
    InstanceConfig
        The tuned settings, or the model's own when they do not match at least
        :data:`MIN_F1_GAIN` better.
    dict
        F1 and :func:`nucleus_match` counts with the model's settings and the tuned ones,
        and whether the settings changed.
    """
    axes = dict(NUCLEI_TUNING_AXES)
    if not model.config.flows:
        axes.pop("flow_split"), axes.pop("min_flow_coherence")
    instances = instance_maker([maps for maps, _ in sites], model.config.canonical_diameter)

    def score(cfg: InstanceConfig) -> np.ndarray:
        return sum(nucleus_match(instances(k, cfg), centres)
                   for k, (_, centres) in enumerate(sites))

    start = model.config.instances
    best, best_counts = start, score(start)
    first = best_counts
    for _ in range(passes):
        changed = False
        for name, values in axes.items():
            if name == "seed_threshold" and best.use_flows:
                continue
            for v in values:
                if v == getattr(best, name):
                    continue
                cfg = replace(best, **{name: v})
                counts = score(cfg)
                if _f1(counts) > _f1(best_counts):
                    best, best_counts, changed = cfg, counts, True
        if not changed:
            break
    keep = _f1(best_counts) >= _f1(first) + MIN_F1_GAIN
    record = {"f1_model_settings": round(_f1(first), 4),
              "f1_tuned_settings": round(_f1(best_counts), 4),
              # matched cells, cells without a nucleus, unmatched nuclei
              "match_model_settings": first.tolist(),
              "match_tuned_settings": best_counts.tolist(),
              "settings_changed": bool(keep and best != start)}
    return (best if keep else start), record


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


def calibrate(plate_dir, out_dir, *, tl_channel: str, nuclei_channel: str,
              wells: list[str] | None = None, base="tl-cells", nuclei_model="nuclei",
              diameter: float | None = None, nuclei_diameter: float | None = None,
              steps: int = STEPS, seed: int = 0, resume: bool = False,
              layout: str = "auto", pattern: str | None = None,
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
        Calibration wells (e.g. ``["A01", "B03"]``); the plate's other wells are held
        aside to measure the calibration. Default: every well but every third one,
        which is held aside.
    base, nuclei_model : Model, str or path
        The label-free model to calibrate and the nuclei model.
    diameter, nuclei_diameter : float, optional
        Cell and nucleus diameters in pixels (default: estimated on the calibration
        sites).
    steps : int
        Fine-tuning steps.
    seed : int
        Random seed.
    resume : bool
        Continue an interrupted calibration in ``out_dir``.
    layout, pattern
        File-name layout of the plate, as for :func:`tlseg.run_plate`.
    seed_missed_cells : bool
        Give packed nuclei outside every label-free cell a cell in the labels
        (:func:`~tlseg.plate.nucleus_labels.seed_missed`); without, what lies near them
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
        A missing channel, channels of different shapes, unknown wells, or fewer than
        :data:`MIN_NUCLEI` nuclei on the calibration wells; nothing is written then.
    """
    plate = scan_plate(plate_dir, layout=layout, pattern=pattern)
    tl, nuc = plate.resolve_channel(tl_channel), plate.resolve_channel(nuclei_channel)
    sites, problems = plate.sites([tl, nuc])
    for p in problems:
        log.warning(p)
    if not sites:
        raise TlsegError(f"{plate.folder}: no site has both channels {tl} and {nuc}")
    calib_wells, held_wells = _split_wells(sorted({s.well for s in sites}), wells)
    base = base if isinstance(base, Model) else Model.load(base)
    nuclei_model = (nuclei_model if isinstance(nuclei_model, Model)
                    else Model.load(nuclei_model))
    pairs = [(s.key, *_read_pair(s, tl, nuc)) for s in sites if s.well in calib_wells]
    d = (diameter or weighted_diameter(base, [p[1] for p in pairs[:4]])
         or base.config.default_diameter)
    nd = (nuclei_diameter or weighted_diameter(nuclei_model, [p[2] for p in pairs[:4]])
          or nuclei_model.config.default_diameter)
    log.info("calibration wells %s; cell diameter %.1f px, nucleus diameter %.1f px",
             ", ".join(calib_wells), d, nd)
    canon = base.config.canonical_diameter
    samples, make_up = [], {"sites": 0, "nuclei": 0, "cells_kept": 0, "cells_split": 0,
                            "cells_seeded": 0, "background_fraction": 0.0,
                            "known_fraction": 0.0}
    centres = []  # nucleus centres per calibration site, input pixels
    for key, image, stain in pairs:
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
    model = train_samples(samples, out_dir, model_config=replace(base.config,
                                                                 name=Path(out_dir).name),
                          train_config=tc, init=base, resume=resume, progress=progress,
                          card=card)
    model = _tune_instances(model, pairs, centres, d, out_dir)
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
    return model


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


def _tune_instances(model: Model, pairs, centres, d: float, out_dir) -> Model:
    """The calibrated model with instance settings tuned to the calibration sites' nuclei
    (:func:`tune_to_nuclei`), saved to ``out_dir`` with the record in its card."""
    sites = []
    for (_, image, _), yx in zip(pairs, centres):
        maps, details = model.canonical_maps(image, diameter=d)
        # a pixel's centre maps to (i + 0.5) * scale - 0.5 at the canonical scale
        sites.append((maps, (yx + 0.5) * details["scale"] - 0.5))
    tuned, record = tune_to_nuclei(model, sites)
    log.info("instance settings tuned to the nuclei: one-to-one F1 %.3f -> %.3f%s",
             record["f1_model_settings"], record["f1_tuned_settings"],
             "" if record["settings_changed"] else " (kept the model's own)")
    model = Model(replace(model.config, instances=tuned), model.net, card=model.card)
    card = dict(model.card)
    card["calibration"] = {**card["calibration"], "instances": record}
    model.save_tuning(out_dir, card=card)
    return model
