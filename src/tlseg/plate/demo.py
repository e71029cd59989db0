"""A synthetic ImageXpress-style dilution plate with known cell counts (``tlseg demo-plate``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..io import atomic_path
from ..synthetic import synthetic_field
from .layout import row_name

#: cells per field at each seeding level (a two-fold dilution series)
LEVELS = (10, 20, 40, 80)
#: nominal seeding density (cells per well) of each level, for the plate map
DENSITIES = (1250, 2500, 5000, 10000)


def make_demo_plate(out, *, replicates: int = 4, sites: int = 2, size: int = 512,
                    diameter: float = 28.0, modality: str = "brightfield", seed: int = 0,
                    plate_name: str = "demo") -> dict:
    """Write a synthetic ImageXpress dilution plate with known counts (``tlseg demo-plate``).

    ``len(LEVELS)`` seeding densities x ``replicates`` wells x ``sites`` sites of
    ``size``² pixels, cells of ``diameter`` pixels imaged in ``modality`` with a paired
    nuclear stain. Level i fills row ``A + i``, replicates fill columns 1..replicates.
    Files:

    - ``OUT/plate/<plate>_<well>_s<site>_w1.tif``: transmitted light (``modality``);
    - ``OUT/plate/<plate>_<well>_s<site>_w2.tif``: nuclear stain;
    - ``OUT/plate_map.csv``: well, cell_line, seeding_density;
    - ``OUT/truth.csv``: per site the true numbers of cells and of nuclei.

    Returns paths and the truth table.
    """
    out = Path(out)
    folder = out / "plate"
    folder.mkdir(parents=True, exist_ok=True)
    import tifffile

    rng = np.random.default_rng(seed)
    truth, pmap = [], []
    for li, (n, density) in enumerate(zip(LEVELS, DENSITIES)):
        for rep in range(replicates):
            well = f"{row_name(li + 1)}{rep + 1:02d}"
            pmap.append({"well": well, "cell_line": "synthetic", "seeding_density": density})
            for s in range(1, sites + 1):
                # replicate wells differ a little, like real seeding (Poisson)
                f = synthetic_field((size, size), n_cells=int(rng.poisson(n)) or 1,
                                    diameter=diameter, modality=modality,
                                    seed=int(rng.integers(2**31)))
                for channel, key in (("w1", "tl"), ("w2", "nuclei")):
                    path = folder / f"{plate_name}_{well}_s{s}_{channel}.tif"
                    with atomic_path(path) as tmp:
                        tifffile.imwrite(tmp, f[key], compression="lzw")
                truth.append({"well": well, "site": s, "true_cells": f["n_cells"],
                              "true_nuclei": int(len(np.unique(f["nuclei_labels"])) - 1)})
    truth = pd.DataFrame(truth)
    for name, df in (("truth.csv", truth), ("plate_map.csv", pd.DataFrame(pmap))):
        with atomic_path(out / name) as tmp:
            df.to_csv(tmp, index=False)
    return {"plate": folder, "plate_map": out / "plate_map.csv", "truth": truth}


def compare_truth(wells: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """Compare a plate run's counts with the truth of :func:`make_demo_plate`.

    Parameters
    ----------
    wells : pandas.DataFrame
        ``wells.csv`` of the run.
    truth : pandas.DataFrame
        ``truth.csv`` of the demo plate (per site ``true_cells`` and ``true_nuclei``).

    Returns
    -------
    pandas.DataFrame
        Per well the counted and true cells and nuclei, and ``cells_error`` /
        ``nuclei_error``: (counted - true) / true.
    """
    t = truth.groupby("well")[["true_cells", "true_nuclei"]].sum()
    df = wells.set_index("well").join(t, how="inner")
    df["cells_error"] = (df["n_cells"] - df["true_cells"]) / df["true_cells"]
    if "n_nuclei" in df:
        df["nuclei_error"] = (df["n_nuclei"] - df["true_nuclei"]) / df["true_nuclei"]
    return df.reset_index()
