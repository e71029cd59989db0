"""The plate browser's calibration panel: ``tlseg plate calibrate`` on wells of the open run.

A plate run with a nuclear channel shows, well by well, how the label-free count agrees
with the nuclei. From the well on screen (or the wells typed in) the panel fine-tunes
the run's label-free model on the paired stain (:func:`tlseg.calibrate`) in a worker
thread, with a progress bar, into a model folder; the plate's other wells are held aside
and the panel shows the label-free vs nuclei agreement on them before and after. The
model folder then counts plates imaged without the stain (``tlseg plate run --model``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from magicgui.widgets import (
    Container,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    SpinBox,
)

import tlseg
from tlseg import TlsegError
from tlseg.plate.calibrate import STEPS
from tlseg.plate.layout import normalize_well

from .progress import Relay

logger = logging.getLogger(__name__)


def summary(card: dict) -> str:
    """A calibrated model's card in one line: its wells, and the label-free vs nuclei
    agreement on the held-aside wells before and after.

    Examples
    --------
    >>> summary({"wells": ["A01"], "held_aside_wells": ["A02"],
    ...          "before": {"label_free": 60, "nuclei": 50, "mean_abs_rel_error": 0.2},
    ...          "after": {"label_free": 51, "nuclei": 50, "mean_abs_rel_error": 0.04}})
    'calibrated on A01; held-aside wells A02: 60 -> 51 label-free cells for 50 nuclei (mean |relative error| 20.0 % -> 4.0 %)'
    """
    text = f"calibrated on {', '.join(card.get('wells', []))}"
    before, after = card.get("before"), card.get("after")
    if not before or not after:
        return text + "; no well held aside to check it on"
    wells = card.get("checked_wells") or card.get("held_aside_wells", [])
    text += (f"; held-aside wells {', '.join(wells)}: "
             f"{before['label_free']} -> {after['label_free']} label-free cells for "
             f"{before['nuclei']} nuclei")
    e0, e1 = before.get("mean_abs_rel_error"), after.get("mean_abs_rel_error")
    if e0 is not None and e1 is not None:
        text += f" (mean |relative error| {e0:.1%} -> {e1:.1%})".replace("%", " %")
    return text


class CalibratePanel(Container):
    """Calibrate the run's label-free model from its nuclear stain, on chosen wells."""

    def __init__(self, browser):
        super().__init__(labels=True)
        self.browser = browser
        self.record: dict = {}
        self.root: Path | None = None
        self.wells = LineEdit(label="calibration wells", value="")
        self.wells.tooltip = ("e.g. A01,B03, or a plate-map condition such as role=calibration "
                              "(empty: the well shown); the others are held aside")
        self.out_dir = LineEdit(label="calibrated model", value="")
        self.out_dir.tooltip = "model folder to write; `tlseg plate run --model` then uses it"
        self.steps = SpinBox(label="steps", value=STEPS, min=1, max=10_000)
        self.button = PushButton(text="Calibrate from the nuclear stain", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, max=STEPS)
        self.result = Label(value="open a plate run made with a nuclear channel")
        self.worker = None
        self._relay = Relay()
        self._relay.step.connect(self._on_step)
        self.button.changed.connect(self.calibrate)
        self.extend([self.wells, self.out_dir, self.steps, self.button, self.progress,
                     self.result])

    def opened(self, root: Path, record: dict) -> None:
        """A results folder was opened: enable calibration if it has a nuclear channel."""
        self.record = record
        self.root = Path(root)
        config = record.get("config") or {}
        ready = bool(config.get("nuclei_channel")) and bool(record.get("plate"))
        self.button.enabled = ready
        self.out_dir.value = str(Path(root).parent / f"{Path(root).name}-calibrated")
        self.result.value = ("" if ready else
                             "calibration needs a run with a nuclear channel (--nuclei-channel)")

    def well_shown(self, well: str) -> None:
        """The browser shows ``well``: the default calibration well."""
        self.wells.native.setPlaceholderText(f"{well} (the well shown)")

    def settings(self) -> dict:
        """Keyword arguments of :func:`tlseg.calibrate` for the chosen wells."""
        config, record = self.record.get("config") or {}, self.record
        if not config.get("nuclei_channel") or not record.get("plate"):
            raise TlsegError("this plate run has no nuclear channel to calibrate from; run "
                             "`tlseg plate run` with --nuclei-channel")
        wells = [w.strip() for w in self.wells.value.split(",") if w.strip()]
        if not wells and self.browser.well.value:
            wells = [self.browser.well.value]
        if not wells:
            raise TlsegError("choose a calibration well (click one in the grid)")
        if not str(self.out_dir.value).strip():
            raise TlsegError("name the model folder to write")
        first = wells[0] if "=" in wells[0] else normalize_well(wells[0])
        by_well = (config.get("well_diameters") or {}).get(first) or [None, None]
        # the run's copy of its plate map: conditions (role=calibration) name wells
        plate_map = self.root / "plate_map.csv" if self.root is not None else None
        plate_map = str(plate_map) if plate_map is not None and plate_map.is_file() else None
        return {"plate_dir": record["plate"], "out_dir": str(self.out_dir.value).strip(),
                "tl_channel": config["tl_channel"], "nuclei_channel": config["nuclei_channel"],
                "wells": wells, "base": config.get("model", "tl-cells"),
                "nuclei_model": config.get("nuclei_model", "nuclei"),
                "diameter": config.get("diameter") or by_well[0],
                "nuclei_diameter": config.get("nuclei_diameter") or by_well[1],
                "steps": int(self.steps.value), "layout": record.get("layout") or "auto",
                "pattern": record.get("pattern"), "plate_map": plate_map}

    def calibrate(self, *_):
        """Run :func:`tlseg.calibrate` in a worker thread; returns the worker."""
        from napari.qt.threading import create_worker

        try:
            kwargs = self.settings()
        except TlsegError as exc:
            self.result.value = f"error: {exc}"
            return None
        relay = self._relay

        def on_step(step, total, parts):
            relay.step.emit(step, total)

        def work():
            try:
                return tlseg.calibrate(**kwargs, progress=on_step), None
            except TlsegError as exc:  # bad input: said in the panel, not raised in Qt
                return None, exc

        self.progress.value = 0
        self.button.enabled = False
        self.result.value = (f"calibrating on {', '.join(kwargs['wells'])} "
                             f"({kwargs['steps']} steps)...")
        self.worker = create_worker(work)
        self.worker.returned.connect(self._done)
        self.worker.errored.connect(self._failed)
        self.worker.start()
        return self.worker

    def _on_step(self, step: int, total: int):
        self.progress.max = max(total, 1)
        self.progress.value = min(step, total)

    def _done(self, result):
        model, problem = result
        if problem is not None:
            return self._failed(problem)
        self.button.enabled = True
        self.progress.value = self.progress.max
        text = summary(model.card.get("calibration", {}))
        self.result.value = (f"{text}. Count plates without the stain with "
                             f"`tlseg plate run ... --model {self.out_dir.value}`")
        logger.info(text)

    def _failed(self, exc):
        self.button.enabled = True
        self.result.value = f"error: {exc}"
        logger.error("calibration failed: %s", exc)
