"""A batch worker: the task's models loaded once, then one job after another, each failing alone.

A :class:`Processor` lives in this process, in a local worker process or in a Ray actor. It looks its task up in
the registry (:func:`~tessera.tasks.registry.get_task`), loads the weights the options name once
(:meth:`~tessera.tasks.registry.Task.load_models`), and hands every job to
:func:`~tessera.tasks.files.process_file`, which decides from the image's header and the RAM budget whether the
job runs in memory or streams into a tiled BigTIFF (the same decision ``tessera upscale`` takes for one file).
A worker that cannot build its Processor reports :func:`start_error` to the driver, which raises it once.
"""
from __future__ import annotations

import os
import platform
import threading
import time
from dataclasses import dataclass
from typing import Any

from ..errors import CancelledError, InputError, TesseraError
from ..progress import ProgressCallback
from ..tasks.files import FileResult, default_max_ram, process_file
from ..tasks.registry import get_task
from .plan import Job
from .report import Outcome

IN_FLIGHT_PER_WORKER = 2  # jobs handed to each worker ahead of time: enough to keep it busy, no more


@dataclass(frozen=True)
class Settings:
    """What a worker needs to process any job of a batch (picklable: it travels to processes and Ray actors).

    ``task``: the registry name of the task. ``options``: the task's options as given (names of models, not
    loaded models, unless the caller passed a loaded :class:`~tessera.models.descriptor.Model`). ``max_ram``:
    bytes one image may take in memory before it is streamed (None:
    :func:`tessera.tasks.files.default_max_ram` times ``ram_share``, the worker's share of the machine).
    """

    task: str
    options: dict[str, Any]
    model_dir: str | None = None
    quality: int = 95
    max_ram: int | None = None
    ram_share: float = 1.0
    device: str | None = None


class Processor:
    """A worker: loads the task's model(s) once, then processes jobs one at a time (no state between jobs)."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.task = get_task(settings.task)
        self.models, self.notice = self.task.load_models(settings.options, settings.model_dir)
        self.name = f"{platform.node()}:{os.getpid()}"

    def __call__(self, job: Job, *, progress: ProgressCallback | None = None,
                 cancel: threading.Event | None = None) -> Outcome:
        """Process ``job``; any failure of this image becomes a "failed" outcome (cancellation propagates)."""
        started = time.monotonic()
        try:
            if job.error:
                raise InputError(job.error)
            written = self._process(job, progress, cancel)
        except CancelledError:
            raise
        except TesseraError as error:
            return Outcome(job.name, "failed", time.monotonic() - started, str(error), worker=self.name)
        except Exception as error:  # noqa: BLE001 - one bad image must not stop the batch; recorded, not hidden
            message = " ".join(f"{type(error).__name__}: {error}".split())
            return Outcome(job.name, "failed", time.monotonic() - started, message, worker=self.name)
        return Outcome(job.name, "done", time.monotonic() - started, None, str(written.path), written.streamed,
                       self.name)

    def _process(self, job: Job, progress: ProgressCallback | None,
                 cancel: threading.Event | None) -> FileResult:
        """Write the result of ``job``, in memory or streamed (:func:`~tessera.tasks.files.process_file` decides)."""
        from ..image.atomic import remove_stale_temporaries

        settings = self.settings
        job.output.parent.mkdir(parents=True, exist_ok=True)
        # interrupted atomic writes of an earlier run (in-memory and streamed outputs share the folder); only
        # those whose writer is gone, never another live worker's
        remove_stale_temporaries(job.output.parent)
        options = dict(settings.options)
        if settings.device is not None:
            options["device"] = settings.device
        return process_file(self.task, job.source, job.output, mask=job.mask, options=options, models=self.models,
                            max_ram=self.ram_budget(), quality=settings.quality, max_pixels=None,
                            model_dir=settings.model_dir, progress=progress, cancel=cancel,
                            stream_output=job.streamed_output)

    def ram_budget(self) -> int:
        """Bytes one image may take in memory here: the given budget, else this worker's share of the machine's."""
        return self.settings.max_ram or int(default_max_ram() * self.settings.ram_share)


def start_error(error: Exception) -> TesseraError:
    """What a worker that could not build its :class:`Processor` reports to the driver, which raises it as the
    batch's error, once, as one process would: a :class:`~tessera.errors.TesseraError` as it is (typed, one
    line, picklable), anything else (a CUDA error while loading...) as a TesseraError naming its type."""
    if isinstance(error, TesseraError):
        return error
    return TesseraError(f"a batch worker could not start: {type(error).__name__}: {error}")


def check_models(task: str, options: dict[str, Any], model_dir: str | None) -> None:
    """Fail fast, before any worker starts, on a model name of task ``task`` that does not resolve to a weight
    file (resolved only: nothing is loaded)."""
    names = get_task(task).weight_options(options)
    if not names:
        return
    from ..models.loader import resolve_model_file  # torch: only when there is a model to look for

    for name in names.values():
        resolve_model_file(name, model_dir)
