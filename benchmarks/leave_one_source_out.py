"""Generalisation: how does the tl-cells recipe do on a source it never saw?

Run::

    python benchmarks/leave_one_source_out.py --data ../shared/data [--epochs 10]

For every label-free source with a val split (usiigaci, bbbc030-cho, ctc-dic-hela), the
tl-cells recipe (``tlseg train`` on the tl-cells sources, aiSEGcell ``--incomplete``,
one field excluded) is trained without that source, and scored on that source's val
images. The same recipe on every source, with the same schedule, is the reference: the
gap between the two is what a lab with cells unlike any training source loses. Scores
are AP@0.5 with the diameter estimated (what a user gets) and known (the median of the
source's training masks), pooled over the val images and by density (cells per
canonical cell area, :func:`common.density`); the shipped ``tl-cells`` (4,000 steps) is
scored beside them. ``aisegcell-bf`` (brightfield), which has no val split, can be left
out too (``--sources aisegcell-bf``): it is scored on the whole-cell masks of the
``paired/aisegcell-s10`` fields at positions no ``tl-cells`` training saw (AP@0.5 with
the diameter estimated per field, and the counts). ``--optics F`` also trains every model
with the optics augmentation (``tlseg train --optics F``, in ``loso-e<epochs>-optics<F>/``)
and scores the two arms side by side (entry ``epochs_<epochs>_optics_<F>``).
``--reference shipped`` (with ``--epochs 40``, the shipped schedule) takes the shipped
``tl-cells`` as the recipe on every source instead of training it again; ``--key`` names
the entry, so that a run on some sources does not replace the entry of a run on others::

    python benchmarks/leave_one_source_out.py --data ../shared/data --epochs 40 \
        --sources aisegcell-bf --reference shipped --key epochs_40_aisegcell-bf

Models are trained once into ``benchmarks/work/loso-e<epochs>/`` and reused; a stopped
run resumes there. ``--epochs 40`` is the shipped schedule (about an hour a model on 2
CPU cores, minutes with ``--device cuda``); shorter schedules compare the recipe with
itself at equal length.
Results: ``benchmarks/results/leave_one_source_out.json``, one entry per schedule.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from common import (
    TL_CELLS_SOURCES,
    VAL_SOURCES,
    WORK,
    count_errors,
    density,
    density_bin,
    seen,
    train_median_diameter,
    trained_images,
    val_pairs,
)
from results_file import update_results

import tlseg
from tlseg.analysis.metrics import match_counts, summarize

OPTIONS = {"incomplete": ["aisegcell-bf"], "exclude": ["181024TK20_p0002_*"]}
#: the epochs of the shipped tl-cells (100 steps each)
SHIPPED_EPOCHS = 40


def recipe(data: Path, out: Path, without: str | None, epochs: int,
           device: str = "cpu", optics: float = 0.0) -> tlseg.Model:
    """The tl-cells recipe on every tl-cells source but ``without``, in ``out``."""
    if (out / "weights.pt").is_file() and not (out / "checkpoint.pt").exists():
        return tlseg.load_model(out)
    tl = data / "tl"
    folders = [tl / s for s in TL_CELLS_SOURCES if s != without]
    resume = (out / "checkpoint.pt").exists()
    print(f"training {out.name} ({'resumed' if resume else 'new'}), {epochs} epochs",
          flush=True)

    def progress(step, total, losses):
        if step % 200 == 0 or step == total:
            print(f"  {out.name}: step {step}/{total}", flush=True)

    tlseg.set_threads()
    return tlseg.train(folders, out, incomplete=[tl / s for s in OPTIONS["incomplete"]
                                                 if s != without],
                       exclude=OPTIONS["exclude"], name=out.name, epochs=epochs,
                       flows=True, resume=resume, progress=progress, device=device,
                       **({"optics": optics} if optics else {}),
                       card={"command": f"benchmarks/leave_one_source_out.py, {out.name}"})


def score(model: tlseg.Model, data: Path, source: str) -> dict:
    """AP@0.5 on a source's val images, diameter estimated and known, pooled and by
    density bin."""
    known = train_median_diameter(data, source)
    counts = {"auto": [], "known": []}
    bins: dict = {}
    for img, mask in val_pairs(data, source):
        image = tlseg.read_image(img)
        true = tlseg.read_labels(mask, shape=image.shape)
        for key, d in (("auto", None), ("known", known)):
            c = match_counts(true, model.predict_instances(image, diameter=d)[0])
            counts[key].append(c)
            if key == "auto":
                bins.setdefault(density_bin(density(true)), []).append(c)
    return {"ap50_auto": round(summarize(counts["auto"])["ap50"], 4),
            "ap50_known": round(summarize(counts["known"])["ap50"], 4),
            "ap50_auto_by_density": {b: {"n_images": len(c), "ap50": round(summarize(c)["ap50"], 4)}
                                     for b, c in sorted(bins.items())}}


#: a source without a val split is scored on paired fields of its experiments instead
STAND_IN = {"aisegcell-bf": "paired/aisegcell-s10"}


def score_stand_in(models: dict, data: Path, source: str, shipped: tlseg.Model) -> dict:
    """AP@0.5 (diameter estimated per field) and counts of each of ``models`` on the
    whole-cell masks of a source's stand-in fields (:data:`STAND_IN`), keeping only the
    fields at positions the shipped ``tl-cells`` never saw: the recipe trained on every
    source saw the same images as the shipped model, and the model without the source saw
    none. The masks are binary masks split into connected components, so touching cells
    are one object there, for every model alike."""
    folder = data / STAND_IN[source]
    trained = trained_images(shipped, data)
    fields = [p.stem for p in sorted((folder / "tl").glob("*.tif"))
              if seen(p.stem, trained) == "not seen"]
    counts = {name: [] for name in models}
    for field in fields:  # each field read once, for every model
        image = tlseg.read_image(folder / "tl" / f"{field}.tif")
        true = tlseg.read_labels(folder / "cell_labels" / f"{field}.tif", shape=image.shape)
        for name, model in models.items():
            counts[name].append(match_counts(true, model.predict_instances(image)[0]))
    out = {}
    for name, c in counts.items():
        n, truth = [x["n_pred"] for x in c], [x["n_true"] for x in c]
        out[name] = {"ap50_auto": round(summarize(c)["ap50"], 4),
                     "counted": int(sum(n)), "true": int(sum(truth)),
                     "count_errors": count_errors(n, truth)}
    return {"stand_in": STAND_IN[source], "n_fields": len(fields), **out}


def _provenance(model: tlseg.Model) -> dict:
    """Where and how a model was trained, from its card."""
    return {k: model.card.get(k) for k in ("command", "device", "wall_time_s") if k in model.card}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/data"))
    p.add_argument("--epochs", type=int, default=10, help="100 steps each (tl-cells: 40)")
    p.add_argument("--sources", nargs="*", default=list(VAL_SOURCES),
                   help=f"sources to leave out, of {', '.join(TL_CELLS_SOURCES)} "
                        "(aisegcell-bf, which has no val split, is scored on the "
                        "aisegcell-s10 fields no tl-cells training saw)")
    p.add_argument("--device", default="cpu", help="where the models train (cpu, cuda)")
    p.add_argument("--optics", type=float, default=0.0, metavar="FRACTION",
                   help="also train every model with `tlseg train --optics FRACTION` and "
                        "score both arms side by side (results under "
                        "epochs_<E>_optics_<F>; the arm without reuses loso-e<E>/)")
    p.add_argument("--reference", choices=("train", "shipped"), default="train",
                   help="the recipe on every source: trained here, or the shipped "
                        "tl-cells (the recipe at --epochs 40)")
    p.add_argument("--key", help="results entry (default epochs_<E>[_optics_<F>])")
    p.add_argument("--out", type=Path, help="results file (trial runs)")
    args = p.parse_args(argv)
    if args.reference == "shipped" and (args.epochs != SHIPPED_EPOCHS or args.optics):
        p.error(f"--reference shipped: the shipped tl-cells is the recipe at --epochs "
                f"{SHIPPED_EPOCHS} without --optics")
    logging.getLogger("tlseg").setLevel(logging.WARNING)
    key = args.key or (f"epochs_{args.epochs}"
                       + (f"_optics_{args.optics:g}" if args.optics else ""))
    # arm suffix -> (work folder, optics fraction); the plain recipe is always an arm
    arms = {"": (WORK / f"loso-e{args.epochs}", 0.0)}
    if args.optics:
        arms[f", optics {args.optics:g}"] = (
            WORK / f"loso-e{args.epochs}-optics{args.optics:g}", args.optics)
    shipped = tlseg.load_model("tl-cells")
    references = ({"": shipped} if args.reference == "shipped" else
                  {arm: recipe(args.data, work / "all-sources", None, args.epochs,
                               args.device, optics)
                   for arm, (work, optics) in arms.items()})
    trained = {f"all-sources{arm}": _provenance(m) for arm, m in references.items()}
    rows = {}
    for source in args.sources:
        models = {}
        for arm, (work, optics) in arms.items():
            without = recipe(args.data, work / f"without-{source}", source, args.epochs,
                             args.device, optics)
            trained[f"without-{source}{arm}"] = _provenance(without)
            models[f"all sources{arm}"] = references[arm]
            models[f"without it{arm}"] = without
        if args.reference != "shipped":  # else it is the reference already
            models["shipped tl-cells"] = shipped
        tlseg.set_threads()
        if source in STAND_IN:
            rows[source] = score_stand_in(models, args.data, source, shipped)
        else:
            rows[source] = {name: score(m, args.data, source) for name, m in models.items()}
        r = rows[source]
        for arm in arms:
            print(f"{source:14s}{arm} AP@0.5 auto {r['all sources' + arm]['ap50_auto']:.3f}"
                  f" -> {r['without it' + arm]['ap50_auto']:.3f}", flush=True)
        update_results("leave_one_source_out", (key,),
                       {"steps": args.epochs * 100, "sources": rows, "models": trained},
                       argv=argv, out=args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
