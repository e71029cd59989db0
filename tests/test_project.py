import numpy as np
import pytest
import tifffile
import yaml

from tlseg.cli import main
from tlseg.config import ModelConfig
from tlseg.errors import TlsegError
from tlseg.inference import diameter
from tlseg.inference.model import Model
from tlseg.synthetic import synthetic_field
from tlseg.teaching.project import Project
from tlseg.teaching.teach import project_samples, teach
from tlseg.training.targets import UNKNOWN


@pytest.fixture
def proj(tmp_path):
    f = synthetic_field((192, 192), diameter=24, seed=11)
    img = tmp_path / "field.tif"
    tifffile.imwrite(img, f["tl"])
    lab = tmp_path / "labels.tif"
    tifffile.imwrite(lab, f["labels"].astype(np.uint16))
    assert main(["project", "init", str(tmp_path / "p"), "--diameter", "24"]) == 0
    return tmp_path / "p", img, lab, f


def test_roi_add_list_and_versions(proj, capsys):
    p, img, lab, f = proj
    assert main(["roi", "add", str(p), str(img), "--box", "10", "10", "90", "100",
                 "--labels", str(lab)]) == 0
    assert main(["roi", "add", str(p), str(img), "--box", "100", "100", "180", "180",
                 "--labels", str(lab)]) == 0
    project = Project.open(p)
    rois = project.rois()
    assert [r.roi_id for r in rois] == [1, 2]
    np.testing.assert_array_equal(rois[0].labels, f["labels"][10:90, 10:100])
    # a new version of ROI 1 keeps version 1 on disk
    project.add_roi(rois[0].image_id, rois[0].box, np.zeros((80, 90), np.int32), roi_id=1)
    assert sorted(x.name for x in (p / "rois").glob("000001-*.yaml")) == ["000001-v1.yaml", "000001-v2.yaml"]
    assert Project.open(p).rois()[0].version == 2
    full = project.label_image(rois[0].image_id)
    assert (full[0:5] == UNKNOWN).all() and (full[100:180, 100:180] != UNKNOWN).all()
    # the same box added again is a new version of its ROI, not a second ROI
    capsys.readouterr()
    assert main(["roi", "add", str(p), str(img), "--box", "100", "100", "180", "180",
                 "--labels", str(lab)]) == 0
    assert "ROI 2" in capsys.readouterr().out
    assert [(r.roi_id, r.version) for r in Project.open(p).rois()] == [(1, 2), (2, 2)]
    assert main(["roi", "list", str(p)]) == 0
    assert "2 ROIs" in capsys.readouterr().out


def test_roi_bad_input(proj, capsys, tmp_path):
    p, img, lab, f = proj
    assert main(["roi", "add", str(p), str(img), "--box", "0", "0", "0", "10",
                 "--labels", str(lab)]) == 2
    assert "empty or outside" in capsys.readouterr().err
    assert main(["roi", "add", str(p), str(img), "--box", "0", "0", "500", "10",
                 "--labels", str(lab)]) == 2
    small = tmp_path / "small.tif"
    tifffile.imwrite(small, np.zeros((10, 10), np.uint16))
    assert main(["roi", "add", str(p), str(img), "--box", "0", "0", "5", "5",
                 "--labels", str(small)]) == 2
    assert "differs from the image" in capsys.readouterr().err
    project = Project.open(p)
    iid = project.add_image(img)
    with pytest.raises(TlsegError, match="must match"):
        project.add_roi(iid, (0, 0, 10, 10), np.zeros((5, 5), np.int32))
    with pytest.raises(TlsegError, match="integers"):
        project.add_roi(iid, (0, 0, 10, 10), np.zeros((10, 10), np.float32))


def test_a_diameter_that_is_not_positive_is_refused(proj, capsys, tmp_path):
    p, img, lab, _ = proj
    assert main(["project", "init", str(tmp_path / "q"), "--diameter", "-4"]) == 2
    assert not (tmp_path / "q").exists()
    assert main(["roi", "suggest", str(p), str(img), "--diameter", "0"]) == 2
    assert main(["roi", "add", str(p), str(img), "--box", "10", "10", "90", "100",
                 "--labels", str(lab)]) == 0
    assert main(["train", str(p), "--mode", "finetune", "--diameter", "nan",
                 "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all("diameter must be > 0 pixels" in e for e in err)
    assert not (tmp_path / "m").exists()


def test_newer_format_and_corrupt_roi(proj):
    p, img, lab, f = proj
    project = Project.open(p)
    iid = project.add_image(img)
    project.add_roi(iid, (0, 0, 50, 50), f["labels"][:50, :50])
    project.add_roi(iid, (50, 50, 100, 100), f["labels"][50:100, 50:100])
    (p / "rois" / "000001-v1.tif").write_bytes(b"broken")
    errors = []
    rois = project.rois(errors=errors)
    assert [r.roi_id for r in rois] == [2] and "000001-v1" in errors[0]
    meta = yaml.safe_load((p / "project.yaml").read_text())
    meta["format_version"] = 99
    (p / "project.yaml").write_text(yaml.safe_dump(meta))
    with pytest.raises(TlsegError, match="newer"):
        Project.open(p)


def test_empty_training_set(proj, tmp_path, capsys):
    p, *_ = proj
    with pytest.raises(TlsegError, match="empty"):
        project_samples(Project.open(p), Model(ModelConfig(channels=(8, 16))), mode="finetune")
    # the command line says so in one line, with no progress bar drawn before it
    assert main(["train", str(p), "--mode", "finetune", "-o", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "empty" in err[0]


@pytest.mark.parametrize("mode", ["finetune", "retrain"])
def test_teach_records_lineage(proj, tmp_path, mode):
    p, img, lab, f = proj
    project = Project.open(p)
    iid = project.add_image(img)
    project.add_roi(iid, (20, 20, 120, 120), f["labels"][20:120, 20:120])
    base = Model(ModelConfig(name="tiny", channels=(8, 16), flows=True))
    samples = project_samples(project, base, mode=mode)
    # 6 targets plus the base model's fg, distance and 2 flow maps (both modes distil)
    assert samples[0].targets.shape[0] == 10
    assert 0 < float(samples[0].targets[3].mean()) < 0.5  # only the ROI is known
    model = teach(project, base, tmp_path / "m", mode=mode, steps=2)
    card = Model.from_folder(tmp_path / "m").card
    assert card["mode"] == mode and card["roi_set"] == project.roi_set_hash()
    assert card["parent"] == "tiny" and card["n_rois"] == 1
    assert model.config.channels == (8, 16) and model.config.flows
    assert "overrides" not in card
    if mode == "finetune":  # an experiment's changed setting is recorded; a typo is refused
        teach(project, base, tmp_path / "m2", mode=mode, steps=2, distill=0.0)
        assert Model.from_folder(tmp_path / "m2").card["overrides"] == {"distill": 0.0}
        with pytest.raises(TlsegError, match="unknown setting"):
            teach(project, base, tmp_path / "m3", mode=mode, steps=2, distil=0.0)


@pytest.mark.parametrize("box, factor", [((0, 0, 192, 192), 0.8), ((40, 40, 120, 120), 1.0)])
def test_teaching_calibrates_the_diameter_to_the_annotated_cells(proj, tmp_path, monkeypatch,
                                                                box, factor):
    """After teaching, the automatic diameter matches the size of the user's cells when
    enough whole cells are annotated; with a few, the taught model's own reading stands."""
    from tlseg.teaching.teach import PRIOR_CELLS
    from tlseg.training.targets import whole_cell_diameters

    p, img, lab, f = proj
    project = Project.open(p)
    iid = project.add_image(img)
    y0, x0, y1, x1 = box
    project.add_roi(iid, box, f["labels"][y0:y1, x0:x1])
    n_whole = len(whole_cell_diameters(project.label_image(iid)))
    assert (n_whole > PRIOR_CELLS) == (factor != 1.0)
    # the taught model's size head reads 30 px on the image; the project says 24 px
    monkeypatch.setattr(Model, "estimate_diameter",
                        lambda self, image, calibrate=True, **kw: 30.0 if not calibrate else None)
    base = Model(ModelConfig(name="tiny", channels=(8, 16), diameter_calibration=0.85))
    model = teach(project, base, tmp_path / "m", mode="finetune", steps=2)
    saved = Model.from_folder(tmp_path / "m")
    assert model.config.diameter_calibration == pytest.approx(factor)
    assert saved.config.diameter_calibration == pytest.approx(factor)
    record = saved.card["diameter_calibration_from_rois"]
    assert record["images"] == 1 and record["whole_cells"] == [max(n_whole, 1)]
    assert saved.card["roi_set"] == project.roi_set_hash()  # the rest of the card is kept
    # calibrated, the estimate (30 x 0.8) reads the annotated 24 px exactly and is kept;
    # left at 1.0 by the prior, one fixed 24 px predicts the image better
    assert saved.config.taught_diameter == (None if factor != 1.0 else 24)


def test_a_taught_diameter_is_used_unless_one_is_given(tmp_path):
    model = Model(ModelConfig(channels=(8, 16), taught_diameter=24.0))
    model.save(tmp_path / "m")
    saved = Model.from_folder(tmp_path / "m")
    assert saved.config.taught_diameter == 24.0
    image = synthetic_field((96, 96), diameter=24, seed=3)["tl"].astype(np.float32)
    _, details = saved.predict_instances(image)
    assert details["diameter"] == 24.0 and details["diameter_source"] == "taught"
    _, details = saved.predict_instances(image, diameter=30)
    assert details["diameter"] == 30 and details["diameter_source"] == "given"
    with pytest.raises(ValueError, match="taught_diameter"):
        ModelConfig(taught_diameter=0.0)


def test_suggest_picks_uncertain_non_overlapping_boxes(proj, capsys):
    from tlseg.teaching.suggest import suggest_rois, uncertainty_map

    p, img, lab, f = proj
    model = Model(ModelConfig(channels=(8, 16)))
    image = f["tl"].astype(np.float32)
    u, d = uncertainty_map(model, image, diameter=24)
    assert u.shape == image.shape and d == 24
    picks = suggest_rois(model, image, n=3, size=64, diameter=24, exclude=[(0, 0, 64, 64)])
    assert len(picks) == 3 and picks[0]["score"] >= picks[-1]["score"]
    boxes = [(0, 0, 64, 64)] + [q["box"] for q in picks]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]
    # the most uncertain box really has the highest mean uncertainty of the candidates
    y0, x0, y1, x1 = picks[0]["box"]
    assert u[y0:y1, x0:x1].mean() == pytest.approx(picks[0]["score"], rel=1e-3)
    model.save(p.parent / "tiny")
    assert main(["roi", "suggest", str(p), str(img), "-n", "2", "--size", "64",
                 "--model", str(p.parent / "tiny"), "--diameter", "24"]) == 0
    assert capsys.readouterr().out.count("\n") == 3


def test_suggest_across_images_takes_each_images_best_box_first(proj, tmp_path, capsys):
    from tlseg.teaching.suggest import suggest_across, suggest_rois

    p, img, lab, f = proj
    model = Model(ModelConfig(channels=(8, 16)))
    other = synthetic_field((192, 192), diameter=24, seed=12)["tl"].astype(np.float32)
    images = [("a", f["tl"].astype(np.float32)), ("b", other)]
    alone = {k: suggest_rois(model, im, n=2, size=64, diameter=24) for k, im in images}
    picks = suggest_across(model, images, n=3, size=64, diameter=24)
    # round 1 holds the best box of each image, most uncertain first; round 2 follows
    first = sorted([dict(alone[k][0], key=k) for k in alone], key=lambda q: -q["score"])
    assert [(q["key"], q["box"]) for q in picks[:2]] == [(q["key"], q["box"]) for q in first]
    assert picks[2]["round"] == 2
    assert (picks[2]["key"], picks[2]["box"]) in [(k, alone[k][1]["box"]) for k in alone]
    # annotated boxes are not suggested again
    done = {"a": [alone["a"][0]["box"]]}
    again = suggest_across(model, images, n=2, size=64, diameter=24, exclude=done)
    assert all(q["box"] != alone["a"][0]["box"] for q in again if q["key"] == "a")
    img2 = tmp_path / "other.tif"
    tifffile.imwrite(img2, other)
    model.save(tmp_path / "tiny2")
    assert main(["roi", "suggest", str(p), str(img), str(img2), "-n", "2", "--size", "64",
                 "--model", str(tmp_path / "tiny2"), "--diameter", "24"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == 2 and len({r.split()[1] for r in rows}) == 2  # one box per image


def test_suggestions_fill_up_from_images_with_room_left(tmp_path, capsys):
    from tlseg.teaching.suggest import suggest_across

    model = Model(ModelConfig(channels=(8, 16)))
    small = synthetic_field((64, 64), diameter=24, seed=3)["tl"].astype(np.float32)
    big = synthetic_field((192, 192), diameter=24, seed=4)["tl"].astype(np.float32)
    picks = suggest_across(model, [("small", small), ("big", big)], n=4, size=64, diameter=24)
    # one 64 px box fits in the small image; the big one gives the other three
    assert [q["key"] for q in picks].count("small") == 1 and len(picks) == 4
    # more than fit: all that fit, and the CLI says why there are fewer
    assert len(suggest_across(model, [("small", small)], n=3, size=64, diameter=24)) == 1
    tifffile.imwrite(tmp_path / "small.tif", small)
    model.save(tmp_path / "tiny")
    assert main(["project", "init", str(tmp_path / "p")]) == 0
    capsys.readouterr()
    assert main(["roi", "suggest", str(tmp_path / "p"), str(tmp_path / "small.tif"), "-n", "3",
                 "--size", "64", "--model", str(tmp_path / "tiny"), "--diameter", "24"]) == 0
    out = capsys.readouterr()
    assert len(out.out.splitlines()) == 2 and "only 1 box of 64 px fit" in out.err


def test_roi_add_from_imagej_zip_and_export(proj, tmp_path, capsys):
    from tlseg.io.imagej import labels_to_imagej

    p, img, lab, f = proj
    labels_to_imagej(f["labels"], tmp_path / "RoiSet.zip")
    assert main(["roi", "add", str(p), str(img), "--box", "0", "0", "96", "96",
                 "--labels", str(tmp_path / "RoiSet.zip")]) == 0
    assert main(["roi", "export", str(p), str(tmp_path / "exp")]) == 0
    out = tifffile.imread(tmp_path / "exp" / "field_labels.tif")
    assert out.shape == f["labels"].shape and out[:96, :96].max() > 3 and out[96:, 96:].max() == 0
    assert (tmp_path / "exp" / "field_RoiSet.zip").stat().st_size > 100
    # an exported label image may have been edited since: a second export keeps it
    tifffile.imwrite(tmp_path / "exp" / "field_labels.tif", np.zeros((4, 4), np.uint16))
    capsys.readouterr()
    assert main(["roi", "export", str(p), str(tmp_path / "exp")]) == 2
    assert "already holds field_labels.tif, field_RoiSet.zip" in capsys.readouterr().err
    assert tifffile.imread(tmp_path / "exp" / "field_labels.tif").shape == (4, 4)
    assert main(["roi", "export", str(p), str(tmp_path / "exp"), "--overwrite"]) == 0
    assert tifffile.imread(tmp_path / "exp" / "field_labels.tif").shape == f["labels"].shape


@pytest.mark.slow
def test_finetune_on_a_background_only_roi_keeps_finding_cells(tmp_path):
    """A ROI of empty background must not teach the model that nothing is a cell.

    Fine-tuning distils the base model's predictions outside the ROIs; without that the
    same 100 steps left tl-cells finding 0 of this field's 12 cells (measured).
    """
    f = synthetic_field((256, 256), diameter=30, seed=5, n_cells=12)
    img = tmp_path / "a.tif"
    tifffile.imwrite(img, f["tl"])
    free = [(y, x) for y in range(0, 161, 8) for x in range(0, 161, 8)
            if f["labels"][y:y + 96, x:x + 96].max() == 0]
    y, x = free[0]
    project = Project.init(tmp_path / "p")
    project.add_roi(project.add_image(img), (y, x, y + 96, x + 96), np.zeros((96, 96), np.int32))
    base = Model.from_pretrained("tl-cells")
    before = base.predict_instances(f["tl"], diameter=30)[1]["n_cells"]
    tuned = teach(project, base, tmp_path / "m", mode="finetune", steps=100, diameter=30)
    after = tuned.predict_instances(f["tl"], diameter=30)[1]["n_cells"]
    assert before >= 10 and after >= 0.8 * before


def test_representative_suggestions_skip_what_is_already_annotated(proj):
    from tlseg.teaching.suggest import suggest_across, suggest_representative

    p, img, lab, f = proj
    model = Model(ModelConfig(channels=(8, 16)))
    image = f["tl"].astype(np.float32)
    other = synthetic_field((192, 192), diameter=24, seed=5, modality="brightfield")
    # "copy" is the same field as "a": its region matching an annotated box of "a" adds
    # nothing the annotation does not already show
    images = [("a", image), ("copy", image.copy()), ("b", other["tl"].astype(np.float32))]
    best = suggest_across(model, images[:1], n=1, size=64, diameter=24)[0]["box"]
    done = {"a": [best]}
    plain = suggest_across(model, images, n=3, size=64, diameter=24, exclude=done)
    assert ("copy", best) in [(q["key"], q["box"]) for q in plain]  # uncertainty alone
    picks = suggest_representative(model, images, n=3, size=64, diameter=24, exclude=done)
    assert len(picks) == 3 and [q["round"] for q in picks] == [1, 2, 3]
    assert ("copy", best) not in [(q["key"], q["box"]) for q in picks]
    assert all(q["box"] != best for q in picks if q["key"] == "a")
    assert {q["key"] for q in picks} <= {"a", "copy", "b"}


def test_tlseg_train_project_writes_a_model_that_tlseg_segment_applies(proj, tmp_path, capsys,
                                                                       monkeypatch):
    p, img, lab, f = proj
    # an untrained size head finds no cells (whether it does is up to its random weights)
    monkeypatch.setattr(diameter, "size_head_diameter", lambda model, image, **kw: None)
    assert main(["roi", "add", str(p), str(img), "--box", "0", "0", "192", "192",
                 "--labels", str(lab)]) == 0
    Model(ModelConfig(name="tiny", channels=(8, 16))).save(tmp_path / "tiny")
    capsys.readouterr()
    assert main(["train", str(p), "--mode", "finetune", "--base", str(tmp_path / "tiny"),
                 "--steps", "2", "-o", str(tmp_path / "taught")]) == 0
    out = capsys.readouterr().out
    assert "finetuned model written to" in out
    taught = Model.from_folder(tmp_path / "taught").config.taught_diameter
    # the project says 24 px; the model's estimate finds nothing, so 24 px is kept
    assert taught == 24 and "segments at 24 px" in out
    assert main(["segment", str(img), "-o", str(tmp_path / "seg"),
                 "--model", str(tmp_path / "taught")]) == 0
    assert "taught" in capsys.readouterr().out
