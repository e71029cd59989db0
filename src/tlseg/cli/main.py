"""The ``tlseg`` command line: parse, then call the library.

Heavy imports (torch, scikit-image) happen inside the subcommands, so ``tlseg --help`` is
instant. Every :class:`~tlseg.errors.TlsegError` becomes ``error: <message>`` and exit
code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import TlsegError


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tlseg",
        description="Segment and count label-free cells in transmitted-light images.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("segment", help="segment images into cell instances")
    s.add_argument("inputs", nargs="+", help="image files or directories")
    s.add_argument("-o", "--out", required=True, help="output directory")
    s.add_argument("--model", default="tl-cells", help="shipped model name or model folder")
    s.add_argument("--diameter", type=float, help="cell diameter in pixels (default: estimate)")
    s.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png "
                   "(masks, per-cell <stem>_cells.csv and counts.csv are always written)")
    s.add_argument("--channel", type=int, help="channel of a multi-channel image to use")
    s.add_argument("--plane", type=int, help="plane of a 3-D stack to use")
    s.add_argument("--tile", type=int, default=1024, help="tile side for large images")
    s.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average with a flipped run (2x the time)")
    s.add_argument("--overwrite", action="store_true",
                   help="redo images whose masks already exist (default: skip them)")

    e = sub.add_parser("evaluate", help="score predicted masks against ground truth")
    e.add_argument("pred_dir", help="folder of <stem>_masks.tif")
    e.add_argument("gt_dir", help="folder of <stem>.tif ground-truth labels")
    e.add_argument("--json", help="write the scores to this JSON file")

    t = sub.add_parser("train", help="train a model from annotated folders")
    t.add_argument("data", nargs="+", help="folders with images/ and masks/ (or train/)")
    t.add_argument("-o", "--out", required=True, help="model folder to write")
    t.add_argument("--epochs", type=int, default=40, help="epochs of --steps-per-epoch batches")
    t.add_argument("--steps-per-epoch", type=int, default=100)
    t.add_argument("--batch-size", type=int, default=8)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--name", help="model name (default: the output folder's name)")
    t.add_argument("--partial", nargs="*", default=[], metavar="DATA",
                   help="data folders whose masks miss some cells (background trusted "
                        "only near labelled cells)")
    t.add_argument("--incomplete", nargs="*", default=[], metavar="DATA",
                   help="data folders whose masks miss only objects that are not cells of "
                        "interest, such as debris (background trusted everywhere); like "
                        "--partial, never held out to tune on")
    t.add_argument("--fragments", type=float, default=0.0, metavar="FRACTION",
                   help="treat labelled objects smaller than FRACTION of the median cell "
                        "area (and not cut by the image border) as annotation fragments: "
                        "ignored by the loss and by tuning (e.g. 0.15 for BBBC039 nuclei)")
    t.add_argument("--flatfield", choices=["divide", "subtract", "none"], default="divide",
                   help="shading correction: divide (transmitted light), subtract (fluorescence)")
    t.add_argument("--canonical-diameter", type=float, default=30.0,
                   help="cell diameter in pixels the network works at (smaller is faster; "
                        "compact objects such as nuclei need fewer pixels)")
    t.add_argument("--channels", type=int, nargs="+", default=[32, 48, 64, 96, 128],
                   metavar="C", help="U-Net feature channels per level (wider is slower to "
                   "run; ignored with --base, whose architecture is kept)")
    t.add_argument("--no-flows", action="store_true",
                   help="train without the flow outputs (distance seeds only; the older design)")
    t.add_argument("--flow-weight", type=float, default=2.0,
                   help="weight of the flow loss against the foreground and distance losses")
    t.add_argument("--ema", type=float, default=0.0, metavar="DECAY",
                   help="save an exponential moving average of the weights (e.g. 0.999; "
                        "0 = the last step's weights)")
    t.add_argument("--max-log2-scale", type=float, default=1.0, metavar="OCTAVES",
                   help="scale augmentation: crops are zoomed by up to 2**OCTAVES either way")
    t.add_argument("--max-noise", type=float, default=0.06, metavar="FRACTION",
                   help="noise augmentation: Gaussian noise up to this fraction of a crop's "
                        "mean level (0.06 for transmitted light; about 0.3 for fluorescence, "
                        "whose mean is the dark background)")
    t.add_argument("--texture", type=float, default=0.0, metavar="AMPLITUDE",
                   help="texture augmentation: multiply 30%% of the crops by 1 + a x smoothed "
                        "noise, a up to AMPLITUDE (0 = off), so that grain inside a cell or "
                        "nucleus is not read as a border")
    t.add_argument("--specks", type=float, default=0.0, metavar="FRACTION",
                   help="debris augmentation: this fraction of the crops get sharp dark specks "
                        "smaller than a cell, which stay labelled as what lies under them "
                        "(0 = off)")
    t.add_argument("--exclude", nargs="*", default=[], metavar="GLOB",
                   help="leave out images whose file name matches (e.g. the same field as a "
                        "test image)")
    t.add_argument("--device", default="cpu",
                   help="train on this PyTorch device: cpu (default) or cuda (an NVIDIA GPU)")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run")
    t.add_argument("--no-tune", action="store_true",
                   help="skip tuning the instance settings on the held-out images after "
                        "training (tune later with scripts/retune.py)")
    t.add_argument("--mode", choices=["finetune", "retrain"],
                   help="for a PROJECT: fine-tune the base model (minutes; the default) or "
                        "retrain it")
    t.add_argument("--base", help="model to start from: for a PROJECT the model to fine-tune "
                   "or retrain (default tl-cells); for data folders its weights replace the "
                   "random initialisation and its architecture, scale and shading "
                   "correction are kept (use a lower --lr and fewer --epochs)")
    t.add_argument("--steps", type=int, help="for a PROJECT: override the mode's step count")
    t.add_argument("--diameter", type=float, help="for a PROJECT: cell diameter in pixels")
    t.set_defaults(train_parser=t)

    sub.add_parser("models", help="list the shipped models and their model cards")

    d = sub.add_parser("demo", help="make synthetic images, segment them and score the result")
    d.add_argument("out", help="output directory")
    d.add_argument("--model", default="tl-cells")

    from .plate import add_parsers as add_plate_parsers
    from .project import add_parsers as add_project_parsers

    add_project_parsers(sub)
    add_plate_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        return {
            "segment": _segment,
            "evaluate": _evaluate,
            "train": _train,
            "models": _models,
            "demo": _demo,
            "project": _project,
            "roi": _roi,
            "plate": _plate,
            "demo-plate": _demo_plate,
        }[args.command](args)
    except TlsegError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _project(args) -> int:
    from .project import project

    return project(args)


def _roi(args) -> int:
    from .project import roi

    return roi(args)


def _plate(args) -> int:
    from .plate import plate

    return plate(args)


def _demo_plate(args) -> int:
    from .plate import demo_plate

    return demo_plate(args)


def _segment(args) -> int:
    from tqdm import tqdm

    from ..io import list_images
    from ..inference.model import set_threads
    from ..inference.model import Model
    from ..analysis.pipeline import segment_files

    set_threads()
    files = list_images(args.inputs)
    model = Model.load(args.model)
    failed = segment_files(
        files, model, args.out, diameter=args.diameter, channel=args.channel,
        plane=args.plane, tile=args.tile, tta=args.tta, overlay=args.overlay,
        overwrite=args.overwrite, log=tqdm.write,  # prints above the bar
        progress=lambda items: tqdm(items, unit="image", disable=len(items) < 2,
                                    file=sys.stderr))
    if failed:
        print(f"{failed} of {len(files)} images failed; see the errors above", file=sys.stderr)
        return 2
    return 0


def _evaluate(args) -> int:
    from ..io import atomic_path, read_labels
    from ..analysis.metrics import match_counts, summarize

    pred_dir, gt_dir = Path(args.pred_dir), Path(args.gt_dir)
    for d in (pred_dir, gt_dir):
        if not d.is_dir():
            raise TlsegError(f"{d}: no such directory")
    preds = sorted(pred_dir.glob("*_masks.tif"))
    if not preds:
        raise TlsegError(f"{pred_dir}: no *_masks.tif files (run `tlseg segment` first)")
    rows, counts = [], []
    for p in preds:
        stem = p.name[: -len("_masks.tif")]
        gt = next((gt_dir / (stem + s) for s in (".tif", ".tiff", ".png")
                   if (gt_dir / (stem + s)).is_file()), None)
        if gt is None:
            print(f"warning: {p.name}: no ground truth {stem}.tif in {gt_dir}, skipped",
                  file=sys.stderr)
            continue
        true = read_labels(gt)
        pred = read_labels(p, shape=true.shape)
        c = match_counts(true, pred)
        counts.append(c)
        rows.append({"image": stem, **summarize(c)})
    if not counts:
        raise TlsegError(f"no predicted masks in {pred_dir} match a ground truth in {gt_dir}")
    overall = summarize(counts)
    head = f"{'image':<32} {'AP50':>6} {'AP75':>6} {'mAP':>6} {'prec':>6} {'rec':>6} {'F1':>6} {'count':>6} {'true':>6}"
    print(head)
    for r in rows + [{"image": "OVERALL (pooled)", **overall}]:
        print(f"{r['image'][:32]:<32} {r['ap50']:6.3f} {r['ap75']:6.3f} {r['map']:6.3f} "
              f"{r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f} {r['n_pred']:6d} {r['n_true']:6d}")
    if args.json:
        with atomic_path(args.json) as tmp:
            tmp.write_text(json.dumps({"images": rows, "overall": overall}, indent=2))
    return 0


# `tlseg train` options that only one kind of training data uses
FOLDERS_ONLY = ("epochs", "steps_per_epoch", "batch_size", "lr", "partial", "incomplete",
                "fragments", "flatfield", "canonical_diameter", "channels", "no_flows",
                "flow_weight", "ema", "max_log2_scale", "max_noise", "texture", "specks",
                "exclude", "no_tune", "name", "device")
PROJECT_ONLY = ("mode", "steps", "diameter")
#: options of `tlseg train` that both kinds of data use (a test checks that every option
#: is in exactly one of the three)
TRAIN_COMMON = ("data", "out", "seed", "resume", "base")


def _refuse_options(args, names, what: str) -> None:
    """Refuse options given on the command line that ``what`` does not use (silently
    ignoring them would train something else than the user asked for)."""
    parser = args.train_parser
    given = ["--" + n.replace("_", "-") for n in names
             if getattr(args, n) != parser.get_default(n)]
    if given:
        raise TlsegError(f"{' '.join(given)}: not used for {what}; leave "
                         f"{'it' if len(given) == 1 else 'them'} out (see `tlseg train --help`)")


def _train(args) -> int:
    import shlex

    from tqdm import tqdm

    from ..config import ModelConfig, TrainConfig
    from ..inference.model import set_threads
    from ..training.train import load_folders, train

    set_threads()
    out = Path(args.out)
    is_project = len(args.data) == 1 and (Path(args.data[0]) / "project.yaml").is_file()
    _refuse_options(args, PROJECT_ONLY if not is_project else FOLDERS_ONLY,
                    "training from data folders" if not is_project else "a PROJECT")
    if is_project:
        from .project import train_project

        return train_project(args)
    try:
        tc = TrainConfig(epochs=args.epochs, steps_per_epoch=args.steps_per_epoch,
                         batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         flow_weight=args.flow_weight, ema=args.ema,
                         max_log2_scale=args.max_log2_scale, max_noise=args.max_noise,
                         texture=args.texture, specks=args.specks)
        mc = ModelConfig(name=args.name or out.name, flatfield=args.flatfield,
                         channels=tuple(args.channels),
                         canonical_diameter=args.canonical_diameter, flows=not args.no_flows)
    except ValueError as exc:
        raise TlsegError(str(exc)) from None
    base = None
    if args.base:
        from ..inference.model import Model

        # the architecture, scale and shading correction are the base model's
        base = Model.load(args.base)
        mc = ModelConfig.from_dict({**base.config.to_dict(), "name": mc.name})
    bar = tqdm(total=0, desc="loading", unit="image", file=sys.stderr)

    def on_load(i, n):
        bar.total = n
        bar.update(1)

    samples = load_folders(args.data, canonical_diameter=mc.canonical_diameter,
                           partial_dirs=args.partial, incomplete_dirs=args.incomplete,
                           exclude=args.exclude, fragments=args.fragments, progress=on_load)
    bar.close()
    if not samples:
        raise TlsegError("the training data holds no labelled cells")
    diameters = sorted(s.diameter for s in samples)
    mc = ModelConfig.from_dict({**mc.to_dict(),
                                "default_diameter": round(diameters[len(diameters) // 2], 1)})
    bar = tqdm(total=tc.total_steps, desc="training", unit="step", file=sys.stderr)

    def on_step(step, total, parts):
        bar.n = step
        bar.set_postfix(fg=f"{parts['fg']:.3f}", dist=f"{parts['dist']:.3f}",
                        flow=f"{parts['flow']:.3f}", refresh=False)
        bar.refresh()

    card = {"command": "tlseg train " + " ".join(shlex.quote(a) for a in sys.argv[2:])
            if sys.argv[1:2] == ["train"] else None,
            "data": [str(d) for d in args.data], "partial": list(args.partial),
            "incomplete": list(args.incomplete), "exclude": list(args.exclude),
            "fragments": args.fragments}
    if base is not None:
        card["parent"] = base.card.get("name") or base.config.name
        card["parent_card"] = {k: base.card.get(k) for k in ("command", "wall_time_s", "device")
                               if k in base.card}
    model = train(samples, out, model_config=mc, train_config=tc, resume=args.resume,
                  init=base,
                  progress=on_step, card=card, device=args.device,
                  tune=not args.no_tune)
    bar.close()
    print(f"model written to {out}")
    for src, sc in model.card.get("holdout_scores", {}).items():
        print(f"  held-out {src}: AP50 {sc['ap50']:.3f}  mAP {sc['map']:.3f}")
    return 0


def _models(args) -> int:
    from ..inference.model import Model, shipped_models

    models = shipped_models()
    if not models:
        print("no models are shipped with this installation")
        return 0
    for name, folder in models.items():
        m = Model.from_folder(folder)
        card = m.card
        print(f"{name}  ({folder})")
        for key in ("description", "modalities", "sources", "wall_time_s", "command"):
            if card.get(key) is not None:
                print(f"  {key}: {card[key]}")
        readme = folder / "README.md"
        if readme.is_file():
            print(f"  model card: {readme}")
    return 0


def _demo(args) -> int:
    import tifffile

    from ..synthetic import MODALITIES, synthetic_field

    out = Path(args.out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "ground_truth").mkdir(parents=True, exist_ok=True)
    for i, modality in enumerate(MODALITIES):
        f = synthetic_field((512, 512), diameter=(24, 32, 40)[i], modality=modality, seed=i)
        tifffile.imwrite(out / "images" / f"{modality}.tif", f["tl"], compression="lzw")
        tifffile.imwrite(out / "ground_truth" / f"{modality}.tif", f["labels"].astype("uint16"))
    print(f"synthetic images with known cells written to {out / 'images'}")
    rc = main(["segment", str(out / "images"), "-o", str(out / "masks"), "--overlay",
               "--model", args.model, "--overwrite"])
    if rc:
        return rc
    print(f"masks and overlays in {out / 'masks'}; scores against the known cells:")
    return main(["evaluate", str(out / "masks"), str(out / "ground_truth"),
                 "--json", str(out / "scores.json")])


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
