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
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gradio as gr
import numpy as np

from ..engine.runtime import resolve_device
from ..image.write import save_image
from ..errors import CancelledError, ImageTooLargeError, InputError
from ..options import FaceOptions, parse_options
from ..tasks.registry import get_task
from .config import WebConfig
from .controls import option_values
from .i18n import request_language
from .job_progress import ProgressBridge
from .jobs import Job, JobBoard, release_memory, upload_names, user_errors
from .limits import Limits, check_quality, check_result_fits, check_scale, open_upload
from .models import WEIGHT_FREE, ModelMenu
from .queue_events import client_gone_probe
from .results import LOSSY_FORMATS, draw_faces, preview, save_result
from .viewer import compare_value
from .uploads import UploadGate

PROGRESS = gr.Progress()  # marks a job's progress parameter: Gradio passes a fresh tracker to each call

JobOutput = tuple[str, str, str]  # the result file, the viewer's before/after value (see .viewer), a status line


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


# the page's words for the CLI's "LaMa weights are not in the cache (<server path>) ... run tessera models pull"
LAMA_FALLBACK = ("LaMa's weights are not on this server: the weight-free method ran instead; whoever runs the "
                 "server can fetch them with `tessera models pull big-lama`")


def _inpaint_status(report: Any, elapsed: str) -> str:
    note = f" · {LAMA_FALLBACK}" if report.fallback else ""
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
    """The page's language for server-made messages: the page's language cookie (``tessera_lang``, set by its
    language switch), else the browser's Accept-Language header (see :func:`.i18n.request_language`)."""
    try:
        headers = getattr(request, "headers", None) or {}
        return request_language(headers.get("cookie"), headers.get("accept-language"))
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
        """Fill the mask's white (or opaque) pixels; return the result file, the before/after viewer value, a
        status, and (with "Save regions for hand editing") a .zip of the regions and their manifest."""
        from .regions import CHECKBOX_INPUT, job_regions

        archive: list[Any] = []

        def zip_regions(output: JobOutput) -> None:
            archive.append(saved.zip(upload=Path(image).name if image else None,
                                     source=self._upload(image, request), result=output[0]))

        with self._errors(request, image, mask), job_regions(self.config.output_dir,
                                                              values.pop(CHECKBOX_INPUT, False)) as saved:
            output = self._run(JOBS["inpaint"], request, progress, values, image, mask, extra=saved.options,
                               after=zip_regions)
        return (*output, str(archive[0]) if archive and archive[0] is not None else None)

    def _run(self, kind: JobKind, request: gr.Request | None, progress: Any, values: dict[str, Any],
             image: str | None, mask: str | None = None, extra: dict[str, Any] | None = None,
             after: Callable[[JobOutput], None] | None = None) -> JobOutput:
        """The flow every job shares (see the module's docstring); ``values`` are the controls' values, ``extra``
        options the page sets its own way (where the regions go), ``after`` a last step still inside the job (its
        device turn and its Cancel): the regions' .zip. A failing last step takes the result with it.

        Phases: read the photo (its predicted memory is checked from the header first, then from the decoded
        samples), the task, the save; the job's cancel event is checked between them, by the engine between
        batches and by the save at each write, so a cancelled job leaves no file. The status line's time covers
        them all (:meth:`.job_progress.ProgressBridge.times`).
        """
        from ..image.write import check_output_size
        from .limits import check_upload, engine_host_bytes, picture_layout
        from .results import AUTO_FORMAT, check_format

        def stop_if_cancelled() -> None:
            if job.cancel.is_set():
                raise CancelledError("cancelled")

        task = get_task(kind.task)
        fmt, quality = values.pop("format", AUTO_FORMAT), values.pop("quality", 95)
        chosen = {option: values.pop(option, menu.default) for option, menu in kind.menus.items()}
        with self._job(task.name, request, image, mask) as job:
            bridge = self._bridge(progress, values, request, job)
            try:
                models = {option: self._model(menu, chosen[option]) for option, menu in kind.menus.items()}
                page = kind.page_options(values)
                check_quality(quality)
                check_format(fmt)
                options = {**option_values(task.schema, values), **models, **page, **(extra or {})}
                checked = parse_options(task.schema, options)  # before the upload is decoded
                scale = task.output_scale(checked.model_dump(), {})
                memory = {"control": next((name for name in ("scale", "upscale") if name in task.schema.model_fields),
                                          None), "engine_bytes": engine_host_bytes(checked)}
                bridge.phase("load")
                photo = self._upload(image, request)
                layout = picture_layout(check_upload(photo, self.config.limits))  # the header: nothing decoded
                if check_format(fmt) != AUTO_FORMAT:  # a size the format cannot hold: refused now, not after
                    check_output_size("result", round(layout.width * scale), round(layout.height * scale),
                                      check_format(fmt))
                if layout.width * layout.height <= self.config.limits.max_pixels:  # else open_upload says so
                    check_result_fits(layout, scale, **memory)
                picture = open_upload(photo, self.config.limits)
                stop_if_cancelled()
                mask_picture = (open_upload(self._upload(mask, request, "mask"), self.config.limits, "mask")
                                if task.takes_mask else None)
                check_result_fits(picture, scale, **memory)  # the decoded samples (a header tells less)
                stop_if_cancelled()
                bridge.phase("work")
                result = task.run(picture, mask=mask_picture, progress=bridge, cancel=job.cancel,
                                  model_dir=self.config.model_dir, **options)
                stop_if_cancelled()
                output = self._finish(picture, result.image, upload=image, done_word=task.done_word, fmt=fmt,
                                      quality=quality, status=lambda elapsed: kind.status(result.report, elapsed),
                                      session=job.session, bridge=bridge, cancel=job.cancel,
                                      working_copy=task.takes_mask)
                if after is not None:
                    try:
                        after(output)
                        stop_if_cancelled()
                    except BaseException:
                        shutil.rmtree(Path(output[0]).parent, ignore_errors=True)
                        raise
                return output
            finally:
                bridge.close()

    def cancel(self, request: gr.Request) -> str:
        """Stop the running jobs of the caller's session and answer once they have really ended.

        A job stops at its next batch, between its phases, or at the save's next write (nothing is kept of a
        cancelled save); this waits up to :data:`.jobs.CANCEL_WAIT` seconds for that. The device stays the job's
        (``_device_turn``) until its function returns, so the next queued job starts only after.
        """
        from .wording import for_page

        jobs = self.board.stop(_session(request))
        if not jobs:
            answer = "no running job"
        elif not all(job.ended.is_set() for job in jobs):
            answer = f"cancelling {len(jobs)} job(s): still stopping…"
        elif any(job.outcome == "ok" for job in jobs):
            answer = f"cancelling {len(jobs)} job(s): finished before it could stop, the result was saved"
        else:
            answer = f"cancelling {len(jobs)} job(s): stopped, nothing was saved"
        return for_page(answer, _language(request))

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
        is cancelled, while the cancelled function still runs until its next batch. The job's warnings are shown
        on its page (:func:`.notices.job_notices`, inside the lock: it patches a process-wide hook).
        """
        from .notices import job_notices

        with self._errors(request, *uploads), self._device_turn, \
                job_notices(_language(request), self._names(*uploads)):
            try:
                with self.board.run(task, _session(request), client_gone=client_gone_probe()) as job:
                    yield job
            finally:
                release_memory(self.device)

    def _upload(self, path: str | None, request: gr.Request | None, what: str = "photo") -> str | None:
        """The path of a file Gradio received for this request (see :class:`.uploads.UploadGate`)."""
        admitted = self.gate.admit(path, _session(request), what)
        return None if admitted is None else str(admitted)

    def _bridge(self, progress: Any, values: dict[str, Any], request: gr.Request | None = None,
                job: Job | None = None) -> ProgressBridge:
        """The job's progress line, in the page's language, with the job's memory and its device's."""
        try:
            device = resolve_device(values.get("device") or "auto")
        except InputError:
            device = None  # the task reports the bad device as an option error
        return ProgressBridge(progress, device, language=_language(request), job=job)

    def _finish(self, picture: Any, result: Any, *, upload: str, done_word: str, fmt: str, quality: Any,
                status: str | Callable[[str], str], session: str = "", bridge: ProgressBridge | None = None,
                cancel: threading.Event | None = None, working_copy: bool = False) -> JobOutput:
        """Save the result (format "auto": the photo's own), make the before/after value, say what was done.

        ``status``: the status line's words, or a function of the job's time (taken after the save, so that it
        counts); ``bridge`` shows the save's progress and gives the phases' times; ``cancel`` stops the save.
        ``working_copy``: a result saved as JPEG or WEBP is also kept losslessly (a TIFF beside it,
        :func:`.results.working_copy_name`), so that work continued on it (Inpaint's versions) does not re-encode
        the photo; a job on such a copy names and, for "auto", formats its result as the result it copies."""
        from .results import resolve_format, shown_upload, working_copy_name

        name, continued = shown_upload(upload)  # a working copy: the result it copies names the photo
        fmt = resolve_format(fmt, upload=name, source_format=None if continued else picture.format,
                             size=(result.width, result.height))
        if bridge is not None:
            bridge.phase("save", fmt)
        path = save_result(result, self.config.output_dir, upload=name, task=done_word, fmt=fmt,
                           quality=int(quality), cancel=cancel, progress=None if bridge is None else bridge.saved)
        if bridge is not None:
            bridge.phase("finish")
        try:
            if working_copy and fmt in LOSSY_FORMATS:  # the next version starts from the exact pixels
                working = save_image(result, working_copy_name(path), cancel=cancel)
                self.gate.issue(working, session)
            pair = compare_value(picture.pixels, result.pixels, path.parent)  # the result's own job folder
            if cancel is not None and cancel.is_set():  # cancelled after the save: the page will not show it
                raise CancelledError("cancelled")
        except BaseException:
            shutil.rmtree(path.parent, ignore_errors=True)  # a result the page never shows is not left behind
            raise
        self.gate.issue(path, session)  # the page may go on working on the result (Inpaint's versions)
        if callable(status):
            status = status(bridge.times() if bridge is not None else "")
        size = f"{picture.width}×{picture.height} → {result.width}×{result.height}"
        job = bridge.job if bridge is not None else None
        memory = f" · {job.memory.describe()}" if job is not None and job.memory is not None else ""
        line = f"✓ {size} · {status}{memory} · {path.name}"
        if bridge is not None:
            from .wording import for_page

            line = for_page(line, bridge.language)
        return str(path), pair, html.escape(line)

    # ------------------------------------------------------------------------------------------- page helpers

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
