"""Local worker processes: the same bytes as one process, and a worker that dies takes only its own image down."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tessera.batch import run_batch
from tessera.image.write import save_image
from tessera.models.descriptor import Model

CRASH_WIDTH = 33  # an image this wide kills the worker process that runs it


class CrashOnWidth(torch.nn.Module):
    """A 2x nearest-neighbour upscaler that ends its process abruptly on inputs CRASH_WIDTH pixels wide,
    as a segfault or the kernel's out-of-memory killer would."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] == CRASH_WIDTH:
            os._exit(3)
        return F.interpolate(x, scale_factor=2, mode="nearest")


@pytest.mark.slow
def test_workers_match_one_process_and_a_crash_fails_alone(tmp_path):
    rng = np.random.default_rng(3)
    widths = [20, 21, CRASH_WIDTH, 22, 23]
    (tmp_path / "in").mkdir()
    for i, width in enumerate(widths):
        save_image((rng.random((16, width, 3)) * 255).astype(np.uint8), tmp_path / "in" / f"p{i}.png")
    model = Model(CrashOnWidth(), "crash-on-width", scale=2, context=0)
    pooled = run_batch("upscale", tmp_path / "in", tmp_path / "pool", model=model, workers=2)
    assert pooled.counts() == {"done": 4, "skipped": 0, "failed": 1}
    assert pooled.failed[0].file == "p2.png" and "died" in pooled.failed[0].error
    # worker processes did the work (how it was shared between them depends on the machine's load)
    done = [o for o in pooled.outcomes if o.status == "done"]
    assert all(o.worker and o.worker.rsplit(":", 1)[1] != str(os.getpid()) for o in done)
    single = run_batch("upscale", tmp_path / "in", tmp_path / "one", model=model, pattern="p[0134].png")
    assert single.counts()["done"] == 4
    for i in (0, 1, 3, 4):
        assert (tmp_path / "pool" / f"p{i}.png").read_bytes() == (tmp_path / "one" / f"p{i}.png").read_bytes()


class DiesWhenLoaded(torch.nn.Module):
    """A 2x upscaler whose loading in another process ends that process abruptly, as the out-of-memory killer
    ends a worker loading a model too large for the machine."""

    def __init__(self) -> None:
        super().__init__()
        self.owner = os.getpid()

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if self.owner != os.getpid():
            os._exit(9)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest")


@pytest.mark.slow
def test_a_worker_that_dies_while_loading_the_model_stops_the_batch_once(tmp_path):
    """Not one "died" failure per image, each after a new process: the batch stops with one ResourceError."""
    from tessera.errors import ResourceError

    (tmp_path / "in").mkdir()
    for i in range(6):
        save_image(np.full((16, 16, 3), 40 * i, np.uint8), tmp_path / "in" / f"p{i}.png")
    model = Model(DiesWhenLoaded(), "dies-when-loaded", scale=2, context=0)
    with pytest.raises(ResourceError, match="died while it was starting"):
        run_batch("upscale", tmp_path / "in", tmp_path / "out", model=model, workers=2)
    assert not list((tmp_path / "out").glob("*.png"))


def test_a_worker_start_error_is_typed_and_one_line():
    from tessera.batch.worker import start_error
    from tessera.errors import ModelError, TesseraError

    typed = ModelError("x.pth: not a model")
    assert start_error(typed) is typed  # kept as it is: the CLI maps its class to an exit code
    other = start_error(RuntimeError("CUDA error:\n  out of memory"))
    assert type(other) is TesseraError
    assert str(other) == "a batch worker could not start: RuntimeError: CUDA error: out of memory"
