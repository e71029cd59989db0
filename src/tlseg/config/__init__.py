"""Every setting of tlseg, as small frozen dataclasses: the one source of defaults.

- :class:`InstanceConfig`: thresholds from network maps to cells;
- :class:`ModelConfig`: what a saved model needs to run (network, preprocessing, tuning);
- :class:`SegmentConfig`: a folder run (``tlseg segment``, :func:`tlseg.segment_folder`);
- :class:`TrainConfig`: a training run (``tlseg train``, :func:`tlseg.train`);
- :class:`TeachConfig`: fine-tuning or retraining on a project's ROIs (:func:`tlseg.teach`);
- :class:`PlateConfig`: a plate run (``tlseg plate run``, :func:`tlseg.run_plate`).

The command line takes its defaults from these classes (:func:`default`), so a default
is written once. The model's settings live in :mod:`tlseg.config.model`, those of the
runs (segmenting, training, teaching, plates) in :mod:`tlseg.config.runs`.
"""

from __future__ import annotations

from dataclasses import MISSING, fields

from .model import (
    FLATFIELD_MODES,
    MODEL_FORMAT,
    SIZE_STATISTICS,
    TUNING_KEYS,
    InstanceConfig,
    ModelConfig,
)
from .runs import TEACH_MODES, PlateConfig, SegmentConfig, TeachConfig, TrainConfig

__all__ = ["FLATFIELD_MODES", "MODEL_FORMAT", "SIZE_STATISTICS", "TEACH_MODES", "TUNING_KEYS",
           "InstanceConfig", "ModelConfig", "PlateConfig", "SegmentConfig", "TeachConfig",
           "TrainConfig", "default", "settings_or_config"]


def default(cls, name: str):
    """The default of field ``name`` of the dataclass ``cls`` (for argparse).

    Examples
    --------
    >>> default(TrainConfig, "epochs")
    40
    """
    f = next(f for f in fields(cls) if f.name == name)
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def settings_or_config(cls, config, settings: dict, *, what: str):
    """``config`` (an instance of the dataclass ``cls``) or one built from keyword
    ``settings``, for functions that take either; a :class:`TypeError` for unknown
    keywords or for both given.

    Examples
    --------
    >>> settings_or_config(SegmentConfig, None, {"diameter": 30}, what="f").diameter
    30
    """
    if config is not None:
        if settings:
            raise TypeError(f"{what}: give a {cls.__name__} or keywords, not both")
        return config
    unknown = set(settings) - {f.name for f in fields(cls)}
    if unknown:
        raise TypeError(f"{what}: unknown setting(s) {sorted(unknown)}")
    return cls(**settings)
