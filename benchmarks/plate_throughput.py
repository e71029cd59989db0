"""Plate throughput: sites per second with 1 and 2 Dask workers, peak memory, resume time.

Run::

    python benchmarks/plate_throughput.py            # 384 sites of 1024 x 1024

A synthetic ImageXpress plate (96 wells x 4 sites, or 96 x 1 for the ratio runs,
transmitted light + nuclear stain, ~150 cells a field; ``tlseg.synthetic_field``) is
written once to ``benchmarks/work`` and then run through ``tlseg.run_plate`` (what
``tlseg plate run`` calls), each run in a fresh process as a user's would be:

1. on a 96-site plate, ``workers=1`` and ``workers=2``, each worker single-threaded
   (``threads=1``), so the ratio measures what Dask's process parallelism buys;
2. peak memory: the largest sum of resident set sizes over the whole process tree (the
   run's process, scheduler, workers), sampled every 0.25 s with psutil;
3. kill and resume (96 sites): a 2-worker run is killed (SIGKILL to its process group)
   when half the sites are done, then re-run; reported: the time the resumed run takes
   to produce its first new site, its total time, and whether its per-well table and
   every mask equal the uninterrupted run's;
4. the full 384-site plate with the defaults (2 workers): sites/s and peak memory.

Results: ``benchmarks/results/plate_throughput.json``. A trial on a small plate:
``--sites 4 --ratio-sites 2 --size 256 --work /tmp/pt --out /tmp/pt.json``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import tifffile
from common import WORK
from results_file import add_out, write_results

import tlseg
from tlseg.io import atomic_path
from tlseg.plate.layout import row_name

DIAMETER = 28.0


def make_plate(folder: Path, n_sites: int, size: int) -> Path:
    """96 wells (fewer when n_sites < 96) x n_sites/96 sites; written once, reused."""
    plate = folder / f"plate_{n_sites}x{size}"
    done = plate / "complete"
    if done.exists():
        return plate
    plate.mkdir(parents=True, exist_ok=True)
    wells = [f"{row_name(r)}{c:02d}" for r in range(1, 9) for c in range(1, 13)]
    per_well = max(1, n_sites // len(wells))
    wells = wells[: int(np.ceil(n_sites / per_well))]
    rng = np.random.default_rng(0)
    k = 0
    for well in wells:
        for s in range(1, per_well + 1):
            if k == n_sites:
                break
            f = tlseg.synthetic_field((size, size), n_cells=int(rng.integers(100, 200)),
                                      diameter=DIAMETER, modality="brightfield",
                                      seed=int(rng.integers(2**31)))
            for ch, key in (("w1", "tl"), ("w2", "nuclei")):
                path = plate / f"bench_{well}_s{s}_{ch}.tif"
                with atomic_path(path) as tmp:
                    tifffile.imwrite(tmp, f[key], compression="lzw")
            k += 1
    done.write_text("ok")
    return plate


def _cmd(plate: Path, out: Path, workers: int, threads: int | None) -> list[str]:
    """A fresh Python process that runs one plate (:func:`_run_plate`)."""
    return [sys.executable, __file__, "--run-plate", str(plate), str(out), str(workers),
            "none" if threads is None else str(threads)]


def _run_plate(argv) -> int:
    """In the fresh process: ``tlseg.run_plate`` on PLATE into OUT with the given
    diameters, WORKERS workers and THREADS threads each ('none': tlseg's default)."""
    import logging

    plate, out, workers, threads = argv
    logging.basicConfig(format="%(message)s")
    logging.getLogger("tlseg").setLevel(logging.INFO)  # tlseg's progress, not Dask's
    result = tlseg.run_plate(plate, out, tl_channel="w1", nuclei_channel="w2",
                             diameter=DIAMETER, nuclei_diameter=DIAMETER * 0.5,
                             workers=int(workers),
                             threads=None if threads == "none" else int(threads))
    return 2 if result["failed"] else 0


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        for p in [proc] + proc.children(recursive=True):
            try:
                total += p.memory_info().rss
            except psutil.Error:
                pass
    except psutil.Error:
        pass
    return total


def run(plate: Path, out: Path, workers: int, threads: int | None, *, kill_after: int | None = None,
        fresh: bool = True) -> dict:
    """Run one plate in a fresh process; optionally SIGKILL its process group once
    ``kill_after`` sites are done."""
    if fresh and out.exists():
        shutil.rmtree(out)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    before = len(list((out / "sites").glob("*.json"))) if out.exists() else 0
    log = out.with_name(out.name + ".log")  # the run's messages (a file: never blocks)
    t0 = time.perf_counter()
    with open(log, "w") as log_file:
        proc = subprocess.Popen(_cmd(plate, out, workers, threads), env=env, process_group=0,
                                stdout=subprocess.DEVNULL, stderr=log_file)
    ps = psutil.Process(proc.pid)
    peak, first_new, killed = 0, None, False
    marks = []  # (time, sites done) whenever the count changes
    while proc.poll() is None:
        peak = max(peak, _tree_rss(ps))
        n = len(list((out / "sites").glob("*.json"))) if (out / "sites").exists() else 0
        if n > (marks[-1][1] if marks else before):
            marks.append((time.perf_counter() - t0, n))
        if first_new is None and n > before:
            first_new = time.perf_counter() - t0
        if kill_after is not None and n >= kill_after:
            os.killpg(proc.pid, signal.SIGKILL)
            killed = True
            proc.wait()
            break
        time.sleep(0.25)
    wall = time.perf_counter() - t0
    if not killed and proc.returncode != 0:
        raise SystemExit(f"plate run failed ({proc.returncode}):\n{log.read_text()[-2000:]}")
    n_done = len(list((out / "sites").glob("*.json")))
    # steady rate: from the first finished site to the last, without start-up and report
    steady = ((marks[-1][1] - marks[0][1]) / (marks[-1][0] - marks[0][0])
              if len(marks) > 1 and marks[-1][0] > marks[0][0] else float("nan"))
    return {"workers": workers, "threads_per_worker": threads, "wall_s": round(wall, 1),
            "sites_done": n_done - before, "sites_per_s": round((n_done - before) / wall, 3),
            "steady_sites_per_s": round(steady, 3),
            "peak_rss_mb": round(peak / 2**20), "first_site_s": round(first_new or wall, 1),
            "killed": killed}


def mask_differences(a: Path, b: Path) -> dict:
    """How many masks of run ``a`` differ from run ``b``, and by how many pixels at most."""
    n, differ, worst = 0, 0, 0
    for f in sorted((a / "masks").glob("*.tif")):
        x, y = tifffile.imread(f), tifffile.imread(b / "masks" / f.name)
        n += 1
        if not np.array_equal(x, y):
            differ += 1
            worst = max(worst, int((x != y).sum()))
    return {"masks": n, "differ": differ, "max_pixels_differing": worst}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sites", type=int, default=384, help="sites of the full plate")
    p.add_argument("--ratio-sites", type=int, default=96,
                   help="sites of the plate used for the 1-vs-2-worker ratio and kill/resume")
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--work", type=Path, default=WORK / "plate_throughput",
                   help="where the plates and the runs' outputs go")
    add_out(p, "plate_throughput")
    args = p.parse_args(argv)
    work = args.work
    small = make_plate(work, args.ratio_sites, args.size)
    rows = {}
    # on 2 cores the default --threads gives 2 workers 1 thread each, 1 worker 2 threads
    for name, workers, threads in (("1 worker x 1 thread", 1, 1), ("2 workers x 1 thread", 2, 1)):
        r = run(small, work / f"out_{args.ratio_sites}_w{workers}_t{threads}", workers, threads)
        rows[name] = r
        print(f"{args.ratio_sites} sites, {name}: {r['sites_per_s']:.3f} sites/s ({r['wall_s']} s; "
              f"steady {r['steady_sites_per_s']:.3f}/s), peak RSS {r['peak_rss_mb']} MB", flush=True)
    one, two = rows["1 worker x 1 thread"], rows["2 workers x 1 thread"]
    speedup = two["sites_per_s"] / one["sites_per_s"]
    steady = two["steady_sites_per_s"] / one["steady_sites_per_s"]
    print(f"2 workers / 1 worker: {speedup:.2f}x end to end, {steady:.2f}x steady state", flush=True)

    # kill half-way, resume, compare with the uninterrupted 2-worker run
    out = work / f"out_{args.ratio_sites}_killed"
    killed = run(small, out, 2, 1, kill_after=args.ratio_sites // 2)
    resumed = run(small, out, 2, 1, fresh=False)
    full = pd.read_csv(work / f"out_{args.ratio_sites}_w2_t1" / "wells.csv")
    again = pd.read_csv(out / "wells.csv")
    cols = ["well", "n_sites", "n_cells", "n_nuclei"]
    same = bool(full[cols].equals(again[cols]))
    # masks: compare with the run-to-run noise of two uninterrupted runs (1 vs 2 workers):
    # float reductions in oneDNN convolutions are not bit-reproducible across processes
    masks_vs = mask_differences(work / f"out_{args.ratio_sites}_w2_t1", out)
    noise = mask_differences(work / f"out_{args.ratio_sites}_w2_t1",
                             work / f"out_{args.ratio_sites}_w1_t1")
    print(f"killed after {killed['sites_done']} sites ({killed['wall_s']} s); resumed: first new "
          f"site after {resumed['first_site_s']} s, {resumed['sites_done']} sites in "
          f"{resumed['wall_s']} s; wells.csv equal: {same}; masks vs uninterrupted: {masks_vs}; "
          f"two uninterrupted runs: {noise}", flush=True)

    # the full plate with the default settings (2 workers)
    plate = make_plate(work, args.sites, args.size)
    big = run(plate, work / f"out_{args.sites}_w2", 2, None)
    print(f"{args.sites} sites, 2 workers: {big['sites_per_s']:.3f} sites/s "
          f"({big['wall_s']} s), peak RSS {big['peak_rss_mb']} MB", flush=True)
    path = write_results("plate_throughput", argv=argv, out=args.out, payload={
        "plate": {"sites": args.sites, "ratio_sites": args.ratio_sites, "size": args.size,
                  "channels": ["tl (brightfield)", "nuclei"], "cells_per_site": "100-200",
                  "diameter_px": DIAMETER, "nuclei_diameter_px": DIAMETER * 0.5},
        "ratio_runs": rows, "speedup_2_vs_1_worker": round(speedup, 2),
        "steady_speedup_2_vs_1_worker": round(steady, 2),
        "kill_resume": {"killed": killed, "resumed": resumed, "wells_equal_uninterrupted": same,
                        "masks_vs_uninterrupted": masks_vs,
                        "masks_two_uninterrupted_runs": noise},
        "full_plate_2_workers": big,
    })
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--run-plate":
        raise SystemExit(_run_plate(sys.argv[2:]))
    raise SystemExit(main())
