"""Training a model from annotated folders, with resumable checkpoints.

The loss is masked: pixels whose label is unknown (``valid`` = 0) do not count, so
partially labelled images and sparse ROIs train only where they say something.

- foreground: binary cross-entropy;
- normalised distance: binary cross-entropy against the continuous target;
- size: L1 on log2 diameter, on cell pixels.

Every ``checkpoint_every`` steps the network, optimiser, schedule, random states and the
step are written atomically to ``<out>/checkpoint.pt``; ``resume=True`` continues from it
and gives the same result as an uninterrupted run. At the end the thresholds are tuned on
held-out training images and the model folder is written.
"""

from __future__ import annotations

import csv
import itertools
import time
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .augment import augment_normalized, augment_raw
from .config import ModelConfig, TrainConfig
from .data import CropSampler, Sample, list_pairs, load_sample, resolve_data_dir, split_holdout
from .errors import TlsegError
from .io import atomic_path
from .metrics import match_counts, summarize
from .model import Model
from .network import UNet
from .postprocess import InstanceConfig, maps_to_instances
from .preprocess import normalize

CHECKPOINT = "checkpoint.pt"


def load_folders(
    data_dirs, *, canonical_diameter: float, partial_dirs=(), progress=None
) -> list[Sample]:
    """Load every annotated image of the given data folders at the canonical scale."""
    partial = {resolve_data_dir(p).resolve() for p in partial_dirs}
    samples = []
    jobs = []
    for d in data_dirs:
        folder = resolve_data_dir(d)
        source = folder.parent.name if folder.name in ("train", "val") else folder.name
        for img, mask in list_pairs(folder):
            jobs.append((img, mask, source, folder.resolve() in partial))
    for i, (img, mask, source, is_partial) in enumerate(jobs):
        s = load_sample(img, mask, canonical_diameter=canonical_diameter, source=source,
                        partial=is_partial)
        if s is not None:
            samples.append(s)
        if progress:
            progress(i + 1, len(jobs))
    return samples


def masked_loss(pred: torch.Tensor, target: torch.Tensor, *, distill: float = 0.0
                ) -> tuple[torch.Tensor, dict]:
    """Total loss and its parts for predictions (B,3,H,W) and targets (B,4,H,W).

    Targets with 6 channels also carry a teacher's foreground and distance maps; with
    ``distill`` > 0 the prediction is pulled towards them where labels are unknown, so a
    retrained model keeps what the base model knew outside the annotated ROIs.
    """
    fg, dist, logsize, valid = target[:, :4].unbind(1)
    n_valid = valid.sum().clamp_min(1.0)
    l_fg = (F.binary_cross_entropy_with_logits(pred[:, 0], fg, reduction="none") * valid).sum() / n_valid
    l_dist = (F.binary_cross_entropy_with_logits(pred[:, 1], dist, reduction="none") * valid).sum() / n_valid
    cells = fg * valid
    l_size = ((pred[:, 2] - logsize).abs() * cells).sum() / cells.sum().clamp_min(1.0)
    total = l_fg + l_dist + 0.2 * l_size
    parts = {"fg": l_fg.item(), "dist": l_dist.item(), "size": l_size.item()}
    if distill > 0 and target.shape[1] == 6:
        unknown = 1.0 - valid
        n_unknown = unknown.sum().clamp_min(1.0)
        l_kd = sum((F.binary_cross_entropy_with_logits(pred[:, k], target[:, 4 + k],
                                                       reduction="none") * unknown).sum()
                   for k in (0, 1)) / n_unknown
        total = total + distill * l_kd
        parts["distill"] = l_kd.item()
    return total, parts


def _save_checkpoint(path: Path, step, net, opt, sched, np_rng, torch_rng, meta):
    state = {
        "step": step,
        "net": net.state_dict(),
        "opt": opt.state_dict(),
        "sched": sched.state_dict(),
        "np_rng": np_rng.bit_generator.state,
        "torch_rng": torch_rng.get_state(),
        "meta": meta,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def train(
    samples: list[Sample],
    out_dir,
    *,
    model_config: ModelConfig,
    train_config: TrainConfig,
    init: Model | None = None,
    resume: bool = False,
    progress: Callable[[int, int, dict], None] | None = None,
    card: dict | None = None,
) -> Model:
    """Train a model on annotated samples and save it to ``out_dir``.

    Parameters
    ----------
    samples : list of Sample
        From :func:`load_folders`.
    init : Model, optional
        Start from these weights (fine-tuning) instead of a random initialisation.
    resume : bool
        Continue from ``out_dir/checkpoint.pt``. Without it an existing checkpoint is an
        error, so an interrupted run is never silently restarted or overwritten.
    progress : callable(step, total, losses), optional
        Called after every step.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    tc = train_config
    if ckpt_path.exists() and not resume:
        raise TlsegError(
            f"{out}: holds a checkpoint of an unfinished run; pass --resume to continue it "
            "or choose another output folder"
        )
    torch.manual_seed(tc.seed)
    np_rng = np.random.default_rng(tc.seed)
    torch_rng = torch.Generator().manual_seed(tc.seed)
    train_set, held = split_holdout(samples, tc.holdout_fraction)
    sampler = CropSampler(train_set, crop=tc.crop, max_log2_scale=tc.max_log2_scale, rng=np_rng)
    net = UNet(model_config.channels)
    if init is not None:
        net.load_state_dict(init.net.state_dict())
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=tc.lr, total_steps=tc.total_steps, pct_start=0.1 if init is None else 0.05
    )
    step, elapsed_before = 0, 0.0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        net.load_state_dict(state["net"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        np_rng.bit_generator.state = state["np_rng"]
        torch_rng.set_state(state["torch_rng"])
        step = state["step"]
        elapsed_before = state["meta"].get("elapsed_s", 0.0)
    log_path = out / "train_log.csv"
    new_log = not log_path.exists() or step == 0
    log = open(log_path, "w" if new_log else "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "loss", "fg", "dist", "size", "lr", "elapsed_s"])
    sigma = model_config.background_sigma * model_config.canonical_diameter
    t0 = time.time()
    net.train()
    if tc.freeze_norm:  # few examples: keep the base model's normalisation statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    try:
        while step < tc.total_steps:
            raw, target, ref = sampler.batch(tc.batch_size)
            x = augment_raw(raw, ref, torch_rng)
            x = normalize(x, flatfield=model_config.flatfield, sigma=sigma)
            x = augment_normalized(x, torch_rng)
            loss, parts = masked_loss(net(x), target, distill=tc.distill)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            elapsed = elapsed_before + time.time() - t0
            if step % 10 == 0 or step == tc.total_steps:
                writer.writerow([step, f"{loss.item():.4f}", f"{parts['fg']:.4f}",
                                 f"{parts['dist']:.4f}", f"{parts['size']:.4f}",
                                 f"{sched.get_last_lr()[0]:.2e}", f"{elapsed:.1f}"])
                log.flush()
            if step % tc.checkpoint_every == 0 and step < tc.total_steps:
                _save_checkpoint(ckpt_path, step, net, opt, sched, np_rng, torch_rng,
                                 {"elapsed_s": elapsed})
            if progress:
                progress(step, tc.total_steps, parts)
    finally:
        log.close()
    net.eval()
    model = Model(model_config, net)
    tuned, holdout_scores = (tune_thresholds(model, held) if held
                             else (model_config.instances, {}))
    model = Model(_replace_instances(model_config, tuned), net)
    meta = {
        "train_config": asdict(tc),
        "wall_time_s": round(elapsed_before + time.time() - t0, 1),
        "n_train_images": len(train_set),
        "n_holdout_images": len(held),
        "sources": sorted({s.source for s in samples}),
        "holdout_scores": holdout_scores,
    }
    meta.update(card or {})
    model.save(out, card=meta)
    ckpt_path.unlink(missing_ok=True)
    return model


def _replace_instances(cfg: ModelConfig, inst: InstanceConfig) -> ModelConfig:
    d = cfg.to_dict()
    d["instances"] = asdict(inst)
    return ModelConfig.from_dict(d)


def _image_at_canonical(s: Sample) -> np.ndarray:
    return s.image[0].numpy()


def tune_thresholds(model: Model, held: list[Sample]) -> tuple[InstanceConfig, dict]:
    """Grid-search the instance thresholds for the best pooled AP@0.5 on held-out images.

    Images are scored at the canonical scale (their known diameter).
    """
    canon = model.config.canonical_diameter
    cache = []
    for s in held:
        maps = model.predict_maps(_image_at_canonical(s))
        true = np.where(s.labels > 0, s.labels, 0)
        cache.append((maps, true))
    best = None
    for fg_t, seed_t, area, merge in itertools.product(
            (0.4, 0.5, 0.6), (0.3, 0.4, 0.5, 0.6, 0.7), (0.08, 0.15), (0.0, 0.3, 0.4, 0.5, 0.6)):
        cfg = InstanceConfig(fg_threshold=fg_t, seed_threshold=seed_t, min_area_fraction=area,
                             merge_threshold=merge)
        counts = [match_counts(true, maps_to_instances(m[0], m[1], canonical_diameter=canon,
                                                       config=cfg))
                  for m, true in cache]
        score = summarize(counts)
        if best is None or score["ap50"] > best[1]["ap50"]:
            best = (cfg, score)
    per_source: dict[str, list] = {}
    for s, (maps, true) in zip(held, cache):
        pred = maps_to_instances(maps[0], maps[1], canonical_diameter=canon, config=best[0])
        per_source.setdefault(s.source, []).append(match_counts(true, pred))
    scores = {src: {k: round(v, 4) for k, v in summarize(c).items()}
              for src, c in per_source.items()}
    return best[0], scores
