"""Every setting of tlseg, as small frozen dataclasses: the one source of defaults.

- :class:`InstanceConfig`: thresholds from network maps to cells;
- :class:`ModelConfig`: what a saved model needs to run (network, preprocessing, tuning);
- :class:`SegmentConfig`: a folder run (``tlseg segment``, :func:`tlseg.segment_folder`);
- :class:`TrainConfig`: a training run (``tlseg train``, :func:`tlseg.train`);
- :class:`TeachConfig`: fine-tuning or retraining on a project's ROIs (:func:`tlseg.teach`);
- :class:`PlateConfig`: a plate run (``tlseg plate run``, :func:`tlseg.run_plate`).

The command line takes its defaults from these classes (:func:`default`), so a default
is written once.
"""

from __future__ import annotations

from dataclasses import MISSING, asdict, dataclass, field, fields


def default(cls, name: str):
    """The default of field ``name`` of the dataclass ``cls`` (for argparse).

    Examples
    --------
    >>> default(TrainConfig, "epochs")
    40
    """
    f = next(f for f in fields(cls) if f.name == name)
    if f.default is not MISSING:
        return f.default
    if f.default_factory is not MISSING:
        return f.default_factory()
    raise KeyError(f"{cls.__name__}.{name} has no default")


def settings_or_config(cls, config, settings: dict, *, what: str):
    """``config`` (an instance of the dataclass ``cls``) or one built from keyword
    ``settings``, for functions that take either; a :class:`TypeError` for unknown
    keywords or for both given.

    Examples
    --------
    >>> settings_or_config(SegmentConfig, None, {"diameter": 30}, what="f").diameter
    30
    """
    if config is not None:
        if settings:
            raise TypeError(f"{what}: give a {cls.__name__} or keywords, not both")
        return config
    unknown = set(settings) - {f.name for f in fields(cls)}
    if unknown:
        raise TypeError(f"{what}: unknown setting(s) {sorted(unknown)}")
    return cls(**settings)


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


@dataclass(frozen=True)
class TrainConfig:
    """How a model is trained.

    Attributes
    ----------
    epochs : int
        Number of epochs; one epoch is ``steps_per_epoch`` batches.
    steps_per_epoch : int
        Batches per epoch (training samples random crops, so an epoch is a step count).
    batch_size : int
        Crops per batch.
    crop : int
        Crop side at the canonical scale, in pixels.
    lr : float
        Peak learning rate (AdamW, one-cycle schedule).
    max_log2_scale : float
        Scale augmentation: crops are zoomed by 2**u, |u| <= this (octaves).
    holdout_fraction : float
        Fraction of each source's training images held out to tune thresholds.
    seed : int
        Random seed.
    checkpoint_every : int
        Save a resumable checkpoint every this many steps.
    distill : float
        Weight of the pull towards a teacher's maps on unknown pixels (retraining).
    freeze_norm : bool
        Keep BatchNorm statistics fixed (fine-tuning on a few ROIs).
    flow_weight : float
        Weight of the flow loss (models with flows) against the foreground and distance
        losses.
    ema : float
        Decay of an exponential moving average of the weights (0 = off). With it the
        saved model holds the averaged weights, which are smoother than the last step's.
    max_noise : float
        Camera-noise augmentation: Gaussian noise of up to this fraction of the crop's
        mean level (half the crops). 0.06 suits transmitted light, whose mean is the
        bright background; fluorescence, whose mean is the dark background, needs more
        (0.3) to see nuclei in noisy, dim fields.
    texture : float
        Texture augmentation (0 = off): 30 % of the crops are multiplied by ``1 + a * n``,
        ``n`` Gaussian noise smoothed over 1-2 px and scaled to unit SD, ``a`` up to this.
        It puts grain inside cells and nuclei (chromatin, organelles), so that a dip in
        intensity inside a blob is not read as the border between two.
    specks : float
        Debris augmentation (0 = off): this fraction of the crops get 1-8 sharp dark
        specks (ellipses of 2-10 px radius at the canonical scale, 30-70 % darker, left
        as whatever the pixels under them were labelled), so that in-focus debris
        smaller than a cell is not read as a cell.
    crowded : float
        Crowded-field augmentation (0 = off): this fraction of the crops come from fields
        filled to 60-90 % with real annotated cells of one source, pasted with feathered
        edges at their new background level (:func:`tlseg.training.crowd.crowded_samples`;
        16 fields of 384² canonical pixels per source, built from the training images
        only), so that confluent monolayers are not read as a few big cells.
    crowded_blend : str
        How a pasted cell is put into a crowded field: ``"feather"`` (its pixels replace
        the field's, feathered at the outline) or ``"relief"`` (the field is multiplied
        by the cell's relief over its own background, halo included, so no seam is
        drawn; :func:`tlseg.training.crowd.crowded_samples`).
    monolayers : float
        Monolayer augmentation (0 = off): this fraction of the crops come from synthetic
        confluent monolayers in phase contrast, brightfield and DIC, cells filling the
        field with no background between them
        (:func:`tlseg.training.crowd.monolayer_samples`; 16 fields of 384² canonical
        pixels per modality).
    border_weight : float
        Extra loss weight (0 = off) on pixels within 3 canonical pixels of two different
        cells, where touching cells must be told apart
        (:func:`tlseg.training.crowd.border_weights`).
    dense : float
        Density-weighted crops (0 = off): this fraction of the crops of each source is
        centred on one of its labelled cells, drawn with a weight of the square of the
        number of labelled cells within two canonical diameters, so that the densest
        parts of the real images are seen more often
        (:func:`tlseg.training.data.dense_centres`).
    structures : float
        Structure negatives (0 = off): this fraction of the crops get one structure that
        is not a cell (microfluidic posts, walls and channels, scratches, bubbles, a
        well's rim) drawn over their known background, which stays background
        (:func:`tlseg.training.structures.add_structures`).
    """

    epochs: int = 40
    steps_per_epoch: int = 100
    batch_size: int = 8
    crop: int = 256
    lr: float = 2e-3
    max_log2_scale: float = 1.0
    holdout_fraction: float = 0.15
    seed: int = 0
    checkpoint_every: int = 100
    distill: float = 0.0
    freeze_norm: bool = False
    flow_weight: float = 2.0
    ema: float = 0.0
    max_noise: float = 0.06
    texture: float = 0.0
    specks: float = 0.0
    crowded: float = 0.0
    crowded_blend: str = "feather"
    monolayers: float = 0.0
    border_weight: float = 0.0
    dense: float = 0.0
    structures: float = 0.0

    def __post_init__(self):
        for name in ("epochs", "steps_per_epoch", "batch_size", "checkpoint_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.crop < 32 or self.crop % 32:
            raise ValueError("crop must be a multiple of 32, >= 32")
        if not 0 <= self.holdout_fraction < 1:
            raise ValueError("holdout_fraction must be in [0, 1)")
        if self.distill < 0 or self.flow_weight < 0:
            raise ValueError("distill and flow_weight must be >= 0")
        if not 0 <= self.ema < 1:
            raise ValueError("ema must be in [0, 1)")
        if not 0 <= self.max_noise <= 1:
            raise ValueError("max_noise must be in [0, 1]")
        if not 0 <= self.texture <= 1:
            raise ValueError("texture must be in [0, 1]")
        if not 0 <= self.specks <= 1:
            raise ValueError("specks must be in [0, 1]")
        if not 0 <= self.structures <= 1:
            raise ValueError("structures must be in [0, 1]")
        if not 0 <= self.crowded <= 1:
            raise ValueError("crowded must be in [0, 1]")
        if self.crowded_blend not in ("feather", "relief"):
            raise ValueError("crowded_blend must be 'feather' or 'relief'")
        if not 0 <= self.monolayers <= 1 or self.crowded + self.monolayers > 1:
            raise ValueError("monolayers must be in [0, 1], and crowded + monolayers <= 1")
        if not 0 <= self.dense <= 1:
            raise ValueError("dense must be in [0, 1]")
        if self.border_weight < 0:
            raise ValueError("border_weight must be >= 0")
        if self.lr <= 0 or self.max_log2_scale < 0:
            raise ValueError("lr must be > 0 and max_log2_scale >= 0")

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch


@dataclass(frozen=True)
class SegmentConfig:
    """A folder run: ``tlseg segment`` and :func:`tlseg.segment_folder`.

    Attributes
    ----------
    model : str
        Shipped model name or model folder.
    diameter : float or None
        Cell diameter in pixels; estimated per image when None.
    channel, plane : int or None
        Channel of a multi-channel image, plane of a 3-D stack.
    tile : int
        Tile side (canonical-scale pixels) for large images.
    tta : bool
        Test-time augmentation: average with a flipped run (2x the time).
    overlay : bool
        Also write ``<stem>_overlay.png``.
    overwrite : bool
        Redo images whose results exist (default: skip them).
    """

    model: str = "tl-cells"
    diameter: float | None = None
    channel: int | None = None
    plane: int | None = None
    tile: int = 1024
    tta: bool = False
    overlay: bool = False
    overwrite: bool = False

    def __post_init__(self):
        if self.diameter is not None and not self.diameter > 0:
            raise ValueError(f"diameter must be > 0 pixels, got {self.diameter}")
        if self.tile < 32:
            raise ValueError(f"tile must be >= 32 pixels, got {self.tile}")


@dataclass(frozen=True)
class TeachConfig:
    """Fine-tuning or retraining on a project's ROIs (:func:`tlseg.teach`).

    Attributes
    ----------
    batch_size, crop, lr : int, int, float
        Crops per batch, crop side (canonical pixels), peak learning rate.
    distill : float
        Weight of the pull towards the base model's maps outside the ROIs.
    freeze_norm : bool
        Keep BatchNorm statistics fixed.
    steps_per_roi, min_steps, max_steps : int
        Training steps: ``steps_per_roi`` per ROI, clipped to [min_steps, max_steps], so
        each ROI is seen about as often whatever their number.
    """

    batch_size: int = 8
    crop: int = 128
    lr: float = 5e-4
    distill: float = 0.5
    freeze_norm: bool = True
    steps_per_roi: int = 60
    min_steps: int = 100
    max_steps: int = 1200

    def steps(self, n_rois: int) -> int:
        """Training steps for ``n_rois`` ROIs."""
        return int(min(max(self.steps_per_roi * n_rois, self.min_steps), self.max_steps))

    def train_settings(self) -> dict:
        """The :class:`TrainConfig` fields this sets."""
        return {"batch_size": self.batch_size, "crop": self.crop, "lr": self.lr,
                "distill": self.distill, "freeze_norm": self.freeze_norm}


#: the two teaching modes: a minor correction in minutes, or deeper learning
TEACH_MODES = {
    "finetune": TeachConfig(),
    "retrain": TeachConfig(crop=192, lr=1e-3, freeze_norm=False, steps_per_roi=60,
                           min_steps=600, max_steps=3000),
}


@dataclass(frozen=True)
class PlateConfig:
    """Settings of a plate run that change its results (stored in ``run.json``; a resumed
    run must repeat them).

    Attributes
    ----------
    tl_channel : str
        Transmitted-light channel as named in the file names (e.g. ``w1``).
    nuclei_channel : str or None
        Nuclear-stain channel, for nuclei counts and validation.
    model, nuclei_model : str
        Label-free and nuclei models (names or folders).
    diameter, nuclei_diameter : float or None
        Cell and nucleus diameters in pixels; estimated once for the plate when None.
    pixel_size : float or None
        µm per pixel (adds µm² areas and cells/mm²).
    diameter_mode : str
        'plate': one automatic diameter for the plate (one objective); 'site': each site
        estimates its own.
    diameter_by : str or None
        Plate-map column (e.g. the objective) whose value groups the wells that share one
        automatic diameter, in 'plate' mode.
    well_diameters : dict or None
        The diameters estimated per group, by well: ``{well: [cells, nuclei]}`` (filled
        in by the run; a given diameter wins over these).
    exclude_edge : bool
        Discard the cells and nuclei that touch a site's edge before counting and
        measuring (:func:`tlseg.discard_edge`), as annotations that leave cut cells out
        do. Off: every object counts, cut ones included.
    """

    tl_channel: str
    nuclei_channel: str | None = None
    model: str = "tl-cells"
    nuclei_model: str = "nuclei"
    diameter: float | None = None
    nuclei_diameter: float | None = None
    pixel_size: float | None = None
    diameter_mode: str = "plate"
    diameter_by: str | None = None
    well_diameters: dict | None = None
    exclude_edge: bool = False

    def result_keys(self) -> dict:
        return asdict(self)
