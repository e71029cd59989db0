"""Shared helpers for the benchmarks: data discovery, scoring, writing results."""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import numpy as np
import tifffile

from tlseg.io import atomic_path
from tlseg.targets import median_diameter

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
WORK = REPO / "benchmarks" / "work"
VAL_SOURCES = ("usiigaci", "bbbc030-cho", "ctc-dic-hela")


def val_pairs(data: Path, source: str) -> list[tuple[Path, Path]]:
    """(image, mask) paths of a source's val split."""
    folder = Path(data) / "tl" / source / "val"
    return [(p, folder / "masks" / p.name) for p in sorted((folder / "images").glob("*.tif"))]


def train_median_diameter(data: Path, source: str, kind: str = "tl") -> float:
    """Median over a source's TRAIN masks of each image's median cell diameter."""
    folder = Path(data) / kind / source / "train" / "masks"
    return float(np.median([median_diameter(tifffile.imread(p)) for p in sorted(folder.glob("*.tif"))]))


def write_results(name: str, payload: dict) -> Path:
    """Write benchmarks/results/<name>.json with the machine and date."""
    payload = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {platform.python_version()}, "
                   f"{__import__('os').cpu_count()} CPUs",
        **payload,
    }
    out = RESULTS / f"{name}.json"
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(payload, indent=2))
    return out
