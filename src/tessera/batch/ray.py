"""Batch jobs on a Ray cluster: one actor per worker, each loading the model once and writing its own outputs.

The driver connects (``ray.init(address=...)``, or uses the Ray this process already initialised), starts the
actors (``num_gpus=1`` each when the cluster has GPUs: one actor per GPU; otherwise one per CPU), and keeps at
most :data:`~tessera.batch.worker.IN_FLIGHT_PER_WORKER` images queued on each actor, so the work in flight stays
bounded whatever the folder's size. Actors write outputs straight to the output folder: on a multi-machine cluster
it must be a path every node sees (a shared or network file system), as must the inputs and the model cache.
An actor that cannot load the model keeps the error (its ``__init__`` never raises: Ray would print the
traceback of every actor) and hands it to the driver, which raises that typed, one-line error once, before any
image, as a local run does; so does an actor whose creation failed otherwise (tessera missing on a node).

This module imports the worker, the plan and the report, never the module that calls it (:mod:`.run`).
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..errors import OptionError, ResourceError, TesseraError
from .plan import Job
from .report import BatchSummary, Outcome
from .worker import IN_FLIGHT_PER_WORKER, Processor, Settings, start_error

ACTOR_RESTARTS = 3  # Ray starts an actor whose process died (killed, out of memory, a crash) again, this often
TASK_RETRIES = 1  # a call in flight on an actor that died is run again on the restarted actor, this often
JOB_RESUBMITS = 2  # a job still lost with a dying actor after that is handed out again, this often, then fails


class RayWorker:
    """The body of a Ray actor: a :class:`~tessera.batch.worker.Processor` living in the actor's process, or the
    typed error that kept it from being built (:meth:`state` returns it; ``__init__`` never raises, or Ray would
    print every actor's traceback)."""

    def __init__(self, settings: Settings):
        self.processor: Processor | None = None
        self.error: TesseraError | None = None
        try:
            self.processor = Processor(settings)
        except Exception as error:  # noqa: BLE001 - handed to the driver by state(), typed
            self.error = start_error(error)

    def state(self) -> tuple[str | None, TesseraError | None]:
        """(the model's notice, None) once it is loaded, else (None, the error that kept it from loading): a value,
        not an exception, so that Ray logs no traceback."""
        if self.processor is None:
            return None, self.error
        return self.processor.notice, None

    def process(self, job: Job) -> Outcome:
        if self.processor is None:  # restarted after a crash, and the model no longer loads
            raise self.error  # type: ignore[misc]
        return self.processor(job)


def connect(address: str | None) -> Any:
    """The ``ray`` module, connected: an already initialised Ray as it is, else ``ray.init(address=address)``."""
    try:
        import ray
    except ImportError:
        raise OptionError("--ray needs the ray package (pip install 'ray[default]')") from None
    if not ray.is_initialized():
        try:
            ray.init(address=address or "auto")
        except ConnectionError as error:
            raise ResourceError(f"cannot reach a Ray cluster at {address!r} ({error}); start one with "
                                f"`ray start --head` or pass its address") from None
    return ray


def actor_plan(resources: dict[str, float], workers: int | None, jobs: int) -> tuple[int, dict[str, float]]:
    """How many actors to start and the resources each asks for.

    With GPUs in the cluster: one actor per GPU (``num_gpus=1``); otherwise one per CPU (``num_cpus=1``). An
    explicit ``workers`` overrides the count; never more actors than jobs.
    """
    gpus = int(resources.get("GPU", 0))
    cpus = max(1, int(resources.get("CPU", 1)))
    if gpus:
        count, ask = gpus, {"num_gpus": 1, "num_cpus": 1}
    else:
        count, ask = cpus, {"num_cpus": 1}
    if workers is not None:
        if workers < 1:
            raise OptionError(f"workers must be at least 1, got {workers}")
        count = workers
        if gpus and workers > gpus:  # share the GPUs evenly among more actors
            ask = {"num_gpus": gpus / workers, "num_cpus": 1}
    return max(1, min(count, jobs)), ask


def run_on_ray(jobs: list[Job], settings: Settings, *, address: str | None, workers: int | None,
               record: Callable[[Outcome], None], summary: BatchSummary) -> None:
    """Process ``jobs`` on Ray actors; outcomes come back to the driver, which records them in order of arrival."""
    ray = connect(address)
    count, ask = actor_plan(ray.cluster_resources(), workers, len(jobs))
    per_node = math.ceil(count / max(1, len(ray.nodes())))
    shared = replace(settings, ram_share=settings.ram_share / per_node,
                     device=settings.device if "num_gpus" not in ask else None)
    actor_class = ray.remote(max_restarts=ACTOR_RESTARTS, max_task_retries=TASK_RETRIES, **ask)(RayWorker)
    actors = [actor_class.remote(shared) for _ in range(count)]
    try:
        notice = _wait_started(ray, actors)
        if notice:
            summary.notices.append(notice)
        _dispatch(ray, actors, jobs, record, lambda: actor_class.remote(shared))
    finally:
        for actor in actors:
            ray.kill(actor)


def _wait_started(ray: Any, actors: list[Any]) -> str | None:
    """Wait until every actor has loaded its model; returns the first notice. An actor that could not load it
    stops the batch with its typed error here, before any image; one that died meanwhile is left to
    :func:`_dispatch` (restarted or replaced)."""
    states = []
    for ref in [actor.state.remote() for actor in actors]:
        try:
            states.append(ray.get(ref))
        except ray.exceptions.RayActorError as error:
            states.append((None, _creation_error(error)))
    for _notice, error in states:
        if error is not None:
            raise error
    return next((notice for notice, _error in states if notice), None)


def _creation_error(error: Exception) -> TesseraError | None:
    """For an actor whose creation task failed outside the Processor (``actor_init_failed``: the actor class
    could not be imported there, say), a TesseraError with the last line of Ray's message (the exception's own
    line, under its traceback); None for an actor that died otherwise (restarted or replaced)."""
    if not getattr(error, "actor_init_failed", False):
        return None
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return TesseraError(f"a Ray worker could not start: {lines[-1] if lines else type(error).__name__}")


def _raise_start_error(error: Exception) -> None:
    """Raise the typed error of an actor that could not load its model on a restart, when ``error`` (a Ray
    call's failure) carries one: its one-line message, not Ray's traceback. A job's own failure comes back as
    an outcome, never raised, so a :class:`~tessera.errors.TesseraError` cause is always a start error."""
    cause = getattr(error, "cause", None)
    if isinstance(cause, TesseraError):
        raise cause from None


class _Call:
    """A call in flight on an actor: ``job`` processed there, or (``job`` None) a check that the actor is up."""

    def __init__(self, job: Job | None, actor: Any, checks: int = 0):
        self.job, self.actor, self.checks = job, actor, checks


def _dispatch(ray: Any, actors: list[Any], jobs: list[Job], record: Callable[[Outcome], None],
              start_actor: Callable[[], Any]) -> None:
    """Hand jobs to free actor slots, wait for any result, record it; survive actors that die.

    A job lost with its actor (its process killed, out of memory; Ray already ran it again on the restarted
    actor :data:`TASK_RETRIES` times) goes back to the front of the queue, at most :data:`JOB_RESUBMITS` times,
    and its slot returns only once a check call (which waits out a restart) finds the actor up again. An actor
    a check finds dead for good (its restarts spent) is replaced by a new one, at most as many times as actors
    were started; replacements are appended to ``actors`` (the caller kills them all at the end) and get their
    slots as their check calls find them up. An actor that could not load the model (a replacement, or one
    restarted) stops the batch with its typed error. A job whose own processing fails (a bad image) comes back
    as a "failed" outcome from the worker and is recorded as it is. Jobs left when no actor is left fail with
    that reason.
    """
    exceptions = ray.exceptions
    free = deque(actor for _ in range(IN_FLIGHT_PER_WORKER) for actor in actors)
    queue = deque(jobs)
    running: dict[Any, _Call] = {}
    lost: dict[str, int] = {}  # job name -> times it was in flight on an actor that died
    gone: set[int] = set()  # id() of the actors found dead for good
    replacements = len(actors)

    while queue or running:
        while queue and free:
            job, actor = queue.popleft(), free.popleft()
            running[actor.process.remote(job)] = _Call(job, actor)
        if not running:
            for job in queue:
                record(Outcome(job.name, "failed", 0.0, "no Ray worker left: every actor died for good"))
            return
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            call = running.pop(ref)
            try:
                result = ray.get(ref)
            except exceptions.RayActorError as error:
                creation = _creation_error(error)
                if creation is not None:  # a replacement (or a restart) whose creation failed
                    raise creation from None
                if call.job is not None:
                    _requeue(call.job, error, lost, queue, record)
                dead = call.job is None and isinstance(error, exceptions.ActorDiedError)
                if not dead and call.checks <= ACTOR_RESTARTS:  # up again after its restart? ask it
                    running[call.actor.state.remote()] = _Call(None, call.actor, call.checks + 1)
                elif id(call.actor) not in gone:  # dead for good (or never back): its slots go to a new actor
                    gone.add(id(call.actor))
                    ray.kill(call.actor)
                    if replacements:
                        replacements -= 1
                        actors.append(start_actor())
                        for _ in range(IN_FLIGHT_PER_WORKER):  # each check that finds it up frees one slot
                            running[actors[-1].state.remote()] = _Call(None, actors[-1])
                continue
            except exceptions.RayError as error:  # not the actor's death: the call itself failed
                _raise_start_error(error)  # a restarted actor that could not load the model again
                if call.job is not None:
                    result = Outcome(call.job.name, "failed", 0.0, f"Ray worker failed: {_first_line(error)}")
            else:
                if call.job is None and result[1] is not None:  # a replacement that could not load the model
                    raise result[1]
            free.append(call.actor)
            if call.job is not None:
                record(result)


def _requeue(job: Job, error: Exception, lost: dict[str, int], queue: deque[Job],
             record: Callable[[Outcome], None]) -> None:
    """Put ``job``, lost with its dying actor, back at the front of ``queue``; past :data:`JOB_RESUBMITS` times
    (an image that kills every worker it reaches) record it as failed instead."""
    lost[job.name] = lost.get(job.name, 0) + 1
    if lost[job.name] <= JOB_RESUBMITS:
        queue.appendleft(job)
    else:
        record(Outcome(job.name, "failed", 0.0, f"the Ray worker died while processing it "
                                                f"({lost[job.name]} times): {_first_line(error)}"))


def _first_line(error: Exception) -> str:
    """The first line of ``error``'s message (Ray's run over many), or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
