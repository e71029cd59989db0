"""tlseg: segment and count label-free cells in transmitted-light images.

The package follows the data: :mod:`tlseg.io` reads images, :mod:`tlseg.inference.preprocess`
brings them to the canonical cell scale and normalises them, :mod:`tlseg.inference.network` and
:mod:`tlseg.inference.model` predict maps, :mod:`tlseg.inference.postprocess` turns maps into cells and
:mod:`tlseg.analysis.metrics` scores them. :mod:`tlseg.training.targets`, :mod:`tlseg.training.data`,
:mod:`tlseg.training.augment` and :mod:`tlseg.training.train` make models; :mod:`tlseg.synthetic` makes
test images.
"""

from .errors import TlsegError

__version__ = "0.1.0"
__all__ = ["TlsegError", "__version__"]
