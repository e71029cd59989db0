"""A synthetic ImageXpress-style dilution plate with known cell counts (``tlseg demo-plate``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import TlsegError, check_positive
from ..io import atomic_path
from ..synthetic import synthetic_field
from .layout import row_name

#: cells per field at each seeding level (a two-fold dilution series)
LEVELS = (10, 20, 40, 80)
#: nominal seeding density (cells per well) of each level, for the plate map
DENSITIES = (1250, 2500, 5000, 10000)


#: channel names the instrument metadata gives the two channels (HTD file, acquisition)
WAVE_NAMES = ("TL", "DAPI")


def make_demo_plate(out, *, replicates: int = 4, sites: int = 2, size: int = 512,
                    diameter: float = 28.0, modality: str = "brightfield", seed: int = 0,
                    plate_name: str = "demo", metadata: str | None = None) -> dict:
    """Write a synthetic ImageXpress dilution plate with known counts (``tlseg demo-plate``).

    ``len(LEVELS)`` seeding densities x ``replicates`` wells x ``sites`` sites of
    ``size``² pixels, cells of ``diameter`` pixels imaged in ``modality`` with a paired
    nuclear stain. Level i fills row ``A + i``, replicates fill columns 1..replicates.
    Files:

    - ``OUT/plate/<plate>_<well>_s<site>_w1.tif``: transmitted light (``modality``);
    - ``OUT/plate/<plate>_<well>_s<site>_w2.tif``: nuclear stain;
    - ``OUT/plate_map.csv``: well, cell_line, seeding_density;
    - ``OUT/truth.csv``: per site the true numbers of cells and of nuclei.

    ``metadata='htd'`` adds the MetaXpress ``<plate>.HTD`` file (wells, sites and the
    channel names :data:`WAVE_NAMES`); ``metadata='acquisition'`` writes the plate as a
    MetaXpress acquisition instead (``<plate>.jdce`` descriptor, ``image_metadata_1.csv``
    manifest, ``timepoint0/<plate>_t0_<well>_s<site - 1>_w<channel - 1>_z0.tif``), as
    bioio-imagexpress reads it. The pixels are the same either way.

    Returns paths and the truth table.
    """
    if metadata not in (None, "htd", "acquisition"):
        raise ValueError(f"metadata must be None, 'htd' or 'acquisition', got {metadata!r}")
    if not (size >= 32 and replicates >= 1 and sites >= 1):
        raise TlsegError("a demo plate needs --size of at least 32 pixels and at least one "
                         f"replicate and site, got size {size}, replicates {replicates}, "
                         f"sites {sites}")
    check_positive("diameter", diameter)
    out = Path(out)
    folder = out / "plate"
    folder.mkdir(parents=True, exist_ok=True)
    import tifffile

    rng = np.random.default_rng(seed)
    truth, pmap, planes = [], [], []
    for li, (n, density) in enumerate(zip(LEVELS, DENSITIES)):
        for rep in range(replicates):
            well = f"{row_name(li + 1)}{rep + 1:02d}"
            pmap.append({"well": well, "cell_line": "synthetic", "seeding_density": density})
            for s in range(1, sites + 1):
                # replicate wells differ a little, like real seeding (Poisson)
                f = synthetic_field((size, size), n_cells=int(rng.poisson(n)) or 1,
                                    diameter=diameter, modality=modality,
                                    seed=int(rng.integers(2**31)))
                for c, (channel, key) in enumerate((("w1", "tl"), ("w2", "nuclei"))):
                    path = folder / f"{plate_name}_{well}_s{s}_{channel}.tif"
                    if metadata == "acquisition":
                        path = (folder / "timepoint0"
                                / f"{plate_name}_t0_{well}_s{s - 1}_w{c}_z0.tif")
                        path.parent.mkdir(exist_ok=True)
                        planes.append((well, s - 1, c, path.name))
                    with atomic_path(path) as tmp:
                        tifffile.imwrite(tmp, f[key], compression="lzw")
                truth.append({"well": well, "site": s, "true_cells": f["n_cells"],
                              "true_nuclei": int(len(np.unique(f["nuclei_labels"])) - 1)})
    wells = [p["well"] for p in pmap]
    if metadata == "htd":
        _write_htd(folder / f"{plate_name}.HTD", wells, sites)
    elif metadata == "acquisition":
        _write_acquisition(folder, plate_name, planes)
    truth = pd.DataFrame(truth)
    for name, df in (("truth.csv", truth), ("plate_map.csv", pd.DataFrame(pmap))):
        with atomic_path(out / name) as tmp:
            df.to_csv(tmp, index=False)
    return {"plate": folder, "plate_map": out / "plate_map.csv", "truth": truth}


def _write_htd(path: Path, wells: list[str], sites: int) -> None:
    """The MetaXpress plate description: a 96-well plate, ``wells`` selected, ``sites``
    sites in one row, the wavelengths :data:`WAVE_NAMES`."""
    from .layout import split_well

    chosen = {split_well(w) for w in wells}
    lines = ['"HTSInfoFile", Version 1.0', '"Description", "tlseg demo plate"',
             '"PlateType", 6', '"TimePoints", 1', '"ZSeries", FALSE', '"ZSteps", 1',
             '"XWells", 12', '"YWells", 8']
    for r in range(1, 9):
        lines.append(f'"WellsSelection{r}", '
                     + ", ".join("TRUE" if (r, c) in chosen else "FALSE" for c in range(1, 13)))
    lines += ['"Sites", TRUE', f'"XSites", {sites}', '"YSites", 1',
              '"SiteSelection1", ' + ", ".join(["TRUE"] * sites), '"Waves", TRUE',
              f'"NWavelengths", {len(WAVE_NAMES)}']
    for k, name in enumerate(WAVE_NAMES, start=1):
        lines += [f'"WaveName{k}", "{name}"', f'"WaveCollect{k}", 1']
    lines.append('"EndFile"')
    with atomic_path(path) as tmp:
        Path(tmp).write_text("\r\n".join(lines) + "\r\n")


def _write_acquisition(folder: Path, plate_name: str, planes: list) -> None:
    """The descriptor and manifest of a MetaXpress acquisition of ``planes`` (well,
    site, channel, file name), laid out as bioio-imagexpress reads them."""
    import json

    descriptor = {"ImageStack": {
        "Operator": {"Login": "tlseg"},
        "ImageMetadataFiles": ["image_metadata_1.csv"],
        "AutoLeadAcquisitionProtocol": {
            "ObjectiveCalibration": {"PixelWidth": 0.65, "PixelHeight": 0.65,
                                     "ObjectiveName": "10X Plan Fluor"},
            "Wavelengths": [{"Index": k, "EmissionFilter": {"Name": name}}
                            for k, name in enumerate(WAVE_NAMES)]}}}
    rows = ["Well,Field,Wavelength,Timepoint,ZIndex,ImageSubFolderPath,ImageFileName"]
    rows += [f"{well},{site},{c},0,0,timepoint0,{name}" for well, site, c, name in planes]
    with atomic_path(folder / f"{plate_name}.jdce") as tmp:
        Path(tmp).write_text(json.dumps(descriptor, indent=1))
    with atomic_path(folder / "image_metadata_1.csv") as tmp:
        Path(tmp).write_text("\n".join(rows) + "\n")


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
