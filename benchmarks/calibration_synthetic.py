"""Calibration from a nuclear stain on synthetic plates: the ``--confluent`` and ``--chip``
protocols of ``benchmarks/calibration.py`` (which runs them and writes their entries of
``benchmarks/results/calibration.json``).

``--confluent`` calibrates on synthetic confluent monolayers instead, which the base
model reads as background: per modality and cell size (:data:`CONFLUENT`), a plate of six
512² fields (``tlseg.synthetic_field(confluent=True)``, with their nuclear stain) is
calibrated on its first field, and the other five are counted and scored (AP@0.5 against
their true cells) by the base and the calibrated model, at the diameter ``tlseg plate
run`` estimates for the plate, and checked for missed cells (:func:`tlseg.uncounted_texture`:
each field's value, the fields over ``FLAG`` (``flagged``) and the largest value per plate).

    python benchmarks/calibration.py --confluent [--no-seed-missed]

(``--no-seed-missed``: the calibration labels leave the missed nuclei's surroundings
unknown, as a lone missed nucleus's; key ``confluent_without_seeding``.)

``--chip`` calibrates on a synthetic microfluidic chip: six 512² brightfield fields of 40
cells of 30 px (``tlseg.synthetic_field``, with their nuclear stain), a lattice of round
posts (:func:`tlseg.training.structures.structure_relief`) drawn over the background more
than 6 px from every cell, calibrated on the first field at the true diameter; the other
five are counted and scored (AP@0.5) by the base and the calibrated model. Key
``chip_seed<S>`` (``--seed``: the calibration seed).

    python benchmarks/calibration.py --chip [--seed 1]
"""

from __future__ import annotations

import shutil
import time

import numpy as np
from common import WORK, write_site
from scipy import ndimage as ndi

import tlseg
from tlseg.analysis.coverage import flagged
from tlseg.plate.prepare import weighted_diameter


def score_fields(fields, base, model, d, label: str, *, uncounted: bool = False,
                 describe=None) -> list[dict]:
    """One row per (well, image, true labels) of ``fields``: the true count, what
    ``describe(image)`` adds, and per model (``base``, ``calibrated``) its count and
    AP@0.5 at diameter ``d`` (with ``uncounted``, also :func:`tlseg.uncounted_texture`)."""
    rows = []
    for well, tl, truth in fields:
        row = {"well": well, "true": int(truth.max()), **(describe(tl) if describe else {})}
        for name, m in (("base", base), ("calibrated", model)):
            labels = m.segment(tl, diameter=d)
            row[name] = int(labels.max())
            row[f"{name}_ap50"] = round(tlseg.evaluate(labels, truth)["AP50"], 3)
            if uncounted:
                row[f"{name}_uncounted"] = tlseg.uncounted_texture(tl, labels, d)
        rows.append(row)
        print(f"{label} {row}", flush=True)
    return rows


def totals(rows) -> dict:
    """The true total, and each model's total and mean AP@0.5, of :func:`score_fields`' rows."""
    out = {"true_total": sum(r["true"] for r in rows)}
    for name in ("base", "calibrated"):
        out[f"{name}_total"] = sum(r[name] for r in rows)
        out[f"{name}_mean_ap50"] = round(float(np.mean([r[f"{name}_ap50"] for r in rows])), 3)
    return out


#: (modality, cell diameter in px) of the synthetic confluent plates
CONFLUENT = (("phase", 24), ("brightfield", 24), ("dic", 24), ("phase", 16), ("phase", 40))
CONFLUENT_FIELDS = 6


def confluent_plates(base, steps: int, seed: int, seed_missed: bool = True) -> dict:
    """The ``--confluent`` protocol (module docstring)."""
    from tlseg.synthetic import synthetic_field

    results = {}
    for modality, diameter in CONFLUENT:
        work = (WORK / "calibration"
                / f"confluent-{modality}-{diameter}{'' if seed_missed else '-unseeded'}")
        shutil.rmtree(work, ignore_errors=True)
        (work / "plate").mkdir(parents=True)
        fields = []
        for i in range(CONFLUENT_FIELDS):
            f = synthetic_field((512, 512), diameter=diameter, modality=modality,
                                confluent=True, seed=100 + i)
            well = f"A{i + 1:02d}"
            write_site(work / "plate", "conf", well, 1, f["tl"], f["nuclei"])
            fields.append((well, f["tl"], f["labels"]))
        d = (weighted_diameter(base, [tl for _, tl, _ in fields[:4]])
             or base.config.default_diameter)
        t0 = time.perf_counter()
        model = tlseg.calibrate(work / "plate", work / "model", tl_channel="w1",
                                nuclei_channel="w2", wells=["A01"], base=base, steps=steps,
                                diameter=d, seed=seed, seed_missed_cells=seed_missed)
        seconds = round(time.perf_counter() - t0, 1)
        rows = score_fields(fields[1:], base, model, d, f"confluent {modality} {diameter} px",
                            uncounted=True)
        key = f"{modality}, {diameter} px"
        plate = results[key] = {
            "true_diameter": diameter, "diameter": round(float(d), 2),
            "calibration_s": seconds, "labels": model.card["calibration"]["labels"],
            "instances": model.card["calibration"].get("instances"), "fields": rows,
            **totals(rows)}
        for name in ("base", "calibrated"):
            checked = [r[f"{name}_uncounted"] for r in rows if r[f"{name}_uncounted"] is not None]
            plate[f"{name}_flagged"] = sum(flagged(v) for v in checked)
            plate[f"{name}_uncounted_max"] = max(checked) if checked else None
        print(f"confluent {key}: {plate['true_total']} true, base {plate['base_total']} "
              f"(AP@0.5 {plate['base_mean_ap50']}), calibrated {plate['calibrated_total']} "
              f"(AP@0.5 {plate['calibrated_mean_ap50']})", flush=True)
    return results


CHIP_FIELDS = 6
CHIP_CELLS = 40  # brightfield cells of 30 px a 512² field


def chip_plate(base, steps: int, seed: int) -> dict:
    """The ``--chip`` protocol (module docstring)."""
    import torch

    from tlseg.inference.repeats import lattice_vectors, pattern_kind
    from tlseg.synthetic import synthetic_field
    from tlseg.training.structures import structure_relief

    work = WORK / "calibration" / f"chip-seed{seed}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "plate").mkdir(parents=True)
    fields = []
    for i in range(CHIP_FIELDS):
        f = synthetic_field((512, 512), diameter=30, n_cells=CHIP_CELLS,
                            modality="brightfield", seed=40 + i)
        posts = structure_relief(512, 512, "posts", 30.0,
                                 torch.Generator().manual_seed(40 + i)).numpy()
        moat = ndi.distance_transform_edt(f["labels"] == 0) > 6  # cells sit between posts
        tl = (f["tl"] * (1 + posts * moat)).astype(np.float32)
        well = f"A{i + 1:02d}"
        write_site(work / "plate", "chip", well, 1, tl, f["nuclei"])
        fields.append((well, tl, f["labels"]))
    t0 = time.perf_counter()
    model = tlseg.calibrate(work / "plate", work / "model", tl_channel="w1",
                            nuclei_channel="w2", wells=["A01"], base=base, steps=steps,
                            diameter=30, seed=seed)
    seconds = round(time.perf_counter() - t0, 1)
    rows = score_fields(fields[1:], base, model, 30, "chip",
                        describe=lambda tl: {"pattern": pattern_kind(lattice_vectors(tl, 30)[0])})
    out = {"seed": seed, "calibration_s": seconds,
           "labels": model.card["calibration"]["labels"], "fields": rows, **totals(rows)}
    print(f"chip, seed {seed}: {out['true_total']} true, base {out['base_total']} (AP@0.5 "
          f"{out['base_mean_ap50']}), calibrated {out['calibrated_total']} (AP@0.5 "
          f"{out['calibrated_mean_ap50']})", flush=True)
    return out
