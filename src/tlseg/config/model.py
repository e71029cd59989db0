"""The settings of a model: what a saved model needs to run.

- :class:`InstanceConfig`: thresholds and filters from network maps to cells;
- :class:`ModelConfig`: the network, the preprocessing and the tuning, written to a model
  folder's ``config.yaml`` and ``tuning.yaml`` (:mod:`tlseg.inference.folder`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

#: shading corrections: divide (transmitted light), subtract (fluorescence), none
FLATFIELD_MODES = ("divide", "subtract", "none")


#: version of a model folder's config.yaml; 0 (no ``format`` key) = everything in one file
MODEL_FORMAT = 1
#: ModelConfig fields kept in a model folder's tuning.yaml
TUNING_KEYS = ("instances", "diameter_calibration", "size_statistic", "default_diameter",
               "taught_diameter")
#: how the diameter estimate reads the typical size of the cells it segmented
#: (:data:`tlseg.inference.diameter.SIZE_STATISTICS`)
SIZE_STATISTICS = ("area-weighted", "robust")


@dataclass(frozen=True)
class InstanceConfig:
    """Thresholds that turn maps into instances (tuned on held-out training images).

    Attributes
    ----------
    fg_threshold : float
        Foreground probability above which a pixel belongs to a cell.
    seed_threshold : float
        Normalised distance above which a pixel is a seed (cell core).
    min_area_fraction : float
        Objects smaller than this fraction of a canonical cell's area are dropped.
    merge_threshold : float
        Merge neighbours whose border's mean distance exceeds this fraction of the lower
        of their peak distances; 0 turns merging off.
    use_flows : bool
        Group pixels by following the flow maps (models with flows) instead of growing
        distance seeds; ``seed_threshold`` is then unused.
    flow_split : float
        With distance seeds, split a cell whose pixels flow to two or more sinks that
        each gather at least this fraction of a canonical cell's area (models with
        flows); 0 turns splitting off.
    min_area_of_median : float
        Drop objects smaller than this fraction of the median area of the image's
        objects (both among the objects not cut by the image's edge, and only where there
        are at least :data:`tlseg.inference.postprocess.MIN_OBJECTS_FOR_MEDIAN` of
        them): apoptotic bodies, micronuclei and bright specks beside nuclei, which a
        nucleus count leaves out, as a size range relative to the field's own nuclei.
        Independent of the diameter the image was segmented at. 0 keeps every object.
    min_mean_prob : float
        Drop cells whose mean foreground probability is below this (background enclosed
        by cells, faint debris: the network is unsure over the whole object, whereas a
        real cell is unsure only at its rim); 0 keeps every cell.
    min_flow_coherence : float
        Drop cells whose predicted flows do not converge on them (models with flows):
        the mean cosine between each pixel's flow and its direction to the object's
        centroid (:func:`flow_coherence`) must reach this. A real cell's flows point to
        its centre (near 1 for a round cell); a gap between cells read as a cell has
        flows that point away, to the cells around it. Like Cellpose's flow error
        check, cheaper. 0 keeps every cell.
    repeat_similarity : float
        Drop objects that lie on a repeating pattern of the image (posts, traps and walls
        of a microfluidic chip, a patterned plate): the image around the object and the
        same surroundings one lattice vector away correlate (normalised
        cross-correlation) at least this much (:mod:`tlseg.inference.repeats`). Fields
        without a lattice are left alone. 0 keeps every object.
    remove_pattern : bool
        Before the network, subtract from the image the part that repeats on its lattice
        (:func:`tlseg.inference.repeats.pattern_component`), so that the network sees the
        cells without the chip's posts and traps, and neither reads the gaps between
        them as cells nor merges a cell with them. Fields without a lattice are left
        alone.
    flat_texture : float
        Drop objects as flat as the background (the inside of a channel, a fibre's loop
        or a scratch's flank read as a cell): the texture inside the object is below
        this multiple of the background's noise, and its flow coherence below
        ``flat_coherence`` (:mod:`tlseg.inference.flat`); objects of 3.5 canonical cell
        areas or more are held to more (a texture of at least 1.5x the noise, whatever
        their flows, and a flow coherence of at least 0.6). Fields with too little
        background to measure (a confluent monolayer) are left alone. 0 keeps every
        object.
    flat_coherence : float
        With ``flat_texture``, only objects whose flow coherence is below this are
        dropped (models with flows; 1 drops on texture alone).
    opaque_darkness : float
        Drop opaque specks of debris: objects smaller than a canonical cell, not cut by
        the image's edge, darker than the background around them on average by at least
        this multiple of the background's noise and with no part brighter than it
        (:mod:`tlseg.inference.specks`). A cell refracts light and has a bright part or
        is about as bright as its surroundings; a particle that absorbs it does not. 0
        keeps every object.
    """

    fg_threshold: float = 0.5
    seed_threshold: float = 0.5
    min_area_fraction: float = 0.08
    merge_threshold: float = 0.0
    use_flows: bool = False
    flow_split: float = 0.0
    min_mean_prob: float = 0.0
    min_flow_coherence: float = 0.0
    min_area_of_median: float = 0.0
    repeat_similarity: float = 0.0
    remove_pattern: bool = False
    flat_texture: float = 0.0
    flat_coherence: float = 1.0
    opaque_darkness: float = 0.0

    def __post_init__(self):
        for name in ("fg_threshold", "seed_threshold"):
            v = getattr(self, name)
            if not 0.0 < v < 1.0:
                raise ValueError(f"{name} must be in (0, 1), got {v}")
        if not 0.0 <= self.min_area_fraction < 1.0:
            raise ValueError(f"min_area_fraction must be in [0, 1), got {self.min_area_fraction}")
        if not 0.0 <= self.min_area_of_median < 1.0:
            raise ValueError(f"min_area_of_median must be in [0, 1), got {self.min_area_of_median}")
        if not 0.0 <= self.merge_threshold <= 1.0:
            raise ValueError(f"merge_threshold must be in [0, 1], got {self.merge_threshold}")
        if not 0.0 <= self.flow_split < 1.0:
            raise ValueError(f"flow_split must be in [0, 1), got {self.flow_split}")
        if not 0.0 <= self.min_mean_prob < 1.0:
            raise ValueError(f"min_mean_prob must be in [0, 1), got {self.min_mean_prob}")
        if not 0.0 <= self.min_flow_coherence < 1.0:
            raise ValueError(f"min_flow_coherence must be in [0, 1), got {self.min_flow_coherence}")
        if not 0.0 <= self.repeat_similarity < 1.0:
            raise ValueError(f"repeat_similarity must be in [0, 1), got {self.repeat_similarity}")
        if self.flat_texture < 0:
            raise ValueError(f"flat_texture must be >= 0, got {self.flat_texture}")
        if not 0.0 < self.flat_coherence <= 1.0:
            raise ValueError(f"flat_coherence must be in (0, 1], got {self.flat_coherence}")
        if self.opaque_darkness < 0:
            raise ValueError(f"opaque_darkness must be >= 0, got {self.opaque_darkness}")

    @property
    def needs_flows(self) -> bool:
        return self.use_flows or self.flow_split > 0


@dataclass(frozen=True)
class ModelConfig:
    """What a saved model needs to run.

    Attributes
    ----------
    name : str
        Model name, e.g. ``tl-cells``.
    channels : tuple of int
        U-Net feature channels per level (see :class:`tlseg.inference.network.UNet`).
    canonical_diameter : float
        Cell diameter in pixels that images are rescaled to before the network.
    flatfield : str
        Shading correction: 'divide' (transmitted light) or 'subtract' (fluorescence).
    background_sigma : float
        Smoothing of the shading estimate, in canonical cell diameters.
    default_diameter : float
        Cell diameter (input pixels) assumed when the automatic estimate finds no cells.
    instances : InstanceConfig
        Thresholds from maps to instances.
    flows : bool
        The network also predicts flows to each cell's centre (two more outputs).
    diameter_calibration : float
        Factor applied to the automatic diameter estimate: the estimate of the median
        diameter is not exactly the diameter at which the model segments best. Chosen on
        held-out training images (:func:`tlseg.training.tune.calibrate_diameter`); 1 = none.
    size_statistic : str
        How the diameter estimate reads the typical size of the cells it segmented:
        ``'area-weighted'`` (the area-weighted median) or ``'robust'`` (the median of the
        objects of at least half that diameter, which a few merged cells do not
        inflate); chosen with the calibration on the held-out images.
    taught_diameter : float or None
        Set by teaching when the model's own estimate read the taught images' cell size
        worse than one fixed diameter did (:func:`tlseg.teaching.teach.choose_diameter`): then
        images are segmented at this diameter (the annotated cells' median) unless one
        is given.
    """

    name: str = "tl-cells"
    channels: tuple[int, ...] = (32, 48, 64, 96, 128)
    canonical_diameter: float = 30.0
    flatfield: str = "divide"
    background_sigma: float = 3.0
    default_diameter: float = 40.0
    instances: InstanceConfig = field(default_factory=InstanceConfig)
    flows: bool = False
    diameter_calibration: float = 1.0
    size_statistic: str = "area-weighted"
    taught_diameter: float | None = None

    @property
    def n_outputs(self) -> int:
        return 5 if self.flows else 3

    def __post_init__(self):
        if self.flatfield not in FLATFIELD_MODES:
            raise ValueError(f"flatfield must be one of {FLATFIELD_MODES}")
        if self.canonical_diameter <= 4:
            raise ValueError("canonical_diameter must be > 4 pixels")
        if not self.channels or any(c < 1 for c in self.channels):
            raise ValueError("channels must be positive integers")
        if self.instances.use_flows and not self.flows:
            raise ValueError("instances.use_flows needs a model with flows")
        if self.default_diameter <= 0 or self.background_sigma <= 0:
            raise ValueError("default_diameter and background_sigma must be > 0")
        if not 0.25 <= self.diameter_calibration <= 4:
            raise ValueError("diameter_calibration must be within [0.25, 4]")
        if self.size_statistic not in SIZE_STATISTICS:
            raise ValueError(f"size_statistic must be one of {SIZE_STATISTICS}")
        if self.taught_diameter is not None and not self.taught_diameter > 0:
            raise ValueError("taught_diameter must be > 0 pixels")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    def to_files(self) -> tuple[dict, dict]:
        """The contents of a model folder's ``config.yaml`` (``format``, network and
        preprocessing) and ``tuning.yaml`` (settings chosen after training, on held-out
        images or taught ROIs, which :func:`tlseg.tune` rewrites)."""
        d = self.to_dict()
        tuning = {k: d.pop(k) for k in TUNING_KEYS}
        return {"format": MODEL_FORMAT, **d}, tuning

    @classmethod
    def from_files(cls, config: dict, tuning: dict | None = None) -> ModelConfig:
        """Read what :meth:`to_files` wrote. A ``config.yaml`` without ``format`` holds
        every setting in one file (the layout of tlseg 0.1) and loads as it is."""
        config = dict(config)
        version = config.pop("format", 0)
        if not isinstance(version, int) or version > MODEL_FORMAT:
            raise ValueError(f"model format {version!r} is newer than this tlseg reads "
                             f"({MODEL_FORMAT}); upgrade tlseg")
        return cls.from_dict({**config, **(tuning or {})})

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        d = dict(d)
        if "channels" in d:
            d["channels"] = tuple(d["channels"])
        if "instances" in d:
            d["instances"] = InstanceConfig(**d["instances"])
        return cls(**d)
