"""Exporting a model for other tools: an ONNX network, and a bioimage.io model package.

Both hold the *network* only; the steps before and after it are tlseg's, written down
beside it as JSON.

- ``onnx``: ``NAME.onnx`` and ``NAME.json`` (:mod:`tlseg.inference.onnx_export`), checked
  with onnxruntime against PyTorch.
- ``bioimageio``: a BioImage Model Zoo package (:mod:`tlseg.inference.bioimageio`).

Exporting needs the ``export`` extra (``pip install 'tlseg[export]'``: onnx,
onnxruntime; bioimageio.core to test a package).
"""

from __future__ import annotations

from pathlib import Path

from ..errors import TlsegError
from .bioimageio import export_bioimageio
from .folder import shipped_models
from .model import Model
from .onnx_export import export_onnx

#: what :func:`export_model` writes
FORMATS = ("onnx", "bioimageio")


def export_model(model_or_name, out, *, format: str = "onnx") -> Path:
    """Write a model's network for use outside tlseg.

    Parameters
    ----------
    model_or_name : Model, str or path
        A :class:`~tlseg.Model`, a shipped model name (``tl-cells``, ``nuclei``) or a
        model folder.
    out : path
        ``onnx``: the ``.onnx`` file, or a folder to write ``NAME.onnx`` into; the
        preprocessing goes beside it as ``.json``. ``bioimageio``: the package folder,
        or a ``.zip`` file.
    format : {'onnx', 'bioimageio'}
        ONNX network, or a BioImage Model Zoo package (docs/export.md).

    Returns
    -------
    Path
        The ``.onnx`` file, or the package folder or zip.

    Raises
    ------
    TlsegError
        Unknown model or format, the ``export`` extra is missing, or the exported
        network does not reproduce PyTorch's maps within
        :data:`tlseg.inference.onnx_export.TOLERANCE`.

    Examples
    --------
    >>> import json, tempfile
    >>> import tlseg
    >>> path = tlseg.export_model("nuclei", tempfile.mkdtemp())  # doctest: +SKIP
    >>> json.loads(path.with_suffix(".json").read_text())["check"]["passed"]  # doctest: +SKIP
    True
    """
    if format not in FORMATS:
        raise TlsegError(f"unknown export format {format!r}; choose one of {', '.join(FORMATS)}")
    if isinstance(model_or_name, Model):
        model, folder = model_or_name, None
    else:
        model = Model.load(model_or_name)
        folder = Path(str(model_or_name))
        folder = folder if folder.is_dir() else shipped_models()[str(model_or_name)]
    out = Path(out)
    if format == "onnx":
        path = out if out.suffix == ".onnx" else out / f"{model.config.name}.onnx"
        return export_onnx(model, path)
    return export_bioimageio(model, out, folder=folder)
