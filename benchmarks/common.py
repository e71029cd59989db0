"""Shared helpers for the benchmarks: finding the data, the truths of the paired fields,
writing plates and synthetic test sets (results files: :mod:`results_file`)."""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path

import numpy as np
import tifffile

from tlseg import discard_edge
from tlseg.synthetic import synthetic_field
from tlseg.training.targets import median_diameter

REPO = Path(__file__).resolve().parents[1]
WORK = REPO / "benchmarks" / "work"
VAL_SOURCES = ("usiigaci", "bbbc030-cho", "ctc-dic-hela")
#: the training sources of tl-cells
TL_CELLS_SOURCES = (*VAL_SOURCES, "aisegcell-bf")


def split_pairs(data: Path, source: str, split: str) -> list[tuple[Path, Path]]:
    """(image, mask) paths of a transmitted-light source's ``split`` (train or val)."""
    folder = Path(data) / "tl" / source / split
    return [(p, folder / "masks" / p.name) for p in sorted((folder / "images").glob("*.tif"))]


def val_pairs(data: Path, source: str) -> list[tuple[Path, Path]]:
    """(image, mask) paths of a source's val split."""
    return split_pairs(data, source, "val")


#: density bins (:func:`density`) the benchmarks report AP in
DENSITY_BINS = (0.0, 0.15, 0.3, 0.5, np.inf)


def density(mask: np.ndarray, canonical_diameter: float = 30.0) -> float:
    """Cells per canonical cell area at the canonical scale: the number of cells times
    the area of a disc of the canonical diameter, over the image's area once rescaled so
    that its median cell is ``canonical_diameter`` across. 1 is a monolayer of round
    cells touching edge to edge; usiigaci's val fields are 0.07-0.3.

    Examples
    --------
    >>> m = np.zeros((100, 100), int); m[10:20, 10:20] = 1; m[40:50, 40:50] = 2
    >>> round(density(m, 30.0), 3)   # two cells of 11.3 px in 100²: 2 x pi/4 x 11.3² / 100²
    0.02
    """
    d = median_diameter(mask)
    if d is None:
        return 0.0
    n = len(np.unique(mask[mask > 0]))
    return float(n * (np.pi / 4 * canonical_diameter**2)
                 / (mask.size * (canonical_diameter / d) ** 2))


def density_bin(value: float) -> str:
    """The :data:`DENSITY_BINS` bin of a density, e.g. ``'0.15-0.3'``.

    Examples
    --------
    >>> density_bin(0.2), density_bin(0.7)
    ('0.15-0.3', '>=0.5')
    """
    for lo, hi in itertools.pairwise(DENSITY_BINS):
        if lo <= value < hi:
            return f">={lo:g}" if hi == np.inf else f"{lo:g}-{hi:g}"
    return f">={DENSITY_BINS[-2]:g}"


def count_errors(counts, truth) -> dict:
    """Count errors as a user judges them: mean |relative error| over fields with >= 20
    true cells, mean absolute error in cells below 20, the largest count / true ratio.

    Examples
    --------
    >>> count_errors([22, 35, 5], [20, 40, 3])
    {'mean_abs_rel_error_20plus': 0.1125, 'mean_abs_error_below_20': 2.0, 'max_ratio': 1.667}
    """
    got, true = np.asarray(counts, float), np.asarray(truth, float)
    big = true >= 20
    return {"mean_abs_rel_error_20plus": round(float(np.mean(np.abs(got - true)[big] / true[big])), 4)
            if big.any() else None,
            "mean_abs_error_below_20": round(float(np.mean(np.abs(got - true)[~big])), 2)
            if (~big).any() else None,
            "max_ratio": round(float(np.max(got / np.maximum(true, 1))), 3)}


#: a whole-cell annotation under this fraction of its field's median cell area, with no
#: nuclear stain in it, is debris (:func:`cells_without_debris`)
DEBRIS_AREA = 0.2


def stain_halfway(cells: np.ndarray, nuclei: np.ndarray,
                  stain: np.ndarray) -> tuple[np.ndarray, float]:
    """A paired field's nuclear ``stain`` smoothed (Gaussian, sigma 1 px) and the level
    halfway from its background (the median outside every annotated cell and nucleus,
    dilated by 5 px) to the median inside the annotated ``nuclei``: an object whose
    smoothed stain nowhere exceeds it holds no DNA (:func:`cells_without_debris`)."""
    from scipy import ndimage as ndi

    smooth = ndi.gaussian_filter(np.asarray(stain, float), 1)
    outside = ~ndi.binary_dilation((cells > 0) | (nuclei > 0), iterations=5)
    background = np.median(smooth[outside]) if outside.any() else smooth.min()
    level = np.median(smooth[nuclei > 0]) if (nuclei > 0).any() else smooth.max()
    return smooth, float(background + 0.5 * (level - background))


def nuclei_per_cell(cells: np.ndarray, nuclei: np.ndarray) -> tuple[np.ndarray, int]:
    """How many annotated ``nuclei`` lie mostly (half their area or more) in each
    whole-cell annotation of ``cells`` (indexed by its label), and how many touch no
    annotation at all.

    >>> cells = np.zeros((20, 20), int); cells[:10] = 1
    >>> nuclei = np.zeros_like(cells)
    >>> nuclei[2:4, 2:4] = 1; nuclei[2:4, 8:10] = 2; nuclei[14:16, 2:4] = 3
    >>> hosts, unoutlined = nuclei_per_cell(cells, nuclei)
    >>> hosts.tolist(), unoutlined
    ([0, 2], 1)
    """
    from skimage.measure import regionprops

    hosts = np.zeros(int(cells.max(initial=0)) + 1, int)
    unoutlined = 0
    for r in regionprops(nuclei):
        under = cells[r.slice][r.image]
        under = under[under > 0]
        if under.size == 0:
            unoutlined += 1
        elif under.size >= 0.5 * r.area:
            hosts[np.bincount(under).argmax()] += 1
    return hosts, unoutlined


def _debris(regions, cells: np.ndarray, nuclei: np.ndarray, stain: np.ndarray) -> list[bool]:
    """Per region of ``cells``: under :data:`DEBRIS_AREA` of the median annotation's area
    and nowhere stained past :func:`stain_halfway`."""
    smooth, halfway = stain_halfway(cells, nuclei, stain)
    small = DEBRIS_AREA * np.median([r.area for r in regions])
    return [r.area < small and smooth[r.slice][r.image].max() <= halfway for r in regions]


def cells_without_debris(cells: np.ndarray, nuclei: np.ndarray, stain: np.ndarray) -> int:
    """The true cell count of an annotated field with debris left out.

    ``cells`` and ``nuclei`` are the field's whole-cell and nucleus masks, ``stain`` its
    nuclear channel. The aisegcell-s10 whole-cell masks also outline fragments and specks:
    objects a tenth of a cell's area with no DNA in them. Left out here are the
    annotations under :data:`DEBRIS_AREA` of the field's median cell area whose stain
    (Gaussian-smoothed, sigma 1 px) nowhere reaches halfway from the background (the
    median outside every annotation, dilated by 5 px) to the median inside the annotated
    nuclei. The nucleus masks are not used to decide, since they miss nuclei: a small
    round cell with a bright unannotated nucleus stays a cell.

    Examples
    --------
    >>> cells = np.zeros((60, 60), int); nuclei = np.zeros_like(cells)
    >>> for i, (y, x) in enumerate([(10, 10), (10, 40), (40, 10), (40, 40)]):
    ...     cells[y - 8:y + 8, x - 8:x + 8] = i + 1; nuclei[y - 3:y + 3, x - 3:x + 3] = i + 1
    >>> cells[28:30, 28:30] = 5                  # a speck, 4 px against 256 px cells
    >>> stain = (nuclei > 0) * 100.0
    >>> cells_without_debris(cells, nuclei, stain)   # the speck has no stain
    4
    >>> stain[28:30, 28:30] = 100.0              # a stained speck is kept
    >>> cells_without_debris(cells, nuclei, stain)
    5
    """
    from skimage.measure import regionprops

    regions = regionprops(cells)
    if not regions:
        return 0
    return len(regions) - int(sum(_debris(regions, cells, nuclei, stain)))


def curated_cells(cells: np.ndarray, nuclei: np.ndarray, stain: np.ndarray) -> int:
    """The true cell count of a field by both of its masks, one nucleus a cell.

    The aisegcell-s10 whole-cell masks are connected components, so touching cells are one
    annotation, and their annotators left out some cells whose nucleus is annotated; the
    data's cultures hold one nucleus per cell. So each whole-cell annotation counts as
    many cells as the annotated nuclei that lie mostly in it (at least one,
    :func:`nuclei_per_cell`), its debris (:func:`cells_without_debris`: small, unstained,
    holding no annotated nucleus) none, and every annotated nucleus that touches no
    whole-cell annotation counts one more.

    Examples
    --------
    >>> cells = np.zeros((60, 60), int); nuclei = np.zeros_like(cells)
    >>> cells[2:18, 2:34] = 1                           # two touching cells, one outline
    >>> nuclei[7:13, 7:13] = 1; nuclei[7:13, 23:29] = 2
    >>> cells[40:56, 40:56] = 2; nuclei[45:51, 45:51] = 3
    >>> nuclei[45:51, 10:16] = 4                        # a cell no one outlined
    >>> cells[28:30, 28:30] = 3                         # a speck without DNA
    >>> curated_cells(cells, nuclei, (nuclei > 0) * 100.0)
    4
    """
    from skimage.measure import regionprops

    hosts, unoutlined = nuclei_per_cell(cells, nuclei)
    regions = regionprops(cells)
    if not regions:
        return unoutlined
    debris = _debris(regions, cells, nuclei, stain)
    count = sum(max(1, hosts[r.label]) for r, d in zip(regions, debris)
                if hosts[r.label] or not d)
    return int(count) + unoutlined


#: an aiSEGcell field's experiment and position (``<experiment>_<position>``, e.g.
#: ``210930MA20_p0003``); its other time points image the same cells
POSITION = re.compile(r"\d{6}[A-Za-z]+\d*_p\d+")


def trained_images(model, data: Path) -> set[str]:
    """The names (stems) of the images under ``data`` that ``model`` (a loaded
    :class:`tlseg.Model`) was trained on, by its card: the images of its ``data`` folders
    (a path read from ``data/`` on, e.g. ``shared/data/tl/aisegcell-bf`` as
    ``data/tl/aisegcell-bf``) less those its ``exclude`` patterns name, and those of the
    shipped model it continued from (``parent``), if any.

    Examples
    --------
    >>> import tlseg
    >>> trained_images(tlseg.load_model("tl-cells"), Path("no/such/folder"))
    set()
    """
    from tlseg.errors import TlsegError
    from tlseg.inference.folder import shipped_models
    from tlseg.training.data import list_pairs, resolve_data_dir

    card = model.card or {}
    exclude = card.get("exclude") or []
    names = set()
    for entry in card.get("data") or []:
        parts = Path(entry).parts
        rel = Path(*parts[parts.index("data") + 1:]) if "data" in parts else Path(entry)
        try:  # the images training read (tlseg.training.train.load_folders)
            pairs = list_pairs(resolve_data_dir(Path(data) / rel), exclude)
        except TlsegError:  # not here: another machine's folder
            print(f"warning: {entry}, a training folder of {model.config.name}, "
                  f"is not under {data}: its images count as not seen", file=sys.stderr)
            continue
        names |= {image.stem for image, _ in pairs}
    parent = card.get("parent")
    if parent and parent != card.get("name") and parent in shipped_models():
        import tlseg

        names |= trained_images(tlseg.load_model(parent), data)
    return names


def seen(field: str, trained: set[str]) -> str:
    """Whether a model saw a field in training: ``"trained on"`` (the field is one of the
    ``trained`` images, :func:`trained_images`), ``"same position"`` (another time point
    of its experiment's position is, :data:`POSITION`: the same cells, moved) or
    ``"not seen"``.

    Examples
    --------
    >>> trained = {"210930MA20_p0001_t00066_z001"}
    >>> seen("210930MA20_p0001_t00066_z001", trained), seen("fig1_210930MA20_p0001_t00005_z001",
    ...                                                  trained)
    ('trained on', 'same position')
    >>> seen("210930MA20_p0003_t00013_z001", trained)
    'not seen'
    """
    if field in trained:
        return "trained on"
    match = POSITION.search(field)
    if match and any(match.group() == m.group() for m in map(POSITION.search, trained) if m):
        return "same position"
    return "not seen"


def write_site(plate: Path, name: str, well: str, site: int, tl: np.ndarray,
               nuclei: np.ndarray) -> None:
    """One site of an ImageXpress-named plate folder: ``<name>_<well>_s<site>_w1.tif``
    (transmitted light) and ``..._w2.tif`` (nuclear stain), as ``tlseg plate`` reads
    them with ``--tl-channel w1 --nuclei-channel w2``."""
    tifffile.imwrite(plate / f"{name}_{well}_s{site}_w1.tif", tl)
    tifffile.imwrite(plate / f"{name}_{well}_s{site}_w2.tif", nuclei)


def read_paired(folder: Path, field: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The whole-cell mask, nucleus mask and nuclear stain of one field of a paired set
    with whole-cell masks (``folder``: ``paired/aisegcell-s10``; its ``cell_labels``,
    ``nuc_labels`` and ``nuc``)."""
    return tuple(tifffile.imread(Path(folder) / sub / f"{field}.tif")
                 for sub in ("cell_labels", "nuc_labels", "nuc"))


def true_cell_counts(folder: Path, field: str) -> dict:
    """A paired field's whole-cell truths beside the plain annotation count, read once:
    ``true_cells_no_debris`` (:func:`cells_without_debris`), ``true_cells_curated``
    (:func:`curated_cells`) and ``true_cells_inner``, the annotated cells that do not
    touch the field's edge (the nucleus masks' convention, :func:`tlseg.discard_edge`)."""
    masks = read_paired(folder, field)
    return {"true_cells_no_debris": cells_without_debris(*masks),
            "true_cells_curated": curated_cells(*masks),
            "true_cells_inner": int(discard_edge(masks[0]).max())}


#: the synthetic confluent monolayers the accuracy and diameter benchmarks score
CONFLUENT = [(m, d) for m in ("phase", "brightfield", "dic") for d in (16, 24, 40)]


def confluent_fields(n: int | None = None):
    """(modality, field) of the first ``n`` (default all) :data:`CONFLUENT` monolayers,
    512² each (:func:`tlseg.synthetic_field` with ``confluent=True``, seeded by the cell
    size)."""
    for modality, d in CONFLUENT[:n]:
        yield modality, synthetic_field((512, 512), diameter=d, modality=modality,
                                        confluent=True, seed=d)


def crowded_val_fields(data: Path, source: str, n: int, limit: int | None = None):
    """``n`` crowded fields of a source's val cells (copy-paste,
    :func:`tlseg.training.crowd.crowded_samples`, 512² at a canonical diameter of 30 px,
    seed 0), built from its first ``limit`` val images: (image, labels) at the canonical
    scale, and the median cell diameter of those images. Remnants of cells mostly covered
    by pasted ones, unknown to training, are background here."""
    from tlseg.training.crowd import crowded_samples
    from tlseg.training.data import load_sample

    samples = [load_sample(p, m, canonical_diameter=30.0, source=source)
               for p, m in val_pairs(data, source)[:limit]]
    samples = [s for s in samples if s is not None]
    d = float(np.median([s.diameter for s in samples]))
    return [(c.image[0].numpy(), np.maximum(c.labels, 0), d)
            for c in crowded_samples(samples, n=n, size=512, canonical_diameter=30.0,
                                     rng=np.random.default_rng(0))]


def quadrants(image: np.ndarray) -> list[np.ndarray]:
    """The four quadrants of a field, row by row: how the count validation cuts the
    neuronal ``paired/isl-phase-dapi`` field into sites.

    Examples
    --------
    >>> [q.tolist() for q in quadrants(np.arange(4).reshape(2, 2))]
    [[[0]], [[1]], [[2]], [[3]]]
    """
    h, w = image.shape[:2]
    return [image[y:y + h // 2, x:x + w // 2]
            for y, x in ((0, 0), (0, w // 2), (h // 2, 0), (h // 2, w // 2))]


def train_median_diameter(data: Path, source: str, kind: str = "tl") -> float:
    """Median over a source's TRAIN masks of each image's median cell diameter."""
    folder = Path(data) / kind / source / "train" / "masks"
    return float(np.median([median_diameter(tifffile.imread(p)) for p in sorted(folder.glob("*.tif"))]))
