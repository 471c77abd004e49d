"""Local batch workers and their driver: workers die with a killed driver, and a worker that cannot start stops
the batch with one typed error (as one process would), not one failure per image."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tessera.batch import read_report
from tessera.cli import main
from tessera.image.write import save_image

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL and /proc are POSIX")

# A driver that runs a batch of slow images on 2 workers and prints a line per finished image.
DRIVER = textwrap.dedent('''
    import sys, time
    import torch
    import torch.nn.functional as F
    from tessera.batch import run_batch
    from tessera.models.descriptor import Model

    class Slow(torch.nn.Module):
        def forward(self, x):
            time.sleep(0.5)
            return F.interpolate(x, scale_factor=2, mode="nearest")

    if __name__ == "__main__":
        run_batch("upscale", sys.argv[1], sys.argv[2], model=Model(Slow(), "slow", scale=2, context=0),
                  workers=2, on_outcome=lambda outcome, done, total: print(outcome.status, flush=True))
''')


def photos(folder: Path, count: int) -> Path:
    rng = np.random.default_rng(5)
    folder.mkdir()
    for i in range(count):
        save_image((rng.random((16, 24, 3)) * 255).astype(np.uint8), folder / f"p{i:02d}.png")
    return folder


def children(pid: int) -> dict[int, str]:
    """The processes whose parent is ``pid``: their command lines by pid (psutil, else /proc)."""
    try:
        import psutil
    except ImportError:
        found = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and alive(int(entry.name)):
                try:
                    stat = (entry / "stat").read_text()
                    if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                        found[int(entry.name)] = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                except (OSError, ValueError):
                    continue
        return found
    return {child.pid: " ".join(child.cmdline()) for child in psutil.Process(pid).children()}


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        import psutil
    except ImportError:
        try:
            return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
        except OSError:
            return False
    try:
        return psutil.Process(pid).status() not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
def test_workers_and_the_resource_tracker_die_with_a_killed_driver(tmp_path):
    (tmp_path / "driver.py").write_text(DRIVER)
    driver = subprocess.Popen([sys.executable, str(tmp_path / "driver.py"), str(photos(tmp_path / "in", 40)),
                               str(tmp_path / "out")], stdout=subprocess.PIPE, text=True)
    workers: dict[int, str] = {}
    try:
        assert driver.stdout is not None
        assert driver.stdout.readline().strip() == "done"  # both workers are up and working
        workers = children(driver.pid)
        assert sum("spawn_main" in line for line in workers.values()) == 2, workers
        assert any("resource_tracker" in line for line in workers.values()), workers
        os.kill(driver.pid, signal.SIGKILL)
        driver.wait(10)
        deadline = time.monotonic() + 5
        while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.1)
        left = {pid: line for pid, line in workers.items() if alive(pid)}
        assert not left, f"still running after the driver's death: {left}"
    finally:  # nothing left behind, whatever failed
        driver.kill()
        driver.wait()
        for pid in workers:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
    assert len(list((tmp_path / "out").glob("*.png"))) < 40  # the batch was killed midway


@pytest.mark.slow
def test_a_file_that_is_no_model_stops_a_pooled_batch_with_one_typed_error(tmp_path, capsys):
    bad = tmp_path / "x.pth"
    bad.write_text("not a network\n")
    started = time.monotonic()
    code = main(["batch", "upscale", str(photos(tmp_path / "in", 6)), "-o", str(tmp_path / "out"),
                 "--model", str(bad), "--workers", "2", "--quiet"])
    seconds = time.monotonic() - started
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2  # a ModelError, as with one process
    assert len(err) == 1 and err[0].startswith("tessera: error: ") and str(bad) in err[0], err
    assert read_report(tmp_path / "out" / "tessera-batch.jsonl") == []  # no image failed: none was begun
    assert seconds < 30
