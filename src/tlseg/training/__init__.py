"""Making models: labels to targets (:mod:`.targets`), training samples and crops
(:mod:`.data`, :mod:`.augment`), the training loop (:mod:`.train`), tuning the
post-processing on held-out images (:mod:`.tune`) and a run from data folders
(:mod:`.run`)."""
