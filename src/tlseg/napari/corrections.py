"""The correction step of the dock widget: merge, delete and split cells on a labels layer.

The edits are the pure functions of :mod:`tlseg.teaching.edit`; this module reads what
they act on from the viewer's helper layers and, where that is missing, makes the layer
and says what to do:

- ``picks`` (Points): cells to merge or delete, or the seeds to split one cell at;
- ``cut`` (Shapes, lines): a line to split touching cells along.
"""

from __future__ import annotations

from itertools import pairwise

import numpy as np

from tlseg import edit

#: the corrections :func:`correct` knows
OPERATIONS = ("merge", "delete", "split_seeds", "split_line")


def layer_named(viewer, name: str, kind: str, **kwargs):
    """The viewer's layer ``name``, made with ``viewer.add_<kind>(**kwargs)`` if absent."""
    if name in viewer.layers:
        return viewer.layers[name]
    return getattr(viewer, f"add_{kind}")(name=name, **kwargs)


def _picked_points(viewer, shape) -> list[tuple[int, int]]:
    picks = viewer.layers["picks"].data if "picks" in viewer.layers else []
    points = [tuple(np.round(p[-2:]).astype(int)) for p in picks]
    return [p for p in points if 0 <= p[0] < shape[0] and 0 <= p[1] < shape[1]]


def correct(viewer, labels: np.ndarray, op: str) -> tuple[np.ndarray | None, str]:
    """Apply the correction ``op`` to ``labels`` from the viewer's ``picks`` or ``cut``.

    Returns the corrected labels and a message, or None and what the user has to do
    first (the helper layer is then made and put in the mode to draw in). The helper
    layer is emptied after a correction.

    Raises
    ------
    ValueError
        The picks do not make sense for ``op`` (from :mod:`tlseg.teaching.edit`, or seeds
        in more than one cell).
    """
    if op not in OPERATIONS:
        raise ValueError(f"unknown correction {op!r}; use one of {', '.join(OPERATIONS)}")
    if op == "split_line":
        cut = viewer.layers["cut"] if "cut" in viewer.layers else None  # noqa: SIM401 (a LayerList has no get)
        if cut is None or not len(cut.data):
            layer_named(viewer, "cut", "shapes", ndim=2, edge_color="red", edge_width=2).mode = "add_line"
            return None, "draw a line across the cells in the 'cut' layer, then press again"
        line = np.asarray(cut.data[-1])[:, -2:]
        new = labels
        for a, b in pairwise(line):
            new = edit.split_along_line(new, a, b, width=2)
        cut.data = []
        return new, "split along line done"
    points = _picked_points(viewer, labels.shape)
    if not points:
        layer_named(viewer, "picks", "points", ndim=2, size=8, face_color="yellow").mode = "add"
        return None, "click cells in the 'picks' layer, then press again"
    ids = sorted({int(labels[p]) for p in points if labels[p] > 0})
    if op == "merge":
        new = edit.merge(labels, ids)
    elif op == "delete":
        new = edit.delete(labels, ids)
    else:
        if len(ids) != 1:
            raise ValueError("put all seed points inside ONE cell")
        new = edit.split_at_seeds(labels, ids[0], points)
    viewer.layers["picks"].data = np.empty((0, 2))
    return new, f"{op.replace('_', ' ')} done"
