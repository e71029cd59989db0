"""Teaching a model the user's cells: projects of corrected ROIs with unknown pixels
outside them (:mod:`.project`), label edits (:mod:`.edit`), where to annotate next
(:mod:`.suggest`) and fine-tuning or retraining (:mod:`.teach`)."""
