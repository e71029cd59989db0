"""How long `tlseg plate calibrate` takes for one well, and where the time goes.

A lab calibrates on one stained well of its plate; the calibration should take minutes.
Each protocol lays out a small ImageXpress plate: the calibration well and two (or one)
held-aside wells, which :func:`tlseg.calibrate` counts before and after as it always
does. The call is the one ``tlseg plate calibrate PLATE -o MODEL --tl-channel w1
--nuclei-channel w2 --wells A01`` makes, with its defaults (diameters estimated for the
plate, :data:`tlseg.plate.calibrate.STEPS` fine-tuning steps), in this process on the
machine's cores (``tlseg.set_threads()``, as the command line). Timed, from the log and
the progress callback:

- ``setup_s``: scanning the plate, loading both models, estimating the two diameters;
- ``labels_s``: segmenting the calibration well in both channels, building the labels
  and the base model's teacher maps, up to the first fine-tuning step;
- ``fine_tuning_s``: the fine-tuning steps;
- ``instance_tuning_s``: tuning the instance settings to the nuclei;
- ``diameter_kept_s``: the calibrated model's plate estimate, so that it reads the
  calibration's diameter (:func:`tlseg.plate.nuclei_tuning.keep_diameter`);
- ``held_aside_check_s``: counting the held-aside wells with the base and the calibrated
  model, and the nuclei;
- ``total_s`` and the process's peak resident memory.

Protocols (keys of ``benchmarks/results/calibration_time.json``):

- ``synthetic_<size>``: three wells of one ``--size``² brightfield site each
  (``tlseg.synthetic_field``, cells of 30 px at about a quarter confluence, with their
  nuclear stain); A01 calibrates, A02 and A03 are held aside. The issue-sized case is
  ``--size 2048``: one 2048² well.
- ``real_<experiment>`` (with ``--data``): the fields of one ``paired/aisegcell-s10``
  experiment as the sites of two wells, four 1024² sites to the calibration well A01 (a
  2048² well's pixels, from real brightfield) and the rest to A02.

    python benchmarks/calibration_time.py [--size 2048]
    python benchmarks/calibration_time.py --data ../shared/data [--experiment 220524DS30]
"""

from __future__ import annotations

import argparse
import logging
import resource
import shutil
import time
from pathlib import Path

import pandas as pd
import tifffile
from common import WORK, write_site
from results_file import add_out, update_results

import tlseg
from tlseg.plate.calibrate import STEPS
from tlseg.synthetic import synthetic_field


class _Clock(logging.Handler):
    """Time of the first log record that starts with each of ``marks``."""

    def __init__(self, marks: dict[str, str]):
        super().__init__()
        self.marks, self.at = marks, {}

    def emit(self, record):
        text = record.getMessage()
        for name, start in self.marks.items():
            if name not in self.at and text.startswith(start):
                self.at[name] = time.perf_counter()


def timed_calibration(plate: Path, out: Path, steps: int) -> dict:
    """``tlseg.calibrate(plate, out, wells=["A01"])`` with its phases timed (docstring)."""
    shutil.rmtree(out, ignore_errors=True)
    clock = _Clock({"setup": "calibration wells", "tuned": "instance settings tuned",
                    "kept": "automatic diameter kept"})
    logger = logging.getLogger("tlseg")
    logger.addHandler(clock)
    steps_at = []
    t0 = time.perf_counter()
    try:
        model = tlseg.calibrate(plate, out, tl_channel="w1", nuclei_channel="w2",
                                wells=["A01"], steps=steps,
                                progress=lambda step, total, parts: steps_at.append(
                                    time.perf_counter()))
    finally:
        logger.removeHandler(clock)
    t_end = time.perf_counter()
    at = clock.at
    kept = at.get("kept", at["tuned"])  # not logged when no cell was found to read
    c = model.card["calibration"]
    before, after = c.get("before", {}), c.get("after", {})
    return {
        "steps": len(steps_at),
        "setup_s": round(at["setup"] - t0, 1),
        "labels_s": round(steps_at[0] - at["setup"], 1),
        "fine_tuning_s": round(steps_at[-1] - steps_at[0], 1),
        "instance_tuning_s": round(at["tuned"] - steps_at[-1], 1),
        "diameter_kept_s": round(kept - at["tuned"], 1),
        "held_aside_check_s": round(t_end - kept, 1),
        "total_s": round(t_end - t0, 1),
        # ru_maxrss is in KiB on Linux
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "diameter": c["diameter"], "nuclei_diameter": c["nuclei_diameter"],
        "labels": c["labels"],
        "held_aside": {"wells": c.get("checked_wells"), "nuclei": before.get("nuclei"),
                       "label_free_before": before.get("label_free"),
                       "label_free_after": after.get("label_free")},
    }


def synthetic_plate(size: int, steps: int) -> dict:
    """The ``synthetic_<size>`` protocol (module docstring)."""
    work = WORK / "calibration_time" / f"synthetic-{size}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "plate").mkdir(parents=True)
    true = {}
    for i, well in enumerate(("A01", "A02", "A03")):
        f = synthetic_field((size, size), diameter=30, modality="brightfield", seed=300 + i)
        write_site(work / "plate", "time", well, 1, f["tl"], f["nuclei"])
        true[well] = int(f["labels"].max())
    result = timed_calibration(work / "plate", work / "model", steps)
    return {"size": size, "sites_per_well": 1, "true_cells": true, **result}


def real_plate(data: Path, experiment: str, steps: int) -> dict:
    """The ``real_<experiment>`` protocol (module docstring)."""
    src = Path(data) / "paired" / "aisegcell-s10"
    fields = sorted(pd.read_csv(src / "fields.csv").query("experiment == @experiment")["field"])
    if len(fields) < 5:
        raise SystemExit(f"{experiment} has {len(fields)} fields; the protocol needs 5 or more")
    work = WORK / "calibration_time" / f"real-{experiment}"
    shutil.rmtree(work, ignore_errors=True)
    (work / "plate").mkdir(parents=True)
    layout = {}
    for i, f in enumerate(fields):
        well, site = ("A01", i + 1) if i < 4 else ("A02", i - 3)
        layout.setdefault(well, []).append(f)
        write_site(work / "plate", "exp", well, site, tifffile.imread(src / "tl" / f"{f}.tif"),
                   tifffile.imread(src / "nuc" / f"{f}.tif"))
    result = timed_calibration(work / "plate", work / "model", steps)
    return {"experiment": experiment, "wells": layout, **result}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=2048, help="synthetic site side (px)")
    p.add_argument("--data", type=Path,
                   help="time a real well instead: ../shared/data (paired/aisegcell-s10)")
    p.add_argument("--experiment", default="220524DS30",
                   help="with --data: the aisegcell-s10 experiment")
    p.add_argument("--steps", type=int, default=STEPS, help="fine-tuning steps")
    add_out(p, "calibration_time")
    args = p.parse_args(argv)
    tlseg.set_threads()
    logging.getLogger("tlseg").setLevel(logging.INFO)
    logging.getLogger("tlseg").addHandler(logging.StreamHandler())
    if args.data:
        key, result = f"real_{args.experiment}", real_plate(args.data, args.experiment,
                                                            args.steps)
    else:
        key, result = f"synthetic_{args.size}", synthetic_plate(args.size, args.steps)
    for k, v in result.items():
        print(f"{key} {k}: {v}", flush=True)
    update_results("calibration_time", (key,), result, out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
