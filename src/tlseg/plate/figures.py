"""The figures of ``report.html``, each a matplotlib figure rendered to an embedded PNG:
counts per condition, label-free vs nuclei, Bland–Altman, counts vs seeding density,
plate heat maps and example sites (:mod:`tlseg.plate.examples`)."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .layout import split_well

LF, NUC = "#1b7837", "#5e3c99"  # label-free green, nuclei purple (colour-blind safe pair)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plain(text) -> str:
    """``text`` for a matplotlib label, shown as written: matplotlib reads ``$...$`` as
    mathtext (and fails on ``$\\foo$``), unless the dollar signs are escaped."""
    return str(text).replace("$", r"\$")


def value_text(v) -> str:
    """A plate-map value as text: numbers without a trailing .0, missing ones empty."""
    if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return ""
    return f"{v:g}" if isinstance(v, (int, float, np.number)) else str(v)


def _cond_label(row, keys) -> str:
    return " · ".join(t for t in (value_text(row[k]) for k in keys) if t) or "all"


def model_label(model) -> str:
    """The legend's name for the label-free counts: "label-free (<model>)", the model's
    name or its folder's.

    Examples
    --------
    >>> model_label("tl-cells"), model_label("/labs/plates/calibrated-2026/"), model_label(None)
    ('label-free (tl-cells)', 'label-free (calibrated-2026)', 'label-free')
    """
    name = Path(str(model)).name if model else ""
    return f"label-free ({_plain(name)})" if name else "label-free"


def bar_chart(conds: pd.DataFrame, keys: list[str], model: str | None = None) -> str:
    x = np.arange(len(conds))
    has_nuc = "n_nuclei_mean" in conds
    w = 0.38 if has_nuc else 0.6
    fig = Figure(figsize=(max(4.5, 0.7 * len(conds) + 2), 3.6))
    ax = fig.subplots()
    ax.bar(x - (w / 2 if has_nuc else 0), conds["n_cells_mean"], w, yerr=conds["n_cells_sd"],
           capsize=3, color=LF, label=model_label(model), error_kw={"lw": 1})
    if has_nuc:
        ax.bar(x + w / 2, conds["n_nuclei_mean"], w, yerr=conds["n_nuclei_sd"], capsize=3,
               color=NUC, label="nuclei", error_kw={"lw": 1})
    # plate-map names and values are the user's text: every one goes through _plain
    ax.set_xticks(x, [_plain(_cond_label(r, keys)) for _, r in conds.iterrows()], rotation=30,
                  ha="right")
    ax.set_xlabel(_plain(" · ".join(map(str, keys))))
    ax.set_ylabel("cells per well (mean ± SD)")
    ax.spines[["top", "right"]].set_visible(False)
    ax.legend(frameon=False)
    return _png(fig)


def scatter(wells: pd.DataFrame, color_by: str | None) -> str:
    fig = Figure(figsize=(4, 4))
    ax = fig.subplots()
    c = wells[color_by] if color_by and pd.api.types.is_numeric_dtype(wells[color_by]) else None
    colour = {"c": c, "cmap": "viridis"} if c is not None else {"color": LF}
    sc = ax.scatter(wells["n_nuclei"], wells["n_cells"], s=22, edgecolor="k", linewidth=0.3,
                    **colour)
    hi = max(wells["n_nuclei"].max(), wells["n_cells"].max()) * 1.05 + 1
    ax.plot([0, hi], [0, hi], "k--", lw=0.8, label="identity")
    ax.set_xlim(0, hi)
    ax.set_ylim(0, hi)
    ax.set_xlabel("nuclei count per well")
    ax.set_ylabel("label-free count per well")
    ax.set_aspect("equal")
    if c is not None:
        fig.colorbar(sc, ax=ax, shrink=0.8, label=_plain(color_by))
    ax.legend(frameon=False, loc="upper left")
    return _png(fig)


def density_plot(d: dict, model: str | None = None) -> str:
    """Counts against seeding density, label-free and nuclei side by side: level means ±
    SD over replicate wells, each count's line fitted over the linear range, the range
    shaded."""
    panels = [(c, name, colour) for c, name, colour in
              (("n_cells", model_label(model), LF), ("n_nuclei", "nuclei", NUC))
              if c in d["means"]]
    fig = Figure(figsize=(4 * len(panels), 3.6))
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    lr = d["linear_range"]
    for ax, (count, name, colour) in zip(axes, panels):
        m = pd.DataFrame(d["means"][count])
        ax.errorbar(m["density"], m["mean"], yerr=m["sd"].fillna(0), fmt="o", color=colour,
                    capsize=3, label=f"{name}, mean ± SD")
        if lr is not None:
            ax.axvspan(lr["low"], lr["high"], color="0.9", zorder=0, label="linear range")
            line = lr if count == "n_cells" else lr.get("reference")
            if line is not None:
                x = np.linspace(lr["low"], lr["high"], 20)
                ax.plot(x, line["intercept"] + line["slope"] * x, "k-", lw=1,
                        label="fit, R² of means " + (f"{line['r2_means']:.3f}"
                                                     if line["r2_means"] is not None else "–"))
        ax.set_xlabel(_plain(d["column"]))
        ax.set_ylim(bottom=0)
        ax.legend(frameon=False, fontsize=8, loc="upper left")
    axes[0].set_ylabel("count per well")
    return _png(fig)


def bland_altman(wells: pd.DataFrame, stats: dict) -> str:
    m = (wells["n_cells"] + wells["n_nuclei"]) / 2
    d = wells["n_cells"] - wells["n_nuclei"]
    fig = Figure(figsize=(4.6, 3.4))
    ax = fig.subplots()
    ax.scatter(m, d, s=20, color=LF, edgecolor="k", linewidth=0.3)
    same = stats.get("loa_low") == stats.get("loa_high")  # every well differs alike
    for key, style in (("bias", "-"), ("loa_low", "--"), ("loa_high", "--")):
        if stats.get(key) is not None and not (same and key != "bias"):
            ax.axhline(stats[key], color="k", ls=style, lw=0.8)
            ax.annotate(f"{key.replace('_', ' ')} {stats[key]:.1f}", (1.0, stats[key]),
                        xycoords=("axes fraction", "data"), fontsize=7, ha="right", va="bottom")
    ax.axhline(0, color="0.7", lw=0.6)
    ax.set_xlabel("mean of the two counts")
    ax.set_ylabel("label-free − nuclei")
    ax.spines[["top", "right"]].set_visible(False)
    return _png(fig)


def heat_map(wells: pd.DataFrame, column: str, title: str) -> str:
    rc = np.array([split_well(w) for w in wells["well"]])
    nrow, ncol = rc[:, 0].max(), rc[:, 1].max()
    for r, c in ((8, 12), (16, 24), (32, 48)):  # draw the whole standard plate
        if nrow <= r and ncol <= c:
            nrow, ncol = r, c
            break
    grid = np.full((nrow, ncol), np.nan)
    grid[rc[:, 0] - 1, rc[:, 1] - 1] = wells[column].to_numpy(float)
    fig = Figure(figsize=(0.32 * ncol + 1.5, 0.32 * nrow + 0.8))
    ax = fig.subplots()
    import matplotlib

    cmap = matplotlib.colormaps["magma"].with_extremes(bad="0.93")  # empty wells light gray
    im = ax.imshow(np.ma.masked_invalid(grid), cmap=cmap, interpolation="nearest")
    from .layout import row_name

    ax.set_xticks(range(ncol), [str(i + 1) for i in range(ncol)], fontsize=6)
    ax.set_yticks(range(nrow), [row_name(i + 1) for i in range(nrow)], fontsize=6)
    ax.set_title(_plain(title), fontsize=9)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return _png(fig)


def example_site(image_path: str, masks_path: Path, nuclei_path: Path | None,
                 diameter: float | None = None, *, uncounted: bool = False) -> str:
    """The two-panel example of one site (:func:`tlseg.plate.examples.example_figure`);
    with ``uncounted`` (and a ``diameter``), the cell-like texture outside its cells drawn
    and zoomed on (:func:`tlseg.uncounted_patches`)."""
    import tifffile

    from ..analysis.coverage import uncounted_patches
    from ..io import read_image
    from .examples import example_figure

    nuclei = None
    if nuclei_path is not None and nuclei_path.is_file():
        nuclei = tifffile.imread(nuclei_path)
    image, cells = read_image(image_path).astype(np.float32), tifffile.imread(masks_path)
    patches = uncounted_patches(image, cells, diameter) if uncounted and diameter else None
    return _png(example_figure(image, cells, nuclei, diameter=diameter, uncounted=patches))
