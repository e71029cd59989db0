"""Count validation: label-free cell counts against nuclei counts (scipy.stats).

Agreement statistics over wells (each well one pair of counts):

- paired t-test (``scipy.stats.ttest_rel``) of label-free vs nuclei counts;
- Pearson r and R² (``scipy.stats.pearsonr``);
- Lin's concordance correlation coefficient (CCC), which, unlike r, also penalises a
  bias or a slope different from 1;
- Bland–Altman bias (mean difference) and 95 % limits of agreement (bias ± 1.96 SD),
  in cells and as percent of the nuclei count;
- the *linear range*: the widest run of consecutive seeding densities over which the
  label-free count is linear in density and agrees with the nuclear stain. Linearity is
  judged as a biologist reads a dilution series, on the condition means: the straight
  line fitted to the replicate wells explains at least 95 % of the variance of the
  means (R² of the means), and a lack-of-fit F-test (the means' scatter around the line
  against the replicate wells' scatter around their means) does not reject the line
  at 0.05. Replicate scatter alone fails neither: an R² over single wells does (a
  plate of 4 levels with counts 24 to 179 has all-level R² 0.966 over wells, but no
  two-level prefix reaching 0.95). Agreement: every level's mean label-free count is
  within 10 % of its mean nuclei count.

The same agreement statistics over condition means need at least ``MIN_CONDITIONS`` (3)
conditions; per condition, a paired t-test over its replicate wells.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import TlsegError
from .plate_map import CONDITION_COLUMNS, WELL_COLUMNS

LINEAR_R2 = 0.95  # of the level means
LACK_OF_FIT_ALPHA = 0.05
AGREEMENT = 0.10
#: condition means that agreement statistics over conditions need: through two points
#: any line fits (Pearson r is ±1, R² 1)
MIN_CONDITIONS = 3


def lins_ccc(x, y) -> float:
    """Lin's concordance correlation coefficient of two paired samples."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    sxy = np.mean((x - x.mean()) * (y - y.mean()))
    denom = x.var() + y.var() + (x.mean() - y.mean()) ** 2
    return float(2 * sxy / denom) if denom > 0 else float("nan")


def _f(v) -> float | None:
    if v is None:
        return None
    v = float(v)
    return None if math.isnan(v) or math.isinf(v) else v


def agreement(label_free, nuclei) -> dict:
    """Paired agreement statistics between two count vectors (one pair per well)."""
    x = np.asarray(nuclei, float)
    y = np.asarray(label_free, float)
    n = len(x)
    res: dict = {"n": n}
    if n < 2:
        return res
    d = y - x
    res["mean_label_free"] = _f(y.mean())
    res["mean_nuclei"] = _f(x.mean())
    if np.ptp(x) > 0 and np.ptp(y) > 0:
        r, p = stats.pearsonr(x, y)
        res.update(pearson_r=_f(r), pearson_p=_f(p), r2=_f(r * r))
    res["ccc"] = _f(lins_ccc(y, x))
    if np.ptp(d) > 0:
        t = stats.ttest_rel(y, x)
        res.update(paired_t=_f(t.statistic), paired_p=_f(t.pvalue))
    else:
        res.update(paired_t=None, paired_p=1.0 if not d.any() else 0.0)
    sd = d.std(ddof=1)
    res.update(bias=_f(d.mean()), loa_low=_f(d.mean() - 1.96 * sd), loa_high=_f(d.mean() + 1.96 * sd))
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.where(x > 0, d / x, np.nan)
    if np.isfinite(rel).any():
        res["bias_percent"] = _f(100 * np.nanmean(rel))
        res["mean_abs_bias_percent"] = _f(100 * np.nanmean(np.abs(rel)))
    return res


def density_column(wells: pd.DataFrame, name: str | None = None) -> str | None:
    """The plate-map column holding the seeding density: ``name``, or a numeric column
    whose name mentions density/seeded/cells_per_well."""
    if name is not None:
        if name not in wells:
            raise TlsegError(f"--density-column {name!r} is not a plate-map column "
                             f"(columns: {', '.join(map(str, wells.columns))})")
        return name
    for c in wells.columns:
        lc = str(c).lower()
        if any(k in lc for k in ("density", "seeded", "seeding", "cells_per_well", "dilution")) \
                and pd.api.types.is_numeric_dtype(wells[c]):
            return c
    return None


def level_means(wells: pd.DataFrame, density: str, count: str) -> list[dict]:
    """Per density level: mean, SD (over replicate wells) and number of wells of ``count``."""
    g = wells.groupby(density)[count]
    return [{"density": _f(d), "mean": _f(m), "sd": _f(s), "n": int(n)}
            for d, m, s, n in zip(g.mean().index, g.mean(), g.std(ddof=1), g.count())]


def _line(w: pd.DataFrame, density: str, count: str) -> dict:
    """Straight line fitted to the wells; R² of the level means around it; lack of fit."""
    x, y = w[density].astype(float), w[count].astype(float)
    fit = stats.linregress(x, y)
    g = w.groupby(density)[count]
    means, n = g.mean(), g.count()
    pred = fit.intercept + fit.slope * means.index.astype(float)
    ss_means = float(((means - means.mean()) ** 2).sum())
    ss_lof = float((n * (means - pred) ** 2).sum())
    r2 = 1.0 - float(((means - pred) ** 2).sum()) / ss_means if ss_means > 0 else None
    ss_pe = float(((y - w[density].map(means)) ** 2).sum())
    df_lof, df_pe = len(means) - 2, len(w) - len(means)
    p = None
    tiny = 1e-9 * max(float(((y - y.mean()) ** 2).sum()), 1e-12)  # float noise of exact data
    if df_lof >= 1 and df_pe >= 1:
        if ss_lof <= tiny:
            p = 1.0
        elif ss_pe <= tiny:
            p = 0.0
        else:
            p = float(stats.f.sf((ss_lof / df_lof) / (ss_pe / df_pe), df_lof, df_pe))
    return {"slope": _f(fit.slope), "intercept": _f(fit.intercept), "r2_means": _f(r2),
            "r2_wells": _f(fit.rvalue**2), "lack_of_fit_p": _f(p)}


def linear_range(wells: pd.DataFrame, density: str, *, count: str = "n_cells",
                 reference: str | None = "n_nuclei") -> dict:
    """The widest run of consecutive density levels where ``count`` is linear in density
    (judged on the level means, see the module docstring) and each level's mean is within
    :data:`AGREEMENT` of ``reference``'s. The range's ``reference`` entry is the line
    fitted to ``reference`` over the same levels (its slope against the count's says how
    many label-free cells each nucleus gives).

    Examples
    --------
    >>> wells = pd.DataFrame({"d": [1, 1, 2, 2, 4, 4, 8, 8], "n_sites": 1,
    ...                       "n_cells": [9, 12, 19, 22, 41, 38, 60, 63],
    ...                       "n_nuclei": [10, 11, 21, 20, 40, 39, 80, 79]})
    >>> lr = linear_range(wells, "d")["linear_range"]
    >>> lr["low"], lr["high"], lr["n_levels"]
    (1.0, 4.0, 3)
    >>> round(lr["slope"] / lr["reference"]["slope"], 2)  # label-free / nuclei slope
    1.0
    """
    w = wells.dropna(subset=[density])
    w = w[w["n_sites"] > 0]
    levels = sorted(w[density].unique())
    ref = reference if reference and reference in w else None
    means = w.groupby(density)[[c for c in (count, ref) if c]].mean()
    best = None
    for i in range(len(levels)):
        for j in range(i + 2, len(levels) + 1):
            run = levels[i:j]
            if best is not None and (len(run), -i) <= (best["n_levels"], -best["_start"]):
                continue
            line = _line(w[w[density].isin(run)], density, count)
            linear = (line["r2_means"] is not None and line["r2_means"] >= LINEAR_R2
                      and (line["lack_of_fit_p"] is None
                           or line["lack_of_fit_p"] >= LACK_OF_FIT_ALPHA))
            agree = True
            if ref:
                m = means.loc[run]
                with np.errstate(divide="ignore", invalid="ignore"):
                    rel = np.abs(m[count] - m[ref]) / m[ref]
                agree = bool((rel <= AGREEMENT).all())
            if linear and agree:
                best = {"low": _f(run[0]), "high": _f(run[-1]), "n_levels": len(run),
                        "_start": i, **line}
                if ref:  # the stain's own line over the same levels, drawn beside it
                    best["reference"] = _line(w[w[density].isin(run)], density, ref)
    if best is not None:
        best.pop("_start")
    full = _line(w, density, count) if len(levels) >= 2 else None
    return {"column": density, "levels": [_f(v) for v in levels], "linear_range": best,
            "fit_all_levels": full,
            "means": {c: level_means(w, density, c) for c in (count, ref) if c},
            "criteria": {"r2_means_min": LINEAR_R2, "lack_of_fit_alpha": LACK_OF_FIT_ALPHA,
                         "max_rel_diff": AGREEMENT}}


def validate_counts(wells: pd.DataFrame, conditions: pd.DataFrame | None = None, *,
                    density: str | None = None) -> dict:
    """All validation statistics, per well and per condition (see the module docstring)."""
    if "n_nuclei" not in wells:
        raise TlsegError("no nuclei counts in this run; rerun `tlseg plate run` with "
                         "--nuclei-channel to validate label-free counts")
    used = wells[wells["n_sites"] > 0]
    if len(used) < 2:
        raise TlsegError("count validation needs at least 2 wells with results")
    res = {"per_well": agreement(used["n_cells"], used["n_nuclei"])}
    if conditions is not None and len(conditions) >= 2:
        if len(conditions) >= MIN_CONDITIONS:
            res["per_condition"] = agreement(conditions["n_cells_mean"],
                                             conditions["n_nuclei_mean"])
        keys = conditions_keys(conditions)
        tests = []
        for _, row in conditions.iterrows():
            mask = np.ones(len(used), bool)
            for k in keys:
                mask &= (used[k] == row[k]).to_numpy()
            sub = used[mask]
            entry = {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in keys}
            entry.update(n_wells=len(sub),
                         n_cells_mean=_f(sub["n_cells"].mean()), n_cells_sd=_f(sub["n_cells"].std(ddof=1)),
                         n_nuclei_mean=_f(sub["n_nuclei"].mean()),
                         n_nuclei_sd=_f(sub["n_nuclei"].std(ddof=1)))
            d = (sub["n_cells"] - sub["n_nuclei"]).to_numpy(float)
            if len(sub) >= 2 and np.ptp(d) > 0:
                t = stats.ttest_rel(sub["n_cells"], sub["n_nuclei"])
                entry.update(paired_t=_f(t.statistic), paired_p=_f(t.pvalue))
            tests.append(entry)
        res["conditions"] = tests
    col = density_column(wells, density)
    if col is not None:
        # one linear range per cell line / treatment: the other condition columns that vary
        keys = conditions_keys(wells) if conditions is None else [
            c for c in conditions_keys(conditions) if c in wells]
        by = [c for c in keys if c != col and used[c].nunique(dropna=False) > 1]
        if by:
            res["density"] = []
            for values, sub in used.groupby(by, dropna=False):
                values = values if isinstance(values, tuple) else (values,)
                group = {k: (v.item() if hasattr(v, "item") else v) for k, v in zip(by, values)}
                res["density"].append({"group": group, **linear_range(sub, col)})
        else:
            res["density"] = [{"group": {}, **linear_range(used, col)}]
    return res


def conditions_keys(table: pd.DataFrame) -> list[str]:
    """The plate-map columns of a wells or conditions table: every column tlseg did not
    write. Matched by name, not by prefix: a plate map's ``cells_per_well`` is a condition.

    Examples
    --------
    >>> conditions_keys(pd.DataFrame(columns=["well", "n_cells", "cells_per_well", "n_wells"]))
    ['cells_per_well']
    """
    return [c for c in table.columns if c not in WELL_COLUMNS + CONDITION_COLUMNS]
