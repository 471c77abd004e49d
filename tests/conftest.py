"""Shared fixtures: small random-weight networks built in the test (never downloaded) and small photos."""
from __future__ import annotations

import importlib.util
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

# The tests compare with fp32 references to the level: --precision auto must not take bf16 on a CPU that has it
# (what it takes is measured per machine). Set before anything imports tessera, inherited by the CLI subprocesses;
# the tests of that choice replace native_cpu_bf16 themselves.
os.environ.setdefault("TESSERA_CPU_BF16", "off")


def load_bench(name: str) -> types.ModuleType:
    """The module bench/NAME.py, whose corpora some tests share (bench/ is a folder of scripts, not a package)."""
    key = f"tessera_bench_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "bench" / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module  # before running it: TorchScript and dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[key]


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_app(config, **launch_options) -> tuple[object, object, str]:
    """The web app of ``config`` on a free loopback port, in this process: (blocks, app, its URL).
    ``launch_options`` go to :func:`tessera.web.app.launch` (``auth=...``); close with ``blocks.close()``."""
    from tessera.web.app import build_app, launch

    blocks, app = build_app(config)
    port = free_port()
    launch(blocks, config, port=port, prevent_thread_lock=True, quiet=True, **launch_options)
    return blocks, app, f"http://127.0.0.1:{port}/"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def random_compact(scale: int = 4, *, num_feat: int = 32, num_conv: int = 8, seed: int = 0) -> torch.nn.Module:
    """spandrel's Compact (SRVGG, RGB in and out) upscaling ``scale`` times, with random weights drawn from
    ``seed``: the small real architecture tests build instead of downloading a network."""
    from spandrel.architectures.Compact.__arch.SRVGG import SRVGGNetCompact

    torch.manual_seed(seed)
    return SRVGGNetCompact(num_feat=num_feat, num_conv=num_conv, upscale=scale).eval()


def rrdb_x2(num_filters: int = 16, num_blocks: int = 2, seed: int = 0) -> torch.nn.Module:
    """spandrel's ESRGAN/RRDB x2 with few blocks and random weights."""
    from spandrel.architectures.ESRGAN.__arch.RRDB import RRDBNet

    torch.manual_seed(seed)
    return RRDBNet(num_filters=num_filters, num_blocks=num_blocks, scale=2).eval()


@pytest.fixture
def photo_uint8() -> np.ndarray:
    """An odd-sized RGB crop of scikit-image's astronaut (300x437)."""
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[40:340, 30:467])
