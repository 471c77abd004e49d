"""The batch pipeline: host staging, the forward, and the copy back, arranged so the device does not wait.

One batch goes through three steps. :func:`stage_batch` (host work: read the windows, convert to float, stack into
NCHW, in pinned memory when the device is a GPU) runs on a loader thread for the *next* batch while the device
runs the current one. :func:`launch` copies a staged batch to the device on a side stream, queues the forward
on the compute stream and the copy of its result back on another side stream; on a GPU all of that is
asynchronous and :meth:`Launched.collect` waits for the copy only when the result is merged, after the next
batch has been queued. On the CPU :func:`launch` simply computes. The arithmetic is the same either way: the
pipeline changes when work happens, never what is computed, so results are those of running each batch
alone (on the CPU bit for bit; on a GPU cuDNN's autotuner may pick other kernels, see
:func:`tuned_for_same_shapes`).

Device memory: besides the forward's own peak, a batch's input (being copied in) and the previous batch's
output (being copied out) may be alive at once; :func:`in_flight_bytes` is what the engine reserves for them.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..models.descriptor import Model
from .runtime import Runtime


def stage_batch(windows: list[np.ndarray], runtime: Runtime, convert: Callable[[np.ndarray], np.ndarray]) -> torch.Tensor:
    """Stack HxWxC windows into one NCHW float32 host tensor (pinned on a GPU, so the copy can be asynchronous).

    The tensor keeps the NHWC memory order (an NCHW view with channels-last strides): that is the layout
    channels-last networks read, and a contiguous copy is made on the device for the others."""
    n = len(windows)
    h, w, c = windows[0].shape
    pinned = runtime.device.type == "cuda"
    host = torch.empty((n, h, w, c), dtype=torch.float32, pin_memory=pinned)
    target = host.numpy()
    for i, window in enumerate(windows):
        target[i] = convert(window)
    return host.permute(0, 3, 1, 2)


@dataclass
class Launched:
    """A batch whose forward has been queued; :meth:`collect` returns its NCHW float32 result on the host."""

    result: torch.Tensor
    ready: Any = None  # a CUDA event recorded after the copy back, None when the result is already there

    def collect(self) -> torch.Tensor:
        if self.ready is not None:
            self.ready.synchronize()
        return self.result


class Streams:
    """The two side streams of a CUDA job (copy in, copy out); nothing on other devices."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.copy_in = torch.cuda.Stream(device) if self.cuda else None
        self.copy_out = torch.cuda.Stream(device) if self.cuda else None


def launch(model: Model, batch: torch.Tensor, runtime: Runtime, streams: Streams,
           masks: torch.Tensor | None = None) -> Launched:
    """Queue one staged NCHW float32 batch (and its N1HW masks) through ``model``; see :class:`Launched`."""
    req = model.size_requirements
    h, w = batch.shape[-2:]
    x, m = _to_device(batch, runtime, streams), None if masks is None else _to_device(masks, runtime, streams)
    pad_w, pad_h = req.get_padding(w, h)
    if pad_w or pad_h:
        x = _pad(x, pad_w, pad_h)
        m = None if m is None else _pad(m, pad_w, pad_h)
    x = x.contiguous(memory_format=torch.channels_last if model.channels_last else torch.contiguous_format)
    with torch.inference_mode():
        y = model(x, m)
    y = y[..., : h * model.scale, : w * model.scale]
    if not streams.cuda:
        return Launched(y.float().cpu())
    compute = torch.cuda.current_stream(runtime.device)
    streams.copy_out.wait_stream(compute)
    with torch.cuda.stream(streams.copy_out):
        host = torch.empty(y.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(y, non_blocking=True)  # converts to float32 on the way, into the pinned buffer
        y.record_stream(streams.copy_out)
        ready = torch.cuda.Event()
        ready.record(streams.copy_out)
    return Launched(host, ready)


def _to_device(host: torch.Tensor, runtime: Runtime, streams: Streams) -> torch.Tensor:
    """The staged tensor on the runtime's device and dtype; on a GPU copied on the side stream."""
    if not streams.cuda:
        return host.to(runtime.device, runtime.dtype)
    with torch.cuda.stream(streams.copy_in):  # same dtype: a direct copy from pinned memory; then cast there
        moved = host.to(runtime.device, non_blocking=True).to(runtime.dtype)
    compute = torch.cuda.current_stream(runtime.device)
    compute.wait_stream(streams.copy_in)
    moved.record_stream(compute)
    return moved


def _pad(t: torch.Tensor, pad_w: int, pad_h: int) -> torch.Tensor:
    """Pad right/bottom: reflect as far as the image allows, then replicate (as spandrel does)."""
    rw, rh = min(pad_w, t.shape[-1] - 1), min(pad_h, t.shape[-2] - 1)
    t = F.pad(t, (0, rw, 0, rh), mode="reflect")
    if pad_w - rw or pad_h - rh:
        t = F.pad(t, (0, pad_w - rw, 0, pad_h - rh), mode="replicate")
    return t


def in_flight_bytes(model: Model, runtime: Runtime, height: int, width: int, batch: int) -> int:
    """Device bytes the pipeline holds on a GPU beyond one forward's peak: the next batch's input (float32 as
    copied in, then cast) and the previous batch's output (its float32 copy for the way back as well).
    Zero elsewhere, where batches do not overlap on the device."""
    if runtime.device.type != "cuda":
        return 0
    itemsize = torch.empty((), dtype=runtime.dtype).element_size()
    per_pixel = model.input_channels * (4 + itemsize) + model.output_channels * model.scale ** 2 * (itemsize + 2 * 4)
    return int(batch * height * width * per_pixel)


class _Inline:
    """An executor that runs each job at once on the calling thread: the engine one batch at a time."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to whoever reads the future, as a thread would
            future.set_exception(exc)
        return future


@contextlib.contextmanager
def loader(pipelined: bool = True) -> Iterator[Any]:
    """One loader thread for a job's host staging, joined when the job ends however it ends; with
    ``pipelined`` False, staging runs inline instead (each batch staged, run and merged before the next)."""
    if not pipelined:
        yield _Inline()
        return
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="tessera-loader")
    try:
        yield pool
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_AUTOTUNE_MIN_REPEATS = 4  # cuDNN's search pays off only for a window shape that repeats this often


@contextlib.contextmanager
def tuned_for_same_shapes(device: torch.device, tiles: list[Any]) -> Iterator[None]:
    """cuDNN's autotuner for a job whose tiles repeat one window shape at least 4 times (the search is paid once
    per shape), restored after. It may pick other kernels than the default: on a GPU the pipelined and the
    one-batch-at-a-time engine compute the same thing, not necessarily the same last bits."""
    shapes = Counter(t.window_shape for t in tiles)
    if device.type != "cuda" or not shapes or max(shapes.values()) < _AUTOTUNE_MIN_REPEATS:
        yield
        return
    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.backends.cudnn.benchmark = before
