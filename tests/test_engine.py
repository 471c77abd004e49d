"""The tiling engine: tiled == untiled for local networks, bounded back-off on out-of-memory, progress, cancel."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch

from conftest import random_compact, rrdb_x2
from tessera import engine, tiling
from tessera.engine import Runtime, apply_tiles, measure_context, tiled_apply
from tessera.errors import CancelledError, OptionError, ResourceError
from tessera.models.descriptor import Model


def untiled(network: torch.nn.Module, image: np.ndarray) -> np.ndarray:
    """The reference: the whole image through the network at once, float32 HxWxC."""
    x = torch.from_numpy(image.astype(np.float32) / (255.0 if image.dtype == np.uint8 else 1.0))
    with torch.inference_mode():
        y = network(x.permute(2, 0, 1)[None]).clamp(0, 1)
    return y[0].permute(1, 2, 0).numpy()


@pytest.fixture(scope="module")
def networks():
    return {"compact_x4": random_compact(), "rrdb_x2": rrdb_x2()}


@pytest.mark.parametrize("name", ["compact_x4", "rrdb_x2"])
@pytest.mark.parametrize("tile", [64, 96])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("dtype", ["uint8", "float32"])
@pytest.mark.slow
def test_tiled_equals_untiled(networks, photo_uint8, name, tile, batch, dtype):
    network = networks[name]
    image = photo_uint8 if dtype == "uint8" else photo_uint8.astype(np.float32) / 255.0
    reference = untiled(network, image)
    result = tiled_apply(network, image, tile=tile, tile_batch=batch, device="cpu")
    assert result.dtype == image.dtype
    assert result.shape == reference.shape
    scale = 255.0 if dtype == "uint8" else 1.0
    assert np.abs(result.astype(np.float32) / scale - reference).max() <= 1 / 255


def test_measured_context_covers_the_receptive_field():
    # Compact: a 3x3 conv in, num_conv 3x3 convs, a 3x3 conv out -> radius num_conv + 2 input pixels
    model = Model(random_compact(num_feat=8, num_conv=4), "compact", scale=4)
    radius = measure_context(model, Runtime.create("cpu"))
    assert 6 <= radius <= 8
    assert measure_context(model) == radius  # cached


@pytest.mark.slow
def test_a_too_small_pad_is_not_exact(networks, photo_uint8):
    """The exactness above is earned by the pad: without context the seams show."""
    network = networks["compact_x4"]
    reference = untiled(network, photo_uint8)
    result = tiled_apply(network, photo_uint8, tile=64, tile_pad=0, device="cpu")
    assert np.abs(result.astype(np.float32) / 255 - reference).max() > 4 / 255


@pytest.mark.slow
def test_feather_blend_stays_close_for_a_local_network(networks, photo_uint8):
    network = networks["compact_x4"]
    reference = untiled(network, photo_uint8)
    result = tiled_apply(network, photo_uint8, tile=64, blend="feather", device="cpu")
    assert np.abs(result.astype(np.float32) / 255 - reference).max() <= 2 / 255


@pytest.mark.slow
def test_tensor_in_tensor_out(networks, photo_uint8):
    network = networks["compact_x4"]
    x = torch.from_numpy(photo_uint8[:96, :80].astype(np.float32) / 255).permute(2, 0, 1)[None].repeat(2, 1, 1, 1)
    y = tiled_apply(network, x, tile=32, device="cpu")
    assert isinstance(y, torch.Tensor) and y.shape == (2, 3, 384, 320) and y.dtype == x.dtype
    with torch.inference_mode():
        assert (y - network(x).clamp(0, 1)).abs().max() <= 1e-5


def test_scale_of_a_plain_callable_is_inferred(photo_uint8):
    def nearest_x2(x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")

    out = tiled_apply(nearest_x2, photo_uint8, tile=50, tile_pad=0, device="cpu")
    assert out.shape == (600, 874, 3)
    assert (out[::2, ::2] == photo_uint8).all()


class OutOfMemoryAbove(torch.nn.Module):
    """Wraps a network and raises torch.OutOfMemoryError when a batch holds more than ``limit`` pixels."""

    def __init__(self, network: torch.nn.Module, limit: int):
        super().__init__()
        self.network = network
        self.limit = limit
        self.failures = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] * x.shape[2] * x.shape[3] > self.limit:
            self.failures += 1
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB (simulated)")
        return self.network(x)


@pytest.mark.slow
def test_out_of_memory_backs_off_and_computes_every_tile_once(networks, photo_uint8, monkeypatch):
    network = networks["compact_x4"]
    reference = untiled(network, photo_uint8)
    flaky = OutOfMemoryAbove(network, limit=80 * 80)
    written = np.zeros(photo_uint8.shape[:2], dtype=int)
    original_add = tiling.Canvas.add

    def counting_add(self, tile, result, scale):
        top, bottom, left, right = tile.keep
        written[top:bottom, left:right] += 1
        return original_add(self, tile, result, scale)

    monkeypatch.setattr(tiling.Canvas, "add", counting_add)
    tiled = apply_tiles(Model(flaky, "flaky", scale=4, context=11), photo_uint8, tile=160, tile_batch=4,
                        device="cpu")
    result, plan = tiled.output, [tiled.plan]
    assert flaky.failures >= 3
    assert plan[0].backoffs[:2] == ["batch -> 2", "batch -> 1"] and "tile -> 40" in plan[0].backoffs
    assert (written == 1).all(), "every output pixel is merged exactly once"
    assert np.abs(result.astype(np.float32) / 255 - reference).max() <= 1 / 255


def test_out_of_memory_at_the_smallest_tile_is_a_resource_error(networks, photo_uint8):
    flaky = OutOfMemoryAbove(networks["compact_x4"], limit=10)
    with pytest.raises(ResourceError, match="out of memory"):
        tiled_apply(Model(flaky, "flaky", scale=4, context=4), photo_uint8, tile=64, device="cpu")


def test_other_errors_are_not_swallowed(photo_uint8):
    def broken(x):
        raise RuntimeError("shape mismatch in layer 3")

    with pytest.raises(RuntimeError, match="shape mismatch"):
        tiled_apply(Model(broken, "broken", scale=1, context=0), photo_uint8, tile=64, device="cpu")


@pytest.mark.slow
def test_auto_tile_follows_the_memory_budget(networks, photo_uint8):
    model = Model(networks["compact_x4"], "compact", scale=4)
    roomy = [apply_tiles(model, photo_uint8, device="cpu").plan]
    tight = [apply_tiles(model, photo_uint8, device="cpu", max_memory="6MB").plan]
    assert roomy[0].tile >= 200  # with room, the CPU's cost model picks windows near the cache-friendly size
    assert tight[0].tiles > roomy[0].tiles and tight[0].tile < roomy[0].tile
    with pytest.raises(ResourceError, match="too small"):
        tiled_apply(model, photo_uint8, device="cpu", max_memory="100KB")


def test_cpu_tiles_are_timed_on_this_machine(networks):
    """A small image runs as one window (too small to be worth timing: the cost model decides); a large one in
    the candidate tile whose grid the timing found fastest."""
    from tessera.engine import cpu_tiles
    from tessera.engine.engine import choose_tile

    model = Model(networks["compact_x4"], "compact", scale=4)
    runtime = Runtime.create("cpu", "fp32", "8GB", model=model)
    assert choose_tile(model, runtime, 100, 150, 19) == (150, 1)
    tile, batch = choose_tile(model, runtime, 1500, 2000, 19)
    assert batch == 1
    decisions = cpu_tiles._choice_cache[model.network]
    (choice,) = [c for key, c in decisions.items() if key[3:6] == (1500, 2000, 19)]
    fastest = min((c for c in choice.candidates if c.seconds is not None), key=lambda c: c.grid_seconds)
    assert choice.timed >= 2 and tile == fastest.tile


@pytest.mark.slow
def test_progress_and_cancel(networks, photo_uint8):
    events = []
    tiled_apply(networks["compact_x4"], photo_uint8[:128, :128], tile=32, device="cpu", progress=events.append)
    tiles = [e for e in events if e.stage == "tiles"]
    assert tiles[-1].done == tiles[-1].total == 16
    assert [e.done for e in tiles] == sorted(e.done for e in tiles)
    cancel = threading.Event()

    def stop_after_first(event):
        if event.done == 1:
            cancel.set()

    with pytest.raises(CancelledError):
        tiled_apply(networks["compact_x4"], photo_uint8[:128, :128], tile=32, device="cpu",
                    progress=stop_after_first, cancel=cancel)


def test_bad_arguments_are_option_errors(networks, photo_uint8):
    network = networks["compact_x4"]
    with pytest.raises(OptionError):
        tiled_apply(network, photo_uint8, blend="gaussian", device="cpu")
    with pytest.raises(OptionError):
        tiled_apply(network, photo_uint8.astype(np.int32), device="cpu")
    with pytest.raises(OptionError):
        tiled_apply(network, photo_uint8, device="tpu")
    with pytest.raises(OptionError):
        tiled_apply(network, photo_uint8[:, :, :2], device="cpu")
    with pytest.raises(OptionError):
        tiled_apply(network, photo_uint8, tile=-5, device="cpu")


@pytest.mark.slow
def test_a_spandrel_descriptor_is_accepted(networks, photo_uint8):
    import spandrel

    descriptor = spandrel.ModelLoader().load_from_state_dict(networks["compact_x4"].state_dict())
    assert isinstance(descriptor, spandrel.ImageModelDescriptor)
    reference = untiled(networks["compact_x4"], photo_uint8)
    result = tiled_apply(descriptor, photo_uint8, tile=96, device="cpu")
    assert np.abs(result.astype(np.float32) / 255 - reference).max() <= 1 / 255


@pytest.mark.parametrize("error,expected", [
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"), True),
    (RuntimeError("MPS backend out of memory (MPS allocated: 1.00 GB)"), True),
    (RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory: you tried "
                  "to allocate 1099511627776 bytes"), True),
    (MemoryError(), True),
    (RuntimeError("Given groups=1, weight of size [64, 3, 3, 3], expected input to have 3 channels"), False),
    (ValueError("out of memory"), False),
])
def test_out_of_memory_is_recognised_on_every_backend(error, expected):
    assert engine.is_out_of_memory(error) is expected


@pytest.mark.parametrize("architecture,network", [("Compact", lambda: random_compact(num_feat=8, num_conv=4)),
                                                  ("ESRGAN", lambda: rrdb_x2(num_filters=8, num_blocks=1))])
@pytest.mark.slow
def test_counted_context_bounds_the_measured_receptive_field(architecture, network):
    """Counting convolutions (forward only) gives the receptive field the gradient measures, or a pixel more."""
    from tessera.receptive import receptive_radius

    net = network()
    scale = 4 if architecture == "Compact" else 2
    counted = receptive_radius(Model(net, "counted", architecture=architecture, scale=scale))
    measured = measure_context(Model(net, "measured", architecture="custom", scale=scale), Runtime.create("cpu"))
    assert measured <= counted <= measured + 2


class _GlobalMix(torch.nn.Module):
    """Not local at all: every output pixel sees the mean of the whole input. Records the probe sizes it gets."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 3, padding=1)
        self.sizes: list[int] = []

    def forward(self, x):
        self.sizes.append(x.shape[-1])
        return self.conv(x) + x.mean(dim=(2, 3), keepdim=True)


@pytest.mark.slow
def test_context_probes_stay_within_the_memory_budget():
    roomy, tight = _GlobalMix(), _GlobalMix()
    reach = engine.measure_reach(Model(roomy, "roomy", scale=1), Runtime.create("cpu", max_memory="4G"))
    assert max(roomy.sizes) == 512  # unbounded, the probe grows to its largest size
    assert not reach.local and "512px probe" in reach.note
    runtime = Runtime.create("cpu", max_memory="4G")
    memory = engine.measure_memory(Model(tight, "tight", scale=1), runtime)
    runtime.budget = int(memory.bytes_for(160, 160))  # a forward at 128 px fits, at 256 px it does not
    tight.sizes.clear()
    measure_context(Model(tight, "tight", scale=1), runtime)
    assert max(tight.sizes) == 128


def test_context_probe_is_bounded_in_time(monkeypatch):
    """A slow non-local network: the probe stops growing once the next size would pass PROBE_SECONDS."""
    from tessera.engine import probes

    class Slow(_GlobalMix):
        def forward(self, x):
            time.sleep(0.02 * (x.shape[-1] / 64) ** 2)
            return super().forward(x)

    monkeypatch.setattr(probes, "PROBE_SECONDS", 1.5)
    slow = Slow()
    started = time.monotonic()
    reach = engine.measure_reach(Model(slow, "slow", scale=1), Runtime.create("cpu"))
    assert time.monotonic() - started < 4
    assert max(slow.sizes) < 512 and not reach.local


def test_a_callable_without_gradients_gets_a_forward_only_probe():
    """pad auto on a plain function under inference mode: measured with forwards, exactly (a 5x5 box blur)."""
    def blur(x):
        with torch.inference_mode():
            return torch.nn.functional.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)

    image = (np.random.default_rng(0).random((90, 70, 3)) * 255).astype(np.uint8)
    done = engine.apply_tiles(blur, image, tile=32, device="cpu")
    assert done.plan.pad == 2  # a 5x5 box reaches 2 pixels
    whole = blur(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)[0].permute(1, 2, 0).numpy()
    assert np.abs(done.output.astype(np.float32) - np.round(whole * 255)).max() <= 1


def test_cpu_auto_precision_stays_fp32_unmeasured_without_native_bf16(monkeypatch, networks):
    from tessera.engine import runtime as rt

    monkeypatch.setattr(rt, "native_cpu_bf16", lambda: False)
    monkeypatch.setattr(rt, "_measure_cpu_bf16", lambda model: pytest.fail("measured without native bf16"))
    model = Model(networks["compact_x4"], "compact", scale=4, supports_bfloat16=True)
    assert Runtime.create("cpu", "auto", model=model).precision == "fp32"


class _Cancelling(torch.nn.Module):
    """Adds and removes a large number: exact in fp32, several levels off in bf16 (8-bit mantissa)."""

    def __init__(self) -> None:
        super().__init__()
        self.large = torch.nn.Parameter(torch.tensor(300.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + self.large) - self.large


def test_cpu_auto_precision_takes_bf16_only_within_two_levels(monkeypatch):
    from tessera.engine import runtime as rt

    monkeypatch.setattr(rt, "native_cpu_bf16", lambda: True)
    calls = []
    measure = rt._measure_cpu_bf16
    monkeypatch.setattr(rt, "_measure_cpu_bf16", lambda model: calls.append(1) or measure(model))
    model = Model(_Cancelling(), "cancelling", scale=1, context=0, supports_bfloat16=True)
    assert Runtime.create("cpu", "auto", model=model).precision == "fp32"
    assert Runtime.create("cpu", "auto", model=model).precision == "fp32"
    assert calls == [1]  # measured once per network
    assert model.dtype == torch.float32  # the measurement left the caller's network in fp32
    fp32_seconds, bf16_seconds, levels = measure(model)
    assert levels > 2 and fp32_seconds > 0 and bf16_seconds > 0
    assert rt.bf16_verdict(1.0, 0.5, 2.0) and not rt.bf16_verdict(1.0, 0.5, 2.5)
    assert not rt.bf16_verdict(1.0, 1.2, 0.0)  # accurate but slower (emulated bf16): fp32


class _RecordingSource(tiling.ArraySource):
    """An in-memory source that notes which thread reads each window."""

    def __init__(self, array: np.ndarray):
        super().__init__(array)
        self.readers: list[str] = []

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        self.readers.append(threading.current_thread().name)
        return super().read(y0, y1, x0, x1)


@pytest.mark.parametrize("blend", ["crop", "feather"])
def test_pipelined_engine_gives_the_pixels_of_one_batch_at_a_time(networks, photo_uint8, blend):
    model = Model(networks["compact_x4"], "compact", scale=4)
    image = photo_uint8[:150, :170]
    results, readers = [], []
    for pipelined in (True, False):
        runtime = Runtime.create("cpu", "fp32", model=model)
        runtime.pipelined = pipelined
        source = _RecordingSource(image)
        events: list = []
        runtime.progress = events.append
        done = apply_tiles(model, source, tile=48, tile_batch=2, blend=blend, runtime=runtime)
        results.append(done.output)
        readers.append(set(source.readers))
        assert [e.done for e in events if e.stage == "tiles"][-1] == done.plan.tiles
    np.testing.assert_array_equal(results[0], results[1])
    assert readers[0] == {"tessera-loader_0"} and readers[1] == {threading.current_thread().name}


class _Failing(torch.nn.Module):
    """Raises ``error`` from its forward once it has seen ``after`` calls (a 1x1 convolution until then)."""

    def __init__(self, error: Exception, after: int = 0):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 3, 1)
        self.error, self.after, self.calls = error, after, 0

    def forward(self, x):
        self.calls += 1
        if self.calls > self.after:
            raise self.error
        return self.conv(x)


@pytest.mark.parametrize("after", [0, 3])  # in the memory probe; in the context probe (after the memory probe)
def test_out_of_memory_in_a_probe_is_a_resource_error(after):
    network = _Failing(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"), after)
    image = np.zeros((64, 64, 3), dtype=np.uint8)
    with pytest.raises(ResourceError, match="out of memory (measuring|probing)"):
        apply_tiles(Model(network, "hungry", scale=1), image, device="cpu")


def test_a_precision_the_network_cannot_run_in_is_one_line():
    network = _Failing(RuntimeError("expected m1 and m2 to have the same dtype, but got: float != c10::BFloat16"))
    model = Model(network, "mixed", scale=1, supports_bfloat16=True)
    with pytest.raises(OptionError, match="does not run in bf16 on cpu .*use precision fp32"):
        apply_tiles(model, np.zeros((64, 64, 3), dtype=np.uint8), device="cpu", precision="bf16")
