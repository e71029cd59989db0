"""Instance settings tuned to a plate's nuclei: the last step of ``tlseg plate calibrate``.

After fine-tuning, the calibrated model's instance settings (thresholds, ridge merging,
flow splitting, minimum size, the faint-cell and flow filters) are tuned on the
calibration sites by coordinate ascent so that its cells match the nuclei one to one
(:func:`tune_to_nuclei`, scored by :func:`~tlseg.training.nucleus_labels.nucleus_match`):
a lab's debris, optics and culture decide what is a cell and where touching cells part.
"""

from __future__ import annotations

import logging
from dataclasses import replace

import numpy as np

from ..config import InstanceConfig
from ..inference.model import Model
from ..training.nucleus_labels import nucleus_match
from ..training.tune import instance_maker

log = logging.getLogger(__name__)


def _f1(counts: np.ndarray) -> float:
    tp, fp, fn = (int(c) for c in counts)
    return 2 * tp / max(2 * tp + fp + fn, 1)


#: the instance settings :func:`tune_to_nuclei` tries, one at a time. The size floor stops
#: at 0.4 of a canonical cell's area: at 0.6 it matched a calibration field's nuclei one or
#: two cells better and dropped a quarter of the cells of another field of the same
#: experiment, whose smallest cells are smaller (docs/benchmarks.md, *Calibration from a
#: nuclear stain*)
NUCLEI_TUNING_AXES = {
    "fg_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "seed_threshold": (0.3, 0.4, 0.5, 0.6, 0.7),
    "merge_threshold": (0.0, 0.3, 0.4, 0.5, 0.6),
    "flow_split": (0.0, 0.15, 0.25, 0.35, 0.5),
    "min_area_fraction": (0.08, 0.15, 0.25, 0.4),
    "min_mean_prob": (0.0, 0.5, 0.6, 0.7, 0.8),
    "min_flow_coherence": (0.0, 0.25, 0.35, 0.45, 0.55),
}
#: a setting moves only when the move alone matches this much better (F1): on one
#: calibration field of 70 cells a move that drops one or two cells without a nucleus
#: gains under this, and such a move, made on one field, dropped faint cells of the
#: same experiment's other fields (docs/benchmarks.md, *Calibration from a nuclear stain*)
MIN_F1_GAIN = 0.01


def tune_to_nuclei(model: Model, sites: list[tuple[np.ndarray, np.ndarray]], *,
                   passes: int = 2) -> tuple[InstanceConfig, dict]:
    """Instance settings under which the model's cells match the nuclei one to one.

    Parameters
    ----------
    model : Model
    sites : list of (maps, centres)
        Per calibration site, the model's maps at the canonical scale
        (:meth:`~tlseg.inference.model.Model.canonical_maps`) and the nuclei's centres in
        those maps' pixels.
    passes : int
        Rounds of coordinate ascent: each setting of :data:`NUCLEI_TUNING_AXES` in turn
        takes the value with the best pooled F1 of :func:`nucleus_match`, the others
        held, when that raises F1 by more than :data:`MIN_F1_GAIN`.

    Returns
    -------
    InstanceConfig
        The tuned settings (the model's own when no move gains enough).
    dict
        F1 and :func:`nucleus_match` counts with the model's settings and the tuned ones,
        and whether the settings changed.
    """
    axes = dict(NUCLEI_TUNING_AXES)
    if not model.config.flows:
        axes.pop("flow_split"), axes.pop("min_flow_coherence")
    instances = instance_maker([maps for maps, _ in sites], model.config.canonical_diameter)

    scored: dict[InstanceConfig, np.ndarray] = {}

    def score(cfg: InstanceConfig) -> np.ndarray:
        # a second round tries many of the first round's settings again: each is made once
        if cfg not in scored:
            scored[cfg] = sum(nucleus_match(instances(k, cfg), centres)
                              for k, (_, centres) in enumerate(sites))
        return scored[cfg]

    start = model.config.instances
    best, best_counts = start, score(start)
    first = best_counts
    for _ in range(passes):
        changed = False
        for name, values in axes.items():
            if name == "seed_threshold" and best.use_flows:
                continue
            tried = [(cfg, score(cfg)) for cfg in
                     (replace(best, **{name: v}) for v in values if v != getattr(best, name))]
            if not tried:
                continue
            cfg, counts = max(tried, key=lambda t: _f1(t[1]))  # the first best
            if _f1(counts) > _f1(best_counts) + MIN_F1_GAIN:
                best, best_counts, changed = cfg, counts, True
        if not changed:
            break
    record = {"f1_model_settings": round(_f1(first), 4),
              "f1_tuned_settings": round(_f1(best_counts), 4),
              # matched cells, cells without a nucleus, unmatched nuclei
              "match_model_settings": first.tolist(),
              "match_tuned_settings": best_counts.tolist(),
              "settings_changed": best != start}
    return best, record


def keep_diameter(model: Model, estimate: float | None, d: float, out_dir) -> Model:
    """The calibrated model with its automatic diameter set to read ``d`` where it now
    reads ``estimate`` (its plate estimate on the calibration plate), saved to
    ``out_dir`` with the record in its card.

    The model learned the plate's cells at ``d`` and its instance settings were tuned
    there, but fine-tuning moves its size head, so left as it is a plate run with it
    would estimate another diameter than the one calibrated at. Its
    ``diameter_calibration`` is scaled by ``d / estimate`` (an estimate is the network's
    reading times that factor), or a taught model's fixed diameter becomes ``d``.
    Unchanged when there is no estimate (no cell found)."""
    cfg = model.config
    if not estimate or not d:
        return model
    record = {"calibrated_at": round(float(d), 2), "estimate_before": round(float(estimate), 2),
              "diameter_calibration_before": cfg.diameter_calibration}
    if cfg.taught_diameter:
        cfg = replace(cfg, taught_diameter=round(float(d), 2))
    else:
        factor = float(np.clip(cfg.diameter_calibration * d / estimate, 0.25, 4.0))
        cfg = replace(cfg, diameter_calibration=round(factor, 4))
    record["diameter_calibration"] = cfg.diameter_calibration
    log.info("automatic diameter kept at the calibration's: the calibrated model read "
             "%.1f px for %.1f px (diameter calibration %.3f -> %.3f)", estimate, d,
             record["diameter_calibration_before"], cfg.diameter_calibration)
    return _saved(model, cfg, "diameter_estimate", record, out_dir)


def check_structures(model: Model, pairs, centres, d: float, out_dir) -> Model:
    """The calibrated model with its structure steps (pattern removal and the structure
    filter, :mod:`tlseg.inference.repeats`) turned off when, on the calibration sites
    where they found a pattern, its cells match the nuclei better without them (F1 of
    :func:`nucleus_match` higher by more than :data:`MIN_F1_GAIN`); saved to ``out_dir``
    with the record in the card (``calibration.structures``).

    The steps drop what repeats on a lattice: a chip's posts, which hold no nucleus. A
    packed, regular monolayer can repeat too, and there the objects they drop are cells,
    each holding its nucleus (a synthetic DIC monolayer on a jittered hexagonal grid lost
    46 % of its cells). The paired stain tells the two apart. Unchanged, and nothing
    recorded, where no calibration site shows a pattern or the steps are off already.
    """
    inst = model.config.instances
    if inst.repeat_similarity <= 0 and not inst.remove_pattern:
        return model
    off = type(model)(replace(model.config, instances=replace(inst, repeat_similarity=0.0,
                                                              remove_pattern=False)),
                      model.net, card=model.card)
    with_steps = without = np.zeros(3, np.int64)
    n = 0
    for (_, image, _), yx in zip(pairs, centres):
        labels, details = model.predict_instances(image, diameter=d)
        if details.get("pattern", "none") == "none":  # nothing found: the same either way
            continue
        n += 1
        with_steps = with_steps + nucleus_match(labels, yx)
        without = without + nucleus_match(off.predict_instances(image, diameter=d)[0], yx)
    if n == 0:
        return model
    turn_off = _f1(without) > _f1(with_steps) + MIN_F1_GAIN
    record = {"sites_with_pattern": n, "f1_with": round(_f1(with_steps), 4),
              "f1_without": round(_f1(without), 4), "match_with": with_steps.tolist(),
              "match_without": without.tolist(), "turned_off": bool(turn_off)}
    log.info("structure steps on %d calibration site(s) with a pattern: one-to-one F1 "
             "%.3f with them, %.3f without%s", n, record["f1_with"], record["f1_without"],
             ": turned off, the objects they drop hold nuclei" if turn_off else "")
    return _saved(model, (off if turn_off else model).config, "structures", record, out_dir)


def tune_instances(model: Model, pairs, centres, d: float, out_dir) -> Model:
    """The calibrated model with instance settings tuned to the calibration sites' nuclei
    (:func:`tune_to_nuclei`), saved to ``out_dir`` with the record in its card."""
    sites = []
    for (_, image, _), yx in zip(pairs, centres):
        maps, details = model.canonical_maps(image, diameter=d)
        # a pixel's centre maps to (i + 0.5) * scale - 0.5 at the canonical scale
        sites.append((maps, (yx + 0.5) * details["scale"] - 0.5))
    tuned, record = tune_to_nuclei(model, sites)
    log.info("instance settings tuned to the nuclei: one-to-one F1 %.3f -> %.3f%s",
             record["f1_model_settings"], record["f1_tuned_settings"],
             "" if record["settings_changed"] else " (kept the model's own)")
    return _saved(model, replace(model.config, instances=tuned), "instances", record, out_dir)


def _saved(model: Model, config, key: str, record: dict, out_dir) -> Model:
    """``model`` with ``config`` and ``record`` as ``calibration[key]`` of its card, its
    tuning and card written to ``out_dir``: how each calibration step keeps its result."""
    card = dict(model.card)
    card["calibration"] = {**card["calibration"], key: record}
    model = Model(config, model.net, card=card)
    model.save_tuning(out_dir, card=card)
    return model
