"""Screenshot of the tlseg napari widget on a real image, for the README.

Needs a display: run under Xvfb (Debian package ``xvfb``):

    xvfb-run -a -s "-screen 0 1600x1000x24" python scripts/napari_screenshot.py \\
        --image ../shared/data/tl/usiigaci/val/images/usiigaci_set25.tif -o docs/napari_widget.png
"""

import argparse
from pathlib import Path

import numpy as np


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image", required=True, type=Path)
    p.add_argument("-o", "--out", type=Path, default=Path("docs/napari_widget.png"))
    p.add_argument("--project", type=Path, default=Path("/tmp/tlseg_screenshot_project"))
    args = p.parse_args()

    import napari
    from qtpy.QtWidgets import QApplication

    import tlseg
    from tlseg.napari.widget import TlsegWidget

    image = tlseg.read_image(args.image)
    viewer = napari.Viewer(title="tlseg", show=True)
    viewer.window.resize(1500, 950)
    viewer.add_image(image, name=args.image.stem, metadata={"path": str(args.image)})
    widget = TlsegWidget(viewer)
    viewer.window.add_dock_widget(widget, name="tlseg", area="right")
    labels, details = widget._current_model().predict_instances(image)
    widget._segmented(f"{args.image.stem} cells", labels, details)
    viewer.layers[f"{args.image.stem} cells"].contour = 2
    picks = tlseg.suggest_rois(widget._current_model(), image, n=3, size=256)
    viewer.add_shapes([np.array([[b[0], b[1]], [b[2], b[3]]]) for b in (q["box"] for q in picks)],
                      shape_type="rectangle", edge_color="orange", face_color="transparent",
                      edge_width=4, name="suggested ROIs")
    widget.project_dir.value = args.project
    widget.draw_roi()
    y0, x0, y1, x1 = picks[0]["box"]
    viewer.layers["ROI"].add_rectangles([np.array([[y0, x0], [y1, x1]])])
    widget._say(f"{details['n_cells']} cells (diameter {details['diameter']:.1f} px); "
                "3 suggested ROIs; ROI box drawn")
    for _ in range(20):
        QApplication.processEvents()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    viewer.screenshot(str(args.out), canvas_only=False)
    print(f"wrote {args.out}")
    viewer.close()


if __name__ == "__main__":
    main()
