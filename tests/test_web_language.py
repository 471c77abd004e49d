"""The web UI's language: whole messages in Chinese (every message the web layer raises, collected by calling its
checks with bad values), the language a request asks for (cookie, then Accept-Language), the language switch's
script, and the job's warnings shown on the page once each (:mod:`tessera.web.notices`)."""
from __future__ import annotations

import json
import re
import threading
import warnings
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("gradio")

from PIL import Image

from tessera.errors import CancelledError, ImageTooLargeError, TesseraError
from tessera.options import FaceOptions, InpaintOptions, UpscaleOptions, parse_options
from tessera.progress import ProgressEvent
from tessera.web import handlers, i18n, job_progress, jobs, language, limits, notices, viewer, wording, wording_zh
from tessera.web.models import ModelMenu
from tessera.web.uploads import UploadGate

# Words that may stay in a Chinese message: names (models, methods, devices, formats, tools) and units.
ALLOWED = {
    "auto", "lanczos", "lama", "telea", "patchmatch", "crop", "feather", "resize", "full", "none", "cpu", "cuda",
    "mps", "fp32", "fp16", "bf16", "yunet", "cascade", "parsenet", "box", "always", "never", "hyper", "laplacian",
    "wiener", "richardson", "lucy", "PNG", "JPEG", "WEBP", "TIFF", "GIF", "EXIF", "ICC", "CMYK", "GPU", "CPU",
    "CUDA", "MPS", "BMP", "APNG", "LaMa", "GiB", "MiB", "KiB", "TiB", "gradio_client", "handle_file", "tessera", "Pillow",
    "tifffile", "patchmatch-cython", "realesrgan", "gpen", "bfr", "codeformer", "JPG", "ETA",
    # in the page's labels: methods and networks by their names, an abbreviation
    "Lanczos", "USM", "YuNet", "ParseNet", "CodeFormer", "Richardson-Lucy", "scikit-image", "API",
    "English",  # the language switch names each language in itself
}
ALLOWED |= {part for name in __import__("tessera.models.catalog", fromlist=["model_names"]).model_names()
            for part in [name, *re.split(r"[-_.]", name)]}
_QUOTED = re.compile(r"'[^']*'")                       # a value the user sent, shown back as it was
_FILE = re.compile(r"[\w.-]*\.(?:png|jpe?g|webp|tiff?|gif|bmp|txt|zip|json|pth|pt|bin|safetensors|onnx|ckpt)\b", re.IGNORECASE)


def english_left(text: str) -> list[str]:
    """Runs of 3+ ASCII letters in ``text`` that are not an allowed name, a file name or a quoted value."""
    text = _FILE.sub(" ", _QUOTED.sub(" ", text))
    return [word for word in re.findall(r"[A-Za-z][A-Za-z_]{2,}(?:-[A-Za-z0-9]+)*", text)
            if word not in ALLOWED and not all(part in ALLOWED or len(part) < 3 for part in re.split(r"[-_]", word))]


def zh(message: str) -> str:
    return wording.for_page(message, "zh-CN")


def assert_chinese(message: str) -> str:
    said = zh(message)
    assert wording_zh.LEAD_IN not in said, f"no entry for: {message!r} -> {said!r}"
    assert not english_left(said), f"{message!r} -> {said!r}: {english_left(said)}"
    assert re.search(r"[\u4e00-\u9fff]", said) or not re.search(r"[A-Za-z]{3,}", message), (message, said)
    return said

# ----------------------------------------------------------------------------------------------- collecting


def _raised(call, *args, **kwargs) -> str:
    import gradio as gr

    try:
        call(*args, **kwargs)
    except (TesseraError, gr.Error) as error:
        return " ".join(str(getattr(error, "message", error)).split())
    raise AssertionError(f"{call} raised nothing")


def option_errors() -> set[str]:
    """Every kind of option error the page's controls can cause (bad values for every field)."""
    found = set()
    for schema in (UpscaleOptions, InpaintOptions, FaceOptions):
        for name in schema.model_fields:
            if name in wording.NOT_ON_PAGE:
                continue
            for value in (-1, "abc", 10 ** 9, "", 0, 1.5, [-3]):
                try:
                    parse_options(schema, **{name: value})
                except TesseraError as error:
                    found.add(str(error))
    for schema, values in ((UpscaleOptions, {"model": "realesrgan-x4plus", "sharpen": 1}),
                           (FaceOptions, {"background": "none", "upscale": 2}),
                           (FaceOptions, {"faces": "0", "only_center_face": True}),
                           (FaceOptions, {"aligned": True, "faces": "1"})):
        found.add(_raised(parse_options, schema, **values))
    return found


def page_errors(tmp_path) -> set[str]:
    """The web layer's own checks, called with bad values (limits, uploads, models, handlers)."""
    tight = limits.Limits(max_upload_bytes=10, max_pixels=100)
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(big)
    text = tmp_path / "notes.png"
    text.write_bytes(b"this is not an image at all, only words " * 4)
    broken = tmp_path / "broken.png"
    broken.write_bytes(big.read_bytes()[:200])
    picture = limits.open_upload(str(big), limits.Limits())
    menu = ModelMenu(tmp_path / "models", [])
    found = {
        _raised(limits.check_upload, None, tight), _raised(limits.check_upload, None, tight, "mask"),
        _raised(limits.check_upload, str(tmp_path / "gone.png"), tight),
        _raised(limits.check_upload, str(big), tight), _raised(limits.check_upload, str(empty), limits.Limits()),
        _raised(limits.open_upload, str(big), limits.Limits(max_pixels=100)),
        _raised(limits.open_upload, str(text), limits.Limits()),
        _raised(limits.open_upload, str(broken), limits.Limits()),
        _raised(limits.check_scale, 9), _raised(limits.check_quality, 0), _raised(limits.check_quality, 101.5),
        _raised(limits.check_result_fits, picture, 8, available=1000),
        _raised(UploadGate(tmp_path / "uploads").admit, str(big), "s"),
        _raised(UploadGate(tmp_path / "uploads").admit, str(big), "s", "mask"),
        _raised(menu.resolve, "upscale", "no-such-model"),
        _raised(menu.resolve, "upscale", "realesrgan-x4plus"),
        _raised(handlers._upscale_scale, {"scale": "abc"}), _raised(handlers._upscale_scale, {"scale": "9"}),
        _raised(handlers._check_mask_pixels, 20000, 20000, limits.Limits()),
        # the viewer's painting, checked on the server (its own notes come in the page's language already)
        _raised(viewer.parse_strokes, "{not json"), _raised(viewer.parse_strokes, '{"strokes": [{"size": 5}]}'),
        _raised(viewer.parse_strokes, '{"strokes": [{"size": 0, "points": [[1, 2]]}]}'),
        _raised(viewer.parse_strokes, json.dumps({"strokes": [{"size": 5, "points": [[1, 2]]}] * 5001})),
        _raised(viewer.parse_strokes, json.dumps({"strokes": [{"size": 5, "points": [[1, 2]] * 100_001}]})),
        _raised(viewer.strokes_mask, [viewer.Stroke(False, 2000, np.array([[0.0, 0.0], [600.0, 400.0]] * 30))], 600, 400),
        _raised(viewer.load_pyramid, tmp_path / "no-such-view"),
        "blob.png: not uploaded to this server",
    }
    return {" ".join(message.replace(str(tmp_path) + "/", "").split()) for message in found}


def library_errors(tmp_path) -> set[str]:
    """The errors of the library a web user meets most: the mask, the engine's memory, devices, models."""
    from tessera.engine.runtime import resolve_device, resolve_precision
    from tessera.masks import prepare_mask

    photo = (20, 20)
    found = {
        _raised(prepare_mask, np.zeros((10, 10), np.uint8), photo),
        _raised(prepare_mask, np.zeros(photo, np.uint8), photo),
        _raised(prepare_mask, np.full(photo, 255, np.uint8), photo),
        _raised(resolve_device, "tpu"), _raised(resolve_device, "cuda:7"),
        _raised(resolve_precision, "fp8", "cpu", None),
        "out of memory running realesrgan-x4plus on one 512x512 input on cuda:0 (budget 1.5 GiB)",
        "out of memory running realesrgan-x4plus on cuda:0 even with a 64px tile and batch 1 (budget 1.5 GiB); "
        "free memory or lower --max-memory",
        "memory budget 10.0 MiB is too small for lama: a 32px tile with 16px context needs 44.0 MiB",
        "model realesrgan-x4plus is a upscale model, not a face model (try gpen-bfr-512, gfpgan-1.4, codeformer "
        "or restoreformer)",
        "face 3 not found: the detector found 2 (`tessera enhance --list-faces` prints them)",
        "photo.png: 20000x20000 = 400,000,000 pixels take 1.1 GiB decoded and up to 2.2 GiB while decoding, more "
        "than 50% of the 1.0 GiB of memory available: the limit is 100,000 pixels now (raise max_pixels, "
        "--max-pixels on the command line, to read it anyway)",
        "--strategy full runs the whole 6000x4000 photo at full size, over --max-size 2048; use --strategy auto "
        "or resize",
        "the memory budget does not fit even a 512x512 inpainting pass; raise --max-memory",
        "/root/.cache/tessera/lama.pt was not pulled and no checksum is published for lama, so it is not loaded; "
        "if you trust its sha256 abc, run `tessera models pull lama --trust`",
        "/root/.cache/tessera/lama.pt has sha256 abc but the published checksum is def: the file is damaged or was "
        "replaced; run `tessera models pull lama --force` to download it again",
        "model 'lama' is not in the cache (/root/.cache/tessera/lama.pt); run `tessera models pull lama`",
        "unknown model 'x9'", "model file not found: /srv/models/x.pth",
        "x.pth: holds a list, not a state dict of weights", "x.pth: contains no weight tensors",
        "x.pth: cannot read weights: invalid load key, 'v'.",
        "x.bin: unsupported weight file type '.bin' (expected one of .pth, .pt, .safetensors)",
        "x.safetensors: holds 9.0 GiB of weights, over the 4.0 GiB budget (raise it with TESSERA_WEIGHT_BUDGET=8G)",
    }
    return {" ".join(message.split()) for message in found}


def warning_texts(tmp_path) -> set[str]:
    from tessera.image.read import load_image
    from tessera.masks import prepare_mask

    frames = [Image.fromarray(np.full((8, 8, 3), level, np.uint8)) for level in (0, 255)]
    animated = tmp_path / "moving.gif"
    frames[0].save(animated, save_all=True, append_images=frames[1:], duration=100)
    mask = np.zeros((20, 20), np.uint8)
    mask[:, :10] = 255
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_image(animated)
        prepare_mask(mask, (20, 20))
    found = {str(item.message).replace(str(tmp_path) + "/", "") for item in caught}
    assert any("first frame" in text for text in found) and any("covers" in text for text in found), found
    return found | {"photo.jpg: ICC profile unusable (cannot build transform); converting CMYK naively"}


def progress_and_status() -> set[str]:
    outer = ProgressEvent("passes", 0, 2, elapsed=0.0, eta=None, message="pass 1/2: x4")
    lines = {job_progress.describe_progress(ProgressEvent("tiles", 3, 8, elapsed=3.0, eta=5.0), outer),
             job_progress.describe_progress(ProgressEvent("regions", 1, 4, elapsed=3.0, eta=125.0)),
             job_progress.describe_progress(ProgressEvent("faces", 2, 5, elapsed=3.0, eta=4000.0)),
             job_progress.describe_progress(outer), *job_progress.PHASES.values()}
    lines |= {"tile 3/8 · ETA 5 s · memory 41% ⚠ over 90%", "saving PNG · 12.3 MiB written · 3 s · job memory 1.2 GiB",
              "detect 1/3 · ⚠ machine memory 93% in use · GPU cuda:0 3.1 / 80.0 GiB ⚠ over 90%"}
    upscale = SimpleNamespace(model="lanczos", weight_free=True)
    enhance = SimpleNamespace(faces=[1, 2], model="gpen-bfr-512")
    regions = [SimpleNamespace(downscaled=True, phase=1), SimpleNamespace(downscaled=False, phase=0)]
    from tessera.tasks.inpaint import InpaintReport

    try:
        inpaint = InpaintReport(regions=regions, model="telea", strategy="crop", device="cpu", precision="fp32",
                                coverage=0.032, fallback="LaMa weights are not in the cache (/root/.cache/lama.pt): "
                                "used the weight-free telea method (patchmatch-cython, which keeps texture better, "
                                "is not installed: pip install 'tessera[inpaint]'); for LaMa run "
                                "`tessera models pull lama`")
        statuses = [handlers._inpaint_status(inpaint, "2.5 s")]
    except TypeError:  # the report's fields changed: its describe() words are still checked below
        statuses = ["2 region(s), 1 downscaled, 1 pieces of thin holes with telea (crop) on cpu fp32; mask covers "
                    "3.20% · 2.5 s"]
    statuses += [handlers._upscale_status(upscale, "12.3 s (read 0.4 s, work 9.8 s, save 2.1 s)"),
                 handlers._enhance_status(enhance, "3.1 s")]
    lines |= {f"✓ 6000×4000 → 12000×8000 · {status} · my photo_upscaled.png" for status in statuses}
    lines |= {"cancelling 1 job(s): stops at the next batch", "no running job",
              "cancelling 1 job(s): still stopping…", "cancelling 2 job(s): stopped, nothing was saved",
              "cancelling 1 job(s): finished before it could stop, the result was saved", "finish",
              "✓ 10×10 → 20×20 · lanczos (weight-free) · 1.0 s (read 0.1 s, work 0.5 s, save 0.3 s, finish 0.1 s) "
              "· job memory 12 MiB · a_upscaled.png"}
    return lines


def job_errors() -> set[str]:
    import gradio as gr

    found = set()
    for failure in (CancelledError("cancelled"), MemoryError(), ZeroDivisionError("division by zero"),
                    ImageTooLargeError("x")):
        try:
            with jobs.user_errors(log=lambda _text: None):
                raise failure
        except gr.Error as error:
            found.add(str(error.message))
    return found

# ----------------------------------------------------------------------------------------------- whole messages


def test_every_message_of_the_web_layer_is_in_chinese(tmp_path):
    messages = (option_errors() | page_errors(tmp_path) | library_errors(tmp_path) | warning_texts(tmp_path)
                | progress_and_status())
    assert len(messages) > 150
    for message in sorted(messages):
        assert_chinese(message)


def test_job_errors_and_their_titles_in_chinese():
    import gradio as gr

    for failure, title in ((CancelledError("cancelled"), "已取消"), (MemoryError(), "错误"),
                           (ZeroDivisionError("division by zero"), "错误")):
        with pytest.raises(gr.Error) as caught, jobs.user_errors(language="zh-CN", log=lambda _text: None):
            raise failure
        assert caught.value.title == title
        assert re.search(r"[\u4e00-\u9fff]", caught.value.message)
    with pytest.raises(gr.Error) as caught, jobs.user_errors(language="zh-CN"):
        raise gr.Error("too many strokes (6,000, at most 5,000): upload a mask instead")
    assert caught.value.message == "笔画过多（6,000，上限 5,000）：请改为上传蒙版" and caught.value.title == "错误"
    # English stays as it was
    with pytest.raises(gr.Error) as caught, jobs.user_errors():
        raise CancelledError("cancelled")
    assert caught.value.message == "Cancelled: the job was stopped before it finished"
    assert caught.value.title == "Cancelled"


def test_the_table_keeps_names_and_numbers_and_translates_reasons():
    assert zh("tile 3/8 · ETA 1 min 05 s") == "分块 3/8 · 预计剩余 1 分 05 秒"
    assert zh("a.gif: animated GIF: only its first frame is read") == "a.gif：动画 GIF：只读取第一帧"
    assert zh("option grow: Input should be greater than or equal to 0 (got -1)") == "“蒙版扩展”：应为 ≥ 0（收到 -1）"
    said = zh("✓ 480×400 → 960×800 · lanczos (weight-free) · 3.2 s · my photo.png")
    assert said == "✓ 480×400 → 960×800 · lanczos（无权重方法） · 3.2 秒 · my photo.png"
    assert zh("model 'x4' is not downloaded on this server: whoever runs it can fetch it with "
              "`tessera models pull x4`").startswith("本服务器尚未下载模型 'x4'")


def test_messages_already_in_chinese_stay_as_they_are():
    from tessera.web.editing import say

    worded = say("mask_size", "zh-CN", mw=10, mh=10, width=20, height=20)
    assert zh(worded) == worded
    assert zh("photo.png：动画 GIF：只读取第一帧") == "photo.png：动画 GIF：只读取第一帧"


def test_unknown_messages_get_a_lead_in_and_keep_their_words():
    assert zh("the flux capacitor overheated") == wording_zh.LEAD_IN + "the flux capacitor overheated"
    assert zh("tile 3/8 · the flux capacitor overheated") == "分块 3/8 · " + wording_zh.LEAD_IN + \
        "the flux capacitor overheated"
    assert zh("photo.png") == "photo.png" and zh("1.5 GiB") == "1.5 GiB"


def test_english_messages_keep_the_cli_words_replaced_only():
    assert wording.for_page("option grow: must be >= 0 (got -1)") == '"Mask grow": must be >= 0 (got -1)'
    assert wording.for_page("tile 3/8 · ETA 5 s") == "tile 3/8 · ETA 5 s"


def test_every_table_entry_is_reached_by_a_readable_kind():
    kinds = [entry.kind for entry in wording_zh.MESSAGES]
    assert len(kinds) == len(set(kinds)), "one entry per kind of message"
    assert all(re.fullmatch(r"[a-z]+\.[a-z_0-9]+", kind) for kind in kinds)

# ----------------------------------------------------------------------------------------------- which language


def test_the_cookie_comes_before_the_accept_language_header():
    assert i18n.request_language("tessera_lang=zh-CN", "en-US,en") == "zh-CN"
    assert i18n.request_language("a=1; tessera_lang=en", "zh-CN,zh") == "en"
    assert i18n.request_language("tessera_lang=fr", "zh-CN") == "zh-CN"
    assert i18n.request_language(None, "zh-Hans") == "zh-CN"
    assert i18n.request_language('broken="', None) == "en"
    assert i18n.cookie_language("zh") == "zh-CN" and i18n.cookie_language("xx") is None


def test_the_handlers_read_the_request_language():
    request = SimpleNamespace(headers={"cookie": "tessera_lang=zh-CN", "accept-language": "en"})
    assert handlers._language(request) == "zh-CN"
    assert handlers._language(SimpleNamespace(headers={"accept-language": "zh-CN"})) == "zh-CN"
    assert handlers._language(None) == "en"


def test_the_head_script_and_the_switch_name_the_cookie():
    assert i18n.COOKIE in language.HEAD_SCRIPT and "Navigator.prototype" in language.HEAD_SCRIPT
    html = language.switch_html()
    assert 'data-lang="en"' in html and 'data-lang="zh-CN"' in html and "中文" in html


def test_the_head_middleware_writes_the_script_into_html_pages_only():
    import asyncio

    def app_sending(kind: bytes, body: bytes):
        async def app(scope, receive, send):
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", kind), (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body[:5], "more_body": True})
            await send({"type": "http.response.body", "body": body[5:]})
        return app

    def run(app) -> tuple[dict, bytes]:
        sent: list[dict] = []

        async def send(message):
            sent.append(message)

        asyncio.run(language.HeadScript(app, "<script>x</script>")({"type": "http", "method": "GET"}, None, send))
        headers = dict(sent[0]["headers"])
        return headers, b"".join(message.get("body", b"") for message in sent[1:])

    headers, body = run(app_sending(b"text/html; charset=utf-8", b"<html><head><title>t</title></head></html>"))
    assert body == b"<html><head><script>x</script><title>t</title></head></html>"
    assert headers[b"content-length"] == str(len(body)).encode()
    _headers, body = run(app_sending(b"application/json", b'{"head": "<head>"}'))
    assert body == b'{"head": "<head>"}'

# ----------------------------------------------------------------------------------------------- notices


def test_notices_show_each_warning_once_worded_and_log_all(tmp_path):
    from tessera.image.decode import FirstFrameWarning
    from tessera.masks import LargeMaskWarning

    shown: list[tuple[str, str]] = []
    logged: list[str] = []
    text = "mask covers 45% of the photo (over 30%): the fill has little context and quality drops; mask less at a time"
    with warnings.catch_warnings():
        warnings.simplefilter("always")  # as for tessera's own modules, which the block sets so (this is a test's)
        warnings.showwarning = lambda message, *rest, **kw: logged.append(str(message))
        with notices.job_notices("zh-CN", {"/srv/up/x/photo.gif": "photo.gif"},
                                 show=lambda message, lang: shown.append((message, lang))) as seen:
            for _ in range(3):
                warnings.warn(text, LargeMaskWarning)
            warnings.warn("/srv/up/x/photo.gif: animated GIF: only its first frame is read", FirstFrameWarning)
            worker = threading.Thread(target=warnings.warn, args=("not tessera's", DeprecationWarning))
            worker.start()
            worker.join()
    assert [message for message, _lang in shown] == [
        "蒙版覆盖了照片的 45%（超过 30%）：可参考的周围内容太少，效果会变差；请每次少涂抹一些",
        "photo.gif：动画 GIF：只读取第一帧"]
    assert seen == [message for message, _lang in shown]
    assert logged.count(text) == 3  # the server log gets every one, as before


def test_notices_register_the_job_only_while_it_runs_and_outside_gradio_show_nothing():
    with pytest.warns(UserWarning, match="covers"):
        with notices.job_notices("en"):
            assert len(notices._job_sink) == 1
            warnings.warn("mask covers 45% of the photo", UserWarning)  # show_on_page: no Gradio event, no toast
        assert notices._job_sink == []  # the hook stays (installed once); no job hears warnings any more
