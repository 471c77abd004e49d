"""A job's progress as the page shows it: the engine's events and the job's own phases made one line each.

:class:`ProgressBridge` is the progress callback a web job hands the task: the engine's events (tiles, regions,
faces, passes, detection) and the job's phases (reading the photo, the work, the save with the bytes written, the
views) become ``gr.Progress`` updates such as ``tile 3/8 · ETA 5 s · job memory 1.2 GiB``, worded for the page in
its language; a heartbeat repeats a quiet phase with its time (a decode or an encoder that reports nothing), and
the final status line gets the job's time with each phase's share. The job board, cancel and errors are
:mod:`.jobs`.
"""
from __future__ import annotations

import contextvars
import threading
import time
from collections.abc import Callable
from typing import Any

from ..progress import ProgressEvent
from .jobs import Job, MemoryStatus, memory_status

_MEMORY_POLL = 0.5      # seconds between two memory readings during a job
HEARTBEAT = 1.0         # seconds without progress after which the page is told the phase's time again
EVENT_INTERVAL = 0.1  # seconds: the engine's events of one stage reach the page at most this often (the first
                     # and the last always): thousands of small tiles a second would flood the page
_SAVE_REPORT = 0.2      # seconds between two reports of the bytes a save has written
_STAGE_UNITS = {"tiles": "tile", "regions": "region", "faces": "face", "passes": "pass", "detect": "detect",
                "steps": "step", "blocks": "block", "parsing": "parsing"}


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


PHASES = {"load": "reading the photo", "work": "preparing", "save": "saving", "finish": "finishing"}
# Where each phase stands among a job's steps, sent as its progress: Gradio's page shows a line of progress only
# when it has a figure (a phase without one would show a bare spinner). The engine's own events replace it.
_PHASE_STEPS = {"load": (0, 3), "work": (1, 3), "save": (2, 3), "finish": (3, 3)}
"""The job's phases, as the progress line names them until the phase says more (the engine's stages, saved bytes);
"finish": what follows the save (the before/after views)."""
_PHASE_TIMES = {"load": "read", "work": "work", "save": "save", "finish": "views"}  # in the final status line


def _format_bytes(count: float) -> str:
    from ..options import format_bytes

    return format_bytes(count)


class ProgressBridge:
    """A tessera progress callback that drives a ``gr.Progress`` (or any ``(progress, desc=..., unit=...)``
    callable) through every phase of a job.

    The handler names the phases (:meth:`phase`: "load", "work", "save"); the engine's events (detection, tiles,
    regions, faces, passes) arrive through :meth:`__call__` during "work"; the save reports its bytes through
    :meth:`saved`. Each phase's time is kept (:meth:`times`, for the status line). Where nothing is reported for
    :data:`HEARTBEAT` seconds (decoding, an encoder computing its whole file, a slow batch) a thread says the
    phase again with its time so far, so the page never sits on a stale line. Each line adds the job's memory
    (``job``'s :class:`JobMemory`: its peak above the job's start) and, on a GPU, the device's used / total
    memory (read at most twice a second); on the CPU the machine's memory is named only when it is over 90% in
    use, as a warning. Lines go through :func:`.wording.for_page` in ``language``. Call :meth:`close` at the end.
    """

    def __init__(self, sink: Callable[..., Any] | None, device: Any = None,
                 read_memory: Callable[[Any], MemoryStatus] = memory_status, *, language: str = "en",
                 job: Job | None = None, heartbeat: float | None = HEARTBEAT):
        self.sink = sink
        self.device = device
        self.read_memory = read_memory
        self.language = language
        self.job = job
        self.timings: dict[str, float] = {}
        self._outer: ProgressEvent | None = None
        self._memory: MemoryStatus | None = None
        self._memory_read_at = 0.0
        self._lock = threading.RLock()
        self._context = contextvars.copy_context()  # gr.Progress finds its event through context variables
        self._phase: str | None = None
        self._detail = ""
        self._phase_started = time.perf_counter()
        self._started = self._phase_started
        self._line: tuple[str, Any, str] = ("", None, "steps")  # the last line without its time: text, progress, unit
        self._emitted_at = 0.0
        self._saved_at = 0.0
        self._counted: tuple[str, int] | None = None  # the stage and total of the last engine event sent
        self._heartbeat = heartbeat
        self._beating: threading.Thread | None = None
        self._closed = threading.Event()

    # --------------------------------------------------------------------------------- what the job reports

    def __call__(self, event: ProgressEvent) -> None:
        """An event of the engine (or the task): a line with its count, ETA and the memory."""
        if event.stage == "passes":
            self._outer = event
        if self._phase is None:
            self.phase("work", announce=False)
        text = describe_progress(event, self._outer if event.stage != "passes" else None)
        total = max(event.total, 1)
        line = (text, (min(event.done, total), total), _STAGE_UNITS.get(event.stage, event.stage))
        counted, now = (event.stage, event.total), time.perf_counter()
        if counted == self._counted and event.done < event.total and now - self._emitted_at < EVENT_INTERVAL:
            with self._lock:
                self._line = line  # not sent now: the page hears the next one (or the heartbeat says this one)
            return
        self._counted = counted
        self._emit(*line)

    def phase(self, name: str, detail: str = "", *, announce: bool = True) -> None:
        """Start phase ``name`` (of :data:`PHASES`, or any word): the previous phase's time is recorded, and the
        page is told the new phase (``detail`` after its words, e.g. the format being written)."""
        with self._lock:
            self._end_phase()
            self._phase, self._phase_started, self._detail = name, time.perf_counter(), detail
        if announce:
            words = PHASES.get(name, name)
            self._emit(f"{words} {detail}".strip(), _PHASE_STEPS.get(name), "step")

    def saved(self, written: int) -> None:
        """The save has written ``written`` bytes (at most one line every 0.2 s)."""
        now = time.perf_counter()
        if now - self._saved_at < _SAVE_REPORT:
            return
        self._saved_at = now
        text = f"{PHASES['save']} {self._detail}".strip() + f" · {_format_bytes(written)} written"
        self._emit(text, _PHASE_STEPS["save"], "step", elapsed=now - self._phase_started)

    def close(self) -> dict[str, float]:
        """End the last phase and the heartbeat; return the phases' times (seconds)."""
        self._closed.set()
        with self._lock:
            self._end_phase()
            self._phase = None
        return dict(self.timings)

    def times(self) -> str:
        """``12.3 s (read 0.4 s, work 9.8 s, save 2.1 s)``: the job's time from the bridge's creation, and each
        phase's (the current one up to now)."""
        with self._lock:
            times = dict(self.timings)
            if self._phase is not None:
                times[self._phase] = times.get(self._phase, 0.0) + time.perf_counter() - self._phase_started
        total = time.perf_counter() - self._started
        parts = [f"{_PHASE_TIMES.get(name, name)} {seconds:.1f} s" for name, seconds in times.items()]
        return f"{total:.1f} s" + (f" ({', '.join(parts)})" if parts else "")

    # --------------------------------------------------------------------------------- the lines

    def _end_phase(self) -> None:
        if self._phase is not None:
            spent = time.perf_counter() - self._phase_started
            self.timings[self._phase] = self.timings.get(self._phase, 0.0) + spent

    def _emit(self, text: str, progress: Any, unit: str, *, elapsed: float | None = None) -> None:
        if self.sink is None:
            return
        with self._lock:
            self._line = (text, progress, unit)
            self._send(text, progress, unit, elapsed)
        self._start_heartbeat()

    def _send(self, text: str, progress: Any, unit: str, elapsed: float | None) -> None:
        from .wording import for_page, unit_for_page

        if elapsed is not None and elapsed >= 1:
            text += f" · {_duration(elapsed)}"
        memory = self._memory_words()
        if memory:
            text += f" · {memory}"
        self._emitted_at = time.perf_counter()
        assert self.sink is not None
        self.sink(progress, desc=for_page(text, self.language), unit=unit_for_page(unit, self.language))

    def _memory_words(self) -> str:
        words = []
        if self.job is not None and self.job.memory is not None:
            self.job.memory.sample()
            words.append(self.job.memory.describe())
        status = self._current_memory()
        if status is not None:
            if str(status.device).startswith("cpu"):
                if status.high:
                    words.append(f"⚠ machine memory {status.fraction:.0%} in use")
            else:
                gib = 1 << 30
                words.append(f"GPU {status.device} {status.used / gib:.1f} / {status.total / gib:.1f} GiB"
                             + (" ⚠ over 90%" if status.high else ""))
        return " · ".join(words)

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

    def _start_heartbeat(self) -> None:
        if self._heartbeat is None or self._beating is not None or self._closed.is_set():
            return
        with self._lock:
            if self._beating is None:
                self._beating = threading.Thread(target=self._beat, daemon=True, name="tessera-progress")
                self._beating.start()

    def _beat(self) -> None:
        """Say the current line again, with its phase's time, when nothing was said for a heartbeat."""
        assert self._heartbeat is not None
        while not self._closed.wait(self._heartbeat / 2):
            with self._lock:
                if self._phase is None or time.perf_counter() - self._emitted_at < self._heartbeat:
                    continue
                text, progress, unit = self._line
                elapsed = time.perf_counter() - self._phase_started
                try:
                    self._context.copy().run(self._send, text, progress, unit, elapsed)
                except Exception:  # noqa: BLE001 - a failing page update must not end the job's heartbeat silently
                    return
