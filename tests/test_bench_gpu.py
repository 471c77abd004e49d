"""bench/gpu.sh --dry-run: every GPU section runs on the CPU at tiny sizes and writes complete JSON files, never
into bench/results/ (the figures there come from a device run only)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTIONS = ("tests", "tiling", "upscale", "lama", "gpen", "oom", "memory")
ROW_KEYS = ("device", "torch", "cuda", "settings", "seconds", "mp_s", "peak_bytes")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_dry_run_writes_every_section_with_its_keys_and_never_into_bench_results(tmp_path):
    results = sorted((ROOT / "bench" / "results").glob("gpu-*"))
    done = subprocess.run(["bash", "bench/gpu.sh", "--dry-run", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "file check: 7 files complete" in done.stdout
    for name in SECTIONS:
        data = json.loads((tmp_path / f"gpu-{name}.json").read_text())
        assert data["status"] == "ok" and data["rows"], name
        for row in data["rows"]:
            assert all(key in row for key in ROW_KEYS), (name, row)
            assert row["device"].startswith("cpu") and row["cuda"] is None
    timed = [r for name in ("tiling", "upscale", "lama", "gpen") for r in
             json.loads((tmp_path / f"gpu-{name}.json").read_text())["rows"] if r["seconds"] is not None]
    assert timed and all(r["seconds"] > 0 and r["mp_s"] > 0 for r in timed)
    oom = json.loads((tmp_path / "gpu-oom.json").read_text())["rows"]
    assert any(r.get("status", "").startswith("skipped: torch.cuda") for r in oom)
    assert (tmp_path / "gpu.log").is_file()
    assert sorted((ROOT / "bench" / "results").glob("gpu-*")) == results  # nothing written there
    refused = subprocess.run([sys.executable, "bench/gpu.py", "--dry-run", "--out", "bench/results"], cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "never writes bench/results" in refused.stderr

