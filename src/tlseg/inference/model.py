"""A segmentation model: network + settings, and inference on whole images.

:class:`Model` holds a :class:`~tlseg.config.ModelConfig` and its network; it is read
from and written to a model folder by :mod:`tlseg.inference.folder`. Inference runs the
checks and preprocessing (:meth:`Model.canonical_maps`), the network over tiles
(:meth:`Model.predict_maps`), the instances and the non-cell filters at the canonical
scale, and brings the labels back to the image's size (:meth:`Model.predict_instances`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from ..config import ModelConfig
from ..errors import TlsegError
from .diameter import estimate_diameter
from .flat import drop_flat_as_set, field_noise
from .folder import read_folder, shipped_models, write_folder, write_tuning
from .labels import raster_order, resize_labels, upsample_labels
from .network import UNet
from .postprocess import instances_from_maps
from .preprocess import (
    clip_outliers,
    is_constant,
    normalize,
    repair_edge_lines,
    rescale,
)
from .repeats import drop_repeated, lattice_vectors, pattern_kind, remove_pattern
from .runtime import repeatable
from .specks import drop_opaque

log = logging.getLogger(__name__)

#: the largest image, in pixels at the canonical scale, that is segmented in one piece:
#: the maps (5 float32 per pixel) and the post-processing grow with it: at this size the
#: peak is 3.7 GiB (docs/reliability.md); larger images are refused with a clear message
MAX_CANONICAL_PIXELS = 8192 * 8192


class Model:
    """A trained segmentation model.

    Examples
    --------
    >>> from tlseg.synthetic import synthetic_cells
    >>> model = Model(ModelConfig(channels=(8, 16)))  # untrained, for illustration
    >>> image, _ = synthetic_cells((96, 96), seed=0)
    >>> labels, details = model.predict_instances(image, diameter=30)
    >>> labels.shape
    (96, 96)
    """

    def __init__(self, config: ModelConfig, net: UNet | None = None, card: dict | None = None):
        self.config = config
        self.net = net if net is not None else UNet(config.channels, config.n_outputs)
        self.net.eval()
        self.card = dict(card or {})

    # --- loading and saving -------------------------------------------------------
    @classmethod
    def from_pretrained(cls, name: str) -> Model:
        """Load a model shipped inside the package by name (see ``tlseg models``)."""
        models = shipped_models()
        if name not in models:
            known = ", ".join(models) or "none"
            raise TlsegError(
                f"no shipped model named {name!r} (shipped: {known}); "
                "give a model name from `tlseg models` or a model folder path"
            )
        return cls.from_folder(models[name])

    @classmethod
    def from_folder(cls, path) -> Model:
        """Load a model folder written by :meth:`save` or ``tlseg train``
        (:func:`~tlseg.inference.folder.read_folder`)."""
        return cls(*read_folder(path))

    @classmethod
    def load(cls, name_or_path) -> Model:
        """A shipped model by name, or a model folder by path."""
        p = Path(str(name_or_path))
        if p.is_dir():
            return cls.from_folder(p)
        if str(name_or_path) in shipped_models() or not (p.exists() or "/" in str(p)):
            return cls.from_pretrained(str(name_or_path))
        raise TlsegError(f"{p}: model folder not found")

    def save(self, path, *, card: dict | None = None, card_text: str | None = None) -> None:
        """Write the model folder (:func:`~tlseg.inference.folder.write_folder`)."""
        if card is not None:
            self.card = dict(card)
        write_folder(path, self.config, self.net, self.card, card_text=card_text)

    def save_tuning(self, path, *, card: dict | None = None) -> None:
        """Rewrite only the model folder's ``tuning.yaml`` (and ``card.yaml`` when
        ``card`` is given): what re-tuning changes."""
        if card is not None:
            self.card = dict(card)
        write_tuning(path, self.config, self.card if card is not None else None)

    # --- inference ----------------------------------------------------------------
    @torch.inference_mode()
    @repeatable()
    def predict_maps(
        self,
        image: np.ndarray,
        *,
        tile: int = 1024,
        halo: int = 96,
        augment: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Network maps (3 or 5, H, W) for an image already at the canonical scale.

        Returns foreground probability, normalised distance (both sigmoid), log2 size and,
        for models with flows, the flow y and x.
        With ``augment`` each tile is also run flipped (both axes) and the maps averaged
        (test-time augmentation, twice the time).
        Images larger than ``tile`` are processed in overlapping tiles: each tile is run
        with a ``halo`` of context on every side and only its centre is kept, so the
        stitched maps have no seams; instances are made from the stitched maps, so no
        cell is cut or doubled at a tile border.
        """
        x = self._network_input(image)
        h, w = image.shape
        s = self.net.stride
        out = np.empty((self.config.n_outputs, h, w), np.float32)
        tile = max(s, (tile // s) * s)
        starts_y = list(range(0, h, tile)) if h > tile else [0]
        starts_x = list(range(0, w, tile)) if w > tile else [0]
        n_tiles, done = len(starts_y) * len(starts_x), 0
        for y0 in starts_y:
            for x0 in starts_x:
                y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
                # context window, clipped to the image, then padded to the net's stride
                cy0, cx0 = max(0, y0 - halo), max(0, x0 - halo)
                cy1, cx1 = min(h, y1 + halo), min(w, x1 + halo)
                win = x[..., cy0:cy1, cx0:cx1]
                ph = (-win.shape[-2]) % s
                pw = (-win.shape[-1]) % s
                if ph or pw:
                    mode = "reflect" if min(win.shape[-2:]) > max(ph, pw) else "replicate"
                    win = torch.nn.functional.pad(win, (0, pw, 0, ph), mode=mode)
                y = self.net(win)[0]
                y[:2] = torch.sigmoid(y[:2])
                if augment:
                    f = self.net(win.flip((-2, -1)))[0].flip((-2, -1))
                    f[:2] = torch.sigmoid(f[:2])
                    f[3:] = -f[3:]  # flows of the flipped image point the other way
                    y = (y + f) / 2
                out[:, y0:y1, x0:x1] = y[:, y0 - cy0 : y1 - cy0, x0 - cx0 : x1 - cx0].numpy()
                done += 1
                if progress is not None:
                    progress(done, n_tiles)
        return out

    def _network_input(self, image: np.ndarray) -> torch.Tensor:
        """An image at the canonical scale as the network's (1, 1, H, W) input:
        shading-corrected and normalised (:func:`tlseg.inference.preprocess.normalize`)."""
        cfg = self.config
        x = torch.from_numpy(np.ascontiguousarray(image, np.float32))[None, None]
        return normalize(x, flatfield=cfg.flatfield,
                         sigma=cfg.background_sigma * cfg.canonical_diameter)

    @torch.inference_mode()
    @repeatable()
    def features(self, image: np.ndarray) -> np.ndarray:
        """The encoder's deepest feature map (C, h, w) of an image already at the
        canonical scale, one vector per ``net.stride`` pixels: what the network sees in
        each region (used to tell regions of different appearance apart)."""
        x = self._network_input(image)
        s = self.net.stride
        ph, pw = (-x.shape[-2]) % s, (-x.shape[-1]) % s
        if ph or pw:
            x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode="replicate")
        return self.net.encode(x)[-1][0].numpy()

    def estimate_diameter(self, image: np.ndarray, **kwargs) -> float | None:
        """The cell diameter (input pixels) to segment ``image`` at, or None when no cells
        are found: :func:`tlseg.inference.diameter.estimate_diameter` (keywords as there).
        Absurd pixel values are clipped first (:func:`~tlseg.inference.preprocess.clip_outliers`)
        and sensor edge lines repaired (:func:`~tlseg.inference.preprocess.repair_edge_lines`)."""
        image, _ = clip_outliers(np.asarray(image, dtype=np.float32))
        image, _ = repair_edge_lines(image)
        return estimate_diameter(self, image, **kwargs)

    def segment(self, image: np.ndarray, *, diameter: float | None = None, tile: int = 1024,
                tta: bool = False) -> np.ndarray:
        """Segment one 2-D image into cells: the labels ``tlseg segment`` writes.

        Parameters
        ----------
        image : ndarray (H, W)
            Gray image, any bit depth (:func:`tlseg.read_image` reads one from a file).
        diameter : float, optional
            Typical cell diameter in pixels; estimated when omitted
            (:meth:`estimate_diameter`).
        tile : int
            Tile side (canonical-scale pixels) for large images.
        tta : bool
            Average the maps with a flipped run (test-time augmentation; 2x the time).

        Returns
        -------
        ndarray of int32 (H, W)
            0 = background, cells numbered 1..n in raster order of their first pixel.

        See Also
        --------
        predict_instances : the same, with the diameter used and where it came from.

        Examples
        --------
        >>> import tlseg
        >>> from tlseg.synthetic import synthetic_field
        >>> model = tlseg.load_model("tl-cells")
        >>> field = synthetic_field((192, 192), diameter=30, seed=1)
        >>> labels = model.segment(field["tl"], diameter=30)
        >>> labels.shape, labels.dtype
        ((192, 192), dtype('int32'))
        """
        return self.predict_instances(image, diameter=diameter, tile=tile, augment=tta)[0]

    def predict_instances(
        self,
        image: np.ndarray,
        *,
        diameter: float | None = None,
        tile: int = 1024,
        augment: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> tuple[np.ndarray, dict]:
        """Segment one 2-D image into cell instances.

        Parameters
        ----------
        image : ndarray (H, W)
            Gray image, any bit depth (see :func:`tlseg.io.read_image`).
        diameter : float, optional
            Typical cell diameter in pixels; estimated automatically when omitted.
        tile : int
            Tile side (canonical-scale pixels) for large images.
        augment : bool
            Average the maps with a flipped run (test-time augmentation; 2x the time).
        progress : callable(done, total), optional
            Called after each tile.

        Returns
        -------
        labels : ndarray of int32 (H, W), 0 = background
        details : dict with ``diameter``, ``diameter_source`` ('given', 'estimated',
            'taught', 'default'), ``scale`` and ``n_cells``; for a model with the
            structure filter or pattern removal also ``pattern`` ('none', 'line',
            'lattice': :func:`tlseg.inference.repeats.pattern_kind`).
        """
        inst = self.config.instances
        repeats = inst.repeat_similarity
        maps, details = self.canonical_maps(image, diameter=diameter, tile=tile,
                                            augment=augment, progress=progress,
                                            keep_image=(repeats > 0 or inst.flat_texture > 0
                                                        or inst.opaque_darkness > 0))
        lattice = details.pop("lattice", None)
        if lattice is not None:  # a model with the structure steps: say what it found
            details["pattern"] = pattern_kind(lattice)
        h, w = np.shape(image)  # 2-D: checked by canonical_maps
        scale = details["scale"]
        labels = instances_from_maps(maps, canonical_diameter=self.config.canonical_diameter,
                                     config=inst)
        small = details.pop("image", None)
        if repeats > 0:
            labels = drop_repeated(labels, small, self.config.canonical_diameter, repeats,
                                   vectors=lattice)
        if (inst.flat_texture > 0 or inst.opaque_darkness > 0) and labels.max(initial=0) > 0:
            field = field_noise(labels, small, maps[0])  # measured once for both filters
            if field[1] is not None:  # None: no background to measure (a monolayer)
                labels = drop_flat_as_set(labels, small, maps, self.config, field=field)
                labels = drop_opaque(labels, small, maps[0],
                                     min_darkness=inst.opaque_darkness,
                                     canonical_diameter=self.config.canonical_diameter,
                                     noise=field[1])
        del small
        prob = maps[0].copy() if scale < 1 else None  # for smooth outlines at full size
        del maps
        if prob is None:
            labels = resize_labels(labels, (h, w))
        else:
            labels = upsample_labels(labels, prob, (h, w),
                                     fg_threshold=self.config.instances.fg_threshold)
        labels = raster_order(labels)
        details["n_cells"] = int(labels.max(initial=0))  # raster_order numbers them 1..n
        return labels, details

    def canonical_maps(self, image: np.ndarray, *, diameter: float | None = None,
                       tile: int = 1024, augment: bool = False,
                       progress: Callable[[int, int], None] | None = None,
                       keep_image: bool = False) -> tuple[np.ndarray, dict]:
        """The network maps of a raw image at the canonical scale: the first half of
        :meth:`predict_instances` (checks, outlier clipping, edge-line repair, diameter,
        rescaling, :meth:`predict_maps`).

        Returns the maps (3 or 5, h, w) and a dict with ``diameter``,
        ``diameter_source`` and ``scale`` (canonical / input pixels), and with
        ``keep_image`` the rescaled image (``image``); with the structure filter or
        ``remove_pattern`` on, the image's lattice vectors (``lattice``,
        :func:`tlseg.inference.repeats.lattice_vectors`), found once for both.
        """
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2:
            raise TlsegError(f"expected a 2-D image, got shape {image.shape}")
        if is_constant(image):
            raise TlsegError(
                "image is constant (every pixel has the same value); nothing to segment"
            )
        image, clipped = clip_outliers(image)
        if clipped:
            log.warning("%d pixel(s) far outside the image's range clipped to it", clipped)
        image, repaired = repair_edge_lines(image)
        if repaired:
            log.debug("%d edge line(s) unlike the image inside replaced by their neighbour",
                      repaired)
        source = "given"
        if diameter is None:
            diameter = estimate_diameter(self, image)  # image already clipped and repaired
            source = "taught" if self.config.taught_diameter else "estimated"
            if diameter is None:
                diameter, source = self.config.default_diameter, "default"
        if not diameter > 0:
            raise TlsegError(f"--diameter must be > 0 pixels, got {diameter}")
        scale = self.config.canonical_diameter / diameter
        h, w = image.shape
        work = h * w * scale**2
        if work > MAX_CANONICAL_PIXELS:
            raise TlsegError(
                f"image of {h}x{w} pixels with cells of {diameter:.0f} px is "
                f"{work / 1e6:.0f} MP at the network's scale, over the {MAX_CANONICAL_PIXELS / 1e6:.0f}"
                " MP that fit a laptop's memory; cut it into fields (e.g. with tifffile) "
                "or check --diameter")
        small = rescale(image, scale)
        if min(small.shape) < 8:
            raise TlsegError(
                f"image of {h}x{w} pixels is too small for cells of {diameter:.0f} px"
            )
        cfg, seen = self.config, small
        details = {"diameter": float(diameter), "diameter_source": source,
                   "scale": float(scale)}
        if cfg.instances.repeat_similarity > 0 or cfg.instances.remove_pattern:
            details["lattice"] = lattice_vectors(small, cfg.canonical_diameter)[0]
        if cfg.instances.remove_pattern:  # the network sees the field without its chip
            seen = remove_pattern(small, cfg.canonical_diameter, vectors=details["lattice"])
        maps = self.predict_maps(seen, tile=tile, augment=augment, progress=progress)
        if keep_image:
            details["image"] = small
        return maps, details


def load_model(name_or_dir) -> Model:
    """Load a model: a shipped one by name, or a model folder by path.

    Parameters
    ----------
    name_or_dir : str or path
        ``'tl-cells'`` (transmitted-light cells), ``'nuclei'`` (fluorescent nuclei) or
        a folder written by ``tlseg train``, ``tlseg train PROJECT`` or
        :func:`tlseg.train` / :func:`tlseg.teach`.

    Returns
    -------
    Model

    Raises
    ------
    TlsegError
        No such shipped model or folder, or the folder is not a usable model.

    Examples
    --------
    >>> import tlseg
    >>> model = tlseg.load_model("nuclei")
    >>> model.config.flatfield
    'subtract'
    """
    return Model.load(name_or_dir)
