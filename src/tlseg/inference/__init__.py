"""Image → network maps → cells: the canonical cell scale and shading correction
(:mod:`.preprocess`), the U-Net (:mod:`.network`), a model and its tiled inference
(:mod:`.model`), the automatic diameter (:mod:`.diameter`, :mod:`.window`) and maps to
instances (:mod:`.postprocess`, :mod:`.flows`, :mod:`.labels`)."""
