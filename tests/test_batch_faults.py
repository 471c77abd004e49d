"""A batch survives a worker killed midway: on local Ray and on local ``--workers`` processes, every image is
written and none fails (the killed worker's in-flight images are redone on a restarted or replacement worker).
The Ray driver's bookkeeping is also run against a fake Ray: every image reported once whichever actors die, and
an actor that cannot load the model stopping the batch with its typed error.

The kill is deterministic: after the third finished image, the test SIGKILLs the process that wrote it (its pid
is in the outcome's ``worker``), so that process still has queued work.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest

from conftest import random_compact
from tessera.batch import Outcome, run_batch
from tessera.batch.plan import Job
from tessera.batch.ray import _dispatch, _wait_started
from tessera.errors import ModelError, TesseraError
from tessera.image.write import save_image
from tessera.models.descriptor import Model

SRC = Path(__file__).resolve().parents[1] / "src"
IMAGES = 20
KILL_AFTER = 3  # finished images before the kill


def compact() -> Model:
    return Model(random_compact(2, num_feat=16, num_conv=4), "compact", scale=2)


def photos(folder: Path) -> Path:
    """IMAGES small PNGs in ``folder``/in."""
    rng = np.random.default_rng(3)
    (folder / "in").mkdir()
    for i in range(IMAGES):
        save_image((rng.random((48, 48, 3)) * 255).astype(np.uint8), folder / "in" / f"p{i:02d}.png")
    return folder / "in"


class Killer:
    """An ``on_outcome`` hook that SIGKILLs the worker process of the KILL_AFTER-th finished image, once."""

    def __init__(self) -> None:
        self.killed: int | None = None
        self.workers: set[int] = set()

    def __call__(self, outcome, finished: int, total: int) -> None:
        pid = int(outcome.worker.rsplit(":", 1)[1]) if outcome.worker else None
        if pid is not None:
            self.workers.add(pid)
        if self.killed is None and finished >= KILL_AFTER and pid is not None:
            assert pid != os.getpid()
            os.kill(pid, signal.SIGKILL)
            self.killed = pid


def check(summary, killer: Killer, out: Path) -> None:
    """Every image done, none failed, the kill happened and a new process took over part of the work."""
    assert killer.killed is not None
    assert summary.counts() == {"done": IMAGES, "skipped": 0, "failed": 0}, [o.error for o in summary.failed]
    assert sorted(p.name for p in out.glob("*.png")) == [f"p{i:02d}.png" for i in range(IMAGES)]
    # a process that started after the kill (the restarted or replacement worker) wrote some images
    assert len(killer.workers - {killer.killed}) >= 2


@pytest.mark.slow
def test_ray_batch_survives_a_killed_actor(tmp_path):
    ray = pytest.importorskip("ray")
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    try:
        killer = Killer()
        summary = run_batch("upscale", photos(tmp_path), tmp_path / "out", model=compact(), ray="auto",
                            on_outcome=killer)
    finally:
        ray.shutdown()
    check(summary, killer, tmp_path / "out")


@pytest.mark.slow
def test_local_workers_survive_a_killed_process(tmp_path):
    killer = Killer()
    summary = run_batch("upscale", photos(tmp_path), tmp_path / "out", model=compact(), workers=2,
                        on_outcome=killer)
    check(summary, killer, tmp_path / "out")


class _Errors:
    """The part of ``ray.exceptions`` :func:`tessera.batch.ray._dispatch` uses."""

    class RayError(Exception):
        pass

    class RayActorError(RayError):
        pass

    class ActorDiedError(RayActorError):
        def __init__(self, message: str, actor_init_failed: bool = False):
            super().__init__(message)
            self.actor_init_failed = actor_init_failed

    class RayTaskError(RayError):
        def __init__(self, cause: Exception):
            super().__init__(f"a traceback over many lines\n{cause}")
            self.cause = cause


class _Ref:
    def __init__(self, call):
        self.call = call


class _Method:
    def __init__(self, actor: "_Actor", name: str):
        self.actor, self.name = actor, name

    def remote(self, *args):
        return _Ref(lambda: getattr(self.actor, self.name)(*args))


class _Actor:
    """A fake actor: healthy (processes every job), ``dead`` (every call fails as on a dead actor's),
    ``broken`` (up, but its model did not load: state() says why) or ``uncreatable`` (its creation task failed,
    as where the actor class cannot be imported)."""

    def __init__(self, kind: str):
        self.kind = kind
        self.process, self.state = _Method(self, "do_process"), _Method(self, "do_state")

    def do_process(self, job):
        self.fail()
        if self.kind == "broken":
            raise _Errors.RayTaskError(ModelError("x.pth: not a model"))
        return Outcome(job.name, "done", 0.0, worker=f"fake:{id(self)}")

    def do_state(self):
        self.fail()
        return (None, ModelError("x.pth: not a model")) if self.kind == "broken" else (None, None)


    def fail(self) -> None:
        if self.kind == "dead":
            raise _Errors.ActorDiedError("the actor died")
        if self.kind == "uncreatable":
            raise _Errors.ActorDiedError("The actor died because of an error raised in its creation task, ...\n"
                                         "Traceback (most recent call last):\n  ...\n"
                                         "ModuleNotFoundError: No module named 'tessera'\n", actor_init_failed=True)


class _FakeRay:
    """Ray's calls as _dispatch makes them, run at once in this process."""

    exceptions = _Errors

    def __init__(self):
        self.killed = 0

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.call()

    def kill(self, actor):
        self.killed += 1


def fake_jobs(count: int) -> list[Job]:
    return [Job(Path(f"p{i}.png"), f"p{i}.png", Path(f"out/p{i}.png"), Path(f"out/p{i}.tif")) for i in range(count)]


@pytest.mark.parametrize("kinds, replacement", [(["ok", "ok"], "ok"), (["dead", "ok"], "dead"),
                                                (["dead", "dead"], "dead"), (["dead", "dead"], "ok")])
def test_ray_dispatch_reports_every_image_once(kinds, replacement):
    outcomes: list[Outcome] = []
    jobs = fake_jobs(7)
    _dispatch(_FakeRay(), [_Actor(kind) for kind in kinds], jobs, outcomes.append, lambda: _Actor(replacement))
    assert sorted(o.file for o in outcomes) == sorted(job.name for job in jobs)
    if "ok" in kinds or replacement == "ok":
        assert all(o.status == "done" for o in outcomes), [o.error for o in outcomes]
    else:
        assert all(o.status == "failed" and "died" in o.error for o in outcomes)


def test_ray_dispatch_stops_on_a_replacement_that_cannot_load_the_model():
    outcomes: list[Outcome] = []
    with pytest.raises(ModelError, match="not a model"):
        _dispatch(_FakeRay(), [_Actor("dead")], fake_jobs(3), outcomes.append, lambda: _Actor("broken"))
    assert outcomes == []
    with pytest.raises(ModelError, match="not a model"):  # an actor restarted after a crash that no longer loads
        _dispatch(_FakeRay(), [_Actor("broken")], fake_jobs(3), outcomes.append, lambda: _Actor("ok"))
    with pytest.raises(TesseraError, match="^a Ray worker could not start: ModuleNotFoundError: No module named"):
        _dispatch(_FakeRay(), [_Actor("dead")], fake_jobs(3), outcomes.append, lambda: _Actor("uncreatable"))
    assert outcomes == []


def test_ray_start_waits_for_every_actor_and_raises_a_start_error_typed():
    assert _wait_started(_FakeRay(), [_Actor("ok"), _Actor("dead")]) is None  # a dead one is left to _dispatch
    with pytest.raises(ModelError, match="^x.pth: not a model$"):
        _wait_started(_FakeRay(), [_Actor("ok"), _Actor("broken")])
    with pytest.raises(TesseraError, match="No module named 'tessera'$"):
        _wait_started(_FakeRay(), [_Actor("uncreatable"), _Actor("ok")])
