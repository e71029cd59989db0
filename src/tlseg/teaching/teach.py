"""Teaching a model from a project's corrected ROIs: fine-tune or retrain.

- **fine-tune**: start from the current model, a short run at a low learning rate on
  crops centred on the ROIs, BatchNorm statistics frozen — a minor correction in minutes
  (60 steps per ROI, 100-1,200 steps).
- **retrain**: start again from the base model with a longer schedule over all ROIs
  (60 steps per ROI, 600-3,000 steps), BatchNorm statistics learnt again.

Both keep what the base model knew without its training data (which users do not
have): outside the ROIs the base model's own predictions on the project's images are
the targets (distillation), so the model changes where the user corrected it and stays
put elsewhere. Without it, fine-tuning on ROIs of empty background alone taught a model
that nothing is a cell.

Both write a model folder whose card records the parent model, the exact ROI set (hash),
the mode, steps, wall time and the run's training-set scores. Last, the model's diameter
calibration is set so that its automatic estimate matches the size of the cells the user
annotated (:func:`calibrate_to_rois`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ..config import TEACH_MODES, TrainConfig
from ..errors import TlsegError, check_positive
from ..inference.diameter import weighted_median
from ..inference.model import Model
from ..io import read_image
from ..training.data import Sample, make_sample
from ..training.targets import whole_cell_diameters
from .project import Project


def default_steps(mode: str, n_rois: int) -> int:
    """Training steps for a project of ``n_rois`` ROIs (:data:`tlseg.config.TEACH_MODES`).

    Examples
    --------
    >>> default_steps("finetune", 5), default_steps("finetune", 10), default_steps("retrain", 10)
    (300, 600, 600)
    """
    return TEACH_MODES[mode].steps(n_rois)


def project_samples(project: Project, base: Model, *, mode: str,
                    diameter: float | None = None) -> list[Sample]:
    """Samples for every project image that holds ROIs (labels UNKNOWN outside them)."""
    rois = project.rois()
    if not rois:
        raise TlsegError(f"{project.root}: the training set is empty; add ROIs with "
                         "`tlseg roi add` first")
    canon = base.config.canonical_diameter
    samples = []
    for image_id in sorted({r.image_id for r in rois}):
        labels = project.label_image(image_id, rois=rois)
        image = read_image(project.image_path(image_id))
        d, _ = _annotated_diameter(project, labels, diameter)
        if d is None:
            d = base.estimate_diameter(image) or base.config.default_diameter
        boxes = [r.box for r in rois if r.image_id == image_id]
        teacher = lambda small: base.predict_maps(small)  # noqa: E731
        samples.append(make_sample(image, labels, diameter=float(d), canonical_diameter=canon,
                                   name=image_id, source=project.meta.get("name", "project"),
                                   focus=boxes, teacher=teacher))
    return samples


def teach(project, base, out_dir, *, mode: str = "finetune", steps: int | None = None,
          seed: int = 0, resume: bool = False, diameter: float | None = None,
          progress: Callable[[int, int, dict], None] | None = None,
          **overrides) -> Model:
    """Fine-tune or retrain a model on a project's ROIs and save it to ``out_dir``.

    Parameters
    ----------
    project : Project or path
        The training set (:class:`tlseg.Project`); pixels outside its ROIs are unknown.
    base : Model, str or path
        The model to start from: a :class:`~tlseg.Model`, a shipped model name or a
        model folder.
    out_dir : path
        Model folder to write (checkpoints inside it; ``resume`` continues them).
    mode : {'finetune', 'retrain'}
        A minor correction in minutes, or deeper learning (:data:`tlseg.config.TEACH_MODES`).
    steps : int, optional
        Training steps; by default the mode's steps per ROI (:func:`default_steps`).
    seed : int
        Random seed.
    resume : bool
        Continue an interrupted run in ``out_dir``.
    diameter : float, optional
        Cell diameter in pixels of the project's images (default: the project's, else
        measured on the annotated cells).
    progress : callable(step, total, losses), optional
        Called after every training step.
    **overrides
        Replace the mode's training settings (e.g. ``distill=0.0``) for experiments; the
        model card records them.

    Returns
    -------
    Model
        The taught model, also written to ``out_dir``.
    """
    from dataclasses import replace

    from ..training.train import check_output_folder, train_samples

    if mode not in TEACH_MODES:
        raise TlsegError(f"--mode must be one of {sorted(TEACH_MODES)}, got {mode!r}")
    check_positive("diameter", diameter)
    check_output_folder(out_dir, resume=resume)  # before the ROIs are read and prepared
    project = project if isinstance(project, Project) else Project.open(project)
    base = base if isinstance(base, Model) else Model.load(base)
    settings = TEACH_MODES[mode].train_settings()
    samples = project_samples(project, base, mode=mode, diameter=diameter)
    n_rois = len(project.rois())
    unknown = set(overrides) - set(settings) - {"ema", "max_noise", "max_log2_scale"}
    if unknown:
        raise TlsegError(f"teach: unknown setting(s) {sorted(unknown)}")
    params = dict(settings, epochs=1, **overrides, seed=seed, holdout_fraction=0.0,
                  checkpoint_every=50,
                  steps_per_epoch=steps if steps is not None else default_steps(mode, n_rois))
    tc = TrainConfig(**params)
    card = {
        "parent": base.card.get("name") or base.config.name,
        "parent_card": {k: base.card.get(k) for k in ("wall_time_s", "sources") if k in base.card},
        "mode": mode,
        "project": str(Path(project.root).resolve()),
        "roi_set": project.roi_set_hash(),
        "n_rois": n_rois,
        **({"overrides": overrides} if overrides else {}),
    }
    cfg = replace(base.config, name=Path(out_dir).name)
    model = train_samples(samples, out_dir, model_config=cfg, train_config=tc, init=base,
                  resume=resume, progress=progress, card=card)
    factor, record = calibrate_to_rois(model, project, diameter=diameter)
    if factor is not None or record.get("taught_diameter"):
        cfg = replace(model.config, taught_diameter=record.get("taught_diameter"),
                      diameter_calibration=factor or model.config.diameter_calibration)
        model = Model(cfg, model.net,
                      card={**model.card, "diameter_calibration_from_rois": record})
        model.save(out_dir)
    return model


#: weight, in whole annotated cells, of the prior that a taught model's estimate is right
PRIOR_CELLS = 5


def calibrate_to_rois(model: Model, project: Project, *, diameter: float | None = None
                      ) -> tuple[float | None, dict]:
    """The diameter calibration that makes the model's automatic estimate match the cells
    the user annotated: per project image, the ratio of the median diameter of the whole
    cells in its ROIs (or the project's or given diameter) to the model's estimate on the
    image (uncalibrated), combined by :func:`roi_calibration`.

    The record's ``taught_diameter`` is :func:`choose_diameter`'s answer (None: keep
    estimating). The base model's calibration was chosen on the base's own held-out
    images; after teaching, the size head reads the user's cells, and the user's annotations say how
    large they are. (Fine-tuned on 5-10 CHO ROIs, the inherited factor 0.85
    segmented the CHO val images at 45 px for cells of 53 px, AP@0.5 0.879 against 0.900
    at the known diameter.) The factor is None when no image has whole cells or the
    model finds cells in none of them.
    """
    rois = project.rois()
    trues, ests, weights = [], [], []
    for image_id in sorted({r.image_id for r in rois}):
        true, n_cells = _annotated_diameter(project, project.label_image(image_id, rois=rois),
                                            diameter)
        if true is None:
            continue
        est = model.estimate_diameter(read_image(project.image_path(image_id)), calibrate=False)
        trues.append(true)
        ests.append(est)  # None: the model finds no cells there
        weights.append(max(n_cells, 1))
    seen = [i for i, e in enumerate(ests) if e]
    record = {"images": len(seen)}
    if not trues:
        return None, record
    factor = None
    if seen:
        ratios = [trues[i] / ests[i] for i in seen]
        factor = roi_calibration(ratios, [weights[i] for i in seen])
        record.update(factor=round(factor, 4), ratios=[round(float(r), 4) for r in ratios],
                      whole_cells=[weights[i] for i in seen], prior_cells=PRIOR_CELLS)
    fixed = choose_diameter(trues, ests, weights, factor or 1.0)
    record["taught_diameter"] = None if fixed is None else round(fixed, 2)
    return factor, record


def choose_diameter(trues, ests, weights, factor: float) -> float | None:
    """The fixed diameter to segment at, or None to keep estimating it per image.

    On the taught images, compare the model's calibrated estimate (``ests`` x
    ``factor``) with one fixed diameter (the median of ``trues``, weighted like the
    calibration) as predictors of each image's annotated cell size ``trues``: the median
    absolute log error of each, weighted by the images' whole cells. The fixed diameter
    is kept only where it predicts better. A base that has never seen the user's
    modality reads cell size badly even after teaching (fine-tuned on 5 or
    10 Usiigaci phase-contrast ROIs: per-image true / estimated 0.17-3.3), while a
    user's images come from one microscope and objective; where the model's estimate
    is good (CHO: 0.97-1.02) either works. ``tlseg segment --diameter`` always wins.

    Examples
    --------
    >>> choose_diameter([40, 42, 41], [20, 80, 41], [3, 3, 3], 1.0)  # estimates scatter
    41.0
    >>> choose_diameter([30, 45, 60], [31, 44, 61], [3, 3, 3], 1.0) is None  # they track
    True
    >>> choose_diameter([40, 44], [None, None], [2, 2], 1.0)  # it finds no cells
    40.0
    """
    t, w = np.asarray(trues, float), np.asarray(weights, float)
    # an image where the model finds no cells at all is an estimate infinitely wrong
    e = np.array([x if x else np.nan for x in ests], float)
    fixed = weighted_median(t, w)
    err_estimate = weighted_median(np.nan_to_num(np.abs(np.log(t / (e * factor))),
                                                 nan=np.inf), w)
    err_fixed = weighted_median(np.abs(np.log(t / fixed)), w)
    return float(fixed) if err_fixed < err_estimate else None


def roi_calibration(ratios, weights, *, prior_cells: float = PRIOR_CELLS) -> float:
    """Weighted median of per-image ratios (annotated / estimated diameter), each image
    weighted by its whole annotated cells, with a prior: ``prior_cells`` cells at ratio 1.

    Weighting by cells: one odd cell in an image must not outvote four in another. The
    prior: a taught model has learnt the user's cells at their annotated size, so its own
    estimate is close to right (fine-tuned on 5 or 10 random CHO ROIs, the
    uncalibrated estimate on the 20 CHO training images was 0.97-1.01x their true median
    diameter, the base's 1.16x), whereas one whole cell says little (random 256 px CHO
    ROIs hold 1-3 whole cells each; single-cell ratios ran 0.84-1.50, a doublet outlined
    as one cell among them). With a few dozen annotated cells the prior does not matter.

    Examples
    --------
    >>> roi_calibration([1.5, 0.99], [1, 1])  # two single cells: keep the model's reading
    1.0
    >>> round(roi_calibration([0.8, 0.82], [20, 10]), 2)  # thirty cells decide
    0.8
    """
    values = np.concatenate([np.asarray(ratios, float), [1.0]])
    w = np.concatenate([np.asarray(weights, float), [prior_cells]])
    return float(np.clip(weighted_median(values, w), 0.25, 4.0))


def _annotated_diameter(project: Project, labels, diameter: float | None
                        ) -> tuple[float | None, int]:
    """The cell diameter of one project image — ``diameter`` if given, else the project's,
    else the median of the whole cells annotated in its ROIs (None without any) — and the
    number of those whole cells."""
    cells = whole_cell_diameters(labels)
    true = diameter or project.meta.get("diameter") or (
        float(np.median(cells)) if cells.size else None)
    return true, int(cells.size)
