"""Jobs of the web UI: who is running, how to cancel them, their memory, how their errors reach the page.

Gradio's queue runs each job on a worker thread, one at a time per device (all jobs share one concurrency group
of limit 1); the page shows the queue position of those that wait. A job gets a :class:`threading.Event` that
the task checks between batches: the Cancel button sets the events of its session's running jobs, and so does a
watcher when the client has gone away (tab closed, connection dropped, the event cancelled through Gradio's
``/cancel`` route), so that an abandoned job frees the queue at its next batch; the save checks the event at
each write. :meth:`JobBoard.stop` cancels a session's jobs and waits until they have really ended. A job's
progress (:mod:`.job_progress`) covers every phase (reading the photo, the engine's detection, tiles, regions or faces, saving), each
with its time, and shows the job's own memory (the process's peak above what it held when the job started,
:class:`JobMemory`) and, on a GPU, the device's: "tile 3/8 · ETA 5 s · job memory 1.2 GiB · GPU cuda:0
3.1 / 80.0 GiB". Library errors become one-line ``gr.Error`` messages, worded for the page (control labels, not
CLI flags); the server goes on serving.
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

from ..errors import CancelledError, TesseraError

MEMORY_WARNING = 0.90   # fraction of device memory in use above which the page warns
JOB_MEMORY_POLL = 0.2   # seconds between two readings of the process's memory on a job's sampler thread
CLIENT_POLL = 0.25      # seconds between two looks at whether a job's client is still there
CANCEL_WAIT = 60.0      # seconds Cancel waits for the session's jobs to have really ended

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
        """``GPU cuda:0: 3.1 / 80.0 GiB (4%)``; for the CPU the machine's memory, named so."""
        gib = 1 << 30
        what = "machine memory" if str(self.device).startswith("cpu") else f"GPU {self.device}"
        return f"{what}: {self.used / gib:.1f} / {self.total / gib:.1f} GiB ({self.fraction:.0%})"


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

class JobMemory:
    """A job's own host memory: the peak of the process's resident memory above what it was when the job
    started, sampled every :data:`JOB_MEMORY_POLL` seconds on a thread (so that a phase without progress events,
    decoding or saving, is seen too) and at each :meth:`sample`. Jobs run one at a time, so the growth is the
    job's; what other requests (previews) take meanwhile is counted with it."""

    def __init__(self, read_rss: Callable[[], int] | None = None, poll: float = JOB_MEMORY_POLL):
        if read_rss is None:
            import psutil

            process = psutil.Process()
            read_rss = lambda: int(process.memory_info().rss)  # noqa: E731
        self._read_rss = read_rss
        self._poll = poll
        self._lock = threading.Lock()
        self.start_rss = self._read_rss()
        self._peak_rss = self.start_rss
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> "JobMemory":
        """Start the sampler thread (a daemon: it never keeps the server from exiting)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, daemon=True, name="tessera-job-memory")
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self.sample()

    def _run(self) -> None:
        while not self._stop.wait(self._poll):
            self.sample()

    def sample(self) -> int:
        """Read the process's memory now; return the job's peak so far."""
        try:
            rss = self._read_rss()
        except Exception:  # noqa: BLE001 - a failed reading must not fail the job: keep the last peak
            return self.peak
        with self._lock:
            self._peak_rss = max(self._peak_rss, rss)
        return self.peak

    @property
    def peak(self) -> int:
        """Bytes: the highest resident memory seen during the job, above the job's start."""
        with self._lock:
            return max(0, self._peak_rss - self.start_rss)

    def describe(self) -> str:
        """``job memory 1.2 GiB`` (English: the progress line is worded for the page as a whole)."""
        return f"job memory {_gib(self.peak)}"


def _gib(count: float) -> str:
    gib = count / (1 << 30)
    return f"{gib:.1f} GiB" if gib >= 0.1 else f"{count / (1 << 20):.0f} MiB"


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

    ``abandoned`` is set (with ``cancel``) when the job's client went away; ``ended`` once the job's block has
    finished, however it ended. ``memory`` measures the job's own memory (None when it is not measured).
    """

    id: int
    task: str
    session: str
    cancel: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.monotonic)
    abandoned: threading.Event = field(default_factory=threading.Event)
    ended: threading.Event = field(default_factory=threading.Event)
    memory: JobMemory | None = None
    outcome: str | None = None  # once ended: as :attr:`JobRecord.outcome`


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
        asked for the job went away; the first True cancels the job. The job's memory is sampled meanwhile
        (:class:`JobMemory`, ``job.memory``).
        """
        job = Job(next(self._ids), task, session or "", memory=JobMemory().start())
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
            if job.memory is not None:
                job.memory.stop()
            with self._lock:
                del self._running[job.id]
                self.history.append(JobRecord(task, job.started, time.monotonic(), outcome))
            job.outcome = outcome
            job.ended.set()

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

    def stop(self, session: str | None, timeout: float = CANCEL_WAIT) -> list[Job]:
        """Cancel the running jobs of ``session`` and wait up to ``timeout`` seconds until they have ended
        (their blocks left, whatever they were doing: decoding, a batch, the save); return the jobs asked, each
        with ``ended`` set and its ``outcome`` once it has ended ("ok" when it finished before it could stop)."""
        with self._lock:
            jobs = [job for job in self._running.values() if job.session == (session or "")]
        for job in jobs:
            job.cancel.set()
        deadline = time.monotonic() + timeout
        for job in jobs:
            job.ended.wait(max(0.0, deadline - time.monotonic()))
        return jobs

    @property
    def running(self) -> int:
        with self._lock:
            return len(self._running)

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
    the server keeps serving. Messages and titles are in ``language`` (see :mod:`.wording`), a ``gr.Error``
    raised inside (the mask editor's) too.
    """
    import gradio as gr

    from .i18n import text
    from .wording import for_page

    def error(message: str, title_key: str = "msg.error") -> gr.Error:
        shown = gr.Error(message, title=text(title_key, language), print_exception=False)
        shown.tessera_worded = True  # type: ignore[attr-defined]
        return shown

    try:
        yield
    except gr.Error as raised:
        if not getattr(raised, "tessera_worded", False):
            raised.message = for_page(str(raised.message), language)
            raised.title = text("msg.error", language) if raised.title == "Error" else raised.title
            raised.tessera_worded = True  # type: ignore[attr-defined]
        raise
    except CancelledError:
        raise error(text("msg.cancelled_detail", language), "msg.cancelled") from None
    except TesseraError as failure:
        raise error(public_message(failure, uploads, language)) from None
    except MemoryError:
        raise error(text("msg.out_of_memory", language)) from None
    except Exception as failure:  # noqa: BLE001 - a bug in a job must not take the server down
        (log or _log_stderr)("job failed:\n" + traceback.format_exc())
        raise error(f"{text('msg.internal', language)} ({type(failure).__name__}): "
                    f"{public_message(failure, uploads, language)}") from None


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
