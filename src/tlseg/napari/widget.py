"""The tlseg dock widget for napari: segment, correct, collect ROIs, teach, apply.

Everything heavy (segmentation, suggestion, training) runs in a worker thread
(``napari.qt.threading``), so the viewer never freezes; training reports progress to a
progress bar and can be cancelled between steps. Corrections use the pure functions of
:mod:`tlseg.teaching.edit` on the labels layer and keep their own undo stack; napari's own
brush, eraser and fill tools (with napari's undo) amend outlines and paint background.

Layers the widget creates and reads:

- ``<image> cells`` (Labels): the segmentation being corrected;
- ``ROI`` (Shapes, rectangles): the region to add to the training set (the last one);
- ``picks`` (Points): click cells to merge, delete, or seeds to split at;
- ``cut`` (Shapes, lines): a line to split touching cells along;
- ``unknown`` (Labels): paint pixels you are unsure of; the loss ignores them;
- ``suggested ROIs`` (Shapes): where the model is least sure.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
from magicgui.widgets import (
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
)

import tlseg
from tlseg import TlsegError, edit
from tlseg.analysis.coverage import flagged
from tlseg.analysis.pipeline import pattern_note

from .corrections import correct, layer_named
from .progress import Cancelled, Relay


class TlsegWidget(Container):
    """Segment → correct → add ROI → fine-tune/retrain → apply, in one dock widget."""

    def __init__(self, viewer):
        super().__init__(labels=True)
        self.viewer = viewer
        self.models: dict[str, str] = {name: name for name in tlseg.shipped_models()}
        self.steps: int | None = None  # override of the mode's step count (tests, power users)
        self.worker = None
        self._cancel = threading.Event()
        self._undo: list[np.ndarray] = []
        self._relay = Relay()
        self._relay.step.connect(self._on_step)

        # layer pickers list the viewer's layers themselves (no reliance on Qt ancestry,
        # so the widget also works on a headless ViewerModel)
        self.image = ComboBox(label="image", choices=lambda w: self._layers("Image"))
        self.model = ComboBox(label="model", choices=list(self.models),
                              value="tl-cells" if "tl-cells" in self.models else None)
        self.model_dir = FileEdit(label="add model folder", mode="d", value="")
        self.diameter = FloatSpinBox(label="diameter (px)", value=0, min=0, max=1000,
                                     tooltip="typical cell diameter; 0 = estimate")
        self.segment_btn = PushButton(text="Segment")
        self.labels_layer = ComboBox(label="labels", choices=lambda w: self._layers("Labels"))
        self.merge_btn = PushButton(text="Merge picked")
        self.delete_btn = PushButton(text="Delete picked")
        self.split_seeds_btn = PushButton(text="Split at picked seeds")
        self.split_line_btn = PushButton(text="Split along cut line")
        self.undo_btn = PushButton(text="Undo edit")
        self.project_dir = FileEdit(label="project", mode="d", value="")
        self.roi_btn = PushButton(text="Draw ROI box")
        self.add_roi_btn = PushButton(text="Add ROI to training set")
        self.n_suggest = SpinBox(label="suggest n", value=3, min=1, max=20)
        self.suggest_btn = PushButton(text="Suggest ROIs")
        self.mode = ComboBox(label="mode", choices=["finetune", "retrain"])
        self.out_dir = FileEdit(label="new model", mode="d", value="")
        self.train_btn = PushButton(text="Train")
        self.cancel_btn = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1)
        self.status = Label(value="")
        def head(text):
            return Label(value=f"<b>{text}</b>")

        self.extend([head("1 · Segment"), self.image, self.model, self.model_dir, self.diameter,
                     self.segment_btn,
                     head("2 · Correct (napari brush/eraser/fill amend outlines)"),
                     self.labels_layer, self.merge_btn, self.delete_btn, self.split_seeds_btn,
                     self.split_line_btn, self.undo_btn,
                     head("3 · Training set"), self.project_dir, self.roi_btn,
                     self.add_roi_btn, self.n_suggest, self.suggest_btn,
                     head("4 · Teach, then Segment again to apply"), self.mode,
                     self.out_dir, self.train_btn, self.cancel_btn, self.progress, self.status])
        self.model_dir.changed.connect(self._add_model_folder)
        self.segment_btn.changed.connect(self.segment)
        self.merge_btn.changed.connect(lambda: self._edit("merge"))
        self.delete_btn.changed.connect(lambda: self._edit("delete"))
        self.split_seeds_btn.changed.connect(lambda: self._edit("split_seeds"))
        self.split_line_btn.changed.connect(lambda: self._edit("split_line"))
        self.undo_btn.changed.connect(self.undo)
        self.roi_btn.changed.connect(self.draw_roi)
        self.add_roi_btn.changed.connect(self.add_roi)
        self.suggest_btn.changed.connect(self.suggest)
        self.train_btn.changed.connect(self.train)
        self.cancel_btn.changed.connect(self.cancel)
        viewer.layers.events.inserted.connect(self._refresh_layers)
        viewer.layers.events.removed.connect(self._refresh_layers)

    # -- helpers ----------------------------------------------------------------------
    def _layers(self, kind: str):
        return [(layer.name, layer) for layer in self.viewer.layers
                if type(layer).__name__ == kind]

    def _refresh_layers(self, event=None):
        for combo in (self.image, self.labels_layer):
            keep = combo.value
            combo.reset_choices()
            if keep is not None and keep in self.viewer.layers:
                combo.value = keep

    def _say(self, text: str):
        self.status.value = text

    @staticmethod
    def _folder(edit) -> Path | None:
        """A FileEdit's folder, or None when unset (magicgui turns '' into the cwd)."""
        value = str(edit.value or "")
        if value in ("", ".") or Path(value).resolve() == Path.cwd().resolve():
            return None
        return Path(value)

    def _add_model_folder(self, *_):
        folder = self._folder(self.model_dir)
        if folder is None:
            return
        if not (folder / "config.yaml").is_file():
            return self._say(f"error: {folder} is not a model folder (no config.yaml)")
        self.models[folder.name] = str(folder)
        self.model.choices = list(self.models)
        self.model.value = folder.name

    def _current_model(self) -> tlseg.Model:
        return tlseg.load_model(self.models[self.model.value])

    def _image_data(self) -> np.ndarray:
        layer = self.image.value
        if layer is None:
            raise TlsegError("open an image first")
        data = np.asarray(layer.data)
        if layer.rgb:
            data = data[..., :3].mean(axis=-1)
        if data.ndim != 2:
            raise TlsegError(f"the image layer is {data.ndim}-D; tlseg segments 2-D images")
        return data

    def _layer(self, name, kind, **kwargs):
        return layer_named(self.viewer, name, kind, **kwargs)

    def _busy(self, busy: bool):
        for b in (self.segment_btn, self.suggest_btn, self.train_btn):
            b.enabled = not busy
        self.cancel_btn.enabled = busy

    def _error(self, exc):
        self._busy(False)
        self._say(f"error: {exc}")

    # -- segment ----------------------------------------------------------------------
    def segment(self):
        """Segment the chosen image with the chosen model (worker thread)."""
        from napari.qt.threading import create_worker

        try:
            image, model = self._image_data(), self._current_model()
        except TlsegError as exc:
            return self._say(f"error: {exc}")
        name = f"{self.image.value.name} cells"
        d = self.diameter.value or None

        def work():  # as `tlseg segment`: with the check for missed cells
            done = tlseg.segment_and_measure(model, image, diameter=d)
            patches = None
            if flagged(done.details.get("uncounted_texture")):  # show where it lies
                patches = tlseg.uncounted_patches(image, done.labels, done.details["diameter"])
            return done.labels, done.details, patches

        self.worker = create_worker(work)
        self.worker.returned.connect(lambda res: self._segmented(name, *res))
        self.worker.errored.connect(self._error)
        self._busy(True)
        self._say("segmenting...")
        self.worker.start()
        return self.worker

    def _segmented(self, name, labels, details, patches=None):
        self._busy(False)
        if name in self.viewer.layers:
            self.viewer.layers[name].data = labels
        else:
            self.viewer.add_labels(labels, name=name)
        self.labels_layer.value = self.viewer.layers[name]
        self._undo.clear()
        text = (f"{details['n_cells']} cells (diameter {details['diameter']:.1f} px, "
                f"{details['diameter_source']}){pattern_note(details)}")
        share = details.get("uncounted_texture")
        where = name.removesuffix(" cells") + " uncounted texture"
        if where in self.viewer.layers:  # a former run's: no longer true of these cells
            self.viewer.layers.remove(where)
        if flagged(share):
            text += (f"; {share:.0%} of the cell-like texture lies outside them: look for "
                     "missed cells")
            if patches is not None and patches.any():
                self.viewer.add_image(patches.astype(np.uint8), name=where,
                                      colormap="bop orange", contrast_limits=(0, 1),
                                      blending="additive", opacity=0.5)
                text += f" in the '{where}' layer"
                self.viewer.layers.selection.active = self.viewer.layers[name]  # to edit
        self._say(text)

    # -- correct ----------------------------------------------------------------------
    def _edit(self, op: str):
        layer = self.labels_layer.value
        if layer is None:
            return self._say("error: segment or open a labels layer first")
        lab = np.asarray(layer.data)
        try:
            new, message = correct(self.viewer, lab, op)
        except ValueError as exc:
            return self._say(f"error: {exc}")
        if new is None:
            return self._say(message)
        self._undo.append(lab.copy())
        layer.data = new.astype(lab.dtype, copy=False)
        self._say(f"{message} ({len(self._undo)} edit(s) to undo)")

    def undo(self):
        if not self._undo or self.labels_layer.value is None:
            return self._say("nothing to undo")
        self.labels_layer.value.data = self._undo.pop()
        self._say(f"undone ({len(self._undo)} left)")

    # -- training set -----------------------------------------------------------------
    def _project(self):
        folder = self._folder(self.project_dir)
        if folder is None:
            raise TlsegError("choose a project folder first")
        if (folder / "project.yaml").is_file():
            return tlseg.Project.open(folder)
        return tlseg.Project.init(folder, diameter=self.diameter.value or None)

    def draw_roi(self):
        layer = self._layer("ROI", "shapes", ndim=2, edge_color="cyan", face_color="transparent",
                            edge_width=3)
        layer.mode = "add_rectangle"
        self.viewer.layers.selection.active = layer

    def add_roi(self):
        """Add the last ROI rectangle, with the labels inside it, to the project."""
        try:
            project = self._project()
            layer, labels = self.image.value, self.labels_layer.value
            if layer is None or labels is None:
                raise TlsegError("segment the image (or open labels) before adding a ROI")
            if "ROI" not in self.viewer.layers or not len(self.viewer.layers["ROI"].data):
                raise TlsegError("draw a ROI box first")
            src = getattr(layer, "source", None)
            path = getattr(src, "path", None) or layer.metadata.get("path")
            if path is None:  # an image with no file behind it: save a copy into the project
                import tifffile

                path = project.root / "images" / f"{layer.name}.tif"
                path.parent.mkdir(parents=True, exist_ok=True)
                if not path.exists():
                    tifffile.imwrite(path, self._image_data())
            image_id = project.add_image(path)
            corners = np.asarray(self.viewer.layers["ROI"].data[-1])[:, -2:]
            h, w = np.asarray(labels.data).shape
            y0, x0 = np.clip(np.floor(corners.min(0)).astype(int), 0, [h, w])
            y1, x1 = np.clip(np.ceil(corners.max(0)).astype(int), 0, [h, w])
            patch = np.asarray(labels.data)[y0:y1, x0:x1].astype(np.int32)
            if "unknown" in self.viewer.layers:
                patch = np.where(np.asarray(self.viewer.layers["unknown"].data)[y0:y1, x0:x1] > 0,
                                 tlseg.UNKNOWN, patch)
            roi = project.add_roi(image_id, (y0, x0, y1, x1), edit.relabel(patch))
        except TlsegError as exc:
            return self._say(f"error: {exc}")
        done = "added" if roi.version == 1 else f"updated to version {roi.version}"
        self._say(f"ROI {roi.roi_id} {done} ({len(project.rois())} in the training set)")
        return roi

    def suggest(self):
        """Show the most uncertain regions as rectangles (worker thread)."""
        from napari.qt.threading import create_worker

        try:
            image, model = self._image_data(), self._current_model()
        except TlsegError as exc:
            return self._say(f"error: {exc}")
        size = int(min(256, max(32, min(image.shape) // 2)))  # >= 4 boxes on small images
        n, d = self.n_suggest.value, self.diameter.value or None

        def work():
            return tlseg.suggest_rois(model, image, n=n, size=size, diameter=d)

        def show(picks):
            self._busy(False)
            rects = [np.array([[b[0], b[1]], [b[2], b[3]]]) for b in (p["box"] for p in picks)]
            layer = self._layer("suggested ROIs", "shapes", ndim=2, edge_color="orange",
                                face_color="transparent", edge_width=3)
            layer.data = []
            if rects:
                layer.add_rectangles(rects, edge_color="orange", face_color="transparent")
            self._say(f"{len(rects)} suggested ROIs (most uncertain first)")

        self.worker = create_worker(work)
        self.worker.returned.connect(show)
        self.worker.errored.connect(self._error)
        self._busy(True)
        self._say("ranking regions by uncertainty...")
        self.worker.start()
        return self.worker

    # -- teach ------------------------------------------------------------------------
    def train(self):
        """Fine-tune or retrain the current model on the project (worker thread)."""
        from napari.qt.threading import create_worker

        try:
            project, base = self._project(), self._current_model()
            if not project.rois():
                raise TlsegError("the training set is empty; add ROIs first")
            out = self._folder(self.out_dir)
            if out is None:
                out = project.root / "models" / f"{self.mode.value}-{project.roi_set_hash()[:8]}"
        except TlsegError as exc:
            return self._say(f"error: {exc}")
        mode, steps, cancel, relay = self.mode.value, self.steps, self._cancel, self._relay
        cancel.clear()
        self.progress.value = 0

        def on_step(step, total, parts):
            relay.step.emit(step, total)
            if cancel.is_set():
                raise Cancelled()

        def work():
            try:
                tlseg.teach(project, base, out, mode=mode, steps=steps, resume=True,
                            progress=on_step)
            except Cancelled:
                return None
            return out

        self.worker = create_worker(work)
        self.worker.returned.connect(self._trained)
        self.worker.errored.connect(self._error)
        self._busy(True)
        self._say(f"{mode} on {len(project.rois())} ROIs...")
        self.worker.start()
        return self.worker

    def _on_step(self, step, total):
        self.progress.max = max(total, 1)
        self.progress.value = min(step, total)

    def _trained(self, out):
        self._busy(False)
        if out is None:
            return self._say("training cancelled; the current model is unchanged "
                             "(Train again resumes from the last checkpoint)")
        name = Path(out).name
        self.models[name] = str(out)
        self.model.choices = list(self.models)
        self.model.value = name
        self._say(f"model {name} trained; press Segment to apply it")

    def cancel(self):
        self._cancel.set()
        self._say("cancelling after the current step...")
