"""Running a batch on this machine: in this process (one worker), or on spawned worker processes, one per device.

Each worker process loads the task's models once (:class:`~tessera.batch.worker.Processor`) and writes its own
outputs; at most :data:`~tessera.batch.worker.IN_FLIGHT_PER_WORKER` jobs wait on each. A worker that dies (killed,
out of memory, a crash in native code) loses only the jobs it had: they are retried one at a time, so the image
that kills its worker again fails alone. A worker that cannot start (a file that is no model) stops the batch
with its typed error, as one process would before its first image. Workers die with the process that started them
(:func:`_die_with_parent`): a killed driver leaves no worker holding memory or a GPU; an interrupted or terminated
one stops its workers' jobs, which remove what they were writing (:func:`_stop_on_sigterm`).
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..errors import CancelledError, OptionError, ResourceError
from ..progress import ProgressCallback, ProgressEvent
from .plan import Job
from .report import BatchSummary, Outcome
from .worker import IN_FLIGHT_PER_WORKER, Processor, Settings, start_error


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


def _start_worker(settings: Settings, devices: list[str | None], slots: Any, events: Any, threads: int,
                  started: Any) -> None:
    """Initialiser of a local worker process: die with the driver, claim a device slot, limit threads, load the
    model once (a failure is kept, typed, for :func:`_work` to raise to the driver)."""
    _die_with_parent()
    _stop_on_sigterm()
    import torch

    slot = slots.get()
    torch.set_num_threads(threads)
    _WORKER.update(slot=slot, events=events)
    try:
        _WORKER["processor"] = Processor(replace(settings, device=devices[slot]))
    except Exception as error:  # noqa: BLE001 - raised typed in the driver by the first job this worker takes
        _WORKER["error"] = start_error(error)
    with started.get_lock():  # shared memory: seen by the driver at once, even if this process dies right after
        started.value += 1


def _die_with_parent() -> None:
    """End this process as soon as the process that started it is gone (SIGKILLed, crashed), so that no orphaned
    worker keeps its memory or its GPU's, and multiprocessing's resource tracker (which lives until every holder
    of its pipe has exited) goes too.

    On Linux the kernel sends SIGKILL at once (``prctl(PR_SET_PDEATHSIG)``), even while this process is busy in
    native code; everywhere a daemon thread also waits on the parent's sentinel (a pipe only the parent holds
    open, a process handle on Windows) and exits when it closes. The thread also covers a parent that died
    before the prctl call took effect.
    """
    parent = multiprocessing.parent_process()
    if parent is None:  # not started by multiprocessing: nothing to watch
        return
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1  # from <linux/prctl.h>
        ctypes.CDLL(None).prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)

    def watch() -> None:
        parent.join()
        os._exit(1)

    threading.Thread(target=watch, name="tessera-parent-watch", daemon=True).start()


def _stop_on_sigterm() -> None:
    """In a worker: SIGTERM (the driver's, when it is interrupted or terminated, the pool's when another worker
    died, or systemd's and docker's to the whole group) stops the job at hand as Ctrl-C stops one process, by an
    exception, so that the file being written and any scratch folder are removed; :func:`_work` then ends the
    worker. Outside a job, or at a second SIGTERM, the worker ends at once (nothing of its own to clean up, or a
    clean-up that must not hold the pool's shutdown). Ctrl-C is left to the driver, which passes it on."""
    def interrupt(signum: int, frame: Any) -> None:
        if not _WORKER.get("busy"):
            os._exit(128 + signum)
        _WORKER["busy"] = False  # a second SIGTERM ends the process
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupt)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _interrupt_workers(pool: concurrent.futures.ProcessPoolExecutor) -> None:
    """SIGTERM to each worker process of ``pool`` still alive: their jobs stop and clean up (:func:`_stop_on_sigterm`)
    instead of running to their end while the interrupted driver waits."""
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        if process.is_alive():
            process.terminate()


def _work(job: Job) -> Outcome:
    """Run in a worker process: process ``job`` with that process's Processor, its events sent to the driver; in
    a worker that could not start, raise its start error (typed, one line), which stops the batch."""
    if "error" in _WORKER:
        raise _WORKER["error"]
    processor: Processor = _WORKER["processor"]
    slot, events = _WORKER["slot"], _WORKER["events"]

    def forward(event: ProgressEvent) -> None:
        events.put(replace(event, stage=f"worker {slot + 1}: {event.stage}"))

    try:
        _WORKER["busy"] = True
        return processor(job, progress=forward)
    except KeyboardInterrupt:  # SIGTERM: the job's files are gone (its finally blocks ran); take no other job
        os._exit(128 + signal.SIGTERM)
    finally:
        _WORKER["busy"] = False


def _run_pool(jobs: list[Job], settings: Settings, devices: list[str | None], record: Callable[[Outcome], None],
              progress: ProgressCallback | None) -> None:
    """Local worker processes (spawned: safe with torch and CUDA), at most IN_FLIGHT_PER_WORKER jobs each.

    A worker process that dies (killed, out of memory, a crash in native code) breaks the pool, and every job in
    flight is lost with it. Those suspects are then run one at a time in a pool of one worker: the one that
    kills its worker again fails alone, the others finish, and the rest of the folder goes on in a full pool
    (new processes replace the dead one). A worker's start error stops the batch: the jobs not begun are
    cancelled, the error is raised; so does the death of the worker of one, before it had started (loading the
    model took it down, whatever the image: failing every image after it would only take longer).
    """
    context = multiprocessing.get_context("spawn")
    queue: list[Job] = list(jobs)
    suspects: list[Job] = []
    while queue or suspects:
        solo = bool(suspects)
        workers = devices[:1] if solo else devices
        slots, events, started = context.Queue(), context.Queue(), context.Value("i", 0)
        for slot in range(len(workers)):
            slots.put(slot)
        threads = max(1, (os.cpu_count() or 1) // len(workers))
        pool = concurrent.futures.ProcessPoolExecutor(len(workers), mp_context=context, initializer=_start_worker,
                                                      initargs=(settings, workers, slots, events, threads, started))
        try:
            in_flight = 1 if solo else IN_FLIGHT_PER_WORKER * len(workers)
            lost = _feed_pool(pool, suspects if solo else queue, in_flight, events, record, progress)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (the CLI's Terminated): stop the workers' jobs too
            _interrupt_workers(pool)
            raise
        finally:  # after an error, the jobs queued but not begun are not run
            pool.shutdown(wait=True, cancel_futures=True)
        _drain(events, progress)
        if solo and lost and not started.value:  # alone, it died before it had loaded the model: not the image
            raise ResourceError("a batch worker process died while it was starting (loading the model): out of "
                                "memory, or a crash in native code; try fewer --workers, or one process")
        if solo:
            for job in lost:
                record(Outcome(job.name, "failed", 0.0, "the worker process died while processing it (twice)"))
        else:
            suspects.extend(lost)


def _feed_pool(pool: concurrent.futures.ProcessPoolExecutor, queue: list[Job], in_flight: int, events: Any,
               record: Callable[[Outcome], None], progress: ProgressCallback | None) -> list[Job]:
    """Run the jobs of ``queue`` (taken from its front, at most ``in_flight`` at a time) on ``pool``; returns the
    jobs in flight when the pool broke (empty when it did not), leaving the ones not started in ``queue``. A
    worker's start error, raised by its job's result, propagates."""
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
    """Pass the progress events the worker processes queued to ``progress`` (dropped without one)."""
    import queue

    while True:
        try:
            event = events.get_nowait()
        except queue.Empty:
            return
        if progress is not None:
            progress(event)
