"""Concurrency, interruption and hostile input: nothing lost, no traceback
(docs/reliability.md lists every case and the test that checks it)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import tifffile

import tlseg
from tlseg.cli import main

TLSEG = [sys.executable, "-m", "tlseg.cli"]


@pytest.fixture
def project_with_image(tmp_path):
    field = tlseg.synthetic_field((256, 256), diameter=30, seed=3)
    tifffile.imwrite(tmp_path / "field.tif", field["tl"])
    tifffile.imwrite(tmp_path / "labels.tif", field["labels"].astype(np.uint16))
    tlseg.Project.init(tmp_path / "proj")
    return tmp_path, field["labels"]


@pytest.mark.slow
def test_concurrent_roi_adds_each_add_exactly_their_box(project_with_image):
    """Nine `tlseg roi add` on one project (one, then eight at once, each a different
    box): nine ROIs, ids 1..9, each holding exactly the labels of its box."""
    tmp, labels = project_with_image
    boxes = [(y, x, y + 64, x + 64) for y in (0, 96, 192) for x in (0, 96, 192)]

    def add(box):
        return subprocess.Popen(TLSEG + ["roi", "add", str(tmp / "proj"), str(tmp / "field.tif"),
                                         "--box", *map(str, box), "--labels",
                                         str(tmp / "labels.tif")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    first = add(boxes[0])
    assert first.wait() == 0, first.stderr.read()
    procs = [add(b) for b in boxes[1:]]
    outs = [p.communicate() for p in procs]
    assert all(p.returncode == 0 for p in procs), [e for _, e in outs]
    rois = tlseg.Project.open(tmp / "proj").rois()
    assert sorted(r.roi_id for r in rois) == list(range(1, 10))
    for r in rois:
        y0, x0, y1, x1 = r.box
        np.testing.assert_array_equal(r.labels, labels[y0:y1, x0:x1])
    assert sorted(r.box for r in rois) == sorted(boxes)
    said = sorted(int(o.split()[1]) for o, _ in outs)
    assert len(set(said)) == 8  # no two processes report the same ROI id


def test_failed_roi_add_changes_nothing(project_with_image, capsys):
    """A `roi add` whose labels cannot be read registers neither the image nor a ROI."""
    tmp, _ = project_with_image
    (tmp / "bad.tif").write_bytes(b"not a tiff")
    rc = main(["roi", "add", str(tmp / "proj"), str(tmp / "field.tif"),
                         "--box", "0", "0", "64", "64", "--labels", str(tmp / "bad.tif")])
    assert rc == 2 and "bad.tif" in capsys.readouterr().err
    project = tlseg.Project.open(tmp / "proj")
    assert project.images == {} and project.rois() == []


def _field_file(path, seed=1, size=192):
    tifffile.imwrite(path, tlseg.synthetic_field((size, size), diameter=30, seed=seed)["tl"])
    return path


def test_segment_killed_between_writes_is_finished_by_the_rerun(tmp_path, monkeypatch):
    """The counts row is an image's last write: killed after its mask, before its overlay
    and row, the image is redone by the next run, which writes all of them."""
    images = tmp_path / "images"
    images.mkdir()
    _field_file(images / "a.tif")
    out = tmp_path / "out"

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr("tlseg.analysis.pipeline.write_overlay", killed)
        with pytest.raises(KeyboardInterrupt):
            tlseg.segment_folder(images, out, diameter=30, overlay=True)
    assert (out / "a_masks.tif").exists() and not (out / "a_overlay.png").exists()
    counts = tlseg.segment_folder(images, out, diameter=30, overlay=True)
    assert list(counts["status"]) == ["ok"]
    assert (out / "a_overlay.png").exists() and (out / "a_cells.csv").exists()
    n = tlseg.read_labels(out / "a_masks.tif").max()
    assert counts["n_cells"].iloc[0] == n


def test_segment_removes_temp_files_of_a_killed_run(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    _field_file(images / "a.tif")
    out = tmp_path / "out"
    out.mkdir()
    stale = out / ".a_masks.tif.x7k2m9qa.tif"  # what atomic_path leaves when killed
    stale.write_bytes(b"half")
    tlseg.segment_folder(images, out, diameter=30)
    assert not stale.exists() and (out / "a_masks.tif").exists()


@pytest.mark.parametrize("diameter", [None, 30])
def test_one_absurd_pixel_is_clipped_not_fatal(tmp_path, diameter):
    """A float pixel of 3e38 overflowed the diameter estimate (a traceback that stopped
    the folder) and, with a given diameter, gave 0 cells."""
    field = tlseg.synthetic_field((256, 256), diameter=30, seed=1)["tl"].astype(np.float32)
    model = tlseg.load_model("tl-cells")
    clean = model.segment(field, diameter=diameter)
    field[10, 10] = 3e38
    hot = model.segment(field, diameter=diameter)
    assert hot.max() == clean.max() > 10


def test_a_blocky_jpeg_is_warned_about(tmp_path, caplog):
    """JPEG's 8 x 8 blocks on the flat background of a faint brightfield field were read
    as cells (24 cells gave 1,399 at quality 85) with nothing said."""
    from PIL import Image

    f = tlseg.synthetic_field((256, 256), diameter=30, modality="brightfield", seed=0)["tl"]
    u8 = np.clip((f - f.min()) / np.ptp(f) * 255, 0, 255).astype(np.uint8)
    Image.fromarray(u8).save(tmp_path / "coarse.jpg", quality=30)
    Image.fromarray(u8).save(tmp_path / "fine.jpg", quality=95)
    Image.fromarray(u8).save(tmp_path / "lossless.png")
    caplog.set_level("WARNING", logger="tlseg")
    tlseg.segment_folder(sorted(tmp_path.glob("*.*")), tmp_path / "out", diameter=30)
    warned = [r.getMessage() for r in caplog.records if "JPEG" in r.getMessage()]
    assert len(warned) == 1 and warned[0].startswith("coarse.jpg: JPEG compression blocks")


def test_output_path_that_is_a_file_is_a_one_line_error(tmp_path, capsys):
    _field_file(tmp_path / "a.tif")
    (tmp_path / "out").write_text("a file")
    assert main(["segment", str(tmp_path / "a.tif"), "-o", str(tmp_path / "out"),
                           "--diameter", "30"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "is a file" in err and "\n" not in err


def test_inputs_that_would_write_the_same_outputs_are_refused(tmp_path, capsys):
    """a/img.tif and b/img.tif both write img_masks.tif: the second was skipped as done
    and its count never made (in one run, or in a second run into the same folder);
    img.png beside img.tif would overwrite its results."""
    for name in ("a/img.tif", "b/img.tif", "c/img.tif", "c/IMG.png"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        _field_file(tmp_path / name)
    out = tmp_path / "out"
    for inputs in (["a/img.tif", "b/img.tif"], ["c"]):
        assert main(["segment", *(str(tmp_path / i) for i in inputs), "-o", str(out),
                     "--diameter", "30"]) == 2
        err = capsys.readouterr().err.strip()
        assert "would both write" in err and "\n" not in err and not out.exists()
    # the same file given twice is one input, segmented once
    counts = tlseg.segment_folder([tmp_path / "a/img.tif", tmp_path / "a" / ".." / "a/img.tif"],
                                  out, diameter=30)
    assert list(counts["image"]) == ["img.tif"]
    assert list(counts["path"]) == [str((tmp_path / "a/img.tif").resolve())]
    # a later run of b/img.tif into the same folder would be skipped as done
    assert main(["segment", str(tmp_path / "b/img.tif"), "-o", str(out), "--diameter", "30"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"holds the results of {(tmp_path / 'a/img.tif').resolve()}" in err
    assert "--overwrite" in err and "\n" not in err
    assert main(["segment", str(tmp_path / "b/img.tif"), "-o", str(out), "--diameter", "30",
                 "--overwrite"]) == 0
    assert tlseg.read_labels(out / "img_masks.tif").max() == pd.read_csv(
        out / "counts.csv")["n_cells"].item()
    assert pd.read_csv(out / "counts.csv")["path"].item() == str((tmp_path / "b/img.tif").resolve())
    # a folder that has moved (the recorded file is gone) resumes: the image is done
    moved = (tmp_path / "b").rename(tmp_path / "moved")
    assert main(["segment", str(moved / "img.tif"), "-o", str(out), "--diameter", "30"]) == 0
    assert "img.tif: done in" in capsys.readouterr().out


def test_a_rerun_with_other_settings_is_refused_not_mixed(tmp_path, capsys):
    """Done images are skipped on a re-run: another model or diameter into the same
    folder kept the earlier results beside the new ones, under one counts.csv."""
    image, out = _field_file(tmp_path / "a.tif"), tmp_path / "out"
    assert main(["segment", str(image), "-o", str(out), "--diameter", "30"]) == 0
    capsys.readouterr()
    for other in (["--diameter", "20"], ["--model", "nuclei", "--diameter", "30"], ["--tta"]):
        assert main(["segment", str(image), "-o", str(out), "--diameter", "30", *other]) == 2
        err = capsys.readouterr().err.strip()
        assert "holds results made with other settings" in err and "\n" not in err
    assert main(["segment", str(image), "-o", str(out), "--diameter", "30"]) == 0  # resumes
    assert "done in" in capsys.readouterr().out
    assert main(["segment", str(image), "-o", str(out), "--diameter", "20", "--overwrite"]) == 0
    assert json.loads((out / "segment.json").read_text())["diameter"] == 20


def test_labels_beyond_32_bits_are_refused_not_wrapped(tmp_path):
    labels = np.zeros((32, 32), np.uint64)
    labels[4:12, 4:12] = 2**33  # wrapped to int32 this was 0: an all-background ROI
    tifffile.imwrite(tmp_path / "big.tif", labels)
    with pytest.raises(tlseg.TlsegError, match="32 bits"):
        tlseg.read_labels(tmp_path / "big.tif")


def test_image_too_large_for_memory_is_refused_with_the_limit():
    model = tlseg.load_model("tl-cells")
    # 3000² with cells of 10 px is 81 MP at the canonical 30 px, as a 9000² field of
    # 30 px cells would be
    huge = np.ones((3000, 3000), np.float32)
    huge[0, 0] = 2  # not constant
    with pytest.raises(tlseg.TlsegError, match="81 MP at the network's scale"):
        model.segment(huge, diameter=10)


def test_damaged_or_foreign_project_files_are_one_line_errors(project_with_image):
    tmp, _ = project_with_image
    root = tmp / "proj"
    (root / "project.yaml").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(tlseg.TlsegError, match="not UTF-8"):
        tlseg.Project.open(root)
    (root / "project.yaml").write_text("- a list\n- not a mapping\n")
    with pytest.raises(tlseg.TlsegError, match="not a tlseg project file"):
        tlseg.Project.open(root)


def test_moved_project_image_is_a_one_line_error(project_with_image):
    tmp, labels = project_with_image
    project = tlseg.Project.open(tmp / "proj")
    image_id = project.add_image(tmp / "field.tif")
    (tmp / "field.tif").rename(tmp / "moved.tif")
    with pytest.raises(tlseg.TlsegError, match="moved or deleted"):
        project.image_path(image_id)


def test_training_never_overwrites_a_model_nor_resumes_other_settings(data_dir, tmp_path):
    """A finished model folder is refused as output; an unfinished run resumed with
    other settings (e.g. another step count) is refused, naming the setting; a setting
    newer than the checkpoint counts as its default."""
    from dataclasses import replace

    from tlseg.training.train import load_folders, train_samples

    tiny = tlseg.ModelConfig(name="tiny", channels=(8, 16))
    tc = tlseg.TrainConfig(epochs=1, steps_per_epoch=4, batch_size=2, crop=64,
                           checkpoint_every=2, holdout_fraction=0.0)
    samples = load_folders([data_dir], canonical_diameter=tiny.canonical_diameter)
    train_samples(samples, tmp_path / "done", model_config=tiny, train_config=tc, tune=False)
    with pytest.raises(tlseg.TlsegError, match="holds a trained model"):
        train_samples(samples, tmp_path / "done", model_config=tiny, train_config=tc)

    def stop_at_3(step, total, parts):
        if step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_samples(samples, tmp_path / "run", model_config=tiny, train_config=tc,
                      progress=stop_at_3)
    with pytest.raises(tlseg.TlsegError, match="train.steps_per_epoch"):
        train_samples(samples, tmp_path / "run", model_config=tiny,
                      train_config=replace(tc, steps_per_epoch=8), resume=True)
    # a checkpoint written before a setting existed resumes when that setting is at its
    # default, and is refused when it is not; instance settings (chosen after training)
    # do not count
    import torch
    ckpt = tmp_path / "run" / "checkpoint.pt"
    state = torch.load(ckpt, weights_only=False)
    del state["meta"]["settings"]["train"]["monolayers"]
    del state["meta"]["settings"]["model"]["instances"]["repeat_similarity"]
    torch.save(state, ckpt)
    with pytest.raises(tlseg.TlsegError, match="train.monolayers"):
        train_samples(samples, tmp_path / "run", model_config=tiny,
                      train_config=replace(tc, monolayers=0.1), resume=True)
    train_samples(samples, tmp_path / "run", model_config=tiny, train_config=tc,
                  resume=True, tune=False)
    assert (tmp_path / "run" / "weights.pt").exists()
