"""``tlseg plate run`` and ``tlseg plate validate`` as library calls."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from ..errors import TlsegError
from ..io import atomic_path
from .layout import read_plate_map, scan_plate
from .run import RunConfig, prepare_run, run_sites
from .summary import summarize


def run_plate(plate_dir, out, config: RunConfig, *, plate_map=None, layout: str = "auto",
              pattern: str | None = None, workers: int = 2, scheduler: str | None = None,
              threads: int | None = None, density: str | None = None, log: Callable[[str], None] = print,
              progress: Callable[[dict, int, int], None] | None = None) -> dict:
    """Segment, measure, summarise and (with a nuclei channel) validate one plate.

    Returns a dict with the run record, the tables of :func:`summarize` and, when
    validated, the validation statistics.
    """
    out = Path(out)
    plate = scan_plate(plate_dir, layout=layout, pattern=pattern)
    log(f"{plate.folder}: {plate.layout} layout, {len(plate.wells)} wells, "
        f"channels {', '.join(plate.channels)}")
    warnings = []
    if plate.unparsed:
        warnings.append(f"{len(plate.unparsed)} file name(s) do not match the pattern "
                        f"{plate.pattern!r} and were skipped: "
                        + ", ".join(p.name for p in plate.unparsed[:10])
                        + (" ..." if len(plate.unparsed) > 10 else ""))
    pm = None
    if plate_map is not None:
        pm, pm_warnings = read_plate_map(plate_map, plate.wells)
        warnings += pm_warnings
    sites, record = prepare_run(plate, out, config, plate_map=pm, log=log)
    warnings += record["skipped_sites"]
    for w in warnings:
        log(f"warning: {w}")
    record["warnings"] = warnings
    with atomic_path(out / "run.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2, default=str))
    records = run_sites(sites, out, config, workers=workers, scheduler=scheduler,
                        threads=threads, progress=progress)
    failed = [r for r in records if r["status"] != "ok"]
    for r in failed:
        log(f"error: {r['well']} site {r['site']}: {r['error']} (skipped)")
    result = validate_run(out, density=density, log=log)
    result.update(record=record, processed=len(records), failed=failed)
    return result


def validate_run(out, *, density: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Summarise a finished (or partly finished) run; validate counts if nuclei were counted;
    write ``wells.csv``, ``conditions.csv``, ``validation.json`` and ``report.html``."""
    from .report import write_report
    from .validate import validate_counts

    out = Path(out)
    if not (out / "run.json").is_file():
        raise TlsegError(f"{out}: not a plate run folder (no run.json); run `tlseg plate run` first")
    run = json.loads((out / "run.json").read_text())
    tables = summarize(out)
    wells, conds = tables["wells"], tables.get("conditions")
    validation = None
    if "n_nuclei" in wells:
        validation = validate_counts(wells, conds, density=density)
        parting = ("cells_without_nucleus", "cells_with_several_nuclei", "nuclei_outside_cells")
        if all(c in wells for c in parting):
            validation["parting"] = {c: int(wells[c].sum()) for c in parting}
        with atomic_path(out / "validation.json") as tmp:
            tmp.write_text(json.dumps(validation, indent=2, default=str))
        s = validation["per_well"]
        if s.get("r2") is not None:
            log(f"label-free vs nuclei over {s['n']} wells: R² {s['r2']:.3f}, "
                f"CCC {s['ccc']:.3f}, bias {s['bias']:+.1f} cells "
                f"({s.get('bias_percent', float('nan')):+.1f} %), paired t-test p "
                f"{s['paired_p']:.3g}")
        if "parting" in validation:
            p = validation["parting"]
            log(f"label-free cells without a nucleus: {p['cells_without_nucleus']}, with "
                f"several: {p['cells_with_several_nuclei']}; nuclei outside every cell: "
                f"{p['nuclei_outside_cells']} (per well in wells.csv)")
    report = write_report(out, wells=wells, conds=conds, sites=tables["sites"],
                          validation=validation, run=run)
    log(f"wells.csv, report.html written to {out}")
    return {**tables, "validation": validation, "report": report}
