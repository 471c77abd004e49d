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

ACTOR_RESTARTS = 1  # an actor whose process died (out of memory, crash) is started again once


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
    actor_class = ray.remote(max_restarts=ACTOR_RESTARTS, **ask)(RayWorker)
    actors = [actor_class.remote(shared) for _ in range(count)]
    try:
        notice = ray.get(actors[0].notice.remote())
        if notice:
            summary.notices.append(notice)
        _dispatch(ray, actors, jobs, record)
    finally:
        for actor in actors:
            ray.kill(actor)


def _dispatch(ray: Any, actors: list[Any], jobs: list[Job], record: Callable[[Outcome], None]) -> None:
    """Hand jobs to free actor slots; wait for any result; a job whose actor died fails alone."""
    free = deque(actor for _ in range(IN_FLIGHT_PER_WORKER) for actor in actors)
    queue = deque(jobs)
    running: dict[Any, tuple[Job, Any]] = {}
    while queue or running:
        while queue and free:
            job, actor = queue.popleft(), free.popleft()
            running[actor.process.remote(job)] = (job, actor)
        ready, _ = ray.wait(list(running), num_returns=1)
        for ref in ready:
            job, actor = running.pop(ref)
            free.append(actor)
            try:
                outcome = ray.get(ref)
            except ray.exceptions.RayError as error:
                first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                outcome = Outcome(job.name, "failed", 0.0, f"Ray worker failed: {first}")
            record(outcome)
