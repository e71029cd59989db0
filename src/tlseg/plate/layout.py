"""Plate folders: parse instrument file names into (well, site, channel).

Supported layouts (``layout=`` in :func:`scan_plate`):

- ``imagexpress``: ``<plate>_<well>_s<site>_w<channel>.tif`` (Molecular Devices
  MetaXpress). ``_s<site>`` and ``_w<channel>`` are absent for one-site / one-channel
  acquisitions; ``*_thumb*`` thumbnails are skipped. Channels are named ``w1``, ``w2``...
- ``incell``: ``<row> - <col>(fld <n> wv <ex> - <em>).tif`` (GE/Cytiva IN Cell
  Analyzer). Channels are named by the ``wv`` text, e.g. ``DAPI - DAPI``; the excitation
  name alone (``DAPI``) is accepted too.
- ``operetta``: ``r01c01f01p01-ch1sk1fk1fl1.tiff`` (PerkinElmer/Revvity Harmony export).
  Channels are ``ch1``, ``ch2``...; only the first plane of a z-stack is used.
- a user regular expression with named groups ``well`` (or ``row`` and ``col``) and,
  optionally, ``site`` and ``channel``.

``layout="auto"`` picks the built-in layout that parses the most files.

Read from the instrument's metadata instead (:mod:`~tlseg.plate.vendor`): a MetaXpress
acquisition (``.jdce`` descriptor, through bioio-imagexpress), and the ``.HTD`` file
beside an ImageXpress folder, which names the channels (``w1`` becomes e.g. ``TL``; the
``w1`` form is still accepted) and says which wells and sites must be there. OME-Zarr
HCS plates: :mod:`~tlseg.plate.zarr`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import TlsegError
from ..io.images import IMAGE_SUFFIXES, subfolder_hint

LAYOUTS: dict[str, str] = {
    "imagexpress": r"^(?P<plate>.+?)_(?P<well>[A-Za-z]{1,2}\d{1,3})(?:_s(?P<site>\d+))?"
                   r"(?:_(?P<channel>w\d+)(?:[0-9A-Fa-f]{8}-[0-9A-Fa-f-]{27})?)?\.(?:tif|tiff)$",
    "incell": r"^(?P<row>[A-Za-z]{1,2}) - (?P<col>\d{1,3})\(fld (?P<site>\d+)"
              r"(?: wv (?P<channel>[^)]+?))?(?: z (?P<plane>\d+))?\)\.(?:tif|tiff)$",
    "operetta": r"^r(?P<row>\d{2})c(?P<col>\d{2})f(?P<site>\d{2})p(?P<plane>\d{2})"
                r"-(?P<channel>ch\d+)sk\d+fk\d+fl\d+\.(?:tif|tiff)$",
}


def row_name(index: int) -> str:
    """1 -> 'A', 26 -> 'Z', 27 -> 'AA' (1536-well plates have 32 rows)."""
    name = ""
    while index > 0:
        index, rem = divmod(index - 1, 26)
        name = chr(ord("A") + rem) + name
    return name


def row_index(name: str) -> int:
    """'A' -> 1, 'AF' -> 32."""
    index = 0
    for ch in name.upper():
        index = index * 26 + ord(ch) - ord("A") + 1
    return index


def normalize_well(well: str) -> str:
    """'a1', 'A1', 'A001' -> 'A01'. Raises TlsegError for anything else."""
    m = re.fullmatch(r"\s*([A-Za-z]{1,2})\s*0*(\d{1,3})\s*", str(well))
    if not m or int(m.group(2)) == 0:
        raise TlsegError(f"{well!r} is not a well name like A01 or P24")
    return f"{m.group(1).upper()}{int(m.group(2)):02d}"


def split_well(well: str) -> tuple[int, int]:
    """'B03' -> (2, 3)."""
    m = re.fullmatch(r"([A-Z]{1,2})(\d+)", well)
    return row_index(m.group(1)), int(m.group(2))


@dataclass
class Site:
    """One field of view of one well, with one image path per channel."""

    well: str
    site: int
    paths: dict[str, Path]

    @property
    def key(self) -> str:
        return f"{self.well}_s{self.site}"


@dataclass
class Plate:
    """The images of a plate folder, parsed.

    Attributes
    ----------
    folder : Path
    layout : str
        Layout name, or 'regex'.
    files : DataFrame
        One row per image: well, site, channel, plane, path.
    unparsed : list of Path
        Image files whose names the layout could not parse.
    duplicates : list of str
        One message per (well, site, channel) that more than one file claims: which file
        is used (the first by name) and which are ignored; and the plate's other warnings.
    aliases : dict
        Other names of channels (``w1`` for the HTD file's wavelength name).
    """

    folder: Path
    layout: str
    pattern: str
    files: pd.DataFrame
    unparsed: list[Path] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)

    @property
    def channels(self) -> list[str]:
        return sorted(self.files["channel"].unique().tolist())

    @property
    def wells(self) -> list[str]:
        return sorted(self.files["well"].unique().tolist(), key=split_well)

    def resolve_channel(self, name: str) -> str:
        """The channel as the plate names it; the IN Cell excitation name is accepted too."""
        chans = self.channels
        if name in chans:
            return name
        if name in self.aliases:
            return self.aliases[name]
        short = [c for c in chans if c.split(" - ")[0] == name]
        if len(short) == 1:
            return short[0]
        raise TlsegError(
            f"channel {name!r} is not in {self.folder} (channels found: {', '.join(chans)}); "
            "give the channel as it appears in the file names"
        )

    def sites(self, channels: list[str]) -> tuple[list[Site], list[str]]:
        """Sites that have every channel in ``channels``, and a message per incomplete site."""
        chans = [self.resolve_channel(c) for c in channels]
        twice = sorted({c for c in chans if chans.count(c) > 1})
        if twice:
            raise TlsegError(f"channel {twice[0]} is given twice ({', '.join(channels)}): the "
                             "transmitted-light and nuclear-stain channels must differ "
                             f"(channels found: {', '.join(self.channels)})")
        sites, problems = [], []
        for (well, site), group in self.files.groupby(["well", "site"], sort=False):
            have = dict(zip(group["channel"], group["path"]))
            missing = [c for c in chans if c not in have]
            if missing:
                problems.append(f"{well} site {site}: channel {', '.join(missing)} missing, "
                                "site skipped")
                continue
            sites.append(Site(well, int(site), {c: Path(have[c]) for c in chans}))
        sites.sort(key=lambda s: (split_well(s.well), s.site))
        return sites, problems


def _parse(names: list[Path], regex: re.Pattern) -> tuple[list[dict], list[Path]]:
    rows, bad = [], []
    for p in names:
        m = regex.match(p.name)
        if m is None:
            bad.append(p)
            continue
        g = {k: v for k, v in m.groupdict().items() if v is not None}
        try:
            if "well" in g:
                well = normalize_well(g["well"])
            elif "row" in g and "col" in g:
                r = g["row"]
                well = normalize_well((row_name(int(r)) if r.isdigit() else r) + g["col"])
            else:
                raise TlsegError("the pattern needs a (?P<well>...) group, or row and col groups")
        except TlsegError:
            bad.append(p)
            continue
        rows.append({
            "well": well,
            "site": int(g.get("site", 1)),
            "channel": g.get("channel", "1").strip(),
            "plane": int(g.get("plane", 1)),
            "path": str(p),
        })
    return rows, bad


def scan_plate(folder, *, layout: str = "auto", pattern: str | None = None) -> Plate:
    """Parse the image file names in ``folder`` (not recursive), or read the layout of
    an OME-Zarr HCS plate (a ``.zarr`` folder, :mod:`~tlseg.plate.zarr`; ``layout`` and
    ``pattern`` are then ignored).

    Parameters
    ----------
    folder : path
    layout : {'auto', 'imagexpress', 'incell', 'operetta'}
        Ignored when ``pattern`` is given.
    pattern : str, optional
        Regular expression matched against each file name, with named groups ``well``
        (or ``row`` and ``col``) and optionally ``site`` and ``channel``.

    Raises
    ------
    TlsegError
        The folder holds no images, or no file name matches the layout.
    """
    from .vendor import find_descriptor
    from .zarr import is_zarr

    folder = Path(folder)
    descriptor = find_descriptor(folder)
    if descriptor is not None:
        return _acquisition_plate(descriptor)
    if not folder.is_dir():
        raise TlsegError(f"{folder}: no such plate folder")
    if is_zarr(folder):
        return _zarr_plate(folder)
    names = sorted(p for p in folder.iterdir()
                   if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                   and "_thumb" not in p.name.lower() and not p.name.startswith("."))
    if not names:
        raise TlsegError(f"{folder}: no images (.tif, .png, .jpg) in this folder"
                         f"{subfolder_hint(folder)}")
    if pattern is not None:
        try:
            candidates = {"regex": re.compile(pattern)}
        except re.error as exc:
            raise TlsegError(f"--pattern {pattern!r} is not a valid regular expression: {exc}") from None
        if "well" not in candidates["regex"].groupindex and not {"row", "col"} <= set(
                candidates["regex"].groupindex):
            raise TlsegError("--pattern needs a named group (?P<well>...) or (?P<row>...) "
                             "and (?P<col>...)")
    elif layout == "auto":
        candidates = {k: re.compile(v, re.IGNORECASE) for k, v in LAYOUTS.items()}
    elif layout in LAYOUTS:
        candidates = {layout: re.compile(LAYOUTS[layout], re.IGNORECASE)}
    else:
        raise TlsegError(f"unknown layout {layout!r}; use one of auto, {', '.join(LAYOUTS)}")
    best = None
    for name, regex in candidates.items():
        rows, bad = _parse(names, regex)
        if best is None or len(rows) > len(best[1]):
            best = (name, rows, bad, regex.pattern)
    name, rows, bad, regex = best
    if not rows:
        tried = "the pattern " + repr(regex) if pattern else "the ImageXpress, IN Cell and Operetta patterns"
        raise TlsegError(f"{folder}: no file name matches {tried} (e.g. {names[0].name}); "
                         "give --layout or --pattern with (?P<well>...) (?P<site>...) (?P<channel>...)")
    files = pd.DataFrame(rows)
    # z-stacks: keep the first plane of each (well, site, channel); rows arrive sorted by
    # name, and a stable sort keeps that order among files of the same plane
    files = files.sort_values(["well", "site", "channel", "plane"], kind="stable")
    duplicates = _duplicates(files)
    files = files.drop_duplicates(["well", "site", "channel"], keep="first")
    files = files.reset_index(drop=True)
    aliases = {}
    if name == "imagexpress" and pattern is None:
        from .vendor import check_htd, find_htd, read_htd

        htd = find_htd(folder)
        if htd is not None:
            waves, notes = check_htd(files, read_htd(htd), htd)
            files["channel"] = [waves.get(c, c) for c in files["channel"]]
            aliases = {k: v for k, v in waves.items() if k != v}
            duplicates += notes
    return Plate(folder=folder, layout=name, pattern=regex, files=files, unparsed=bad,
                 duplicates=duplicates, aliases=aliases)


def _acquisition_plate(descriptor: Path) -> Plate:
    """A MetaXpress acquisition (:func:`~tlseg.plate.vendor.acquisition_files`)."""
    from .vendor import acquisition_files

    rows, notes = acquisition_files(descriptor)
    for r in rows:
        r["well"] = normalize_well(r["well"])
    rows.sort(key=lambda r: (split_well(r["well"]), r["site"], r["channel"]))
    return Plate(folder=descriptor.parent, layout="imagexpress-acquisition", pattern="",
                 files=pd.DataFrame(rows), duplicates=notes)


def read_channel(path) -> np.ndarray:
    """One channel of one site as a 2-D float32 image, whatever the plate's kind: an image
    file (:func:`tlseg.read_image`), a channel of an OME-Zarr field
    (:func:`tlseg.plate.zarr.read_channel`) or a site of a MetaXpress acquisition
    (:func:`tlseg.plate.vendor.read_acquisition_plane`)."""
    from .vendor import is_acquisition_plane, read_acquisition_plane
    from .zarr import read_channel as read_zarr_or_file

    if is_acquisition_plane(path):
        return read_acquisition_plane(path)
    return read_zarr_or_file(path)


def _zarr_plate(folder: Path) -> Plate:
    """An OME-Zarr HCS plate: its fields (:func:`~tlseg.plate.zarr.plate_fields`), with
    wells named from the plate's row and column names as a folder's are (``A01``)."""
    from .zarr import plate_fields

    fields, problems = plate_fields(folder)
    rows = []
    for f in fields:
        try:
            row = row_name(int(f["row"])) if f["row"].isdigit() else f["row"]
            well = normalize_well(row + f["col"])
        except TlsegError:
            problems.append(f"{folder}: row {f['row']!r} column {f['col']!r} is not a well "
                            "like A01; skipped")
            continue
        rows.append({"well": well, **{k: f[k] for k in ("site", "channel", "plane", "path")}})
    if not rows:
        raise TlsegError(f"{folder}: the OME-Zarr plate lists no well with an image field")
    rows.sort(key=lambda r: (split_well(r["well"]), r["site"]))
    # skipped wells and fields travel as the plate's warnings (log, run.json, report)
    return Plate(folder=folder, layout="ome-zarr", pattern="", files=pd.DataFrame(rows),
                 duplicates=sorted(set(problems), key=problems.index))


def _duplicates(files: pd.DataFrame) -> list[str]:
    """A message per (well, site, channel) whose image several files claim.

    Such files are a copy (``x.tif`` beside ``x.TIF``), a re-acquisition, or a
    ``--pattern`` too loose to tell two images apart. The run keeps going with the first
    file by name, a choice that does not depend on the disk's listing order, and says so
    as a warning (log, run.json, report.html): refusing would stop a 384-well overnight
    run for one stray copy, while the warning names every file involved, so the screener
    can check that the right image was counted and rerun that site if not.
    """
    out = []
    first = files.groupby(["well", "site", "channel"])["plane"].transform("min")
    used = files[files["plane"] == first]  # the other planes of a z-stack are not read
    for (well, site, channel), group in used.groupby(["well", "site", "channel"], sort=False):
        if len(group) < 2:
            continue
        names = [Path(p).name for p in group["path"]]
        out.append(f"{well} site {site} channel {channel}: {len(names)} files "
                   f"({', '.join(names)}); {names[0]} used, the others ignored")
    return out
