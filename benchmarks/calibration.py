"""Calibration from a nuclear stain on real paired fields: `tlseg plate calibrate`.

Per experiment of ``paired/aisegcell-s10`` (brightfield + nuclear stain, nucleus
ground truth), its fields are laid out as one ImageXpress plate (one well per field),
the shipped ``tl-cells`` is calibrated on its ``--k`` fields with the most nuclei (default
1, the targets' case: one stained field; a lab calibrates on a well-populated well, and
calibration needs 30 nuclei), and the other fields of the experiment are
counted with the base and the calibrated model, both at one diameter for the experiment
estimated as ``tlseg plate run`` estimates a plate's (the median of the estimates on 4
fields spread over it, weighted by the cells found at each), since a single dense field
can mislead the estimate. Counts are compared with the true nucleus count and with the true
whole-cell count. The nucleus masks leave out every nucleus that touches the field's edge
(none of their 1,390 does, while 71 of the 1,551 whole cells do), so against them the
cells touching the edge are not counted (:func:`tlseg.discard_edge`); against the
whole-cell masks every cell is. (The masks are connected components, so touching cells
count as one; in 210930MA20 and 220524DS30 the nucleus masks miss up to a third of the
cells.) The whole-cell masks also outline debris: specks and fragments a tenth of a
cell's area with no DNA in them (40 of 220524DS30's 522 annotations, 14 of 200925SK30's
304); a third truth leaves them out (``*_vs_cells_no_debris``,
:func:`common.cells_without_debris`), and a fourth, by both masks, also counts an
annotation holding several annotated nuclei (touching cells: the masks are connected
components) as that many cells and adds the annotated nuclei no annotation holds
(``*_vs_cells_curated``, :func:`common.curated_cells`). Reported per field, and over the
experiment's counted fields: mean |relative error| over fields with >= 20 true objects,
mean absolute error in cells below 20, the largest count / true ratio, the fields within
the targets' tolerance (10 %, or 3 cells below 20 true), R², Lin's CCC, Bland–Altman bias
with 95 % limits and the paired t-test. With ``--leave-one-out`` each field is also
counted by its calibrated model at the diameter a plate run with that model estimates on
the experiment's 4 spread fields (``calibrated_own``: what a lab gets from ``tlseg plate
run --model``), and at the one it would estimate had its automatic diameter not been
kept at the calibration's (``calibrated_unkept``: the base's ``diameter_calibration``;
:func:`tlseg.plate.nuclei_tuning.keep_diameter`); each fold records both diameters
(``own_diameters``). Each counted field's ``seen`` says whether the base model
trained on it, on another time point of its position, or on neither
(:func:`common.seen`; 7 of the 33 fields are ``tl/aisegcell-bf`` training images);
``fields_not_seen`` pools the fields of the last kind.

``--base MODEL`` calibrates another label-free model (a name or a model folder); its
protocols are entries of their own, the base's folder name appended
(``leave_one_out_<name>``, ``one_field_<name>``, ...). With the recipe trained without the
brightfield images (``benchmarks/leave_one_source_out.py --epochs 40 --sources
aisegcell-bf``, folder ``without-aisegcell-bf``) every field is one whose modality the
base never saw::

    python benchmarks/calibration.py --data ../shared/data --leave-one-out --k 1 \
        --base benchmarks/work/loso-e40/without-aisegcell-bf

``--pick median`` calibrates on the field (the ``--k`` fields) around the experiment's
median nucleus count instead, a typical well rather than the best-populated one (key
``one_field_median``): how much the calibration depends on the field it is given.

With ``--leave-one-out`` every field of an experiment is counted once, by a model
calibrated on the experiment's other fields (the ``--k`` of them with the most nuclei),
and the agreement is also pooled over all fields. A calibration reads only its own
fields, so the folds that share calibration fields share one calibration (with ``--k 1``,
two per experiment: on the field with the most nuclei, and on the next one for that
field's own fold). Each fold's counts are kept in
``benchmarks/work/calibration/folds-<base>-k<K>-s<steps>.json`` as it ends, so an
interrupted run resumes at the next fold.

    python benchmarks/calibration.py --data ../shared/data [--experiments E ...] [--k 1]
    python benchmarks/calibration.py --data ../shared/data --leave-one-out --k 1
    python benchmarks/calibration.py --data ../shared/data --leave-one-out --k 1 --seed 1 --out F

(``--seed``: another calibration seed, to see how much the seed moves the counts; its
folds are kept apart.)

``--confluent`` and ``--chip`` calibrate on synthetic plates instead: confluent
monolayers, and cells among the posts of a chip (:mod:`calibration_synthetic`).

    python benchmarks/calibration.py --confluent [--no-seed-missed]
    python benchmarks/calibration.py --chip [--seed 1]

``--as-a-plate`` runs what a lab runs, with nothing given: each experiment's fields laid
out as one plate, ``tlseg plate calibrate`` on the well of its best-populated field (the
diameters estimated on the plate), then ``tlseg plate run --model`` on the plate without
the stain; the other fields' counts against the truths, the calibration's and the run's
diameters, and the held-aside total as the calibration's card reports it and as the run
counts it (key ``as_a_plate``).

    python benchmarks/calibration.py --data ../shared/data --as-a-plate

Results: ``benchmarks/results/calibration.json``, one entry per protocol (``one_field``,
``leave_one_out``, ``confluent``). A leave-one-out run writes both of the first two: its
folds calibrated on the ``--k`` fields with the most nuclei are the one-field protocol.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from dataclasses import replace

import numpy as np
import pandas as pd
import tifffile
from calibration_synthetic import chip_plate, confluent_plates
from common import (
    WORK,
    count_errors,
    seen,
    trained_images,
    true_cell_counts,
    write_site,
)
from results_file import update_results

import tlseg
from tlseg.io import atomic_path
from tlseg.plate.prepare import weighted_diameter
from tlseg.plate.validate import agreement


def layout_experiment(src, fields: pd.DataFrame, plate):
    """One well per field: A01, A02, ... (12 columns a row)."""
    plate.mkdir(parents=True, exist_ok=True)
    wells = {}
    for i, f in enumerate(fields["field"]):
        well = f"{'ABCDEFGH'[i // 12]}{i % 12 + 1:02d}"
        wells[f] = well
        write_site(plate, "exp", well, 1, tifffile.imread(src / "tl" / f"{f}.tif"),
                   tifffile.imread(src / "nuc" / f"{f}.tif"))
    return wells


def summary(rows, column, truth="true"):
    true = np.array([r[truth] for r in rows], float)
    got = np.array([r[column] for r in rows], float)
    within = np.abs(got - true) <= np.where(true >= 20, 0.1 * true, 3)
    out = {**count_errors(got, true), "within_target": int(within.sum()),
           "total": int(got.sum()), "true_total": int(true.sum())}
    if len(rows) >= 3:
        a = agreement(got, true)
        out.update({k: a.get(k) for k in ("r2", "ccc", "bias", "loa_low", "loa_high",
                                          "paired_p")})
    return out


#: counts of the calibrated model at the diameter a plate run with it estimates: with its
#: automatic diameter kept at the calibration's (what ``plate calibrate`` writes), and
#: with the base's factor (``unkept``)
OWN = ("calibrated_own", "calibrated_unkept")


def count_fields(base, model, src, fields, d, own=None):
    """Base and calibrated counts of ``fields`` (rows of fields.csv) at diameter ``d``:
    every cell (``base``, ``calibrated``), and the cells that do not touch the field's
    edge (``*_inner``), the convention of the nucleus masks. ``own``: more columns, each
    name with its (model, diameter)."""
    rows = []
    for f, n_true, n_cells in zip(fields["field"], fields["n_nuclei"], fields["n_cells"]):
        image = tlseg.read_image(src / "tl" / f"{f}.tif")
        row = truth_row(src, f, n_true, n_cells)
        runs = [("base", base, d), ("calibrated", model, d)]
        runs += [(name, m, dm) for name, (m, dm) in (own or {}).items()]
        for name, m, dm in runs:
            labels = m.segment(image, diameter=dm)
            row[name] = int(labels.max())
            row[f"{name}_inner"] = int(tlseg.discard_edge(labels).max())
        rows.append(row)
    return rows


def truth_row(src, field: str, n_true, n_cells) -> dict:
    """A counted field's truths: its nuclei and whole cells (fields.csv), and the cells
    less debris and by both masks (:func:`common.true_cell_counts`)."""
    return {"field": field, "true": int(n_true), "true_cells": int(n_cells),
            **true_cell_counts(src, field)}


def own_diameters(model, images) -> dict:
    """{column of :data:`OWN`: (model, the plate diameter it estimates on ``images``)}
    for a calibrated model; {} for a model without a calibration record."""
    record = model.card.get("calibration", {}).get("diameter_estimate")
    if not record:
        return {}
    unkept = tlseg.Model(replace(model.config, diameter_calibration=record[
        "diameter_calibration_before"]), model.net, card=model.card)
    return {name: (m, weighted_diameter(m, images) or record["calibrated_at"])
            for name, m in zip(OWN, (model, unkept))}


def summaries(rows) -> dict:
    """Counts without edge cells against the nucleus masks (which leave every nucleus
    touching the edge out), all counts against the whole-cell masks (which keep them),
    with and without the annotated debris, and against the cells by both masks
    (:func:`common.curated_cells`); {} for no rows (a subset of experiments whose fields
    the base all saw has no unseen fields)."""
    if not rows:
        return {}
    return {"base": summary(rows, "base_inner"),
            "calibrated": summary(rows, "calibrated_inner"),
            "base_vs_cells": summary(rows, "base", "true_cells"),
            "calibrated_vs_cells": summary(rows, "calibrated", "true_cells"),
            "base_vs_cells_no_debris": summary(rows, "base", "true_cells_no_debris"),
            "calibrated_vs_cells_no_debris": summary(rows, "calibrated",
                                                     "true_cells_no_debris"),
            "base_vs_cells_curated": summary(rows, "base", "true_cells_curated"),
            "calibrated_vs_cells_curated": summary(rows, "calibrated", "true_cells_curated"),
            **{k: v for name in OWN if all(name in r for r in rows)
               for k, v in ((name, summary(rows, f"{name}_inner")),
                            (f"{name}_vs_cells", summary(rows, name, "true_cells")),
                            (f"{name}_vs_cells_curated",
                             summary(rows, name, "true_cells_curated")))}}


def calibrate_on(base, work, plate, wells, fields, d, steps, name="model", seed=0):
    """Calibrate ``base`` on ``fields`` (their wells) into ``work/name``."""
    shutil.rmtree(work / name, ignore_errors=True)
    t0 = time.perf_counter()
    model = tlseg.calibrate(plate, work / name, tl_channel="w1", nuclei_channel="w2",
                            wells=[wells[f] for f in fields], base=base, steps=steps,
                            diameter=d, seed=seed)
    return model, round(time.perf_counter() - t0, 1)


def as_a_plate(base, src, table, experiments, steps: int, seed: int) -> dict:
    """What a lab runs, end to end: per experiment, its fields laid out as one plate,
    ``tlseg plate calibrate`` on the well of its best-populated field with nothing given
    (the diameters estimated on the plate), then ``tlseg plate run --model`` on the plate
    without the stain. Per experiment: the calibration's diameter and the run's, the
    calibrated model's label-free total on the held-aside sites it checked as its card
    reports it and as the run counts those wells, and the run's counts of the other
    fields against the truths (:func:`summaries`' keys for ``calibrated``)."""
    out = {}
    for exp in experiments:
        fields = table[table["experiment"] == exp]
        work = WORK / "calibration" / exp / "as-a-plate"
        shutil.rmtree(work, ignore_errors=True)
        wells = layout_experiment(src, fields, work / "plate")
        top = fields["field"].iloc[0]
        model = tlseg.calibrate(work / "plate", work / "model", tl_channel="w1",
                                nuclei_channel="w2", wells=[wells[top]], base=base,
                                steps=steps, seed=seed)
        run = tlseg.run_plate(work / "plate", work / "results", tl_channel="w1",
                              model=str(work / "model"), workers=1)
        counted = run["wells"].set_index("well")["n_cells"]
        rows = []
        for f, n_true, n_cells in zip(fields["field"], fields["n_nuclei"], fields["n_cells"]):
            if f != top:
                rows.append({**truth_row(src, f, n_true, n_cells), "well": wells[f],
                             "calibrated": int(counted[wells[f]])})
        card = model.card["calibration"]
        checked = card["checked_wells"]  # the card counts at most 8 held-aside sites
        out[exp] = {"calibration_field": top, "calibration_diameter": card["diameter"],
                    "run_diameter": round(float(run["record"]["config"]["diameter"]), 2),
                    "checked_wells": checked,
                    "held_aside_after_card": card["after"]["label_free"],
                    "held_aside_after_run": int(sum(counted[w] for w in checked)),
                    "fields": rows, **against_cells(rows)}
        print(f"{exp} as a plate: calibrated at {card['diameter']} px, run at "
              f"{out[exp]['run_diameter']} px; held-aside label-free {card['after']['label_free']}"
              f" (card) vs {out[exp]['held_aside_after_run']} (run)", flush=True)
    pooled = [r for e in out.values() for r in e["fields"]]
    return {"experiments": out, "all_fields": against_cells(pooled)}


def against_cells(rows) -> dict:
    """A plate run's counts (every cell: ``calibrated``) against the whole-cell masks and
    the cells by both masks."""
    return {k: summary(rows, "calibrated", t) for k, t in (
        ("calibrated_vs_cells", "true_cells"),
        ("calibrated_vs_cells_curated", "true_cells_curated"))}


def leave_one_out_experiment(base, exp, fields, src, work, wells, d, spread_images, args,
                             done, done_path):
    """Every field of one experiment counted by a model calibrated on its other fields
    (the ``--k`` with the most nuclei); the fold results already in ``done`` are reused,
    and each new one is added to ``done_path`` as it ends. Returns the experiment's entry
    and its one-field entry (the folds calibrated on its top fields; None if none)."""
    rows, folds, models = [], [], {}
    for i in range(len(fields)):
        left = fields.iloc[[i]]
        calib = fields.drop(fields.index[i])["field"].tolist()[: args.k]
        key = f"{exp} {left['field'].iloc[0]} d={d:.2f}"
        if key in done:
            rows.append({**done[key]["row"], **true_cell_counts(src, left["field"].iloc[0])})
            folds.append(done[key]["fold"])
            print(f"{exp} {rows[-1]} (done)", flush=True)
            continue
        if tuple(calib) not in models:  # a calibration sees only its own fields
            plate = work / f"calibration-{len(models)}"
            shutil.rmtree(plate, ignore_errors=True)
            plate.mkdir()
            for w in [wells[f] for f in calib]:
                for path in (work / "plate").glob(f"exp_{w}_*"):
                    os.link(path, plate / path.name)
            try:
                model, seconds = calibrate_on(base, work, plate, wells, calib, d,
                                              args.steps, name=f"model-{len(models)}",
                                              seed=args.seed)
                models[tuple(calib)] = model, seconds, own_diameters(model, spread_images)
            except tlseg.TlsegError as exc:  # too few nuclei: the base model counts
                print(f"{exp} {calib}: {exc}", flush=True)
                models[tuple(calib)] = base, None, {}
        model, seconds, own = models[tuple(calib)]
        rows += count_fields(base, model, src, left, d, own)
        card = model.card.get("calibration", {})
        folds.append({"field": left["field"].iloc[0], "calibration_fields": calib,
                      "own_diameters": {k: round(v[1], 2) for k, v in own.items()},
                      "calibration_s": seconds, "labels": card.get("labels"),
                      "instances": card.get("instances"),
                      "instances_changed": (card.get("instances") or {}).get(
                          "settings_changed")})
        done[key] = {"row": rows[-1], "fold": folds[-1]}
        with atomic_path(done_path) as tmp:
            tmp.write_text(json.dumps(done, indent=1))
        print(f"{exp} {rows[-1]}", flush=True)
    result = {"diameter": d, "folds": folds, "fields": rows, **summaries(rows)}
    # the folds calibrated on the top --k fields are the one-field protocol
    top = fields["field"].tolist()[: args.k]
    same = [(r, f) for r, f in zip(rows, folds) if f["calibration_fields"] == top]
    if not same:
        return result, None
    rows = [r for r, _ in same]
    return result, {"calibration_fields": top, "diameter": d,
                    "calibration_s": same[0][1]["calibration_s"],
                    "labels": same[0][1].get("labels"),
                    "instances": same[0][1].get("instances"), "fields": rows,
                    **summaries(rows)}


def one_field_experiment(base, exp, fields, src, work, wells, d, args):
    """The fields of one experiment that ``--pick`` leaves out of its calibration, counted
    by the base and by the model calibrated on the ``--k`` picked fields."""
    start = (len(fields) - args.k) // 2 if args.pick == "median" else 0
    calib = fields["field"].tolist()[start: start + args.k]
    try:
        model, seconds = calibrate_on(base, work, work / "plate", wells, calib, d,
                                      args.steps, seed=args.seed)
    except tlseg.TlsegError as exc:  # too few nuclei: the base model counts
        print(f"{exp} {calib}: {exc}", flush=True)
        model, seconds = base, None
    rows = count_fields(base, model, src, fields[~fields["field"].isin(calib)], d)
    card = model.card.get("calibration", {})
    return {"calibration_fields": calib, "diameter": d, "calibration_s": seconds,
            "labels": card.get("labels"), "instances": card.get("instances"),
            "fields": rows, **summaries(rows)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--experiments", nargs="*", help="default: every experiment")
    p.add_argument("--k", type=int, default=1, help="calibration fields per experiment")
    p.add_argument("--pick", choices=("most", "median"), default="most",
                   help="without --leave-one-out: calibrate on the --k fields with the most "
                        "nuclei, or on those around the experiment's median (key "
                        "one_field_median)")
    p.add_argument("--leave-one-out", action="store_true",
                   help="count every field once, calibrated on the experiment's other "
                        "fields (the --k of them with the most nuclei)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--seed", type=int, default=0, help="calibration seed (crops, augmentation)")
    p.add_argument("--base", default="tl-cells", help="label-free model to calibrate")
    p.add_argument("--confluent", action="store_true",
                   help="calibrate on synthetic confluent monolayers instead (docstring)")
    p.add_argument("--no-seed-missed", action="store_true",
                   help="with --confluent: calibration labels without seeded cells at the "
                        "missed nuclei (file key confluent_without_seeding)")
    p.add_argument("--chip", action="store_true",
                   help="calibrate on a synthetic chip, cells among posts (docstring)")
    p.add_argument("--as-a-plate", action="store_true",
                   help="each experiment as one plate: plate calibrate on its top well with "
                        "nothing given, then plate run with the model (key as_a_plate)")
    p.add_argument("--out", help="results file (default benchmarks/results/calibration.json)")
    args = p.parse_args(argv)
    logging.getLogger("tlseg").setLevel(logging.INFO)
    logging.getLogger("tlseg").addHandler(logging.StreamHandler())
    tlseg.set_threads()
    from pathlib import Path

    # another base's protocols (and fold cache) are named after its folder
    base_name = Path(args.base).name
    suffix = "" if args.base == "tl-cells" else f"_{base_name}"
    if args.chip:
        result = chip_plate(tlseg.load_model(args.base), args.steps, args.seed)
        update_results("calibration", (f"chip_seed{args.seed}{suffix}",),
                       {"steps": args.steps, "base": args.base, **result},
                       out=args.out and Path(args.out))
        return 0
    if args.confluent:
        results = confluent_plates(tlseg.load_model(args.base), args.steps, args.seed,
                                   seed_missed=not args.no_seed_missed)
        key = ("confluent_without_seeding" if args.no_seed_missed else "confluent") + suffix
        update_results("calibration", (key,),
                       {"steps": args.steps, "base": args.base, "seed": args.seed,
                        "plates": results}, out=args.out and Path(args.out))
        return 0
    src = Path(args.data) / "paired" / "aisegcell-s10"
    table = pd.read_csv(src / "fields.csv").sort_values(["n_nuclei", "field"],
                                                         ascending=[False, True])
    experiments = args.experiments or sorted(table["experiment"].unique())
    base = tlseg.load_model(args.base)
    if args.as_a_plate:
        result = as_a_plate(base, src, table, experiments, args.steps, args.seed)
        update_results("calibration", (f"as_a_plate{suffix}",),
                       {"steps": args.steps, "base": args.base, "seed": args.seed, **result},
                       out=args.out and Path(args.out))
        return 0
    trained = trained_images(base, Path(args.data))  # the fields the base saw in training
    results, one_field = {}, {}
    seed_suffix = f"-seed{args.seed}" if args.seed else ""
    done_path = (WORK / "calibration"
                 / f"folds-{base_name}-k{args.k}-s{args.steps}{seed_suffix}.json")
    done = json.loads(done_path.read_text()) if done_path.exists() else {}
    for exp in experiments:
        fields = table[table["experiment"] == exp]
        work = WORK / "calibration" / exp
        shutil.rmtree(work, ignore_errors=True)
        wells = layout_experiment(src, fields, work / "plate")
        by_name = fields.sort_values("field")["field"].tolist()
        spread = [by_name[i] for i in
                  np.linspace(0, len(by_name) - 1, min(4, len(by_name))).round().astype(int)]
        spread_images = [tlseg.read_image(src / "tl" / f"{f}.tif") for f in spread]
        d = weighted_diameter(base, spread_images)
        if args.leave_one_out:
            results[exp], top = leave_one_out_experiment(base, exp, fields, src, work, wells, d,
                                                         spread_images, args, done, done_path)
            if top is not None:
                one_field[exp] = top
        else:
            results[exp] = one_field_experiment(base, exp, fields, src, work, wells, d, args)
        rows = results[exp]["fields"]
        for r in rows:  # the one-field protocol's rows are these same dicts
            r["seen"] = seen(r["field"], trained)
        for k in ("base", "calibrated", "base_vs_cells", "calibrated_vs_cells",
                  "base_vs_cells_no_debris", "calibrated_vs_cells_no_debris",
                  "base_vs_cells_curated", "calibrated_vs_cells_curated",
                  *(f"{n}_vs_cells_curated" for n in OWN)):
            if k in results[exp]:
                print(f"{exp} {k:>20}", results[exp][k])
    settings = {"k": args.k, "steps": args.steps, "base": args.base, "seed": args.seed}
    out = args.out and Path(args.out)
    if args.leave_one_out:
        pooled = [r for e in results.values() for r in e["fields"]]
        unseen = [r for r in pooled if r["seen"] == "not seen"]
        results = {"experiments": results, "all_fields": summaries(pooled),
                   "fields_not_seen": {"n": len(unseen), **summaries(unseen)}}
        for k, v in results["all_fields"].items():
            print(f"all fields {k:>20}", v)
        update_results("calibration", (f"leave_one_out{suffix}",), {**settings, **results},
                       out=out)
        unseen = [r for e in one_field.values() for r in e["fields"] if r["seen"] == "not seen"]
        update_results("calibration", (f"one_field{suffix}",), {
            **settings, "experiments": one_field, "from": "leave_one_out folds",
            "fields_not_seen": {"n": len(unseen), **summaries(unseen)}}, out=out)
    else:
        key = ("one_field_median" if args.pick == "median" else "one_field") + suffix
        update_results("calibration", (key,), {**settings, "experiments": results}, out=out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
