"""`tlseg export`: the ONNX network gives PyTorch's maps, its JSON holds the preprocessing,
and the bioimage.io package passes bioimage.io's own test without the network."""

import json
import socket
import zipfile

import numpy as np
import pytest
import torch
import yaml

import tlseg
from tlseg.cli import main
from tlseg.cli.main import EXPORT_FORMATS
from tlseg.config import ModelConfig
from tlseg.inference import bioimageio, onnx_export
from tlseg.inference.export import FORMATS
from tlseg.inference.onnx_export import TOLERANCE, example_input


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails: the export and bioimage.io's test must
    work offline."""
    def refuse(*args, **kwargs):
        raise OSError("network access in a test that must work offline")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


@pytest.fixture
def tiny_model():
    """An untrained small network: exports in a second (BatchNorm statistics at their
    defaults still make a real test of the graph)."""
    torch.manual_seed(0)
    model = tlseg.Model(ModelConfig(name="tiny", channels=(8, 16), flows=True))
    for m in model.net.modules():  # statistics away from 0/1, as after training
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return model


def _onnx_vs_torch(model, path, shapes) -> float:
    ort = pytest.importorskip("onnxruntime")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for i, shape in enumerate(shapes):
        x = example_input(model, shape, seed=10 + i)
        assert x.shape == (1, 1, *shape) and abs(float(np.median(x))) < 0.1  # normalised
        with torch.inference_mode():
            expected = model.net(torch.from_numpy(x)).numpy()
        got = session.run(["maps"], {"image": x})[0]
        assert got.shape == (1, model.config.n_outputs, *shape)
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def test_export_help_and_formats(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["export", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "--format" in out and "bioimageio" in out
    assert EXPORT_FORMATS == FORMATS


def test_bad_model_name_is_a_one_line_error(tmp_path, capsys):
    assert main(["export", "no-such-model", "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "no-such-model" in err and "\n" not in err
    assert not (tmp_path / "out").exists()
    with pytest.raises(tlseg.TlsegError, match="format"):
        tlseg.export_model("nuclei", tmp_path / "x", format="tflite")


def test_onnx_gives_pytorchs_maps_and_the_json_holds_the_preprocessing(tiny_model, tmp_path):
    pytest.importorskip("onnx")
    path = tlseg.export_model(tiny_model, tmp_path / "tiny.onnx")
    assert path == tmp_path / "tiny.onnx"
    # dynamic height and width: square, non-square and larger than the export's example
    assert _onnx_vs_torch(tiny_model, path, [(256, 256), (192, 320), (64, 96)]) <= TOLERANCE
    info = json.loads(path.with_suffix(".json").read_text())
    pre = info["preprocessing"]
    assert (pre["canonical_diameter"], pre["flatfield"], pre["background_sigma"]) == (30.0, "divide", 3.0)
    assert pre["background_sigma_px"] == 90.0 and "median" in pre["normalisation"]
    assert info["input"]["size_multiple_of"] == tiny_model.net.stride == 4
    assert [c["name"] for c in info["output"]["channels"]] == [
        "foreground", "distance", "log2_size", "flow_y", "flow_x"]
    assert info["instances"]["fg_threshold"] == tiny_model.config.instances.fg_threshold
    assert info["check"]["passed"] and info["check"]["max_abs_difference"] <= TOLERANCE


def test_onnx_that_does_not_match_is_not_written(tiny_model, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    monkeypatch.setattr(onnx_export, "TOLERANCE", -1.0)  # every file now "differs"
    with pytest.raises(tlseg.TlsegError, match="differ"):
        tlseg.export_model(tiny_model, tmp_path / "tiny.onnx")
    assert list(tmp_path.iterdir()) == []


def test_licence_is_bsd_only_when_every_data_set_is_cc0():
    assert bioimageio._licence({"licences": {"bbbc039": "CC0 1.0 (BBBC039v1)"}}) == "BSD-3-Clause"
    tl = tlseg.load_model("tl-cells").card
    assert bioimageio._licence(tl) == "LICENSE.md"
    text = bioimageio._licence_text(tl)
    assert "research use" in text and "CC BY 4.0" in text and "BSD-3-Clause" in text
    assert bioimageio._licence({}) == "LICENSE.md"
    assert "ask the model's author" in bioimageio._licence_text({})


@pytest.mark.parametrize("name", ["tl-cells", "nuclei"])
def test_shipped_models_export_to_onnx_with_pytorchs_maps(name, tmp_path, capsys, no_network):
    pytest.importorskip("onnx")
    assert main(["export", name, "-o", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "max abs difference" in printed and f"{name}.json" in printed
    model = tlseg.load_model(name)
    assert _onnx_vs_torch(model, tmp_path / f"{name}.onnx", [(256, 256), (160, 288)]) <= TOLERANCE


#: bioimage.io's torchscript test loads the weights with torch.jit.load, deprecated in torch 2.13
JIT_DEPRECATED = "ignore:`torch.jit.load` is deprecated:DeprecationWarning"


def _bioimageio_test(source, work) -> None:
    core = pytest.importorskip("bioimageio.core")
    summary = core.test_model(str(source), working_dir=work)
    assert summary.status == "passed", summary.format()


@pytest.mark.slow
@pytest.mark.filterwarnings(JIT_DEPRECATED)
def test_bioimageio_package_passes_bioimageios_test_offline(tmp_path, capsys, no_network):
    out = tmp_path / "package"
    assert main(["export", "tl-cells", "-o", str(out), "--format", "bioimageio"]) == 0
    assert "bioimageio test" in capsys.readouterr().out
    rdf = yaml.safe_load((out / "rdf.yaml").read_text())
    assert set(rdf["weights"]) == {"pytorch_state_dict", "torchscript", "onnx"}
    assert rdf["license"]["source"] == "LICENSE.md"
    assert (out / "README.md").read_text().startswith("# Model card: `tl-cells`")
    x = np.load(out / "test_input.npy")
    np.testing.assert_allclose(np.load(out / "test_output.npy"),
                               tlseg.load_model("tl-cells").net(torch.from_numpy(x)).detach().numpy(),
                               atol=1e-5)
    _bioimageio_test(out / "rdf.yaml", tmp_path)


@pytest.mark.slow
@pytest.mark.filterwarnings(JIT_DEPRECATED)
def test_bioimageio_zip_of_a_trained_folder_passes_too(tiny_model, tmp_path, no_network):
    tiny_model.save(tmp_path / "tiny", card={"licences": {"mine": "CC0 1.0"}},
                    card_text="# Model card: `tiny`\n")
    path = tlseg.export_model(tmp_path / "tiny", tmp_path / "tiny.zip", format="bioimageio")
    with zipfile.ZipFile(path) as z:
        assert {"rdf.yaml", "tiny.onnx", "tiny.json", "README.md"} <= set(z.namelist())
        assert yaml.safe_load(z.read("rdf.yaml"))["license"] == "BSD-3-Clause"
    _bioimageio_test(path, tmp_path)
