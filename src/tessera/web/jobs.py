"""Jobs of the web UI: who is running, how to cancel them, how their progress and errors reach the page.

Gradio's queue runs each job on a worker thread, one at a time per device (all jobs share one concurrency group
of limit 1); the page shows the queue position of those that wait. A job gets a :class:`threading.Event` that
the task checks between batches: the Cancel button sets the events of its session's running jobs, and so does a
watcher when the client has gone away (tab closed, connection dropped, the event cancelled through Gradio's
``/cancel`` route), so that an abandoned job frees the queue at its next batch. Progress events of the engine
become ``gr.Progress`` updates ("tile 3/8 · ETA 5 s · memory 41%"). Library errors become one-line ``gr.Error``
messages, worded for the page (control labels, not CLI flags); the server goes on serving.
"""
from __future__ import annotations

import collections
import contextlib
import itertools
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..progress import ProgressEvent
from ..errors import CancelledError, TesseraError

MEMORY_WARNING = 0.90   # fraction of device memory in use above which the page warns
_MEMORY_POLL = 0.5      # seconds between two memory readings during a job
CLIENT_POLL = 0.25      # seconds between two looks at whether a job's client is still there
_STAGE_UNITS = {"tiles": "tile", "regions": "region", "faces": "face", "passes": "pass"}

# ----------------------------------------------------------------------------------------------- memory


@dataclass(frozen=True)
class MemoryStatus:
    """Memory in use on a device (host memory for the CPU)."""

    device: str
    used: int
    total: int

    @property
    def fraction(self) -> float:
        return self.used / self.total if self.total else 0.0

    @property
    def high(self) -> bool:
        return self.fraction > MEMORY_WARNING

    def describe(self) -> str:
        gib = 1 << 30
        return f"{self.device}: {self.used / gib:.1f} / {self.total / gib:.1f} GiB ({self.fraction:.0%})"


def memory_status(device: Any) -> MemoryStatus:
    """Memory in use on ``device`` (a torch.device or name): CUDA from the driver, MPS from Metal, else psutil."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return MemoryStatus(str(device), int(total - free), int(total))
    if device.type == "mps":
        total = int(torch.mps.recommended_max_memory())
        return MemoryStatus("mps", int(torch.mps.driver_allocated_memory()), total)
    import psutil

    memory = psutil.virtual_memory()
    return MemoryStatus("cpu", int(memory.total - memory.available), int(memory.total))

def release_memory(device: Any = None) -> None:
    """Hand memory back after a job: the host heap of every thread, and cached blocks of a GPU.

    Gradio runs jobs on a pool of worker threads; glibc gives each thread its own heap, which keeps the peak of
    the job it last ran. Without a trim, a server's resident memory grows towards threads x the largest job,
    even though jobs run one at a time. (No ``gc.collect()``: with torch and gradio loaded it holds the
    interpreter for a good part of a second, and job data is freed by reference counting.)
    """
    import torch

    from ..engine.runtime import trim_host_heap

    trim_host_heap()
    if device is not None:
        device = torch.device(device)
        if device.type == "cuda":
            torch.cuda.empty_cache()
        elif device.type == "mps":
            torch.mps.empty_cache()

# ----------------------------------------------------------------------------------------------- jobs


@dataclass
class Job:
    """One running job: what it does, whose it is, and the event that cancels it.

    ``abandoned`` is set (with ``cancel``) when the job's client went away.
    """

    id: int
    task: str
    session: str
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    abandoned: threading.Event = field(default_factory=threading.Event)


@dataclass(frozen=True)
class JobRecord:
    """A finished job, for the history (tests read it to check that jobs never overlapped)."""

    task: str
    started: float
    ended: float
    outcome: str  # "ok", "cancelled", "abandoned" (cancelled because its client left) or "failed"


def _watch_client(job: Job, client_gone: Callable[[], bool], done: threading.Event, poll: float) -> None:
    """Until ``done``: look every ``poll`` seconds whether the client left; if so, cancel the job and stop."""
    while not done.wait(poll):
        try:
            gone = client_gone()
        except Exception:  # noqa: BLE001 - a failing probe must not kill the watcher; it means "cannot tell"
            gone = False
        if gone:
            job.abandoned.set()
            job.cancel.set()
            return


class JobBoard:
    """The running jobs of one app and a short history. Thread-safe: Gradio runs jobs on worker threads."""

    def __init__(self, history: int = 256):
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._running: dict[int, Job] = {}
        self.history: collections.deque[JobRecord] = collections.deque(maxlen=history)
        self.peak_running = 0

    @contextlib.contextmanager
    def run(self, task: str, session: str | None, client_gone: Callable[[], bool] | None = None,
            poll: float = CLIENT_POLL) -> Iterator[Job]:
        """Register a job for the duration of the block; record how it ended.

        ``client_gone``, when given, is asked every ``poll`` seconds (on a watcher thread) whether the client that
        asked for the job went away; the first True cancels the job.
        """
        job = Job(next(self._ids), task, session or "")
        with self._lock:
            self._running[job.id] = job
            self.peak_running = max(self.peak_running, len(self._running))
        done = threading.Event()
        if client_gone is not None:
            threading.Thread(target=_watch_client, args=(job, client_gone, done, poll), daemon=True,
                             name=f"tessera-job-{job.id}-client").start()
        outcome = "failed"
        try:
            yield job
            outcome = "ok"
        except CancelledError:
            outcome = "abandoned" if job.abandoned.is_set() else "cancelled"
            raise
        finally:
            done.set()
            with self._lock:
                del self._running[job.id]
                self.history.append(JobRecord(task, job.started, time.monotonic(), outcome))

    def jobs(self) -> list[Job]:
        """The running jobs (a copy)."""
        with self._lock:
            return list(self._running.values())

    def cancel(self, session: str | None) -> int:
        """Ask the running jobs of ``session`` to stop at their next batch; return how many were asked."""
        with self._lock:
            jobs = [job for job in self._running.values() if job.session == (session or "")]
        for job in jobs:
            job.cancel.set()
        return len(jobs)

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

# ----------------------------------------------------------------------------------------------- progress


def describe_progress(event: ProgressEvent, outer: ProgressEvent | None = None) -> str:
    """One line for the page: ``pass 1/2 · tile 3/8 · ETA 12 s`` (the message of the event, if any, last)."""
    parts = []
    if outer is not None and outer.total > 1:
        parts.append(f"pass {min(outer.done + 1, outer.total)}/{outer.total}")
    unit = _STAGE_UNITS.get(event.stage, event.stage)
    if event.stage != "passes":
        parts.append(f"{unit} {event.done}/{event.total}")
    elif event.message:
        parts.append(event.message)
    if event.eta is not None and event.done < event.total:
        parts.append(f"ETA {_duration(event.eta)}")
    if event.message and event.stage != "passes":
        parts.append(event.message)
    return " · ".join(parts)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class ProgressBridge:
    """A tessera progress callback that drives a ``gr.Progress`` (or any ``(fraction, desc=...)`` callable).

    Adds the device memory in use (read at most twice a second) and a warning above 90%.
    """

    def __init__(self, sink: Callable[..., Any] | None, device: Any = None,
                 read_memory: Callable[[Any], MemoryStatus] = memory_status):
        self.sink = sink
        self.device = device
        self.read_memory = read_memory
        self._outer: ProgressEvent | None = None
        self._memory: MemoryStatus | None = None
        self._memory_read_at = 0.0

    def __call__(self, event: ProgressEvent) -> None:
        if event.stage == "passes":
            self._outer = event
        if self.sink is None:
            return
        text = describe_progress(event, self._outer if event.stage != "passes" else None)
        memory = self._current_memory()
        if memory is not None:
            text += f" · memory {memory.fraction:.0%}" + (" ⚠ over 90%" if memory.high else "")
        total = max(event.total, 1)
        self.sink((min(event.done, total), total), desc=text, unit=_STAGE_UNITS.get(event.stage, event.stage))

    def _current_memory(self) -> MemoryStatus | None:
        if self.device is None:
            return None
        now = time.monotonic()
        if self._memory is None or now - self._memory_read_at > _MEMORY_POLL:
            try:
                self._memory = self.read_memory(self.device)
            except (RuntimeError, OSError):  # a driver that cannot tell: show no figure rather than fail the job
                self._memory = None
            self._memory_read_at = now
        return self._memory

# ----------------------------------------------------------------------------------------------- errors


def public_message(error: BaseException, uploads: dict[str, str] | None = None, language: str = "en") -> str:
    """The one-line message a user sees: server paths of uploads (and of model files) replaced by their names,
    CLI flags by the labels of the page's controls in ``language`` (see :mod:`.wording`)."""
    from .wording import for_page

    text = " ".join(str(error).split()) or type(error).__name__
    for path, name in sorted((uploads or {}).items(), key=lambda item: -len(item[0])):
        text = text.replace(path, name)
    return for_page(text, language)


@contextlib.contextmanager
def user_errors(uploads: dict[str, str] | None = None, log: Callable[[str], None] | None = None,
                language: str = "en") -> Iterator[None]:
    """Turn library errors into ``gr.Error`` with their one-line message; cancellation into "Cancelled".

    Unexpected exceptions (bugs) are logged with their traceback and shown as one line too: the job fails,
    the server keeps serving.
    """
    import gradio as gr

    try:
        yield
    except gr.Error:
        raise
    except CancelledError:
        raise gr.Error("Cancelled: the job was stopped before it finished", title="Cancelled",
                       print_exception=False) from None
    except TesseraError as error:
        raise gr.Error(public_message(error, uploads, language), print_exception=False) from None
    except MemoryError:
        raise gr.Error("out of memory: lower Max memory or Tile size in Advanced settings, or use a smaller "
                       "photo", print_exception=False) from None
    except Exception as error:  # noqa: BLE001 - a bug in a job must not take the server down
        (log or _log_stderr)("job failed:\n" + traceback.format_exc())
        raise gr.Error(f"internal error ({type(error).__name__}): {public_message(error, uploads, language)}",
                       print_exception=False) from None


def _log_stderr(message: str) -> None:
    import sys

    print(f"tessera: {message}", file=sys.stderr)


def upload_names(*paths: str | None) -> dict[str, str]:
    """``{server path: file name}`` of uploaded files, for :func:`public_message`; each path as given and with
    its symlinks resolved (the form the checks hand on)."""
    names = {}
    for path in paths:
        if path:
            names[str(path)] = names[str(Path(path).resolve())] = Path(path).name
    return names
