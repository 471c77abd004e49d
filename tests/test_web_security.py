"""The web server accepts only what it should (issue 9): models only from its menu, inputs only from Gradio's
uploads, abandoned jobs cancelled, logins throttled, messages that name the page's controls.

Each test talks to a real server over HTTP (gradio_client, or raw requests where a crafted payload is the point).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")
httpx = pytest.importorskip("httpx")

from PIL import Image

from conftest import random_compact, serve_app
from tessera.web.app import WebConfig
from tessera.web.limits import Limits
from tessera.web.retention import prepare_output_dir

SRC = Path(__file__).resolve().parents[1] / "src"



def tiny_upscaler(path: Path) -> Path:
    """A random-weight Compact x2 as a safetensors file (what an administrator would put in --models-from)."""
    from safetensors.torch import save_file

    net = random_compact(2, num_feat=8, num_conv=2)
    save_file({key: value.contiguous() for key, value in net.state_dict().items()}, str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("security-files")
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((60, 80, 3)) * 255).astype(np.uint8)).save(folder / "photo.png")
    Image.fromarray((rng.random((1000, 1000, 3)) * 255).astype(np.uint8)).save(folder / "slow.png")
    Image.fromarray(np.zeros((30, 30), np.uint8)).save(folder / "small-mask.png")
    # a "TorchScript" file as an attacker would upload it: its content does not matter, it must never be loaded
    (folder / "evil.pt").write_bytes(b"PK\x03\x04 crafted archive")
    return {name: folder / f"{name}.png" for name in ("photo", "slow", "small-mask")} | {"evil": folder / "evil.pt"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("security")
    models = tmp / "models"
    models.mkdir()
    tiny_upscaler(models / "tiny-x2.safetensors")
    (models / "escape.pth").symlink_to(tiny_upscaler(tmp / "outside.safetensors"))
    config = WebConfig(output_dir=prepare_output_dir(tmp / "results"), preview_side=128,
                       limits=Limits(max_pixels=2_000_000), model_folders=(models,), model_dir=tmp / "cache")
    blocks, app, url = serve_app(config)
    yield app, url, tmp
    blocks.close()


@pytest.fixture(scope="module")
def client(server):
    return gradio_client.Client(server[1], verbose=False, download_files=str(server[2] / "downloads"))


def failure(call) -> str:
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError) as caught:
        call()
    message = str(caught.value)
    assert "\n" not in message.strip(), message
    return message


def upload(url: str, path: Path) -> str:
    """Send a file through Gradio's own upload route; return the server path Gradio stored it at."""
    with path.open("rb") as handle:
        response = httpx.post(f"{url}gradio_api/upload", files={"files": (path.name, handle)})
    response.raise_for_status()
    return response.json()[0]


def raw_call(url: str, client, api: str, first: dict, **values) -> tuple[str, object]:
    """POST a crafted payload to /gradio_api/call/<api> (first input as given, the others at their defaults, or
    ``values``); return the final SSE event's name and data."""
    parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"][f"/{api}"]["parameters"]
    data = [first] + [values.get(p["parameter_name"], p["parameter_default"]) for p in parameters[1:]]
    posted = httpx.post(f"{url}gradio_api/call/{api}", json={"data": data}, timeout=30)
    posted.raise_for_status()
    event_id = posted.json()["event_id"]
    with httpx.stream("GET", f"{url}gradio_api/call/{api}/{event_id}", timeout=120) as stream:
        event = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[len("event: "):]
            elif line.startswith("data: ") and event in ("complete", "error"):
                return event, json.loads(line[len("data: "):])
    raise AssertionError("the event stream ended without a result")


def file_data(path: str | Path) -> dict:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}

# ----------------------------------------------------------------------------------------------- models


def test_a_model_folder_file_is_offered_by_name_and_runs(client, files):
    result, _compare, status = client.predict(gradio_client.handle_file(str(files["photo"])),
                                              model="tiny-x2.safetensors", api_name="/upscale")
    with Image.open(result) as image:
        assert image.size == (160, 120)
    assert "✓" in status and "weight-free" not in status


def test_a_client_cannot_make_the_server_load_a_path(server, client, files):
    """The issue's attack: upload a crafted .pt through Gradio's upload route, pass its server path as `model`.
    Refused, with the same reply as for a path that does not exist; a link out of a model folder is not offered."""
    _app, url, _tmp = server
    stored = upload(url, files["evil"])
    assert Path(stored).is_file()
    photo = gradio_client.handle_file(str(files["photo"]))
    replies = {}
    for value in (stored, str(Path(stored).parent / "no-such.pt"), "escape.pth"):
        for api, name in (("/upscale", "model"), ("/enhance", "model"), ("/enhance", "background"),
                          ("/inpaint", "model")):
            inputs = (photo, gradio_client.handle_file(str(files["photo"]))) if api == "/inpaint" else (photo,)
            message = failure(lambda: client.predict(*inputs, **{name: value}, api_name=api))
            replies[(api, name, value)] = message.replace(value, "VALUE")
    for (api, name, _value), message in replies.items():
        same_control = {m for (a, n, _v), m in replies.items() if (a, n) == (api, name)}
        assert len(same_control) == 1, same_control  # no reply tells whether the path exists
        assert "VALUE" in message


def test_the_server_checks_the_model_itself_not_only_the_dropdown(server, files):
    """A handler called with a path (as if the dropdown accepted anything) refuses it before touching the file."""
    import gradio as gr

    from tessera.web.uploads import UploadGate

    app, _url, tmp = server
    uploads = tmp / "direct-uploads"
    uploads.mkdir(exist_ok=True)
    photo = shutil.copy(files["photo"], uploads / "photo.png")
    evil = shutil.copy(files["evil"], uploads / "evil.pt")
    app.gate, gate = UploadGate(uploads), app.gate
    try:
        messages = set()
        for value in (str(evil), str(uploads / "missing.pt")):
            for call in (lambda: app.upscale_job(str(photo), None, progress=None, model=value),
                         lambda: app.enhance_job(str(photo), None, progress=None, model=value),
                         lambda: app.enhance_job(str(photo), None, progress=None, background=value),
                         lambda: app.inpaint_job(str(photo), str(photo), None, progress=None, model=value)):
                with pytest.raises(gr.Error) as caught:
                    call()
                messages.add(re.sub(r"'[^']*'", "VALUE", caught.value.message))
        assert messages == {"unknown model VALUE: choose one from the list"}
    finally:
        app.gate = gate

# ----------------------------------------------------------------------------------------------- uploads


def test_payloads_naming_server_files_are_refused(server, client, files):
    """Gradio refuses paths outside its upload folder; the output folder is a static path it lets through, so
    the job itself refuses those. A result of an earlier job cannot be fed back as another job's photo."""
    app, url, tmp = server
    result, *_ = client.predict(gradio_client.handle_file(str(files["photo"])), api_name="/upscale")
    saved = sorted((tmp / "results").glob("*-upscaled-*/photo-upscaled.png"))
    assert saved
    outside = tmp / "outside.png"
    shutil.copy(files["photo"], outside)
    for path in ("/etc/passwd", outside, saved[-1]):
        event, data = raw_call(url, client, "upscale", file_data(path))
        assert event == "error", (path, data)
    event, data = raw_call(url, client, "upscale", file_data(saved[-1]))
    assert "not uploaded to this server" in json.dumps(data) and str(tmp) not in json.dumps(data)
    stored = upload(url, files["photo"])  # what Gradio received is fine
    event, data = raw_call(url, client, "upscale", file_data(stored))
    assert event == "complete", data


def test_the_mask_made_by_the_page_is_admitted_for_its_session_only(server, files, tmp_path):
    import gradio as gr

    from tessera.web.editing import EditorHandlers
    from tessera.web.uploads import UploadGate

    app, _url, _tmp = server
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    photo = shutil.copy(files["photo"], uploads / "photo.png")
    strokes = json.dumps({"strokes": [{"erase": False, "size": 12, "points": [[30, 25], [50, 25]]}]})

    class Request:
        def __init__(self, session):
            self.session_hash, self.headers = session, {}

    app.gate, gate = UploadGate(uploads), app.gate
    try:
        editing = EditorHandlers(app)
        _value, history, current = editing.open_photo(str(photo), Request("alice"))
        current, mask = editing.prepare_mask(strokes, history, Request("alice"))
        assert Path(mask).is_relative_to(app.config.output_dir)
        result, _view, status, _regions = app.inpaint_job(current, mask, Request("alice"), progress=None,
                                                          model="telea")
        assert Path(result).is_file() and status.startswith("✓")
        with pytest.raises(gr.Error, match="not uploaded"):
            app.inpaint_job(str(photo), mask, Request("mallory"), progress=None, model="telea")
        with pytest.raises(gr.Error, match="not uploaded"):  # nor alice's result, as mallory's next version
            editing.push_result(result, history, Request("mallory"))
    finally:
        app.gate = gate

def test_a_mask_is_held_to_the_servers_pixel_limit(client, files, tmp_path):
    """A mask is decoded under the server's limit (2 MP here), not the library's default (500 MP)."""
    big = tmp_path / "big-mask.png"
    Image.new("L", (2000, 1001)).save(big)
    message = failure(lambda: client.predict(gradio_client.handle_file(str(files["photo"])),
                                             gradio_client.handle_file(str(big)), api_name="/inpaint"))
    assert "big-mask.png" in message and "over the limit of 2,000,000" in message, message

# ----------------------------------------------------------------------------------------------- abandoned jobs

_SUBMIT_AND_WAIT = """
import sys, time
from gradio_client import Client, handle_file
client = Client(sys.argv[1], verbose=False)
job = client.submit(handle_file(sys.argv[2]), scale="8", tile="8", api_name="/upscale")
print("submitted", flush=True)
time.sleep(600)
"""


def _wait_for(condition, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_a_job_whose_client_went_away_is_cancelled_and_frees_the_queue(server, client, files):
    """Start a long job (minutes) from another process, kill that process: the job's cancel flag is set within
    seconds, and the next job starts and finishes soon after."""
    app, url, _tmp = server
    before = len(app.board.history)
    process = subprocess.Popen([sys.executable, "-c", _SUBMIT_AND_WAIT, url, str(files["slow"])],
                               env={**os.environ, "PYTHONPATH": str(SRC)}, stdout=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: app.board.running == 1, 60), "the long job did not start"
        job = app.board.jobs()[0]
        time.sleep(0.5)
        assert not job.cancel.is_set()  # its client is there
        process.send_signal(signal.SIGKILL)
        process.wait(10)
        left = time.monotonic()
        assert _wait_for(job.cancel.is_set, 5), "the abandoned job was not cancelled"
        assert job.abandoned.is_set()
        result, *_ = client.predict(gradio_client.handle_file(str(files["photo"])), api_name="/upscale")
        assert Path(result).is_file() and time.monotonic() - left < 15
    finally:
        if process.poll() is None:
            process.kill()
    outcomes = [record.outcome for record in list(app.board.history)[before:]]
    assert outcomes == ["abandoned", "ok"]


def test_a_job_cancelled_through_gradios_cancel_route_stops(server, client, files):
    """Gradio's /cancel route (what the page's Cancel and gradio_client's Job.cancel() send) cannot stop a
    function running on a thread, and waits for it: the job sees its cancelled event and stops at its next
    batch, while the client's event stream stays open."""
    import threading

    app, url, _tmp = server
    dependencies = client.config["dependencies"]
    fn_index = next(dep["id"] for dep in dependencies if dep.get("api_name") == "upscale")
    parameters = client.view_api(print_info=False, return_format="dict")["named_endpoints"]["/upscale"]["parameters"]
    values = {"scale": "8", "tile": "8"}
    data = [file_data(upload(url, files["slow"]))] + [values.get(p["parameter_name"], p["parameter_default"])
                                                      for p in parameters[1:]]
    session = "cancel-route-test"
    before = len(app.board.history)
    joined = httpx.post(f"{url}gradio_api/queue/join", timeout=30,
                        json={"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None,
                              "trigger_id": None})
    joined.raise_for_status()
    event_id = joined.json()["event_id"]
    messages: list[str] = []

    def listen() -> None:
        with httpx.stream("GET", f"{url}gradio_api/queue/data", params={"session_hash": session},
                          timeout=120) as stream:
            for line in stream.iter_lines():
                messages.append(line)
                if "process_completed" in line:
                    return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    assert _wait_for(lambda: app.board.running == 1, 60)
    running = app.board.jobs()[0]
    started = time.monotonic()
    canceller = threading.Thread(target=httpx.post, daemon=True, args=(f"{url}gradio_api/cancel",),
                                 kwargs={"json": {"session_hash": session, "fn_index": fn_index,
                                                  "event_id": event_id}, "timeout": 120})
    canceller.start()
    assert _wait_for(running.cancel.is_set, 5), "the cancelled event's job ran on"
    assert _wait_for(lambda: app.board.running == 0, 10) and time.monotonic() - started < 15
    assert listener.is_alive() or any("process_completed" in m for m in messages)  # the stream was not dropped
    canceller.join(30)
    listener.join(30)
    assert [record.outcome for record in list(app.board.history)[before:]] == ["abandoned"]

# ----------------------------------------------------------------------------------------------- wording


def test_errors_name_the_pages_controls_in_the_browsers_language(server, files):
    _app, url, tmp = server
    photo = gradio_client.handle_file(str(files["photo"]))
    english = gradio_client.Client(url, verbose=False, download_files=str(tmp / "dl-en"),
                                   headers={"Accept-Language": "en-GB,en;q=0.9"})
    message = failure(lambda: english.predict(photo, gradio_client.handle_file(str(files["small-mask"])),
                                              api_name="/inpaint"))
    assert "--" not in message and "paint the mask on the page" in message, message
    message = failure(lambda: english.predict(photo, tile="huge", api_name="/upscale"))
    assert message.startswith('"Tile size"') and "option tile" not in message, message
    chinese = gradio_client.Client(url, verbose=False, download_files=str(tmp / "dl-zh"),
                                   headers={"Accept-Language": "zh-CN,zh;q=0.9"})
    message = failure(lambda: chinese.predict(photo, tile="huge", api_name="/upscale"))
    assert message.startswith("“分块大小”"), message
    message = failure(lambda: chinese.predict(photo, max_memory="lots", api_name="/upscale"))
    assert message.startswith("“最大内存”"), message

# ----------------------------------------------------------------------------------------------- login


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("login")
    config = WebConfig(output_dir=prepare_output_dir(tmp / "results"), login_free_tries=5, login_first_delay=0.5)
    blocks, _app, url = serve_app(config, auth=("ann", "secret"))
    yield url
    blocks.close()


def login(url: str, password: str, user: str = "ann") -> httpx.Response:
    return httpx.post(f"{url}login", data={"username": user, "password": password}, timeout=30)


def test_login_attempts_are_rate_limited(guarded):
    for attempt in range(5):
        assert login(guarded, f"guess-{attempt}").status_code == 400
    refused = login(guarded, "secret")  # even the right password waits now
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "too many failed logins" in refused.json()["detail"]
    time.sleep(0.6)
    assert login(guarded, "guess-6").status_code == 400      # one more try after the delay...
    assert login(guarded, "secret").status_code == 429       # ...then a wait twice as long
    time.sleep(1.1)
    assert login(guarded, "secret").status_code == 200
    assert login(guarded, "wrong", user="bob").status_code == 400  # the record was cleared by the success
    assert login(guarded, "secret").status_code == 200


def test_serve_offers_models_from_a_folder_and_refuses_a_missing_one(tmp_path):
    import argparse

    from tessera.cli import serve
    from tessera.errors import OptionError

    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--models-from", str(tmp_path / "a"), "--models-from", str(tmp_path / "b"),
                              "--output-dir", str(tmp_path / "r")])
    assert args.models_from == [tmp_path / "a", tmp_path / "b"]
    with pytest.raises(OptionError, match=re.escape(f"--models-from {tmp_path / 'a'}")):
        args.func(args)
    assert not (tmp_path / "r").exists()  # refused before anything was created
