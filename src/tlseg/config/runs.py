"""The settings of a run: segmenting a folder, training, teaching, a plate.

- :class:`SegmentConfig`: a folder run (``tlseg segment``, :func:`tlseg.segment_folder`);
- :class:`TrainConfig`: a training run (``tlseg train``, :func:`tlseg.train`);
- :class:`TeachConfig` and :data:`TEACH_MODES`: fine-tuning or retraining on a project's
  ROIs (:func:`tlseg.teach`);
- :class:`PlateConfig`: a plate run (``tlseg plate run``, :func:`tlseg.run_plate`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
    optics : float
        Optics augmentation (0 = off): this fraction of the normalised crops are shown as
        a random blend of themselves, their DIC-like shear relief and their
        phase-contrast-like halo (:func:`tlseg.training.augment.optics`), so that a
        modality is learnt from the cells of another.
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
    optics: float = 0.0

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
        if not 0 <= self.optics <= 1:
            raise ValueError("optics must be in [0, 1]")
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
