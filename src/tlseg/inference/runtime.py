"""How PyTorch runs on this machine: CPU threads, and bit-for-bit repeatable results.

:func:`set_threads` is what every command line calls first; :func:`repeatable` wraps
inference (:meth:`tlseg.Model.predict_maps`, :meth:`tlseg.Model.features`) and training
on the CPU, so that a plate, a calibration or a fine-tuning gives the same numbers when
run again.
"""

from __future__ import annotations

import numbers
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import torch

from ..errors import TlsegError


def set_threads(n: int | None = None) -> int:
    """Set the number of CPU threads PyTorch uses.

    Parameters
    ----------
    n : int, optional
        Threads; by default OMP_NUM_THREADS when it is set, else the machine's cores
        (at most 8).

    Returns
    -------
    int
        The number set.
    """
    if n is None:
        env = os.environ.get("OMP_NUM_THREADS")
        n = int(env) if env and env.isdigit() and int(env) > 0 else max(
            1, min(os.cpu_count() or 1, 8))
    if not (isinstance(n, numbers.Integral) and n >= 1):
        raise TlsegError(f"threads must be a whole number >= 1, got {n!r}")
    torch.set_num_threads(n)
    return n


# module-level because what it guards is: PyTorch's deterministic mode is one setting
# for the whole process, so the blocks open in any thread must be counted in one place
_REPEATABLE = {"lock": threading.Lock(), "depth": 0, "before": (False, False)}


@contextmanager
def repeatable(on: bool = True) -> Iterator[None]:
    """Within the block (or the decorated function) PyTorch uses deterministic
    algorithms, so that the CPU repeats a result bit for bit (same input, same seed,
    same number of threads). Without, the same image's maps differ by up to 3e-5
    between two runs, and two fine-tunings of one model on the same crops by up to
    1.5e-3 in a weight after 40 steps: enough to move a calibration's count by a cell.
    On the CPU it costs no time measurably. Ops without a deterministic version warn
    instead of failing. The setting is process-wide: blocks open in several threads at
    once share it, and the last to close restores what was set before the first."""
    if not on:
        yield
        return
    state = _REPEATABLE
    with state["lock"]:
        if state["depth"] == 0:
            state["before"] = (torch.are_deterministic_algorithms_enabled(),
                               torch.is_deterministic_algorithms_warn_only_enabled())
            torch.use_deterministic_algorithms(True, warn_only=True)
        state["depth"] += 1
    try:
        yield
    finally:
        with state["lock"]:
            state["depth"] -= 1
            if state["depth"] == 0:
                before, warn_only = state["before"]
                torch.use_deterministic_algorithms(before, warn_only=warn_only)
