"""The ``tlseg`` command line: parse, then call the public API (:mod:`tlseg`).

Heavy imports (torch, scikit-image) happen inside the commands, so ``tlseg --help`` is
instant. Defaults come from the settings classes in :mod:`tlseg.config`. The library
logs through :mod:`logging`; here its messages are printed (warnings and errors to
stderr as ``warning:`` / ``error:``), and every :class:`~tlseg.errors.TlsegError`
becomes ``error: <message>`` and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from ..config import ModelConfig, SegmentConfig, TrainConfig, default
from ..errors import TlsegError


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tlseg",
        description="Segment and count label-free cells in transmitted-light images.",
    )
    sub = p.add_subparsers(dest="command", required=True)

    seg = SegmentConfig
    s = sub.add_parser("segment", help="segment images into cell instances")
    s.add_argument("inputs", nargs="+", help="image files or directories")
    s.add_argument("-o", "--out", required=True, help="output directory")
    s.add_argument("--model", default=default(seg, "model"),
                   help="shipped model name or model folder")
    s.add_argument("--diameter", type=float, help="cell diameter in pixels (default: estimate)")
    s.add_argument("--overlay", action="store_true", help="also write <stem>_overlay.png "
                   "(masks, per-cell <stem>_cells.csv and counts.csv are always written)")
    s.add_argument("--channel", type=int, help="channel of a multi-channel image to use")
    s.add_argument("--plane", type=int, help="plane of a 3-D stack to use")
    s.add_argument("--tile", type=int, default=default(seg, "tile"),
                   help="tile side for large images")
    s.add_argument("--tta", action="store_true",
                   help="test-time augmentation: average with a flipped run (2x the time)")
    s.add_argument("--overwrite", action="store_true",
                   help="redo images whose masks already exist (default: skip them)")

    e = sub.add_parser("evaluate", help="score predicted masks against ground truth")
    e.add_argument("pred_dir", help="folder of <stem>_masks.tif")
    e.add_argument("gt_dir", help="folder of <stem>.tif ground-truth labels")
    e.add_argument("--json", help="write the scores to this JSON file")

    _add_train_parser(sub)

    tu = sub.add_parser("tune", help="re-tune a model's instance settings and diameter "
                        "calibration on its held-out training images (rewrites tuning.yaml)")
    tu.add_argument("model", help="model folder (its tuning.yaml is rewritten)")
    tu.add_argument("data", nargs="+", help="the data folders the model was trained on")
    tu.add_argument("--partial", nargs="*", default=[], metavar="DATA")
    tu.add_argument("--incomplete", nargs="*", default=[], metavar="DATA")
    tu.add_argument("--exclude", nargs="*", default=[], metavar="GLOB")
    tu.add_argument("--fragments", type=float, default=0.0, metavar="FRACTION",
                    help="score annotated objects under this fraction of the median area "
                         "as unknown, as `tlseg train --fragments` does")

    sub.add_parser("models", help="list the shipped models and their model cards")

    x = sub.add_parser("export", help="write a model's network for other tools: ONNX or a "
                       "bioimage.io package (needs: pip install 'tlseg[export]')")
    x.add_argument("model", help="shipped model name (tl-cells, nuclei) or model folder")
    x.add_argument("-o", "--out", required=True,
                   help="onnx: the .onnx file or a folder for NAME.onnx (NAME.json, the "
                        "preprocessing, goes beside it); bioimageio: the package folder or a .zip")
    x.add_argument("--format", choices=EXPORT_FORMATS, default="onnx")

    d = sub.add_parser("demo", help="make synthetic images, segment them and score the result")
    d.add_argument("out", help="output directory")
    d.add_argument("--model", default=default(seg, "model"))

    from .plate import add_parsers as add_plate_parsers
    from .project import add_parsers as add_project_parsers

    add_project_parsers(sub)
    add_plate_parsers(sub)
    return p


def _add_train_parser(sub) -> None:
    tc, mc = TrainConfig, ModelConfig
    t = sub.add_parser("train", help="train a model from annotated folders")
    t.add_argument("data", nargs="+", help="folders with images/ and masks/ (or train/)")
    t.add_argument("-o", "--out", required=True, help="model folder to write")
    t.add_argument("--epochs", type=int, default=default(tc, "epochs"),
                   help="epochs of --steps-per-epoch batches")
    t.add_argument("--steps-per-epoch", type=int, default=default(tc, "steps_per_epoch"))
    t.add_argument("--batch-size", type=int, default=default(tc, "batch_size"))
    t.add_argument("--lr", type=float, default=default(tc, "lr"))
    t.add_argument("--seed", type=int, default=default(tc, "seed"))
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
    t.add_argument("--flatfield", choices=["divide", "subtract", "none"],
                   default=default(mc, "flatfield"),
                   help="shading correction: divide (transmitted light), subtract (fluorescence)")
    t.add_argument("--canonical-diameter", type=float, default=default(mc, "canonical_diameter"),
                   help="cell diameter in pixels the network works at (smaller is faster; "
                        "compact objects such as nuclei need fewer pixels)")
    t.add_argument("--channels", type=int, nargs="+", default=list(default(mc, "channels")),
                   metavar="C", help="U-Net feature channels per level (wider is slower to "
                   "run; ignored with --base, whose architecture is kept)")
    t.add_argument("--no-flows", action="store_true",
                   help="train without the flow outputs (distance seeds only)")
    t.add_argument("--flow-weight", type=float, default=default(tc, "flow_weight"),
                   help="weight of the flow loss against the foreground and distance losses")
    t.add_argument("--ema", type=float, default=default(tc, "ema"), metavar="DECAY",
                   help="save an exponential moving average of the weights (e.g. 0.999; "
                        "0 = the last step's weights)")
    t.add_argument("--max-log2-scale", type=float, default=default(tc, "max_log2_scale"),
                   metavar="OCTAVES",
                   help="scale augmentation: crops are zoomed by up to 2**OCTAVES either way")
    t.add_argument("--max-noise", type=float, default=default(tc, "max_noise"),
                   metavar="FRACTION",
                   help="noise augmentation: Gaussian noise up to this fraction of a crop's "
                        "mean level (0.06 for transmitted light; about 0.3 for fluorescence, "
                        "whose mean is the dark background)")
    t.add_argument("--texture", type=float, default=default(tc, "texture"), metavar="AMPLITUDE",
                   help="texture augmentation: multiply 30%% of the crops by 1 + a x smoothed "
                        "noise, a up to AMPLITUDE (0 = off), so that grain inside a cell or "
                        "nucleus is not read as a border")
    t.add_argument("--specks", type=float, default=default(tc, "specks"), metavar="FRACTION",
                   help="debris augmentation: this fraction of the crops get sharp dark specks "
                        "smaller than a cell, which stay labelled as what lies under them "
                        "(0 = off)")
    t.add_argument("--crowded", type=float, default=default(tc, "crowded"), metavar="FRACTION",
                   help="crowded-field augmentation: this fraction of the crops come from "
                        "fields filled densely with the training images' own annotated "
                        "cells (0 = off)")
    t.add_argument("--monolayers", type=float, default=default(tc, "monolayers"),
                   metavar="FRACTION",
                   help="monolayer augmentation: this fraction of the crops come from "
                        "synthetic confluent monolayers (phase contrast, brightfield, DIC) "
                        "with no background between the cells (0 = off)")
    t.add_argument("--structures", type=float, default=default(tc, "structures"),
                   metavar="FRACTION",
                   help="structure negatives: this fraction of the crops get a microfluidic "
                        "post lattice, wall, scratch, bubble or well rim drawn over their "
                        "background, which stays background (0 = off)")
    t.add_argument("--border-weight", type=float, default=default(tc, "border_weight"),
                   metavar="W", help="extra loss weight on pixels where two cells meet "
                                     "(0 = off)")
    t.add_argument("--exclude", nargs="*", default=[], metavar="GLOB",
                   help="leave out images whose file name matches (e.g. the same field as a "
                        "test image)")
    t.add_argument("--device", default="cpu",
                   help="train on this PyTorch device: cpu (default) or cuda (an NVIDIA GPU)")
    t.add_argument("--resume", action="store_true", help="continue an interrupted run")
    t.add_argument("--no-tune", action="store_true",
                   help="skip tuning the instance settings on the held-out images after "
                        "training (tune later with `tlseg tune`)")
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


class _Printer(logging.Handler):
    """Prints the library's log records: information to stdout, warnings and errors to
    stderr as ``warning: ...`` / ``error: ...`` (through tqdm, so above a progress bar)."""

    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if record.levelno >= logging.WARNING:
            msg, stream = f"{record.levelname.lower()}: {msg}", sys.stderr
        else:
            stream = sys.stdout
        try:
            from tqdm import tqdm

            tqdm.write(msg, file=stream)
        except ImportError:  # pragma: no cover - tqdm is a dependency
            print(msg, file=stream)


class _Printing:
    """While a command runs, the library's log records are printed (:class:`_Printer`);
    afterwards the ``tlseg`` logger is as it was (the CLI can be called from Python)."""

    def __enter__(self):
        self.logger = logging.getLogger("tlseg")
        self.saved = self.logger.level, self.logger.propagate
        self.handler = _Printer()
        self.logger.addHandler(self.handler)
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False

    def __exit__(self, *exc):
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.saved[0])
        self.logger.propagate = self.saved[1]


def main(argv: list[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    with _Printing():
        return _run(args)


def _run(args) -> int:
    try:
        return {
            "segment": _segment,
            "evaluate": _evaluate,
            "train": _train,
            "tune": _tune,
            "models": _models,
            "export": _export,
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
    except BrokenPipeError:  # output piped into `head` and the like, which stopped reading
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


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


def _command_line() -> str | None:
    """The command as typed (for model cards), when this process is ``tlseg``."""
    if Path(sys.argv[0]).name != "tlseg" or len(sys.argv) < 2:
        return None
    return "tlseg " + " ".join(shlex.quote(a) for a in sys.argv[1:])


def _segment(args) -> int:
    from tqdm import tqdm

    import tlseg

    tlseg.set_threads()
    names = {f.name for f in tlseg.list_images(args.inputs)}
    counts = tlseg.segment_folder(
        args.inputs, args.out, model=args.model, diameter=args.diameter, channel=args.channel,
        plane=args.plane, tile=args.tile, tta=args.tta, overlay=args.overlay,
        overwrite=args.overwrite,
        progress=lambda items: tqdm(items, unit="image", disable=len(items) < 2,
                                    file=sys.stderr))
    mine = counts[counts["image"].isin(names)]  # counts.csv also keeps earlier runs' rows
    failed = int((mine["status"] == "error").sum())
    if failed:
        print(f"{failed} of {len(names)} images failed; see the errors above", file=sys.stderr)
        return 2
    return 0


def _evaluate(args) -> int:
    import tlseg

    scores = tlseg.evaluate_folders(args.pred_dir, args.gt_dir, json_path=args.json)
    rows, overall = scores["images"], scores["overall"]
    head = (f"{'image':<32} {'AP50':>6} {'AP75':>6} {'mAP':>6} {'prec':>6} {'rec':>6} "
            f"{'F1':>6} {'count':>6} {'true':>6}")
    print(head)
    for r in rows + [{"image": "OVERALL (pooled)", **overall}]:
        print(f"{r['image'][:32]:<32} {r['ap50']:6.3f} {r['ap75']:6.3f} {r['map']:6.3f} "
              f"{r['precision']:6.3f} {r['recall']:6.3f} {r['f1']:6.3f} {r['n_pred']:6d} "
              f"{r['n_true']:6d}")
    return 0


# `tlseg train` options that only one kind of training data uses
FOLDERS_ONLY = ("epochs", "steps_per_epoch", "batch_size", "lr", "partial", "incomplete",
                "fragments", "flatfield", "canonical_diameter", "channels", "no_flows",
                "flow_weight", "ema", "max_log2_scale", "max_noise", "texture", "specks",
                "crowded", "monolayers", "border_weight", "structures", "exclude", "no_tune",
                "name", "device")
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
    from tqdm import tqdm

    import tlseg

    tlseg.set_threads()
    out = Path(args.out)
    is_project = len(args.data) == 1 and (Path(args.data[0]) / "project.yaml").is_file()
    _refuse_options(args, PROJECT_ONLY if not is_project else FOLDERS_ONLY,
                    "training from data folders" if not is_project else "a PROJECT")
    if is_project:
        from .project import train_project

        return train_project(args)
    loading = tqdm(total=0, desc="loading", unit="image", file=sys.stderr)
    training = None

    def on_load(i, n):
        loading.total = n
        loading.update(1)

    def on_step(step, total, parts):
        nonlocal training
        if training is None:
            loading.close()
            training = tqdm(total=total, desc="training", unit="step", file=sys.stderr)
        training.n = step
        training.set_postfix(fg=f"{parts['fg']:.3f}", dist=f"{parts['dist']:.3f}",
                             flow=f"{parts['flow']:.3f}", refresh=False)
        training.refresh()

    model = tlseg.train(
        args.data, out, base=args.base, partial=args.partial, incomplete=args.incomplete,
        exclude=args.exclude, fragments=args.fragments, resume=args.resume,
        device=args.device, tune=not args.no_tune, card={"command": _command_line()},
        load_progress=on_load, progress=on_step,
        epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, flow_weight=args.flow_weight, ema=args.ema,
        max_log2_scale=args.max_log2_scale, max_noise=args.max_noise, texture=args.texture,
        specks=args.specks, crowded=args.crowded, monolayers=args.monolayers,
        border_weight=args.border_weight,
        structures=args.structures,
        name=args.name or out.name, flatfield=args.flatfield,
        channels=args.channels, canonical_diameter=args.canonical_diameter,
        flows=not args.no_flows)
    loading.close()
    if training is not None:
        training.close()
    print(f"model written to {out}")
    for src, sc in model.card.get("holdout_scores", {}).items():
        print(f"  held-out {src}: AP50 {sc['ap50']:.3f}  mAP {sc['map']:.3f}")
    return 0


def _tune(args) -> int:
    import tlseg

    tlseg.set_threads()
    model = tlseg.tune(args.model, args.data, partial=args.partial,
                       incomplete=args.incomplete, exclude=args.exclude,
                       fragments=args.fragments, command=_command_line())
    print(f"tuning.yaml rewritten in {args.model}")
    for src, sc in model.card.get("holdout_scores", {}).items():
        print(f"  held-out {src}: AP50 {sc['ap50']:.3f}  mAP {sc['map']:.3f}")
    return 0


def _models(args) -> int:
    import tlseg

    models = tlseg.shipped_models()
    if not models:
        print("no models are shipped with this installation")
        return 0
    for name, folder in models.items():
        card = tlseg.load_model(folder).card
        print(f"{name}  ({folder})")
        for key in ("description", "modalities", "sources", "wall_time_s", "command"):
            if card.get(key) is not None:
                print(f"  {key}: {card[key]}")
        readme = folder / "README.md"
        if readme.is_file():
            print(f"  model card: {readme}")
    return 0


#: `tlseg export --format` choices (tlseg.inference.export.FORMATS; not imported here, so
#: that --help stays instant)
EXPORT_FORMATS = ("onnx", "bioimageio")


def _export(args) -> int:
    import json
    import zipfile

    import tlseg

    path = tlseg.export_model(args.model, args.out, format=args.format)
    if args.format == "onnx":
        info = json.loads(path.with_suffix(".json").read_text())
        print(f"wrote {path} and {path.with_suffix('.json')} (the preprocessing)")
    else:
        name = tlseg.load_model(args.model).config.name
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as z:
                info = json.loads(z.read(f"{name}.json"))
        else:
            info = json.loads((path / f"{name}.json").read_text())
        print(f"wrote the bioimage.io package {path} (rdf.yaml; weights: pytorch_state_dict, "
              "torchscript, onnx)")
        rdf = path if path.suffix == ".zip" else path / "rdf.yaml"
        print(f"test it (offline) with: bioimageio test {rdf}")
    check = info["check"]
    sizes = ", ".join(f"{h}x{w}" for h, w in check["sizes"])
    print(f"onnxruntime vs PyTorch maps: max abs difference {check['max_abs_difference']:.2e} "
          f"(tolerance {check['tolerance']:g}) on {sizes}")
    return 0


def _demo(args) -> int:
    import tlseg

    out = Path(args.out)
    tlseg.write_demo_images(out)
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
