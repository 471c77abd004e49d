"""Batch jobs on a Ray cluster: one actor per worker, each loading the model once and writing its own outputs.

The driver connects (``ray.init(address=...)``, or uses the Ray this process already initialised), starts the
actors (``num_gpus=1`` each when the cluster has GPUs: one actor per GPU; otherwise one per CPU), and keeps at
most :data:`~tessera.batch.worker.IN_FLIGHT_PER_WORKER` images queued on each actor, so the work in flight stays
bounded whatever the folder's size. Actors write outputs straight to the output folder: on a multi-machine cluster
it must be a path every node sees (a shared or network file system), as must the inputs and the model cache.

This module imports the worker, the plan and the report, never the module that calls it (:mod:`.run`).
"""
from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from ..errors import OptionError, ResourceError
from .plan import Job
from .report import BatchSummary, Outcome
from .worker import IN_FLIGHT_PER_WORKER, Processor, Settings

ACTOR_RESTARTS = 3  # Ray starts an actor whose process died (killed, out of memory, a crash) again, this often
TASK_RETRIES = 1  # a call in flight on an actor that died is run again on the restarted actor, this often
JOB_RESUBMITS = 2  # a job still lost with a dying actor after that is handed out again, this often, then fails


class RayWorker:
    """The body of a Ray actor: a :class:`~tessera.batch.worker.Processor` living in the actor's process."""

    def __init__(self, settings: Settings):
        self.processor = Processor(settings)

    def process(self, job: Job) -> Outcome:
        return self.processor(job)

    def notice(self) -> str | None:
        return self.processor.notice


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
        notice = ray.get(actors[0].notice.remote())
        if notice:
            summary.notices.append(notice)
        _dispatch(ray, actors, jobs, record, lambda: actor_class.remote(shared))
    finally:
        for actor in actors:
            ray.kill(actor)


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
    were started; replacements are appended to ``actors`` (the caller kills them all at the end). A job whose
    own processing fails (a bad image) comes back as a "failed" outcome from the worker and is recorded as it
    is. Jobs left when no actor is left fail with that reason.
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
                if call.job is not None:
                    _requeue(call.job, error, lost, queue, record)
                dead = call.job is None and isinstance(error, exceptions.ActorDiedError)
                if not dead and call.checks <= ACTOR_RESTARTS:  # up again after its restart? ask it
                    running[call.actor.notice.remote()] = _Call(None, call.actor, call.checks + 1)
                elif id(call.actor) not in gone:  # dead for good (or never back): its slots go to a new actor
                    gone.add(id(call.actor))
                    ray.kill(call.actor)
                    if replacements:
                        replacements -= 1
                        actors.append(start_actor())
                        free.extend([actors[-1]] * IN_FLIGHT_PER_WORKER)
                continue
            except exceptions.RayError as error:  # not the actor's death: the call itself failed
                if call.job is not None:
                    result = Outcome(call.job.name, "failed", 0.0, f"Ray worker failed: {_first_line(error)}")
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
