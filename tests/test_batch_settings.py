"""Batch reruns know what made each output (#16, item 2): the report records the settings that change pixels (task,
options, the model ``auto`` chose, the weights' sha256); a rerun with other settings makes those outputs again and
says what changed; --skip-existing keeps them; --redo and --skip-existing together are refused."""
from __future__ import annotations

import json

import pytest
import torch

from tessera.batch import read_report, run_batch
from tessera.batch.recipe import batch_recipe, changes
from tessera.errors import ModelError, OptionError
from tessera.image.read import read_image_size
from tessera.options import parse_options
from tessera.tasks.registry import get_task

from conftest import random_compact
from test_batch import make_folder


def statuses(summary) -> list[str]:
    return sorted(o.status for o in summary.outcomes)


def test_a_rerun_with_another_scale_makes_the_outputs_again_and_says_why(tmp_path):
    make_folder(tmp_path / "in", 3, size=(20, 24))
    first = run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos", scale=2)
    assert statuses(first) == ["done"] * 3
    same = run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos", scale="2")  # the same, spelt so
    assert statuses(same) == ["skipped"] * 3 and not same.notices
    other = run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos", scale=4)
    assert statuses(other) == ["done"] * 3
    assert read_image_size(tmp_path / "out" / "img00.png") == (96, 80)
    assert any("3 output(s) made with other settings (scale 2.0 -> 4.0)" in n for n in other.notices), other.notices
    again = run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos", scale=4)
    assert statuses(again) == ["skipped"] * 3
    lines = read_report(tmp_path / "out" / "tessera-batch.jsonl")
    assert {line["settings"] for line in lines if line["status"] == "done"} == {
        batch_digest("upscale", model="lanczos", scale=2), batch_digest("upscale", model="lanczos", scale=4)}


def batch_digest(task: str, model_dir: str | None = None, **options) -> str:
    chosen = get_task(task)
    return batch_recipe(chosen, parse_options(chosen.schema, options), options, quality=95, model_dir=model_dir,
                        device_type="cpu").digest


def test_skip_existing_keeps_outputs_made_with_other_settings(tmp_path):
    make_folder(tmp_path / "in", 2, size=(20, 24))
    run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos", scale=2)
    kept = run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos", scale=3, skip_existing=True)
    assert statuses(kept) == ["skipped"] * 2
    assert read_image_size(tmp_path / "out" / "img01.png") == (48, 40)
    # the skipped lines keep saying what really made those files, so a later normal run still redoes them
    assert run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos", scale=3).counts()["done"] == 2
    with pytest.raises(OptionError, match="give one"):
        run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos", redo=True, skip_existing=True)


def test_new_weights_in_the_same_file_make_the_outputs_again(tmp_path):
    make_folder(tmp_path / "in", 2, size=(16, 16))
    weights = tmp_path / "mine-x2.pth"
    torch.save(random_compact(2, num_feat=8, num_conv=2, seed=0).state_dict(), weights)
    assert run_batch("upscale", tmp_path / "in", tmp_path / "out", model=str(weights)).counts()["done"] == 2
    assert run_batch("upscale", tmp_path / "in", tmp_path / "out", model=str(weights)).counts()["skipped"] == 2
    torch.save(random_compact(2, num_feat=8, num_conv=2, seed=1).state_dict(), weights)  # retrained, same name
    summary = run_batch("upscale", tmp_path / "in", tmp_path / "out", model=str(weights))
    assert summary.counts()["done"] == 2
    assert any("model sha256" in n for n in summary.notices), summary.notices


def test_a_model_pulled_after_a_weight_free_run_redoes_the_folder(tmp_path, monkeypatch):
    """The README's flow: a first batch with nothing downloaded runs the weight-free method; once a real network
    is there, model auto chooses it and the rerun makes every output again with it."""
    import tessera.models.ncnn_cache as ncnn_cache

    make_folder(tmp_path / "in", 2, size=(16, 16))
    cache = str(tmp_path / "models")
    real = ncnn_cache.bundled_available
    monkeypatch.setattr(ncnn_cache, "bundled_available", lambda entry: False)  # as before `pip install` / pull
    first = run_batch("upscale", tmp_path / "in", tmp_path / "out", model_dir=cache)
    assert first.counts()["done"] == 2 and "weight-free" in " ".join(first.notices)
    monkeypatch.setattr(ncnn_cache, "bundled_available", real)
    second = run_batch("upscale", tmp_path / "in", tmp_path / "out", model_dir=cache)
    assert second.counts()["done"] == 2
    assert any("model lanczos -> realesr" in n for n in second.notices), second.notices
    recipes = [json.loads(line) for line in (tmp_path / "out" / "tessera-batch.jsonl").read_text().splitlines()
               if '"recipe"' in line]
    assert recipes[-1]["recipe"]["model"].startswith("realesr") and len(recipes[-1]["recipe"]["model sha256"]) == 64


def test_outputs_without_recorded_settings_are_kept_and_counted(tmp_path):
    make_folder(tmp_path / "in", 2, size=(16, 16))
    run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos")
    (tmp_path / "out" / "tessera-batch.jsonl").unlink()  # e.g. a report of an older tessera, or none at all
    summary = run_batch("upscale", tmp_path / "in", tmp_path / "out", model="lanczos", scale=3)
    assert summary.counts()["skipped"] == 2
    assert any("2 existing output(s) with no recorded settings were kept" in n for n in summary.notices)


def test_the_recipe_holds_what_changes_pixels_only(tmp_path):
    base = batch_digest("upscale", model="lanczos")
    assert batch_digest("upscale", model="lanczos", device="cpu", max_memory="2G", tile_batch=2) == base
    assert batch_digest("upscale", model="lanczos", sharpen=0.5) != base
    assert batch_digest("upscale", model="lanczos", precision="bf16") != base
    assert batch_digest("enhance", detector="cascade") != batch_digest("enhance", detector="yunet")
    assert changes({"scale": 2.0, "model": "a"}, {"scale": 4.0, "model": "a"}) == "scale 2.0 -> 4.0"
    with pytest.raises(ModelError, match="not downloaded"):  # checked before any image
        batch_digest("upscale", model="realesrgan-x4plus", model_dir=str(tmp_path))


def test_the_cli_rerun_prints_what_changed(tmp_path, capsys):
    from tessera import cli

    make_folder(tmp_path / "in", 1, size=(16, 16))
    assert cli.main(["batch", "upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "lanczos",
                     "--quiet"]) == 0
    assert cli.main(["batch", "upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "lanczos",
                     "--scale", "3", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "made with other settings (scale none -> 3.0)" in err and "1 done, 0 skipped" in err
    with pytest.raises(SystemExit) as refused:
        cli.main(["batch", "upscale", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--redo", "--skip-existing"])
    assert refused.value.code == 2
