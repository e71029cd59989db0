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
import sys
from pathlib import Path

from ..config import SegmentConfig, default
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

    from .train import add_parsers as add_train_parsers

    add_train_parsers(sub)

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


def _train(args) -> int:
    from .train import train

    return train(args)


def _tune(args) -> int:
    from .train import tune

    return tune(args)


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
