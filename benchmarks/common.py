"""Shared helpers for the benchmarks: data discovery, scoring, writing results."""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
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
#: the training sources of tl-cells
TL_CELLS_SOURCES = (*VAL_SOURCES, "aisegcell-bf")


def data_and_model(doc: str, argv=None):
    """Parse ``--data`` and ``--model`` for a benchmark whose docstring is ``doc``; return
    the arguments and the model loaded, with tlseg's thread setting."""
    import argparse

    from tlseg.cli import set_threads
    from tlseg.model import Model

    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--model", default="tl-cells")
    args = p.parse_args(argv)
    set_threads()
    return args, Model.load(args.model)


def tl_cells_heldout(data: Path, canonical_diameter: float) -> list:
    """The held-out training images (at the canonical scale) that ``tlseg train`` tuned
    tl-cells on: the same data, options and split as its training call (see its model
    card); aiSEGcell is never held out. Val is never read."""
    from tlseg.config import TrainConfig
    from tlseg.data import split_holdout
    from tlseg.train import load_folders

    tl = Path(data) / "tl"
    samples = load_folders([tl / s for s in TL_CELLS_SOURCES],
                           canonical_diameter=canonical_diameter,
                           incomplete_dirs=[tl / "aisegcell-bf"],
                           exclude=["181024TK20_p0002_*"])
    return split_holdout(samples, TrainConfig().holdout_fraction)[1]


def split_pairs(data: Path, source: str, split: str) -> list[tuple[Path, Path]]:
    """(image, mask) paths of a transmitted-light source's ``split`` (train or val)."""
    folder = Path(data) / "tl" / source / split
    return [(p, folder / "masks" / p.name) for p in sorted((folder / "images").glob("*.tif"))]


def val_pairs(data: Path, source: str) -> list[tuple[Path, Path]]:
    """(image, mask) paths of a source's val split."""
    return split_pairs(data, source, "val")


def train_median_diameter(data: Path, source: str, kind: str = "tl") -> float:
    """Median over a source's TRAIN masks of each image's median cell diameter."""
    folder = Path(data) / kind / source / "train" / "masks"
    return float(np.median([median_diameter(tifffile.imread(p)) for p in sorted(folder.glob("*.tif"))]))


def command_line(argv=None) -> str:
    """The command that ran this benchmark (``argv``: its arguments, default the
    process's), as README quotes it, quoted for the shell.

    Examples
    --------
    >>> command_line(["--variants", "finetune, EMA"]).split(" ", 2)[2]
    "--variants 'finetune, EMA'"
    """
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *args])


def write_results(name: str, payload: dict, *, argv=None) -> Path:
    """Write benchmarks/results/<name>.json with the date, the machine and the command
    that produced it (``argv`` as for :func:`command_line`; a ``command`` in ``payload``
    wins, e.g. when a results file is updated in place)."""
    payload = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "machine": f"{platform.machine()}, {platform.python_version()}, "
                   f"{os.cpu_count()} CPUs",
        "command": command_line(argv),
        **payload,
    }
    out = RESULTS / f"{name}.json"
    with atomic_path(out) as tmp:
        tmp.write_text(json.dumps(payload, indent=2))
    return out
