"""Plates under hostile input and concurrency: duplicate files, odd plate maps, a plate
where nothing works, two runs on one folder, spreadsheet formulas, unwritable outputs.

Fast tests run the plate pipeline with its sites processed one after another in this
process (``_serial``) instead of on a Dask cluster; the tests marked slow start real
clusters and real ``tlseg`` processes.
"""

import errno
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

import tlseg
from tlseg.cli import main
from tlseg.errors import TlsegError
from tlseg.io import write_table
from tlseg.plate import pipeline
from tlseg.plate.layout import scan_plate
from tlseg.plate.plate_map import read_plate_map
from tlseg.plate.run import process_site

TLSEG = [sys.executable, "-m", "tlseg.cli"]


def _touch(folder, names):
    folder.mkdir(parents=True, exist_ok=True)
    for n in names:
        (folder / n).write_bytes(b"x")
    return folder


@pytest.fixture
def serial(monkeypatch):
    """``run_plate`` without Dask: each site through :func:`process_site`, in order."""

    def run_sites(sites, out, cfg, **kwargs):
        return [process_site({"well": s.well, "site": s.site,
                              "paths": {k: str(v) for k, v in s.paths.items()}},
                             cfg.result_keys(), str(out), 1) for s in sites]

    monkeypatch.setattr(pipeline, "run_sites", run_sites)


def _corrupt_plate(folder, wells=("A01", "A02")):
    folder.mkdir(parents=True, exist_ok=True)
    for w in wells:
        (folder / f"p_{w}_s1_w1.tif").write_bytes(b"II*\x00garbage")
    return folder


def _run_args(plate_dir, out, *extra):
    return ["plate", "run", str(plate_dir), "-o", str(out), "--tl-channel", "w1",
            "--workers", "1", "--threads", "1", "--diameter", "20", *extra]


def _hand_made_run(out, plate_map: str, *, nuclei=True):
    """A run folder as `tlseg plate run` leaves it, with made-up counts (no images)."""
    for sub in ("sites", "cells"):
        (out / sub).mkdir(parents=True)
    run = {"plate": "p", "layout": "imagexpress", "skipped_sites": [], "unparsed_files": [],
           "config": {"tl_channel": "w1", "nuclei_channel": "w2" if nuclei else None}}
    (out / "run.json").write_text(json.dumps(run))
    (out / "plate_map.csv").write_text(plate_map)
    counts = {"A01": (10, 11), "A02": (12, 12), "B01": (20, 21), "B02": (22, 23)}
    for well, (n_cells, n_nuclei) in counts.items():
        key = f"{well}_s1"
        record = {"well": well, "site": 1, "key": key, "paths": {"w1": "gone.tif"},
                  "status": "ok", "shape": [100, 100], "diameter": 20.0, "n_cells": n_cells}
        if nuclei:
            record.update(nuclei_diameter=10.0, n_nuclei=n_nuclei)
        (out / "sites" / f"{key}.json").write_text(json.dumps(record))
        pd.DataFrame({"well": well, "site": 1, "label": np.arange(1, n_cells + 1),
                      "area": 300.0, "n_nuclei": 1}).to_parquet(out / "cells" / f"{key}.parquet")
    return out


# -- 1. duplicate files for one well/site/channel ----------------------------------------

def test_duplicate_files_for_one_site_are_reported_and_the_first_name_kept(tmp_path):
    d = _touch(tmp_path / "ix", ["p_A01_s1_w1.tif", "p_A01_s1_w1.TIF", "p_A01_s1_w2.tif",
                                 "p_A02_s1_w1.tif", "p_A02_s1_w2.tif"])
    plate = scan_plate(d)
    sites, _ = plate.sites(["w1", "w2"])
    assert sites[0].paths["w1"].name == "p_A01_s1_w1.TIF"  # first by sorted name
    assert plate.duplicates == [("A01 site 1 channel w1: 2 files (p_A01_s1_w1.TIF, "
                                 "p_A01_s1_w1.tif); p_A01_s1_w1.TIF used, the others ignored")]
    # two names a --pattern reads as the same site and channel
    d = _touch(tmp_path / "rx", ["exp_D7_f1_BF.png", "exp_D7_f1_BF_copy.png", "exp_D8_f1_BF.png"])
    plate = scan_plate(d, pattern=r"exp_(?P<well>\w\d+)_f(?P<site>\d+)_(?P<channel>BF)")
    assert len(plate.duplicates) == 1 and "exp_D7_f1_BF_copy.png" in plate.duplicates[0]
    assert plate.sites(["BF"])[0][0].paths["BF"].name == "exp_D7_f1_BF.png"
    # the planes of a z-stack are not duplicates
    d = _touch(tmp_path / "op", ["r01c01f01p01-ch1sk1fk1fl1.tiff",
                                 "r01c01f01p02-ch1sk1fk1fl1.tiff"])
    assert scan_plate(d).duplicates == []


def test_one_channel_given_as_both_the_cells_and_the_nuclei_is_refused(tmp_path, capsys):
    """``--nuclei-channel`` naming the transmitted-light channel would count nuclei on
    the brightfield image and calibrate on them; refused before anything is written."""
    d = _touch(tmp_path / "ix", ["p_A01_s1_w1.tif", "p_A01_s1_w2.tif"])
    with pytest.raises(TlsegError, match="channel w1 is given twice"):
        scan_plate(d).sites(["w1", "w1"])
    for cmd, out in (("run", tmp_path / "out"), ("calibrate", tmp_path / "model")):
        args = ["plate", cmd, str(d), "-o", str(out), "--tl-channel", "w1",
                "--nuclei-channel", "w1"]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "channel w1 is given twice" in err and "channels found: w1, w2" in err
        assert len(err.strip().splitlines()) == 1 and not out.exists()


def test_another_plates_run_in_the_output_folder_is_refused_a_moved_plate_resumes(
        tmp_path, serial, capsys):
    """Finished sites are skipped by well and site: a second plate run into the first's
    output folder would have reported the first plate's counts as its own."""
    a, b, out = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    for folder, seed in ((a, 1), (b, 2)):
        folder.mkdir()
        tifffile.imwrite(folder / "p_A01_s1_w1.tif",
                         tlseg.synthetic_field((96, 96), diameter=20, seed=seed)["tl"])
    assert main(_run_args(a, out)) == 0
    assert main(_run_args(b, out)) == 2
    err = capsys.readouterr().err
    assert f"holds the run of another plate ({a})" in err and "another -o" in err
    moved = a.rename(tmp_path / "moved")
    assert main(_run_args(moved, out)) == 0
    assert "which is gone; resuming it from" in capsys.readouterr().err
    assert json.loads((out / "run.json").read_text())["plate"] == str(moved)


def test_duplicate_files_reach_run_json_the_log_and_the_report(tmp_path, serial, capsys):
    folder = _corrupt_plate(tmp_path / "plate")  # no segmentation needed to see the warning
    (folder / "p_A01_s1_w1.TIF").write_bytes(b"II*\x00garbage")
    out = tmp_path / "out"
    assert main(_run_args(folder, out)) == 2
    assert "warning: A01 site 1 channel w1: 2 files" in capsys.readouterr().err
    run = json.loads((out / "run.json").read_text())
    assert any("p_A01_s1_w1.tif" in w and "ignored" in w for w in run["warnings"])
    page = (out / "report.html").read_text()
    assert "A01 site 1 channel w1: 2 files" in page
    assert json.loads((out / "sites" / "A01_s1.json").read_text())["paths"]["w1"].endswith(
        "p_A01_s1_w1.TIF")


# -- 2. matplotlib mathtext in plate-map strings ------------------------------------------

def test_dollar_signs_in_the_plate_map_do_not_break_the_report(tmp_path):
    pm = ("well,treatment,$\\rho$ seeding_density\nA01,$\\foo$,1000\nA02,$\\foo$,1000\n"
          "B01,$x$ <b>,2000\nB02,$x$ <b>,2000\n")
    out = _hand_made_run(tmp_path / "run", pm)
    result = tlseg.validate_plate(out)
    page = result["report"].read_text()
    assert page.count("data:image/png;base64,") >= 5
    assert "$\\foo$" in page and "$x$ &lt;b&gt;" in page and "<b>," not in page
    assert result["validation"]["density"][0]["column"] == "$\\rho$ seeding_density"


def test_mathtext_escape_keeps_the_text_as_written():
    from matplotlib.figure import Figure

    from tlseg.plate.figures import _plain

    fig = Figure()
    for s in ("$\\foo$", "a $ b", "5 $ and 6 $", "\\$x$", "plain"):
        t = fig.text(0, 0, _plain(s))
        fig.canvas.draw()  # raises for mathtext it cannot parse
        assert t._preprocess_math(t.get_text()) == (s, False)


# -- 3. plate-map columns named like tlseg's own ------------------------------------------

@pytest.mark.parametrize("column", ["n_cells", "n_nuclei", "n_sites", "cells_per_mm2",
                                    "n_failed_sites", "nuclei_outside_cells", "n_wells",
                                    "wells", "n_cells_mean"])
def test_plate_map_column_named_like_an_output_column_is_refused(tmp_path, column):
    f = tmp_path / "map.csv"
    f.write_text(f"well,{column}\nA01,5\n")
    with pytest.raises(TlsegError, match=f"column '{column}' .*reserved.*rename it") as info:
        read_plate_map(f)
    assert "\n" not in str(info.value) and "n_cells" in str(info.value)


def test_reserved_plate_map_column_stops_the_run_with_one_line(tmp_path, capsys):
    folder = _corrupt_plate(tmp_path / "plate")
    pm = tmp_path / "map.csv"
    pm.write_text("well,n_cells\nA01,1000\nA02,2000\n")
    assert main(_run_args(folder, tmp_path / "out", "--plate-map", str(pm))) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "'n_cells'" in err
    assert not (tmp_path / "out").exists()


def test_plate_map_column_starting_like_a_count_column_is_a_condition(tmp_path):
    """``cells_per_well`` (a seeding density) is a plate-map column like any other, not a
    count column tlseg wrote: it splits the conditions and labels the bars."""
    pm = ("well,cells_per_well,n_cells_seeded\nA01,1000,1\nA02,1000,1\n"
          "B01,2000,2\nB02,2000,2\n")
    result = tlseg.validate_plate(_hand_made_run(tmp_path / "run", pm))
    tests = result["validation"]["conditions"]
    assert [t["cells_per_well"] for t in tests] == [1000, 2000]
    assert [t["n_wells"] for t in tests] == [2, 2]


# -- 4. a plate where no site succeeds -------------------------------------------------

def test_plate_where_every_site_fails_ends_in_a_report(tmp_path, serial, capsys):
    folder = _corrupt_plate(tmp_path / "plate", wells=("A01", "A02", "B01"))
    pm = tmp_path / "map.csv"
    pm.write_text("well,treatment\nA01,none\nA02,none\nB01,drug\n")
    out = tmp_path / "out"
    assert main(_run_args(folder, out, "--plate-map", str(pm))) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "no site of the plate was segmented" in err
    wells = pd.read_csv(out / "wells.csv")
    assert wells["well"].tolist() == ["A01", "A02", "B01"]
    assert wells["n_sites"].tolist() == [0, 0, 0] and wells["n_failed_sites"].tolist() == [1, 1, 1]
    assert wells["n_cells"].isna().all()  # no count, not a count of 0 cells
    sites = pd.read_csv(out / "sites.csv")
    assert (sites["status"] == "error").all() and sites["error"].str.contains("p_A01_s1_w1").any()
    page = (out / "report.html").read_text()
    assert "0 of 3 sites segmented" in page and "p_B01_s1_w1.tif" in page
    # with a nuclei channel too, and `tlseg plate validate` on the folder afterwards
    (folder / "p_A01_s1_w2.tif").write_bytes(b"II*\x00garbage")
    out2 = tmp_path / "out2"
    assert main(_run_args(folder, out2, "--nuclei-channel", "w2", "--nuclei-diameter", "10")) == 2
    assert main(["plate", "validate", str(out2)]) == 0
    assert "A01 site 1" in (out2 / "report.html").read_text()


@pytest.mark.slow
def test_every_site_corrupt_in_a_real_run(tmp_path):
    """The same through the command line's process and a Dask cluster."""
    folder = _corrupt_plate(tmp_path / "plate")
    out = tmp_path / "out"
    done = subprocess.run(TLSEG + _run_args(folder, out), capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300, check=False)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "error: A01 site 1:" in done.stderr
    assert pd.read_csv(out / "wells.csv")["n_failed_sites"].tolist() == [1, 1]
    assert "p_A02_s1_w1.tif" in (out / "report.html").read_text()


# -- 5. two runs on one output folder ---------------------------------------------------

def test_second_run_on_a_locked_output_folder_is_refused(tmp_path, capsys):
    from tlseg.plate.run import lock_output

    folder = _corrupt_plate(tmp_path / "plate")
    out = tmp_path / "out"
    with lock_output(out):  # another run holds the folder
        assert main(_run_args(folder, out)) == 2
    err = capsys.readouterr().err
    assert "another `tlseg plate run` is writing to" in err and err.count("\n") == 1
    assert not (out / "run.json").exists()
    with lock_output(out):  # released when the first run ends
        pass


@pytest.mark.slow
def test_two_plate_run_processes_on_one_folder(plate, tmp_path):
    """The first run waits on a scheduler without workers, so it holds the folder for as
    long as the test needs; the second process is refused, and once the first is killed
    the folder is free again (the OS drops the lock with the process)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    sched_file = tmp_path / "scheduler.json"
    sched = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler",
                              "--scheduler-file", str(sched_file), "--port", "0",
                              "--no-dashboard"], env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    first = None
    try:
        deadline = time.time() + 60
        while not sched_file.exists() and time.time() < deadline:
            time.sleep(0.1)
        address = json.loads(sched_file.read_text())["address"]
        out = tmp_path / "out"
        args = ["plate", "run", str(plate["plate"]), "-o", str(out), "--tl-channel", "w1",
                "--diameter", "28", "--threads", "1"]
        first = subprocess.Popen(TLSEG + args + ["--scheduler", address], env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while not (out / "run.json").exists() and time.time() < deadline:
            time.sleep(0.1)
        assert first.poll() is None, "the first run should be waiting for workers"
        second = subprocess.run(TLSEG + args + ["--workers", "1"], env=env,
                                capture_output=True, text=True, timeout=120, check=False)
        assert second.returncode == 2
        assert "another `tlseg plate run` is writing to" in second.stderr
        assert "Traceback" not in second.stderr
        assert first.poll() is None
        first.send_signal(signal.SIGKILL)
        first.wait()
        # the lock went with the process: the next run gets as far as the settings check
        third = subprocess.run(TLSEG + args + ["--workers", "1", "--model", "nuclei"],
                               env=env, capture_output=True, text=True, timeout=120,
                               check=False)
        assert third.returncode == 2 and "other settings (model" in third.stderr
    finally:
        for p in (first, sched):
            if p is not None and p.poll() is None:
                p.terminate()
                p.wait(timeout=30)


# -- 6. spreadsheet formulas in output tables -------------------------------------------

def test_write_table_defuses_formulas_in_text_cells_only(tmp_path):
    table = pd.DataFrame({
        "text": ["=1+2", "+SUM(A1)", "-2+3", "@cmd", "\tx", "plain", "-3.5", "", "it's"],
        "number": [-3.5, 1.0, -2.0, 0.0, 4.0, 5.0, 6.0, 7.0, 8.0],
        "count": np.arange(-4, 5),
    })
    path = tmp_path / "t.csv"
    write_table(path, table)
    back = pd.read_csv(path, keep_default_na=False)
    assert back["text"].tolist() == ["'=1+2", "'+SUM(A1)", "'-2+3", "'@cmd", "'\tx", "plain",
                                     "-3.5", "", "it's"]
    pd.testing.assert_series_equal(back["number"], table["number"])
    pd.testing.assert_series_equal(back["count"], table["count"])
    assert table["text"][0] == "=1+2", "the caller's table is left as it was"


def test_plate_map_formulas_are_defused_in_wells_and_conditions(tmp_path):
    pm = "well,treatment,dose\nA01,=HYPERLINK(1),-3.5\nA02,=HYPERLINK(1),-3.5\nB01,@x,2\nB02,@x,2\n"
    out = _hand_made_run(tmp_path / "run", pm)
    tlseg.validate_plate(out)
    wells = pd.read_csv(out / "wells.csv")
    assert wells["treatment"].tolist() == ["'=HYPERLINK(1)"] * 2 + ["'@x"] * 2
    assert wells["dose"].tolist() == [-3.5, -3.5, 2.0, 2.0]
    conds = pd.read_csv(out / "conditions.csv")
    assert sorted(conds["treatment"]) == ["'=HYPERLINK(1)", "'@x"]
    assert "=HYPERLINK(1)" in (out / "report.html").read_text()  # the page shows the value


def test_segment_counts_csv_reads_back_with_a_formula_like_image_name(tmp_path, field):
    tifffile.imwrite(tmp_path / "=ok.tif", field["tl"])
    (tmp_path / "-bad.tif").write_bytes(b"II*\x00garbage")
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "=ok.tif"), str(tmp_path / "-bad.tif"),
                 "-o", str(out), "--diameter", "30"]) == 2  # one image failed
    counts = pd.read_csv(out / "counts.csv")
    assert counts["image"].tolist() == ["'=ok.tif", "'-bad.tif"]
    assert counts["status"].tolist() == ["ok", "error"]
    assert pd.api.types.is_numeric_dtype(counts["n_cells"])
    assert counts["n_cells"].iloc[0] > 5 and counts["diameter"].iloc[0] == 30.0
    assert counts["error"].iloc[1].startswith(str(tmp_path))
    cells = pd.read_csv(out / "=ok_cells.csv")
    assert pd.api.types.is_numeric_dtype(cells["area"]) and len(cells) == counts["n_cells"][0]


def test_segment_resume_skips_a_formula_like_image_name(tmp_path, field):
    tifffile.imwrite(tmp_path / "=ok.tif", field["tl"])
    args = ["segment", str(tmp_path / "=ok.tif"), "-o", str(tmp_path / "out"), "--diameter", "30"]
    assert main(args) == 0 and main(args) == 0
    assert len(pd.read_csv(tmp_path / "out" / "counts.csv")) == 1

# -- 7. an output path that cannot be a folder we write to ---------------------------------

def test_output_path_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    folder = _corrupt_plate(tmp_path / "plate")
    target = tmp_path / "results.csv"
    target.write_text("keep me")
    assert main(_run_args(folder, target)) == 2
    err = capsys.readouterr().err
    assert err == f"error: {target}: is a file, not a folder; give -o a folder\n"
    assert target.read_text() == "keep me"
    assert main(_run_args(folder, target / "sub")) == 2
    assert "give -o a folder" in capsys.readouterr().err


def test_read_only_output_folder_is_a_one_line_error(tmp_path, capsys, monkeypatch):
    folder = _corrupt_plate(tmp_path / "plate")
    out = tmp_path / "shared"
    out.mkdir()
    out.chmod(0o555)
    if os.geteuid() == 0:  # root writes anywhere: say what the OS says to everyone else
        from tlseg.io import files

        def denied(*args, dir=None, **kwargs):  # the output folder's write probe
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(dir))

        monkeypatch.setattr(files.tempfile, "NamedTemporaryFile", denied)
    try:
        assert main(_run_args(folder, out)) == 2
    finally:
        out.chmod(0o755)
    err = capsys.readouterr().err
    assert err.startswith(f"error: {out}: cannot write there (Permission denied)")
    assert err.count("\n") == 1

