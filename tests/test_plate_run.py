"""Batch runs on small synthetic plates: Dask, resume after a kill, remote scheduler, bad input."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import tifffile

from tlseg.analysis.metrics import match_counts
from tlseg.cli import main
from tlseg.errors import TlsegError
from tlseg.plate.run import open_client

TLSEG = [sys.executable, "-m", "tlseg.cli"]


def _run_args(plate, out, *extra):
    return ["plate", "run", str(plate["plate"]), "-o", str(out), "--tl-channel", "w1",
            "--nuclei-channel", "w2", "--plate-map", str(plate["plate_map"]), "--workers", "1",
            "--threads", "1", "--diameter", "28", "--nuclei-diameter", "14", *extra]


@pytest.mark.slow
def test_plate_run_writes_every_table_and_resumes(plate, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(_run_args(plate, out, "--pixel-size", "0.65")) == 0
    wells = pd.read_csv(out / "wells.csv")
    assert {"well", "n_sites", "n_cells", "n_nuclei", "cell_line", "seeding_density",
            "cells_per_mm2", "mean_area_um2"} <= set(wells.columns)
    assert wells["n_sites"].tolist() == [2, 2, 2, 2]
    truth = plate["truth"].groupby("well")["true_nuclei"].sum()
    assert np.allclose(wells.set_index("well")["n_nuclei"], truth.loc[wells["well"]], rtol=0.25)
    cells = pd.read_parquet(out / "cells")  # the per-cell Parquet dataset
    assert {"well", "site", "label", "area", "perimeter", "eccentricity", "solidity",
            "mean_w1", "mean_w2", "n_nuclei", "centroid_x"} <= set(cells.columns)
    assert len(cells) == wells["n_cells"].sum()
    # where the two counts part, from the nuclei inside each cell
    w = wells.set_index("well")
    per = cells.groupby("well")["n_nuclei"]
    assert (w["cells_without_nucleus"] == per.agg(lambda k: (k == 0).sum())).all()
    assert (w["cells_with_several_nuclei"] == per.agg(lambda k: (k >= 2).sum())).all()
    extra = per.agg(lambda k: (k[k >= 2] - 1).sum())
    assert (w["n_cells"] - w["n_nuclei"] == w["cells_without_nucleus"]
            - w["nuclei_outside_cells"] - extra).all()
    cond = pd.read_csv(out / "conditions.csv")
    assert cond["n_wells"].tolist() == [2, 2] and "n_cells_sd" in cond
    val = json.loads((out / "validation.json").read_text())
    assert {"r2", "ccc", "paired_p", "bias", "loa_low", "loa_high"} <= set(val["per_well"])
    assert val["density"][0]["column"] == "seeding_density"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 5 and "Bland" in page
    assert "Where the counts part" in page
    # a second run skips every finished site and leaves the results unchanged
    before = (out / "wells.csv").read_bytes()
    assert main(_run_args(plate, out, "--pixel-size", "0.65")) == 0
    assert "0 site(s) segmented this run" in capsys.readouterr().out
    assert (out / "wells.csv").read_bytes() == before
    # other settings into the same folder are refused rather than mixed
    assert main(_run_args(plate, out, "--model", "nuclei")) == 2
    assert "other settings (model" in capsys.readouterr().err


@pytest.mark.slow
def test_killed_run_resumes_to_the_same_result(plate, tmp_path):
    full, killed = tmp_path / "full", tmp_path / "killed"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(TLSEG + _run_args(plate, full), check=True, env=env, capture_output=True)
    proc = subprocess.Popen(TLSEG + _run_args(plate, killed), env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not list((killed / "sites").glob("*.json")):
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the client, its scheduler and its workers
        proc.wait()
    n_done = len(list((killed / "sites").glob("*.json")))
    assert 1 <= n_done < 8, "the kill should land mid-run"
    assert not (killed / "wells.csv").exists()
    subprocess.run(TLSEG + _run_args(plate, killed), check=True, env=env, capture_output=True)
    # Convolutions' float sums are not bit-reproducible across processes (oneDNN), so two
    # uninterrupted runs can already differ by a pixel on a cell border; the resumed run
    # must match up to that: the same cells (each matched at IoU >= 0.9, whatever their
    # ids), and all but a few border pixels.
    for f in sorted((full / "masks").glob("*.tif")):
        x, y = tifffile.imread(f), tifffile.imread(killed / "masks" / f.name)
        assert x.max() == y.max(), f.name
        m = match_counts(x, y, thresholds=(0.9,))
        assert m["tp"][0] == x.max(), f.name
        assert ((x > 0) != (y > 0)).mean() < 1e-3, f.name
    a, b = pd.read_csv(full / "wells.csv"), pd.read_csv(killed / "wells.csv")
    counts = [c for c in a.columns if c.startswith("n_")]
    pd.testing.assert_frame_equal(a[["well"] + counts], b[["well"] + counts])
    pd.testing.assert_frame_equal(a, b, rtol=1e-3)
    assert not list((killed / "masks").glob(".*")), "no temp files left behind"


@pytest.mark.slow
def test_run_on_an_existing_scheduler(plate, tmp_path):
    sched_file = tmp_path / "scheduler.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    sched = subprocess.Popen(dask + ["--scheduler-file", str(sched_file), "--port", "0",
                                     "--no-dashboard"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker",
                                   "--scheduler-file", str(sched_file), "--nthreads", "1",
                                   "--no-dashboard"], env=env, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        out = tmp_path / "remote"
        assert main(_run_args(plate, out, "--scheduler", address)) == 0
        assert pd.read_csv(out / "wells.csv")["n_sites"].sum() == 8
    finally:
        for p in (worker, sched):
            if p is not None:
                p.terminate()
                p.wait(timeout=30)


def test_unreachable_scheduler_is_a_clear_error():
    t0 = time.time()
    with pytest.raises(TlsegError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        open_client(1, "tcp://127.0.0.1:9", timeout=2)
    assert time.time() - t0 < 30


@pytest.mark.slow
def test_corrupt_image_mixed_sizes_missing_channel_and_map_mismatch(tmp_path, capsys):
    from tlseg.synthetic import synthetic_field

    folder = tmp_path / "plate"
    folder.mkdir()
    for well, size in (("A01", 160), ("A02", 224), ("A03", 160)):
        f = synthetic_field((size, size), n_cells=6, diameter=28, modality="brightfield", seed=3)
        tifffile.imwrite(folder / f"p_{well}_s1_w1.tif", f["tl"])
        tifffile.imwrite(folder / f"p_{well}_s1_w2.tif", f["nuclei"])
    (folder / "p_A03_s1_w1.tif").write_bytes(b"II*\x00garbage")  # corrupt
    tifffile.imwrite(folder / "p_A04_s1_w1.tif", f["tl"])  # no w2 for A04
    tifffile.imwrite(folder / "p_A05_s1_w1.tif", f["tl"])
    tifffile.imwrite(folder / "p_A05_s1_w2.tif", np.zeros_like(f["nuclei"]))  # a blank stain
    (folder / "README.txt").write_text("not an image")
    (folder / "overview.tif").write_bytes(b"x")  # does not match the layout
    pm = tmp_path / "map.csv"
    pm.write_text("well,treatment\nA01,none\nA02,none\nB07,drug\n")
    out = tmp_path / "out"
    rc = main(["plate", "run", str(folder), "-o", str(out), "--tl-channel", "w1",
               "--nuclei-channel", "w2", "--plate-map", str(pm), "--workers", "1",
               "--threads", "1", "--diameter", "28", "--nuclei-diameter", "14"])
    captured = capsys.readouterr()
    assert rc == 2  # a failed site is an error exit, but the others are done
    assert "p_A03_s1_w1.tif" in captured.err and "A04 site 1: channel w2 missing" in captured.err
    assert "overview.tif" in captured.err and "B07" in captured.err
    assert "A05 site 1: " + str(folder / "p_A05_s1_w2.tif") + ": image is constant" in captured.err
    wells = pd.read_csv(out / "wells.csv").set_index("well")
    assert wells.loc["A01", "n_sites"] == 1 and wells.loc["A02", "n_sites"] == 1
    assert wells.loc["A03", "n_failed_sites"] == 1
    page = (out / "report.html").read_text()
    assert "p_A03_s1_w1.tif" in page and "A04 site 1" in page
    assert tifffile.imread(out / "masks" / "A02_s1_cells.tif").shape == (224, 224)


@pytest.mark.parametrize("option, value", [("--diameter", "-5"), ("--diameter", "nan"),
                                           ("--nuclei-diameter", "0"), ("--pixel-size", "-1")])
def test_a_size_that_is_not_positive_is_refused_before_anything_is_written(
        tmp_path, capsys, option, value):
    import tlseg

    made = tlseg.make_demo_plate(tmp_path, replicates=1, sites=1, size=64)
    base = ["--tl-channel", "w1", "--nuclei-channel", "w2"]
    runs = {"run": ["plate", "run", str(made["plate"]), "-o", str(tmp_path / "run"), *base],
            "convert": ["plate", "convert", str(made["plate"]), "-o", str(tmp_path / "c.zarr")],
            "calibrate": ["plate", "calibrate", str(made["plate"]), "-o", str(tmp_path / "cal"),
                          *base, "--wells", "A01"]}
    takes = {"--diameter": ("run", "calibrate"), "--nuclei-diameter": ("run", "calibrate"),
             "--pixel-size": ("run", "convert")}
    for command in takes[option]:
        assert main([*runs[command], option, value]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: ") and "must be > 0" in err[-1], command
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plate", "plate_map.csv", "truth.csv"]


@pytest.mark.parametrize("extra, message", [
    (["--workers", "0"], "--workers must be at least 1"),
    (["--threads", "-1"], "--threads must be at least 1"),
    (["--density-column", "seeding_density"], "needs a plate map"),
    (["--density-column", "nocol", "--plate-map", "MAP"], "not a plate-map column"),
    (["--model", "MODEL"], "not a model folder"),
    (["--nuclei-channel", "w2", "--nuclei-model", "nope"], "no shipped model named 'nope'")])
def test_bad_run_options_are_refused_before_anything_is_written(tmp_path, capsys, extra,
                                                                message):
    import tlseg

    made = tlseg.make_demo_plate(tmp_path, replicates=1, sites=1, size=64)
    (tmp_path / "unfinished").mkdir()  # a killed calibration's folder: no weights yet
    extra = [{"MAP": str(made["plate_map"]), "MODEL": str(tmp_path / "unfinished")}.get(e, e)
             for e in extra]
    out = tmp_path / "run"
    assert main(["plate", "run", str(made["plate"]), "-o", str(out), "--tl-channel", "w1",
                 *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: ") and message in err[-1]
    assert not out.exists()


def test_validate_needs_a_run_folder(tmp_path, capsys):
    assert main(["plate", "validate", str(tmp_path)]) == 2
    assert "not a plate run folder" in capsys.readouterr().err


@pytest.mark.slow
def test_diameter_by_plate_map_column_estimates_one_diameter_per_group(tmp_path, capsys):
    """Wells imaged with two objectives: each group gets its own automatic diameter."""
    from tlseg.synthetic import synthetic_field

    folder = tmp_path / "plate"
    folder.mkdir()
    for i, (well, diameter) in enumerate((("A01", 18), ("A02", 18), ("B01", 36), ("B02", 36))):
        f = synthetic_field((256, 256), n_cells=8, diameter=diameter, modality="brightfield",
                            seed=10 + i)
        tifffile.imwrite(folder / f"p_{well}_s1_w1.tif", f["tl"])
    pm = tmp_path / "map.csv"
    pm.write_text("well,objective\nA01,10x\nA02,10x\nB01,20x\nB02,20x\n")
    base = ["plate", "run", str(folder), "--tl-channel", "w1", "--plate-map", str(pm),
            "--workers", "1", "--threads", "1"]
    assert main(base + ["-o", str(tmp_path / "bad"), "--diameter-by", "lens"]) == 2
    assert "--diameter-by lens: no such plate-map column (objective)" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main(base + ["-o", str(out), "--diameter-by", "objective"]) == 0
    assert "objective = 20x: 2 well(s), cell diameter" in capsys.readouterr().out
    by_well = json.loads((out / "run.json").read_text())["config"]["well_diameters"]
    assert by_well["A01"] == by_well["A02"] and by_well["B01"] == by_well["B02"]
    assert 1.5 < by_well["B01"][0] / by_well["A01"][0] < 2.7
    sites = pd.read_csv(out / "sites.csv").set_index("well")
    # sites.csv keeps 2 decimals
    assert sites.loc["B02", "diameter"] == pytest.approx(by_well["B02"][0], abs=0.006)
    assert set(sites["pattern"]) == {"none"}  # cells on a plain background: no chip
    # a resume keeps the estimates and refuses a different grouping
    assert main(base + ["-o", str(out), "--diameter-by", "objective"]) == 0
    assert main(base + ["-o", str(out)]) == 2
    assert "other settings (diameter_by" in capsys.readouterr().err


def test_a_near_empty_site_does_not_set_its_groups_diameter(tmp_path, monkeypatch):
    """Sites' estimates are weighted by the cells found at them: a field of noise whose
    estimate runs away must not move the group's size (aiSEGcell A04/A05)."""
    import tlseg.inference.model
    from tlseg.plate.layout import Site
    from tlseg.plate.prepare import plate_diameter

    class Stub:  # the empty site reads 120 px and finds 2 objects; the full one 12 px, 60
        def estimate_diameter(self, image):
            return 120.0 if image.mean() == 0 else 12.0

        def predict_instances(self, image, diameter):
            return None, {"n_cells": 2 if image.mean() == 0 else 60}

    monkeypatch.setattr(tlseg.inference.model.Model, "load", staticmethod(lambda name: Stub()))
    sites = []
    for i, value in enumerate((0, 100)):
        path = tmp_path / f"s{i}.tif"
        tifffile.imwrite(path, np.full((32, 32), value, np.uint16))
        sites.append(Site("A01", i + 1, {"w1": path}))
    assert plate_diameter("stub", sites, "w1") == 12.0  # a plain median of two would be 66


def test_bar_chart_draws_no_error_bar_for_a_single_well(monkeypatch):
    import matplotlib.pyplot as plt

    from tlseg.plate import figures

    conds = pd.DataFrame({"density": [1, 2], "n_cells_mean": [10.0, 20.0],
                          "n_cells_sd": [np.nan, 2.0], "n_nuclei_mean": [11.0, 19.0],
                          "n_nuclei_sd": [np.nan, 1.5]})
    captured = []
    real_png = figures._png
    monkeypatch.setattr(figures, "_png", lambda fig: captured.append(fig) or real_png(fig))
    assert figures.bar_chart(conds, ["density"]).startswith("data:image/png;base64,")
    (ax,) = captured[0].axes
    # one vertical error segment per bar with replicate wells; none for n = 1 (SD undefined)
    segments = [seg for c in ax.collections for seg in c.get_segments()]
    finite = [s for s in segments if len(s) and np.isfinite(s).all()]
    assert len(finite) == 2
    plt.close("all")


def test_exclude_edge_drops_cut_cells_and_nuclei_from_counts_and_tables(plate, tmp_path):
    import tlseg
    from tlseg.plate.layout import scan_plate
    from tlseg.plate.run import process_site

    site = next(s for s in scan_plate(plate["plate"]).sites(["w1", "w2"])[0] if s.well == "B01")
    payload = {"well": site.well, "site": site.site, "paths": site.paths}
    cfg = tlseg.PlateConfig(tl_channel="w1", nuclei_channel="w2", diameter=28,
                            nuclei_diameter=14).result_keys()
    every = process_site(payload, cfg, str(tmp_path / "all"), threads=1)
    inner = process_site(payload, {**cfg, "exclude_edge": True}, str(tmp_path / "inner"),
                         threads=1)
    key, dropped = every["key"], 0
    for what, n in (("cells", "n_cells"), ("nuclei", "n_nuclei")):
        full = tlseg.read_labels(tmp_path / "all" / "masks" / f"{key}_{what}.tif")
        kept = tlseg.read_labels(tmp_path / "inner" / "masks" / f"{key}_{what}.tif")
        edge = np.concatenate([kept[0], kept[-1], kept[:, 0], kept[:, -1]])
        assert not edge.any() and kept.max() == len(np.unique(kept)) - 1
        assert inner[n] == kept.max() == tlseg.discard_edge(full).max() <= every[n]
        dropped += every[n] - inner[n]
    assert dropped > 0
    table = pd.read_parquet(tmp_path / "inner" / "cells" / f"{key}.parquet")
    assert len(table) == inner["n_cells"]


def test_discard_edge_keeps_inner_objects_and_refuses_a_stack():
    import tlseg

    lab = np.zeros((10, 10), np.int32)
    lab[0:3, 4:6] = 7  # touches the top edge
    lab[4:6, 4:6] = 3
    lab[7:9, 1:3] = 9
    kept = tlseg.discard_edge(lab)
    assert kept.max() == 2 and (kept > 0).sum() == 8 and not kept[0].any()
    with pytest.raises(ValueError, match="2-D label image"):
        tlseg.discard_edge(np.zeros((2, 4, 4), int))


def test_the_settings_line_names_the_nuclei_model_only_with_a_nuclear_channel():
    from tlseg.plate.report import _settings

    cfg = {"tl_channel": "w1", "nuclei_channel": None, "model": "tl-cells",
           "nuclei_model": "nuclei", "nuclei_diameter": None}
    assert "nuclei" not in _settings(cfg)
    assert "nuclei model <code>nuclei</code>" in _settings({**cfg, "nuclei_channel": "w2"})
