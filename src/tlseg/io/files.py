"""Writing results atomically: every write goes to a temporary file in the same folder
that is then renamed over the target, so an interrupted run never leaves a half-written
file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from ..errors import TlsegError


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path):
    """Yield a temporary path beside ``path``; rename it over ``path`` on success.

    The file gets the permissions a plain ``open`` would give it (0666 less the umask),
    not ``mkstemp``'s private 0600, so results stay readable by the lab's group.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_labels(path, labels: np.ndarray) -> None:
    """Write instance labels atomically as a zlib-compressed TIFF.

    Parameters
    ----------
    path : path
        File to write (its folder is made if needed). It appears only when complete.
    labels : ndarray (H, W) of int
        0 = background. Stored as uint16, or uint32 above 65,535 cells.
    """
    import tifffile

    dtype = np.uint16 if labels.max(initial=0) < 2**16 else np.uint32
    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, labels.astype(dtype), compression="zlib")


def write_json(path, obj) -> None:
    """Write ``obj`` as indented JSON, atomically; objects JSON does not know (paths,
    numpy scalars) are written as their ``str``."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, default=str))


def write_table(path, table) -> None:
    """Write a pandas table as CSV, atomically, floats to 6 significant digits.

    Text that a spreadsheet would run as a formula is defused, as OWASP recommends
    against CSV injection: a text cell (a column of object or string dtype, and the
    column names) that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return
    gets a leading single quote, so ``=HYPERLINK(...)`` from a plate map is written as
    ``'=HYPERLINK(...)`` and shown, not run. Numbers are never touched: a float or int
    column keeps ``-3.5``, and so does a text cell that is a plain number.

    Parameters
    ----------
    path : path
        CSV file to write.
    table : pandas.DataFrame
        Written without its index (the plate's wells/sites/conditions tables,
        ``tlseg segment``'s per-cell and counts tables); left unchanged.

    Examples
    --------
    >>> import tempfile
    >>> import pandas as pd
    >>> path = Path(tempfile.mkdtemp()) / "t.csv"
    >>> write_table(path, pd.DataFrame({"drug": ["=1+2", "-", "-3.5"], "dose": [-3.5, 0, 1]}))
    >>> print(path.read_text().strip())
    drug,dose
    '=1+2,-3.5
    '-,0
    -3.5,1
    """
    import re

    import pandas as pd

    formula_start = ("=", "+", "-", "@", "\t", "\r")  # OWASP's list
    number = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")  # not a formula

    def defuse(v):
        if isinstance(v, str) and v[:1] in formula_start and not number.fullmatch(v):
            return "'" + v
        return v

    text = [c for c in table.columns
            if pd.api.types.is_object_dtype(table[c]) or pd.api.types.is_string_dtype(table[c])]
    if text or any(defuse(c) is not c for c in table.columns):
        table = table.copy()
        for c in text:
            table[c] = table[c].map(defuse)
        table.columns = [defuse(c) for c in table.columns]
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")


def undo_defuse(value):
    """The text :func:`write_table` wrote for ``value`` read back as it was: a leading
    ``'`` before ``= + - @``, tab or carriage return is dropped (tlseg reading its own
    tables, e.g. ``counts.csv`` on a resumed run).

    Examples
    --------
    >>> undo_defuse("'=ok.tif"), undo_defuse("it's"), undo_defuse(3)
    ('=ok.tif', "it's", 3)
    """
    if isinstance(value, str) and value[:1] == "'" and value[1:2] in ("=", "+", "-", "@",
                                                                      "\t", "\r"):
        return value[1:]
    return value


@contextlib.contextmanager
def file_lock(path, *, wait: bool = True):
    """Hold an exclusive OS file lock on ``path`` (made if missing) for the ``with`` block.

    ``flock`` on POSIX, ``msvcrt.locking`` on Windows: the operating system drops the
    lock when its holder ends, however it ends, so there is no stale lock to clean up.
    With ``wait=False`` a lock held elsewhere raises :class:`BlockingIOError` at once.
    A file system without locks raises :class:`OSError`.
    """
    with open(path, "a+b") as fh:
        if os.name == "nt":  # pragma: no cover - Windows
            import msvcrt

            fh.seek(0)
            while True:
                try:
                    msvcrt.locking(fh.fileno(), msvcrt.LK_NBLCK, 1)
                    break
                except OSError:
                    if not wait:
                        raise BlockingIOError(f"{path} is locked") from None
            try:
                yield
            finally:
                fh.seek(0)
                msvcrt.locking(fh.fileno(), msvcrt.LK_UNLCK, 1)
        else:
            import fcntl

            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def output_folder(out) -> Path:
    """``out`` as an output folder: made if needed and checked to take new files.

    Raises
    ------
    TlsegError
        ``out`` is a file, or a folder that cannot be made or written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TlsegError(f"{out}: is a file, not a folder; give -o a folder")
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".tlseg-write-test"):
            pass  # a folder may hold writable files and still refuse new ones
    except OSError as exc:
        raise TlsegError(f"{out}: cannot write there ({exc.strerror or exc}); give -o a "
                         "folder you can write to") from None
    return out
