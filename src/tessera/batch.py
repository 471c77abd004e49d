"""Folders of photos: one task over every image, resumable, a bad file failing alone, on local processes or Ray.

:func:`run_batch` lists the images of a folder (optionally recursively, filtered by a glob), plans one
:class:`Job` per image (its output mirrors the input tree; its mask matched by file stem, or one mask for all),
skips the jobs whose output already exists and decodes (a previous run finished them: outputs are written
atomically, so a file at the final path is complete), and runs the rest:

- in this process (one worker), on ``workers`` local processes, or as Ray actors (``ray``); every worker loads
  the model once (:class:`Processor`) and writes its outputs itself;
- an image larger than the RAM budget is processed out of core (:mod:`tessera.bigimage`) into a tiled BigTIFF
  next to where the in-memory output would have gone (same stem, ``.tif``);
- each finished, skipped or failed image is one JSON line of the report (file, status, seconds, error, output),
  flushed at once, so a killed run leaves an exact record of what it finished.
"""
from __future__ import annotations

import concurrent.futures
import fnmatch
import json
import multiprocessing
import os
import platform
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .progress import ProgressCallback, ProgressEvent
from .errors import CancelledError, ImageReadError, InputError, OptionError, TesseraError, look_up_option

TASKS = ("inpaint", "enhance", "upscale")
FORMATS = ("same", "png", "jpg", "webp", "tif")
REPORT_NAME = "tessera-batch.jsonl"
IN_FLIGHT_PER_WORKER = 2  # jobs handed to each worker ahead of time: enough to keep it busy, no more


def task_schema(task: str) -> type:
    from .options import FaceOptions, InpaintOptions, UpscaleOptions

    return {"inpaint": InpaintOptions, "enhance": FaceOptions, "upscale": UpscaleOptions}[task]

# ----------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Job:
    """One image of a batch: where it is read, where its result goes, and its mask (inpainting)."""

    source: Path
    name: str            # path relative to the input folder, POSIX style: the key of the report
    output: Path
    streamed_output: Path  # where the result goes when the image is processed out of core (a tiled TIFF)
    mask: Path | None = None
    error: str | None = None  # a problem found while planning (no mask, two inputs for one output)


def image_suffixes() -> tuple[str, ...]:
    from .image import IMAGE_SUFFIXES

    return tuple(IMAGE_SUFFIXES)


def find_images(folder: str | Path, *, recursive: bool = False, pattern: str | None = None,
                exclude: Path | None = None) -> list[Path]:
    """The image files of ``folder`` (by suffix), sorted; hidden files and anything under ``exclude`` left out.

    ``pattern`` is a glob matched against the path relative to ``folder`` and against the file name.
    """
    root = Path(folder)
    if not root.is_dir():
        raise InputError(f"{root}: not a folder")
    suffixes = image_suffixes()
    skip = exclude.resolve() if exclude is not None else None
    found = []
    for path in (root.rglob("*") if recursive else root.iterdir()):
        relative = path.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or path.suffix.lower() not in suffixes:
            continue
        if not path.is_file() or (skip is not None and path.resolve().is_relative_to(skip)):
            continue
        if pattern and not (fnmatch.fnmatch(relative.as_posix(), pattern) or fnmatch.fnmatch(path.name, pattern)):
            continue
        found.append(path)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def output_path(relative: Path, output_dir: Path, format: str) -> Path:
    """The output of an input at ``relative`` (to the input folder): the same tree, the chosen format."""
    suffix = relative.suffix if format == "same" else "." + format
    return output_dir / relative.with_suffix(suffix)


def find_mask(relative: Path, masks: Path) -> Path | None:
    """The mask of an input: ``masks`` itself when it is a file, else the image in ``masks`` with the input's
    stem, looked up in the input's own subfolder first, then at the top of ``masks``."""
    if masks.is_file():
        return masks
    suffixes = image_suffixes()
    for folder in (masks / relative.parent, masks):
        if not folder.is_dir():
            continue
        for candidate in sorted(folder.iterdir()):
            if candidate.stem == relative.stem and candidate.suffix.lower() in suffixes and candidate.is_file():
                return candidate
    return None


def plan_jobs(input_dir: str | Path, output_dir: str | Path, *, masks: str | Path | None = None,
              recursive: bool = False, pattern: str | None = None, format: str = "same") -> list[Job]:
    """One :class:`Job` per image of ``input_dir``; jobs that cannot run carry an ``error`` and fail alone."""
    root, out = Path(input_dir), Path(output_dir)
    format = look_up_option(str(format).lower().replace("jpeg", "jpg").replace("tiff", "tif"), FORMATS,
                            "output format")
    mask_root = Path(masks) if masks is not None else None
    if mask_root is not None and not mask_root.exists():
        raise InputError(f"{mask_root}: no such mask file or folder")
    sources = find_images(root, recursive=recursive, pattern=pattern, exclude=out if out != root else None)
    if mask_root is not None and mask_root.is_dir():
        mask_dir = mask_root.resolve()
        sources = [s for s in sources if not s.resolve().is_relative_to(mask_dir)]
    targets: dict[Path, str] = {}
    planned = []
    for source in sources:
        relative = source.relative_to(root)
        target = output_path(relative, out, format)
        error = None
        if target in targets:
            error = f"{targets[target]} already writes {target.name}; rename one of the two inputs"
        targets.setdefault(target, relative.as_posix())
        mask = None
        if mask_root is not None:
            mask = find_mask(relative, mask_root)
            if mask is None and error is None:
                error = f"no mask named {relative.stem}.* in {mask_root}"
        planned.append((source, relative, target, mask, error))
    jobs = []
    for source, relative, target, mask, error in planned:
        streamed = target.with_suffix(".tif")
        if streamed != target and streamed in targets:  # another input writes that name: keep both
            streamed = target.with_name(target.name + ".tif")
        jobs.append(Job(source, relative.as_posix(), target, streamed, mask, error))
    return jobs


def is_complete(path: Path) -> bool:
    """Whether ``path`` is an image whose header decodes (outputs are atomic: present means finished)."""
    from .image import read_image_size

    if not path.is_file():
        return False
    try:
        width, height = read_image_size(path)
    except ImageReadError:
        return False
    return width > 0 and height > 0


def finished_output(job: Job) -> Path | None:
    """The complete output a previous run left for ``job``, if any (in-memory or streamed)."""
    for candidate in dict.fromkeys((job.output, job.streamed_output)):
        if is_complete(candidate):
            return candidate
    return None

# ----------------------------------------------------------------------------------------------- processing


@dataclass(frozen=True)
class Settings:
    """What a worker needs to process any job of a batch (picklable: it travels to processes and Ray actors).

    ``options``: the task's options as given (names of models, not loaded models, unless the caller passed a
    loaded :class:`~tessera.models.descriptor.Model`). ``max_ram``: bytes one image may take in memory before
    it is streamed (None: :func:`tessera.bigimage.default_max_ram` times ``ram_share``).
    """

    task: str
    options: dict[str, Any]
    model_dir: str | None = None
    quality: int = 95
    max_ram: int | None = None
    ram_share: float = 1.0
    device: str | None = None


@dataclass
class Outcome:
    """One line of the report."""

    file: str
    status: str                  # "done", "skipped" or "failed"
    seconds: float = 0.0
    error: str | None = None
    output: str | None = None
    streamed: bool = False
    worker: str | None = None

    def line(self) -> str:
        data = {k: v for k, v in asdict(self).items() if v is not None and v is not False}
        data["time"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        return json.dumps(data, ensure_ascii=False)


class Processor:
    """A worker: loads the task's model(s) once, then processes jobs one at a time (no state between jobs)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.models, self.notice = load_models(settings.task, settings.options, settings.model_dir)
        self.name = f"{platform.node()}:{os.getpid()}"

    def __call__(self, job: Job, *, progress: ProgressCallback | None = None,
                 cancel: threading.Event | None = None) -> Outcome:
        """Process ``job``; any failure of this image becomes a "failed" outcome (cancellation propagates)."""
        started = time.monotonic()
        try:
            if job.error:
                raise InputError(job.error)
            target, streamed = self._process(job, progress, cancel)
        except CancelledError:
            raise
        except TesseraError as error:
            return Outcome(job.name, "failed", time.monotonic() - started, str(error), worker=self.name)
        except Exception as error:  # noqa: BLE001 - one bad image must not stop the batch; recorded, not hidden
            message = " ".join(f"{type(error).__name__}: {error}".split())
            return Outcome(job.name, "failed", time.monotonic() - started, message, worker=self.name)
        return Outcome(job.name, "done", time.monotonic() - started, None, str(target), streamed, self.name)

    def _process(self, job: Job, progress: ProgressCallback | None,
                 cancel: threading.Event | None) -> tuple[Path, bool]:
        settings = self.settings
        job.output.parent.mkdir(parents=True, exist_ok=True)
        scale = output_scale(settings.task, settings.options, self.models)
        if self._must_stream(job, scale):
            _remove_leftovers(job.streamed_output)
            return self._stream(job, progress, cancel), True
        from .image import load_image, save_image

        _remove_leftovers(job.output)
        picture = load_image(job.source, max_pixels=None)
        options = self._task_options()
        if settings.task == "upscale":
            from .tasks.upscale import upscale

            result = upscale(picture, progress=progress, cancel=cancel, model_dir=settings.model_dir, **options)
        elif settings.task == "inpaint":
            from .tasks.inpaint import inpaint

            result = inpaint(picture, str(job.mask), progress=progress, cancel=cancel,
                             model_dir=settings.model_dir, **options)
        else:
            from .tasks.faces import enhance_faces

            result = enhance_faces(picture, progress=progress, cancel=cancel, model_dir=settings.model_dir,
                                   **options)
        return save_image(result, job.output, quality=settings.quality), False

    def _task_options(self) -> dict[str, Any]:
        """The task's keyword arguments: the options given, names replaced by the loaded models, the device."""
        options = {**self.settings.options, **self.models}
        if self.settings.device is not None:
            options["device"] = self.settings.device
        return options

    def _ram_budget(self) -> int:
        from .bigimage import default_max_ram

        return self.settings.max_ram or int(default_max_ram() * self.settings.ram_share)

    def _must_stream(self, job: Job, scale: float) -> bool:
        from .bigimage import STREAM_SUFFIXES, in_memory_estimate

        width, height, needed = in_memory_estimate(job.source, scale=scale)
        budget = self._ram_budget()
        if needed <= budget:
            return False
        if self.settings.task == "enhance" or job.source.suffix.lower() not in STREAM_SUFFIXES:
            why = ("face enhancement cannot be streamed" if self.settings.task == "enhance"
                   else "only TIFF inputs are read region by region; convert it to a (tiled) TIFF")
            raise InputError(f"{job.source}: {width}x{height} needs about {needed / 2**30:.1f} GiB in memory, over "
                             f"the RAM budget of {budget / 2**30:.1f} GiB; {why}")
        return True

    def _stream(self, job: Job, progress: ProgressCallback | None, cancel: threading.Event | None) -> Path:
        from .bigimage import stream_inpaint, stream_upscale

        settings = self.settings
        options = self._task_options()
        if settings.task == "upscale":
            return stream_upscale(job.source, job.streamed_output, progress=progress, cancel=cancel,
                                  model_dir=settings.model_dir, **options)
        options = {k: v for k, v in options.items() if k not in ("save_regions", "resize_mask")}
        return stream_inpaint(job.source, job.mask, job.streamed_output, progress=progress, cancel=cancel,
                              model_dir=settings.model_dir, max_ram=self._ram_budget(), **options)


_NOT_MODEL_FILES = ("auto", "none", "lanczos")  # background choices of `enhance` that are not weight files


def model_names(task: str, options: dict[str, Any]) -> dict[str, str]:
    """The options of ``task`` that name weight files to load: {option: name or path}."""
    names = {key: value for key in ("model", "background") if isinstance(value := options.get(key), str)}
    if task == "inpaint":
        from .models.classical.inpaint import WEIGHT_FREE_INPAINT

        return {k: v for k, v in names.items() if k == "model" and v.lower() not in ("auto", *WEIGHT_FREE_INPAINT)}
    if task == "enhance":
        return {k: v for k, v in names.items() if v.lower() not in _NOT_MODEL_FILES}
    from .options import WEIGHT_FREE_NAMES

    return {k: v for k, v in names.items() if k == "model" and v.strip().lower() not in ("auto", *WEIGHT_FREE_NAMES)}


def load_models(task: str, options: dict[str, Any], model_dir: str | None) -> tuple[dict[str, Any], str | None]:
    """The task's models, loaded once per worker: keyword arguments that replace names in ``options``.

    Returns them with a notice saying what ``auto`` chose (inpainting, upscaling), if it was asked for.
    """
    if task == "inpaint":
        from .tasks.inpaint import resolve_inpaint_model

        network, notice = resolve_inpaint_model(options.get("model") or "auto", model_dir)
        return {"model": network}, notice
    from .models.loader import load_model

    if task == "upscale" and str(options.get("model", "auto")).strip().lower() == "auto":
        from .engine import resolve_device
        from .tasks.upscale import choose_auto_model

        name, notice = choose_auto_model(resolve_device(options.get("device")).type, model_dir)
        # none available: "auto" stays, and each upscale falls back to Lanczos at auto's scale
        return ({} if name is None else {"model": load_model(name, model_dir=model_dir)}), notice

    return {key: load_model(name, model_dir=model_dir) for key, name in model_names(task, options).items()}, None


def check_models(task: str, options: dict[str, Any], model_dir: str | None) -> None:
    """Fail fast, before any worker starts, on a model name that does not resolve to a weight file."""
    for name in model_names(task, options).values():
        from .models.loader import resolve_model_file  # torch: only when there is a model to look for

        resolve_model_file(name, model_dir)


def output_scale(task: str, options: dict[str, Any], models: dict[str, Any]) -> float:
    """The factor between output and input sides (for the memory estimate)."""
    if task == "upscale":
        from .tasks.upscale import WEIGHT_FREE_DEFAULT_SCALE

        model = models.get("model", options.get("model"))
        default = getattr(model, "scale", 0) or WEIGHT_FREE_DEFAULT_SCALE
        return float(options.get("scale") or default)
    if task == "enhance":
        return float(options.get("upscale") or 1.0)
    return 1.0


def _remove_leftovers(target: Path) -> None:
    """Delete the temporary files that interrupted atomic writes left beside ``target``: only those whose
    writer is gone, never another live worker's (:func:`tessera.image.remove_stale_temporaries`)."""
    from .image import remove_stale_temporaries

    remove_stale_temporaries(target.parent)

# ----------------------------------------------------------------------------------------------- report


class Report:
    """The JSON-lines report: one line per image, flushed as soon as the image is finished."""

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()

    def add(self, outcome: Outcome) -> None:
        self._file.write(outcome.line() + "\n")
        self._file.flush()

    def add_summary(self, summary: BatchSummary) -> None:
        self._file.write(json.dumps({"summary": summary.counts(), "seconds": round(summary.seconds, 3)}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_report(path: str | Path) -> list[dict[str, Any]]:
    """The image lines of a report (a line cut short by a killed run is ignored)."""
    lines = []
    for text in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            continue
        if "file" in data:
            lines.append(data)
    return lines


@dataclass
class BatchSummary:
    """What a batch did: every outcome, the report's path, and notices for the user."""

    outcomes: list[Outcome] = field(default_factory=list)
    report: Path | None = None
    seconds: float = 0.0
    notices: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    def counts(self) -> dict[str, int]:
        return {s: self.count(s) for s in ("done", "skipped", "failed")}

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def describe(self) -> str:
        c = self.counts()
        return (f"{c['done']} done, {c['skipped']} skipped (already there), {c['failed']} failed "
                f"in {self.seconds:.1f}s")

# ----------------------------------------------------------------------------------------------- running


BatchProgress = Callable[[Outcome, int, int], None]


def run_batch(task: str, input_dir: str | Path, output_dir: str | Path, *, masks: str | Path | None = None,
              recursive: bool = False, pattern: str | None = None, format: str = "same",
              workers: int | None = None, ray: str | None = None, max_ram: int | str | None = None,
              quality: int = 95, model_dir: str | None = None, report: str | Path | None = None,
              redo: bool = False, on_outcome: BatchProgress | None = None,
              progress: ProgressCallback | None = None, cancel: threading.Event | None = None,
              **options: Any) -> BatchSummary:
    """Run ``task`` ("inpaint", "enhance" or "upscale") on every image of ``input_dir`` into ``output_dir``.

    ``masks``: a mask file for all images, or a folder of masks matched by stem (inpainting). ``format``: same,
    png, jpg, webp or tif. ``workers``: local processes (default: one per GPU, else 1 = this process). ``ray``:
    a Ray address (``auto`` for a running cluster) to run on Ray actors instead; an already initialised Ray is
    used as it is. ``max_ram``: bytes (or "8G") one image may take in memory before it is streamed; default
    half the machine's memory shared among the workers. ``redo``: process images whose output exists.
    ``on_outcome(outcome, finished, total)`` is called after each image; ``progress`` receives the per-image
    events (this process only). Task options (``model``, ``scale``, ``device``...) are validated up front.
    """
    from .options import parse_options, parse_size

    task = look_up_option(task, TASKS, "batch task")
    named = {k: v for k, v in options.items()  # loaded models (not names) are checked by the task itself
             if not (k in ("model", "background") and v is not None and not isinstance(v, str))}
    checked = parse_options(task_schema(task), named)
    if task != "inpaint" and masks is not None:
        raise OptionError(f"--masks applies to inpaint, not to {task}")
    if task == "inpaint" and masks is None:
        raise OptionError("batch inpaint needs --masks (a mask file for all images, or a folder of masks)")
    if not 1 <= int(quality) <= 100:
        raise OptionError(f"quality must be between 1 and 100, got {quality}")
    try:
        ram = parse_size(max_ram)
    except ValueError as error:
        raise OptionError(f"option max_ram: {error}") from None
    started = time.monotonic()
    out = Path(output_dir)
    _check_before_work(out, Path(report) if report else None, checked.device if ray is None else "auto")
    jobs = plan_jobs(input_dir, out, masks=masks, recursive=recursive, pattern=pattern, format=format)
    summary = BatchSummary(report=Path(report) if report else out / REPORT_NAME)
    log = Report(summary.report)
    total = len(jobs)

    def record(outcome: Outcome) -> None:
        summary.outcomes.append(outcome)
        log.add(outcome)
        if on_outcome is not None:
            on_outcome(outcome, len(summary.outcomes), total)

    try:
        pending = []
        for job in jobs:
            previous = None if redo else finished_output(job)
            if previous is not None:
                record(Outcome(job.name, "skipped", 0.0, None, str(previous)))
            else:
                pending.append(job)
        if pending:
            check_models(task, options, str(model_dir) if model_dir else None)
            device = checked.device if checked.device != "auto" else None
            settings = Settings(task, dict(options), str(model_dir) if model_dir else None, int(quality), ram,
                                device=device)
            if ray is not None:
                from .batch_ray import run_on_ray

                run_on_ray(pending, settings, address=ray, workers=workers, record=record, summary=summary)
            else:
                run_locally(pending, settings, workers=workers, record=record, summary=summary,
                            progress=progress, cancel=cancel)
    finally:
        summary.seconds = time.monotonic() - started
        log.add_summary(summary)
        log.close()
    return summary


def _check_before_work(output_dir: Path, report: Path | None, device: str) -> None:
    """The output folder (and the report's) can be created and written, and a named device exists here (on Ray
    the actors' machines decide), before an image is read."""
    from .engine import resolve_device
    from .image import check_output_folder

    check_output_folder(output_dir)
    if report is not None:
        check_output_folder(report.parent)
    if device != "auto":
        resolve_device(device)


def default_workers(device: str | None) -> list[str | None]:
    """One worker per CUDA device when there are several (and no device was named), else one worker."""
    if device is None:
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count > 1:
            return [f"cuda:{i}" for i in range(count)]
    return [device]


def worker_devices(workers: int | None, device: str | None) -> list[str | None]:
    """The device of each local worker: the named one, or CUDA devices in turn, or the engine's choice."""
    if workers is None:
        return default_workers(device)
    if workers < 1:
        raise OptionError(f"workers must be at least 1, got {workers}")
    if device is None:
        gpus = default_workers(None)
        if gpus[0] is not None:
            return [gpus[i % len(gpus)] for i in range(workers)]
    return [device] * workers


def run_locally(jobs: list[Job], settings: Settings, *, workers: int | None, record: Callable[[Outcome], None],
                summary: BatchSummary, progress: ProgressCallback | None = None,
                cancel: threading.Event | None = None) -> None:
    """Process ``jobs`` in this process (one worker) or on local processes, each loading the model once."""
    devices = worker_devices(workers, settings.device)
    if len(devices) == 1:
        processor = Processor(replace(settings, device=devices[0]))
        if processor.notice:
            summary.notices.append(processor.notice)
        for job in jobs:
            if cancel is not None and cancel.is_set():
                raise CancelledError("batch cancelled")
            record(processor(job, progress=progress, cancel=cancel))
        return
    _run_pool(jobs, replace(settings, ram_share=settings.ram_share / len(devices)), devices, record, progress)


# The one Processor of a worker process (set by _start_worker in that process only).
_WORKER: dict[str, Any] = {}


def _start_worker(settings: Settings, devices: list[str | None], slots: Any, events: Any, threads: int) -> None:
    """Initialiser of a local worker process: claim a device slot, limit threads, load the model once."""
    import torch

    slot = slots.get()
    torch.set_num_threads(threads)
    _WORKER.update(slot=slot, events=events)
    try:
        _WORKER["processor"] = Processor(replace(settings, device=devices[slot]))
    except Exception as error:  # noqa: BLE001 - reported as the failure of every job this worker receives
        _WORKER["error"] = " ".join(f"{type(error).__name__}: {error}".split())


def _work(job: Job) -> Outcome:
    if "error" in _WORKER:
        return Outcome(job.name, "failed", 0.0, f"worker could not start: {_WORKER['error']}")
    processor: Processor = _WORKER["processor"]
    slot, events = _WORKER["slot"], _WORKER["events"]

    def forward(event: ProgressEvent) -> None:
        events.put(replace(event, stage=f"worker {slot + 1}: {event.stage}"))

    return processor(job, progress=forward)


def _run_pool(jobs: list[Job], settings: Settings, devices: list[str | None], record: Callable[[Outcome], None],
              progress: ProgressCallback | None) -> None:
    """Local worker processes (spawned: safe with torch and CUDA), at most IN_FLIGHT_PER_WORKER jobs each.

    A worker process that dies (killed, out of memory, a crash in native code) breaks the pool, and every job in
    flight is lost with it. Those suspects are then run one at a time in a pool of one worker: the one that
    kills its worker again fails alone, the others finish, and the rest of the folder goes on in a full pool.
    """
    context = multiprocessing.get_context("spawn")
    queue: list[Job] = list(jobs)
    suspects: list[Job] = []
    while queue or suspects:
        solo = bool(suspects)
        workers = devices[:1] if solo else devices
        slots, events = context.Queue(), context.Queue()
        for slot in range(len(workers)):
            slots.put(slot)
        threads = max(1, (os.cpu_count() or 1) // len(workers))
        with concurrent.futures.ProcessPoolExecutor(len(workers), mp_context=context, initializer=_start_worker,
                                                    initargs=(settings, workers, slots, events, threads)) as pool:
            in_flight = 1 if solo else IN_FLIGHT_PER_WORKER * len(workers)
            lost = _feed_pool(pool, suspects if solo else queue, in_flight, events, record, progress)
        _drain(events, progress)
        if solo:
            for job in lost:
                record(Outcome(job.name, "failed", 0.0, "the worker process died while processing it (twice)"))
        else:
            suspects.extend(lost)


def _feed_pool(pool: concurrent.futures.ProcessPoolExecutor, queue: list[Job], in_flight: int, events: Any,
               record: Callable[[Outcome], None], progress: ProgressCallback | None) -> list[Job]:
    """Run the jobs of ``queue`` (taken from its front, at most ``in_flight`` at a time) on ``pool``; returns the
    jobs in flight when the pool broke (empty when it did not), leaving the ones not started in ``queue``."""
    running: dict[concurrent.futures.Future, Job] = {}
    lost: list[Job] = []
    while queue or running:
        while queue and len(running) < in_flight and not lost:
            job = queue.pop(0)
            running[pool.submit(_work, job)] = job
        done, _ = concurrent.futures.wait(running, timeout=0.2, return_when=concurrent.futures.FIRST_COMPLETED)
        _drain(events, progress)
        for future in done:
            job = running.pop(future)
            try:
                outcome = future.result()
            except concurrent.futures.process.BrokenProcessPool:
                lost.append(job)
                continue
            record(outcome)
        if lost and not running:
            break
    return lost


def _drain(events: Any, progress: ProgressCallback | None) -> None:
    import queue

    while True:
        try:
            event = events.get_nowait()
        except queue.Empty:
            return
        if progress is not None:
            progress(event)

