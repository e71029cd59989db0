"""``--table-style cellprofiler``: a run's tables with CellProfiler's names, read by pycytominer."""

import json

import numpy as np
import pandas as pd
import pytest

import tlseg
from tlseg.cli import main

#: (well, site): number of cells; B01 site 2 failed
SITES = {("A01", 1): 3, ("A01", 2): 2, ("B01", 1): 4}


def _hand_made_run(out):
    """What `tlseg plate run --nuclei-channel w2` leaves in ``out``, written by hand."""
    for sub in ("sites", "cells"):
        (out / sub).mkdir(parents=True)
    run = {"plate": "/screens/Plate7", "layout": "imagexpress", "skipped_sites": [],
           "unparsed_files": [], "config": {"tl_channel": "w1", "nuclei_channel": "w2"}}
    (out / "run.json").write_text(json.dumps(run))
    (out / "plate_map.csv").write_text("well,compound,dose uM\nA01,DMSO,0\nB01,taxol,1.5\n")
    for (well, site), n in SITES.items():
        key = f"{well}_s{site}"
        paths = {c: f"/screens/Plate7/P7_{key}_{c}.tif" for c in ("w1", "w2")}
        record = {"well": well, "site": site, "key": key, "paths": paths, "status": "ok",
                  "shape": [64, 64], "diameter": 20.0, "n_cells": n, "nuclei_diameter": 10.0,
                  "n_nuclei": n + 1}
        (out / "sites" / f"{key}.json").write_text(json.dumps(record))
        label = np.arange(1, n + 1)
        # areas 100, 200, ... and one nucleus per cell but the first (two in the first)
        pd.DataFrame({"well": well, "site": site, "label": label, "centroid_y": 10.0 + label,
                      "centroid_x": 20.0 + label, "area": 100 * label,
                      "perimeter": 40.0 * label, "eccentricity": 0.5, "solidity": 0.9,
                      "mean_w1": 1000.0 * site, "mean_w2": 5.0, "area_um2": 42.0 * label,
                      "perimeter_um": 26.0 * label, "n_nuclei": [2] + [1] * (n - 1)}
                     ).to_parquet(out / "cells" / f"{key}.parquet")
    failed = {"well": "B01", "site": 2, "key": "B01_s2", "paths": {}, "status": "error",
              "error": "B01_s2_w1.tif: cannot read image"}
    (out / "sites" / "B01_s2.json").write_text(json.dumps(failed))
    return out


@pytest.fixture
def run_folder(tmp_path):
    return _hand_made_run(tmp_path / "run")


def test_validate_writes_image_and_cells_tables_with_cellprofiler_names(run_folder):
    out = run_folder
    result = tlseg.validate_plate(out, table_style="cellprofiler")
    assert result["cellprofiler"] == {"Image": out / "cellprofiler" / "Image.csv",
                                      "Cells": out / "cellprofiler" / "Cells.csv"}
    assert not (out / "cellprofiler" / "Nuclei.csv").exists()  # no per-nucleus measurements
    image = pd.read_csv(out / "cellprofiler" / "Image.csv")
    assert image.columns.tolist() == [
        "ImageNumber", "Metadata_Plate", "Metadata_Well", "Metadata_Site", "Metadata_compound",
        "Metadata_dose_uM", "Count_Cells", "Count_Nuclei", "FileName_w1", "PathName_w1",
        "FileName_w2", "PathName_w2"]
    # the failed site has no row: CellProfiler has no measurements of an image it could not read
    assert image[["ImageNumber", "Metadata_Well", "Metadata_Site", "Count_Cells",
                  "Count_Nuclei"]].values.tolist() == [[1, "A01", 1, 3, 4], [2, "A01", 2, 2, 3],
                                                       [3, "B01", 1, 4, 5]]
    assert (image["Metadata_Plate"] == "Plate7").all()
    assert image["Metadata_dose_uM"].tolist() == [0.0, 0.0, 1.5]
    assert image.loc[2, "FileName_w2"] == "P7_B01_s1_w2.tif"
    assert image.loc[2, "PathName_w2"] == "/screens/Plate7"

    cells = pd.read_csv(out / "cellprofiler" / "Cells.csv")
    assert cells.columns.tolist() == [
        "ImageNumber", "ObjectNumber", "Metadata_Plate", "Metadata_Well", "Metadata_Site",
        "Location_Center_X", "Location_Center_Y", "AreaShape_Area", "AreaShape_Perimeter",
        "AreaShape_Eccentricity", "AreaShape_Solidity", "Children_Nuclei_Count",
        "Intensity_MeanIntensity_w1", "Intensity_MeanIntensity_w2"]
    assert len(cells) == sum(SITES.values())
    assert (cells.groupby("ImageNumber").size() == image.set_index("ImageNumber")["Count_Cells"]).all()
    b01 = cells[cells["ImageNumber"] == 3]
    assert b01["ObjectNumber"].tolist() == [1, 2, 3, 4]  # the labels in masks/
    assert b01["AreaShape_Area"].tolist() == [100, 200, 300, 400]
    assert b01["AreaShape_Perimeter"].tolist() == [40, 80, 120, 160]
    assert b01["Location_Center_X"].tolist() == [21, 22, 23, 24]
    assert b01["Location_Center_Y"].tolist() == [11, 12, 13, 14]
    assert b01["Children_Nuclei_Count"].tolist() == [2, 1, 1, 1]
    assert (b01["Metadata_Well"] == "B01").all()
    assert cells.groupby("ImageNumber")["Intensity_MeanIntensity_w1"].first().tolist() == [
        1000, 2000, 1000]


def test_tlseg_style_writes_no_cellprofiler_tables_and_a_wrong_style_is_refused(run_folder):
    assert tlseg.validate_plate(run_folder)["cellprofiler"] is None
    assert not (run_folder / "cellprofiler").exists()
    with pytest.raises(tlseg.TlsegError, match="table style must be one of tlseg, cellprofiler"):
        tlseg.validate_plate(run_folder, table_style="CellProfiler")
    with pytest.raises(tlseg.TlsegError, match="table style"):
        tlseg.run_plate(run_folder, run_folder / "x", tl_channel="w1", table_style="csv")


def test_plate_validate_command_rewrites_the_tables_for_a_finished_run(run_folder, capsys):
    image = run_folder / "cellprofiler" / "Image.csv"
    assert main(["plate", "validate", str(run_folder), "--table-style", "cellprofiler"]) == 0
    first = image.read_bytes()
    image.write_text("stale")
    assert main(["plate", "validate", str(run_folder), "--table-style", "cellprofiler"]) == 0
    assert image.read_bytes() == first
    with pytest.raises(SystemExit):
        main(["plate", "validate", str(run_folder), "--table-style", "excel"])


def _pycytominer_profiles(folder, platemap=None):
    """Per-well profiles the way pycytominer reads CellProfiler CSVs (ExportToSpreadsheet):
    load each table, join objects to their image on ImageNumber, name every object
    feature after its compartment (``Cells_AreaShape_Area``), aggregate per well."""
    pycytominer = pytest.importorskip("pycytominer")
    from pycytominer.cyto_utils import load_profiles

    image = load_profiles(folder / "Image.csv")
    cells = load_profiles(folder / "Cells.csv")
    keys = ["ImageNumber", "Metadata_Plate", "Metadata_Well", "Metadata_Site"]
    cells = cells.rename(columns={c: f"Cells_{c}" for c in cells.columns
                                  if c not in keys and c != "ObjectNumber"})
    single = cells.merge(image, on=keys, how="inner", validate="many_to_one")
    single = single.rename(columns={"ObjectNumber": "Metadata_ObjectNumber"})
    profiles = pycytominer.aggregate(single, strata=["Metadata_Plate", "Metadata_Well"],
                                     features="infer", operation="median",
                                     compute_object_count=True)
    if platemap is not None:
        profiles = pycytominer.annotate(profiles, platemap=platemap,
                                        join_on=["Metadata_well", "Metadata_Well"])
    return single, profiles


def test_pycytominer_aggregates_and_annotates_the_cellprofiler_tables(run_folder):
    pytest.importorskip("pycytominer")
    tlseg.validate_plate(run_folder, table_style="cellprofiler")
    platemap = pd.read_csv(run_folder / "plate_map.csv")
    single, profiles = _pycytominer_profiles(run_folder / "cellprofiler", platemap)
    assert len(single) == sum(SITES.values())
    p = profiles.set_index("Metadata_Well")
    assert p.index.tolist() == ["A01", "B01"]
    assert p["Metadata_Object_Count"].tolist() == [5, 4]
    # A01: areas 100, 200, 300 and 100, 200 -> median 200; B01: 100..400 -> 250
    assert p["Cells_AreaShape_Area"].tolist() == [200, 250]
    assert p["Cells_Children_Nuclei_Count"].tolist() == [1, 1]
    assert p["Cells_Intensity_MeanIntensity_w1"].tolist() == [1000, 1000]
    assert p["Metadata_compound"].tolist() == ["DMSO", "taxol"]
    from pycytominer.cyto_utils import infer_cp_features

    assert set(infer_cp_features(single)) == {
        "Cells_Location_Center_X", "Cells_Location_Center_Y", "Cells_AreaShape_Area",
        "Cells_AreaShape_Perimeter", "Cells_AreaShape_Eccentricity", "Cells_AreaShape_Solidity",
        "Cells_Children_Nuclei_Count", "Cells_Intensity_MeanIntensity_w1",
        "Cells_Intensity_MeanIntensity_w2"}


@pytest.mark.slow
def test_a_real_plate_run_writes_tables_pycytominer_reads(plate, tmp_path):
    out = tmp_path / "out"
    assert main(["plate", "run", str(plate["plate"]), "-o", str(out), "--tl-channel", "w1",
                 "--nuclei-channel", "w2", "--plate-map", str(plate["plate_map"]),
                 "--workers", "1", "--threads", "1", "--diameter", "28",
                 "--nuclei-diameter", "14", "--table-style", "cellprofiler"]) == 0
    image = pd.read_csv(out / "cellprofiler" / "Image.csv")
    sites = pd.read_csv(out / "sites.csv")
    assert len(image) == len(sites) == 8
    assert image["Count_Cells"].sum() == sites["n_cells"].sum()
    assert image["Count_Nuclei"].sum() == sites["n_nuclei"].sum()
    assert {"Metadata_cell_line", "Metadata_seeding_density", "FileName_w1",
            "PathName_w2"} <= set(image.columns)
    cells = pd.read_csv(out / "cellprofiler" / "Cells.csv")
    parquet = pd.read_parquet(out / "cells")
    assert len(cells) == len(parquet)
    assert cells["AreaShape_Area"].sum() == parquet["area"].sum()
    assert cells["Children_Nuclei_Count"].sum() == parquet["n_nuclei"].sum()
    pytest.importorskip("pycytominer")
    _, profiles = _pycytominer_profiles(out / "cellprofiler")
    wells = pd.read_csv(out / "wells.csv").set_index("well")
    counts = profiles.set_index("Metadata_Well")["Metadata_Object_Count"]
    assert (counts == wells.loc[counts.index, "n_cells"]).all()
