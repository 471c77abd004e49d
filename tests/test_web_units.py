"""The web UI's parts without a server: translations, controls from the schema, retention, limits, access rules,
jobs (cancel, progress, errors), the stroke-to-mask mapping, and the `serve`/`clean` commands' checks."""
from __future__ import annotations

import argparse
import os
import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")

from tessera.progress import ProgressEvent
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
from tessera.web import access, i18n, job_progress, jobs, limits, retention

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
    assert job_progress.describe_progress(event) == "tile 3/8 · ETA 5 s"
    outer = ProgressEvent("passes", 0, 2, elapsed=0.0, eta=None, message="pass 1/2: x4")
    assert job_progress.describe_progress(event, outer).startswith("pass 1/2 · tile 3/8")
    assert "ETA" not in job_progress.describe_progress(ProgressEvent("regions", 2, 2, 1.0, 0.0))


def test_progress_bridge_feeds_the_sink_with_memory_and_warns_above_90_percent():
    calls = []

    def sink(progress, desc=None, unit=None):
        calls.append((progress, desc, unit))

    readings = iter([jobs.MemoryStatus("cpu", 50, 100), jobs.MemoryStatus("cpu", 95, 100)])
    bridge = job_progress.ProgressBridge(sink, "cpu", read_memory=lambda device: next(readings))
    bridge(ProgressEvent("tiles", 1, 4, 1.0, 3.0))
    # on the CPU the machine's memory is the job's business only when it runs out (issue 14: the job's is shown)
    assert calls[-1][0] == (1, 4) and "tile 1/4" in calls[-1][1] and "50%" not in calls[-1][1]
    assert "⚠" not in calls[-1][1]
    bridge._memory_read_at = 0.0  # force a new reading
    bridge._emitted_at = 0.0      # and let the next event through at once (events reach the page 10 times a second)
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


def test_job_runs_with_cancel_event_set_stop_early(photo_uint8):
    """The event the Cancel button sets stops a real task between batches."""
    from tessera.tasks.upscale import upscale

    event = threading.Event()
    event.set()
    with pytest.raises(CancelledError):
        upscale(photo_uint8, scale=2, tile=32, cancel=event, model="lanczos")


# ----------------------------------------------------------------------------------------------- models (issue 9)


def _weights(path: Path) -> Path:
    path.write_bytes(b"not really weights")
    return path


def test_model_folder_offers_weight_files_directly_in_it_not_links_out(tmp_path):
    from tessera.web.models import scan_model_folder

    folder, outside = tmp_path / "models", tmp_path / "elsewhere"
    folder.mkdir()
    outside.mkdir()
    for name in ("a.pth", "b.safetensors", "C.PT", "d.ckpt", "e.bin"):
        _weights(folder / name)
    (folder / "notes.txt").write_text("x")
    (folder / "sub").mkdir()
    _weights(folder / "sub" / "deep.pth")
    (folder / "inside-link.pth").symlink_to(folder / "a.pth")
    (folder / "outside-link.pth").symlink_to(_weights(outside / "secret.pth"))
    (folder / "dangling.pth").symlink_to(tmp_path / "missing.pth")
    (folder / "dir.pth").mkdir()
    os.mkfifo(folder / "fifo.pth")
    found = scan_model_folder(folder)
    assert sorted(found) == ["C.PT", "a.pth", "b.safetensors", "d.ckpt", "e.bin", "inside-link.pth"]
    assert found["inside-link.pth"] == (folder / "a.pth").resolve()
    with pytest.raises(OptionError, match="models-from"):
        scan_model_folder(tmp_path / "no-such-folder")
    with pytest.raises(OptionError, match="not a folder"):
        scan_model_folder(folder / "a.pth")


def test_model_menu_accepts_only_its_choices_with_one_message_for_any_other_value(tmp_path):
    from tessera.errors import ModelError
    from tessera.web.models import ModelMenu

    folder = tmp_path / "models"
    folder.mkdir()
    mine = _weights(folder / "mine.pth")
    upload = _weights(tmp_path / "uploaded.pt")  # e.g. a file sent through Gradio's upload route
    menu = ModelMenu(tmp_path / "cache", [folder])
    values = [value for _label, value in menu.choices("upscale")]
    assert values[0] == "lanczos" and "realesrgan-x4plus" in values and "mine.pth" in values
    assert "mine.pth" in [value for _label, value in menu.choices("inpaint")]
    assert menu.resolve("upscale", "lanczos") == "lanczos"
    assert menu.resolve("upscale", "mine.pth") == str(mine.resolve())
    assert menu.resolve("inpaint", "telea") == "telea"
    assert menu.resolve("upscale", None) == "lanczos" and menu.resolve("face", " ") == "weight-free"  # defaults

    def refusal(value: str) -> str:
        with pytest.raises(ModelError) as caught:
            menu.resolve("upscale", value)
        return re.sub(r"'[^']*'", "VALUE", str(caught.value))

    messages = {refusal(value) for value in (str(upload), str(tmp_path / "missing.pt"), "/etc/passwd",
                                             str(folder), "../models/mine.pth", str(mine), "no-such-model")}
    assert len(messages) == 1, messages  # an existing path is refused exactly like a missing one
    assert "not downloaded on this server" in str(pytest.raises(ModelError, menu.resolve, "upscale",
                                                                "realesrgan-x4plus").value)
    # a folder file swapped for a link out of the folder after the start is refused when used
    mine.unlink()
    mine.symlink_to(upload)
    with pytest.raises(ModelError, match="no longer available"):
        menu.resolve("upscale", "mine.pth")


def test_model_dropdowns_accept_no_custom_value(tmp_path):
    import gradio as gr

    from tessera.web import layout
    from tessera.web.app import WebConfig
    from tessera.web.handlers import WebApp

    app = WebApp(WebConfig(output_dir=retention.prepare_output_dir(tmp_path / "r")))
    with gr.Blocks():
        parts = {**layout.upscale_tab(app), **{f"faces-{k}": v for k, v in layout.faces_tab(app).items()},
                 **{f"inpaint-{k}": v for k, v in layout.inpaint_tab(app).items()}}
    for name in ("model", "faces-model", "faces-background", "inpaint-model"):
        dropdown = parts[name]
        assert dropdown.allow_custom_value is False, name
        with pytest.raises(gr.Error, match="not in the list of choices"):
            dropdown.preprocess("/tmp/gradio/0123/evil.pt")
    assert parts["scale"].allow_custom_value is True  # a factor such as 2.5 may be typed; the job checks it

# ----------------------------------------------------------------------------------------------- uploads (issue 9)


def test_upload_gate_admits_only_gradio_uploads_and_masks_issued_to_the_session(tmp_path):
    from tessera.web.uploads import UploadGate

    uploads, results = tmp_path / "gradio", tmp_path / "results"
    (uploads / "abc").mkdir(parents=True)
    results.mkdir()
    photo = uploads / "abc" / "photo.png"
    photo.write_bytes(b"x")
    result, mask = results / "result.png", results / "mask.png"
    result.write_bytes(b"x")
    mask.write_bytes(b"x")
    (uploads / "abc" / "link.png").symlink_to(result)
    gate = UploadGate(uploads)
    assert gate.admit(str(photo), "s1") == photo.resolve()
    assert gate.admit(None, "s1") is None

    def refusal(path: Path, session: str = "s1") -> str:
        with pytest.raises(InputError) as caught:
            gate.admit(str(path), session)
        return str(caught.value).replace(path.name, "NAME")

    refused = {refusal(p) for p in (result, Path("/etc/passwd"), tmp_path / "missing.png", uploads / "abc" / "link.png",
                                    uploads / "abc" / ".." / ".." / "results" / "result.png")}
    assert len(refused) == 1 and "not uploaded" in refused.pop()
    gate.issue(mask, "s1")
    assert gate.admit(str(mask), "s1") == mask.resolve()
    refusal(mask, "s2")  # another session cannot use it

# ----------------------------------------------------------------------------------------------- wording (issue 9)


def test_cli_flags_become_control_labels_in_both_languages():
    from tessera.web.wording import for_page

    english = for_page("no batch fits; free memory or lower --max-memory")
    assert english == 'no batch fits; free memory or lower "Max memory"'
    chinese = for_page("no batch fits; free memory or lower --max-memory", "zh-CN")
    assert chinese.endswith("“" + i18n.text("opt.max_memory", "zh-CN") + "”") and "--" not in chinese
    assert for_page("option grow: Input should be greater than or equal to 0 (got -1)").startswith('"Mask grow":')
    message = for_page("--strategy full runs the whole photo, over --max-size 2048; use --strategy auto")
    assert message == '"Strategy" full runs the whole photo, over "Max size" 2048; use "Strategy" auto'
    # a flag the page has no control for: the clause becomes a hint of what to do on the page
    mask = for_page("mask is 100x100 but the photo is 320x280 (use --resize-mask to scale it)")
    assert mask == f"mask is 100x100 but the photo is 320x280 ({i18n.text('msg.mask_size')})"
    limit = for_page("p.png: 9 pixels is over the limit of 4 pixels (raise max_pixels to read it)", "zh-CN")
    assert limit.endswith(f"({i18n.text('msg.server_limit', 'zh-CN')})")
    other = for_page("model x is not downloaded; run `tessera models pull x --model-dir /srv/cache` first")
    assert other == f"model x is not downloaded; {i18n.text('msg.server_setting')}"
    assert for_page("photo.png: not an image") == "photo.png: not an image"


def test_language_of_accept_language():
    assert i18n.language_of("zh-CN,zh;q=0.9,en;q=0.8") == "zh-CN"
    assert i18n.language_of("en-US,en;q=0.9,zh-CN;q=0.8") == "en"
    assert i18n.language_of("fr-FR, zh-Hans;q=0.5, en;q=0.4") == "zh-CN"
    assert i18n.language_of("zh;q=0, en") == "en"
    assert i18n.language_of(None) == i18n.language_of("") == i18n.language_of("de") == "en"


def test_user_errors_name_controls_in_the_browsers_language():
    import gradio as gr

    with pytest.raises(gr.Error) as caught, jobs.user_errors(language="zh-CN"):
        raise OptionError("option tile: Input should be 'auto' or a valid integer (got 'huge')")
    assert caught.value.message.startswith("“" + i18n.text("opt.tile", "zh-CN") + "”")

# ----------------------------------------------------------------------------------------------- login (issue 9)


def test_password_check():
    check = access.PasswordCheck("ann", "se:cret")
    assert check("ann", "se:cret")
    assert not check("ann", "secret") and not check("bob", "se:cret") and not check("", "") and not check("ann", "")


def test_login_attempts_wait_longer_after_each_failure_beyond_the_free_tries():
    now = [1000.0]
    attempts = access.LoginAttempts(free_tries=5, first_delay=2.0, max_delay=10.0, clock=lambda: now[0])
    for _ in range(5):
        assert attempts.begin("10.0.0.1") == 0  # each try counts as failed until it succeeds
    assert attempts.begin("10.0.0.1") == pytest.approx(2.0)   # the 6th try waits
    assert attempts.begin("10.0.0.2") == 0                     # other addresses do not
    now[0] += 2.0
    assert attempts.begin("10.0.0.1") == 0                     # 6th failure: 4 s
    assert attempts.wait_left("10.0.0.1") == pytest.approx(4.0)
    now[0] += 4.0
    assert attempts.begin("10.0.0.1") == 0 and attempts.wait_left("10.0.0.1") == pytest.approx(8.0)
    now[0] += 8.0
    assert attempts.begin("10.0.0.1") == 0 and attempts.wait_left("10.0.0.1") == pytest.approx(10.0)  # the cap
    attempts.succeeded("10.0.0.1")
    assert attempts.wait_left("10.0.0.1") == 0


def test_login_attempts_forget_idle_addresses_beyond_the_bound():
    now = [0.0]
    attempts = access.LoginAttempts(max_clients=3, forget_after=60.0, clock=lambda: now[0])
    for index in range(10):
        now[0] += 100.0
        attempts.begin(f"10.0.0.{index}")
    assert len(attempts._failures) <= 3

# ----------------------------------------------------------------------------------------------- jobs (issue 9)


def test_a_job_whose_client_left_is_cancelled_by_the_watcher():
    board = jobs.JobBoard()
    present = threading.Event()
    present.set()
    with pytest.raises(CancelledError), board.run("upscale", "s", client_gone=lambda: not present.is_set(),
                                                  poll=0.01) as job:
        time.sleep(0.1)
        assert not job.cancel.is_set()  # the client is there
        present.clear()
        assert job.cancel.wait(2) and job.abandoned.is_set()
        raise CancelledError("cancelled")
    assert board.history[-1].outcome == "abandoned"
    with board.run("upscale", "s", client_gone=lambda: 1 / 0, poll=0.01) as job:  # a failing probe: cannot tell
        time.sleep(0.05)
        assert not job.cancel.is_set()


def test_jobs_take_turns_even_when_gradio_lets_a_second_one_start(tmp_path):
    """Gradio frees its concurrency slot when an event is cancelled, before the function has returned."""
    from tessera.web import handlers as web_app

    app = web_app.WebApp(web_app.WebConfig(output_dir=retention.prepare_output_dir(tmp_path / "r")))
    order: list[str] = []

    def first() -> None:
        with app._job("first", None):
            order.append("first starts")
            time.sleep(0.3)
            order.append("first ends")

    thread = threading.Thread(target=first)
    thread.start()
    while not order:
        time.sleep(0.01)
    with app._job("second", None):
        order.append("second starts")
    thread.join()
    assert order == ["first starts", "first ends", "second starts"]


def test_quality_is_checked():
    limits.check_quality(1)
    limits.check_quality(100.0)
    for bad in (0, 101, 50.5, "95", None, True):
        with pytest.raises(InputError, match="quality"):
            limits.check_quality(bad)


@pytest.mark.parametrize("job, values, words", [
    ("upscale_job", {"tile": "huge"}, '"Tile size"'),
    ("upscale_job", {"scale": "0.5"}, '"Scale"'),
    ("enhance_job", {"tile": "huge"}, '"Tile size"'),
    ("inpaint_job", {"max_size": "8"}, '"Max size": must be at least 64'),
])
def test_jobs_refuse_bad_options_before_decoding_the_upload(tmp_path, monkeypatch, job, values, words):
    """The options are checked by the shared schema first: a bad one never costs a decode of the photo."""
    import gradio as gr

    from tessera.web import handlers as web_app
    from tessera.web.uploads import UploadGate

    def decoded(*args, **kwargs):
        raise AssertionError("the upload was decoded before the options were checked")

    monkeypatch.setattr(web_app, "open_upload", decoded)
    app = web_app.WebApp(web_app.WebConfig(output_dir=retention.prepare_output_dir(tmp_path / "r")))
    app.gate = UploadGate(tmp_path)
    photo = str(tmp_path / "photo.png")  # never read
    inputs = (photo, photo) if job == "inpaint_job" else (photo,)
    with pytest.raises(gr.Error) as caught:
        getattr(app, job)(*inputs, None, progress=None, **values)
    assert caught.value.message.startswith(words), caught.value.message

@pytest.mark.parametrize("job, values, scale", [
    ("upscale_job", {}, 2.0),                                    # weight-free Lanczos: its own x2
    ("upscale_job", {"scale": "3"}, 3.0),
    ("upscale_job", {"model": "RealESRGAN_x2plus.pth"}, 2.0),    # a folder file named as in the catalog
    ("upscale_job", {"model": "realesr-animevideov3-x3.safetensors"}, 3.0),
    ("upscale_job", {"model": "mine.pth"}, 4.0),                 # weights the catalog does not know: erring high
    ("enhance_job", {"upscale": 2.0}, 2.0),
    ("inpaint_job", {"model": "telea"}, 1.0),
])
def test_jobs_check_the_result_fits_at_the_task_s_own_scale(tmp_path, monkeypatch, job, values, scale):
    """Before a model is loaded, the result's size comes from the task registry's output scale."""
    import gradio as gr
    from PIL import Image

    from tessera.web import handlers
    from tessera.web.config import WebConfig
    from tessera.web.uploads import UploadGate

    factors: list[float] = []

    def fits(picture, factor, **_):
        factors.append(factor)
        raise ResourceError("stopped before the task ran")

    monkeypatch.setattr(handlers, "check_result_fits", fits)
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("RealESRGAN_x2plus.pth", "realesr-animevideov3-x3.safetensors", "mine.pth"):
        (folder / name).write_bytes(b"never loaded")
    app = handlers.WebApp(WebConfig(output_dir=retention.prepare_output_dir(tmp_path / "r"),
                                    model_folders=(folder,)))
    app.gate = UploadGate(tmp_path)
    Image.new("RGB", (40, 30)).save(tmp_path / "photo.png")
    photo = str(tmp_path / "photo.png")
    inputs = (photo, photo) if job == "inpaint_job" else (photo,)
    with pytest.raises(gr.Error, match="stopped before the task ran"):
        getattr(app, job)(*inputs, None, progress=None, **values)
    assert factors == [scale]

# ----------------------------------------------------------------------------------------------- faces (issue 11)


def test_clicking_a_face_on_the_preview_toggles_its_index_in_the_faces_field(tmp_path):
    from types import SimpleNamespace

    from PIL import Image
    from skimage import data

    from tessera.options import FaceOptions
    from tessera.tasks.faces import find_faces
    from tessera.web import handlers as web_app
    from tessera.web.results import CHOSEN_COLOUR
    from tessera.web.uploads import UploadGate

    app = web_app.WebApp(web_app.WebConfig(output_dir=retention.prepare_output_dir(tmp_path / "r"),
                                           preview_side=512))
    app.gate = UploadGate(tmp_path)
    photo = np.concatenate([data.astronaut(), data.astronaut()[:, ::-1]], axis=1)  # 1024 px: a half-size preview
    Image.fromarray(photo).save(tmp_path / "photo.png")
    drawn, count, found = app.detect(str(tmp_path / "photo.png"), None)
    faces = find_faces(photo, FaceOptions())
    assert count == "2" and drawn.shape == (256, 512, 3) and len(found["faces"]) == 2
    assert not np.all(drawn == found["preview"])  # boxes and index labels drawn on a copy

    def click(face_index: int, chosen: str) -> tuple[str, object]:
        x0, y0, x1, y1 = faces[face_index].box  # photo pixels -> preview pixels (half size)
        return app.toggle_face(found, chosen, None, SimpleNamespace(index=[(x0 + x1) / 4, (y0 + y1) / 4]))

    text, image = click(1, "")
    assert text == "1" and np.any(np.all(image == CHOSEN_COLOUR, axis=2))
    assert click(0, text)[0] == "0,1" and click(1, "0,1")[0] == "0" and click(1, "1")[0] == ""
    assert app.toggle_face(found, "1", None, SimpleNamespace(index=[2, 250]))[0] == "1"  # no face there
    assert parse_options(FaceOptions, faces="0,1").faces == [0, 1]


def test_face_at_picks_the_smallest_box_under_the_point():
    from tessera.faces.detect import Face
    from tessera.web.handlers import face_at

    points = np.zeros((5, 2))
    big, small = Face((0.0, 0.0, 100.0, 100.0), 0.9, points), Face((40.0, 40.0, 60.0, 60.0), 0.9, points)
    assert face_at([big, small], 50, 50) == 1 and face_at([big, small], 10, 10) == 0
    assert face_at([big, small], 150, 10) is None


def test_strength_left_empty_on_the_page_means_the_model_s_own():
    import gradio as gr

    from tessera.web.controls import option_control, option_values

    with gr.Blocks():
        control = option_control(FaceOptions, "strength")
    assert isinstance(control, gr.Textbox) and control.value == ""
    assert parse_options(FaceOptions, option_values(FaceOptions, {"strength": " "})).strength is None
    assert parse_options(FaceOptions, option_values(FaceOptions, {"strength": "0.5"})).strength == 0.5
    with pytest.raises(OptionError, match="strength"):
        parse_options(FaceOptions, option_values(FaceOptions, {"strength": "strong"}))
