"""A model's network as ONNX, checked against PyTorch, with tlseg's preprocessing as JSON.

The ONNX file holds the *network* only: it maps the normalised image at the canonical
cell scale, shape (1, 1, H, W) float32 with H and W multiples of the network's stride
(32), to its raw maps, shape (1, C, H, W): foreground and normalised-distance logits,
log2 cell size and, for models with flows, the flow y and x
(:mod:`tlseg.inference.network`). The steps before (rescaling to the canonical cell
diameter, shading correction, normalisation) and after (sigmoid, instances) are tlseg's,
written down in a JSON file beside the network (:func:`preprocessing`) so that another
tool can repeat them. The file is checked with onnxruntime against PyTorch on two
synthetic fields; the largest difference is kept in the JSON (``check``). The bioimage.io
package (:mod:`tlseg.inference.bioimageio`) builds on it; :func:`tlseg.export_model`
(:mod:`tlseg.inference.export`) writes either.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

from ..errors import TlsegError
from .model import Model

#: ONNX operator set: 17 runs in every onnxruntime since 1.13 (2022)
OPSET = 17
#: canonical-scale sizes (H, W) of the synthetic fields an ONNX file is checked on
CHECK_SIZES = ((256, 256), (192, 320))
#: largest difference between onnxruntime's maps and PyTorch's that passes the check
TOLERANCE = 1e-4

_CHANNELS = (
    ("foreground", "logit of the foreground (cell) probability; sigmoid gives it"),
    ("distance", "logit of the normalised distance to the cell border (1 at the centre); "
                 "sigmoid gives it"),
    ("log2_size", "log2 of the apparent cell diameter over the canonical diameter"),
    ("flow_y", "flow towards the cell's centre, y"),
    ("flow_x", "flow towards the cell's centre, x"),
)


def export_onnx(model: Model, path, *, check: bool = True) -> Path:
    """Write the network as ONNX to ``path`` and its preprocessing to ``path``.json.

    The legacy TorchScript exporter (``dynamo=False``) is used: it needs no onnxscript,
    exports this network in ~3 s against ~15-19 s for the ``torch.export`` exporter (which
    also needs the sizes declared as multiples of 32), and its graph runs faster in
    onnxruntime (docs/export.md). With ``check`` the file is run in onnxruntime on
    :data:`CHECK_SIZES` and refused when its maps differ from PyTorch's by more than
    :data:`TOLERANCE`.
    """
    from ..io import atomic_path

    _require("onnx", "onnxruntime")
    path = Path(path)
    info = preprocessing(model)
    info["onnx"] = path.name
    x = torch.zeros(1, 1, model.net.stride * 2, model.net.stride * 2)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # torch 2.13 calls the TorchScript exporter deprecated; it is still the one that
        # exports this network quickly and runs fastest (see above)
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        with torch.no_grad():
            torch.onnx.export(
                model.net.eval(), (x,), str(tmp), dynamo=False, opset_version=OPSET,
                input_names=["image"], output_names=["maps"], do_constant_folding=True,
                dynamic_axes={"image": {0: "batch", 2: "height", 3: "width"},
                              "maps": {0: "batch", 2: "height", 3: "width"}})
        if check:
            diff = onnx_difference(model, tmp)
            info["check"] = {"max_abs_difference": diff, "tolerance": TOLERANCE,
                             "passed": diff <= TOLERANCE,
                             "sizes": [list(s) for s in CHECK_SIZES],
                             "input": "synthetic fields at the canonical scale, normalised"}
            if not diff <= TOLERANCE:
                raise TlsegError(f"the ONNX network's maps differ from PyTorch's by {diff:.2e} "
                                 f"(over {TOLERANCE:g}); not written")
    with atomic_path(path.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(info, indent=2) + "\n")
    return path


def onnx_difference(model: Model, path, sizes=CHECK_SIZES) -> float:
    """Largest absolute difference between the maps of the ONNX file at ``path``
    (run in onnxruntime) and of ``model``'s network, on synthetic fields of ``sizes``
    at the canonical scale, normalised as tlseg does."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    worst = 0.0
    for i, shape in enumerate(sizes):
        x = example_input(model, shape, seed=i)
        with torch.inference_mode():
            expected = model.net(torch.from_numpy(x)).numpy()
        got = session.run(None, {"image": x})[0]
        worst = max(worst, float(np.abs(got - expected).max()))
    return worst


def example_input(model: Model, shape: tuple[int, int], *, seed: int = 0) -> np.ndarray:
    """A network input made by tlseg: a synthetic field whose cells (or nuclei, for a
    fluorescence model) are the canonical diameter across, normalised as tlseg does,
    shape (1, 1, H, W) float32."""
    from ..synthetic import synthetic_field

    cfg = model.config
    nuclei = cfg.flatfield == "subtract"  # fluorescence: the nuclear stain channel
    # synthetic nuclei are about half the cell diameter
    field = synthetic_field(shape, diameter=cfg.canonical_diameter * (2 if nuclei else 1),
                            seed=seed)
    image = field["nuclei" if nuclei else "tl"].astype(np.float32)
    return model._network_input(image).numpy()


def preprocessing(model: Model) -> dict:
    """What another tool needs to run the exported network as tlseg does: the input,
    the steps that make it, the output channels and the instance settings (the JSON
    written beside an ONNX file and into a bioimage.io package).

    Examples
    --------
    >>> import tlseg
    >>> info = preprocessing(tlseg.load_model("tl-cells"))
    >>> info["preprocessing"]["canonical_diameter"], info["preprocessing"]["flatfield"]
    (30.0, 'divide')
    >>> [c["name"] for c in info["output"]["channels"]]
    ['foreground', 'distance', 'log2_size', 'flow_y', 'flow_x']
    """
    cfg = model.config
    s = model.net.stride
    sigma_px = cfg.background_sigma * cfg.canonical_diameter
    shading = {
        "divide": [
            "clamp values below 0 to 0",
            "divide by a smooth shading surface: a degree-3 polynomial fitted robustly to the "
            "log image (3 rounds dropping residuals over 2.5 robust SD), on a copy averaged "
            "down to about 64 px (tlseg.inference.preprocess.polynomial_shading)",
            f"divide by the smooth background (Gaussian blur, sigma {sigma_px:g} px, on a "
            "copy averaged down by sigma // 8, then upsampled bilinearly) plus 1e-3 of its "
            "mean (tlseg.inference.preprocess.smooth_background)",
        ],
        "subtract": [
            f"subtract the smooth background (Gaussian blur, sigma {sigma_px:g} px, on a "
            "copy averaged down by sigma // 8, then upsampled bilinearly; "
            "tlseg.inference.preprocess.smooth_background)",
        ],
        "none": [],
    }[cfg.flatfield]
    return {
        "model": cfg.name,
        "tlseg_version": version("tlseg"),
        "input": {
            "name": "image", "shape": ["N", 1, "H", "W"], "dtype": "float32",
            "size_multiple_of": s,
            "description": "one gray image at the canonical cell scale, normalised",
        },
        "preprocessing": {
            "canonical_diameter": cfg.canonical_diameter,
            "flatfield": cfg.flatfield,
            "background_sigma": cfg.background_sigma,
            "background_sigma_px": sigma_px,
            "steps": [
                "clip absurd pixel values to 100 robust ranges beyond the 0.1 and 99.9 "
                "percentiles (tlseg.inference.preprocess.clip_outliers)",
                f"rescale by canonical_diameter / cell diameter in pixels ({cfg.canonical_diameter:g}"
                " / d): shrink bilinearly with antialiasing, enlarge bicubically "
                "(tlseg.inference.preprocess.rescale)",
                *shading,
                "subtract the median and divide by the distance between the 0.5th and "
                "99.5th percentiles (read on at most ~250,000 pixels, every n-th)",
                f"pad bottom and right to a multiple of {s} (reflect); tlseg runs images "
                "over 1024 px in 1024-px tiles with 96 px of context on each side",
            ],
            "normalisation": "shading-corrected, then (x - median) / (p99.5 - p0.5): "
                             "background near 0, contrast range about 1",
            "reference": "tlseg.Model._network_input (tlseg.inference.preprocess.normalize)",
        },
        "output": {
            "name": "maps", "shape": ["N", cfg.n_outputs, "H", "W"], "dtype": "float32",
            "channels": [{"index": i, "name": n, "meaning": m}
                         for i, (n, m) in enumerate(_CHANNELS[: cfg.n_outputs])],
        },
        "instances": {
            **asdict(cfg.instances),
            "reference": "(remove_pattern) tlseg.inference.repeats.remove_pattern on the "
                         "rescaled image before the network; "
                         "tlseg.inference.postprocess.instances_from_maps on the maps with "
                         "sigmoid applied to channels 0 and 1, then (repeat_similarity > 0) "
                         "tlseg.inference.repeats.drop_repeated with the rescaled image, "
                         "then (flat_texture > 0) tlseg.inference.flat.drop_flat with the "
                         "rescaled image, the foreground and the flow coherence, "
                         "then (opaque_darkness > 0) tlseg.inference.specks.drop_opaque "
                         "with the rescaled image and the foreground, "
                         "then resized back to the image",
        },
        "diameter": {"default_diameter": cfg.default_diameter,
                     "diameter_calibration": cfg.diameter_calibration,
                     "taught_diameter": cfg.taught_diameter},
    }


def _require(*modules: str) -> None:
    import importlib.util

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise TlsegError(f"exporting needs {', '.join(missing)}: "
                         "pip install 'tlseg[export]'")
