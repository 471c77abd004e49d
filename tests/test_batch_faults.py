"""A batch survives a worker killed midway: on local Ray and on local ``--workers`` processes, every image is
written and none fails (the killed worker's in-flight images are redone on a restarted or replacement worker).

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
from tessera.batch import run_batch
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
