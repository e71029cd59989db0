"""Progress and cancellation between the panels' worker threads and the GUI thread."""

from __future__ import annotations

from qtpy.QtCore import QObject, Signal


class Cancelled(Exception):
    """Raised in a worker's progress callback to stop a training between steps."""


class Relay(QObject):
    """Carries progress from the worker thread to the GUI thread (queued signal)."""

    step = Signal(int, int)
