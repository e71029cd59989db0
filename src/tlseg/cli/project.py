"""``tlseg project init`` and ``tlseg roi add|list|export|suggest``, and ``tlseg train PROJECT``:
the command line of teaching (:class:`tlseg.Project`, :func:`tlseg.teach`)."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import TlsegError
from .progress import StepBar


def add_parsers(sub) -> None:
    pr = sub.add_parser("project", help="manage a training-set project")
    prs = pr.add_subparsers(dest="project_command", required=True)
    pi = prs.add_parser("init", help="create a project folder")
    pi.add_argument("dir")
    pi.add_argument("--diameter", type=float, help="typical cell diameter in pixels")

    r = sub.add_parser("roi", help="add, list or suggest regions of interest in a project")
    rs = r.add_subparsers(dest="roi_command", required=True)
    ra = rs.add_parser("add", help="add a ROI whose labels come from a label image")
    ra.add_argument("project")
    ra.add_argument("image")
    ra.add_argument("--box", nargs=4, type=int, required=True, metavar=("Y0", "X0", "Y1", "X1"))
    ra.add_argument("--labels", required=True,
                    help="label TIFF (same size as the image) or ImageJ ROI .zip/.roi")
    ra.add_argument("--copy", action="store_true", help="copy the image into the project")
    rl = rs.add_parser("list", help="list the project's ROIs")
    rl.add_argument("project")
    rx = rs.add_parser("export", help="write each image's annotated labels as TIFF and ImageJ zip")
    rx.add_argument("project")
    rx.add_argument("out")
    rx.add_argument("--overwrite", action="store_true",
                    help="replace label TIFFs and ROI zips already in OUT")
    rsu = rs.add_parser("suggest", help="rank regions by the model's uncertainty")
    rsu.add_argument("project")
    rsu.add_argument("image", nargs="+",
                     help="image(s); over several, suggestions are spread across them")
    rsu.add_argument("-n", type=int, default=5, help="number of ROIs to suggest")
    rsu.add_argument("--size", type=int, default=256, help="ROI side in pixels")
    rsu.add_argument("--model", default="tl-cells")
    rsu.add_argument("--diameter", type=float,
                     help="cell diameter in pixels (default: the project's, else estimated)")


def train_project(args) -> int:
    import tlseg

    base = tlseg.load_model(args.base or "tl-cells")
    mode = args.mode or "finetune"
    bar = StepBar(mode, "step")
    model = tlseg.teach(args.data[0], base, args.out, mode=mode, steps=args.steps,
                        seed=args.seed, resume=args.resume, diameter=args.diameter,
                        progress=lambda step, total, parts: bar(step, total))
    bar.close()
    print(f"{mode}d model written to {args.out} (ROI set {model.card['roi_set']}, "
          f"{model.card['wall_time_s']:.0f} s)")
    if model.config.taught_diameter:
        print(f"it segments at {model.config.taught_diameter:g} px, the annotated cells' "
              "diameter, unless --diameter is given: on the annotated images its own "
              "estimate read the cell size less well")
    return 0


def project(args) -> int:
    import tlseg

    p = tlseg.Project.init(args.dir, diameter=args.diameter)
    print(f"project created in {p.root}")
    return 0


def roi(args) -> int:
    import tlseg

    project = tlseg.Project.open(args.project)
    if args.roi_command == "add":
        # read and check everything before the project changes: a failed add adds nothing
        shape = tlseg.read_image(args.image).shape
        if Path(args.labels).suffix.lower() in (".zip", ".roi"):
            labels = tlseg.imagej_to_labels(args.labels, shape)
        else:
            labels = tlseg.read_labels(args.labels, shape=shape)
        y0, x0, y1, x1 = args.box
        if not (0 <= y0 < y1 <= shape[0] and 0 <= x0 < x1 <= shape[1]):
            raise TlsegError(f"ROI box {y0} {x0} {y1} {x1} is empty or outside the "
                             f"{shape[0]}x{shape[1]} image {args.image}; give Y0 X0 Y1 X1 "
                             f"with Y0<Y1<={shape[0]}, X0<X1<={shape[1]}")
        image_id = project.add_image(args.image, copy=args.copy)
        roi = project.add_roi(image_id, args.box, labels[y0:y1, x0:x1])
        n = len(set(roi.labels[roi.labels > 0].tolist()))
        if roi.version > 1:
            print(f"ROI {roi.roi_id} on {image_id}, box {list(roi.box)}: version {roi.version} "
                  f"replaces version {roi.version - 1} in the training set (kept on disk), "
                  f"{n} cells")
        else:
            print(f"ROI {roi.roi_id} added on {image_id}: box {list(roi.box)}, {n} cells")
        return 0
    if args.roi_command == "export":
        for image_id, n in project.export(args.out, overwrite=args.overwrite).items():
            print(f"{image_id}: {n} cells -> {args.out}")
        return 0
    if args.roi_command == "suggest":
        tlseg.set_threads()
        ids = {path: project.add_image(path) for path in args.image}
        done: dict[str, list] = {}
        for r in project.rois():
            done.setdefault(r.image_id, []).append(r.box)
        picks = tlseg.suggest_across(tlseg.load_model(args.model), [(ids[p], p) for p in args.image],
                               n=args.n, size=args.size,
                               diameter=(args.diameter if args.diameter is not None
                                         else project.meta.get("diameter")),
                               exclude=done)
        print(f"{'rank':>4} {'image':<24} {'Y0':>6} {'X0':>6} {'Y1':>6} {'X1':>6} "
              f"{'uncertainty':>12}")
        for i, p in enumerate(picks, start=1):
            print(f"{i:>4} {p['key'][:24]:<24} " + " ".join(f"{v:>6}" for v in p["box"])
                  + f" {p['score']:>12.3f}")
        if len(picks) < args.n:
            print(f"note: only {len(picks)} box{'es' if len(picks) != 1 else ''} of {args.size} px "
                  "fit in these images without "
                  "overlapping each other or the ROIs already added; a smaller --size or more "
                  "images give more", file=sys.stderr)
        return 0
    errors: list[str] = []
    rois = project.rois(errors=errors)
    for e in errors:
        print(f"warning: {e}", file=sys.stderr)
    print(f"{'roi':>5} {'ver':>4} {'image':<24} {'box (y0 x0 y1 x1)':<24} {'cells':>6}")
    for r in rois:
        n = len(set(r.labels[r.labels > 0].tolist()))
        print(f"{r.roi_id:>5} {r.version:>4} {r.image_id[:24]:<24} {list(r.box)!s:<24} {n:>6}")
    print(f"{len(rois)} ROIs, set {project.roi_set_hash()}")
    return 0
