"""``report.html``: one self-contained page (figures embedded as PNG) per plate run."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pandas as pd

from ..io import atomic_path
from .figures import (
    bar_chart,
    bland_altman,
    density_plot,
    example_site,
    heat_map,
    scatter,
    value_text,
)
from .summary import flagged_wells
from .validate import conditions_keys


def _settings(cfg: dict) -> str:
    """The run's settings as one line of ``name value`` pairs; unset ones left out, and
    the per-well diameters (in sites.csv) summarised as their range."""
    items = []
    for k, v in cfg.items():
        if v is None or v == "" or k == "well_diameters":
            continue
        if k.startswith("nuclei_") and not cfg.get("nuclei_channel"):
            continue  # a run without a nuclear channel used no nuclei model
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
    from .calibrate import NOT_MEASURED, conditions_text, worse_on_held_aside

    conds = conditions_text(c.get("conditions"))
    text = (f"Label-free model <code>{html.escape(str(model))}</code>, calibrated with the "
            f"nuclear stain on wells {html.escape(', '.join(c.get('wells', [])))}"
            + (f" ({html.escape(conds)})" if conds else "") + ".")
    if c.get("before") and c.get("after"):
        b, a = c["before"], c["after"]

        def err(s):
            e = s.get("mean_abs_rel_error")
            return f", mean |relative error| {100 * e:.1f} %" if e is not None else ""

        wells = c.get("checked_wells") or c["held_aside_wells"]
        text += (f" On {b['n_sites']} sites of the held-aside wells "
                 f"{html.escape(', '.join(wells))} ({b['nuclei']} nuclei): {b['label_free']} "
                 f"label-free cells before{err(b)}; {a['label_free']} after{err(a)}.")
        note = worse_on_held_aside(b, a)
    else:
        note = None if c.get("held_aside_wells") else NOT_MEASURED
    if note:
        text += f" <b>{html.escape(note[0].upper() + note[1:])}.</b>"
    return f"<h2>Calibration</h2><p>{text}</p>"


def _table(df: pd.DataFrame) -> str:
    """``df`` as an HTML table that scrolls sideways on its own when wider than the page
    (a plate map adds a column per condition)."""
    table = df.to_html(index=False, float_format=lambda v: f"{v:.4g}", na_rep="–", border=0,
                       classes="t")
    return f"<div class='wide'>{table}</div>"


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

    high = flagged_wells(wells)
    if high.empty:
        return ""
    text = (f"In <b>{len(high)}</b> of {int(wells['uncounted_texture'].notna().sum())} wells, "
            f"more than {FLAG:.0%} of a site's cell-like texture lies outside the cells "
            "counted (uncounted_texture in wells.csv and sites.csv). Look at their masks: "
            "missed cells (a confluent or unfamiliar culture: calibrate the model with a "
            "nuclear stain, <code>tlseg plate calibrate</code>, or teach it a few corrected "
            "ROIs), or structures and debris, which this check cannot tell from cells. "
            "Below, the worst site of a well: the texture outside the cells in orange, and "
            "the zoom where most of it lies.")
    cols = [c for c in ("well", "n_cells", "n_nuclei", "uncounted_texture") if c in high]
    more = f"<p>… and {len(high) - top} more.</p>" if len(high) > top else ""
    ok = sites[(sites["status"] == "ok") & sites["well"].isin(high["well"].head(shown))]
    worst = ok.sort_values("uncounted_texture", ascending=False).drop_duplicates("well")
    thumbs = [((f"{site['key']}: {int(site['n_cells'])} cells, uncounted texture "
                f"{site['uncounted_texture']:.2f}"), src)
              for site, src in _drawn(out, worst, run, uncounted=True)]
    return (f"<h2>Wells that may hide uncounted cells</h2><p>{text}</p>"
            + _table(high[cols].head(top)) + more + _figures(thumbs))


def _structures(sites: pd.DataFrame, top: int = 24) -> str:
    """The sites where the structure steps found a repeating pattern (``pattern`` in
    sites.csv: :func:`tlseg.inference.repeats.pattern_kind`), by well; or ''."""
    if "pattern" not in sites:
        return ""
    found = sites[sites["pattern"].isin(["lattice", "line"])]
    if found.empty:
        return ""
    what = {"lattice": "a chip's lattice of posts or traps, subtracted before segmenting",
            "line": "a wall or an edge repeating along one direction"}
    items = []
    for kind, group in found.groupby("pattern"):
        wells = sorted(set(group["well"]))
        names = ", ".join(wells[:top]) + (f" and {len(wells) - top} more" if len(wells) > top
                                          else "")
        items.append(f"<li>{len(group)} site(s), {what[kind]}: {html.escape(names)}</li>")
    n_ok = int((sites["status"] == "ok").sum())
    return (f"<h2>Structures</h2><p>At {len(found)} of {n_ok} sites a repeating structure was "
            "found, and the objects on it were dropped (pattern in sites.csv). A field of "
            "cells alone shows none: if these wells hold no chip or wall, look at their "
            "masks; a copy of the model folder with <code>remove_pattern: false</code> and "
            "<code>repeat_similarity: 0.0</code> in its tuning.yaml segments without these "
            f"steps.</p><ul>{''.join(items)}</ul>")


def _figures(thumbs: list[tuple[str, str]]) -> str:
    """A row of (caption, PNG data URL) figures, or '' when there are none."""
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
    model = (run.get("config") or {}).get("model")
    parts = [f"<h1>tlseg plate report</h1><p>Plate <code>{html.escape(run.get('plate', ''))}</code>"
             f" ({html.escape(str(run.get('layout')))} layout), {len(used)} wells, "
             f"{int((sites['status'] == 'ok').sum())} of {len(sites)} sites segmented. "
             f"</p>{_settings(run.get('config') or {})}"
             + _calibration(model)]
    problems = list(run.get("skipped_sites", [])) + [f"unparsed file name: {f}"
                                                      for f in run.get("unparsed_files", [])]
    problems += run.get("warnings", [])
    bad = sites[sites["status"] != "ok"]
    problems += [f"{r.well} site {r.site}: {r.error}" for r in bad.itertuples()]
    if problems:
        items = "".join(f"<li>{html.escape(str(p))}</li>" for p in problems)
        parts.append(f"<h2>Problems ({len(problems)})</h2><ul class='warn'>{items}</ul>")
    parts.append(_uncounted(used, sites, out, run))
    parts.append(_structures(sites))
    figs = []
    if conds is not None and len(conds):
        figs.append(("Counts per condition (mean ± SD over replicate wells)",
                     bar_chart(conds, keys, model)))
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
                figs.append((title, density_plot(d, model)))
    if len(used):  # a plate where no site was segmented has nothing to draw
        figs.append(("Label-free count per well",
                     heat_map(used, "n_cells", "label-free cells per well")))
    if "n_nuclei" in used and len(used):
        figs.append(("Nuclei count per well", heat_map(used, "n_nuclei", "nuclei per well")))
    parts.append(_figures(figs))
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
            ref = lr and lr.get("reference")
            if ref and ref.get("slope"):
                text += (f"; over these levels the slope is {lr['slope'] / ref['slope']:.2f} "
                         "times the nuclei's")
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
        legend = "green: cells, magenta: nuclei" if "n_nuclei" in used else "green: cells"
        parts.append(f"<h2>Example sites ({legend})</h2>"
                     + _figures(thumbs))
    parts.append("<h2>Wells</h2>" + _table(wells))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
             "table.t{border-collapse:collapse;font-size:12px}table.t td,table.t th"
             "{padding:2px 8px;border-bottom:1px solid #ddd;text-align:right}"
             ".figs{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}"
             "figcaption{font-size:12px;color:#555}.warn{color:#a00}.set{font-size:13px}"
             ".wide{overflow-x:auto}")
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>tlseg plate report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
    path = out / "report.html"
    with atomic_path(path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    return path


def _drawn(out: Path, picked: pd.DataFrame, run: dict, *, uncounted: bool = False):
    """(site record, overlay PNG) for each site of ``picked`` whose example can be drawn;
    ``uncounted``: with the cell-like texture outside the cells (:func:`example_site`)."""
    tl = (run.get("config") or {}).get("tl_channel")
    for _, site in picked.iterrows():
        key = site["key"]
        try:
            diameter = site.get("diameter")
            src = example_site(site["paths"][tl], out / "masks" / f"{key}_cells.tif",
                               out / "masks" / f"{key}_nuclei.tif",
                               float(diameter) if pd.notna(diameter) else None,
                               uncounted=uncounted)
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
    labels = {well: " · ".join(t for t in map(value_text, values) if t) for values, well in picks}
    return [(f"{labels[site['well']]} — {site['key']}: {int(site['n_cells'])} cells", src)
            for site, src in _drawn(out, first, run)]
