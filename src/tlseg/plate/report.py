"""``report.html``: one self-contained page (figures embedded as PNG) per plate run."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..io import atomic_path
from .layout import split_well
from .validate import conditions_keys

LF, NUC = "#1b7837", "#5e3c99"  # label-free green, nuclei purple (colour-blind safe pair)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _plain(text) -> str:
    """``text`` for a matplotlib label, shown as written: matplotlib reads ``$...$`` as
    mathtext (and fails on ``$\\foo$``), unless the dollar signs are escaped."""
    return str(text).replace("$", r"\$")


def _value(v) -> str:
    """A plate-map value as text: numbers without a trailing .0, missing ones empty."""
    if v is None or (isinstance(v, (float, np.floating)) and np.isnan(v)):
        return ""
    return f"{v:g}" if isinstance(v, (int, float, np.number)) else str(v)


def _cond_label(row, keys) -> str:
    return " · ".join(t for t in (_value(row[k]) for k in keys) if t) or "all"


def bar_chart(conds: pd.DataFrame, keys: list[str]) -> str:
    x = np.arange(len(conds))
    has_nuc = "n_nuclei_mean" in conds
    w = 0.38 if has_nuc else 0.6
    fig = Figure(figsize=(max(4.5, 0.7 * len(conds) + 2), 3.6))
    ax = fig.subplots()
    ax.bar(x - (w / 2 if has_nuc else 0), conds["n_cells_mean"], w, yerr=conds["n_cells_sd"],
           capsize=3, color=LF, label="label-free (tl-cells)", error_kw={"lw": 1})
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


def density_plot(d: dict) -> str:
    """Counts against seeding density, label-free and nuclei side by side: level means ±
    SD over replicate wells, the line fitted over the linear range, the range shaded."""
    panels = [(c, name, colour) for c, name, colour in
              (("n_cells", "label-free (tl-cells)", LF), ("n_nuclei", "nuclei", NUC))
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
            if count == "n_cells":
                x = np.linspace(lr["low"], lr["high"], 20)
                ax.plot(x, lr["intercept"] + lr["slope"] * x, "k-", lw=1,
                        label=f"fit, R² of means {lr['r2_means']:.3f}")
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
    for key, style in (("bias", "-"), ("loa_low", "--"), ("loa_high", "--")):
        if stats.get(key) is not None:
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
                 diameter: float | None = None) -> str:
    """The two-panel example of one site (:func:`tlseg.plate.examples.example_figure`)."""
    import tifffile

    from ..io import read_image
    from .examples import example_figure

    nuclei = None
    if nuclei_path is not None and nuclei_path.is_file():
        nuclei = tifffile.imread(nuclei_path)
    return _png(example_figure(read_image(image_path).astype(np.float32),
                               tifffile.imread(masks_path), nuclei, diameter=diameter))


def _settings(cfg: dict) -> str:
    """The run's settings as one line of ``name value`` pairs; unset ones left out, and
    the per-well diameters (in sites.csv) summarised as their range."""
    items = []
    for k, v in cfg.items():
        if v is None or v == "" or k == "well_diameters":
            continue
        if isinstance(v, float):
            text = f"{v:.4g}"
        else:
            text = json.dumps(v) if isinstance(v, (dict, list)) else str(v)
        items.append(f"{k.replace('_', ' ')} <code>{html.escape(text)}</code>")
    per_well = cfg.get("well_diameters") or {}
    cells = [d[0] for d in per_well.values() if d and d[0]]
    if cells:
        items.append(f"cell diameters {min(cells):.1f}–{max(cells):.1f} px by well (sites.csv)")
    return f"<p class='set'>Settings: {' · '.join(items)}</p>" if items else ""


def _calibration(model: str | None) -> str:
    """A paragraph on the label-free model's calibration, when it was made by
    ``tlseg plate calibrate`` (its card says on which wells, and how it agreed)."""
    import yaml

    card_file = Path(str(model)) / "card.yaml" if model else None
    if card_file is None or not card_file.is_file():
        return ""
    try:
        c = (yaml.safe_load(card_file.read_text()) or {}).get("calibration")
    except (OSError, yaml.YAMLError):
        return ""
    if not c:
        return ""
    text = (f"Label-free model <code>{html.escape(str(model))}</code>, calibrated with the "
            f"nuclear stain on wells {html.escape(', '.join(c.get('wells', [])))}.")
    if c.get("before") and c.get("after"):
        b, a = c["before"], c["after"]

        def err(s):
            e = s.get("mean_abs_rel_error")
            return f", mean |relative error| {100 * e:.1f} %" if e is not None else ""

        wells = c.get("checked_wells") or c["held_aside_wells"]
        text += (f" On {b['n_sites']} sites of the held-aside wells "
                 f"{html.escape(', '.join(wells))} ({b['nuclei']} nuclei): {b['label_free']} "
                 f"label-free cells before{err(b)}; {a['label_free']} after{err(a)}.")
    return f"<h2>Calibration</h2><p>{text}</p>"


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="–", border=0,
                      classes="t")


def _stats_rows(s: dict) -> str:
    names = [("n", "wells"), ("pearson_r", "Pearson r"), ("r2", "R²"), ("ccc", "Lin's CCC"),
             ("paired_t", "paired t"), ("paired_p", "paired t-test p"), ("bias", "bias (cells)"),
             ("loa_low", "95 % limits of agreement, low"), ("loa_high", "… high"),
             ("bias_percent", "bias (% of nuclei count)"),
             ("mean_abs_bias_percent", "mean |bias| (%)")]
    rows = "".join(f"<tr><td>{label}</td><td>{s[k]:.4g}</td></tr>"
                   for k, label in names if s.get(k) is not None)
    return f"<table class='t'>{rows}</table>"


def _uncounted(wells: pd.DataFrame, sites: pd.DataFrame, out: Path, run: dict,
               top: int = 12, shown: int = 3) -> str:
    """The wells whose cell-like texture lies mostly outside the cells counted
    (``uncounted_texture`` over :data:`tlseg.analysis.coverage.FLAG`), with the worst site
    of the first ``shown`` of them drawn; or ''."""
    from ..analysis.coverage import FLAG

    if "uncounted_texture" not in wells:
        return ""
    high = wells[wells["uncounted_texture"] > FLAG].sort_values("uncounted_texture",
                                                                ascending=False)
    if high.empty:
        return ""
    text = (f"In <b>{len(high)}</b> of {int(wells['uncounted_texture'].notna().sum())} wells, "
            f"more than {FLAG:.0%} of a site's cell-like texture lies outside the cells "
            "counted (uncounted_texture in wells.csv and sites.csv). Look at their masks: "
            "missed cells (a confluent or unfamiliar culture: calibrate the model with a "
            "nuclear stain, <code>tlseg plate calibrate</code>, or teach it a few corrected "
            "ROIs), or structures and debris, which this check cannot tell from cells.")
    cols = [c for c in ("well", "n_cells", "n_nuclei", "uncounted_texture") if c in high]
    more = f"<p>… and {len(high) - top} more.</p>" if len(high) > top else ""
    ok = sites[(sites["status"] == "ok") & sites["well"].isin(high["well"].head(shown))]
    worst = ok.sort_values("uncounted_texture", ascending=False).drop_duplicates("well")
    thumbs = [((f"{site['key']}: {int(site['n_cells'])} cells, uncounted texture "
                f"{site['uncounted_texture']:.2f}"), src)
              for site, src in _drawn(out, worst, run)]
    return (f"<h2>Wells that may hide uncounted cells</h2><p>{text}</p>"
            + _table(high[cols].head(top)) + more + _figures(thumbs))


def _figures(thumbs: list[tuple[str, str]]) -> str:
    return ("<div class='figs'>" + "".join(
        f"<figure><img src='{src}'><figcaption>{html.escape(cap)}</figcaption></figure>"
        for cap, src in thumbs) + "</div>") if thumbs else ""


def _parting(wells: pd.DataFrame, totals: dict, top: int = 5) -> str:
    """Where the label-free and nuclei counts part: the plate's ``totals`` (validation.json
    ``parting``) and the wells that part most (:func:`tlseg.plate.summary.nucleus_check`)."""
    text = (f"Of {int(wells['n_cells'].sum())} label-free cells, "
            f"<b>{totals['cells_without_nucleus']}</b> contain no nucleus (debris, or a cell "
            f"cut in two) and <b>{totals['cells_with_several_nuclei']}</b> contain two or more "
            f"(touching cells drawn as one); <b>{totals['nuclei_outside_cells']}</b> of "
            f"{int(wells['n_nuclei'].sum())} nuclei lie outside every cell (cells the "
            "label-free model missed).")
    off = (wells["cells_without_nucleus"] + wells["cells_with_several_nuclei"]
           + wells["nuclei_outside_cells"])
    worst = wells.assign(_off=off / wells["n_nuclei"].clip(lower=1))
    worst = worst[off > 0].sort_values("_off", ascending=False).head(top)
    table = ""
    if len(worst):
        cols = ["well", "n_cells", "n_nuclei", "cells_without_nucleus",
                "cells_with_several_nuclei", "nuclei_outside_cells"]
        table = "<p>Wells to look at first:</p>" + _table(worst[cols])
    return f"<h2>Where the counts part</h2><p>{text}</p>{table}"


def write_report(out, *, wells: pd.DataFrame, conds: pd.DataFrame | None, sites: pd.DataFrame,
                 validation: dict | None, run: dict) -> Path:
    """Write ``out/report.html`` and return its path."""
    out = Path(out)
    keys = conditions_keys(conds) if conds is not None else []
    used = wells[wells["n_sites"] > 0]
    parts = [f"<h1>tlseg plate report</h1><p>Plate <code>{html.escape(run.get('plate', ''))}</code>"
             f" ({html.escape(str(run.get('layout')))} layout), {len(used)} wells, "
             f"{int((sites['status'] == 'ok').sum())} of {len(sites)} sites segmented. "
             f"</p>{_settings(run.get('config') or {})}"
             + _calibration((run.get("config") or {}).get("model"))]
    problems = list(run.get("skipped_sites", [])) + [f"unparsed file name: {f}"
                                                      for f in run.get("unparsed_files", [])]
    problems += run.get("warnings", [])
    bad = sites[sites["status"] != "ok"]
    problems += [f"{r.well} site {r.site}: {r.error}" for r in bad.itertuples()]
    if problems:
        items = "".join(f"<li>{html.escape(str(p))}</li>" for p in problems)
        parts.append(f"<h2>Problems ({len(problems)})</h2><ul class='warn'>{items}</ul>")
    parts.append(_uncounted(used, sites, out, run))
    figs = []
    if conds is not None and len(conds):
        figs.append(("Counts per condition (mean ± SD over replicate wells)", bar_chart(conds, keys)))
    if validation is not None:
        density = None
        if validation.get("density"):
            density = validation["density"][0]["column"]
        figs.append(("Label-free vs nuclei count, one point per well", scatter(used, density)))
        figs.append(("Bland–Altman", bland_altman(used, validation["per_well"])))
        for d in validation.get("density") or []:
            if d.get("means"):
                group = ", ".join(f"{k} = {v}" for k, v in d["group"].items())
                title = (f"Counts vs {d['column']}{' — ' + group if group else ''}: "
                         "means ± SD, linear range shaded")
                figs.append((title, density_plot(d)))
    if len(used):  # a plate where no site was segmented has nothing to draw
        figs.append(("Label-free count per well",
                     heat_map(used, "n_cells", "label-free cells per well")))
    if "n_nuclei" in used and len(used):
        figs.append(("Nuclei count per well", heat_map(used, "n_nuclei", "nuclei per well")))
    parts.append("<div class='figs'>" + "".join(
        f"<figure><img src='{src}'><figcaption>{html.escape(cap)}</figcaption></figure>"
        for cap, src in figs) + "</div>")
    if validation is not None:
        parts.append("<h2>Agreement, per well</h2>" + _stats_rows(validation["per_well"]))
        if validation.get("per_condition"):
            parts.append("<h2>Agreement, per condition mean</h2>"
                         + _stats_rows(validation["per_condition"]))
        for d in validation.get("density") or []:
            lr = d["linear_range"]
            group = ", ".join(f"{k} = {v}" for k, v in d["group"].items())
            lof = lr and lr.get("lack_of_fit_p")
            text = (f"{d['column']} {lr['low']:g} to {lr['high']:g} ({lr['n_levels']} levels; "
                    f"R² of the means {lr['r2_means']:.3f}"
                    + (f", lack-of-fit p {lof:.2f}" if lof is not None else "") + ")"
                    if lr else "no run of two or more levels meets the criteria")
            c = d["criteria"]
            parts.append(f"<h2>Linear range{(' — ' + html.escape(group)) if group else ''}</h2>"
                         f"<p>Label-free count linear in {html.escape(str(d['column']))} "
                         f"(R² of the level means ≥ {c['r2_means_min']}, and a lack-of-fit "
                         f"F-test against the replicate wells not significant at "
                         f"{c['lack_of_fit_alpha']}) and each level's mean within "
                         f"{100 * c['max_rel_diff']:.0f} % of the nuclei count: "
                         f"<b>{html.escape(text)}</b>.</p>")
    if validation is not None and "parting" in validation:
        parts.append(_parting(used, validation["parting"]))
    if conds is not None and len(conds):
        parts.append("<h2>Conditions</h2>" + _table(conds))
    thumbs = _examples(out, used, sites, keys, run)
    if thumbs:
        parts.append("<h2>Example sites (green: cells, magenta: nuclei)</h2>"
                     + _figures(thumbs))
    parts.append("<h2>Wells</h2>" + _table(wells))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "table.t{border-collapse:collapse;font-size:12px}table.t td,table.t th"
             "{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
             ".figs{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}"
             "figcaption{font-size:12px;color:#555}.warn{color:#a00}.set{font-size:13px}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>tlseg plate report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    path = out / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def _drawn(out: Path, picked: pd.DataFrame, run: dict):
    """(site record, overlay PNG) for each site of ``picked`` whose example can be drawn."""
    tl = (run.get("config") or {}).get("tl_channel")
    for _, site in picked.iterrows():
        key = site["key"]
        try:
            diameter = site.get("diameter")
            src = example_site(site["paths"][tl], out / "masks" / f"{key}_cells.tif",
                               out / "masks" / f"{key}_nuclei.tif",
                               float(diameter) if pd.notna(diameter) else None)
        except Exception:  # an example picture must never break the report
            continue
        yield site, src


def _examples(out: Path, used, sites, keys, run, limit: int = 8) -> list[tuple[str, str]]:
    """One overlay thumbnail per condition (or per the first wells without a plate map)."""
    ok = sites[sites["status"] == "ok"]
    picks = []
    if keys:
        for values, group in used.groupby(keys, sort=True):
            picks.append((values if isinstance(values, tuple) else (values,), group["well"].iloc[0]))
    else:
        picks = [((w,), w) for w in used["well"].iloc[:4]]
    picks = picks[:limit]
    first = pd.DataFrame([ok[ok["well"] == well].iloc[0] for _, well in picks])
    labels = {well: " · ".join(t for t in map(_value, values) if t) for values, well in picks}
    return [(f"{labels[site['well']]} — {site['key']}: {int(site['n_cells'])} cells", src)
            for site, src in _drawn(out, first, run)]
