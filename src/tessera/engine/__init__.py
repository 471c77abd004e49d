"""The engine: run a network over an image of any size, tile by tile, inside a memory budget.

- :mod:`.runtime`: where and how a job runs (device, precision, budget, progress, cancel, out-of-memory helpers);
- :mod:`.probes`: what is measured once per network (peak memory per pixel, receptive field, output scale);
- :mod:`.cpu_tiles`: the CPU tile size, timed on a few candidate tiles (cached per network and thread count);
- :mod:`.engine`: tile and batch choice, batched forwards with back-off, merging into a canvas
  (:func:`tiled_apply` for one image, :func:`run_model` for independent regions).

The engine reads only what a :class:`~tessera.models.descriptor.Model` declares; it imports no task, front end
or image decoder.
"""
from .engine import TilePlan, Tiled, apply_tiles, choose_tile, run_model, tiled_apply
from .probes import HostPeak, MemoryModel, Reach, fits, infer_scale, measure_context, measure_memory, measure_reach
from .runtime import Runtime, default_budget, free_memory, is_out_of_memory, resolve_device, resolve_precision, \
    trim_host_heap

__all__ = ["HostPeak", "MemoryModel", "Reach", "Runtime", "TilePlan", "Tiled", "apply_tiles", "choose_tile",
           "default_budget", "fits", "free_memory", "infer_scale", "is_out_of_memory", "measure_context",
           "measure_memory", "measure_reach", "resolve_device", "resolve_precision", "run_model", "tiled_apply",
           "trim_host_heap"]
