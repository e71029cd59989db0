"""Choosing a trained model's post-processing on held-out training images.

After training, ``tlseg train`` holds out part of the training images (never val) and
chooses on them, at their known cell size, the instance settings (foreground and seed
thresholds, ridge merging, flow splitting, minimum size, then the strictest faint-cell
and flow-coherence filters that score no worse: :func:`tune_thresholds`), then, with
the cell size estimated as users run it, the factor on the automatic diameter estimate
and the size statistic the estimate reads (``ModelConfig.size_statistic``) that score
best (:func:`calibrate_diameter`). ``tlseg tune`` (:func:`tlseg.tune`) runs the same on a
finished model folder.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import replace

import numpy as np

from ..analysis.metrics import match_counts, summarize
from ..inference.flows import flows_to_instances
from ..inference.model import Model
from ..inference.postprocess import (
    InstanceConfig,
    drop_faint,
    drop_incoherent,
    instances_from_maps,
)
from .data import Sample


def tune_model(model: Model, held: list[Sample]) -> tuple[Model, dict, dict]:
    """The model with its instance settings and diameter calibration chosen on ``held``.

    Returns the tuned model, the held-out scores at the known diameter
    (:func:`tune_thresholds`) and the calibration record (:func:`calibrate_diameter`).
    """
    from ..config import SIZE_STATISTICS

    tuned, scores = tune_thresholds(model, held)
    # the structure, flat and speck filters, the pattern removal and the field-relative
    # size floor are not tuned (held-out images seldom show structures, debris or
    # apoptotic bodies): kept
    kept = model.config.instances
    tuned = replace(tuned, repeat_similarity=kept.repeat_similarity,
                    remove_pattern=kept.remove_pattern, flat_texture=kept.flat_texture,
                    flat_coherence=kept.flat_coherence,
                    opaque_darkness=kept.opaque_darkness,
                    min_area_of_median=kept.min_area_of_median)
    model = Model(replace(model.config, instances=tuned), model.net)
    factor, calibration = calibrate_diameter(model, held, statistics=SIZE_STATISTICS)
    stat = calibration.get("size_statistic", model.config.size_statistic)
    return (Model(replace(model.config, diameter_calibration=factor, size_statistic=stat),
                  model.net), scores, calibration)


def _scores_by_source(held: list[Sample], counts: list) -> dict:
    """Summary scores per source of held-out images and their match counts."""
    per_source: dict[str, list] = {}
    for s, c in zip(held, counts):
        per_source.setdefault(s.source, []).append(c)
    return {src: {k: round(v, 4) for k, v in summarize(c).items()}
            for src, c in per_source.items()}


def _image_at_canonical(s: Sample) -> np.ndarray:
    return s.image[0].numpy()


def _grid(flows: bool):
    """Candidate instance settings, grouped by foreground threshold.

    Distance seeds (seed threshold x ridge merge); for a model with flows also split by
    flows, and pure flow following.
    """
    splits = (0.0, 0.25, 0.35, 0.5) if flows else (0.0,)
    for fg_t in (0.4, 0.5, 0.6):
        for area in (0.08, 0.15):
            for seed_t, merge, split in itertools.product(
                    (0.3, 0.4, 0.5, 0.6, 0.7), (0.0, 0.3, 0.4, 0.5, 0.6), splits):
                yield InstanceConfig(fg_threshold=fg_t, seed_threshold=seed_t,
                                     min_area_fraction=area, merge_threshold=merge,
                                     flow_split=split)
            if flows:
                for merge in (0.0, 0.5):
                    yield InstanceConfig(fg_threshold=fg_t, min_area_fraction=area,
                                         merge_threshold=merge, use_flows=True)


def instance_maker(maps: list[np.ndarray], canonical_diameter: float
                   ) -> Callable[[int, InstanceConfig], np.ndarray]:
    """``instances(k, cfg)``: the instances of ``maps[k]`` (a model's maps at the
    canonical scale) under the settings ``cfg``. A tuner tries many settings on the same
    maps, so each map's flow following is done once per foreground threshold."""
    flow_cache: dict[tuple[int, float], np.ndarray] = {}

    def instances(k: int, cfg: InstanceConfig) -> np.ndarray:
        flow_labels = None
        if cfg.needs_flows:
            key = (k, cfg.fg_threshold)
            if key not in flow_cache:
                flow_cache[key] = flows_to_instances(maps[k][0] > cfg.fg_threshold,
                                                     maps[k][3:5],
                                                     canonical_diameter=canonical_diameter)
            flow_labels = flow_cache[key]
        return instances_from_maps(maps[k], canonical_diameter=canonical_diameter,
                                   config=cfg, flow_labels=flow_labels)

    return instances


def tune_thresholds(model: Model, held: list[Sample]) -> tuple[InstanceConfig, dict]:
    """Grid-search the instance settings for the best pooled AP@0.5 on held-out images.

    Images are scored at the canonical scale (their known diameter). For a model with
    flows, splitting by flows and pure flow following compete with distance seeds alone;
    whichever scores best is kept.
    """
    cache = []
    for s in held:
        maps = model.predict_maps(_image_at_canonical(s))
        cache.append((maps, s.labels))  # UNKNOWN pixels (ignored fragments) score nothing
    instances = instance_maker([m for m, _ in cache], model.config.canonical_diameter)

    best = None
    for cfg in _grid(model.config.flows):
        counts = [match_counts(true, instances(k, cfg)) for k, (_, true) in enumerate(cache)]
        score = summarize(counts)
        if best is None or score["ap50"] > best[1]["ap50"]:
            best = (cfg, score, counts)
    # then, on the winning settings, the strictest faint-cell filter that scores no worse
    # (it removes background enclosed by cells and faint debris, which held-out images of
    # sparse or fully labelled fields seldom show); the filter only removes cells, so the
    # instances are grown once and filtered at each level
    grown = [instances(k, best[0]) for k in range(len(cache))]
    for min_prob in MIN_MEAN_PROBS:
        counts = [match_counts(true, drop_faint(g, m[0], min_prob))
                  for g, (m, true) in zip(grown, cache)]
        score = summarize(counts)
        if score["ap50"] >= best[1]["ap50"]:
            best = (replace(best[0], min_mean_prob=min_prob), score, counts)
    # last, for a model with flows, the strictest flow-coherence filter that scores no
    # worse (gaps between cells read as cells: their flows point out, to the cells around)
    if model.config.flows:
        faint = [drop_faint(g, m[0], best[0].min_mean_prob) for g, (m, _) in zip(grown, cache)]
        for min_coh in MIN_FLOW_COHERENCES:
            counts = [match_counts(true, drop_incoherent(g, m[3:5], min_coh))
                      for g, (m, true) in zip(faint, cache)]
            score = summarize(counts)
            if score["ap50"] >= best[1]["ap50"]:
                best = (replace(best[0], min_flow_coherence=min_coh), score, counts)
    return best[0], _scores_by_source(held, best[2])


MIN_MEAN_PROBS = (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8)
MIN_FLOW_COHERENCES = (0.1, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5)


CALIBRATION_FACTORS = tuple(np.round(np.arange(0.7, 1.301, 0.05), 2))


def calibrate_diameter(model: Model, held: list[Sample], *,
                       factors=CALIBRATION_FACTORS,
                       statistics=(None,)) -> tuple[float, dict]:
    """The factor on the automatic diameter estimate that segments held-out images best.

    Users mostly let the model estimate the diameter, so the whole path is scored: each
    held-out image (at the canonical scale) gets the model's uncalibrated estimate, is
    segmented at estimate x factor, and the factor with the best pooled AP@0.5 wins (ties
    go to the factor nearest 1). With several ``statistics`` (``ModelConfig.size_statistic``
    values; None = the model's own) each is calibrated and the best pair wins (ties go to
    the first). Returns the factor and a record: the pooled AP@0.5 at each factor (per
    statistic), the statistic chosen and the per-source scores at the chosen pair.
    """
    best, curves = None, {}
    images = [_image_at_canonical(s) for s in held]
    for stat in statistics:
        m = model if stat is None else Model(replace(model.config, size_statistic=stat),
                                             model.net)
        runs = []
        for s, image in zip(held, images):
            d = m.estimate_diameter(image, calibrate=False)
            if d is not None:
                runs.append((s, image, d, s.labels))
        curve = {}
        for f in sorted(factors, key=lambda f: abs(np.log(f))):
            counts = [match_counts(true, m.predict_instances(image, diameter=d * f)[0])
                      for _, image, d, true in runs]
            curve[float(f)] = round(summarize(counts)["ap50"], 4)
            if best is None or curve[float(f)] > best[2]:
                best = (float(f), counts, curve[float(f)], m.config.size_statistic,
                        [s for s, *_ in runs])
        curves[m.config.size_statistic] = dict(sorted(curve.items()))
    if best is None or not best[4]:
        return 1.0, {}
    factor, counts, _, stat, used = best
    record = {"diameter_calibration": factor, "pooled_ap50_by_factor": curves[stat]}
    if len(curves) > 1:
        record["size_statistic"] = stat
        record["pooled_ap50_by_statistic_and_factor"] = curves
    return factor, {**record, **_scores_by_source(used, counts)}
