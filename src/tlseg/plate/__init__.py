"""Plates: the journey of a screen, one module a stage.

layout (file names → wells, sites, channels) and plate_map (conditions per well) →
prepare (settings, diameters, run.json) → run (segment every site on a Dask cluster,
resumable) → measure (per-cell table) → summary (wells.csv, conditions.csv) → validate
(label-free vs nuclei statistics) → report (report.html).
:mod:`~tlseg.plate.pipeline` strings them together; :mod:`~tlseg.plate.demo` makes a
synthetic plate with known counts.
"""

from .layout import Plate, Site, scan_plate
from .pipeline import run_plate, validate_plate
from .plate_map import read_plate_map

__all__ = ["Plate", "Site", "read_plate_map", "run_plate", "scan_plate", "validate_plate"]
