import json

import numpy as np
import pandas as pd
import tifffile

from tlseg.cli import main


def test_segment_overlay_and_evaluate(image_dir, tmp_path, capsys):
    (image_dir / "broken.tif").write_bytes(b"II*\x00garbage")
    out = tmp_path / "out"
    rc = main(["segment", str(image_dir), "-o", str(out), "--overlay", "--diameter", "30"])
    err = capsys.readouterr().err
    assert rc == 2  # one bad file: reported, the others processed
    assert "broken.tif" in err and "skipped" in err and "Traceback" not in err
    for stem in ("a", "b"):
        lab = tifffile.imread(out / f"{stem}_masks.tif")
        assert lab.dtype in (np.uint16, np.uint32) and lab.max() > 5
        assert (out / f"{stem}_overlay.png").stat().st_size > 1000
    assert tifffile.imread(out / "a_masks.tif").shape == (256, 256)
    # one counts table for the folder, a per-cell table per image
    counts = pd.read_csv(out / "counts.csv", keep_default_na=False).set_index("image")
    assert counts.loc["broken.tif", "status"] == "error" and "broken.tif" in counts.loc[
        "broken.tif", "error"]
    for stem in ("a", "b"):
        n = int(tifffile.imread(out / f"{stem}_masks.tif").max())
        assert counts.loc[f"{stem}.tif", "status"] == "ok"
        assert int(counts.loc[f"{stem}.tif", "n_cells"]) == n
        cells = pd.read_csv(out / f"{stem}_cells.csv")
        assert len(cells) == n and {"area", "centroid_x", "solidity", "mean_image"} <= set(cells)
    # a re-run with the same settings skips the finished images and keeps their rows
    before = (out / "counts.csv").read_text()
    assert main(["segment", str(image_dir / "a.tif"), "-o", str(out), "--diameter", "30"]) == 0
    assert "skipped" in capsys.readouterr().out
    assert (out / "counts.csv").read_text() == before
    rc = main(["evaluate", str(out), str(tmp_path / "gt"), "--json", str(tmp_path / "s.json")])
    printed = capsys.readouterr().out
    assert rc == 0 and "OVERALL" in printed
    scores = json.loads((tmp_path / "s.json").read_text())
    assert scores["overall"]["ap50"] > 0.6
    assert len(scores["images"]) == 2


def test_segment_errors_exit_2_with_one_line(tmp_path, capsys):
    img = tmp_path / "x.tif"
    tifffile.imwrite(img, np.zeros((3, 32, 32), np.uint16), photometric="minisblack")
    assert main(["segment", str(img), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--plane" in err and "x.tif" in err
    assert main(["segment", str(img), "-o", str(tmp_path / "o"), "--model", "nope"]) == 2
    assert "no shipped model" in capsys.readouterr().err
    unfinished = tmp_path / "unfinished"  # a killed calibration: a checkpoint, no weights
    unfinished.mkdir()
    (unfinished / "checkpoint.pt").write_bytes(b"")
    assert main(["segment", str(img), "-o", str(tmp_path / "o2"), "--model",
                 str(unfinished)]) == 2
    assert "not a model folder" in capsys.readouterr().err and not (tmp_path / "o2").exists()
    const = tmp_path / "c.tif"
    tifffile.imwrite(const, np.full((64, 64), 5, np.uint16))
    assert main(["segment", str(const), "-o", str(tmp_path / "o")]) == 2
    assert "constant" in capsys.readouterr().err


def test_evaluate_shape_mismatch(tmp_path, capsys):
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    tifffile.imwrite(tmp_path / "p" / "a_masks.tif", np.ones((10, 10), np.uint16))
    tifffile.imwrite(tmp_path / "g" / "a.tif", np.ones((12, 10), np.uint16))
    assert main(["evaluate", str(tmp_path / "p"), str(tmp_path / "g")]) == 2
    assert "differs from the image" in capsys.readouterr().err


def test_models_lists_tl_cells(capsys):
    assert main(["models"]) == 0
    assert "tl-cells" in capsys.readouterr().out


def _subparsers(parser, prefix=()):
    """(command words, parser) for every command and subcommand of ``parser``."""
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*prefix, name), sub
                yield from _subparsers(sub, (*prefix, name))


def test_every_command_line_option_is_documented():
    import re
    from pathlib import Path

    from tlseg.cli.main import _build_parser

    root = Path(__file__).resolve().parents[1]
    docs = (root / "docs" / "cli.md").read_text() + (root / "README.md").read_text()
    commands = dict(_subparsers(_build_parser()))
    assert ("plate", "calibrate") in commands and ("train",) in commands
    missing = [f"tlseg {' '.join(words)} {option}" for words, sub in commands.items()
               for action in sub._actions for option in action.option_strings
               if option.startswith("--") and option not in ("--help", "--out")
               and not re.search(re.escape(option) + r"(?![\w-])", docs)]
    assert missing == []
