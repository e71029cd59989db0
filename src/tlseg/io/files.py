"""Writing results atomically: every write goes to a temporary file in the same folder
that is then renamed over the target, so an interrupted run never leaves a half-written
file."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import numpy as np


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


def write_table(path, table) -> None:
    """Write a pandas table as CSV, atomically, floats to 6 significant digits.

    Parameters
    ----------
    path : path
        CSV file to write.
    table : pandas.DataFrame
        Written without its index (the plate's wells/sites/conditions tables,
        ``tlseg segment``'s per-cell and counts tables).
    """
    with atomic_path(path) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
