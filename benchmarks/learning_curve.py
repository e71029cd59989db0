"""Learning curve: do 5, then 10 corrected ROIs improve a base model on new cells?

Run::

    python benchmarks/learning_curve.py --data ../shared/data

Simulates a user on the adaptation source ``bbbc030-cho`` (CHO, DIC), which
../shared/data/README.md names, or another with ``--source`` (e.g. ``usiigaci``, the only
phase-contrast source: a base without it has never seen phase contrast):

1. a base model trained like tl-cells but WITHOUT the source (``tlseg.train``, i.e.
   ``tlseg train``, on the other tl-cells sources, e.g. usiigaci, ctc-dic-hela and
   aisegcell-bf for CHO; shorter schedule: ``--epochs``, default 20, i.e. 2,000 steps
   instead of 4,000), trained once per source and reused by both modes (resumable;
   ``--device cuda`` trains it on a GPU where there is one);
2. for 3 seeds (``--seeds``) and two ways of choosing ROIs — ``random`` boxes (uniform
   positions among those holding at least one cell's centre) and ``suggested`` (the
   most uncertain boxes over all the train images by ``tlseg.suggest_across``, spread
   across them: each image's best box first)
   — take 0, 5 and 10 ROIs of 256x256 from the train images, put the ground truth inside
   each box into a ``tlseg.Project`` (what a user's correction produces), fine-tune
   (``tlseg.teach``), and score AP@0.5 on the val images, twice: with the diameter
   estimated automatically (what a user gets without ``--diameter``) and with the cell
   diameter known (the median of the source's training masks, what a user who passes
   ``--diameter`` gets) — the first includes what fine-tuning teaches the size head,
   the second only the outlines;
3. retrain vs fine-tune at 10 random ROIs (seed 0): AP@0.5 and wall time.

Each taught model's scores are kept in its work folder (``score.json``) and the curve's
results are rewritten after every seed, so a stopped run reports what it has and,
started again, resumes (delete ``benchmarks/work/learning_curve_<source>_<mode>`` to
start afresh, ``benchmarks/work/base-no-<source>`` to train a new base model).

``--mode retrain`` runs step 2 with ``tlseg.teach(..., mode="retrain")`` instead (about
4 min a model instead of 1; step 3 is skipped), ``--strategies random`` only one way of
choosing.

``--base MODEL_DIR`` starts from a model already trained without the source instead of
step 1, e.g. a model of ``leave_one_source_out.py`` (``benchmarks/work/loso-e40/
without-ctc-dic-hela`` for the dense HeLa line: the tl-cells recipe and schedule).

Results: the entry ``curves["<source>_<mode>"]`` of ``benchmarks/results/learning_curve.json``
(the other curves are kept) and the plot ``learning_curve_<source>_<mode>.png`` beside it;
``--steps-per-roi N`` and ``--suffix S`` add ``_<N>-steps-per-roi`` and ``_<S>`` to the key,
so curves of other settings or base models stay side by side.
A trial run: ``--epochs 1 --seeds 1 --ks 5 --strategies random --work /tmp/lc --out
/tmp/lc/learning_curve.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from common import REPO, TL_CELLS_SOURCES, WORK, split_pairs, train_median_diameter
from results_file import RESULTS, add_out, update_results
from skimage.measure import regionprops

import tlseg
from tlseg.analysis.metrics import match_counts, summarize
from tlseg.io import atomic_path

SOURCE = "bbbc030-cho"
ROI = 256


def _shown(path: Path) -> str:
    """``path`` relative to the repository when it lies inside it, as a command a reader
    can rerun from the repository root; otherwise as given."""
    try:
        return str(Path(path).resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def base_model(data: Path, epochs: int, device: str = "cpu", source: str = SOURCE,
               work: Path = WORK) -> tlseg.Model:
    """The tl-cells recipe (aiSEGcell incomplete) on every tl-cells source but ``source``,
    trained once into ``work/base-no-<source>`` and reused."""
    name = f"base-no-{source}"
    out = work / name
    if (out / "weights.pt").is_file():
        model = tlseg.load_model(out)
        trained = model.card.get("train_config", {}).get("epochs")
        if trained != epochs:
            raise SystemExit(f"{out} was trained for {trained} epochs, not {epochs}: "
                             "delete it or give --epochs to match")
        return model
    tl = data / "tl"
    folders = [tl / s for s in TL_CELLS_SOURCES if s != source]
    options = {"incomplete": [tl / "aisegcell-bf"], "exclude": ["181024TK20_p0002_*"]}
    # the same model as `tlseg train` with these options (which trains with flows)
    command = shlex.join(["tlseg", "train", *map(str, folders),
                          "--incomplete", *map(str, options["incomplete"]),
                          "--exclude", *options["exclude"], "-o", _shown(out), "--name", name,
                          "--epochs", str(epochs), "--device", device])
    resume = (out / "checkpoint.pt").exists()
    print(f"training the base model ({'resumed' if resume else 'new'}): {command}", flush=True)

    def progress(step, total, losses):
        if step % 100 == 0 or step == total:
            print(f"  step {step}/{total}", flush=True)

    tlseg.set_threads()  # as `tlseg train` runs: tlseg's default threads
    model = tlseg.train(folders, out, **options, name=name, epochs=epochs, flows=True,
                        device=device, resume=resume, card={"command": command},
                        progress=progress)
    tlseg.set_threads()
    return model


def score(model: tlseg.Model, val, diameter: float) -> dict:
    """AP@0.5 with the diameter estimated ('auto') and given ('known')."""
    counts = {"auto": [], "known": []}
    for img, mask in val:
        image = tlseg.read_image(img)
        true = tlseg.read_labels(mask, shape=image.shape)
        for key, d in (("auto", None), ("known", diameter)):
            labels, _ = model.predict_instances(image, diameter=d)
            counts[key].append(match_counts(true, labels))
    return {key: summarize(c)["ap50"] for key, c in counts.items()}


def mean_sd_table(runs: dict[str, list[dict]]) -> dict:
    """{'auto' | 'known': {name: mean, SD and runs}} of each name's per-seed AP dicts
    (:func:`score`)."""
    table = {}
    for key in ("auto", "known"):
        table[key] = {}
        for name, aps in runs.items():
            v = [a[key] for a in aps]
            table[key][name] = {"mean": float(np.mean(v)),
                                "sd": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
                                "runs": v}
    return table


def print_table(table: dict, label: str) -> None:
    w = max([14, *map(len, table["auto"])])
    print(f"\n{label:<{w}} {'auto diameter':>18} {'known diameter':>18}")
    for row in table["auto"]:
        a, b = table["auto"][row], table["known"][row]
        print(f"{row:<{w}} {a['mean']:>10.3f} ± {a['sd']:.3f} {b['mean']:>10.3f} ± {b['sd']:.3f}")


def _reset(root: Path) -> None:
    if root.exists():
        shutil.rmtree(root)


def random_boxes(train, k, rng, tries: int = 1000):
    """k boxes at uniformly random positions among those that hold the centre of at
    least one cell: a user picks a region with cells in it to correct, never an empty
    one (a box placed anywhere can hold no cell and teach only background)."""
    out, cells = [], {}  # mask path -> (shape, cell centres), read once per image
    for _ in range(tries):
        if len(out) == k:
            break
        img, mask = train[rng.integers(len(train))]
        if mask not in cells:
            lab = tlseg.read_labels(mask)
            cells[mask] = lab.shape, [p.centroid for p in regionprops(lab)]
        (h, w), centres = cells[mask]
        y0, x0 = int(rng.integers(0, h - ROI + 1)), int(rng.integers(0, w - ROI + 1))
        if any(y0 <= cy < y0 + ROI and x0 <= cx < x0 + ROI for cy, cx in centres):
            out.append((img, mask, (y0, x0, y0 + ROI, x0 + ROI)))
    if len(out) < k:
        raise RuntimeError(f"found only {len(out)} of {k} boxes with a cell in {tries} tries")
    return out


def suggested_boxes(model, train, k):
    """The k most uncertain boxes over the train images, spread across them
    (:func:`tlseg.suggest_across`, as ``tlseg roi suggest PROJECT IMAGE...``: each image's
    best box first, most uncertain first)."""
    picks = tlseg.suggest_across(model, [(i, img) for i, (img, _) in enumerate(train)],
                                 n=k, size=ROI)
    return [(train[p["key"]][0], train[p["key"]][1], p["box"]) for p in picks]


def build_project(root: Path, picks) -> tlseg.Project:
    project = tlseg.Project.init(root)
    for img, mask, box in picks:
        iid = project.add_image(img)
        lab = tlseg.read_labels(mask)
        y0, x0, y1, x1 = box
        project.add_roi(iid, box, lab[y0:y1, x0:x1])
    return project


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    p.add_argument("--epochs", type=int, default=20, help="base-model epochs (100 steps each)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--device", default="cpu", help="where the base model trains (cpu, cuda)")
    p.add_argument("--ks", type=int, nargs="*", default=[5, 10])
    p.add_argument("--source", default=SOURCE, choices=[s for s in TL_CELLS_SOURCES
                                                         if s != "aisegcell-bf"],
                   help="adaptation source (its val split is scored)")
    p.add_argument("--mode", choices=["finetune", "retrain"], default="finetune",
                   help="how each model is taught from the ROIs")
    p.add_argument("--strategies", nargs="+", choices=["random", "suggested"],
                   default=["random", "suggested"], help="ways of choosing the ROIs")
    p.add_argument("--work", type=Path, default=WORK,
                   help="where the base models and the taught models go")
    p.add_argument("--base", type=Path, default=None,
                   help="a model trained without --source to start from instead of "
                        "training one (e.g. benchmarks/work/loso-e40/without-<source> of "
                        "leave_one_source_out.py); --epochs is then read from its card")
    p.add_argument("--steps-per-roi", type=int, default=None,
                   help="teach with this many steps per ROI instead of the mode's default "
                        "(tlseg.default_steps); the curve is keyed "
                        "<source>_<mode>_<N>-steps-per-roi")
    p.add_argument("--suffix", default=None,
                   help="append _SUFFIX to the curve's key (and plot), e.g. to keep the "
                        "curve of another base model beside this one")
    add_out(p, "learning_curve", " (the plot beside it)")
    args = p.parse_args(argv)
    logging.basicConfig(format="%(message)s")
    logging.getLogger("tlseg").setLevel(logging.INFO)
    tlseg.set_threads()  # OMP_NUM_THREADS where set, else the cores
    data, source = Path(args.data), args.source
    train, val = split_pairs(data, source, "train"), split_pairs(data, source, "val")
    if args.base is not None:
        base = tlseg.load_model(args.base)
        if source in base.card.get("sources", []):
            raise SystemExit(f"{args.base} was trained on {source}: give a model trained "
                             "without it")
        args.epochs = base.card.get("train_config", {}).get("epochs", args.epochs)
    else:
        base = base_model(data, args.epochs, args.device, source, args.work)
    diameter = train_median_diameter(data, source)
    ap0 = score(base, val, diameter)
    print(f"0 ROIs: AP50 {ap0['auto']:.3f} (known diameter {ap0['known']:.3f})", flush=True)
    runs = {strategy: {k: [] for k in args.ks} for strategy in args.strategies}
    times = []
    sugg = suggested_boxes(base, train, max(args.ks)) if "suggested" in runs else None
    curve = f"{source}_{args.mode}"
    if args.steps_per_roi:
        curve += f"_{args.steps_per_roi}-steps-per-roi"
    if args.suffix:
        curve += f"_{args.suffix}"
    work = args.work / f"learning_curve_{curve}"
    plot = (RESULTS if args.out is None else args.out.parent) / f"learning_curve_{curve}.png"
    plot_name = (f"benchmarks/results/{plot.name}" if plot.resolve().parent == RESULTS
                 else str(plot))

    def write(payload):
        return update_results("learning_curve", ("curves", curve), payload, argv=argv,
                              out=args.out)

    for seed in range(args.seeds):
        rng = np.random.default_rng(seed)
        rand = random_boxes(train, max(args.ks), rng)
        for strategy, picks in (("random", rand), ("suggested", sugg)):
            if strategy not in runs:
                continue
            for k in args.ks:
                steps = {"steps": args.steps_per_roi * k} if args.steps_per_roi else {}
                ap, wall = teach_and_score(work / f"{strategy}-k{k}-s{seed}", picks[:k], base,
                                           val, diameter, mode=args.mode, seed=seed, **steps)
                runs[strategy][k].append(ap)
                times.append(wall)
                print(f"{strategy} k={k} seed={seed}: AP50 {ap['auto']:.3f} (known diameter "
                      f"{ap['known']:.3f}; {wall:.0f} s)", flush=True)
        # the results so far, after every seed: a long run stopped early still reports
        table = mean_sd_table({f"{strategy} {k}": aps for strategy, per_k in runs.items()
                               for k, aps in per_k.items()})
        for key in table:
            table[key] = {"0": {"mean": ap0[key], "sd": 0.0}, **table[key]}
        payload = {
            "source": source, "mode": args.mode, "roi_size": ROI, "seeds": seed + 1,
            "steps": (f"{args.steps_per_roi} per ROI" if args.steps_per_roi
                      else "the mode's default (tlseg.default_steps)"),
            "known_diameter": diameter,
            "base_model": f"tl-cells recipe without {source}, "
                          f"{args.epochs * 100} steps (tl-cells: 4000)",
            "base_model_card": {k: base.card.get(k) for k in ("command", "device",
                                "wall_time_s", "retuned") if k in base.card},
            f"{args.mode}_wall_s_median": float(np.median(times)),
            f"{args.mode}_wall_s_max": float(np.max(times)),
            "results": table}
        if seed + 1 < args.seeds:
            write({**payload, "partial": True})
    print_table(table, "ROIs")
    if args.mode == "finetune" and "random" in runs and not args.steps_per_roi:
        payload["retrain_vs_finetune"] = retrain_vs_finetune(
            work, base, train, val, diameter, max(args.ks), runs["random"][max(args.ks)][0],
            times[len(args.ks) - 1])
    _plot(table, args.ks, plot, source, args.seeds, args.mode, list(runs))
    out = write({**payload, "plot": plot_name})
    print(f"written {out} (curve {curve}) and {plot}")
    return 0


def teach_and_score(root: Path, picks, base, val, diameter, *, mode: str, seed: int,
                    **options) -> tuple[dict, float]:
    """Teach a model from ``picks`` in ``root`` (``options`` go to :func:`tlseg.teach`)
    and score it; a run finished before with the same mode and options (its
    ``score.json`` written) is read back instead, so a stopped benchmark resumes."""
    done = root / "score.json"
    settings = {"mode": mode, "seed": seed, **options}
    if done.is_file():
        record = json.loads(done.read_text())
        if record.get("settings", settings) == settings:
            return record["ap50"], record["wall_s"]
    _reset(root)
    project = build_project(root / "project", picks)
    t = time.time()
    model = tlseg.teach(project, base, root / "model", mode=mode, seed=seed, **options)
    wall = time.time() - t
    ap = score(model, val, diameter)
    with atomic_path(done) as tmp:
        tmp.write_text(json.dumps({"ap50": ap, "wall_s": wall, "settings": settings}))
    return ap, wall


def retrain_vs_finetune(work, base, train, val, diameter, k, finetune_ap, finetune_s) -> dict:
    """Retrain at ``k`` random ROIs (seed 0) against the fine-tune run on the same ROIs."""
    ap, wall = teach_and_score(work / f"retrain-k{k}-s0",
                               random_boxes(train, k, np.random.default_rng(0)), base, val,
                               diameter, mode="retrain", seed=0)
    retrain = {"ap50": ap, "wall_s": round(wall, 1),
               "finetune_ap50": finetune_ap, "finetune_wall_s": round(finetune_s, 1)}
    print(f"retrain ({k} random ROIs): AP50 {ap['auto']:.3f} (known diameter "
          f"{ap['known']:.3f}) in {retrain['wall_s']} s; fine-tune: {finetune_ap['auto']:.3f} "
          f"({finetune_ap['known']:.3f}) in {retrain['finetune_wall_s']} s")
    return retrain


def _plot(table, ks, path, source=SOURCE, seeds=3, mode="finetune",
          strategies=("random", "suggested")):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6), dpi=120, sharey=True)
    for ax, key, title in zip(axes, ("auto", "known"),
                              ("diameter estimated", "diameter known (--diameter)")):
        rows = table[key]
        for strategy, colour in (("random", "tab:blue"), ("suggested", "tab:orange")):
            if strategy not in strategies:
                continue
            xs = [0] + list(ks)
            m = [rows["0"]["mean"]] + [rows[f"{strategy} {k}"]["mean"] for k in ks]
            sd = [0] + [rows[f"{strategy} {k}"]["sd"] for k in ks]
            ax.errorbar(xs, m, yerr=sd, marker="o", capsize=4, label=f"{strategy} ROIs",
                        color=colour)
        ax.set_xlabel("corrected 256x256 ROIs")
        ax.set_xticks([0] + list(ks))
        ax.set_title(title, fontsize=10)
    axes[0].set_ylabel(f"AP@0.5 on {source} val (mean ± SD, {seeds} seeds)")
    axes[0].legend()
    verb = "Fine-tuning" if mode == "finetune" else "Retraining"
    fig.suptitle(f"{verb} a base model that never saw {source}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    sys.exit(main())
