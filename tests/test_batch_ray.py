"""Batch on Ray: a local Ray started by the test gives the same bytes as the local run (one Ray start per module)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from conftest import random_compact
from tessera.batch import read_report, run_batch
from tessera.batch.ray import actor_plan
from tessera.errors import ModelError, OptionError
from tessera.image.write import save_image
from tessera.models.descriptor import Model

ray = pytest.importorskip("ray")
SRC = Path(__file__).resolve().parents[1] / "src"


def compact() -> Model:
    return Model(random_compact(2, num_feat=8, num_conv=2), "compact", scale=2)


@pytest.fixture(scope="module")
def local_ray():
    """A Ray of 2 CPUs on this machine, new even where ``ray start`` left a cluster's address file (without
    ``address="local"``, ``ray.init`` would join that cluster and refuse ``num_cpus``); its workers import
    tessera from this checkout."""
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path}})
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def runs(local_ray, tmp_path_factory):
    """Six photos and a broken file, run locally and on Ray."""
    folder = tmp_path_factory.mktemp("batch")
    rng = np.random.default_rng(7)
    (folder / "in" / "sub").mkdir(parents=True)
    for i in range(6):
        where = folder / "in" / ("sub" if i % 2 else "") / f"photo{i}.png"
        save_image((rng.random((40 + i, 56, 3)) * 255).astype(np.uint8), where)
    (folder / "in" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    local = run_batch("upscale", folder / "in", folder / "local", recursive=True, model=compact())
    remote = run_batch("upscale", folder / "in", folder / "ray", recursive=True, model=compact(), ray="auto")
    return folder, local, remote


@pytest.mark.slow
def test_ray_gives_the_same_bytes_as_the_local_run(runs):
    folder, local, remote = runs
    assert local.counts() == remote.counts() == {"done": 6, "skipped": 0, "failed": 1}
    assert {o.file for o in remote.failed} == {"broken.png"}  # the bad file failed alone
    workers = {o.worker for o in remote.outcomes if o.worker}
    assert len(workers) == 2 and f":{os.getpid()}" not in " ".join(workers)  # written by two actors
    for outcome in local.outcomes:
        if outcome.status == "done":
            mine = Path(outcome.output)
            theirs = folder / "ray" / mine.relative_to(folder / "local")
            assert theirs.read_bytes() == mine.read_bytes()


@pytest.mark.slow
def test_ray_resumes(runs):
    folder, _local, _remote = runs
    (folder / "in" / "broken.png").unlink()
    for lost in ("photo0.png", "sub/photo1.png"):
        (folder / "ray" / lost).unlink()
    again = run_batch("upscale", folder / "in", folder / "ray", recursive=True, model=compact(), ray="auto",
                      workers=1)
    assert again.counts() == {"done": 2, "skipped": 4, "failed": 0}
    assert {o.file for o in again.outcomes if o.status == "done"} == {"photo0.png", "sub/photo1.png"}
    statuses = [line["status"] for line in read_report(folder / "ray" / "tessera-batch.jsonl")]
    assert statuses.count("done") == 8


@pytest.mark.slow
def test_ray_actors_that_cannot_load_the_model_stop_the_batch_with_one_typed_error(local_ray, tmp_path):
    (tmp_path / "in").mkdir()
    for i in range(4):
        save_image(np.full((16, 16, 3), 40 * i, np.uint8), tmp_path / "in" / f"p{i}.png")
    bad = tmp_path / "x.pth"
    bad.write_text("not a network\n")
    outcomes = []
    with pytest.raises(ModelError) as raised:
        run_batch("upscale", tmp_path / "in", tmp_path / "out", model=str(bad), ray="auto", workers=2,
                  on_outcome=lambda outcome, done, total: outcomes.append(outcome))
    message = str(raised.value)
    assert "\n" not in message and str(bad) in message and "Ray" not in message, message
    assert outcomes == [] and read_report(tmp_path / "out" / "tessera-batch.jsonl") == []


def test_actor_plan():
    assert actor_plan({"CPU": 8.0}, None, 100) == (8, {"num_cpus": 1})
    assert actor_plan({"CPU": 16.0, "GPU": 4.0}, None, 100) == (4, {"num_gpus": 1, "num_cpus": 1})
    assert actor_plan({"CPU": 16.0, "GPU": 2.0}, 4, 100) == (4, {"num_gpus": 0.5, "num_cpus": 1})
    assert actor_plan({"CPU": 8.0}, None, 3)[0] == 3  # never more actors than images
    with pytest.raises(OptionError):
        actor_plan({"CPU": 8.0}, 0, 3)
