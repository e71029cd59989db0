"""napari plugin (npe2): the tlseg dock widget, the plate browser and a sample image.

Only napari imports this subpackage; the rest of tlseg never needs Qt.
"""


def make_widget(viewer):
    from .widget import TlsegWidget

    return TlsegWidget(viewer)


def make_plate_browser(viewer):
    from .plate_browser import PlateBrowser

    return PlateBrowser(viewer)


def sample_phase():
    """A synthetic phase-contrast field with shading, debris and touching cells."""
    from tlseg import synthetic_field

    f = synthetic_field((512, 512), diameter=30, modality="phase", seed=0)
    return [(f["tl"], {"name": "synthetic phase"}, "image")]
