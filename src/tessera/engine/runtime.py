"""Where and how a job runs: device, precision, memory budget, progress and cancel, out-of-memory helpers.

A :class:`Runtime` is created once per job and passed down; models carry no per-call state. The budget is what
the engine may use on the device (``max_memory``, or most of the free device memory on a GPU, a quarter of the
available host memory on the CPU); every tile and batch choice is checked against it.
"""
from __future__ import annotations

import ctypes
import gc
import threading
import time
from dataclasses import dataclass, field

import torch

from ..errors import CancelledError, OptionError
from ..models.descriptor import PRECISION_DTYPES, Model
from ..progress import ProgressCallback, ProgressEvent

_CPU_DEFAULT_BUDGET_FRACTION = 0.25  # of available host memory, when no --max-memory is given
_GPU_DEFAULT_BUDGET_FRACTION = 0.85  # of free device memory


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``/None -> cuda, then mps, then cpu; anything else is checked to exist."""
    name = str(device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise OptionError(f"unknown device {device!r} (choose from auto, cpu, cuda, cuda:N, mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise OptionError(f"device {device!r} requested but CUDA is not available here")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise OptionError(f"device {device!r} does not exist ({torch.cuda.device_count()} CUDA devices)")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise OptionError(f"device {device!r} requested but MPS is not available here")
    if dev.type not in ("cpu", "cuda", "mps"):
        raise OptionError(f"unsupported device {device!r} (choose from auto, cpu, cuda, mps)")
    return dev


def resolve_precision(precision: str | None, device: torch.device, model: Model | None) -> str:
    """``auto`` -> bf16/fp16 on a GPU where the model supports it, fp32 on the CPU; explicit values are checked."""
    name = str(precision or "auto").lower()
    if name == "auto":
        if device.type == "cpu" or model is None:
            return "fp32"
        if device.type == "cuda" and model.supports_bfloat16 and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp16" if model.supports_half else "fp32"
    if name not in PRECISION_DTYPES:
        raise OptionError(f"unknown precision {precision!r} (choose from auto, fp32, fp16, bf16)")
    if model is not None and name not in model.precisions:
        raise OptionError(f"model {model.name} does not support {name} (supports {', '.join(model.precisions)})")
    return name


def available_host_memory() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def default_budget(device: torch.device) -> int:
    """Bytes the engine may use when no ``max_memory`` is given: most of the free device memory on a GPU,
    a quarter of the available host memory on the CPU."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * _GPU_DEFAULT_BUDGET_FRACTION)
    if device.type == "mps":
        recommended = getattr(torch.mps, "recommended_max_memory", lambda: available_host_memory())()
        return int((recommended - torch.mps.driver_allocated_memory()) * _GPU_DEFAULT_BUDGET_FRACTION)
    return int(available_host_memory() * _CPU_DEFAULT_BUDGET_FRACTION)


@dataclass
class Runtime:
    """Where and how a job runs; created once per job and passed down (no per-call state on models)."""

    device: torch.device
    precision: str = "fp32"
    budget: int = 1 << 30
    progress: ProgressCallback | None = None
    cancel: threading.Event | None = None
    started: float = field(default_factory=time.monotonic)

    @classmethod
    def create(cls, device: str | torch.device | None = "auto", precision: str | None = "auto",
               max_memory: int | str | None = None, *, model: Model | None = None,
               progress: ProgressCallback | None = None, cancel: threading.Event | None = None) -> "Runtime":
        from ..options import parse_size

        dev = resolve_device(device)
        if model is not None and not model.is_module and str(device or "auto").lower() == "auto":
            dev = torch.device("cpu")  # weight-free methods compute on the host: no round trip to a GPU
        try:
            budget = parse_size(max_memory) if max_memory is not None else default_budget(dev)
        except ValueError as exc:
            raise OptionError(f"option max_memory: {exc}") from None
        return cls(dev, resolve_precision(precision, dev, model), int(budget), progress, cancel)

    @property
    def dtype(self) -> torch.dtype:
        return PRECISION_DTYPES[self.precision]

    def report(self, stage: str, done: int, total: int, message: str = "") -> None:
        """Send a progress event (with an ETA from the elapsed time) to the subscriber, if any."""
        if self.progress is None:
            return
        elapsed = time.monotonic() - self.started
        eta = elapsed / done * (total - done) if done else None
        self.progress(ProgressEvent(stage, done, total, elapsed, eta, message))

    def check_cancelled(self) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise CancelledError("cancelled")

    def prepare(self, model: Model) -> Model:
        """Move the model to this runtime's device and precision (in place)."""
        if model.is_module and (model.device != self.device or model.dtype != self.dtype):
            model.to(self.device, self.precision)
        return model

# ----------------------------------------------------------------------------------------------- out of memory


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA, MPS and CPU allocation failures, whatever exception class the backend used."""
    if isinstance(exc, (torch.OutOfMemoryError, MemoryError)):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text
                                              or "not enough memory" in text or "failed to allocate" in text)


def free_memory(device: torch.device) -> None:
    """Give cached blocks back after an out-of-memory error so the retry starts clean."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()
    else:
        trim_host_heap()


def trim_host_heap() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it per thread otherwise); a no-op elsewhere."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
