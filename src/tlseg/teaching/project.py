"""A training-set project: images, and corrected regions of interest (ROIs) on them.

Layout of a project folder::

    project.yaml            format version, name, the cell diameter if known
    images.yaml             image id -> path (absolute, or relative to the project) + size
    rois/<id>-v<k>.tif      label patch of ROI <id>, version k (int32; -1 = unknown)
    rois/<id>-v<k>.yaml     its image, box (y0, x0, y1, x1), polygon if any, time

Pixels outside every ROI are *unknown*, never background: a user annotates regions, not
whole images. Adding or changing a ROI writes a new file (a new id, or a new version of
the id) atomically and never overwrites an earlier one; a ROI file that cannot be read is
reported and skipped, the others still load. Writers hold the project's lock file
(``.lock``, an OS file lock) while they choose an id and write, so concurrent
``tlseg roi add`` processes each add exactly their ROI.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..errors import TlsegError, check_positive
from ..io import atomic_path, read_image
from ..io.files import file_lock
from ..training.targets import UNKNOWN

FORMAT_VERSION = 1


@dataclass(frozen=True)
class ROI:
    """One annotated region: where it is and what its pixels are."""

    roi_id: int
    version: int
    image_id: str
    box: tuple[int, int, int, int]  # y0, x0, y1, x1 (end exclusive)
    labels: np.ndarray  # (y1 - y0, x1 - x0) int32: cell ids, 0 background, -1 unknown
    polygon: tuple | None = None


class Project:
    """A training set of corrected ROIs: a project folder (layout in the module docstring).

    Make one with :meth:`init`, open one with :meth:`open`; :meth:`add_image` registers
    an image, :meth:`add_roi` stores a corrected region of it (never overwriting an
    earlier one), :meth:`label_image` gives an image's labels with UNKNOWN (-1) outside
    its ROIs, and :func:`tlseg.teach` learns from them.

    Examples
    --------
    >>> import tlseg, tempfile, tifffile, numpy as np
    >>> folder = tempfile.mkdtemp()
    >>> field = tlseg.synthetic_field((128, 128), diameter=30, seed=0)
    >>> tifffile.imwrite(f"{folder}/field.tif", field["tl"])
    >>> project = tlseg.Project.init(f"{folder}/project", diameter=30)
    >>> image_id = project.add_image(f"{folder}/field.tif")
    >>> roi = project.add_roi(image_id, (0, 0, 64, 64), field["labels"][:64, :64])
    >>> labels = project.label_image(image_id)
    >>> int(labels[100, 100]) == tlseg.UNKNOWN, len(project.rois())
    (True, 1)
    """

    def __init__(self, root: Path, meta: dict):
        self.root = Path(root)
        self.meta = meta

    # --- creation and opening -------------------------------------------------------
    @classmethod
    def init(cls, root, *, name: str | None = None, diameter: float | None = None) -> Project:
        """Create a project folder (``root`` must not be a project yet); ``diameter`` is
        the typical cell diameter in pixels of its images, if known."""
        root = Path(root)
        check_positive("diameter", diameter)
        if (root / "project.yaml").exists():
            raise TlsegError(f"{root}: already a project; open it instead of re-creating it")
        (root / "rois").mkdir(parents=True, exist_ok=True)
        meta = {"format_version": FORMAT_VERSION, "name": name or root.name,
                "diameter": diameter, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}
        _write_yaml(root / "project.yaml", meta)
        _write_yaml(root / "images.yaml", {})
        return cls(root, meta)

    @classmethod
    def open(cls, root) -> Project:
        """Open an existing project folder (a one-line error when it is not one)."""
        root = Path(root)
        f = root / "project.yaml"
        if not f.is_file():
            raise TlsegError(f"{root}: not a tlseg project (no project.yaml); "
                             "create one with `tlseg project init`")
        meta = _read_yaml(f)
        if not isinstance(meta, dict):
            raise TlsegError(f"{f}: not a tlseg project file (expected a mapping of "
                             "settings); restore it from a backup or re-create the project")
        v = meta.get("format_version")
        if not isinstance(v, int) or v > FORMAT_VERSION:
            raise TlsegError(f"{root}: project format version {v} is newer than this tlseg "
                             f"understands ({FORMAT_VERSION}); upgrade tlseg")
        return cls(root, meta)

    # --- images -----------------------------------------------------------------------
    @property
    def images(self) -> dict:
        """Registered images: id -> ``{"path": ..., "shape": [h, w]}``."""
        images = _read_yaml(self.root / "images.yaml") or {}
        if not isinstance(images, dict):
            raise TlsegError(f"{self.root / 'images.yaml'}: expected a mapping of image ids; "
                             "restore it from a backup")
        return images

    def add_image(self, path, *, copy: bool = False) -> str:
        """Register an image (by reference, or copied into ``images/``); returns its id."""
        path = Path(path)
        image = read_image(path)  # validates it
        with _locked(self.root):
            return self._register(path, image, copy)

    def _register(self, path: Path, image: np.ndarray, copy: bool) -> str:
        images = self.images
        for iid, info in images.items():
            if Path(self._resolve(info["path"])).resolve() == path.resolve():
                return iid
        iid = path.stem
        while iid in images:
            iid += "_"
        stored = str(path.resolve())
        if copy:
            import tifffile

            dest = self.root / "images" / f"{iid}.tif"
            with atomic_path(dest) as tmp:
                tifffile.imwrite(tmp, image, compression="zlib")
            stored = str(dest.relative_to(self.root))
        images[iid] = {"path": stored, "shape": list(image.shape)}
        _write_yaml(self.root / "images.yaml", images)
        return iid

    def _resolve(self, p: str) -> Path:
        p = Path(p)
        return p if p.is_absolute() else self.root / p

    def image_path(self, image_id: str) -> Path:
        info = self.images.get(image_id)
        if info is None:
            raise TlsegError(f"{self.root}: no image {image_id!r} in this project")
        path = self._resolve(info["path"])
        if not path.is_file():
            raise TlsegError(f"{path}: image {image_id!r} of project {self.root} is not "
                             "there (moved or deleted); put it back, or edit its path in "
                             "images.yaml")
        return path

    # --- ROIs -------------------------------------------------------------------------
    def add_roi(self, image_id: str, box, labels: np.ndarray, *, polygon=None,
                roi_id: int | None = None) -> ROI:
        """Store a ROI's label patch. A new id, or with ``roi_id`` a new version of it.

        A box that a ROI of the image already has (the same image and corners) makes a
        new version of that ROI: a corrected box added again replaces it in the training
        set, instead of counting twice, and the earlier version stays on disk.
        """
        info = self.images.get(image_id)
        if info is None:
            raise TlsegError(f"no image {image_id!r} in project {self.root}; add it first")
        h, w = info["shape"]
        y0, x0, y1, x1 = (int(v) for v in box)
        if not (0 <= y0 < y1 <= h and 0 <= x0 < x1 <= w):
            raise TlsegError(f"ROI box {y0} {x0} {y1} {x1} is empty or outside the "
                             f"{h}x{w} image {image_id!r}; give Y0 X0 Y1 X1 with Y0<Y1<={h}, X0<X1<={w}")
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu":
            raise TlsegError(f"ROI labels must be integers, got {labels.dtype}")
        if labels.shape != (y1 - y0, x1 - x0):
            raise TlsegError(f"ROI label patch is {labels.shape[0]}x{labels.shape[1]} but the "
                             f"box is {y1 - y0}x{x1 - x0}; they must match")
        if labels.min(initial=0) < UNKNOWN:
            raise TlsegError("ROI labels must be >= -1 (-1 unknown, 0 background, 1.. cells)")
        if labels.max(initial=0) > np.iinfo(np.int32).max:
            raise TlsegError(f"ROI labels up to {labels.max()} do not fit in 32 bits; "
                             "renumber the cells 1..n (e.g. skimage.segmentation.relabel_sequential)")
        with _locked(self.root):
            return self._store_roi(image_id, (y0, x0, y1, x1), labels, polygon, roi_id)

    def _store_roi(self, image_id, box, labels, polygon, roi_id) -> ROI:
        y0, x0, y1, x1 = box
        existing = self._roi_files()
        if roi_id is None:
            roi_id = self._roi_with_box(image_id, box, existing)
        if roi_id is None:
            roi_id = 1 + max((i for i, _ in existing), default=0)
            version = 1
        else:
            version = 1 + max((v for i, v in existing if i == roi_id), default=0)
        stem = self.root / "rois" / f"{roi_id:06d}-v{version}"
        import tifffile

        # labels first, then the metadata that makes the ROI visible: a crash in between
        # leaves an orphan patch, never a ROI without its labels
        with atomic_path(stem.with_suffix(".tif")) as tmp:
            tifffile.imwrite(tmp, labels.astype(np.int32), compression="zlib")
        meta = {"image": image_id, "box": [y0, x0, y1, x1],
                "polygon": [list(map(float, p)) for p in polygon] if polygon is not None else None,
                "added": time.strftime("%Y-%m-%dT%H:%M:%S")}
        with atomic_path(stem.with_suffix(".yaml")) as tmp:
            if stem.with_suffix(".yaml").exists():  # never overwrite an annotation
                raise TlsegError(f"{stem}.yaml exists; refusing to overwrite")
            tmp.write_text(yaml.safe_dump(meta, sort_keys=False))
        return ROI(roi_id, version, image_id, (y0, x0, y1, x1), labels.astype(np.int32),
                   tuple(map(tuple, polygon)) if polygon is not None else None)

    def _roi_with_box(self, image_id, box, existing) -> int | None:
        """The id of the ROI whose latest version lies on ``image_id`` at ``box``."""
        for i, v in _latest_versions(existing).items():
            try:
                meta = _read_yaml(self.root / "rois" / f"{i:06d}-v{v}.yaml")
                if meta["image"] == image_id and tuple(int(b) for b in meta["box"]) == tuple(box):
                    return i
            except Exception:  # noqa: BLE001, S112 - an unreadable ROI is reported by rois()
                continue
        return None

    def _roi_files(self) -> list[tuple[int, int]]:
        out = []
        for f in (self.root / "rois").glob("*-v*.yaml"):
            try:
                i, v = f.stem.split("-v")
                out.append((int(i), int(v)))
            except ValueError:
                continue
        return sorted(out)

    def rois(self, *, errors: list | None = None) -> list[ROI]:
        """Latest version of every ROI. Unreadable ones go to ``errors`` (or are skipped)."""
        import tifffile

        out = []
        for i, v in _latest_versions(self._roi_files()).items():
            stem = self.root / "rois" / f"{i:06d}-v{v}"
            try:
                meta = _read_yaml(stem.with_suffix(".yaml"))
                labels = tifffile.imread(stem.with_suffix(".tif")).astype(np.int32)
                box = tuple(int(b) for b in meta["box"])
                if labels.shape != (box[2] - box[0], box[3] - box[1]):
                    raise ValueError("label patch does not match its box")
                poly = meta.get("polygon")
                out.append(ROI(i, v, meta["image"], box, labels,
                               tuple(map(tuple, poly)) if poly else None))
            except Exception as exc:  # one bad file must not hide the others
                msg = f"{stem}: unreadable ROI ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); skipped"
                if errors is not None:
                    errors.append(msg)
        return out

    def roi_set_hash(self) -> str:
        """A hash of the exact ROI set (ids, versions and contents) for model cards."""
        h = hashlib.sha256()
        for r in self.rois():
            h.update(f"{r.roi_id}:{r.version}:{r.image_id}:{r.box}".encode())
            h.update(np.ascontiguousarray(r.labels).tobytes())
        return h.hexdigest()[:16]

    def label_image(self, image_id: str, *, rois: list[ROI] | None = None) -> np.ndarray:
        """Full-size labels of an image: ROI contents where annotated, UNKNOWN elsewhere.

        ``rois``: the project's ROIs if already read (else they are read from disk).
        """
        h, w = self.images[image_id]["shape"]
        out = np.full((h, w), UNKNOWN, np.int32)
        offset = 0
        for r in self.rois() if rois is None else rois:
            if r.image_id != image_id:
                continue
            y0, x0, y1, x1 = r.box
            patch = r.labels.copy()
            cells = patch > 0
            patch[cells] += offset  # keep cell ids of different ROIs apart
            offset = max(offset, int(patch.max(initial=0)))
            known = patch != UNKNOWN
            out[y0:y1, x0:x1][known] = patch[known]
        return out

    def export(self, out, *, overwrite: bool = False) -> dict[str, int]:
        """Write each annotated image's cells as ``<image id>_labels.tif`` (uint16, 0 =
        background or unknown) and ``<image id>_RoiSet.zip`` (ImageJ ROIs) into ``out``:
        ``tlseg roi export``. Returns {image id: number of cells}.

        Files already in ``out`` are not replaced unless ``overwrite``: an exported
        label image may have been edited since, and every file is checked before any is
        written.
        """
        from ..io import write_labels
        from ..io.imagej import labels_to_imagej

        out = Path(out)
        rois = self.rois()
        ids = sorted({r.image_id for r in rois})
        targets = [out / f"{i}_{suffix}" for i in ids for suffix in ("labels.tif", "RoiSet.zip")]
        there = [t.name for t in targets if t.exists()]
        if there and not overwrite:
            raise TlsegError(f"{out}: already holds {', '.join(there[:3])}"
                             + (" ..." if len(there) > 3 else "")
                             + "; give another folder, or --overwrite to replace them")
        counts = {}
        for image_id in ids:
            lab = self.label_image(image_id, rois=rois)
            cells = np.where(lab > 0, lab, 0)
            write_labels(out / f"{image_id}_labels.tif", cells)
            counts[image_id] = labels_to_imagej(cells, out / f"{image_id}_RoiSet.zip")
        return counts


def _latest_versions(files: list[tuple[int, int]]) -> dict[int, int]:
    """{ROI id: its latest version}, by id, from (id, version) pairs."""
    latest: dict[int, int] = {}
    for i, v in files:
        latest[i] = max(v, latest.get(i, 0))
    return dict(sorted(latest.items()))


def _locked(root: Path):
    """The project's lock (``.lock``): one writer at a time chooses ids and writes."""
    return file_lock(Path(root) / ".lock")


def _write_yaml(path: Path, data) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))


def _read_yaml(path: Path):
    try:
        return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise TlsegError(f"{path}: not a text file (not UTF-8); restore it from a "
                         "backup or re-create the project") from None
    except (OSError, yaml.YAMLError) as exc:
        raise TlsegError(f"{path}: cannot read ({str(exc).splitlines()[0]})") from None
