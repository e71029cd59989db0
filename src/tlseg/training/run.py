"""A training run from annotated data folders (``tlseg train DATA``), and re-tuning a
saved model's instance settings on its held-out training images (``tlseg tune``)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, fields, replace
from pathlib import Path

from ..config import ModelConfig, TrainConfig
from ..errors import TlsegError
from ..inference.flat import FLAT_COHERENCE, FLAT_TEXTURE
from ..inference.model import Model
from ..inference.postprocess import NUCLEUS_SIZE_FLOOR
from ..inference.repeats import REPEAT_SIMILARITY
from ..inference.specks import OPAQUE_DARKNESS
from .data import split_holdout
from .train import load_folders, train_samples
from .tune import tune_model

log = logging.getLogger(__name__)

_MODEL_KEYS = ("name", "channels", "canonical_diameter", "flatfield", "flows")


def train(folders, out_dir, *, base=None, partial=(), incomplete=(), exclude=(),
          fragments: float = 0.0, stain=(), resume: bool = False, device: str = "cpu",
          tune: bool = True, card: dict | None = None,
          load_progress: Callable[[int, int], None] | None = None,
          progress: Callable[[int, int, dict], None] | None = None, **settings) -> Model:
    """Train a model from annotated folders and write it to ``out_dir``: ``tlseg train``.

    Parameters
    ----------
    folders : list of paths
        Folders holding ``images/`` and ``masks/`` (instance labels of the same names),
        or a ``train/`` split of them.
    out_dir : path
        Model folder to write; ``checkpoint.pt`` inside it is updated every
        ``checkpoint_every`` steps, and ``resume`` continues from it.
    base : Model, str or path, optional
        Start from this model's weights; its architecture, scale and shading correction
        are kept (use a lower ``lr`` and fewer ``epochs``).
    partial : list of paths
        Folders among ``folders`` whose masks miss some cells: background is trusted only
        near labelled cells.
    incomplete : list of paths
        Folders whose masks miss only objects that are not cells of interest (debris).
    stain : list of paths
        Folders among ``folders`` with a ``stain/`` folder of nuclear-stain images named
        like ``images/``: the ``nuclei`` model segments each, and its nuclei judge the
        masks by the rules of :func:`tlseg.calibrate` (background only far from every
        nucleus, an unlabelled cell with a nucleus unknown). Never held out to tune on.
    exclude : list of str
        Glob patterns of image file names to leave out.
    fragments : float
        Labelled objects under this fraction of the median cell area (not cut by the
        image border) are unknown to the loss and to tuning.
    resume : bool
        Continue an interrupted run.
    device : str
        PyTorch device: 'cpu' or 'cuda'.
    tune : bool
        Tune the instance settings and the diameter calibration on the held-out images
        afterwards (:func:`tune` does it later).
    card : dict, optional
        Facts for the model card (``card.yaml``), e.g. the command that trained it.
    load_progress : callable(done, total), optional
        Called as each image is loaded.
    progress : callable(step, total, losses), optional
        Called after every training step.
    **settings
        Fields of :class:`~tlseg.config.TrainConfig` (``epochs``, ``steps_per_epoch``,
        ``batch_size``, ``lr``, ``seed``, ``ema``, ``texture``, ``specks``, ...) and of
        :class:`~tlseg.config.ModelConfig` (``name``, ``channels``,
        ``canonical_diameter``, ``flatfield``, and ``flows``, which defaults to True here
        as in ``tlseg train``; ignored with ``base``).

    Returns
    -------
    Model
        The trained model, also written to ``out_dir``; its card holds the held-out
        scores.
    """
    out = Path(out_dir)
    train_keys = {f.name for f in fields(TrainConfig)}
    unknown = set(settings) - train_keys - set(_MODEL_KEYS)
    if unknown:
        raise TypeError(f"train: unknown setting(s) {sorted(unknown)}")
    try:
        tc = TrainConfig(**{k: v for k, v in settings.items() if k in train_keys})
        model_settings = {k: v for k, v in settings.items() if k in _MODEL_KEYS}
        model_settings.setdefault("name", out.name)
        model_settings.setdefault("flows", True)  # the recipe of `tlseg train`
        if "channels" in model_settings:
            model_settings["channels"] = tuple(model_settings["channels"])
        mc = ModelConfig(**model_settings)
        if mc.flatfield == "divide":  # transmitted light: chips and patterned plates
            mc = replace(mc, instances=replace(mc.instances, remove_pattern=True,
                                               repeat_similarity=REPEAT_SIMILARITY,
                                               flat_texture=FLAT_TEXTURE,
                                               flat_coherence=FLAT_COHERENCE,
                                               opaque_darkness=OPAQUE_DARKNESS))
        elif mc.flatfield == "subtract":  # fluorescence: apoptotic bodies are not nuclei
            mc = replace(mc, instances=replace(mc.instances,
                                               min_area_of_median=NUCLEUS_SIZE_FLOOR))
    except ValueError as exc:
        raise TlsegError(str(exc)) from None
    card = dict(card or {})
    card.setdefault("command", None)
    card.update({"data": [str(d) for d in folders], "partial": [str(d) for d in partial],
                 "incomplete": [str(d) for d in incomplete], "stain": [str(d) for d in stain],
                 "exclude": list(exclude), "fragments": fragments})
    if base is not None:
        base = base if isinstance(base, Model) else Model.load(base)
        # the architecture, scale and shading correction are the base model's
        mc = ModelConfig.from_dict({**base.config.to_dict(), "name": mc.name})
        card["parent"] = base.card.get("name") or base.config.name
        card["parent_card"] = {k: base.card.get(k) for k in ("command", "wall_time_s", "device")
                               if k in base.card}
    samples = load_folders(folders, canonical_diameter=mc.canonical_diameter,
                           partial_dirs=partial, incomplete_dirs=incomplete, exclude=exclude,
                           fragments=fragments, stained_dirs=stain, progress=load_progress)
    if not samples:
        raise TlsegError("the training data holds no labelled cells")
    diameters = sorted(s.diameter for s in samples)
    mc = ModelConfig.from_dict({**mc.to_dict(),
                                "default_diameter": round(diameters[len(diameters) // 2], 1)})
    log.info("%d images loaded; training %d steps", len(samples), tc.total_steps)
    return train_samples(samples, out, model_config=mc, train_config=tc, resume=resume,
                         init=base, progress=progress, card=card, device=device, tune=tune)


def tune(model_dir, folders, *, partial=(), incomplete=(), exclude=(),
         fragments: float = 0.0, stain=(), command: str | None = None) -> Model:
    """Re-tune a model folder's instance settings and diameter calibration on its
    held-out training images: ``tlseg tune``.

    The held-out split is the one ``tlseg train`` made (the last
    :attr:`TrainConfig.holdout_fraction` of each fully labelled source's training
    images, by name); validation images are never read. Only ``tuning.yaml`` and the
    card's held-out scores are rewritten (the card records the settings before).

    Parameters
    ----------
    model_dir : path
        Model folder (rewritten in place).
    folders : list of paths
        The data folders the model was trained on.
    partial, incomplete, exclude, fragments, stain
        As given to :func:`train`.
    command : str, optional
        The command line, recorded in the card.

    Returns
    -------
    Model
        The re-tuned model.
    """
    model = Model.from_folder(model_dir)
    samples = load_folders(folders, canonical_diameter=model.config.canonical_diameter,
                           partial_dirs=partial, incomplete_dirs=incomplete,
                           exclude=exclude, fragments=fragments, stained_dirs=stain)
    _, held = split_holdout(samples, TrainConfig().holdout_fraction)
    if not held:
        raise TlsegError("no held-out images to tune on: the data folders hold no fully "
                         "labelled source (--partial/--incomplete folders are never held out)")
    log.info("%d held-out images; before: %s", len(held), model.config.instances)
    before = {**asdict(model.config.instances),
              "diameter_calibration": model.config.diameter_calibration,
              "size_statistic": model.config.size_statistic}
    tuned, scores, auto = tune_model(model, held)
    log.info("after: %s", tuned.config.instances)
    log.info("diameter calibration: %s, size statistic %s (pooled AP50 by factor: %s)",
             tuned.config.diameter_calibration, tuned.config.size_statistic,
             auto.get("pooled_ap50_by_statistic_and_factor", auto.get("pooled_ap50_by_factor")))
    card = {**model.card, "holdout_scores": scores, "holdout_scores_estimated_diameter": auto,
            "retuned": {"by": command or "tlseg.tune", "before": before}}
    tuned.save_tuning(model_dir, card=card)
    return tuned
