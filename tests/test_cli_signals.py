"""No temporary file outlives a command: SIGTERM during the write ends `tessera upscale` cleanly (exit 143, one
line, neither output nor temporary file), and a later run removes what a `kill -9` left behind."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tessera.cli import main, sigterm_as_exception
from tessera.image import atomic
from tessera.image.write import save_image


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".tessera-tmp")]


def _wait_for_the_write(process: subprocess.Popen, folder: Path, timeout: float = 120.0) -> Path:
    """The temporary file of the output once the encoder has put bytes in it (the writability probe of the
    checks before work leaves an empty one for an instant only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for path in _temporaries(folder):
            try:
                if path.stat().st_size > 0:
                    return path
            except FileNotFoundError:
                continue
        time.sleep(0.002)
    pytest.fail(f"the write never started (exit code {process.poll()})")


@pytest.mark.slow
@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigterm_during_the_write_leaves_no_temporary_file(tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (1000, 1000, 3), dtype=np.uint8)  # slow to deflate
    source = tmp_path / "noise.png"
    save_image(noise, source)
    folder = tmp_path / "out"
    folder.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "tessera", "upscale", "--model", "lanczos", str(source), "-o", str(folder / "big.png"),
                                "--quiet"], stderr=subprocess.PIPE, text=True)
    try:
        temporary = _wait_for_the_write(process, folder)
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=120)
    finally:
        process.kill()
    assert process.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines() == ["tessera: terminated"]
    assert not temporary.exists() and list(folder.iterdir()) == []


def test_a_later_run_removes_the_temporary_file_of_a_killed_writer(tmp_path, capsys):
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    folder = tmp_path / "out"
    folder.mkdir()
    stale = folder / f".big.png.{atomic._host_tag()}-{child.pid}-0123abcd.tessera-tmp"
    stale.write_bytes(b"what kill -9 left")
    source = tmp_path / "photo.png"
    save_image(np.zeros((16, 16, 3), np.uint8), source)
    assert main(["upscale", "--model", "lanczos", str(source), "-o", str(folder / "big.png"), "--quiet"]) == 0
    assert [p.name for p in folder.iterdir()] == ["big.png"]


@pytest.mark.skipif(os.name != "posix", reason="POSIX signals")
def test_sigterm_becomes_an_exception_only_inside_the_cli(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        with sigterm_as_exception():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)  # the handler raises at once; the sleep is never finished
    assert signal.getsignal(signal.SIGTERM) == before
