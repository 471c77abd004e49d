"""The web UI's parts without a server: translations, controls from the schema, retention, limits, access rules,
jobs (cancel, progress, errors), the stroke-to-mask mapping, and the `serve`/`clean` commands' checks."""
from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")

from tessera.engine import ProgressEvent
from tessera.errors import (
    CancelledError,
    ImageReadError,
    ImageTooLargeError,
    InputError,
    OptionError,
    OutputError,
    ResourceError,
)
from tessera.options import (
    EngineOptions,
    FaceOptions,
    InpaintOptions,
    UpscaleOptions,
    parse_options,
)
from tessera.web import access, i18n, jobs, limits, retention

# ----------------------------------------------------------------------------------------------- i18n


def test_every_key_has_english_and_chinese():
    tables = i18n.translations()
    assert set(tables) == {"en", "zh-CN"}
    assert tables["en"].keys() == tables["zh-CN"].keys()
    for key, text in tables["zh-CN"].items():
        assert text.strip() and tables["en"][key].strip(), key
        if key not in ("app.title",):
            assert text != tables["en"][key], f"{key} is not translated"
    # Chinese text uses Chinese characters (not a copy of the English)
    assert any("\u4e00" <= ch <= "\u9fff" for ch in tables["zh-CN"]["tab.inpaint"])


def test_options_named_by_the_issue_have_labels_in_both_languages():
    for name in ("device", "precision", "max_memory", "tile", "tile_pad", "tile_batch", "strategy", "crop_margin",
                 "max_size", "grow", "feather", "deblur", "suppress_hf", "strength", "model", "background", "scale"):
        assert i18n.has_key(f"opt.{name}") and i18n.has_key(f"opt.{name}.info"), name


def test_unknown_key_is_an_error():
    with pytest.raises(KeyError):
        i18n.t("no.such.key")

# ----------------------------------------------------------------------------------------------- controls


@pytest.mark.parametrize("schema, names", [
    (EngineOptions, list(EngineOptions.model_fields)),
    (InpaintOptions, ["strategy", "crop_margin", "max_size", "grow", "feather"]),
    (UpscaleOptions, ["sharpen"]),
    (FaceOptions, ["upscale", "strength", "fidelity", "face_batch", "min_face", "deblur", "suppress_hf"]),
])
def test_controls_default_values_read_back_as_the_schema_defaults(schema, names):
    import gradio as gr

    from tessera.web.controls import option_control, option_values

    with gr.Blocks():
        controls = {name: option_control(schema, name) for name in names}
    values = option_values(schema, {name: control.value for name, control in controls.items()})
    assert parse_options(schema, values) == schema()


def test_controls_convert_text_and_whole_floats():
    from tessera.web.controls import option_values

    values = option_values(InpaintOptions, {"grow": 8.0, "crop_margin": " 64 ", "max_memory": "", "tile": "auto",
                                            "unknown": 1})
    assert values == {"grow": 8, "crop_margin": "64", "max_memory": None, "tile": "auto"}
    opts = parse_options(InpaintOptions, values)
    assert opts.grow == 8 and opts.crop_margin == 64 and opts.max_memory is None


def test_bad_control_value_is_an_option_error():
    from tessera.web.controls import option_values

    with pytest.raises(OptionError, match="max_memory"):
        parse_options(EngineOptions, option_values(EngineOptions, {"max_memory": "lots"}))

# ----------------------------------------------------------------------------------------------- retention


def _results_folder(tmp_path: Path) -> Path:
    return retention.prepare_output_dir(tmp_path / "results")


def _age(path: Path, days: float) -> None:
    stamp = time.time() - days * 86400
    os.utime(path, (stamp, stamp))


def test_parse_age():
    assert retention.parse_age("7d") == 7 * 86400
    assert retention.parse_age("12h") == 12 * 3600
    assert retention.parse_age("30m") == 1800
    assert retention.parse_age("2w") == 14 * 86400
    assert retention.parse_age("1.5") == 1.5 * 86400
    assert retention.parse_age(3) == 3 * 86400
    for bad in ("soon", "7y", "-1d", ""):
        with pytest.raises(OptionError):
            retention.parse_age(bad)


def test_sweep_deletes_old_results_and_empty_folders_only(tmp_path):
    root = _results_folder(tmp_path)
    old_job, new_job, mixed = (retention.new_job_folder(root, task) for task in ("a", "b", "c"))
    old = old_job / "old.png"
    new = new_job / "new.png"
    mixed_old, mixed_new = mixed / "old.png", mixed / "new.png"
    for path in (old, new, mixed_old, mixed_new):
        path.write_bytes(b"x" * 10)
    for path in (old, mixed_old):
        _age(path, 8)
    report = retention.sweep(root, retention.parse_age("7d"))
    assert set(report.files) == {old, mixed_old}
    assert report.bytes == 20 and report.kept == 2
    assert not old_job.exists() and new.exists() and mixed_new.exists() and not mixed_old.exists()
    assert (root / retention.MARKER).exists()


def test_sweep_dry_run_deletes_nothing(tmp_path):
    root = _results_folder(tmp_path)
    path = retention.new_job_folder(root, "x") / "a.png"
    path.write_bytes(b"1")
    _age(path, 30)
    report = retention.sweep(root, 86400, dry_run=True)
    assert report.files == [path] and path.exists()


def test_sweep_refuses_a_folder_tessera_did_not_make(tmp_path):
    (tmp_path / "mine").mkdir()
    keep = tmp_path / "mine" / "precious.jpg"
    keep.write_bytes(b"1")
    _age(keep, 365)
    with pytest.raises(OutputError, match="not a tessera results folder"):
        retention.sweep(tmp_path, 0)
    assert keep.exists()
    with pytest.raises(OutputError, match="no such"):
        retention.sweep(tmp_path / "missing", 0)


def test_output_dir_must_be_new_empty_or_marked(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    with pytest.raises(OutputError, match="not empty"):
        retention.prepare_output_dir(tmp_path / "busy")
    marked = retention.prepare_output_dir(tmp_path / "fresh")
    assert retention.prepare_output_dir(marked) == marked  # idempotent once marked


def test_sweeper_sweeps_at_start_and_periodically(tmp_path):
    root = _results_folder(tmp_path)
    first = retention.new_job_folder(root, "a") / "a.png"
    first.write_bytes(b"1")
    _age(first, 10)
    messages: list[str] = []
    sweeper = retention.RetentionSweeper(root, 86400, interval=0.05, log=messages.append).start()
    try:
        assert not first.exists()  # swept synchronously at start
        second = retention.new_job_folder(root, "b") / "b.png"
        second.write_bytes(b"2")
        _age(second, 10)
        deadline = time.monotonic() + 5
        while second.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not second.exists()
    finally:
        sweeper.stop()
    assert messages and "deleted" in messages[0]


def test_clean_command(tmp_path, capsys):
    from tessera.cli import clean

    root = _results_folder(tmp_path)
    path = retention.new_job_folder(root, "x") / "a.png"
    path.write_bytes(b"1")
    _age(path, 10)
    parser = argparse.ArgumentParser()
    clean.register(parser.add_subparsers())
    args = parser.parse_args(["clean", "--older-than", "7d", "--dry-run", "--output-dir", str(root)])
    assert args.func(args) == 0 and path.exists()
    assert str(path) in capsys.readouterr().out
    args = parser.parse_args(["clean", "--older-than", "7d", "--output-dir", str(root)])
    assert args.func(args) == 0 and not path.exists()
    args = parser.parse_args(["clean", "--older-than", "7d", "--output-dir", str(tmp_path)])
    with pytest.raises(OutputError):
        args.func(args)

# ----------------------------------------------------------------------------------------------- access


def test_loopback_hosts():
    for host in ("127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"):
        assert access.is_loopback(host), host
    for host in ("0.0.0.0", "::", "192.168.1.5", "example.com"):
        assert not access.is_loopback(host), host


def test_network_host_needs_auth_or_insecure():
    access.check_exposure("127.0.0.1", None, False)
    access.check_exposure("0.0.0.0", ("u", "p"), False)
    access.check_exposure("0.0.0.0", None, True)
    with pytest.raises(OptionError, match="--auth"):
        access.check_exposure("0.0.0.0", None, False)


def test_parse_auth():
    assert access.parse_auth("ann:se:cret") == ("ann", "se:cret")
    assert access.parse_auth(None) is None
    for bad in ("ann", ":pw", "ann:"):
        with pytest.raises(OptionError):
            access.parse_auth(bad)


def test_serve_refuses_network_host_without_auth(tmp_path):
    from tessera.cli import serve

    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--host", "0.0.0.0", "--output-dir", str(tmp_path / "r")])
    with pytest.raises(OptionError, match="--insecure"):
        args.func(args)
    assert not (tmp_path / "r").exists()  # refused before anything was created
    args = parser.parse_args(["serve", "--keep-days", "0", "--output-dir", str(tmp_path / "r")])
    with pytest.raises(OptionError, match="keep-days"):
        args.func(args)

# ----------------------------------------------------------------------------------------------- limits


def _png(path: Path, width: int, height: int) -> Path:
    from PIL import Image

    Image.new("RGB", (width, height), (10, 20, 30)).save(path)
    return path


def test_upload_limits(tmp_path):
    small = _png(tmp_path / "small.png", 40, 30)
    picture = limits.open_upload(str(small), limits.Limits())
    assert (picture.width, picture.height) == (40, 30)
    with pytest.raises(ImageTooLargeError, match="upload limit"):
        limits.open_upload(str(small), limits.Limits(max_upload_bytes=10))
    with pytest.raises(ImageTooLargeError, match="1,200 pixels"):
        limits.open_upload(str(small), limits.Limits(max_pixels=1000))
    with pytest.raises(InputError, match="upload one"):
        limits.open_upload(None, limits.Limits())
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(ImageReadError):
        limits.open_upload(str(corrupt), limits.Limits())


def test_result_that_cannot_fit_in_memory_is_refused(tmp_path):
    picture = limits.open_upload(str(_png(tmp_path / "p.png", 100, 100)), limits.Limits())
    limits.check_result_fits(picture, 2.0, available=10 << 20)
    with pytest.raises(ResourceError, match="800x800"):
        limits.check_result_fits(picture, 8.0, available=2 << 20)
    with pytest.raises(InputError):
        limits.check_scale(9)
    limits.check_scale(8)

# ----------------------------------------------------------------------------------------------- jobs


def test_cancel_reaches_only_the_sessions_running_jobs():
    board = jobs.JobBoard()
    with board.run("upscale", "alice") as mine, board.run("upscale", "bob") as theirs:
        assert board.running == 2
        assert board.cancel("alice") == 1
        assert mine.cancel.is_set() and not theirs.cancel.is_set()
    assert board.running == 0 and board.cancel("alice") == 0
    assert [record.outcome for record in board.history] == ["ok", "ok"]


def test_job_history_records_outcomes():
    board = jobs.JobBoard()
    with pytest.raises(CancelledError), board.run("inpaint", "s"):
        raise CancelledError("cancelled")
    with pytest.raises(ValueError), board.run("inpaint", "s"):
        raise ValueError("boom")
    assert [r.outcome for r in board.history] == ["cancelled", "failed"]
    assert all(r.ended >= r.started for r in board.history)


def test_progress_text():
    event = ProgressEvent("tiles", 3, 8, elapsed=3.0, eta=5.0)
    assert jobs.describe_progress(event) == "tile 3/8 · ETA 5 s"
    outer = ProgressEvent("passes", 0, 2, elapsed=0.0, eta=None, message="pass 1/2: x4")
    assert jobs.describe_progress(event, outer).startswith("pass 1/2 · tile 3/8")
    assert "ETA" not in jobs.describe_progress(ProgressEvent("regions", 2, 2, 1.0, 0.0))


def test_progress_bridge_feeds_the_sink_with_memory_and_warns_above_90_percent():
    calls = []

    def sink(progress, desc=None, unit=None):
        calls.append((progress, desc, unit))

    readings = iter([jobs.MemoryStatus("cpu", 50, 100), jobs.MemoryStatus("cpu", 95, 100)])
    bridge = jobs.ProgressBridge(sink, "cpu", read_memory=lambda device: next(readings))
    bridge(ProgressEvent("tiles", 1, 4, 1.0, 3.0))
    assert calls[-1][0] == (1, 4) and "tile 1/4" in calls[-1][1] and "memory 50%" in calls[-1][1]
    assert "⚠" not in calls[-1][1]
    bridge._memory_read_at = 0.0  # force a new reading
    bridge(ProgressEvent("tiles", 2, 4, 2.0, 2.0))
    assert "memory 95%" in calls[-1][1] and "⚠" in calls[-1][1]


def test_memory_status_of_this_machine():
    status = jobs.memory_status("cpu")
    assert 0 < status.used <= status.total and 0 < status.fraction <= 1
    assert "GiB" in status.describe()


def test_user_errors_become_one_line_gradio_errors():
    import gradio as gr

    uploads = {"/tmp/gradio/abc/photo.png": "photo.png"}
    with pytest.raises(gr.Error) as caught, jobs.user_errors(uploads):
        raise ImageReadError("/tmp/gradio/abc/photo.png: truncated or corrupt image data (x)")
    assert caught.value.message == "photo.png: truncated or corrupt image data (x)"
    with pytest.raises(gr.Error, match="Cancelled"), jobs.user_errors():
        raise CancelledError("cancelled")
    logged: list[str] = []
    with pytest.raises(gr.Error, match="internal error .ZeroDivisionError"), jobs.user_errors(log=logged.append):
        1 / 0  # noqa: B018
    assert "Traceback" in logged[0]

# ----------------------------------------------------------------------------------------------- strokes


def test_editor_strokes_union_of_layers_alpha():
    from tessera.web.app import editor_strokes

    assert editor_strokes(None) is None
    empty = np.zeros((20, 30, 4), np.uint8)
    assert editor_strokes({"background": None, "layers": [empty], "composite": None}) is None
    first, second = empty.copy(), empty.copy()
    first[2:4, 5:9, 3] = 200
    second[10, 10, 3] = 1
    mask = editor_strokes({"layers": [first, second]})
    assert mask.shape == (20, 30) and mask.sum() == 2 * 4 + 1


def test_scale_mask_maps_a_preview_stroke_to_full_resolution():
    from tessera.web.app import scale_mask

    small = np.zeros((30, 40), bool)
    small[10:20, 8:16] = True
    big = scale_mask(small, 400, 300)
    assert big.shape == (300, 400)
    ys, xs = np.nonzero(big)
    # the stroke lands on the same part of the photo (within one preview pixel = 10 full pixels)
    assert abs(ys.min() - 100) <= 10 and abs(ys.max() - 199) <= 10
    assert abs(xs.min() - 80) <= 10 and abs(xs.max() - 159) <= 10
    assert scale_mask(small, 40, 30).tolist() == small.tolist()


def test_job_runs_with_cancel_event_set_stop_early(photo_uint8):
    """The event the Cancel button sets stops a real task between batches."""
    from tessera.tasks.upscale import upscale

    event = threading.Event()
    event.set()
    with pytest.raises(CancelledError):
        upscale(photo_uint8, scale=2, tile=32, cancel=event)


def test_memory_box_warns_above_90_percent(monkeypatch, tmp_path):
    from tessera.web import app as web_app

    app = web_app.WebApp(web_app.WebConfig(output_dir=retention.prepare_output_dir(tmp_path / "r")))
    for used, warn in ((50, False), (91, True)):
        monkeypatch.setattr(web_app, "memory_status", lambda device, used=used: jobs.MemoryStatus("cpu", used << 30,
                                                                                                  100 << 30))
        text, warning = app.memory()
        assert f"({used}%)" in text and warning["visible"] is warn
