"""Plate file-name layouts, plate maps and count statistics (no segmentation here)."""

import numpy as np
import pandas as pd
import pytest

from tlseg.analysis.measure import measure_cells, nuclei_per_cell
from tlseg.errors import TlsegError
from tlseg.plate.layout import normalize_well, row_name, scan_plate
from tlseg.plate.plate_map import read_plate_map
from tlseg.plate.validate import agreement, linear_range, lins_ccc, validate_counts


def _touch(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"x")
    return folder


def test_imagexpress_names_with_thumbnails_and_guid(tmp_path):
    d = _touch(tmp_path / "ix", [
        "Plate_1_A01_s1_w1.tif", "Plate_1_A01_s1_w2.tif", "Plate_1_A01_s2_w1.tif",
        "Plate_1_A01_s2_w2.tif", "Plate_1_B12_s1_w1F3A2B1C4-1111-2222-3333-444455556666.tif",
        "Plate_1_B12_s1_w2.tif", "Plate_1_A01_s1_w1_thumb1234.tif", "notes.txt",
    ])
    plate = scan_plate(d)
    assert plate.layout == "imagexpress"
    assert plate.channels == ["w1", "w2"]
    assert plate.wells == ["A01", "B12"]
    sites, problems = plate.sites(["w1", "w2"])
    assert [s.key for s in sites] == ["A01_s1", "A01_s2", "B12_s1"]
    assert not problems


def test_imagexpress_single_site_single_channel(tmp_path):
    plate = scan_plate(_touch(tmp_path / "p", ["scan_C03.tif", "scan_C04.tif"]))
    assert plate.wells == ["C03", "C04"]
    sites, _ = plate.sites(["1"])
    assert [s.site for s in sites] == [1, 1]


def test_incell_names(tmp_path):
    d = _touch(tmp_path / "ic", ["B - 03(fld 1 wv DAPI - DAPI).tif",
                                 "B - 03(fld 1 wv TL-Brightfield - Cy3).tif",
                                 "B - 03(fld 2 wv DAPI - DAPI).tif",
                                 "B - 03(fld 2 wv TL-Brightfield - Cy3).tif"])
    plate = scan_plate(d)
    assert plate.layout == "incell"
    assert plate.resolve_channel("DAPI") == "DAPI - DAPI"
    sites, _ = plate.sites(["TL-Brightfield", "DAPI"])
    assert [s.key for s in sites] == ["B03_s1", "B03_s2"]


def test_operetta_names_first_plane_only(tmp_path):
    d = _touch(tmp_path / "op", ["r02c05f01p01-ch1sk1fk1fl1.tiff", "r02c05f01p02-ch1sk1fk1fl1.tiff",
                                 "r02c05f01p01-ch2sk1fk1fl1.tiff"])
    plate = scan_plate(d)
    assert plate.layout == "operetta"
    sites, _ = plate.sites(["ch1", "ch2"])
    assert len(sites) == 1 and sites[0].well == "B05"
    assert sites[0].paths["ch1"].name.startswith("r02c05f01p01")


def test_user_regex_and_unparsed_names_listed(tmp_path):
    d = _touch(tmp_path / "rx", ["exp_well-D7_field3_BF.png", "exp_well-D7_field3_HOE.png",
                                 "garbage.png"])
    plate = scan_plate(d, pattern=r"exp_well-(?P<well>\w\d+)_field(?P<site>\d+)_(?P<channel>\w+)\.png")
    assert plate.layout == "regex" and plate.wells == ["D07"]
    assert [p.name for p in plate.unparsed] == ["garbage.png"]
    with pytest.raises(TlsegError, match="named group"):
        scan_plate(d, pattern=r"(?P<site>\d+)")
    with pytest.raises(TlsegError, match="not a valid regular expression"):
        scan_plate(d, pattern=r"(?P<well>")


def test_no_parseable_names_is_a_clear_error(tmp_path):
    d = _touch(tmp_path / "bad", ["image1.tif", "image2.tif"])
    with pytest.raises(TlsegError, match=r"no file name matches .*\(e.g. image1.tif\)"):
        scan_plate(d)
    with pytest.raises(TlsegError, match="no images"):
        scan_plate(_touch(tmp_path / "empty", ["a.txt"]))
    # the images are one folder down (a demo plate's plate/): the error names it
    _touch(tmp_path / "outer" / "plate", ["p_A01_s1_w1.tif"])
    with pytest.raises(TlsegError, match=r"no images .*give the folder that holds them, "
                                         r"e\.g\. .*outer.plate$"):
        scan_plate(tmp_path / "outer")


def test_missing_channel_for_some_sites_is_reported(tmp_path):
    d = _touch(tmp_path / "m", ["p_A01_s1_w1.tif", "p_A01_s1_w2.tif", "p_A01_s2_w1.tif"])
    sites, problems = scan_plate(d).sites(["w1", "w2"])
    assert [s.key for s in sites] == ["A01_s1"]
    assert problems == ["A01 site 2: channel w2 missing, site skipped"]
    with pytest.raises(TlsegError, match="channel 'w9' is not in"):
        scan_plate(d).sites(["w9"])


def test_well_names():
    assert normalize_well("a1") == "A01" and normalize_well("P024") == "P24"
    assert row_name(27) == "AA"
    with pytest.raises(TlsegError):
        normalize_well("A0")


def test_plate_map_join_warnings(tmp_path):
    f = tmp_path / "map.csv"
    f.write_text("Well,cell_line,density\nA1,CHO,1000\nA2,CHO,2000\nH12,HEK,500\n")
    pm, warnings = read_plate_map(f, wells=["A01", "A02", "B01"])
    assert pm.loc["A02", "density"] == 2000 and pm["density"].dtype.kind in "if"
    assert any("H12" in w for w in warnings) and any("B01" in w for w in warnings)
    f.write_text("position,x\nA1,1\n")
    with pytest.raises(TlsegError, match="'well' column"):
        read_plate_map(f)
    f.write_text("well,x\nA1,1\nA01,2\n")
    with pytest.raises(TlsegError, match="listed twice"):
        read_plate_map(f)


def test_measurements_and_nuclei_inside_cells():
    cells = np.zeros((40, 40), np.int32)
    cells[2:20, 2:20] = 1
    cells[22:38, 22:38] = 2
    nuclei = np.zeros_like(cells)
    nuclei[5:9, 5:9] = 1
    nuclei[12:16, 12:16] = 2
    nuclei[28:32, 28:32] = 3
    nuclei[0:2, 30:33] = 4  # outside every cell
    assert nuclei_per_cell(cells, nuclei).tolist() == [1, 2, 1]
    img = np.arange(1600, dtype=np.float32).reshape(40, 40)
    df = measure_cells(cells, {"w1": img, "DAPI - DAPI": img * 2}, nuclei=nuclei, pixel_size=0.5)
    assert df["area"].tolist() == [324, 256]
    assert df["n_nuclei"].tolist() == [2, 1]
    assert {"mean_w1", "mean_DAPI_DAPI", "area_um2", "eccentricity", "solidity",
            "centroid_y"} <= set(df.columns)
    assert df["area_um2"].tolist() == [81.0, 64.0]


def test_agreement_statistics_against_known_values():
    nuc = np.array([100, 200, 300, 400, 500.0])
    assert lins_ccc(nuc, nuc) == pytest.approx(1.0)
    s = agreement(nuc * 1.1, nuc)  # a 10 % over-count
    assert s["r2"] == pytest.approx(1.0)
    assert s["bias"] == pytest.approx(30.0)
    assert s["bias_percent"] == pytest.approx(10.0)
    assert s["ccc"] < 0.99 and s["paired_p"] < 0.05
    rng = np.random.default_rng(0)
    s = agreement(nuc + rng.normal(0, 5, 5), nuc)
    assert s["paired_p"] > 0.05 and s["ccc"] > 0.99


def test_linear_range_stops_where_counts_saturate():
    dens = np.repeat([1000, 2000, 4000, 8000, 16000], 4)
    nuclei = dens / 10.0
    lf = np.minimum(nuclei, 450.0)  # label-free count saturates above ~4500 cells
    wells = pd.DataFrame({"well": [f"A{i + 1:02d}" for i in range(20)], "n_sites": 1,
                          "n_cells": lf, "n_nuclei": nuclei, "seeding_density": dens})
    lr = linear_range(wells, "seeding_density")
    assert lr["linear_range"]["low"] == 1000 and lr["linear_range"]["high"] == 4000
    res = validate_counts(wells)
    assert res["density"][0]["column"] == "seeding_density"
    with pytest.raises(TlsegError, match="--nuclei-channel"):
        validate_counts(wells.drop(columns="n_nuclei"))


def test_agreement_over_condition_means_needs_three_conditions():
    """Through two condition means any line fits (r = ±1): no statistics over them."""
    rng = np.random.default_rng(0)
    for n_conditions, expected in ((2, False), (3, True)):
        wells = pd.DataFrame({"well": [f"A{i + 1:02d}" for i in range(4 * n_conditions)],
                              "n_sites": 1, "drug": np.repeat(range(n_conditions), 4),
                              "n_nuclei": rng.integers(40, 60, 4 * n_conditions)})
        wells["n_cells"] = wells["n_nuclei"] + rng.integers(-3, 4, len(wells))
        conds = wells.groupby("drug", as_index=False).agg(
            n_cells_mean=("n_cells", "mean"), n_nuclei_mean=("n_nuclei", "mean"))
        res = validate_counts(wells, conds)
        assert ("per_condition" in res) is expected
        assert len(res["conditions"]) == n_conditions  # each condition's own test stays


def test_validate_plate_summarises_site_records_into_wells_conditions_and_a_report(tmp_path):
    """The tables of a run, from hand-made site records (what `tlseg plate run` writes)."""
    import json

    import tlseg

    out = tmp_path / "run"
    for sub in ("sites", "cells"):
        (out / sub).mkdir(parents=True)
    run = {"plate": "p", "layout": "imagexpress", "skipped_sites": [], "unparsed_files": [],
           "config": {"tl_channel": "w1", "nuclei_channel": "w2", "pixel_size": 0.5}}
    (out / "run.json").write_text(json.dumps(run))
    (out / "plate_map.csv").write_text("well,seeding_density\nA01,1000\nA02,1000\n"
                                       "B01,2000\nB02,2000\n")
    # (well, site): (cells, nuclei); each site's first cell holds no nucleus
    counts = {("A01", 1): (10, 11), ("A01", 2): (12, 12), ("A02", 1): (9, 10),
              ("A02", 2): (11, 11), ("B01", 1): (20, 21), ("B01", 2): (22, 23),
              ("B02", 1): (19, 20)}
    for (well, site), (n_cells, n_nuclei) in counts.items():
        key = f"{well}_s{site}"
        record = {"well": well, "site": site, "key": key, "paths": {"w1": "gone.tif"},
                  "status": "ok", "shape": [100, 100], "diameter": 20.0, "n_cells": n_cells,
                  "nuclei_diameter": 10.0, "n_nuclei": n_nuclei}
        (out / "sites" / f"{key}.json").write_text(json.dumps(record))
        pd.DataFrame({"well": well, "site": site, "label": np.arange(1, n_cells + 1),
                      "area": 300.0, "n_nuclei": [0] + [1] * (n_cells - 1)}
                     ).to_parquet(out / "cells" / f"{key}.parquet")
    failed = {"well": "B02", "site": 2, "key": "B02_s2", "paths": {}, "status": "error",
              "error": "B02_s2_w1.tif: cannot read image"}
    (out / "sites" / "B02_s2.json").write_text(json.dumps(failed))
    result = tlseg.validate_plate(out)
    wells = pd.read_csv(out / "wells.csv").set_index("well")
    assert wells["n_cells"].to_dict() == {"A01": 22, "A02": 20, "B01": 42, "B02": 19}
    assert wells["n_nuclei"].to_dict() == {"A01": 23, "A02": 21, "B01": 44, "B02": 20}
    assert wells["n_sites"].tolist() == [2, 2, 2, 1]
    assert wells["n_failed_sites"].tolist() == [0, 0, 0, 1]
    assert wells["cells_without_nucleus"].tolist() == [2, 2, 2, 1]
    assert wells["nuclei_outside_cells"].tolist() == [3, 3, 4, 2]
    assert wells.loc["B02", "cells_per_mm2"] == pytest.approx(19 / (100 * 100 * 0.0005**2))
    assert wells.loc["A01", "mean_area_um2"] == pytest.approx(300 * 0.25)
    conditions = pd.read_csv(out / "conditions.csv")
    assert conditions["n_wells"].tolist() == [2, 2]
    assert conditions["n_cells_mean"].tolist() == [21.0, 30.5]
    validation = json.loads((out / "validation.json").read_text())
    assert validation["per_well"]["n"] == 4 and validation["per_well"]["bias"] == -1.25
    assert result["report"] == out / "report.html"
    assert "B02 site 2: B02_s2_w1.tif: cannot read image" in result["report"].read_text()


def test_linear_range_is_judged_on_level_means_not_replicate_scatter():
    """A proportional dilution series whose replicate wells scatter by ~10 % (like a real
    plate): the R² over single wells of the low levels stays under 0.95, but the means lie
    on a line and the lack-of-fit test does not reject it, so all four levels are linear."""
    dens = np.repeat([1250, 2500, 5000, 10000], 4)
    scatter = np.tile([0.9, 1.05, 1.1, 0.95], 4)
    nuclei = dens / 50 * scatter
    wells = pd.DataFrame({"well": [f"A{i + 1:02d}" for i in range(16)], "n_sites": 1,
                          "n_cells": nuclei * 1.02, "n_nuclei": nuclei,
                          "seeding_density": dens})
    low = wells[wells["seeding_density"] <= 2500]
    r_wells = np.corrcoef(low["seeding_density"], low["n_cells"])[0, 1] ** 2
    assert r_wells < 0.95  # what the old single-well criterion stopped at
    lr = linear_range(wells, "seeding_density")["linear_range"]
    assert (lr["low"], lr["high"], lr["n_levels"]) == (1250, 10000, 4)
    assert lr["r2_means"] > 0.99 and lr["lack_of_fit_p"] > 0.05
    # the nuclei's own line over the same levels: label-free 1.02 cells a nucleus
    assert lr["slope"] / lr["reference"]["slope"] == pytest.approx(1.02)
