"""ImageXpress plates read from the instrument's metadata, not guessed from file names.

Two layouts that Molecular Devices MetaXpress writes:

- **Acquisitions** (a ``.jdce`` descriptor, ``image_metadata_*.csv`` manifests and
  ``timepoint<N>/`` folders of TIFF planes), read through **bioio-imagexpress**: wells,
  sites and channel names (the emission filters) come from the descriptor and the
  manifest. A site address is ``<descriptor>#<scene>#<channel index>`` and
  :func:`read_acquisition_plane` reads it (the first time point and z-plane).
- **Plate folders with an HTD file** (``<plate>_<well>_s<site>_w<n>.tif`` beside
  ``<plate>.HTD``): the file names give well, site and wavelength number, and the HTD
  (a short text file of ``"Key", value, ...`` lines, read here: bioio-imagexpress does
  not read it) gives the wavelength names and which wells and sites were imaged. A
  selected well, site or wavelength without its image is an error naming the HTD, not a
  silently smaller plate.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

from ..errors import TlsegError

#: how a site of an acquisition is addressed in a plate's file table
_ADDRESS = re.compile(r"^(?P<descriptor>.+\.jdce)#(?P<scene>[^#]+)#(?P<c>\d+)$", re.IGNORECASE)


def find_descriptor(folder) -> Path | None:
    """The ``.jdce`` descriptor of a MetaXpress acquisition folder (or the descriptor
    itself), None for anything else; several descriptors in one folder are an error."""
    p = Path(folder)
    if p.is_file():
        return p if p.suffix.lower() == ".jdce" else None
    if not p.is_dir():
        return None
    found = sorted(q for q in p.iterdir() if q.suffix.lower() == ".jdce" and q.is_file())
    if len(found) > 1:
        raise TlsegError(f"{p}: holds {len(found)} .jdce descriptors "
                         f"({', '.join(q.name for q in found)}); give the one to read")
    return found[0] if found else None


def _reader(descriptor: Path):
    try:
        from bioio_imagexpress import Reader
    except ImportError:  # pragma: no cover - a dependency of tlseg
        raise TlsegError("reading MetaXpress acquisitions needs bioio-imagexpress: "
                         "pip install bioio-imagexpress") from None
    try:
        return Reader(str(descriptor))
    except Exception as exc:  # bioio raises its own and fsspec's error types
        raise TlsegError(f"{descriptor}: not a readable MetaXpress acquisition "
                         f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
                         ) from None


def acquisition_files(descriptor) -> tuple[list[dict], list[str]]:
    """One row (well, site, channel, plane, path) per site and channel of an acquisition,
    and a message per thing left out or simplified.

    Channels are named as the descriptor names them; a scene with several time points or
    z-planes is read at the first of each (as a folder plate's z-stack is).
    """
    import json

    descriptor = Path(descriptor)
    try:  # bioio-imagexpress reads on without a descriptor it cannot parse
        json.loads(descriptor.read_text(encoding="utf-8-sig"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise TlsegError(f"{descriptor}: broken acquisition descriptor ({exc}); "
                         "copy it again from the instrument") from None
    reader = _reader(descriptor)
    rows, notes = [], []
    for scene in reader.scenes:
        m = re.fullmatch(r"(?P<well>[A-Za-z]{1,2}\d{1,3})-s(?P<site>\d+)", scene)
        if m is None:
            notes.append(f"{descriptor}: scene {scene!r} is not <well>-s<site>; skipped")
            continue
        try:
            reader.set_scene(scene)
            dims = reader.dims
            names = list(reader.channel_names)
        except Exception as exc:
            raise TlsegError(f"{descriptor}: scene {scene} cannot be read "
                             f"({type(exc).__name__}: {exc})") from None
        if dims.T > 1 or dims.Z > 1:
            notes.append(f"{scene}: {dims.T} time points x {dims.Z} z-planes; the first "
                         "of each is used")
        well = m.group("well")  # the plate's scan normalises it (B7 -> B07)
        for c, name in enumerate(names):
            rows.append({"well": well, "site": int(m.group("site")), "channel": str(name),
                         "plane": 1, "path": f"{descriptor}#{scene}#{c}"})
    if not rows:
        raise TlsegError(f"{descriptor}: the acquisition lists no well with an image")
    return rows, notes


def is_acquisition_plane(path) -> bool:
    """Whether ``path`` is a site address of an acquisition (:func:`acquisition_files`)."""
    return _ADDRESS.match(str(path)) is not None


def read_acquisition_plane(path):
    """One channel of one site of an acquisition, as a 2-D array (first time point and
    z-plane); a plane the manifest lists but the disk lacks is an error naming it."""
    m = _ADDRESS.match(str(path))
    if m is None:
        raise TlsegError(f"{path}: not an acquisition site address")
    from ..io.images import as_gray_2d

    descriptor, scene, c = Path(m.group("descriptor")), m.group("scene"), int(m.group("c"))
    reader = _reader(descriptor)
    try:
        reader.set_scene(scene)
        data = reader.get_image_data("YX", T=0, C=c, Z=0)
    except Exception as exc:
        raise TlsegError(f"{descriptor}: scene {scene} channel {c} cannot be read "
                         f"({type(exc).__name__}: {exc}); is a plane file missing?") from None
    return as_gray_2d(data, "YX", name=f"{descriptor.name} {scene} channel {c}")


# --- classic plate folders: the HTD file ---------------------------------------------

def find_htd(folder) -> Path | None:
    """The ``.HTD`` file of a plate folder (None without one; several are an error)."""
    found = sorted(p for p in Path(folder).iterdir()
                   if p.suffix.lower() == ".htd" and p.is_file())
    if len(found) > 1:
        raise TlsegError(f"{folder}: holds {len(found)} .HTD files "
                         f"({', '.join(p.name for p in found)}); keep the plate's own")
    return found[0] if found else None


def read_htd(path) -> dict:
    """What an HTD file says: wells and sites selected, and the wavelength names.

    Returns a dict with ``wells`` (selected wells, e.g. ``['B02', 'B03']``), ``sites``
    (number of sites per well; 1 when ``"Sites", FALSE``) and ``waves`` (``{'w1':
    'Brightfield', 'w2': 'DAPI'}``).

    Examples
    --------
    >>> import tempfile, os
    >>> text = '''"HTSInfoFile", Version 1.0
    ... "XWells", 3
    ... "YWells", 2
    ... "WellsSelection1", FALSE, TRUE, FALSE
    ... "WellsSelection2", FALSE, TRUE, TRUE
    ... "Sites", TRUE
    ... "XSites", 2
    ... "YSites", 1
    ... "SiteSelection1", TRUE, TRUE
    ... "Waves", TRUE
    ... "NWavelengths", 2
    ... "WaveName1", "TL"
    ... "WaveName2", "DAPI"
    ... "EndFile"'''
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = os.path.join(d, "P1.HTD"); _ = open(p, "w").write(text)
    ...     read_htd(p)
    {'wells': ['A02', 'B02', 'B03'], 'sites': 2, 'waves': {'w1': 'TL', 'w2': 'DAPI'}}
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig", errors="replace").splitlines()
    except OSError as exc:
        raise TlsegError(f"{path}: cannot read the HTD file ({exc.strerror})") from None
    keys: dict[str, list[str]] = {}
    for row in csv.reader(lines, skipinitialspace=True):
        if row:
            keys[row[0].strip()] = [v.strip() for v in row[1:]]
    if "HTSInfoFile" not in keys:
        raise TlsegError(f"{path}: not an HTD file (no \"HTSInfoFile\" line)")

    def number(key, default=None):
        try:
            return int(keys[key][0])
        except (KeyError, IndexError, ValueError):
            if default is None:
                raise TlsegError(f"{path}: the HTD file has no valid {key!r} line") from None
            return default

    def true(values):
        return [v.upper() == "TRUE" for v in values]

    def row_name(r):  # 1 -> A, 27 -> AA (1536-well plates have 32 rows)
        return (row_name((r - 1) // 26) if r > 26 else "") + chr(ord("A") + (r - 1) % 26)

    n_rows, n_cols = number("YWells"), number("XWells")
    wells = []
    for r in range(1, n_rows + 1):
        selected = true(keys.get(f"WellsSelection{r}", []))
        if len(selected) != n_cols:
            raise TlsegError(f"{path}: WellsSelection{r} has {len(selected)} values for "
                             f"{n_cols} columns (XWells); the HTD file is broken")
        wells += [f"{row_name(r)}{c + 1:02d}" for c in range(n_cols) if selected[c]]
    sites = 1
    if true(keys.get("Sites", ["FALSE"]))[0]:
        sites = sum(sum(true(keys.get(f"SiteSelection{r}", [])))
                    for r in range(1, number("YSites", 1) + 1))
    waves = {}
    if true(keys.get("Waves", ["FALSE"]))[0]:
        for k in range(1, number("NWavelengths") + 1):
            name = (keys.get(f"WaveName{k}") or [""])[0].strip('"')
            waves[f"w{k}"] = name or f"w{k}"
    return {"wells": wells, "sites": max(sites, 1), "waves": waves}


def check_htd(files, htd: dict, path) -> tuple[dict[str, str], list[str]]:
    """Hold a parsed ImageXpress file table against its HTD file.

    Returns the channel names (``{'w1': 'TL', ...}``; empty for one-wavelength plates)
    and a message per imaged well the HTD does not select. Raises TlsegError, naming the
    HTD and the first missing images, when a selected well, site or wavelength has none.
    """
    have = set(zip(files["well"], files["site"], files["channel"]))
    channels = list(htd["waves"]) or sorted(set(files["channel"]))
    missing = [f"{w} site {s} {c}" for w in htd["wells"] for s in range(1, htd["sites"] + 1)
               for c in channels if (w, s, c) not in have]
    if missing:
        raise TlsegError(
            f"{path}: {len(missing)} image(s) the HTD file lists are missing from the "
            f"folder (e.g. {', '.join(missing[:3])}); copy them back, or run a folder "
            "without the HTD file to count what is there")
    extra = sorted(set(files["well"]) - set(htd["wells"]))
    notes = [(f"{path}: well(s) {', '.join(extra)} have images but are not selected in "
              "the HTD file; counted all the same")] if extra else []
    return dict(htd["waves"]), notes


__all__ = [
    "acquisition_files",
    "check_htd",
    "find_descriptor",
    "find_htd",
    "is_acquisition_plane",
    "read_acquisition_plane",
    "read_htd",
]
