"""The local web UI: three tabs (Inpaint, Faces, Upscale) over the same task functions as the CLI.

Each tab: upload a photo (the original file is used, untouched, at full resolution; the page gets previews),
set a few options (more under "Advanced settings", built from the shared option schema), run, compare before and
after, download the full-resolution result. The jobs are the public Gradio API ``/inpaint``, ``/enhance`` and
``/upscale``: their first inputs are the photo (and, for ``/inpaint``, a mask of the same size), all other inputs
have defaults, so ``gradio_client`` can call them with the photo alone. The page calls the same endpoints; for
inpainting it first turns the brush strokes of the editor, painted on a preview, into a full-resolution mask.

Jobs run on Gradio's queue, one at a time per device (one concurrency group), with live progress and a Cancel
button that stops a job between two batches; a job whose client went away is cancelled the same way.

What a client sends is checked here, whatever the page allows: models are choices of one menu (the catalog and
the folders named at start, :mod:`.models`), never paths; photos and masks are files Gradio received
(:mod:`.uploads`); the mask editor's images are decoded by tessera (:mod:`.editor`); logins are throttled
(:mod:`.access`). See also :mod:`.jobs`, :mod:`.limits`, :mod:`.retention`.
"""
from __future__ import annotations

import contextlib
import html
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np
from starlette.middleware import Middleware

from ..engine import resolve_device
from ..errors import InputError
from ..options import (
    EngineOptions,
    FaceOptions,
    InpaintOptions,
    UpscaleOptions,
    parse_options,
)
from .access import LoginAttempts, LoginThrottle, PasswordCheck, check_exposure
from .controls import option_control, option_values
from .editor import guard_editor
from .i18n import language_of, make_i18n, t
from .jobs import (
    Job,
    JobBoard,
    ProgressBridge,
    memory_status,
    release_memory,
    upload_names,
    user_errors,
)
from .limits import (
    Limits,
    check_quality,
    check_result_fits,
    check_scale,
    check_upload,
    open_upload,
)
from .models import WEIGHT_FREE, ModelMenu
from .queue_events import client_gone_probe
from .results import (
    DEFAULT_PREVIEW_SIDE,
    OUTPUT_FORMATS,
    compare_pair,
    draw_faces,
    preview,
    save_mask,
    save_result,
)
from .uploads import UploadGate
from .wording import NOT_ON_PAGE

DEVICE_GROUP = "device"   # the concurrency group of jobs that use the device: one at a time
SCALES = ["auto", "1", "1.5", "2", "3", "4", "6", "8"]
UNKNOWN_MODEL_SCALE = 4.0  # for the memory check, the factor assumed of a weight file the catalog does not know
PROGRESS = gr.Progress()  # marks a job's progress parameter: Gradio passes a fresh tracker to each call
BRUSH = ("#ff3c8c", 0.6)  # see-through, so the photo shows under the strokes; any paint counts as mask

ENGINE_FIELDS = ("device", "precision", "max_memory", "tile", "tile_pad", "tile_batch", "blend")
INPAINT_FIELDS = ("strategy", "crop_margin", "max_size", "grow", "feather")
FACE_MAIN_FIELDS = ("upscale", "strength", "faces")
_NOT_IN_WEB = {*NOT_ON_PAGE, "model", "background"}  # not in Advanced: no control, or one on the tab itself


@dataclass(frozen=True)
class WebConfig:
    """What the app needs to know: where results go, how long they stay, the limits, the preview size.

    ``model_dir`` is the model cache (catalog models); ``model_folders`` are the folders whose weight files are
    offered too (``tessera serve --models-from DIR``). ``login_free_tries`` failed logins per client address are
    allowed before it must wait ``login_first_delay`` seconds, doubling with each further failure.
    """

    output_dir: Path
    keep_days: float = 7.0
    limits: Limits = field(default_factory=Limits)
    preview_side: int = DEFAULT_PREVIEW_SIDE
    model_dir: Path | None = None
    model_folders: tuple[Path, ...] = ()
    queue_size: int = 64
    editor_height: int = 540  # px of the mask editor on the page (its canvas is redrawn on every brush move)
    login_free_tries: int = 5
    login_first_delay: float = 2.0


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


def _model_or_none(value: str) -> str | None:
    """The dropdowns' weight-free entries mean "no network"."""
    return None if value in (WEIGHT_FREE, "lanczos") else value


class WebApp:
    """The handlers of one app. Holds only app-wide things (config, job board, default device): no per-call state."""

    def __init__(self, config: WebConfig):
        self.config = config
        self.board = JobBoard()
        self.device = resolve_device("auto")
        self.menu = ModelMenu(config.model_dir, config.model_folders)
        self.gate = UploadGate()
        self._device_turn = threading.Lock()

    # ------------------------------------------------------------------------------------------- helpers

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

    def _finish(self, picture: Any, result: Any, *, upload: str, task: str, fmt: str, quality: Any,
                status: str) -> tuple[str, tuple[np.ndarray, np.ndarray], str]:
        path = save_result(result, self.config.output_dir, upload=Path(upload).name, task=task, fmt=fmt,
                           quality=int(quality))
        pair = compare_pair(picture.pixels, result.pixels, self.config.preview_side)
        size = f"{picture.width}×{picture.height} → {result.width}×{result.height}"
        return str(path), pair, html.escape(f"✓ {size} · {status} · {path.name}")

    # ------------------------------------------------------------------------------------------- jobs

    def upscale_job(self, image: str | None, request: gr.Request, progress: Any = PROGRESS,
                    **values: Any) -> tuple[str, tuple[np.ndarray, np.ndarray], str]:
        """Upscale the photo; return the result file, a before/after pair of previews and a status line."""
        from ..models.catalog import find_entry
        from ..tasks.upscale import WEIGHT_FREE_DEFAULT_SCALE, upscale

        fmt, quality = values.pop("format", "PNG"), values.pop("quality", 95)
        model_choice = values.pop("model", "lanczos")
        scale_text = str(values.pop("scale", "auto") or "auto").strip().lower()
        with self._job("upscale", request, image) as job:
            model = _model_or_none(self.menu.resolve("upscale", model_choice))
            scale = None if scale_text == "auto" else _number(scale_text, "scale")
            check_scale(scale)
            check_quality(quality)
            options = option_values(UpscaleOptions, values)
            parse_options(UpscaleOptions, options, model=model, scale=scale)  # before the upload is decoded
            started = time.perf_counter()
            picture = open_upload(self._upload(image, request), self.config.limits)
            entry = find_entry(Path(model).name) if model else None  # a folder file may carry a catalog name
            expected = WEIGHT_FREE_DEFAULT_SCALE if model is None else entry.scale if entry else UNKNOWN_MODEL_SCALE
            check_result_fits(picture, scale or expected)
            reports: list[Any] = []
            result = upscale(picture, model=model, scale=scale, progress=self._bridge(progress, values),
                             cancel=job.cancel, model_dir=self.config.model_dir, report=reports, **options)
            report = reports[0]
            name = f"{report.model}" + (" (weight-free)" if report.weight_free else "")
            return self._finish(picture, result, upload=image, task="upscaled", fmt=fmt, quality=quality,
                                status=f"{name} · {_seconds(started)}")

    def enhance_job(self, image: str | None, request: gr.Request, progress: Any = PROGRESS,
                    **values: Any) -> tuple[str, tuple[np.ndarray, np.ndarray], str]:
        """Detect and restore the faces; return the result file, before/after previews and a status line."""
        from ..tasks.faces import enhance_faces

        fmt, quality = values.pop("format", "PNG"), values.pop("quality", 95)
        model_choice = values.pop("model", WEIGHT_FREE)
        background_choice = values.pop("background", "auto")
        with self._job("enhance", request, image) as job:
            model = _model_or_none(self.menu.resolve("face", model_choice))
            background = self.menu.resolve("background", background_choice)
            check_quality(quality)
            options = option_values(FaceOptions, values)
            factor = parse_options(FaceOptions, options).upscale  # before the upload is decoded
            started = time.perf_counter()
            picture = open_upload(self._upload(image, request), self.config.limits)
            check_result_fits(picture, factor)
            reports: list[Any] = []
            result = enhance_faces(picture, model=model, background=background,
                                   progress=self._bridge(progress, values), cancel=job.cancel,
                                   model_dir=self.config.model_dir, report=reports, **options)
            report = reports[0]
            return self._finish(picture, result, upload=image, task="enhanced", fmt=fmt, quality=quality,
                                status=f"{len(report.faces)} face(s) · {report.model} · {_seconds(started)}")

    def inpaint_job(self, image: str | None, mask: str | None, request: gr.Request,
                    progress: Any = PROGRESS, **values: Any) -> tuple[str, tuple[np.ndarray, np.ndarray], str]:
        """Fill the mask's white (or opaque) pixels; return the result file, before/after previews, a status."""
        from ..tasks.inpaint import inpaint

        fmt, quality = values.pop("format", "PNG"), values.pop("quality", 95)
        model_choice = values.pop("model", "auto")
        with self._job("inpaint", request, image, mask) as job:
            model = self.menu.resolve("inpaint", model_choice)
            check_quality(quality)
            options = option_values(InpaintOptions, values)
            parse_options(InpaintOptions, options, model=model)  # before the uploads are decoded
            started = time.perf_counter()
            picture = open_upload(self._upload(image, request), self.config.limits)
            mask_picture = open_upload(self._upload(mask, request, "mask"), self.config.limits, "mask")
            reports: list[Any] = []
            result = inpaint(picture, mask_picture, model=model, progress=self._bridge(progress, values),
                             cancel=job.cancel, model_dir=self.config.model_dir, report=reports, **options)
            report = reports[0]
            note = f" · {report.fallback}" if report.fallback else ""
            return self._finish(picture, result, upload=image, task="inpainted", fmt=fmt, quality=quality,
                                status=f"{report.describe()} · {_seconds(started)}{note}")

    def cancel(self, request: gr.Request) -> str:
        """Stop the running jobs of the caller's session at their next batch."""
        count = self.board.cancel(_session(request))
        return f"cancelling {count} job(s): stops at the next batch" if count else "no running job"

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
        from ..image import read_image_size

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
        status = memory_status(self.device)
        return status.describe(), gr.update(visible=status.high)

    # ------------------------------------------------------------------------------------------- layout

    def build(self) -> gr.Blocks:
        """The page. Event names: /upscale, /enhance, /inpaint (public API) and /cancel."""
        keep = max(3600, int(self.config.keep_days * 86400))
        with gr.Blocks(title="tessera", analytics_enabled=False, delete_cache=(3600, min(keep, 86400))) as blocks:
            with gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    gr.Markdown(t("app.title"), elem_id="app-title")
                    gr.Markdown(t("app.intro"))
                    gr.Markdown(t("app.language_hint"), elem_classes=["hint"])
                with gr.Column(scale=1, min_width=240):
                    memory_box = gr.Textbox(label=t("app.memory"), interactive=False, elem_id="memory",
                                            value=memory_status(self.device).describe())
                    memory_warning = gr.Markdown(t("app.memory_high"), visible=False, elem_id="memory-warning")
            with gr.Tabs():
                with gr.Tab(t("tab.inpaint"), id="inpaint", elem_id="tab-inpaint"):
                    inpaint_parts = self._inpaint_tab()
                with gr.Tab(t("tab.faces"), id="faces", elem_id="tab-faces"):
                    faces_parts = self._faces_tab()
                with gr.Tab(t("tab.upscale"), id="upscale", elem_id="tab-upscale"):
                    upscale_parts = self._upscale_tab()
            advanced = self._advanced()
            self._wire(inpaint_parts, faces_parts, upscale_parts, advanced)
            timer = gr.Timer(3.0)
            timer.tick(self.memory, outputs=[memory_box, memory_warning], queue=False, show_progress="hidden",
                       api_visibility="private")
        return blocks

    def _output_controls(self, prefix: str) -> tuple[Any, Any]:
        with gr.Row():
            fmt = gr.Dropdown(list(OUTPUT_FORMATS), value="PNG", label=t("format"), elem_id=f"{prefix}-format")
            quality = gr.Slider(1, 100, value=95, step=1, label=t("quality"), elem_id=f"{prefix}-quality")
        return fmt, quality

    def _result_column(self, prefix: str) -> tuple[Any, Any, Any]:
        compare = gr.ImageSlider(label=t("compare"), type="numpy", interactive=False, elem_id=f"{prefix}-compare",
                                 max_height=640)
        result = gr.File(label=t("result"), interactive=False, elem_id=f"{prefix}-result")
        status = gr.Markdown(elem_id=f"{prefix}-status")
        return result, compare, status

    def _buttons(self, run_key: str, prefix: str) -> tuple[Any, Any]:
        with gr.Row():
            run = gr.Button(t(run_key), variant="primary", elem_id=f"{prefix}-run")
            cancel = gr.Button(t("cancel"), variant="stop", elem_id=f"{prefix}-cancel")
        return run, cancel

    def _photo(self, prefix: str) -> Any:
        return gr.File(label=t("photo"), file_types=["image"], type="filepath", elem_id=f"{prefix}-photo",
                       height=120)

    def _inpaint_tab(self) -> dict[str, Any]:
        parts: dict[str, Any] = {}
        with gr.Row():
            with gr.Column():
                parts["photo"] = self._photo("inpaint")
                parts["editor"] = guard_editor(gr.ImageEditor(
                    label=t("editor"), type="numpy", image_mode="RGBA", sources=[], transforms=[], layers=False,
                    brush=gr.Brush(colors=[BRUSH], default_color=BRUSH, color_mode="fixed"),
                    eraser=gr.Eraser(), elem_id="inpaint-editor", height=self.config.editor_height,
                    canvas_size=(self.config.preview_side, self.config.preview_side)))
                parts["model"] = option_control(InpaintOptions, "model", choices=self.menu.choices("inpaint"))
                parts["format"], parts["quality"] = self._output_controls("inpaint")
                parts["run"], parts["cancel"] = self._buttons("run.inpaint", "inpaint")
                parts["mask"] = gr.File(visible=False, elem_id="inpaint-mask")
            with gr.Column():
                parts["result"], parts["compare"], parts["status"] = self._result_column("inpaint")
        return parts

    def _faces_tab(self) -> dict[str, Any]:
        parts: dict[str, Any] = {}
        with gr.Row():
            with gr.Column():
                parts["photo"] = self._photo("faces")
                parts["detected"] = gr.Image(label=t("detected"), interactive=False, type="numpy",
                                             elem_id="faces-detected", height=360)
                parts["count"] = gr.Textbox(label=t("faces_found"), interactive=False, elem_id="faces-count")
                parts["found"] = gr.State(None)
                parts["model"] = option_control(FaceOptions, "model", value=WEIGHT_FREE,
                                                choices=self.menu.choices("face"))
                parts["background"] = option_control(FaceOptions, "background",
                                                     choices=self.menu.choices("background"))
                for name in FACE_MAIN_FIELDS:
                    parts[name] = option_control(FaceOptions, name)
                parts["format"], parts["quality"] = self._output_controls("faces")
                parts["run"], parts["cancel"] = self._buttons("run.enhance", "faces")
            with gr.Column():
                parts["result"], parts["compare"], parts["status"] = self._result_column("faces")
        return parts

    def _upscale_tab(self) -> dict[str, Any]:
        parts: dict[str, Any] = {}
        with gr.Row():
            with gr.Column():
                parts["photo"] = self._photo("upscale")
                parts["model"] = option_control(UpscaleOptions, "model", value="lanczos",
                                                choices=self.menu.choices("upscale"))
                parts["scale"] = option_control(UpscaleOptions, "scale", choices=SCALES, value="auto",
                                                allow_custom_value=True)  # any factor up to 8, checked by the job
                parts["sharpen"] = option_control(UpscaleOptions, "sharpen")
                parts["format"], parts["quality"] = self._output_controls("upscale")
                parts["run"], parts["cancel"] = self._buttons("run.upscale", "upscale")
            with gr.Column():
                parts["result"], parts["compare"], parts["status"] = self._result_column("upscale")
        return parts

    def _advanced(self) -> dict[str, Any]:
        """One collapsed accordion with the engine, inpainting and face options (defaults: auto)."""
        controls: dict[str, Any] = {}
        devices = ["auto", "cpu"]
        try:
            import torch

            devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
            devices += ["mps"] if torch.backends.mps.is_available() else []
        except (ImportError, RuntimeError):
            pass
        with gr.Accordion(t("advanced"), open=False, elem_id="advanced"):
            gr.Markdown(t("advanced.engine"))
            with gr.Row():
                controls["device"] = option_control(EngineOptions, "device", choices=devices)
                controls["precision"] = option_control(EngineOptions, "precision")
                controls["max_memory"] = option_control(EngineOptions, "max_memory")
            with gr.Row():
                for name in ENGINE_FIELDS[3:]:
                    controls[name] = option_control(EngineOptions, name)
            gr.Markdown(t("advanced.inpaint"))
            with gr.Row():
                for name in INPAINT_FIELDS:
                    controls[name] = option_control(InpaintOptions, name)
            gr.Markdown(t("advanced.faces"))
            fields = face_advanced_fields()
            switches = [name for name in fields if FaceOptions.model_fields[name].annotation is bool]
            with gr.Row():
                for name in fields:
                    if name not in switches:
                        controls[name] = option_control(FaceOptions, name)
            with gr.Row():
                for name in switches:
                    controls[name] = option_control(FaceOptions, name)
        return controls

    def _wire(self, inpaint: dict[str, Any], faces: dict[str, Any], upscale: dict[str, Any],
              advanced: dict[str, Any]) -> None:
        engine = {name: advanced[name] for name in ENGINE_FIELDS}
        job = {"concurrency_id": DEVICE_GROUP, "concurrency_limit": 1, "show_progress": "full"}

        # Upscale
        upscale_event = upscale["run"].click(
            self.upscale_job, inputs=[upscale["photo"]],
            inputs_kwargs={**{k: upscale[k] for k in ("model", "scale", "sharpen", "format", "quality")}, **engine},
            outputs=[upscale["result"], upscale["compare"], upscale["status"]], api_name="upscale", **job)
        upscale["cancel"].click(self.cancel, outputs=[upscale["status"]], cancels=[upscale_event], queue=False,
                                api_name="cancel")

        # Faces
        face_options = {name: advanced[name] for name in face_advanced_fields()}
        faces["photo"].change(self.detect, inputs=[faces["photo"]], inputs_kwargs=face_options,
                              outputs=[faces["detected"], faces["count"], faces["found"]], api_visibility="private",
                              concurrency_id="detect", concurrency_limit=1)
        faces["detected"].select(self.toggle_face, inputs=[faces["found"], faces["faces"]],
                                 outputs=[faces["faces"], faces["detected"]], api_visibility="private", queue=False)
        enhance_event = faces["run"].click(
            self.enhance_job, inputs=[faces["photo"]],
            inputs_kwargs={**{k: faces[k] for k in ("model", "background", *FACE_MAIN_FIELDS, "format", "quality")},
                           **face_options, **engine},
            outputs=[faces["result"], faces["compare"], faces["status"]], api_name="enhance", **job)
        faces["cancel"].click(self.cancel, outputs=[faces["status"]], cancels=[enhance_event], queue=False,
                              api_visibility="private")

        # Inpaint: strokes -> full-resolution mask file -> the /inpaint job
        inpaint["photo"].change(self.editor_preview, inputs=[inpaint["photo"]], outputs=[inpaint["editor"]],
                                api_visibility="private", concurrency_id="preview", concurrency_limit=1)
        inpaint_event = inpaint["run"].click(
            self.prepare_mask, inputs=[inpaint["photo"], inpaint["editor"]], outputs=[inpaint["mask"]],
            api_visibility="private", concurrency_id="prepare", concurrency_limit=1, show_progress="minimal",
        ).success(
            self.inpaint_job, inputs=[inpaint["photo"], inpaint["mask"]],
            inputs_kwargs={**{k: inpaint[k] for k in ("model", "format", "quality")},
                           **{name: advanced[name] for name in INPAINT_FIELDS}, **engine},
            outputs=[inpaint["result"], inpaint["compare"], inpaint["status"]], api_name="inpaint", **job)
        inpaint["cancel"].click(self.cancel, outputs=[inpaint["status"]], cancels=[inpaint_event], queue=False,
                                api_visibility="private")


def face_at(faces: list[Any], x: float, y: float) -> int | None:
    """The index of the face whose box holds the point (x, y), the smallest such box where boxes overlap."""
    inside = [(face.width * face.height, index) for index, face in enumerate(faces)
              if face.box[0] <= x <= face.box[2] and face.box[1] <= y <= face.box[3]]
    return min(inside)[1] if inside else None


def face_advanced_fields() -> list[str]:
    """FaceOptions fields of the Advanced accordion: all but the engine's, the tab's own and file outputs."""
    engine = set(EngineOptions.model_fields)
    return [name for name in FaceOptions.model_fields
            if name not in engine and name not in FACE_MAIN_FIELDS and name not in _NOT_IN_WEB]


def _check_mask_pixels(width: int, height: int, limits: Limits) -> None:
    """The mask is made at the photo's size: refuse a photo over the pixel limit before allocating it."""
    from ..errors import ImageTooLargeError

    if width * height > limits.max_pixels:
        raise ImageTooLargeError(f"the photo has {width}x{height} = {width * height:,} pixels, over this server's "
                                 f"limit of {limits.max_pixels:,} pixels")


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InputError(f"{what} must be a number or auto, got {text!r}") from None


def editor_strokes(editor: dict[str, Any] | None) -> np.ndarray | None:
    """The union of the editor's painted layers as a boolean mask at the editor's size, or None if unpainted."""
    if not editor:
        return None
    strokes = None
    for layer in editor.get("layers") or []:
        if layer is None:
            continue
        layer = np.asarray(layer)
        painted = layer[:, :, 3] > 0 if layer.ndim == 3 and layer.shape[2] == 4 else layer.reshape(
            layer.shape[0], layer.shape[1], -1).max(axis=2) > 0
        strokes = painted if strokes is None else strokes | painted
    if strokes is None or not strokes.any():
        return None
    return strokes


def scale_mask(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """A boolean mask resized to ``width`` x ``height``: bilinear on 0/255 then halved, so edges stay smooth."""
    if mask.shape == (height, width):
        return mask.copy()
    values = cv2.resize(mask.astype(np.uint8) * np.uint8(255), (width, height), interpolation=cv2.INTER_LINEAR)
    return values >= 128


def build_app(config: WebConfig) -> tuple[gr.Blocks, WebApp]:
    """The Gradio Blocks (queue configured) and the handlers behind it."""
    app = WebApp(config)
    blocks = app.build()
    blocks.queue(default_concurrency_limit=1, max_size=config.queue_size)
    return blocks, app


def theme() -> Any:
    """Gradio's default look with system fonts: the page loads nothing from the internet."""
    system = ["ui-sans-serif", "system-ui", "sans-serif"]
    return gr.themes.Default(font=system, font_mono=["ui-monospace", "monospace"])


CSS = ".hint { opacity: 0.7; font-size: 0.85em; } #memory-warning { color: #c2410c; font-weight: 600; }"


def launch(blocks: gr.Blocks, config: WebConfig, *, host: str = "127.0.0.1", port: int | None = 7860,
           auth: tuple[str, str] | None = None, insecure: bool = False, prevent_thread_lock: bool = False,
           quiet: bool = False) -> Any:
    """Start the server (blocking unless ``prevent_thread_lock``); results may be downloaded from the output dir.

    A non-loopback ``host`` needs ``auth`` or ``insecure`` (see :mod:`.access`).
    """
    check_exposure(host, auth, insecure)
    # Results are served from the output folder as they are, not copied into Gradio's cache (a second copy of
    # every full-resolution result on disk). Like allowed_paths, this lets a logged-in user fetch them; jobs
    # still refuse them as inputs (see .uploads).
    gr.set_static_paths([str(config.output_dir)])
    app_kwargs: dict[str, Any] = {}
    password = None
    if auth is not None:
        password = PasswordCheck(*auth)
        attempts = LoginAttempts(free_tries=config.login_free_tries, first_delay=config.login_first_delay)
        app_kwargs["middleware"] = [Middleware(LoginThrottle, attempts=attempts)]
    return blocks.launch(
        server_name=host, server_port=port, auth=password, share=False, inbrowser=False, show_error=True,
        max_file_size=config.limits.max_upload_bytes, allowed_paths=[str(config.output_dir)],
        prevent_thread_lock=prevent_thread_lock, quiet=quiet, i18n=make_i18n(), theme=theme(), css=CSS,
        footer_links=["api", "settings"], app_kwargs=app_kwargs)
