"""Writing a benchmark's results.

Each benchmark writes one results file, ``benchmarks/results/<name>.json``
(:func:`write_results`), or one entry of it (:func:`update_results`: the curves of
``learning_curve.json``, the parts of ``peers.json``), with the date, the machine and the
command that produced it. ``--out PATH`` (:func:`add_out`) sends a trial run's results
elsewhere instead.
"""

from __future__ import annotations

import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

from tlseg.io import atomic_path

RESULTS = Path(__file__).resolve().parent / "results"


def command_line(argv=None) -> str:
    """The command that ran this benchmark (``argv``: its arguments, default the
    process's), as README quotes it, quoted for the shell.

    Examples
    --------
    >>> command_line(["--sources", "usiigaci bbbc030-cho"]).split(" ", 2)[2]
    "--sources 'usiigaci bbbc030-cho'"
    """
    args = sys.argv[1:] if argv is None else list(argv)
    return shlex.join(["python", f"benchmarks/{Path(sys.argv[0]).name}", *args])


def add_out(parser, name: str, note: str = "") -> None:
    """Add ``--out PATH``: write the results there instead of
    ``benchmarks/results/<name>.json`` (for trial runs on part of the data)."""
    parser.add_argument("--out", type=Path, metavar="PATH",
                        help=f"write the results to PATH instead of "
                             f"benchmarks/results/{name}.json{note} (trial runs)")


def results_path(name: str, out: Path | None = None) -> Path:
    """Where the results of benchmark ``name`` go: ``out``, else
    ``benchmarks/results/<name>.json``. Inside ``benchmarks/results/`` only the
    benchmark's own file is written (one current results file per benchmark)."""
    if out is None:
        return RESULTS / f"{name}.json"
    out = Path(out)
    if out.resolve().parent == RESULTS.resolve() and out.name != f"{name}.json":
        raise SystemExit(f"{out}: benchmarks/results/ holds one file per benchmark "
                         f"({name}.json); write trial runs elsewhere")
    return out


def stamp(argv=None) -> dict:
    """The date, the machine and the command of this run (``argv`` as for
    :func:`command_line`)."""
    return {"date": time.strftime("%Y-%m-%d %H:%M"),
            "machine": f"{platform.machine()}, {platform.python_version()}, "
                       f"{os.cpu_count()} CPUs",
            "command": command_line(argv)}


def _write(path: Path, payload: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2))
    return path


def write_results(name: str, payload: dict, *, argv=None, out: Path | None = None) -> Path:
    """Write benchmark ``name``'s results file (:func:`results_path`) with the date, the
    machine and the command that produced it (``argv`` as for :func:`command_line`; a
    ``command`` in ``payload`` wins)."""
    return _write(results_path(name, out), {"benchmark": name, **stamp(argv), **payload})


def update_results(name: str, keys: tuple[str, ...], payload: dict, *, argv=None,
                   out: Path | None = None) -> Path:
    """Replace one entry of benchmark ``name``'s results file, ``file[keys[0]][keys[1]]...``,
    with ``payload`` and the date, machine and command of this run; the rest of the
    file is kept (created if missing)."""
    path = results_path(name, out)
    doc = json.loads(path.read_text()) if path.is_file() else {"benchmark": name}
    node = doc
    for k in keys[:-1]:
        node = node.setdefault(k, {})
    node[keys[-1]] = {**stamp(argv), **payload}
    return _write(path, doc)
