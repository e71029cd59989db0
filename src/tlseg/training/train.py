"""Training a model from annotated folders, with resumable checkpoints.

The loss is masked: pixels whose label is unknown (``valid`` = 0) do not count, so
partially labelled images and sparse ROIs train only where they say something.

- foreground: binary cross-entropy;
- normalised distance: binary cross-entropy against the continuous target;
- size: L1 on log2 diameter, on cell pixels;
- flows (models with flows): squared error of the flow vector, weighted by
  ``TrainConfig.flow_weight`` (Cellpose weighs its flows strongly too: they carry the
  separation of touching cells).

Every ``checkpoint_every`` steps the network, optimiser, schedule, random states and the
step are written atomically to ``<out>/checkpoint.pt``; ``resume=True`` continues from it
and gives the same result as an uninterrupted run. At the end the post-processing is
tuned on held-out training images (:mod:`tlseg.training.tune`) and the model folder is written.
"""

from __future__ import annotations

import copy
import csv
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ..config import ModelConfig, TrainConfig
from ..errors import TlsegError
from ..inference.model import Model
from ..inference.network import UNet
from ..inference.preprocess import normalize
from ..inference.runtime import repeatable
from ..io import atomic_path, read_image
from .augment import augment_normalized, augment_raw, optics
from .crowd import crowded_samples, monolayer_samples, weight_borders
from .data import (
    CropSampler,
    Sample,
    list_pairs,
    load_sample,
    resolve_data_dir,
    split_holdout,
    stain_path,
)
from .structures import add_structures
from .tune import tune_model

CHECKPOINT = "checkpoint.pt"
# crowded fields (TrainConfig.crowded): how many per source, and their side (canonical px)
CROWDED_PER_SOURCE = 16
CROWDED_SIZE = 384
# synthetic monolayers (TrainConfig.monolayers) per modality, of CROWDED_SIZE² as well
MONOLAYERS_PER_MODALITY = 16


def load_folders(
    data_dirs, *, canonical_diameter: float, partial_dirs=(), incomplete_dirs=(), exclude=(),
    fragments: float = 0.0, stained_dirs=(), nuclei_model="nuclei", progress=None
) -> list[Sample]:
    """Load every annotated image of the given data folders at the canonical scale.

    Images whose file name matches one of the ``exclude`` glob patterns are left out.
    ``partial_dirs``, ``incomplete_dirs`` and ``fragments``: see
    :func:`tlseg.training.data.load_sample`. ``stained_dirs``: folders with a ``stain/``
    folder holding each image's nuclear stain under the same name; ``nuclei_model``
    segments it, and the nuclei judge the masks (``stain_nuclei`` of
    :func:`~tlseg.training.data.load_sample`).
    """
    if not 0.0 <= fragments < 1.0:
        raise TlsegError(f"--fragments must be a fraction in [0, 1), got {fragments}")
    partial = {resolve_data_dir(p).resolve() for p in partial_dirs}
    incomplete = {resolve_data_dir(p).resolve() for p in incomplete_dirs}
    stained = {resolve_data_dir(p).resolve() for p in stained_dirs}
    folders = [resolve_data_dir(d) for d in data_dirs]
    both = sorted(map(str, (partial & incomplete) | (stained & (partial | incomplete))))
    if both:
        raise TlsegError(f"{both[0]}: given as more than one of --partial, --incomplete and "
                         "--stain; choose one")
    stray = sorted(map(str, (partial | incomplete | stained) - {f.resolve() for f in folders}))
    if stray:
        raise TlsegError(f"{stray[0]}: named by --partial/--incomplete/--stain but not among "
                         "the training data folders; add it to DATA or drop it")
    samples = []
    jobs = []
    for folder in folders:
        source = folder.parent.name if folder.name in ("train", "val") else folder.name
        flags = (folder.resolve() in partial, folder.resolve() in incomplete)
        is_stained = folder.resolve() in stained
        for img, mask in list_pairs(folder, exclude):
            stain = stain_path(folder, img) if is_stained else None
            jobs.append((img, mask, source, *flags, stain))
    nuclei = Model.load(nuclei_model) if stained else None
    for i, (img, mask, source, is_partial, is_incomplete, stain) in enumerate(jobs):
        found = None if stain is None else nuclei.segment(read_image(stain))
        s = load_sample(img, mask, canonical_diameter=canonical_diameter, source=source,
                        partial=is_partial, incomplete=is_incomplete, fragments=fragments,
                        stain_nuclei=found)
        if s is not None:
            samples.append(s)
        if progress:
            progress(i + 1, len(jobs))
    return samples


def masked_loss(pred: torch.Tensor, target: torch.Tensor, *, distill: float = 0.0,
                flow_weight: float = 2.0) -> tuple[torch.Tensor, dict]:
    """Total loss and its parts for predictions (B,3|5,H,W) and targets (B,6+,H,W).

    Targets beyond the first 6 channels are a teacher's foreground and distance maps (and
    flows); with ``distill`` > 0 the prediction is pulled towards them where labels are
    unknown, so a retrained model keeps what the base model knew outside the annotated
    ROIs.
    """
    fg, dist, logsize, valid = target[:, :4].unbind(1)
    known = (valid > 0).float()  # the foreground is known
    whole = (valid >= 1).float()  # the shape targets are known too (not a cut cell)
    n_valid = known.sum().clamp_min(1.0)
    # ``valid`` above 1 is a border weight (TrainConfig.border_weight)
    weight = torch.where(valid >= 1, valid, known)

    def bce(k, t, w):
        return (F.binary_cross_entropy_with_logits(pred[:, k], t, reduction="none") * w).sum()

    def sq(p, t, w):
        return (((p - t) ** 2).sum(1) * w).sum()

    l_fg = bce(0, fg, weight) / n_valid
    l_dist = bce(1, dist, whole * weight) / n_valid
    cells = fg * whole
    l_size = ((pred[:, 2] - logsize).abs() * cells).sum() / cells.sum().clamp_min(1.0)
    total = l_fg + l_dist + 0.2 * l_size
    parts = {"fg": l_fg.item(), "dist": l_dist.item(), "size": l_size.item(), "flow": 0.0}
    flows = pred.shape[1] >= 5
    if flows:
        l_flow = sq(pred[:, 3:5], target[:, 4:6], whole * weight) / n_valid
        total = total + flow_weight * l_flow
        parts["flow"] = l_flow.item()
    if distill > 0 and target.shape[1] > 6:
        # the teacher fills in what the labels leave unknown: everything outside the
        # ROIs, and the shape of cells cut by a ROI's edge
        teacher = target[:, 6:]
        unknown, shape_unknown = 1.0 - known, 1.0 - whole
        l_kd = bce(0, teacher[:, 0], unknown) + bce(1, teacher[:, 1], shape_unknown)
        if flows and teacher.shape[1] >= 4:
            l_kd = l_kd + flow_weight * sq(pred[:, 3:5], teacher[:, 2:4], shape_unknown)
        l_kd = l_kd / shape_unknown.sum().clamp_min(1.0)
        total = total + distill * l_kd
        parts["distill"] = l_kd.item()
    return total, parts


def _save_checkpoint(path: Path, step, net, opt, sched, np_rng, torch_rng, meta, ema=None):
    state = {
        "step": step,
        "net": net.state_dict(),
        "ema": ema.state_dict() if ema is not None else None,
        "opt": opt.state_dict(),
        "sched": sched.state_dict(),
        "np_rng": np_rng.bit_generator.state,
        "torch_rng": torch_rng.get_state(),
        "meta": meta,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def one_cycle(opt: torch.optim.Optimizer, lr: float, total: int, *, warmup: float):
    """The learning-rate schedule of a training of ``total`` steps: one cycle (a warm-up of
    a ``warmup`` share of the steps, at least two, then a cosine decay), or a constant
    ``lr`` under 4 steps. PyTorch's ``OneCycleLR`` divides by zero when the warm-up ends
    on the first step (20 steps with a 5 % warm-up).

    Examples
    --------
    >>> net = torch.nn.Linear(1, 1)
    >>> for total in (1, 10, 20, 300):
    ...     opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    ...     sched = one_cycle(opt, 1e-3, total, warmup=0.05)
    ...     for _ in range(total):
    ...         opt.step(); sched.step()
    """
    if total < 4:
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda _: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, total_steps=total, pct_start=min(0.5, max(warmup, 2 / total)))


def check_output_folder(out, *, resume: bool) -> None:
    """Refuse an output folder that would lose work: one holding an unfinished run's
    checkpoint (unless ``resume``) or a trained model. Callers that prepare for minutes
    before training (calibration, teaching) check first."""
    out = Path(out)
    ckpt = (out / CHECKPOINT).exists()
    if ckpt and not resume:
        raise TlsegError(
            f"{out}: holds a checkpoint of an unfinished run; pass --resume to continue it "
            "or choose another output folder"
        )
    if (out / "weights.pt").exists() and not ckpt and not resume:
        raise TlsegError(f"{out}: holds a trained model; choose another output folder "
                         "(or move that model away first)")


def train_samples(
    samples: list[Sample],
    out_dir,
    *,
    model_config: ModelConfig,
    train_config: TrainConfig,
    init: Model | None = None,
    resume: bool = False,
    progress: Callable[[int, int, dict], None] | None = None,
    card: dict | None = None,
    device: str = "cpu",
    tune: bool = True,
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
    device : str
        Where the network trains ('cpu', or 'cuda' on a machine with an NVIDIA GPU);
        crops are cut and augmented on the CPU either way, and the saved model runs on
        the CPU.
    tune : bool
        Tune the instance settings and the diameter calibration on the held-out images
        after training (:func:`tlseg.tune` does it later when this is off).
    """
    out = Path(out_dir)
    check_output_folder(out, resume=resume)
    out.mkdir(parents=True, exist_ok=True)
    ckpt_path = out / CHECKPOINT
    tc = train_config
    settings = {"train": asdict(train_config), "model": model_config.to_dict()}
    torch.manual_seed(tc.seed)
    np_rng = np.random.default_rng(tc.seed)
    torch_rng = torch.Generator().manual_seed(tc.seed)
    train_set, held = split_holdout(samples, tc.holdout_fraction)
    crowded = []
    if tc.crowded > 0:  # from the training images only, on a random stream of their own
        crowded = crowded_samples(train_set, n=CROWDED_PER_SOURCE, size=CROWDED_SIZE,
                                  canonical_diameter=model_config.canonical_diameter,
                                  rng=np.random.default_rng([tc.seed, 1]),
                                  blend=tc.crowded_blend)
    monolayers = []
    if tc.monolayers > 0:
        monolayers = monolayer_samples(n=MONOLAYERS_PER_MODALITY, size=CROWDED_SIZE,
                                       canonical_diameter=model_config.canonical_diameter,
                                       rng=np.random.default_rng([tc.seed, 2]))
    if tc.border_weight > 0:
        train_set = [copy.copy(s) for s in train_set]  # the caller's samples stay as given
        for s in train_set:
            s.targets = s.targets.clone()
        for s in train_set + crowded + monolayers:  # the extra fields are this run's own
            weight_borders(s, tc.border_weight)
    sampler = CropSampler(train_set, crop=tc.crop, max_log2_scale=tc.max_log2_scale, rng=np_rng,
                          crowded=crowded, crowded_fraction=tc.crowded,
                          monolayers=monolayers, monolayer_fraction=tc.monolayers,
                          dense_fraction=tc.dense,
                          dense_radius=2 * model_config.canonical_diameter)
    dev = _device(device)
    net = UNet(model_config.channels, model_config.n_outputs)
    if init is not None:
        net.load_state_dict(init.net.state_dict())
    net.to(dev)
    # the running average of the weights (and BatchNorm statistics) that is saved
    ema = (AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(tc.ema), use_buffers=True)
           if tc.ema > 0 else None)
    opt = torch.optim.AdamW(net.parameters(), lr=tc.lr, weight_decay=1e-4)
    sched = one_cycle(opt, tc.lr, tc.total_steps, warmup=0.1 if init is None else 0.05)
    step, elapsed_before = 0, 0.0
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location=dev, weights_only=False)
        before = state["meta"].get("settings")
        if before is not None:
            # a setting added to tlseg after the run began took its default there; the
            # instance settings are chosen after training and do not change it
            defaults = {"train": asdict(TrainConfig()), "model": ModelConfig().to_dict()}
            before = {part: {**defaults[part], **before.get(part, {})} for part in settings}
            now = {part: dict(v) for part, v in settings.items()}
            before["model"].pop("instances", None)
            now["model"].pop("instances", None)
        if before is not None and before != now:
            diff = sorted(f"{part}.{k}" for part in now for k in now[part]
                          if before[part].get(k) != now[part][k])
            raise TlsegError(f"{out}: the unfinished run used other settings "
                             f"({', '.join(diff)}); resume with the same ones, or choose "
                             "another output folder")
        net.load_state_dict(state["net"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        opt.load_state_dict(state["opt"])
        sched.load_state_dict(state["sched"])
        np_rng.bit_generator.state = state["np_rng"]
        torch_rng.set_state(state["torch_rng"].cpu())
        step = state["step"]
        elapsed_before = state["meta"].get("elapsed_s", 0.0)
    log_path = out / "train_log.csv"
    new_log = not log_path.exists() or step == 0
    log = open(log_path, "w" if new_log else "a", newline="")
    writer = csv.writer(log)
    if new_log:
        writer.writerow(["step", "loss", "fg", "dist", "size", "flow", "lr", "elapsed_s"])
    sigma = model_config.background_sigma * model_config.canonical_diameter
    t0 = time.time()
    net.train()
    if tc.freeze_norm:  # few examples: keep the base model's normalisation statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.eval()
    with log, repeatable(dev.type == "cpu"):  # the same data and seed, the same model
        while step < tc.total_steps:
            raw, target, ref = sampler.batch(tc.batch_size)
            raw = add_structures(raw, target, torch_rng, fraction=tc.structures,
                                 diameter=model_config.canonical_diameter)
            x = augment_raw(raw, ref, torch_rng, max_noise=tc.max_noise, texture=tc.texture,
                            specks=tc.specks)
            x = normalize(x, flatfield=model_config.flatfield, sigma=sigma)
            x = optics(x, torch_rng, tc.optics)
            x = augment_normalized(x, torch_rng)
            loss, parts = masked_loss(net(x.to(dev)), target.to(dev), distill=tc.distill,
                                      flow_weight=tc.flow_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:
                ema.update_parameters(net)
            step += 1
            elapsed = elapsed_before + time.time() - t0
            if step % 10 == 0 or step == tc.total_steps:
                writer.writerow([step, f"{loss.item():.4f}", f"{parts['fg']:.4f}",
                                 f"{parts['dist']:.4f}", f"{parts['size']:.4f}",
                                 f"{parts['flow']:.4f}",
                                 f"{sched.get_last_lr()[0]:.2e}", f"{elapsed:.1f}"])
                log.flush()
            if step % tc.checkpoint_every == 0 and step < tc.total_steps:
                _save_checkpoint(ckpt_path, step, net, opt, sched, np_rng, torch_rng,
                                 {"elapsed_s": elapsed, "settings": settings}, ema)
            if progress:
                progress(step, tc.total_steps, parts)
    if ema is not None:
        net = ema.module
    net.cpu().eval()
    model = Model(model_config, net)
    holdout_scores, calibration = {}, {}
    if held and tune:
        model, holdout_scores, calibration = tune_model(model, held)
    meta = {
        "train_config": asdict(tc),
        "wall_time_s": round(elapsed_before + time.time() - t0, 1),
        "device": str(dev) if dev.type == "cpu" else f"{dev} ({torch.cuda.get_device_name(dev)})",
        "n_train_images": len(train_set),
        "n_holdout_images": len(held),
        "sources": sorted({s.source for s in samples}),
        "holdout_scores": holdout_scores,
    }
    if calibration:
        meta["holdout_scores_estimated_diameter"] = calibration
    meta.update(card or {})
    model.save(out, card=meta)
    ckpt_path.unlink(missing_ok=True)
    return model


def _device(name: str) -> torch.device:
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise TlsegError(f"--device {name!r} is not a device name; use cpu or cuda") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise TlsegError("--device cuda: no CUDA GPU is available to PyTorch here; use cpu")
    return dev
