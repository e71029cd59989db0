"""Files in and out: images and label masks read with one-line errors
(:mod:`~tlseg.io.images`), results written atomically (:mod:`~tlseg.io.files`), ImageJ
ROI sets (:mod:`~tlseg.io.imagej`)."""

from .files import atomic_path, write_json, write_labels, write_table
from .images import IMAGE_SUFFIXES, as_gray_2d, list_images, read_image, read_labels

__all__ = ["IMAGE_SUFFIXES", "as_gray_2d", "atomic_path", "list_images", "read_image",
           "read_labels", "write_json", "write_labels", "write_table"]
