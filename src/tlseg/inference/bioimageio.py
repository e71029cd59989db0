"""A model as a BioImage Model Zoo package (``rdf.yaml``, format 0.5).

The package holds the weights as a PyTorch state dict with the network's source, as
TorchScript and as ONNX (:func:`tlseg.inference.onnx_export.export_onnx`, with its
check), a test input and output made by tlseg, the model card as documentation, the
licence, and tlseg's preprocessing as JSON
(:func:`tlseg.inference.onnx_export.preprocessing`): its input and output are those of
the ONNX file. Needs the ``export`` extra.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import warnings
import zipfile
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
import yaml

from ..errors import TlsegError
from . import network
from .model import Model
from .onnx_export import _CHANNELS, OPSET, _require, example_input, export_onnx

#: side of the package's test image (canonical-scale pixels)
TEST_SIZE = 256


def export_bioimageio(model: Model, out, *, folder=None) -> Path:
    """Write a BioImage Model Zoo package (rdf.yaml, format 0.5) to the folder ``out``,
    or to the zip file ``out`` when it ends in ``.zip``.

    The package's input and output are those of the ONNX file (:func:`export_onnx`):
    the normalised canonical-scale image in, the raw maps out. bioimage.io's own
    preprocessing operations cannot express tlseg's shading correction, so it is
    described in the package (``NAME.json``, the description) and tools apply it first.
    ``folder``, the model folder, gives the model card (its README.md).
    """
    _require("onnx", "onnxruntime")  # before anything is written
    out = Path(out)
    if out.suffix == ".zip":
        with tempfile.TemporaryDirectory() as tmp:
            package = export_bioimageio(model, Path(tmp) / "package", folder=folder)
            out.parent.mkdir(parents=True, exist_ok=True)
            with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
                for f in sorted(package.iterdir()):
                    z.write(f, f.name)
        return out
    if out.exists() and any(out.iterdir()):
        raise TlsegError(f"{out}: folder exists and is not empty; give a new folder")
    out.mkdir(parents=True, exist_ok=True)
    cfg, card = model.config, model.card
    net = model.net.eval()
    name = cfg.name

    x = example_input(model, (TEST_SIZE, TEST_SIZE), seed=0)
    with torch.inference_mode():
        y = net(torch.from_numpy(x)).numpy()
    np.save(out / "test_input.npy", x)
    np.save(out / "test_output.npy", y)
    torch.save(net.state_dict(), out / "weights.pt")
    shutil.copyfile(network.__file__, out / "network.py")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit is deprecated in favour of torch.export
        torch.jit.save(torch.jit.trace(net, torch.from_numpy(x)), str(out / "weights_torchscript.pt"))
    export_onnx(model, out / f"{name}.onnx")  # with its check, and the tlseg json beside it

    (out / "README.md").write_text(_model_card(model, folder))
    licence = _licence(card)
    if licence == "LICENSE.md":
        (out / licence).write_text(_licence_text(card))

    def file(name: str) -> dict:
        return {"source": name, "sha256": _sha256(out / name)}

    space = [{"type": "space", "id": a, "size": {"min": net.stride, "step": net.stride}}
             for a in ("y", "x")]
    outputs_space = [{"type": "space", "id": a, "size": {"tensor_id": "image", "axis_id": a}}
                     for a in ("y", "x")]
    torch_version = torch.__version__.split("+")[0]
    rdf = {
        "type": "model",
        "format_version": "0.5.4",
        "name": f"tlseg {name}",
        "description": _description(model),
        "authors": card.get("authors") or [{"name": "tlseg contributors"}],
        "cite": card.get("cite") or [],
        "license": file(licence) if licence == "LICENSE.md" else licence,
        "documentation": "README.md",
        "tags": ["tlseg", "unet", "2d", "instance-segmentation", "cells",
                 *card.get("modalities", [])],
        "version": version("tlseg"),
        "inputs": [{
            "id": "image",
            # at most 128 characters: the steps are in NAME.json and the README
            "description": f"gray image, cells {cfg.canonical_diameter:g} px across, "
                           f"shading-corrected and normalised as tlseg does ({name}.json)",
            "axes": [{"type": "batch"},
                     {"type": "channel", "channel_names": ["gray"]}, *space],
            "test_tensor": file("test_input.npy"),
            "data": {"type": "float32"},
        }],
        "outputs": [{
            "id": "maps",
            "description": "raw maps: foreground and distance logits, log2 cell size"
                           + (", flow y and x" if cfg.flows else "") + f" ({name}.json)",
            "axes": [{"type": "batch"},
                     {"type": "channel",
                      "channel_names": [n for n, _ in _CHANNELS[: cfg.n_outputs]]},
                     *outputs_space],
            "test_tensor": file("test_output.npy"),
            "data": {"type": "float32"},
        }],
        "weights": {
            "pytorch_state_dict": {
                **file("weights.pt"),
                "architecture": {**file("network.py"), "callable": "UNet",
                                 "kwargs": {"channels": list(cfg.channels),
                                            "n_outputs": cfg.n_outputs}},
                "pytorch_version": torch_version,
            },
            "torchscript": {**file("weights_torchscript.pt"),
                            "pytorch_version": torch_version,
                            "parent": "pytorch_state_dict"},
            "onnx": {**file(f"{name}.onnx"), "opset_version": OPSET,
                     "parent": "pytorch_state_dict"},
        },
        "attachments": [file(f"{name}.json")],
    }
    (out / "rdf.yaml").write_text(yaml.safe_dump(rdf, sort_keys=False, allow_unicode=True))
    return out


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _description(model: Model) -> str:
    card = model.card
    what = card.get("description") or f"tlseg model {model.config.name}"
    return (f"{what}. tlseg U-Net (tlseg.inference.network.UNet); input: the image at "
            f"the canonical cell scale, shading-corrected and normalised by tlseg's "
            f"preprocessing ({model.config.name}.json), output: raw maps; instances are "
            "made by tlseg.")


def _model_card(model: Model, folder: Path | None) -> str:
    """The model card (the model folder's README.md) with a note on the package."""
    card = folder / "README.md" if folder is not None else None
    text = card.read_text() if card is not None and card.is_file() \
        else f"# Model card: `{model.config.name}`\n\n{model.card.get('description', '')}\n"
    return text.rstrip() + "\n\n" + _PACKAGE_NOTE.format(d=model.config.canonical_diameter,
                                                      name=model.config.name)


def _licence(card: dict) -> str:
    """The package's licence: tlseg's BSD-3-Clause when every training data set is CC0
    (nothing then restricts the weights), else a licence file that names each data
    set's terms (a model trained on research-use data cannot honestly carry one SPDX
    identifier)."""
    data = card.get("licences") or {}
    if data and all(str(v).startswith("CC0") for v in data.values()):
        return "BSD-3-Clause"
    return "LICENSE.md"


def _licence_text(card: dict) -> str:
    data = card.get("licences") or {}
    rows = "\n".join(f"- {k}: {v}" for k, v in data.items()) or \
        "- not recorded in the model's card.yaml: ask the model's author"
    return (
        "# Licence\n\n"
        "The network's code (network.py) and tlseg are BSD-3-Clause.\n\n"
        "The weights were learned from the training data below, each under its own "
        "terms. They ship with tlseg under BSD-3-Clause, but some of those terms (e.g. "
        "research use only, attribution) may bear on what you may do with the weights: "
        "check them before any use other than research, and cite the data sets.\n\n"
        f"{rows}\n"
    )


_PACKAGE_NOTE = """\
## This bioimage.io package

Exported by `tlseg export --format bioimageio`. The package holds the network only:

- input `image`: (1, 1, H, W) float32, H and W multiples of 32: the gray image rescaled
  so that cells are {d:g} px across and normalised by tlseg (shading correction, then
  (x - median) / (p99.5 - p0.5)); `{name}.json` lists the steps;
- output `maps`: the raw maps (1, C, H, W): foreground and distance logits (apply a
  sigmoid), log2 cell size and, for models with flows, flow y and x;
- instances (cells) are made from the maps by tlseg
  (`tlseg.inference.postprocess.instances_from_maps`, settings in `{name}.json`).
"""
