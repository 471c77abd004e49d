"""Where and how a job runs: device, precision, memory budget, progress and cancel, out-of-memory helpers.

A :class:`Runtime` is created once per job and passed down; models carry no per-call state. The budget is what
the engine may use on the device (``max_memory``, or most of the free device memory on a GPU, a quarter of the
available host memory on the CPU); every tile and batch choice is checked against it.
"""
from __future__ import annotations

import contextlib
import copy
import ctypes
import functools
import gc
import os
import threading
import time
import weakref
from dataclasses import dataclass, field
from collections.abc import Iterator
from typing import Any

import torch

from ..errors import CancelledError, OptionError, ResourceError
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
    """``auto`` -> bf16/fp16 on a GPU where the model supports it; on the CPU fp32, or bf16 where the processor
    computes it natively and it was measured faster and within 2 levels (:func:`cpu_bf16_pays_off`); explicit
    values are checked."""
    name = str(precision or "auto").lower()
    if name == "auto":
        if model is None:
            return "fp32"
        if device.type == "cpu":
            return "bf16" if cpu_bf16_pays_off(model) else "fp32"
        if device.type == "cuda" and model.supports_bfloat16 and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp16" if model.supports_half else "fp32"
    if name not in PRECISION_DTYPES:
        raise OptionError(f"unknown precision {precision!r} (choose from auto, fp32, fp16, bf16)")
    if model is not None and name not in model.precisions:
        raise OptionError(f"model {model.name} does not support {name} (supports {', '.join(model.precisions)})")
    return name


_BF16_MAX_LEVELS = 2.0  # the accuracy bf16 must keep against fp32, in uint8 levels, for auto to choose it
_bf16_verdicts: "weakref.WeakKeyDictionary[Any, bool]" = weakref.WeakKeyDictionary()


CPU_BF16_ENV = "TESSERA_CPU_BF16"  # "off": --precision auto never takes bf16 on the CPU (results stay fp32-exact)


@functools.lru_cache(maxsize=1)
def native_cpu_bf16() -> bool:
    """Whether this processor has bf16 arithmetic in hardware (the ``avx512_bf16`` or ``amx_bf16`` flags of
    Linux's /proc/cpuinfo); elsewhere bf16 is emulated, several times slower than fp32, and never chosen.
    ``TESSERA_CPU_BF16=off`` in the environment answers False, for runs that must match fp32 to the level."""
    if os.environ.get(CPU_BF16_ENV, "").strip().lower() in ("off", "0", "no", "false"):
        return False
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def cpu_bf16_pays_off(model: Model) -> bool:
    """Whether bf16 beats fp32 on this CPU for this network, measured once per network: a forward of a
    photo-like probe (smooth random shapes) in each, bf16 chosen only when faster and at most 2 levels off."""
    if not (model.is_module and model.supports_bfloat16 and not model.takes_mask and native_cpu_bf16()):
        return False
    key = model.network
    if key not in _bf16_verdicts:
        try:
            _bf16_verdicts[key] = bf16_verdict(*_measure_cpu_bf16(model))
        except Exception:  # noqa: BLE001 - a network that cannot run the probe simply stays in fp32
            _bf16_verdicts[key] = False
    return _bf16_verdicts[key]


def bf16_verdict(fp32_seconds: float, bf16_seconds: float, levels: float) -> bool:
    """bf16 is worth it when faster than fp32 and at most :data:`_BF16_MAX_LEVELS` uint8 levels off."""
    return bf16_seconds < fp32_seconds and levels <= _BF16_MAX_LEVELS


def _measure_cpu_bf16(model: Model) -> tuple[float, float, float]:
    """Seconds of an fp32 and a bf16 forward of a photo-like probe, and their max difference in uint8 levels."""
    from dataclasses import replace

    side = max(96, model.size_requirements.minimum)
    side = -(-side // model.size_requirements.multiple_of) * model.size_requirements.multiple_of
    generator = torch.Generator().manual_seed(0)
    coarse = torch.rand((1, model.input_channels, 12, 12), generator=generator)
    probe = torch.nn.functional.interpolate(coarse, size=(side, side), mode="bicubic").clamp(0, 1)
    # both on copies, so the caller's network (maybe in use elsewhere) is neither moved nor cast
    fp32 = replace(model, network=copy.deepcopy(model.network)).to("cpu", "fp32").to_layout()
    bf16 = replace(model, network=copy.deepcopy(model.network)).to("cpu", "bf16").to_layout()
    outputs, seconds = [], []
    with torch.inference_mode():
        for variant, dtype in ((fp32, torch.float32), (bf16, torch.bfloat16)):
            x = probe.to(dtype)
            variant(x)  # warm-up: first calls pick kernels
            start = time.perf_counter()
            outputs.append(variant(x).float())
            seconds.append(time.perf_counter() - start)
    return seconds[0], seconds[1], float((outputs[0] - outputs[1]).abs().max()) * 255


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
    """Where and how a job runs; created once per job and passed down (no per-call state on models).

    ``pipelined`` False runs each batch alone, start to end (no loader thread, no overlap): the same pixels,
    for benchmarks and tests that compare the two."""

    device: torch.device
    precision: str = "fp32"
    budget: int = 1 << 30
    progress: ProgressCallback | None = None
    cancel: threading.Event | None = None
    started: float = field(default_factory=time.monotonic)
    pipelined: bool = True

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
        """Move the model to this runtime's device, precision and memory order (in place)."""
        if model.is_module and (model.device != self.device or model.dtype != self.dtype):
            model.to(self.device, self.precision)
        if not model.in_layout:
            model.to_layout()
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


def precision_failure(exc: BaseException, model: Model, runtime: Runtime) -> OptionError | None:
    """The one-line error for a network that fails in the reduced precision it was asked to run in (a float32
    buffer inside a bf16 network, an operation without a half kernel on this device), or None for other errors."""
    if runtime.precision == "fp32" or not isinstance(exc, (RuntimeError, TypeError)):
        return None
    text = str(exc).strip()
    if not any(word in text for word in ("dtype", "type", "Half", "BFloat16", "not implemented for")):
        return None
    first = text.splitlines()[0] if text else type(exc).__name__
    return OptionError(f"model {model.name} does not run in {runtime.precision} on {runtime.device} "
                       f"({first[:160]}); use precision fp32")


@contextlib.contextmanager
def probe_errors(model: Model, runtime: Runtime, what: str) -> Iterator[None]:
    """Around a measurement's forwards: a precision the network cannot run in becomes an :class:`OptionError`,
    an out-of-memory a :class:`ResourceError`, both in one line; anything else propagates."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - two kinds translated, the rest re-raised
        failure = precision_failure(exc, model, runtime)
        if failure is not None:
            raise failure from None
        if not is_out_of_memory(exc):
            raise
    else:
        return
    free_memory(runtime.device)
    from ..options import format_bytes

    raise ResourceError(f"out of memory {what} for {model.name} on {runtime.device} (budget "
                        f"{format_bytes(runtime.budget)}); free memory or lower max_memory")
