"""Count validation: label-free cell counts against nuclei counts (scipy.stats).

Agreement statistics over wells (each well one pair of counts):

- paired t-test (``scipy.stats.ttest_rel``) of label-free vs nuclei counts;
- Pearson r and R² (``scipy.stats.pearsonr``);
- Lin's concordance correlation coefficient (CCC), which, unlike r, also penalises a
  bias or a slope different from 1;
- Bland–Altman bias (mean difference) and 95 % limits of agreement (bias ± 1.96 SD),
  in cells and as percent of the nuclei count;
- the *linear range*: the widest run of seeding densities, starting at the lowest,
  over which the label-free count is linear in density (R² ≥ 0.95 of a straight-line
  fit to the replicate wells) and every condition's mean label-free count is within
  10 % of its mean nuclei count.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import TlsegError
from .layout import CONDITION_COLUMNS, WELL_COLUMNS

LINEAR_R2 = 0.95
AGREEMENT = 0.10


def lins_ccc(x, y) -> float:
    """Lin's concordance correlation coefficient of two paired samples."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    sxy = np.mean((x - x.mean()) * (y - y.mean()))
    denom = x.var() + y.var() + (x.mean() - y.mean()) ** 2
    return float(2 * sxy / denom) if denom > 0 else float("nan")


def _f(v) -> float | None:
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


def linear_range(wells: pd.DataFrame, density: str, *, count: str = "n_cells",
                 reference: str | None = "n_nuclei") -> dict:
    """Widest density range [lowest, d] where ``count`` stays linear and agrees with ``reference``."""
    w = wells.dropna(subset=[density])
    w = w[w["n_sites"] > 0]
    levels = sorted(w[density].unique())
    means = w.groupby(density)[[c for c in (count, reference) if c and c in w]].mean()
    best = None
    for k in range(2, len(levels) + 1):
        sub = w[w[density].isin(levels[:k])]
        if np.ptp(sub[density]) == 0:
            continue
        fit = stats.linregress(sub[density].astype(float), sub[count].astype(float))
        r2 = fit.rvalue**2
        ok_lin = r2 >= LINEAR_R2
        ok_agree = True
        if reference and reference in means:
            m = means.loc[levels[:k]]
            with np.errstate(divide="ignore", invalid="ignore"):
                rel = np.abs(m[count] - m[reference]) / m[reference]
            ok_agree = bool((rel <= AGREEMENT).all())
        if ok_lin and ok_agree:
            best = {"low": _f(levels[0]), "high": _f(levels[k - 1]), "r2": _f(r2),
                    "slope": _f(fit.slope), "intercept": _f(fit.intercept), "n_levels": k}
        else:
            break
    full = None
    if len(levels) >= 2:
        fit = stats.linregress(w[density].astype(float), w[count].astype(float))
        full = {"r2": _f(fit.rvalue**2), "slope": _f(fit.slope), "intercept": _f(fit.intercept)}
    return {"column": density, "levels": [_f(v) for v in levels], "linear_range": best,
            "fit_all_levels": full, "criteria": {"r2_min": LINEAR_R2, "max_rel_diff": AGREEMENT}}


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
        res["per_condition"] = agreement(conditions["n_cells_mean"], conditions["n_nuclei_mean"])
        keys = conditions_keys(conditions)
        tests = []
        for _, row in conditions.iterrows():
            mask = np.ones(len(used), bool)
            for k in keys:
                mask &= (used[k] == row[k]).to_numpy()
            sub = used[mask]
            entry = {k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in keys}
            entry.update(n_wells=int(len(sub)),
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
