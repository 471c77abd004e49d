"""The Inpaint tab's work on one photo: paint at full resolution, run, keep painting on the result, undo and redo
results, upload or download a mask, run the last mask again.

The photo and every result are *versions* of the work, kept per page session (a ``gr.State``): the file, and the
tile pyramid the viewer draws it from (:mod:`.viewer`). Painting happens on the current version; a run turns
its strokes (and an uploaded mask, if any) into a mask at the photo's full resolution, runs the public
``/inpaint`` job on the current version, and the result becomes the next version: painting continues on it, the
viewer compares it with the version before, and Undo/Redo result move between versions. The job only ever
reads files the upload gate admits for the session (uploads, and the masks and results this app issued to it).
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from ..errors import InputError
from ..image.read import read_image_size
from ..masks import fit_mask, mask_from_picture
from .limits import open_upload
from .results import save_mask, shown_upload, working_copy_name
from .retention import new_job_folder
from .viewer import Pyramid, build_pyramid, load_pyramid, parse_strokes, strokes_mask, viewer_value, write_overlay

MASK_ASPECT_SLACK = 0.01  # an uploaded mask of another size is scaled when its aspect ratio differs less than this

_TEXT: dict[str, tuple[str, str]] = {
    "opened": ("{width}×{height} photo: paint over what to remove", "{width}×{height} 照片：涂抹要去除的部分"),
    "result": ("version {index} of {count}: painting continues on this result", "第 {index}/{count} 版：可在此结果上继续涂抹"),
    "version": ("version {index} of {count}", "第 {index}/{count} 版"),
    "mask": ("mask {width}×{height} loaded: paint to add, erase to remove", "已载入 {width}×{height} 蒙版：可继续涂抹或擦除"),
    "nothing": ("paint over what to remove first (Brush), or upload a mask", "请先用画笔涂抹要去除的部分，或上传蒙版"),
    "no_mask": ("no mask has run yet on this photo: paint and run first", "此照片还没有运行过蒙版：请先涂抹并运行"),
    "no_photo": ("upload a photo first", "请先上传照片"),
    "moved_on": ("another photo was opened while the job ran: its result is not added to this one's versions",
                 "任务运行时打开了另一张照片：其结果不会加入当前照片的版本"),
    "first": ("this is the first version: nothing to undo", "这是第一版：没有可撤销的结果"),
    "last": ("this is the latest version: nothing to redo", "这是最新版：没有可重做的结果"),
    "mask_size": ("the mask is {mw}×{mh} but the photo is {width}×{height}: upload a mask of the photo's size",
                  "蒙版为 {mw}×{mh}，照片为 {width}×{height}：请上传与照片尺寸相同的蒙版"),
}


def say(key: str, language: str, **values: Any) -> str:
    return _TEXT[key][1 if language == "zh-CN" else 0].format(**values)


def new_history() -> dict[str, Any]:
    """An empty history: no versions yet. ``mask``: the last mask that ran; ``uploaded``/``overlay``: a mask
    uploaded for the next run; ``pending``: what the run under way started from; ``counter``: bumped whenever the
    viewer must drop its strokes."""
    return {"versions": [], "index": -1, "mask": None, "uploaded": None, "overlay": None, "counter": 0}


class EditorHandlers:
    """The Inpaint tab's page events, over the app's handlers (:class:`.handlers.WebApp`): gate, limits, errors."""

    def __init__(self, app: Any):
        self.app = app

    # ------------------------------------------------------------------------------------------- helpers

    def _language(self, request: gr.Request | None) -> str:
        from .handlers import _language

        return _language(request)

    def _show(self, history: dict[str, Any], *, before: Pyramid | None = None, note: str = "") -> str:
        """The viewer value of the current version; a new ``counter`` value, so the viewer drops its strokes."""
        history["counter"] += 1
        current = history["versions"][history["index"]]
        return viewer_value(load_pyramid(Path(current["view"])), before=before, overlay=history["overlay"],
                            version=history["counter"], note=note)

    def _current(self, history: dict[str, Any] | None, language: str) -> dict[str, Any]:
        if not history or history.get("index", -1) < 0:
            raise InputError(say("no_photo", language))
        return history["versions"][history["index"]]

    # ------------------------------------------------------------------------------------------- events

    def open_photo(self, image: str | None, request: gr.Request) -> tuple[str, dict[str, Any], str | None]:
        """A new photo: its pyramid, and a history with it as the only version."""
        history = new_history()
        if not image:
            return viewer_value(None), history, None
        app = self.app
        with app._errors(request, image):
            path = app._upload(image, request)
            picture = open_upload(path, app.config.limits)
            folder = new_job_folder(app.config.output_dir, "view")
            try:
                pyramid = build_pyramid(picture.pixels, folder / "view")
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            history["versions"].append({"path": path, "view": str(pyramid.folder)})
            history["index"] = 0
            note = say("opened", self._language(request), width=picture.width, height=picture.height)
            return self._show(history, note=note), history, path

    def upload_mask(self, mask: str | None, history: dict[str, Any] | None, request: gr.Request) -> tuple[Any, Any]:
        """An uploaded mask (white or opaque = fill) over the current version: shown as an overlay, used by Run
        together with the strokes (the eraser removes from it too). The strokes painted so far stay."""
        app = self.app
        language = self._language(request)
        if not mask:
            if history:
                history["uploaded"] = history["overlay"] = None
            return (gr.update(), history) if not history or history["index"] < 0 else (
                self._keep_strokes(history), history)
        with app._errors(request, mask):
            current = self._current(history, language)
            width, height = read_image_size(current["path"])
            values = mask_from_picture(open_upload(app._upload(mask, request, "mask"), app.config.limits, "mask"))
            values = _fit_upload(values, width, height, language)
            saved = save_mask(values, app.config.output_dir, upload=shown_upload(current["path"])[0])
            history["uploaded"] = str(saved)
            history["overlay"] = write_overlay(values, saved.parent)
            return self._keep_strokes(history, note=say("mask", language, width=width, height=height)), history

    def _keep_strokes(self, history: dict[str, Any], note: str = "") -> str:
        """The current version's value with the same ``counter``: the viewer keeps its strokes, shows the overlay."""
        current = history["versions"][history["index"]]
        return viewer_value(load_pyramid(Path(current["view"])), overlay=history["overlay"],
                            version=history["counter"], note=note)

    def prepare_mask(self, viewer: str | None, history: dict[str, Any] | None,
                     request: gr.Request) -> tuple[str, str]:
        """The current version and the full-resolution mask made from the strokes (and the uploaded mask), as the
        /inpaint job's photo and mask; the mask is written to the output folder and issued to this session."""
        app = self.app
        language = self._language(request)
        with app._errors(request):
            current = self._current(history, language)
            strokes = parse_strokes(viewer)
            width, height = read_image_size(current["path"])
            from .handlers import _check_mask_pixels

            _check_mask_pixels(width, height, app.config.limits)
            base = None
            if history.get("uploaded"):
                base = mask_from_picture(open_upload(history["uploaded"], app.config.limits, "mask"))
            mask = strokes_mask(strokes, width, height, base=base)
            if not mask.any():
                raise InputError(say("nothing", language))
            path = save_mask(mask, app.config.output_dir, upload=shown_upload(current["path"])[0])
            from .handlers import _session

            app.gate.issue(path, _session(request))
            return self._pending(history, current, str(path))

    @staticmethod
    def _pending(history: dict[str, Any], current: dict[str, Any], mask: str) -> tuple[str, str]:
        """Remember what this run started from (the version and the mask): the result goes after that version,
        whatever the page did meanwhile, and the mask counts as "the last that ran" once the result is in."""
        history["pending"] = {"photo": history["versions"][0]["path"], "index": history["index"], "mask": mask}
        return current["path"], mask

    def rerun_mask(self, history: dict[str, Any] | None, request: gr.Request) -> tuple[str, str]:
        """The current version and the last mask that ran: the same removal again (after an undo, another model)."""
        language = self._language(request)
        with self.app._errors(request):
            current = self._current(history, language)
            if not history.get("mask"):
                raise InputError(say("no_mask", language))
            return self._pending(history, current, history["mask"])

    def push_result(self, result: str | None, history: dict[str, Any] | None,
                    request: gr.Request) -> tuple[str, dict[str, Any], str | None, None]:
        """The job's result becomes the next version after the one it ran on (versions undone before are
        dropped): the viewer compares the two; the mask that ran is offered for download; the mask upload box
        is emptied (an uploaded mask applies to one run)."""
        app = self.app
        language = self._language(request)
        with app._errors(request):
            self._current(history, language)
            # what the run started from (a re-stitch, which names no mask, starts from the version shown)
            pending = history.pop("pending", None) or {"photo": history["versions"][0]["path"],
                                                        "index": history["index"], "mask": history["mask"]}
            if pending["photo"] != history["versions"][0]["path"]:
                raise InputError(say("moved_on", language))  # another photo was opened while the job ran
            admitted = app._upload(result, request, "result")
            exact = working_copy_name(Path(admitted))  # a JPEG/WEBP result's lossless copy, when it has one
            if exact.is_file():
                admitted = app._upload(str(exact), request, "result")
            view = Path(admitted).parent / "view-after"
            load_pyramid(view)
            start = min(pending["index"], len(history["versions"]) - 1)
            before = history["versions"][start]
            del history["versions"][start + 1:]
            history["versions"].append({"path": admitted, "view": str(view)})
            history["index"] = len(history["versions"]) - 1
            history["uploaded"] = history["overlay"] = None
            history["mask"] = pending["mask"]
            note = say("result", language, index=history["index"] + 1, count=len(history["versions"]))
            value = self._show(history, before=load_pyramid(Path(before["view"])), note=note)
            return value, history, history["mask"], None

    def undo_result(self, history: dict[str, Any] | None, request: gr.Request) -> tuple[str, dict[str, Any], None]:
        """Back to the version before (the later ones stay, for Redo result)."""
        return self._step(history, -1, "first", request)

    def redo_result(self, history: dict[str, Any] | None, request: gr.Request) -> tuple[str, dict[str, Any], None]:
        """Forward to the version undone last."""
        return self._step(history, +1, "last", request)

    def _step(self, history: dict[str, Any] | None, step: int, edge: str,
              request: gr.Request) -> tuple[str, dict[str, Any], None]:
        language = self._language(request)
        with self.app._errors(request):
            self._current(history, language)
            index = history["index"] + step
            if not 0 <= index < len(history["versions"]):
                raise InputError(say(edge, language))
            history["index"] = index
            history["uploaded"] = history["overlay"] = None
            note = say("version", language, index=index + 1, count=len(history["versions"]))
            return self._show(history, note=note), history, None


def _fit_upload(mask: np.ndarray, width: int, height: int, language: str) -> np.ndarray:
    """The uploaded mask at the photo's size: scaled when only its resolution differs, refused otherwise."""
    mh, mw = mask.shape
    if (mw, mh) == (width, height):
        return mask
    if abs(mw / mh - width / height) > MASK_ASPECT_SLACK * width / height:
        raise InputError(say("mask_size", language, mw=mw, mh=mh, width=width, height=height))
    return fit_mask(mask, (height, width), resize=True)
