"""tlseg: segment and count label-free cells in transmitted-light images.

The public API, in the order the data travels::

    import tlseg

    image = tlseg.read_image("field.tif")                # io
    model = tlseg.load_model("tl-cells")                 # inference
    labels = model.segment(image)                        # same labels as `tlseg segment`
    tlseg.write_labels("field_masks.tif", labels)
    scores = tlseg.evaluate(labels, true_labels)         # analysis
    tlseg.segment_folder(["images/"], "out/")            # `tlseg segment`
    tlseg.train(["data/"], "my-model/")                  # training: `tlseg train`
    tlseg.teach("project/", "tl-cells", "taught/")       # teaching: `tlseg train PROJECT`
    tlseg.run_plate("plate/", "results/", tl_channel="w1", nuclei_channel="w2")

The package follows the same journey: :mod:`tlseg.io` (files in and out),
:mod:`tlseg.inference` (image → maps → cells), :mod:`tlseg.analysis` (measure, score,
one image or a folder through the pipeline), :mod:`tlseg.training`,
:mod:`tlseg.teaching` (projects of corrected ROIs), :mod:`tlseg.plate` (screens);
:mod:`tlseg.cli` and :mod:`tlseg.napari` call only the names below. Settings are frozen
dataclasses in :mod:`tlseg.config`. Names load on first use, so ``import tlseg`` is
quick and does not import PyTorch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from .errors import TlsegError

__version__ = "0.2.0"

#: public name -> module that defines it
_API = {
    # settings
    "InstanceConfig": "config", "ModelConfig": "config", "PlateConfig": "config",
    "SegmentConfig": "config", "TeachConfig": "config", "TrainConfig": "config",
    # files
    "list_images": "io", "read_image": "io", "read_labels": "io", "write_labels": "io",
    "write_table": "io", "imagej_to_labels": "io.imagej", "labels_to_imagej": "io.imagej",
    # inference
    "Model": "inference.model", "load_model": "inference.model",
    "shipped_models": "inference.folder", "set_threads": "inference.runtime",
    "export_model": "inference.export",
    # analysis
    "evaluate": "analysis.metrics", "evaluate_folders": "analysis.metrics",
    "measure_cells": "analysis.measure", "discard_edge": "analysis.measure",
    "write_overlay": "analysis.overlay", "uncounted_texture": "analysis.coverage",
    "uncounted_patches": "analysis.coverage",
    "segment_and_measure": "analysis.pipeline", "segment_folder": "analysis.pipeline",
    # training
    "train": "training.run", "tune": "training.run",
    # teaching
    "UNKNOWN": "training.targets", "Project": "teaching.project", "teach": "teaching.teach",
    "suggest_rois": "teaching.suggest", "suggest_across": "teaching.suggest",
    # plates
    "run_plate": "plate.pipeline", "validate_plate": "plate.pipeline",
    "calibrate": "plate.calibrate", "make_demo_plate": "plate.demo", "compare_truth": "plate.demo",
    "convert_plate": "plate.convert",
    # synthetic data with known cells
    "synthetic_field": "synthetic", "write_demo_images": "synthetic",
}

#: public modules: label edits for correcting ROIs (paint, erase, split, merge, relabel)
_MODULES = {"edit": "teaching.edit"}

__all__ = [
    "UNKNOWN",
    "InstanceConfig",
    "Model",
    "ModelConfig",
    "PlateConfig",
    "Project",
    "SegmentConfig",
    "TeachConfig",
    "TlsegError",
    "TrainConfig",
    "__version__",
    "calibrate",
    "compare_truth",
    "convert_plate",
    "discard_edge",
    "edit",
    "evaluate",
    "evaluate_folders",
    "export_model",
    "imagej_to_labels",
    "labels_to_imagej",
    "list_images",
    "load_model",
    "make_demo_plate",
    "measure_cells",
    "read_image",
    "read_labels",
    "run_plate",
    "segment_and_measure",
    "segment_folder",
    "set_threads",
    "shipped_models",
    "suggest_across",
    "suggest_rois",
    "synthetic_field",
    "teach",
    "train",
    "tune",
    "uncounted_patches",
    "uncounted_texture",
    "validate_plate",
    "write_demo_images",
    "write_labels",
    "write_overlay",
    "write_table",
]


def __getattr__(name: str):
    if name in _MODULES:
        value = importlib.import_module(f".{_MODULES[name]}", __name__)
        globals()[name] = value
        return value
    if name in _API:
        value = getattr(importlib.import_module(f".{_API[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tlseg' has no attribute {name!r}")


def __dir__():
    return __all__


if TYPE_CHECKING:  # for type checkers and IDEs; at run time names load on first use
    from .analysis.coverage import uncounted_patches, uncounted_texture
    from .analysis.measure import discard_edge, measure_cells
    from .analysis.metrics import evaluate, evaluate_folders
    from .analysis.overlay import write_overlay
    from .analysis.pipeline import segment_and_measure, segment_folder
    from .config import (
        InstanceConfig,
        ModelConfig,
        PlateConfig,
        SegmentConfig,
        TeachConfig,
        TrainConfig,
    )
    from .inference.export import export_model
    from .inference.folder import shipped_models
    from .inference.model import Model, load_model
    from .inference.runtime import set_threads
    from .io import list_images, read_image, read_labels, write_labels, write_table
    from .io.imagej import imagej_to_labels, labels_to_imagej
    from .plate.calibrate import calibrate
    from .plate.convert import convert_plate
    from .plate.demo import compare_truth, make_demo_plate
    from .plate.pipeline import run_plate, validate_plate
    from .synthetic import synthetic_field, write_demo_images
    from .teaching import edit
    from .teaching.project import Project
    from .teaching.suggest import suggest_across, suggest_rois
    from .teaching.teach import teach
    from .training.run import train, tune
    from .training.targets import UNKNOWN
