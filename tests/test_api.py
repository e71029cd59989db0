"""The public API (``import tlseg``): its promises, the model folder, the import layers,
and the command line as a thin layer over the same calls."""

import ast
import graphlib
import json
import logging
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
import torch
import yaml

import tlseg
from tlseg.cli import main
from tlseg.cli.main import _build_parser
from tlseg.config import (
    InstanceConfig,
    ModelConfig,
    PlateConfig,
    SegmentConfig,
    TrainConfig,
)
from tlseg.synthetic import synthetic_field


def test_import_is_light_and_every_public_name_resolves():
    code = "import tlseg, sys; assert 'torch' not in sys.modules, 'import tlseg loads torch'"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert set(tlseg._API) | set(tlseg._MODULES) <= set(tlseg.__all__)
    assert [name for name in tlseg.__all__ if not hasattr(tlseg, name)] == []
    with pytest.raises(AttributeError, match="no_such_name"):
        tlseg.no_such_name


def test_model_segment_gives_the_masks_tlseg_segment_writes(tmp_path):
    field = synthetic_field((192, 192), diameter=30, seed=21)
    tifffile.imwrite(tmp_path / "field.tif", field["tl"])
    out = tmp_path / "out"
    assert main(["segment", str(tmp_path / "field.tif"), "-o", str(out), "--diameter", "30"]) == 0
    labels = tlseg.load_model("tl-cells").segment(field["tl"], diameter=30)
    assert labels.max() > 5
    np.testing.assert_array_equal(labels, tifffile.imread(out / "field_masks.tif"))
    assert pd.read_csv(out / "counts.csv")["n_cells"].tolist() == [labels.max()]


def test_evaluate_pools_like_tlseg_evaluate(tmp_path):
    names = {"AP50": "ap50", "AP75": "ap75", "mAP": "map", "precision": "precision",
             "recall": "recall", "f1": "f1", "n_true": "n_true", "n_pred": "n_pred"}
    a = synthetic_field((128, 128), diameter=24, seed=1)["labels"]
    b = synthetic_field((128, 128), diameter=24, seed=2)["labels"]
    preds = [np.where(np.isin(a, [1, 2, 3]), 0, a),  # three cells missed
             np.roll(b, 4, axis=1)]  # every cell shifted: matched at IoU 0.5, not 0.75
    for d in ("pred", "gt"):
        (tmp_path / d).mkdir()
    for stem, pred, true in (("a", preds[0], a), ("b", preds[1], b)):
        tlseg.write_labels(tmp_path / "pred" / f"{stem}_masks.tif", pred)
        tlseg.write_labels(tmp_path / "gt" / f"{stem}.tif", true)
    assert main(["evaluate", str(tmp_path / "pred"), str(tmp_path / "gt"),
                 "--json", str(tmp_path / "scores.json")]) == 0
    overall = json.loads((tmp_path / "scores.json").read_text())["overall"]
    scores = tlseg.evaluate(preds, [a, b])
    assert set(scores) == set(names)
    assert scores == pytest.approx({k: overall[v] for k, v in names.items()})
    # the matches of both images are pooled, not the two images' scores averaged
    alone = [tlseg.evaluate(p, t)["AP75"] for p, t in zip(preds, [a, b])]
    assert 0 < scores["AP75"] < np.mean(alone) and scores["AP50"] < 1


def test_segment_folder_returns_the_counts_and_logs_instead_of_printing(tmp_path, caplog,
                                                                        capsys):
    caplog.set_level(logging.INFO, logger="tlseg")
    folder = tmp_path / "images"
    folder.mkdir()
    tifffile.imwrite(folder / "a.tif", synthetic_field((160, 160), diameter=30, seed=2)["tl"])
    (folder / "broken.tif").write_bytes(b"II*\x00garbage")
    out = tmp_path / "out"
    counts = tlseg.segment_folder(folder, out, diameter=30)
    assert capsys.readouterr().out == ""
    rows = counts.set_index("image")
    assert rows["status"].to_dict() == {"a.tif": "ok", "broken.tif": "error"}
    error = rows.loc["broken.tif", "error"]
    assert "broken.tif" in error and "\n" not in error
    n = int(tifffile.imread(out / "a_masks.tif").max())
    assert n > 3 and rows.loc["a.tif", "n_cells"] == n
    assert len(pd.read_csv(out / "a_cells.csv")) == n
    on_disk = pd.read_csv(out / "counts.csv", keep_default_na=False)
    assert on_disk[["image", "status"]].equals(counts[["image", "status"]])
    logged = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert any(level == "ERROR" and "broken.tif" in msg for level, msg in logged)
    assert any(level == "INFO" and msg.startswith(f"a.tif: {n} cells") for level, msg in logged)


def test_model_folder_keeps_tuning_apart_and_reads_the_single_file_layout(tmp_path):
    config = ModelConfig(name="tiny", channels=(8, 16), diameter_calibration=0.8,
                         instances=InstanceConfig(fg_threshold=0.4))
    tlseg.Model(config).save(tmp_path / "m")
    network = yaml.safe_load((tmp_path / "m" / "config.yaml").read_text())
    tuning = yaml.safe_load((tmp_path / "m" / "tuning.yaml").read_text())
    assert network["format"] == 1 and network["channels"] == [8, 16]
    assert "instances" not in network and "diameter_calibration" not in network
    assert tuning["instances"]["fg_threshold"] == 0.4 and tuning["diameter_calibration"] == 0.8
    assert tlseg.load_model(tmp_path / "m").config == config
    # tlseg 0.1 wrote every setting into config.yaml, without a format
    old = tmp_path / "old"
    old.mkdir()
    (old / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    shutil.copy(tmp_path / "m" / "weights.pt", old)
    assert tlseg.load_model(old).config == config
    (old / "config.yaml").write_text(yaml.safe_dump({**network, "format": 99}))
    with pytest.raises(tlseg.TlsegError, match="newer than this tlseg reads"):
        tlseg.load_model(old)


def test_save_tuning_leaves_the_network_files_alone(tmp_path):
    model = tlseg.Model(ModelConfig(name="tiny", channels=(8, 16)))
    model.save(tmp_path / "m")
    network = {f: (tmp_path / "m" / f).read_bytes() for f in ("config.yaml", "weights.pt")}
    tuned = tlseg.Model(replace(model.config, diameter_calibration=1.2,
                                instances=InstanceConfig(seed_threshold=0.6)), model.net)
    tuned.save_tuning(tmp_path / "m")
    assert {f: (tmp_path / "m" / f).read_bytes() for f in network} == network
    again = tlseg.load_model(tmp_path / "m").config
    assert again == tuned.config and again != model.config


SRC = Path(tlseg.__file__).parent
#: stages in the order the data travels: a module imports only its own stage or lower
#: ones (STYLE.md); the root's public API is above them all
LAYERS = {"errors": 0, "config": 0, "synthetic": 0, "io": 1, "inference": 2, "analysis": 3,
          "training": 4, "teaching": 5, "plate": 6, "cli": 7, "napari": 7}


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _tlseg_imports(path: Path) -> set[str]:
    """The tlseg modules and packages ``path`` imports: at the top, inside functions and
    under TYPE_CHECKING alike."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "tlseg"}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            if target.split(".")[0] != "tlseg":
                continue
            for a in node.names:  # `from . import edit` imports the module edit
                sub = SRC.parent.joinpath(*target.split("."), a.name)
                is_module = sub.with_suffix(".py").is_file() or sub.is_dir()
                found.add(f"{target}.{a.name}" if is_module else target)
    return found - {name}


def _may_import(module: str, dep: str) -> bool:
    if dep == "tlseg":  # the public API: for the command line and the napari plugin
        return module.split(".")[1] in ("cli", "napari")
    return LAYERS[dep.split(".")[1]] <= LAYERS[module.split(".")[1]]


def test_lower_stages_never_import_higher_ones_and_nothing_imports_in_a_cycle():
    graph = {_module_name(p): _tlseg_imports(p) for p in SRC.rglob("*.py")}
    # the parser sees relative imports, and those made only for type checkers
    assert "tlseg.config" in graph["tlseg.inference.model"]
    assert "tlseg.teaching.edit" in graph["tlseg"]
    assert [m for m in graph if m != "tlseg" and m.split(".")[1] not in LAYERS] == []
    upward = [f"{m} -> {d}" for m, deps in graph.items() if m != "tlseg" for d in deps
              if not _may_import(m, d)]
    assert sorted(upward) == []
    try:
        tuple(graphlib.TopologicalSorter(graph).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_command_line_defaults_are_the_settings_defaults():
    parser = _build_parser()
    train = parser.parse_args(["train", "data", "-o", "model"])
    tc, mc = TrainConfig(), ModelConfig()
    assert (train.epochs, train.lr, train.batch_size) == (tc.epochs, tc.lr, tc.batch_size)
    assert tuple(train.channels) == mc.channels
    assert train.canonical_diameter == mc.canonical_diameter
    segment = parser.parse_args(["segment", "images", "-o", "out"])
    assert (segment.tile, segment.model) == (SegmentConfig().tile, SegmentConfig().model)
    run = parser.parse_args(["plate", "run", "plate", "-o", "out", "--tl-channel", "w1"])
    pc = PlateConfig(tl_channel="w1")
    assert (run.model, run.nuclei_model) == (pc.model, pc.nuclei_model)


@pytest.mark.slow
def test_train_then_tune_rewrites_only_the_tuning(data_dir, tmp_path):
    out = tmp_path / "m"
    model = tlseg.train([data_dir], out, epochs=1, steps_per_epoch=2, batch_size=2, crop=64,
                        channels=(8, 16), canonical_diameter=20)
    again = tlseg.load_model(out)
    assert again.config == model.config and again.config.channels == (8, 16)
    image = synthetic_field((64, 64), diameter=20, seed=3)["tl"]
    saved = again.net.state_dict()
    assert all(torch.equal(w, saved[k]) for k, w in model.net.state_dict().items())
    # same weights; oneDNN may pick another convolution algorithm on a first call (~1e-5)
    np.testing.assert_allclose(again.predict_maps(image), model.predict_maps(image), atol=1e-4)
    files = sorted(p.name for p in out.iterdir())
    network = {f: (out / f).read_bytes() for f in ("config.yaml", "weights.pt")}
    tuned = tlseg.tune(out, [data_dir])
    assert tlseg.load_model(out).config == tuned.config
    assert tlseg.load_model(out).card["retuned"]["by"] == "tlseg.tune"
    assert main(["tune", str(out), str(data_dir)]) == 0
    assert sorted(p.name for p in out.iterdir()) == files
    assert {f: (out / f).read_bytes() for f in network} == network


@pytest.mark.slow
def test_teach_takes_a_project_folder_and_a_model_folder(tmp_path):
    f = synthetic_field((128, 128), diameter=24, seed=11)
    tifffile.imwrite(tmp_path / "field.tif", f["tl"])
    project = tlseg.Project.init(tmp_path / "p", diameter=24)
    image_id = project.add_image(tmp_path / "field.tif")
    project.add_roi(image_id, (10, 10, 110, 110), f["labels"][10:110, 10:110])
    tlseg.Model(ModelConfig(name="tiny", channels=(8, 16))).save(tmp_path / "tiny")
    taught = tlseg.teach(tmp_path / "p", tmp_path / "tiny", tmp_path / "taught",
                         mode="finetune", steps=2)
    saved = tlseg.load_model(tmp_path / "taught")
    assert saved.config == taught.config and saved.config.channels == (8, 16)
    assert (saved.card["parent"], saved.card["mode"], saved.card["n_rois"]) == (
        "tiny", "finetune", 1)


@pytest.mark.slow
def test_run_plate_gives_the_wells_of_tlseg_plate_run(plate, tmp_path):
    api, cli = tmp_path / "api", tmp_path / "cli"
    result = tlseg.run_plate(plate["plate"], api, plate_map=plate["plate_map"], workers=1,
                             threads=1, tl_channel="w1", nuclei_channel="w2", diameter=28,
                             nuclei_diameter=14)
    assert result["processed"] == 8 and result["failed"] == []
    wells = (api / "wells.csv").read_bytes()
    assert tlseg.validate_plate(api)["wells"].equals(result["wells"])
    assert (api / "wells.csv").read_bytes() == wells
    assert main(["plate", "run", str(plate["plate"]), "-o", str(cli), "--tl-channel", "w1",
                 "--nuclei-channel", "w2", "--plate-map", str(plate["plate_map"]),
                 "--workers", "1", "--threads", "1", "--diameter", "28",
                 "--nuclei-diameter", "14"]) == 0
    a, b = pd.read_csv(api / "wells.csv"), pd.read_csv(cli / "wells.csv")
    # two runs' float sums can differ in the last bits (oneDNN), the counts may not
    counts = ["well"] + [c for c in a.columns if c.startswith("n_")]
    pd.testing.assert_frame_equal(a[counts], b[counts])
    pd.testing.assert_frame_equal(a, b, rtol=1e-3)


def test_root_functions_refuse_mismatched_or_absurd_arguments_in_one_line(tmp_path):
    field = synthetic_field((96, 96), n_cells=4, diameter=24, seed=2)
    image, labels = field["tl"], field["labels"]
    calls = {
        "measure_cells: channel 'tl' has shape": lambda: tlseg.measure_cells(
            labels[:50], {"tl": image}),
        "measure_cells: nuclei has shape": lambda: tlseg.measure_cells(
            labels, {"tl": image}, nuclei=labels[:50]),
        "as a dict of name to image": lambda: tlseg.measure_cells(labels, image),
        "write_overlay: image of shape": lambda: tlseg.write_overlay(
            tmp_path / "o.png", image, labels[:50]),
        "--size must be at least 32": lambda: tlseg.suggest_rois(None, image, size=0),
        "--steps must be at least 1": lambda: tlseg.calibrate(
            tmp_path, tmp_path / "m", tl_channel="w1", nuclei_channel="w2", steps=0),
        "needs --size of at least 32": lambda: tlseg.make_demo_plate(tmp_path / "d", size=0),
        "2-D integer label image": lambda: tlseg.labels_to_imagej(
            labels.astype(float), tmp_path / "r.zip"),
        "threads must be a whole number": lambda: tlseg.set_threads(0),
    }
    for message, call in calls.items():
        with pytest.raises(tlseg.TlsegError, match=message):
            call()
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    table = tlseg.measure_cells(labels, {"tl": image}, nuclei=labels)
    assert len(table) == labels.max() and (table["n_nuclei"] == 1).all()
