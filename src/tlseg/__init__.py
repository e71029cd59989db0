"""tlseg: segment and count label-free cells in transmitted-light images.

The package follows the data: :mod:`tlseg.io` reads images, :mod:`tlseg.preprocess`
brings them to the canonical cell scale and normalises them, :mod:`tlseg.network` and
:mod:`tlseg.model` predict maps, :mod:`tlseg.postprocess` turns maps into cells and
:mod:`tlseg.metrics` scores them. :mod:`tlseg.targets`, :mod:`tlseg.data`,
:mod:`tlseg.augment` and :mod:`tlseg.train` make models; :mod:`tlseg.synthetic` makes
test images.
"""

from .errors import TlsegError

__version__ = "0.1.0"
__all__ = ["TlsegError", "__version__"]
