"""What is made of cells: per-cell measurements (:mod:`.measure`), scores against ground
truth (:mod:`.metrics`), outline overlays (:mod:`.overlay`) and one image or a folder
through segmentation and measurement (:mod:`.pipeline`)."""
