"""Plate browser for napari: open a ``tlseg plate run`` results folder and look at its wells.

The dock widget reads the results folder written by ``tlseg plate run PLATE -o OUT``:

- ``OUT/wells.csv``: one row per well (counts, QC, condition columns); it colours the
  plate grid by ``n_cells`` (wells with no images are grey) and marks with "!" the wells
  whose ``uncounted_texture`` is over ``FLAG`` (:func:`tlseg.uncounted_texture`);
- ``OUT/sites/<well>_s<site>.json``: each site's channel paths and status;
- ``OUT/masks/<well>_s<site>_cells.tif`` and ``_nuclei.tif``: the site's label images;
- ``OUT/run.json``: the run's config (``tl_channel``, ``nuclei_channel``).

Clicking a well in the grid (or choosing well and site in the combo boxes) loads the
site's transmitted-light image as an image layer and its cell and nucleus masks as labels
layers drawn as outlines, and shows the well's row of ``wells.csv``. Below, a run with a
nuclear channel can calibrate its label-free model on the well shown
(:mod:`tlseg.napari.plate_calibrate`).
"""

from __future__ import annotations

import html
import json
import logging
import re
from pathlib import Path

import numpy as np
from magicgui.widgets import ComboBox, Container, FileEdit, Label
from qtpy.QtCore import Qt
from qtpy.QtGui import QBrush, QColor
from qtpy.QtWidgets import (
    QAbstractItemView,
    QHeaderView,
    QTableWidget,
    QTableWidgetItem,
)

import tlseg
from tlseg import TlsegError
from tlseg.analysis.coverage import flagged
from tlseg.plate.layout import read_channel

from .plate_calibrate import CalibratePanel

logger = logging.getLogger(__name__)

IMAGE_LAYER = "transmitted light"
CELLS_LAYER = "cells"
NUCLEI_LAYER = "nuclei"
_WELL = re.compile(r"^([A-Za-z]{1,2})(\d{1,3})$")
_GREY = QColor(200, 200, 200)


def _row_index(letters: str) -> int:
    """'A' -> 0, 'Z' -> 25, 'AA' -> 26 (1536-well plates)."""
    n = 0
    for ch in letters.upper():
        n = n * 26 + (ord(ch) - ord("A") + 1)
    return n - 1


def _row_name(i: int) -> str:
    name = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        name = chr(ord("A") + r) + name
    return name


def _plate_shape(n_rows: int, n_cols: int) -> tuple[int, int]:
    """The smallest standard plate that holds the wells seen (else just the wells seen)."""
    for rows, cols in ((2, 3), (3, 4), (4, 6), (6, 8), (8, 12), (16, 24), (32, 48)):
        if n_rows <= rows and n_cols <= cols:
            return rows, cols
    return n_rows, n_cols


class PlateBrowser(Container):
    """Browse a plate run: a grid of wells coloured by cell count; click a well to view it."""

    def __init__(self, viewer):
        super().__init__(labels=True)
        self.viewer = viewer
        self.root: Path | None = None
        self.wells = None  # pandas DataFrame of wells.csv, indexed by well
        self.sites: dict[str, list[dict]] = {}  # well -> site records (sites/*.json)
        self.config: dict = {}
        self._loading = False
        self._well_names: list[str] = []
        self._site_numbers: list[int] = []

        self.folder = FileEdit(label="results folder", mode="d", value="")
        # callable choices: napari calls reset_choices() on dock widgets whenever layers
        # change, which would empty a static list
        self.well = ComboBox(label="well", choices=lambda w: self._well_names)
        self.site = ComboBox(label="site", choices=lambda w: self._site_numbers)
        self.info = Label(value="")
        self.status = Label(value="choose a plate results folder (tlseg plate run -o)")

        self.grid = QTableWidget(0, 0)
        self.grid.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.grid.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)
        self.grid.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.grid.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Fixed)
        self.grid.horizontalHeader().setDefaultSectionSize(34)
        self.grid.verticalHeader().setDefaultSectionSize(24)
        self.grid.setToolTip("cells per well (wells.csv n_cells); grey: no images")
        self.grid.cellClicked.connect(self._grid_clicked)

        self.calibration = CalibratePanel(self)
        self.extend([self.folder, self.well, self.site, self.info, self.status,
                     self.calibration])
        # the grid is a plain Qt widget: put it right under the folder chooser
        self.native.layout().insertWidget(1, self.grid)

        self.folder.changed.connect(self._folder_changed)
        self.well.changed.connect(self._well_changed)
        self.site.changed.connect(self._site_changed)

    # -- helpers ----------------------------------------------------------------------
    def _say(self, text: str):
        self.status.value = text
        logger.info(text)

    # -- open -------------------------------------------------------------------------
    def _folder_changed(self, *_):
        value = str(self.folder.value or "")
        if value in ("", ".") or Path(value).resolve() == Path.cwd().resolve():
            return
        try:
            self.open(value)
        except TlsegError as exc:
            self._say(f"error: {exc}")

    def open(self, folder):
        """Read a plate results folder and draw its grid."""
        import pandas as pd

        root = Path(folder)
        if not (root / "wells.csv").is_file() or not (root / "sites").is_dir():
            raise TlsegError(f"{root}: not a plate results folder (needs wells.csv and "
                             "sites/; run `tlseg plate run PLATE -o OUT` first)")
        wells = pd.read_csv(root / "wells.csv", dtype={"well": str}).set_index("well")
        record = {}
        if (root / "run.json").is_file():
            record = json.loads((root / "run.json").read_text())
        config = record.get("config", {}) or {}
        sites: dict[str, list[dict]] = {}
        for path in sorted((root / "sites").glob("*.json")):
            try:
                rec = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                logger.warning("skipping unreadable site record %s: %s", path, exc)
                continue
            well = rec.get("well") or path.stem.rsplit("_s", 1)[0]
            rec.setdefault("key", path.stem)
            sites.setdefault(well, []).append(rec)
        for recs in sites.values():
            recs.sort(key=lambda r: int(r.get("site", 0) or 0))
        self.root, self.wells, self.sites, self.config = root, wells, sites, config
        self._draw_grid()
        self.calibration.opened(root, record)
        names = sorted(set(wells.index) | set(sites), key=self._well_key)
        self._loading = True
        try:
            self._well_names = names
            self.well.reset_choices()
            self.well.value = None if not names else names[0]
        finally:
            self._loading = False
        first = next((w for w in names if self.sites.get(w)), None)
        if first is not None:  # show the first well with images
            self.select(first)
        logger.info("%s: %d wells, %d sites", root, len(wells),
                    sum(len(v) for v in sites.values()))
        return names

    @staticmethod
    def _well_key(well: str):
        m = _WELL.match(well)
        return (_row_index(m[1]), int(m[2])) if m else (10**6, well)

    def _draw_grid(self):
        from matplotlib import colormaps

        parsed = {w: self._well_key(w) for w in set(self.wells.index) | set(self.sites)}
        parsed = {w: rc for w, rc in parsed.items() if isinstance(rc[1], int)}
        n_rows = max((r for r, _ in parsed.values()), default=0) + 1
        n_cols = max((c for _, c in parsed.values()), default=1)
        n_rows, n_cols = _plate_shape(n_rows, n_cols)
        self.grid.clear()
        self.grid.setRowCount(n_rows)
        self.grid.setColumnCount(n_cols)
        self.grid.setVerticalHeaderLabels([_row_name(i) for i in range(n_rows)])
        self.grid.setHorizontalHeaderLabels([str(j + 1) for j in range(n_cols)])
        counts, uncounted = {}, {}
        if "n_cells" in self.wells.columns:
            counts = {w: v for w, v in self.wells["n_cells"].items()
                      if w in self.sites and np.isfinite(v)}
        if "uncounted_texture" in self.wells.columns:  # wells that may hide cells
            uncounted = {w: v for w, v in self.wells["uncounted_texture"].items() if flagged(v)}
        lo, hi = (min(counts.values()), max(counts.values())) if counts else (0, 1)
        cmap = colormaps["viridis"]
        self._cells: dict[tuple[int, int], str] = {}
        for r in range(n_rows):
            for c in range(n_cols):
                item = QTableWidgetItem("")
                item.setBackground(QBrush(_GREY))
                item.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                self.grid.setItem(r, c, item)
        for well, (r, c0) in parsed.items():
            item = self.grid.item(r, c0 - 1)
            self._cells[(r, c0 - 1)] = well
            if well not in counts:
                item.setToolTip(f"{well}: no images")
                continue
            v = counts[well]
            rgba = cmap((v - lo) / (hi - lo) if hi > lo else 0.5)
            color = QColor.fromRgbF(*rgba)
            item.setBackground(QBrush(color))
            dark = 0.299 * rgba[0] + 0.587 * rgba[1] + 0.114 * rgba[2] < 0.55
            item.setForeground(QBrush(QColor("white" if dark else "black")))
            item.setText(f"{int(v)}")
            item.setToolTip(f"{well}: {int(v)} cells")
            if well in uncounted:
                item.setText(f"{int(v)}!")
                item.setToolTip(f"{well}: {int(v)} cells; {uncounted[well]:.0%} of a site's "
                                "cell-like texture lies outside them: look for missed cells")
        width = self.grid.verticalHeader().sizeHint().width() + 34 * n_cols + 4
        height = self.grid.horizontalHeader().sizeHint().height() + 24 * n_rows + 4
        self.grid.setMinimumSize(min(width, 900), min(height, 600))
        self.grid.setMaximumHeight(height)

    # -- select -----------------------------------------------------------------------
    def _grid_clicked(self, row: int, col: int):
        well = self._cells.get((row, col))
        if well is None:
            return self._say(f"{_row_name(row)}{col + 1:02d}: not in this plate run")
        self.select(well)

    def select(self, well: str, site: int | None = None):
        """Show ``well`` (its first site unless ``site`` is given)."""
        if well not in self.well.choices:
            return self._say(f"error: no well {well} in this plate run")
        self._loading = True
        try:
            self.well.value = well
        finally:
            self._loading = False
        self._well_changed(site=site)

    def _well_changed(self, *_, site: int | None = None):
        if self._loading or self.well.value is None:
            return
        well = self.well.value
        self.info.value = self._well_html(well)
        self._mark(well)
        self.calibration.well_shown(well)
        numbers = [int(rec.get("site", i + 1)) for i, rec in enumerate(self.sites.get(well, []))]
        self._loading = True
        try:
            self._site_numbers = numbers
            self.site.reset_choices()
            if numbers:
                self.site.value = site if site in numbers else numbers[0]
        finally:
            self._loading = False
        if not numbers:
            return self._say(f"{well}: no images")
        self.load_site(well, self.site.value)

    def _mark(self, well: str):
        """Show the chosen well in the grid: bold, with a frame-like marker."""
        for (r, c), w in getattr(self, "_cells", {}).items():
            item = self.grid.item(r, c)
            font = item.font()
            font.setBold(w == well)
            font.setUnderline(w == well)
            item.setFont(font)

    def _site_changed(self, *_):
        if self._loading or self.well.value is None or self.site.value is None:
            return
        self.load_site(self.well.value, self.site.value)

    def _well_html(self, well: str) -> str:
        if self.wells is None or well not in self.wells.index:
            return f"<b>{html.escape(well)}</b>: not in wells.csv"
        row = self.wells.loc[well]
        cells = [f"<tr><td colspan=2><b>{html.escape(well)}</b></td></tr>"]
        for key, value in row.items():
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            cells.append(f"<tr><td>{html.escape(str(key))}</td>"
                         f"<td align='right'>{html.escape(str(value))}</td></tr>")
        return "<table cellspacing=0 cellpadding=1>" + "".join(cells) + "</table>"

    def _record(self, well: str, site: int) -> dict:
        for i, rec in enumerate(self.sites.get(well, [])):
            if int(rec.get("site", i + 1)) == int(site):
                return rec
        raise TlsegError(f"no site {site} in well {well}")

    def load_site(self, well: str, site: int):
        """Add (or update) the site's image layer and its cell and nucleus outline layers."""
        try:
            rec = self._record(well, site)
            key = rec["key"]
            paths = rec.get("paths", {}) or {}
            tl = self.config.get("tl_channel")
            if tl not in paths:
                tl = next(iter(paths), None)
            if tl is None:
                raise TlsegError(f"{key}: the site record names no image")
            image = read_channel(paths[tl])
            masks = {}
            for name, suffix in ((CELLS_LAYER, "cells"), (NUCLEI_LAYER, "nuclei")):
                path = self.root / "masks" / f"{key}_{suffix}.tif"
                if path.is_file():
                    masks[name] = tlseg.read_labels(path, shape=image.shape)
        except (TlsegError, OSError) as exc:
            return self._say(f"error: {exc}")
        first = IMAGE_LAYER not in self.viewer.layers
        self._put(IMAGE_LAYER, "image", image, metadata={"path": str(paths[tl])})
        for name in (CELLS_LAYER, NUCLEI_LAYER):
            if name in masks:
                layer = self._put(name, "labels", masks[name])
                layer.contour = 1
            elif name in self.viewer.layers:  # no mask for this site: don't show stale ones
                self.viewer.layers[name].data = np.zeros(image.shape, np.int32)
        if first:
            self.viewer.reset_view()
        status = rec.get("status", "?")
        self._say(f"{key}: {rec.get('n_cells', '?')} cells, {rec.get('n_nuclei', '?')} nuclei "
                  f"(status {status}; channel {tl})")

    def _put(self, name, kind, data, **kwargs):
        if name in self.viewer.layers:
            layer = self.viewer.layers[name]
            layer.data = data
            if kind == "image":
                layer.reset_contrast_limits()
                layer.metadata.update(kwargs.get("metadata", {}))
            return layer
        return getattr(self.viewer, f"add_{kind}")(data, name=name, **kwargs)
