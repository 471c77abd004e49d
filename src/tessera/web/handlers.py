"""What the page's events do: the jobs (/upscale, /enhance, /inpaint), /cancel and the page helpers.

The three jobs are one flow over the task registry (:mod:`tessera.tasks.registry`): turn the client's model
choices into models through the menu (never a path a client sent), read the other controls into the task's
options and validate them with the shared schema before any upload is decoded, open the upload(s), refuse a
result that would not fit in memory (its factor from the task's own :meth:`~tessera.tasks.registry.Task.output_scale`),
run the task, save the result and say what was done. What differs between the tasks is declared once in
:data:`JOBS`: the options chosen from a model menu, the options the page reads its own way, the status line.

A :class:`WebApp` holds only app-wide things (config, job board, menu, device): one app serves any number of
sessions; per-call state lives in the call.
"""
from __future__ import annotations

import contextlib
import html
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from ..engine.runtime import resolve_device
from ..errors import ImageTooLargeError, InputError
from ..options import FaceOptions, parse_options
from ..tasks.registry import get_task
from .config import WebConfig
from .controls import option_values
from .editor import editor_strokes, scale_mask
from .i18n import language_of
from .jobs import Job, JobBoard, ProgressBridge, memory_status, release_memory, upload_names, user_errors
from .limits import Limits, check_quality, check_result_fits, check_scale, check_upload, open_upload
from .models import WEIGHT_FREE, ModelMenu
from .queue_events import client_gone_probe
from .results import compare_pair, draw_faces, preview, save_mask, save_result
from .uploads import UploadGate

PROGRESS = gr.Progress()  # marks a job's progress parameter: Gradio passes a fresh tracker to each call

JobOutput = tuple[str, tuple[np.ndarray, np.ndarray], str]  # the result file, a before/after pair, a status line


# ----------------------------------------------------------------------------------------------- per task


@dataclass(frozen=True)
class MenuOption:
    """An option whose value the client chooses from a model menu (:class:`.models.ModelMenu`).

    ``slot``: the menu; ``default``: the choice when the client sends none (and the dropdown's initial value);
    ``no_network``: the menu's entry that the task receives as None ("no network"), if there is one.
    """

    slot: str
    default: str
    no_network: str | None = None


@dataclass(frozen=True)
class JobKind:
    """What the web UI adds to one registry task: the options chosen from model menus, a reader for the options
    the page takes its own way (values it pops from the controls' values), and the status line of a finished job
    (from the task's report and the time it took)."""

    task: str
    menus: dict[str, MenuOption]
    status: Callable[[Any, str], str]
    page_options: Callable[[dict[str, Any]], dict[str, Any]] = field(default=lambda values: {})


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{what} must be a number or auto, got {text!r}") from None


def _upscale_scale(values: dict[str, Any]) -> dict[str, Any]:
    """The Scale box, a menu that takes typed factors: "auto" (the model's own factor) or a number up to the web
    UI's limit (:func:`.limits.check_scale`)."""
    text = str(values.pop("scale", "auto") or "auto").strip().lower()
    scale = None if text == "auto" else _number(text, "scale")
    check_scale(scale)
    return {"scale": scale}


def _upscale_status(report: Any, elapsed: str) -> str:
    return f"{report.model}" + (" (weight-free)" if report.weight_free else "") + f" · {elapsed}"


def _enhance_status(report: Any, elapsed: str) -> str:
    return f"{len(report.faces)} face(s) · {report.model} · {elapsed}"


def _inpaint_status(report: Any, elapsed: str) -> str:
    note = f" · {report.fallback}" if report.fallback else ""
    return f"{report.describe()} · {elapsed}{note}"


JOBS: dict[str, JobKind] = {
    "upscale": JobKind("upscale", {"model": MenuOption("upscale", "lanczos", no_network="lanczos")},
                       _upscale_status, _upscale_scale),
    "enhance": JobKind("enhance", {"model": MenuOption("face", WEIGHT_FREE, no_network=WEIGHT_FREE),
                                   "background": MenuOption("background", "auto")}, _enhance_status),
    "inpaint": JobKind("inpaint", {"model": MenuOption("inpaint", "auto")}, _inpaint_status),
}

# ----------------------------------------------------------------------------------------------- helpers


def _session(request: gr.Request | None) -> str:
    return getattr(request, "session_hash", None) or ""


def _language(request: gr.Request | None) -> str:
    """The page's language for server-made messages, from the browser's Accept-Language header."""
    try:
        headers = getattr(request, "headers", None) or {}
        return language_of(headers.get("accept-language"))
    except (AttributeError, TypeError):  # a call without an HTTP request (tests, embedding)
        return "en"


def _seconds(started: float) -> str:
    return f"{time.perf_counter() - started:.1f} s"


def face_at(faces: list[Any], x: float, y: float) -> int | None:
    """The index of the face whose box holds the point (x, y), the smallest such box where boxes overlap."""
    inside = [(face.width * face.height, index) for index, face in enumerate(faces)
              if face.box[0] <= x <= face.box[2] and face.box[1] <= y <= face.box[3]]
    return min(inside)[1] if inside else None


def _check_mask_pixels(width: int, height: int, limits: Limits) -> None:
    """The mask is made at the photo's size: refuse a photo over the pixel limit before allocating it."""
    if width * height > limits.max_pixels:
        raise ImageTooLargeError(f"the photo has {width}x{height} = {width * height:,} pixels, over this server's "
                                 f"limit of {limits.max_pixels:,} pixels")


class WebApp:
    """The handlers of one app. Holds only app-wide things (config, job board, default device): no per-call state."""

    def __init__(self, config: WebConfig):
        self.config = config
        self.board = JobBoard()
        self.device = resolve_device("auto")
        self.menu = ModelMenu(config.model_dir, config.model_folders)
        self.gate = UploadGate()
        self._device_turn = threading.Lock()

    # ------------------------------------------------------------------------------------------- jobs

    def upscale_job(self, image: str | None, request: gr.Request, progress: Any = PROGRESS,
                    **values: Any) -> JobOutput:
        """Upscale the photo; return the result file, a before/after pair of previews and a status line."""
        return self._run(JOBS["upscale"], request, progress, values, image)

    def enhance_job(self, image: str | None, request: gr.Request, progress: Any = PROGRESS,
                    **values: Any) -> JobOutput:
        """Detect and restore the faces; return the result file, before/after previews and a status line."""
        return self._run(JOBS["enhance"], request, progress, values, image)

    def inpaint_job(self, image: str | None, mask: str | None, request: gr.Request,
                    progress: Any = PROGRESS, **values: Any) -> JobOutput:
        """Fill the mask's white (or opaque) pixels; return the result file, before/after previews, a status."""
        return self._run(JOBS["inpaint"], request, progress, values, image, mask)

    def _run(self, kind: JobKind, request: gr.Request | None, progress: Any, values: dict[str, Any],
             image: str | None, mask: str | None = None) -> JobOutput:
        """The flow every job shares (see the module's docstring); ``values`` are the controls' values."""
        task = get_task(kind.task)
        fmt, quality = values.pop("format", "PNG"), values.pop("quality", 95)
        chosen = {option: values.pop(option, menu.default) for option, menu in kind.menus.items()}
        with self._job(task.name, request, image, mask) as job:
            models = {option: self._model(menu, chosen[option]) for option, menu in kind.menus.items()}
            page = kind.page_options(values)
            check_quality(quality)
            options = {**option_values(task.schema, values), **models, **page}
            checked = parse_options(task.schema, options)  # before the upload is decoded
            started = time.perf_counter()
            picture = open_upload(self._upload(image, request), self.config.limits)
            mask_picture = (open_upload(self._upload(mask, request, "mask"), self.config.limits, "mask")
                            if task.takes_mask else None)
            check_result_fits(picture, task.output_scale(checked.model_dump(), {}))
            result = task.run(picture, mask=mask_picture, progress=self._bridge(progress, values),
                              cancel=job.cancel, model_dir=self.config.model_dir, **options)
            return self._finish(picture, result.image, upload=image, done_word=task.done_word, fmt=fmt,
                                quality=quality, status=kind.status(result.report, _seconds(started)))

    def cancel(self, request: gr.Request) -> str:
        """Stop the running jobs of the caller's session at their next batch."""
        count = self.board.cancel(_session(request))
        return f"cancelling {count} job(s): stops at the next batch" if count else "no running job"

    # ------------------------------------------------------------------------------------------- job parts

    def _model(self, menu: MenuOption, choice: Any) -> str | None:
        """What the task receives for the client's menu ``choice`` (checked by the menu: never a client's path)."""
        value = self.menu.resolve(menu.slot, choice)
        return None if value == menu.no_network else value

    def _names(self, *uploads: str | None) -> dict[str, str]:
        """Server paths -> names for messages: the uploads' and the model folders' files."""
        return {**self.menu.display_names(), **upload_names(*uploads)}

    @contextlib.contextmanager
    def _errors(self, request: gr.Request | None, *uploads: str | None) -> Iterator[None]:
        with user_errors(self._names(*uploads), language=_language(request)):
            yield

    @contextlib.contextmanager
    def _job(self, task: str, request: gr.Request | None, *uploads: str | None) -> Iterator[Job]:
        """A job on the board, its errors shown as one line, its memory handed back when it ends.

        The job is cancelled when its client goes away (see :func:`.queue_events.client_gone_probe`). Jobs take
        turns on a lock as well as in Gradio's concurrency group: Gradio frees the group's slot as soon as an event
        is cancelled, while the cancelled function still runs until its next batch.
        """
        with self._errors(request, *uploads), self._device_turn:
            try:
                with self.board.run(task, _session(request), client_gone=client_gone_probe()) as job:
                    yield job
            finally:
                release_memory(self.device)

    def _upload(self, path: str | None, request: gr.Request | None, what: str = "photo") -> str | None:
        """The path of a file Gradio received for this request (see :class:`.uploads.UploadGate`)."""
        admitted = self.gate.admit(path, _session(request), what)
        return None if admitted is None else str(admitted)

    def _bridge(self, progress: Any, values: dict[str, Any]) -> ProgressBridge:
        try:
            device = resolve_device(values.get("device") or "auto")
        except InputError:
            device = None  # the task reports the bad device as an option error
        return ProgressBridge(progress, device)

    def _finish(self, picture: Any, result: Any, *, upload: str, done_word: str, fmt: str, quality: Any,
                status: str) -> JobOutput:
        path = save_result(result, self.config.output_dir, upload=Path(upload).name, task=done_word, fmt=fmt,
                           quality=int(quality))
        pair = compare_pair(picture.pixels, result.pixels, self.config.preview_side)
        size = f"{picture.width}×{picture.height} → {result.width}×{result.height}"
        return str(path), pair, html.escape(f"✓ {size} · {status} · {path.name}")

    # ------------------------------------------------------------------------------------------- page helpers

    def editor_preview(self, image: str | None, request: gr.Request) -> dict[str, Any] | None:
        """The photo as the mask editor's background: a preview no larger than ``preview_side``."""
        if not image:
            return None
        with self._errors(request, image):
            picture = open_upload(self._upload(image, request), self.config.limits)
            return {"background": preview(picture.pixels, self.config.preview_side), "layers": [],
                    "composite": None}

    def prepare_mask(self, image: str | None, editor: dict[str, Any] | None, request: gr.Request) -> str:
        """Turn the strokes painted on the preview into a mask file at the photo's full resolution.

        The mask is written to the output folder and handed back as the /inpaint job's mask: the upload gate
        admits it for this session only.
        """
        from ..image.read import read_image_size

        with self._errors(request, image):
            photo = check_upload(self._upload(image, request), self.config.limits)
            strokes = editor_strokes(editor)
            if strokes is None:
                raise InputError("paint over what to remove first (brush tool)")
            width, height = read_image_size(photo)
            _check_mask_pixels(width, height, self.config.limits)
            mask = scale_mask(strokes, width, height)
            path = save_mask(mask, self.config.output_dir, upload=photo.name)
            self.gate.issue(path, _session(request))
            return str(path)

    def detect(self, image: str | None, request: gr.Request,
               **values: Any) -> tuple[np.ndarray | None, str, dict[str, Any] | None]:
        """Find the faces and draw them on a preview (index, box, score, landmarks); the third value, kept in the
        page's session state, holds the faces in preview pixels and the clean preview, for :meth:`toggle_face`."""
        from ..tasks.faces import find_faces

        if not image:
            return None, "", None
        with self._errors(request, image):
            picture = open_upload(self._upload(image, request), self.config.limits)
            opts = parse_options(FaceOptions, option_values(FaceOptions, values))
            faces = find_faces(picture.pixels, opts)  # the order enhance's "faces" indices refer to
            clean = preview(picture.pixels, self.config.preview_side)
            factor = clean.shape[1] / picture.pixels.shape[1]
            found = {"faces": [face.mapped(factor) for face in faces], "preview": clean}
            return draw_faces(clean, found["faces"], self.config.preview_side), f"{len(faces)}", found

    def toggle_face(self, found: dict[str, Any] | None, chosen: str | None, request: gr.Request,
                    event: gr.SelectData) -> tuple[str, Any]:
        """A click on the detected-faces preview: add the face under it to the "faces" field, or take it out;
        the preview is redrawn with the chosen faces in another colour."""
        if not found or not isinstance(getattr(event, "index", None), (list, tuple)):
            return chosen or "", gr.update()
        with self._errors(request):
            indices = set(parse_options(FaceOptions, faces=chosen or None).faces or [])
            hit = face_at(found["faces"], *event.index[:2])
            if hit is None:
                return chosen or "", gr.update()
            indices ^= {hit}
            image = draw_faces(found["preview"], found["faces"], self.config.preview_side, chosen=indices)
            return ",".join(str(index) for index in sorted(indices)), image

    def memory(self) -> tuple[str, Any]:
        """The memory box's text and whether its warning shows (over 90% in use)."""
        status = memory_status(self.device)
        return status.describe(), gr.update(visible=status.high)
