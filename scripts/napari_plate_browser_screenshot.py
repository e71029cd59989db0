"""Screenshot of the tlseg plate browser in napari on a finished plate run, for the docs.

Needs a display: run under Xvfb (Debian package ``xvfb``), on the results of
``tlseg demo-plate demo_plate --run``:

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/napari_plate_browser_screenshot.py \\
        demo_plate/results docs/napari_plate_browser.png
"""

import sys
from pathlib import Path

import napari
from qtpy.QtWidgets import QApplication

from tlseg.napari.plate_browser import PlateBrowser


def main(results: Path, out: Path) -> None:
    viewer = napari.Viewer(title="tlseg plate browser", show=True)
    viewer.window.resize(1500, 950)
    browser = PlateBrowser(viewer)
    viewer.window.add_dock_widget(browser, name="Plate browser", area="right")
    browser.folder.value = results
    browser.grid.cellClicked.emit(1, 2)  # well B03
    for _ in range(30):
        QApplication.processEvents()
    viewer.screenshot(str(out), canvas_only=False)
    viewer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
