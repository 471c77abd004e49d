"""Weight files are read as data: crafted archives run nothing and allocate no more than they hold.

The hostile files come from bench/hostile_weights.py (shared with bench/security.py). Where torch's own loader is
harmless to call on one, the test also shows that torch runs its payload, so the test can fail.
"""
from __future__ import annotations

import functools
import importlib
import io
import os
import pickle
import time
import zipfile

import numpy as np
import pytest
import torch
from spandrel.architectures.ESRGAN import ESRGAN

from conftest import load_bench
from tessera.cli import main
from tessera.errors import ModelError
from tessera.models.loader import load_model, read_state_dict
from tessera.models.torchfile import BUDGET_VARIABLE, read_torch_file
from tessera.models.unpickler import _GLOBALS, UnsafeWeightsError, restricted_load

hostile = load_bench("hostile_weights")

# what each hostile file of the corpus must be refused with
REFUSALS = {
    "torchscript-setstate.pt": None,  # its weights load; its code does not run (see the test of its own)
    "reduce-system.pth": r"global 'posix\.system' is not allowed",
    "reduce-system-legacy.pth": r"global 'posix\.system' is not allowed",
    "lightning-payload.ckpt": r"global 'posix\.system' is not allowed",
    "storage-lie-6gb.pth": "storage 0 declares 6000000000 bytes; the archive holds 16 bytes",
    "view-beyond-storage.pth": r"size \[1000000000\] does not fit its storage of 4 elements",
    "broadcast-view.pth": r"size \[100000, 100000\] does not fit its storage",
    "legacy-lie-2gb.pth": "storage 0 declares 2000000000 bytes, more than the file holds",
    "zero-block.pth": "block of zero bytes",
    "numpy-object-array.pth": "not a plain number type",
    "memo-index.pth": "contains no weight tensors",
    "header-lie.safetensors": "cannot read weights",
    "text.pth": "is not a PyTorch archive",
    "empty.pth": "is not a PyTorch archive",
    "random.pth": "is not a PyTorch archive",
    "truncated.pth": "cannot read weights|broken zip archive",
    "plain-pickle.pth": "is a pickle, not a PyTorch archive",
    "zip-bomb-6gb.pth": "a decompression bomb",
}


def peak_growth_mb(function, *args) -> float:
    """How far this process's peak resident memory rose while ``function`` ran (Linux: VmHWM, reset first)."""
    def high_water_mark() -> int:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))

    with open("/proc/self/clear_refs", "w") as clear:
        clear.write("5")
    before = high_water_mark()
    try:
        function(*args)
    except ModelError:
        pass
    return (high_water_mark() - before) / 1024


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return {case.path.name: case for case in hostile.weight_cases(tmp_path_factory.mktemp("hostile"), big=False)}


@pytest.mark.parametrize("name", [name for name, refusal in REFUSALS.items()
                                  if refusal and name != "zip-bomb-6gb.pth"])
def test_hostile_files_are_refused_in_one_line_running_nothing(corpus, name):
    case = corpus[name]
    with pytest.raises(ModelError) as refused:
        load_model(case.path)
    message = str(refused.value)
    assert message.startswith(f"{case.path}: ") and "\n" not in message
    assert refused.match(REFUSALS[name])
    assert case.marker is None or not case.marker.exists()
    assert peak_growth_mb(read_state_dict, case.path) < 64


def test_torchscript_setstate_does_not_run(tmp_path):
    marker = tmp_path / "written-by-torchscript"
    path = hostile.write_torchscript_payload(tmp_path / "evil.pt", marker)

    state = read_state_dict(path)

    assert not marker.exists()
    assert set(state) == {"conv.weight", "conv.bias"}
    network = hostile.quietly(torch.jit.load, str(path))  # torch's loader runs the archive's own code
    assert marker.read_bytes() == b"!" * 16  # so the test can fail
    assert torch.equal(state["conv.weight"], network.conv.weight)


def test_a_deflated_storage_bomb_is_refused_at_once(tmp_path):
    path = hostile.write_deflated_zero_storage(tmp_path / "bomb.pth", 128 << 20)  # 128 MB in ~130 KB
    assert path.stat().st_size < 1 << 20
    started = time.perf_counter()
    with pytest.raises(UnsafeWeightsError, match="a decompression bomb"):
        read_state_dict(path)
    assert time.perf_counter() - started < 1
    assert peak_growth_mb(read_state_dict, path) < 64
    with zipfile.ZipFile(path) as archive:  # what torch's reader would have inflated
        assert archive.getinfo("archive/data/0").file_size == 128 << 20


def test_the_weight_budget_is_configurable(tmp_path, monkeypatch):
    torch.save({"w": torch.zeros(1 << 20)}, tmp_path / "four-mb.pth")
    with pytest.raises(UnsafeWeightsError, match=r"declares 4\.0 MiB of weights, over the 1\.0 MiB budget"):
        read_state_dict(tmp_path / "four-mb.pth", max_bytes="1M")
    monkeypatch.setenv(BUDGET_VARIABLE, "2M")
    with pytest.raises(UnsafeWeightsError, match="over the 2.0 MiB budget"):
        read_state_dict(tmp_path / "four-mb.pth")
    monkeypatch.setenv(BUDGET_VARIABLE, "8M")
    assert read_state_dict(tmp_path / "four-mb.pth")["w"].shape == (1 << 20,)


# ---------------------------------------------------------------------------------------------------- formats
def test_torchscript_state_matches_torchs(tmp_path):
    class Block(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)
            self.norm = torch.nn.BatchNorm2d(4)
            self.body = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), torch.nn.PReLU())
            self.register_buffer("scale", torch.arange(3.0))

        def forward(self, x):
            return self.body(self.norm(self.conv(x))) * self.scale.sum()

    path = tmp_path / "traced.pt"
    hostile.quietly(torch.jit.trace, Block().eval(), torch.rand(1, 3, 8, 8)).save(str(path))
    ours, theirs = read_torch_file(path), hostile.quietly(torch.jit.load, str(path)).state_dict()
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)


def test_legacy_archives_load_as_torch_reads_them(tmp_path):
    torch.manual_seed(0)
    net = ESRGAN(num_filters=8, num_blocks=1, scale=4).eval()
    torch.save(net.state_dict(), tmp_path / "old-esrgan.pth", _use_new_zipfile_serialization=False)
    model = load_model(tmp_path / "old-esrgan.pth")
    assert (model.architecture, model.scale) == ("ESRGAN", 4)
    theirs = torch.load(tmp_path / "old-esrgan.pth", weights_only=True)
    ours = read_state_dict(tmp_path / "old-esrgan.pth")
    assert all(torch.equal(ours[key], theirs[key]) for key in theirs)


def test_python2_spellings_of_builtins_load(tmp_path):
    # protocol 2 spells builtins as __builtin__ (Lightning checkpoints with OmegaConf configurations do)
    storage = hostile.Storage("0", numel=4)
    content = {"w": hostile.tensor_call(storage, (4,), (1,)), "config": hostile.Call(dict, [("kind", "ffc")]),
               "ids": {1, 2}}
    path = hostile.write_zip_archive(tmp_path / "py2.pth", content,
                                     {"0": np.arange(4, dtype=np.float32).tobytes()})
    assert b"__builtin__" in hostile.crafted_pickle(content)
    assert read_torch_file(path)["config"] == {"kind": "ffc"}
    assert read_state_dict(path)["w"].tolist() == [0.0, 1.0, 2.0, 3.0]


# the allowed plain-data globals that protocols 0-2 may spell the Python 2 way
PYTHON2_SPELLED = [key for key in _GLOBALS if key[0] in ("builtins", "copyreg", "collections", "_codecs")]


@pytest.mark.parametrize("module, name", PYTHON2_SPELLED, ids=[".".join(key) for key in PYTHON2_SPELLED])
def test_every_allowed_builtin_loads_under_its_protocol2_spelling(module, name):
    # what Python 3 itself writes at protocol 2 (torch.save's default): int as __builtin__.long, str as
    # __builtin__.unicode, copyreg as copy_reg; an OmegaConf configuration in a Lightning checkpoint has them
    original = getattr(importlib.import_module(module), name)
    for protocol in (0, 2, 4):
        assert restricted_load(io.BytesIO(pickle.dumps(original, protocol=protocol))) is _GLOBALS[module, name]


@pytest.mark.parametrize("spelling, allowed", [
    ("__builtin__\nlong", int), ("__builtin__\nunicode", str), ("__builtin__\nbasestring", str),
    ("copy_reg\n_reconstructor", _GLOBALS["copyreg", "_reconstructor"])], ids=["long", "unicode", "basestring",
                                                                               "copy_reg"])
def test_names_python2_itself_wrote_load(spelling, allowed):
    assert restricted_load(io.BytesIO(b"c" + spelling.encode() + b"\n.")) is allowed  # protocol 0, as Python 2


def _marker_code(marker) -> str:
    return f"open({str(marker)!r}, 'w').close()"


PROTOCOL2_REFUSALS = {  # a payload, and the global its protocol-2 pickle names
    "eval": (lambda marker: hostile.Call(eval, _marker_code(marker)), "__builtin__.eval"),
    "exec": (lambda marker: hostile.Call(exec, _marker_code(marker)), "__builtin__.exec"),
    "getattr": (lambda marker: hostile.Call(getattr, hostile.Call(__import__, "os"), "system"),
                "__builtin__.getattr"),
    "import": (lambda marker: hostile.Call(__import__, "os"), "__builtin__.__import__"),
    "reduce": (lambda marker: hostile.Call(functools.reduce, exec, [None], _marker_code(marker)),
               "__builtin__.reduce"),
    "range": (lambda marker: hostile.Call(range, 10 ** 12), "__builtin__.xrange"),
    "system": (lambda marker: hostile.Call(os.system, f"touch {marker}"), "posix.system"),
}


@pytest.mark.parametrize("case", PROTOCOL2_REFUSALS)
def test_protocol2_spellings_open_no_refused_name(tmp_path, case):
    build, spelled = PROTOCOL2_REFUSALS[case]
    marker = tmp_path / "ran"
    data = hostile.crafted_pickle({"w": build(marker)}, protocol=2)
    assert ("c" + spelled.replace(".", "\n", 1) + "\n").encode() in data
    with pytest.raises(UnsafeWeightsError, match=f"global '{spelled}' is not allowed"):
        restricted_load(io.BytesIO(data))
    assert not marker.exists()
    if case in ("eval", "exec", "reduce", "system"):
        pickle.loads(data)  # Python's own unpickler runs the payload, so the test can fail
        assert marker.exists()


def test_the_cli_refuses_a_hostile_model_in_one_line(tmp_path, corpus, capsys):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "in.png")
    code = main(["upscale", str(tmp_path / "in.png"), "-o", str(tmp_path / "out.png"), "--quiet",
                 "--model", str(corpus["storage-lie-6gb.pth"].path)])
    assert code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
    assert not (tmp_path / "out.png").exists()
