"""``tlseg train`` and ``tlseg tune``: the command line of training (:func:`tlseg.train`,
:func:`tlseg.tune`; a PROJECT is taught through :mod:`tlseg.cli.project`)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

from ..config import ModelConfig, TrainConfig, default
from ..errors import TlsegError
from .progress import StepBar


def add_parsers(sub) -> None:
    """Add ``tlseg train`` and ``tlseg tune`` to the subcommands ``sub``."""
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
    t.add_argument("--stain", nargs="*", default=[], metavar="DATA",
                   help="data folders with a stain/ folder holding each image's nuclear "
                        "stain under its name: background is trusted only far from every "
                        "nucleus the nuclei model finds there, and an unlabelled cell with "
                        "a nucleus is unknown; like --partial, never held out to tune on")
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
    t.add_argument("--optics", type=float, default=default(tc, "optics"), metavar="FRACTION",
                   help="optics augmentation: this fraction of the crops are shown through "
                        "other optics, a random blend of the crop, its DIC-like shear relief "
                        "and its phase-contrast-like halo (0 = off)")
    t.add_argument("--crowded", type=float, default=default(tc, "crowded"), metavar="FRACTION",
                   help="crowded-field augmentation: this fraction of the crops come from "
                        "fields filled densely with the training images' own annotated "
                        "cells (0 = off)")
    t.add_argument("--crowded-blend", choices=["feather", "relief"],
                   default=default(tc, "crowded_blend"),
                   help="how --crowded pastes a cell: its pixels feathered in, or the "
                        "field multiplied by its relief (halo included, no seam)")
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
    t.add_argument("--dense", type=float, default=default(tc, "dense"), metavar="FRACTION",
                   help="density-weighted crops: this fraction of each source's crops is "
                        "centred on a labelled cell, the more often the more cells lie "
                        "around it (0 = off)")
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

    tu = sub.add_parser("tune", help="re-tune a model's instance settings and diameter "
                        "calibration on its held-out training images (rewrites tuning.yaml)")
    tu.add_argument("model", help="model folder (its tuning.yaml is rewritten)")
    tu.add_argument("data", nargs="+", help="the data folders the model was trained on")
    tu.add_argument("--partial", nargs="*", default=[], metavar="DATA",
                    help="the folders the model was trained on with --partial (not tuned on)")
    tu.add_argument("--incomplete", nargs="*", default=[], metavar="DATA",
                    help="the folders trained on with --incomplete (not tuned on)")
    tu.add_argument("--stain", nargs="*", default=[], metavar="DATA",
                    help="the folders trained on with --stain (not tuned on)")
    tu.add_argument("--exclude", nargs="*", default=[], metavar="GLOB",
                    help="the image name patterns the training left out, as `tlseg train "
                         "--exclude`")
    tu.add_argument("--fragments", type=float, default=0.0, metavar="FRACTION",
                    help="score annotated objects under this fraction of the median area "
                         "as unknown, as `tlseg train --fragments` does")


# `tlseg train` options that only one kind of training data uses
FOLDERS_ONLY = ("epochs", "steps_per_epoch", "batch_size", "lr", "partial", "incomplete",
                "stain", "fragments", "flatfield", "canonical_diameter", "channels", "no_flows",
                "flow_weight", "ema", "max_log2_scale", "max_noise", "texture", "specks",
                "optics", "crowded", "crowded_blend", "monolayers", "border_weight", "dense",
                "structures", "exclude", "no_tune", "name", "device")
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


def train(args) -> int:
    """``tlseg train``: from data folders, or a PROJECT's ROIs."""
    import tlseg

    tlseg.set_threads()
    out = Path(args.out)
    is_project = len(args.data) == 1 and (Path(args.data[0]) / "project.yaml").is_file()
    _refuse_options(args, PROJECT_ONLY if not is_project else FOLDERS_ONLY,
                    "training from data folders" if not is_project else "a PROJECT")
    if is_project:
        from .project import train_project

        return train_project(args)
    loading, training = StepBar("loading", "image"), StepBar("training", "step")

    def on_step(step, total, parts):
        training(step, total, {k: f"{parts[k]:.3f}" for k in ("fg", "dist", "flow")})

    model = tlseg.train(
        args.data, out, base=args.base, partial=args.partial, incomplete=args.incomplete,
        exclude=args.exclude, fragments=args.fragments, stain=args.stain, resume=args.resume,
        device=args.device, tune=not args.no_tune, card={"command": command_line()},
        load_progress=loading, progress=on_step,
        epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, batch_size=args.batch_size,
        lr=args.lr, seed=args.seed, flow_weight=args.flow_weight, ema=args.ema,
        max_log2_scale=args.max_log2_scale, max_noise=args.max_noise, texture=args.texture,
        specks=args.specks, optics=args.optics, crowded=args.crowded,
        crowded_blend=args.crowded_blend, monolayers=args.monolayers,
        border_weight=args.border_weight, dense=args.dense,
        structures=args.structures,
        name=args.name or out.name, flatfield=args.flatfield,
        channels=args.channels, canonical_diameter=args.canonical_diameter,
        flows=not args.no_flows)
    loading.close()
    training.close()
    print(f"model written to {out}")
    _print_holdout_scores(model)
    return 0


def tune(args) -> int:
    """``tlseg tune``."""
    import tlseg

    tlseg.set_threads()
    model = tlseg.tune(args.model, args.data, partial=args.partial,
                       incomplete=args.incomplete, exclude=args.exclude,
                       fragments=args.fragments, stain=args.stain, command=command_line())
    print(f"tuning.yaml rewritten in {args.model}")
    _print_holdout_scores(model)
    return 0


def _print_holdout_scores(model) -> None:
    """The held-out scores a training or tuning wrote to the model's card, one line a source."""
    for src, sc in model.card.get("holdout_scores", {}).items():
        print(f"  held-out {src}: AP50 {sc['ap50']:.3f}  mAP {sc['map']:.3f}")


def command_line() -> str | None:
    """The command as typed (for model cards), when this process is ``tlseg``."""
    if Path(sys.argv[0]).name != "tlseg" or len(sys.argv) < 2:
        return None
    return "tlseg " + " ".join(shlex.quote(a) for a in sys.argv[1:])
