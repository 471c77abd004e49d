"""The queue is the truth (issue 14): Cancel during the save leaves no file and the next queued job starts only
after the cancelled one really ended; a job whose predicted memory is over the budget is refused up front with
the reason; progress covers every phase with honest times; the memory shown is the job's; output format "auto".
"""
from __future__ import annotations

import io
import itertools
import struct
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from tessera.errors import CancelledError, ResourceError
from tessera.progress import ProgressEvent
from tessera.web import job_progress, jobs, limits, results
from tessera.web.retention import prepare_output_dir

# ----------------------------------------------------------------------------------------------- helpers


def fake_png_header(path: Path, width: int, height: int) -> Path:
    """A PNG file whose header says ``width`` x ``height`` (8-bit RGB), with hardly any pixel data: the checks
    that read headers only can be tried on a 24-megapixel photo without decoding (or allocating) it."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def _wait_for(condition, timeout: float, step: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(step)
    return False


def _noise(path: Path, height: int, width: int, seed: int = 0) -> Path:
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path

# ----------------------------------------------------------------------------------------------- memory check


GIB = 1 << 30


def test_an_8x_upscale_of_24_megapixels_is_refused_with_the_reason(tmp_path):
    """Measured before issue 14: 6000x4000 -> 48000x32000 passed the check and reached 15.7 GB on a 24 GiB
    machine. From the photo's header alone (nothing decoded), it is refused, saying what to choose instead."""
    photo = fake_png_header(tmp_path / "photo.png", 6000, 4000)
    layout = limits.picture_layout(photo)
    assert (layout.width, layout.height) == (6000, 4000)
    with pytest.raises(ResourceError) as caught:
        limits.check_result_fits(layout, 8.0, available=23 * GIB, total=24 * GIB)
    message = str(caught.value)
    for words in ("6000x4000", "48000x32000", "17.3 GiB", "12.0 GiB", "23.0 GiB", "--scale (at most 6.6)"):
        assert words in message, message
    # the factor it names fits, and so does the usual x4
    limits.check_result_fits(layout, 6.6, available=23 * GIB, total=24 * GIB)
    limits.check_result_fits(photo, 4.0, available=23 * GIB, total=24 * GIB)


def test_the_prediction_is_the_cli_s_in_memory_estimate_plus_the_engine(tmp_path):
    from tessera.tasks.files import in_memory_bytes

    layout = limits.PictureLayout(1000, 800, channels=3, itemsize=2)
    assert limits.predicted_job_bytes(layout, 3.0) == in_memory_bytes(1000, 800, scale=3.0, itemsize=2, channels=3)
    assert limits.predicted_job_bytes(layout, 3.0, engine_bytes=5) == limits.predicted_job_bytes(layout, 3.0) + 5
    need = limits.predicted_job_bytes(layout, 3.0)
    limits.check_result_fits(layout, 3.0, available=int(need / limits.HOST_MEMORY_SHARE) + 16)
    with pytest.raises(ResourceError, match="Max memory|--max-memory|engine|smaller"):
        limits.check_result_fits(layout, 3.0, available=int(need / limits.HOST_MEMORY_SHARE) + 16,
                                 engine_bytes=1 << 20)


def test_the_engine_s_memory_counts_where_the_page_sets_it_on_the_host():
    from tessera.options import UpscaleOptions, parse_options

    assert limits.engine_host_bytes(parse_options(UpscaleOptions, max_memory="1G", device="cpu")) == 1 << 30
    assert limits.engine_host_bytes(parse_options(UpscaleOptions, device="cpu")) == 0  # auto: fits what is left


def test_a_job_without_a_factor_is_told_to_use_a_smaller_photo():
    layout = limits.PictureLayout(6000, 4000)
    with pytest.raises(ResourceError, match="the result is 6000x4000 pixels.*use a smaller photo"):
        limits.check_result_fits(layout, 1.0, available=100 << 20, control=None)
    with pytest.raises(ResourceError, match="--upscale"):
        limits.check_result_fits(layout, 4.0, available=4 * GIB, control="upscale")


def test_the_budget_is_a_share_of_what_is_available_capped_at_the_cli_s_ram_budget():
    assert limits.host_budget(10 * GIB) == (int(limits.HOST_MEMORY_SHARE * 10 * GIB), 10 * GIB)
    assert limits.host_budget(23 * GIB, 24 * GIB) == (12 * GIB, 23 * GIB)
    budget, available = limits.host_budget()
    assert 0 < budget <= available


def test_a_decoded_picture_counts_its_own_bytes_as_available():
    """After decoding, the photo is in memory already: the prediction counts it, so available memory does too."""
    from tessera.image.pixels import Picture

    picture = Picture(pixels=np.zeros((200, 300, 3), np.uint8))
    assert limits.picture_layout(picture) == limits.PictureLayout(300, 200, 3, 1)
    assert limits.check_result_fits(picture, 2.0) == limits.predicted_job_bytes(limits.picture_layout(picture), 2.0)

# ----------------------------------------------------------------------------------------------- output format


def test_auto_output_format_is_the_photo_s_own():
    resolve = results.resolve_format
    assert results.FORMAT_CHOICES[0] == "auto" and "TIFF" in results.OUTPUT_FORMATS
    assert resolve("auto", upload="holiday.JPG") == "JPEG"
    assert resolve("auto", upload="scan.tiff") == "TIFF"
    assert resolve("auto", upload="x.webp") == "WEBP"
    assert resolve("auto", upload="old.bmp") == "PNG" and resolve("auto", upload="noname") == "PNG"
    assert resolve("auto", upload="renamed.png", source_format="JPEG") == "JPEG"  # the content wins
    assert resolve("auto", source_format="MPO") == "JPEG"
    assert resolve("auto", upload="big.webp", size=(20_000, 10_000)) == "PNG"  # WEBP stops at 16,383
    assert resolve("tif") == "TIFF" and resolve("jpg") == "JPEG" and resolve("WEBP", upload="a.png") == "WEBP"
    assert results.output_name("photo.jpeg", "upscaled", "auto") == "photo-upscaled.jpg"
    assert results.output_name("scan.tif", "inpainted", "TIFF") == "scan-inpainted.tif"


def test_a_cancelled_save_result_leaves_not_even_its_folder(tmp_path):
    from tessera.image.pixels import Picture

    output = prepare_output_dir(tmp_path / "results")
    before = sorted(output.iterdir())
    cancel = threading.Event()
    picture = Picture(pixels=np.random.default_rng(0).integers(0, 256, (500, 600, 3), dtype=np.uint8))
    with pytest.raises(CancelledError):
        results.save_result(picture, output, upload="a.png", task="upscaled", fmt="auto", quality=95,
                            cancel=cancel, progress=lambda written: cancel.set())
    assert sorted(output.iterdir()) == before
    written: list[int] = []
    path = results.save_result(picture, output, upload="a.tif", task="upscaled", fmt="auto", quality=95,
                               progress=written.append)
    assert path.suffix == ".tif" and written[-1] == path.stat().st_size

# ----------------------------------------------------------------------------------------------- job memory


def test_job_memory_is_the_peak_above_the_job_s_start():
    readings = iter([1000, 1500, 1200, 4000, 900])
    memory = jobs.JobMemory(read_rss=lambda: next(readings))
    assert memory.start_rss == 1000 and memory.peak == 0
    assert memory.sample() == 500 and memory.sample() == 500 and memory.sample() == 3000
    assert memory.sample() == 3000  # a fall below the start never shows as negative, the peak stays
    assert memory.describe().startswith("job memory ")


def test_job_memory_sampler_sees_an_allocation_between_progress_events():
    board = jobs.JobBoard()
    with board.run("upscale", "s") as job:
        block = np.ones(64 << 20, np.uint8)  # 64 MiB, touched
        time.sleep(4 * jobs.JOB_MEMORY_POLL)
        del block
    assert job.memory is not None and job.memory.peak >= 48 << 20


def test_board_stop_waits_until_the_job_has_really_ended():
    board = jobs.JobBoard()
    released = threading.Event()
    ended_at: list[float] = []

    def work() -> None:
        with pytest.raises(CancelledError), board.run("upscale", "alice") as job:
            job.cancel.wait(10)
            time.sleep(0.3)  # a save's last write, the rename refused
            ended_at.append(time.monotonic())
            raise CancelledError("cancelled")
        released.set()

    thread = threading.Thread(target=work)
    thread.start()
    assert _wait_for(lambda: board.running == 1, 5)
    stopped = board.stop("alice", timeout=10)
    answered = time.monotonic()
    assert len(stopped) == 1 and stopped[0].ended.is_set() and stopped[0].outcome == "cancelled"
    assert ended_at and answered >= ended_at[0]
    thread.join(5)
    assert board.stop("alice") == [] and board.stop("bob") == []


def test_board_stop_says_when_a_job_has_not_ended_in_time():
    board = jobs.JobBoard()
    leave = threading.Event()

    def work() -> None:
        with board.run("upscale", "alice"):
            leave.wait(10)  # deaf to its cancel event

    thread = threading.Thread(target=work)
    thread.start()
    assert _wait_for(lambda: board.running == 1, 5)
    stopped = board.stop("alice", timeout=0.2)
    assert len(stopped) == 1 and not stopped[0].ended.is_set()
    leave.set()
    thread.join(5)
    assert stopped[0].outcome == "ok"

# ----------------------------------------------------------------------------------------------- progress


class Sink:
    def __init__(self):
        self.calls: list[tuple[object, str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, progress, desc=None, unit=None):
        with self.lock:
            self.calls.append((progress, desc, unit))

    @property
    def texts(self) -> list[str]:
        with self.lock:
            return [desc for _progress, desc, _unit in self.calls]


def test_progress_names_every_phase_and_the_status_time_covers_them(monkeypatch):
    sink = Sink()
    bridge = job_progress.ProgressBridge(sink, None, heartbeat=None)
    bridge.phase("load")
    time.sleep(0.05)
    bridge.phase("work")
    bridge(ProgressEvent("detect", 1, 2, 0.1, 0.1))
    bridge(ProgressEvent("tiles", 3, 8, 1.0, 5.0))
    bridge.phase("save", "PNG")
    bridge.saved(3 << 20)
    time.sleep(0.05)
    timings = bridge.close()
    texts = sink.texts
    assert texts[0] == "reading the photo" and texts[1] == "preparing"
    assert "detect 1/2" in texts[2] and texts[3].startswith("tile 3/8 · ETA 5 s")
    assert texts[4] == "saving PNG"
    assert texts[5].startswith("saving PNG · 3.0 MiB written")
    # a phase is a step of three (Gradio's page shows a progress line only with a figure); tiles are tiles
    assert sink.calls[3][0] == (3, 8) and sink.calls[4][0] == (2, 3) and sink.calls[4][2] == "step"
    assert list(timings) == ["load", "work", "save"] and timings["load"] >= 0.04 and timings["save"] >= 0.04
    line = bridge.times()
    assert "(read " in line and ", work " in line and ", save " in line
    total = float(line.split(" s", 1)[0])
    assert total >= sum(timings.values()) - 0.05


def test_thousands_of_tiles_a_second_reach_the_page_ten_times_a_second():
    """Small tiles give thousands of events a second; the page gets the first, then one per 0.1 s, and the last."""
    sink = Sink()
    bridge = job_progress.ProgressBridge(sink, None, heartbeat=None)
    started = time.perf_counter()
    for done in range(20_001):
        bridge(ProgressEvent("tiles", done, 20_000, 1.0, 1.0))
    seconds = time.perf_counter() - started
    tiles = [text for text in sink.texts if text.startswith("tile ")]
    assert tiles[0].startswith("tile 0/20000") and tiles[-1].startswith("tile 20000/20000")
    assert len(tiles) <= 2 + 10 * seconds + 1


def test_a_quiet_phase_is_said_again_with_its_time():
    """Decoding or an encoder that computes its whole file reports nothing: the heartbeat says the phase's time."""
    sink = Sink()
    bridge = job_progress.ProgressBridge(sink, None, heartbeat=0.2)
    bridge.phase("save", "WEBP")
    assert _wait_for(lambda: any(" · 1 s" in text for text in sink.texts), 5)
    bridge.close()
    count = len(sink.texts)
    time.sleep(0.5)
    assert len(sink.texts) == count, "the heartbeat stops with the job"
    assert all(text.startswith("saving WEBP") for text in sink.texts)


def test_progress_shows_the_job_s_memory_and_the_gpu_s_labelled():
    sink = Sink()
    board = jobs.JobBoard()
    with board.run("upscale", "s") as job:
        readings = iter(itertools.repeat(jobs.MemoryStatus("cuda:0", 3 << 30, 80 << 30)))
        bridge = job_progress.ProgressBridge(sink, "cuda:0", read_memory=lambda device: next(readings), job=job,
                                     heartbeat=None)
        bridge(ProgressEvent("tiles", 1, 2, 1.0, 1.0))
        bridge.close()
    text = sink.texts[-1]
    assert "job memory " in text and "GPU cuda:0 3.0 / 80.0 GiB" in text and "⚠" not in text
    assert "machine" not in text


def test_progress_text_goes_through_the_page_s_wording(monkeypatch):
    from tessera.web import wording

    seen: list[tuple[str, str]] = []
    monkeypatch.setattr(wording, "for_page", lambda text, language="en": seen.append((text, language)) or text)
    job_progress.ProgressBridge(Sink(), None, language="zh-CN", heartbeat=None).phase("load")
    assert seen == [("reading the photo", "zh-CN")]

# ----------------------------------------------------------------------------------------------- the server


gradio_client = pytest.importorskip("gradio_client")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from conftest import serve_app
    from tessera.web.app import WebConfig
    from tessera.web.limits import Limits

    tmp = tmp_path_factory.mktemp("queue")
    cfg = WebConfig(output_dir=prepare_output_dir(tmp / "results"), preview_side=128,
                    limits=Limits(max_pixels=30_000_000))
    blocks, app, url = serve_app(cfg)
    yield app, url, tmp
    blocks.close()


def _slow_png(monkeypatch, pieces_per_second: float = 40.0, piece: int = 4096) -> None:
    """Make the PNG encoder write its (real) file in small pieces, slowly: a save that takes seconds."""
    from tessera.image import write

    real = write._ENCODERS["PNG"]

    def slow(picture, file, quality):
        buffer = io.BytesIO()
        real(picture, buffer, quality)
        data = buffer.getvalue()
        for start in range(0, len(data), piece):
            file.write(data[start:start + piece])
            time.sleep(1 / pieces_per_second)

    monkeypatch.setitem(write._ENCODERS, "PNG", slow)


def _files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.is_file())


def test_cancel_during_the_save_leaves_no_file_and_the_queued_job_starts_after(server, monkeypatch, tmp_path):
    app, url, tmp = server
    _slow_png(monkeypatch)
    first_photo = _noise(tmp_path / "first.png", 150, 200, seed=1)   # x2: ~240 KB of PNG, ~60 slow pieces
    second_photo = _noise(tmp_path / "second.png", 60, 80, seed=2)
    output = tmp / "results"
    first = gradio_client.Client(url, verbose=False, download_files=str(tmp / "dl1"))
    second = gradio_client.Client(url, verbose=False, download_files=str(tmp / "dl2"))
    before = len(app.board.history)

    job = first.submit(gradio_client.handle_file(str(first_photo)), format="PNG", api_name="/upscale")
    assert _wait_for(lambda: app.board.running == 1, 60), "the first job did not start"
    queued = second.submit(gradio_client.handle_file(str(second_photo)), format="PNG", api_name="/upscale")
    # the first job is saving: its temporary file is in the output folder, its progress says so
    assert _wait_for(lambda: any(path.name.endswith(".tessera-tmp") for path in _files(output)), 60)
    said: list[str] = []

    def saving() -> bool:
        said.extend(unit.desc or "" for unit in (job.status().progress_data or []))
        return any(text.startswith("saving PNG · ") and "written" in text for text in said)

    assert _wait_for(saving, 10), said
    assert not queued.done()
    answer = first.predict(api_name="/cancel")
    assert answer == "cancelling 1 job(s): stopped, nothing was saved"
    # the moment Cancel answers, the first job has ended and left nothing (the second may be starting)
    assert not [path for path in _files(output) if path.name.startswith((".first", "first"))]
    with pytest.raises(gradio_client.exceptions.AppError, match="Cancelled|已取消"):
        job.result(timeout=60)

    result, _compare, status = queued.result(timeout=120)
    assert Path(result).name == "second-upscaled.png" and "✓" in status
    assert "(read " in status and "save " in status and "job memory" in status
    records = list(app.board.history)[before:]
    assert [record.outcome for record in records] == ["cancelled", "ok"]
    assert records[0].ended <= records[1].started, "the queued job started before the cancelled one ended"
    leftovers = [path for path in _files(output) if path.name.endswith(".tessera-tmp")
                 or path.name.startswith(("first", ".first"))]
    assert leftovers == []
    assert first.predict(api_name="/cancel") == "no running job"


def test_the_server_refuses_an_8x_upscale_of_24_megapixels_before_decoding(server, tmp_path, monkeypatch):
    """The header says 6000x4000 (the file holds almost nothing): refused from the header with the reason, with
    this machine's memory made that of a 24 GiB one."""
    import psutil

    app, url, tmp = server

    class Memory:
        total, available = 24 * GIB, 23 * GIB

    monkeypatch.setattr(psutil, "virtual_memory", lambda: Memory())
    photo = fake_png_header(tmp_path / "big.png", 6000, 4000)
    client = gradio_client.Client(url, verbose=False, download_files=str(tmp / "dl3"))
    with pytest.raises(gradio_client.exceptions.AppError) as caught:
        client.predict(gradio_client.handle_file(str(photo)), scale="8", api_name="/upscale")
    message = str(caught.value)
    assert "48000x32000" in message and "17.3 GiB" in message and '"Scale" (at most 6.6)' in message, message
    assert app.board.history[-1].outcome == "failed"


def test_a_quiet_save_shows_its_time_on_the_page(server, monkeypatch, tmp_path):
    """An encoder that computes its whole file before writing (WEBP, OpenCV) says nothing for seconds: the page
    is still told the phase and its time (from the bridge's heartbeat thread, through Gradio's progress)."""
    from tessera.image import write

    app, url, tmp = server
    real = write._ENCODERS["PNG"]

    def quiet(picture, file, quality):
        time.sleep(3.0)
        real(picture, file, quality)

    monkeypatch.setitem(write._ENCODERS, "PNG", quiet)
    client = gradio_client.Client(url, verbose=False, download_files=str(tmp / "dl4"))
    job = client.submit(gradio_client.handle_file(str(_noise(tmp_path / "quiet.png", 40, 50))), format="PNG",
                        api_name="/upscale")
    said: list[str] = []

    def timed() -> bool:
        said.extend(unit.desc or "" for unit in (job.status().progress_data or []))
        return any(text.startswith("saving PNG · ") and text.split(" · ")[1] in ("1 s", "2 s") for text in said)

    assert _wait_for(timed, 30, step=0.1), said
    _result, _compare, status = job.result(timeout=60)
    save = float(status.split("save ")[1].split(" s")[0])
    assert save >= 3.0, status
