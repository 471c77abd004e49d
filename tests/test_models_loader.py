"""load_model: random-weight networks saved in every supported format load back to the same network; hostile or
broken files raise ModelError and run nothing; names resolve through the cache and never download."""
from __future__ import annotations

import os
import pickle
import sys
import types
import warnings

import pytest
import torch
from safetensors.torch import save_file
from spandrel import MAIN_REGISTRY, Architecture, ImageModelDescriptor, ModelLoader
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.LaMa import LaMa
from spandrel.architectures.RestoreFormer import RestoreFormer
from spandrel.util import KeyCondition

from conftest import load_bench, random_compact
from tessera.errors import ModelError, OptionError
from tessera.models import architectures
from tessera.models.descriptor import Model
from tessera.models.architectures import register_architecture
from tessera.models.loader import as_model, load_model


def compact(scale: int = 2) -> torch.nn.Module:
    return random_compact(scale, num_feat=8, num_conv=2, seed=scale)


def esrgan() -> torch.nn.Module:
    torch.manual_seed(3)
    return ESRGAN(num_filters=8, num_blocks=1, scale=4).eval()


def image(size: int = 16) -> torch.Tensor:
    return torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(size))


def assert_same_network(model: Model, network: torch.nn.Module, size: int = 16) -> None:
    x = image(size)
    with torch.no_grad():
        assert torch.equal(model(x), network(x).clamp(0, 1))


# ---------------------------------------------------------------------------------------------------- formats
def test_pth_with_params_wrapper(tmp_path):
    net = compact()
    torch.save({"params": net.state_dict()}, tmp_path / "net.pth")
    model = load_model(tmp_path / "net.pth")
    assert (model.name, model.architecture, model.task, model.scale) == ("net", "Compact", "upscale", 2)
    assert model.source == str(tmp_path / "net.pth") and model.input_range == (0.0, 1.0)
    assert_same_network(model, net)


def test_safetensors(tmp_path):
    net = esrgan()
    save_file(net.state_dict(), tmp_path / "net.safetensors")
    model = load_model(str(tmp_path / "net.safetensors"))
    assert (model.architecture, model.scale) == ("ESRGAN", 4)
    assert_same_network(model, net)


def test_torchscript_pt(tmp_path):
    net = compact(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(net, image()).save(str(tmp_path / "traced.pt"))
    model = load_model(tmp_path / "traced.pt")
    assert (model.architecture, model.scale) == ("Compact", 4)
    assert_same_network(model, net)


def test_pt_that_is_a_plain_state_dict(tmp_path):
    net = compact()
    torch.save(net.state_dict(), tmp_path / "plain.pt")
    assert_same_network(load_model(tmp_path / "plain.pt"), net)


def test_module_prefix_is_stripped(tmp_path):
    net = compact()
    torch.save({f"module.{k}": v for k, v in net.state_dict().items()}, tmp_path / "ddp.pth")
    assert_same_network(load_model(tmp_path / "ddp.pth"), net)


# ---------------------------------------------------------------------------------------------------- Lightning
TRAPPED: list[str] = []


def _trap(*args):
    """Stands for omegaconf's DictConfig: if an unpickler ever calls it, the test sees it."""
    TRAPPED.append(repr(args))
    return {"trapped": True}


# pickled by these names (the modules exist only inside the fake_lightning_modules fixture)
_trap.__module__, _trap.__qualname__ = "omegaconf.dictconfig", "DictConfig"


class FakeDictConfig:
    """Pickles as a call of omegaconf.dictconfig.DictConfig(content), like a Lightning hyper-parameter object."""

    def __init__(self, content):
        self.content = content

    def __reduce__(self):
        return (_trap, (self.content,))


class FakeModelCheckpoint:
    """Lightning keys callback states by their class; pickled as pytorch_lightning...ModelCheckpoint."""

    __module__ = "pytorch_lightning.callbacks.model_checkpoint"
    __qualname__ = "ModelCheckpoint"


@pytest.fixture
def fake_lightning_modules(monkeypatch):
    """Importable fake omegaconf / pytorch_lightning modules, so the pickle references them by their real names."""
    omegaconf = types.ModuleType("omegaconf")
    dictconfig = types.ModuleType("omegaconf.dictconfig")
    dictconfig.DictConfig = _trap
    lightning = types.ModuleType("pytorch_lightning")
    checkpoint = types.ModuleType("pytorch_lightning.callbacks.model_checkpoint")
    checkpoint.ModelCheckpoint = FakeModelCheckpoint
    for name, module in [("omegaconf", omegaconf), ("omegaconf.dictconfig", dictconfig),
                         ("pytorch_lightning", lightning),
                         ("pytorch_lightning.callbacks.model_checkpoint", checkpoint)]:
        monkeypatch.setitem(sys.modules, name, module)
    TRAPPED.clear()
    yield
    TRAPPED.clear()


@pytest.fixture(scope="module")
def lama_generator():
    torch.manual_seed(0)
    return LaMa(in_nc=4, out_nc=3).eval()


@pytest.mark.slow
def test_lightning_lama_checkpoint(tmp_path, lama_generator, fake_lightning_modules):
    generator = {"generator." + key[len("model."):]: value for key, value in lama_generator.state_dict().items()}
    checkpoint = {
        "epoch": 40,
        "pytorch-lightning_version": "1.2.9",
        "state_dict": {**generator,
                       "discriminator.model0.0.weight": torch.randn(8, 3, 4, 4),
                       "loss_resnet_pl.impl.conv1.weight": torch.randn(8, 3, 7, 7)},
        "hyper_parameters": FakeDictConfig({"generator": {"kind": "ffc_resnet"}}),
        "callbacks": {FakeModelCheckpoint: {"best_model_score": torch.tensor(0.5)}},
    }
    path = tmp_path / "best.ckpt"
    torch.save(checkpoint, path)
    with pytest.raises(pickle.UnpicklingError):  # torch's own safe loader refuses it: the fallback is needed
        torch.load(path, weights_only=True)

    model = load_model(path)

    assert TRAPPED == []  # the DictConfig stand-in ran nothing
    assert (model.architecture, model.task, model.input_channels, model.scale) == ("LaMa", "inpaint", 3, 1)
    loaded = model.network.state_dict()
    expected = lama_generator.state_dict()
    assert loaded.keys() == expected.keys()
    assert all(torch.equal(loaded[key], expected[key]) for key in expected)
    # the same file through an unrestricted unpickler would have called the trap: the test can fail
    torch.load(path, weights_only=False)
    assert TRAPPED


# ---------------------------------------------------------------------------------------------------- hostile files
Evil = load_bench("hostile_weights").Evil  # pickles as os.system(command)


@pytest.mark.parametrize("suffix", [".pth", ".ckpt", ".pt", ".bin"])
def test_malicious_pickle_does_not_execute(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    torch.save({"params": {"conv.weight": torch.zeros(1)}, "x": Evil(f"touch {marker}")}, path)
    with pytest.raises(ModelError, match="evil"):
        load_model(path)
    assert not marker.exists()


def test_malicious_plain_pickle_does_not_execute(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    path.write_bytes(pickle.dumps(Evil(f"touch {marker}"), protocol=2))
    with pytest.raises(ModelError, match="evil.pth"):
        load_model(path)
    assert not marker.exists()


def test_unknown_architecture(tmp_path):
    torch.save({"foo.weight": torch.zeros(3, 3)}, tmp_path / "odd.pth")
    with pytest.raises(ModelError, match=r"odd\.pth: unknown architecture"):
        load_model(tmp_path / "odd.pth")


@pytest.mark.parametrize("name", ["junk.pth", "junk.safetensors", "junk.pt", "junk.ckpt"])
def test_corrupt_file(tmp_path, name):
    (tmp_path / name).write_bytes(os.urandom(4096))
    with pytest.raises(ModelError, match=name.replace(".", r"\.")) as caught:
        load_model(tmp_path / name)
    assert "\n" not in str(caught.value)


def test_truncated_file(tmp_path):
    torch.save(compact().state_dict(), tmp_path / "cut.pth")
    data = (tmp_path / "cut.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="cut.pth"):
        load_model(tmp_path / "cut.pth")


def test_not_a_state_dict(tmp_path):
    torch.save([torch.zeros(2)], tmp_path / "list.pth")
    with pytest.raises(ModelError, match="not a state dict"):
        load_model(tmp_path / "list.pth")


def test_weights_that_do_not_fit_the_detected_architecture(tmp_path):
    state = compact().state_dict()
    state["body.0.weight"] = torch.zeros(8, 3, 5, 5)  # wrong kernel size
    torch.save(state, tmp_path / "bent.pth")
    with pytest.raises(ModelError, match="bent.pth"):
        load_model(tmp_path / "bent.pth")


def test_unsupported_extension(tmp_path):
    (tmp_path / "net.onnx").write_bytes(b"onnx")
    with pytest.raises(ModelError, match="unsupported weight file type '.onnx'"):
        load_model(tmp_path / "net.onnx")


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ModelError, match="model file not found"):
        load_model(tmp_path / "absent.pth")
    with pytest.raises(ModelError, match="folder"):
        load_model(tmp_path)


# ---------------------------------------------------------------------------------------------------- names
def test_unknown_name_suggests_the_nearest(tmp_path):
    with pytest.raises(ModelError, match="did you mean 'gpen-bfr-512'"):
        load_model("gpen-bfr-521", model_dir=tmp_path)


def test_known_name_not_cached_names_the_pull_command(tmp_path):
    with pytest.raises(ModelError, match="`tessera models pull gpen-bfr-512 --model-dir "):
        load_model("GPEN-BFR-512", model_dir=tmp_path)


def publish_checksum_of(monkeypatch, name: str, path) -> None:
    """Let catalog model ``name`` publish ``path``'s sha256: a random-weight stand-in in the cache then passes the
    checksum check every load by name makes (tests/test_models_download.py tests that check itself)."""
    import dataclasses
    import hashlib

    from tessera.models import catalog

    entry = catalog.get_entry(name)
    stand_in = dataclasses.replace(entry, sha256=hashlib.sha256(path.read_bytes()).hexdigest(), md5=None)
    for key, value in list(catalog._INDEX.items()):
        if value is entry:
            monkeypatch.setitem(catalog._INDEX, key, stand_in)


def test_default_cache_comes_from_tessera_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_HOME", str(tmp_path))
    with pytest.raises(ModelError, match=f"tessera models pull codeformer`.*|{tmp_path}"):
        load_model("codeformer")
    folder = tmp_path / "models"
    folder.mkdir()
    net = compact(4)
    torch.save({"params": net.state_dict()}, folder / "realesr-general-x4v3.pth")
    publish_checksum_of(monkeypatch, "realesr-general-x4v3", folder / "realesr-general-x4v3.pth")
    model = load_model("realesr-general-x4v3")
    assert model.source == str(folder / "realesr-general-x4v3.pth")


def test_cached_name_carries_catalog_metadata(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    net = compact(4)
    torch.save({"params": net.state_dict()}, folder / "realesr-general-x4v3.pth")
    publish_checksum_of(monkeypatch, "realesr-general-x4v3", folder / "realesr-general-x4v3.pth")
    model = load_model("realesr-general-x4v3", model_dir=tmp_path)
    assert (model.name, model.license, model.scale) == ("realesr-general-x4v3", "BSD-3-Clause", 4)
    assert_same_network(model, net)


def test_helper_files_are_not_image_models(tmp_path):
    with pytest.raises(ModelError, match="not an image model"):
        load_model("facexlib-retinaface", model_dir=tmp_path)  # ParseNet loads: tests/test_face_parsing.py


# ---------------------------------------------------------------------------------------------------- placement
def test_precision(tmp_path):
    torch.save(compact().state_dict(), tmp_path / "net.pth")
    assert load_model(tmp_path / "net.pth", precision="bf16").dtype == torch.bfloat16
    assert load_model(tmp_path / "net.pth", precision="auto").dtype == torch.float32
    with pytest.raises(OptionError, match="precision"):
        load_model(tmp_path / "net.pth", precision="fp64")


def test_unsupported_precision_is_refused():
    model = as_model(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(OptionError, match="does not support precision 'fp16'"):
        load_model(model, precision="fp16")


# ---------------------------------------------------------------------------------------------------- as_model
def test_as_model_normalises_what_callers_pass(tmp_path):
    net = compact()
    model = as_model(net)
    assert (model.task, model.scale, model.architecture) == ("upscale", 0, "custom")
    assert as_model(model) is model
    assert load_model(model) is model

    descriptor = ModelLoader().load_from_state_dict(net.state_dict())
    wrapped = as_model(descriptor, name="mine")
    assert (wrapped.name, wrapped.scale, wrapped.architecture) == ("mine", 2, "Compact")
    assert_same_network(wrapped, net)

    torch.save(net.state_dict(), tmp_path / "n.pth")
    assert as_model(str(tmp_path / "n.pth")).architecture == "Compact"
    with pytest.raises(ModelError, match="cannot use a int"):
        as_model(5)


# ---------------------------------------------------------------------------------------------------- architectures
class Doubler(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.marker = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        return (x * self.marker, "extra")


class DoublerArch(Architecture[Doubler]):
    def __init__(self, arch_id: str = "TesseraTestNet"):
        super().__init__(id=arch_id, detect=KeyCondition.has_all("marker"))

    def load(self, state_dict):
        return ImageModelDescriptor(Doubler(), state_dict, architecture=self, purpose="FaceSR", tags=[],
                                    supports_half=True, supports_bfloat16=True, scale=1, input_channels=3,
                                    output_channels=3, call_fn=lambda model, image: model(image)[0])


@pytest.fixture
def own_architectures(monkeypatch):
    monkeypatch.setattr(architectures, "_OWN_ARCHITECTURES", [])


def test_register_architecture_uses_a_private_registry(tmp_path, own_architectures):
    torch.save({"marker": torch.full((1,), 0.5)}, tmp_path / "own.pth")
    with pytest.raises(ModelError, match="unknown architecture"):
        load_model(tmp_path / "own.pth")
    size = len(MAIN_REGISTRY)
    register_architecture(DoublerArch())
    register_architecture(DoublerArch())  # same id again: replaced, not duplicated
    model = load_model(tmp_path / "own.pth")
    assert model.architecture == "TesseraTestNet" and len(architectures._OWN_ARCHITECTURES) == 1
    assert len(MAIN_REGISTRY) == size and "TesseraTestNet" not in MAIN_REGISTRY
    x = image()
    assert torch.equal(model(x), x * 0.5)


@pytest.mark.parametrize("arch_id", ["GFPGAN", "CodeFormer"])
def test_face_networks_get_their_range_converted(tmp_path, own_architectures, arch_id):
    # a tiny stand-in registered under the face architecture's id gets the same treatment as the real one
    register_architecture(DoublerArch(arch_id))
    torch.save({"marker": torch.full((1,), 0.5)}, tmp_path / "face.pth")
    model = load_model(tmp_path / "face.pth")
    assert (model.task, model.input_range, model.face_size, model.face_template) == \
        ("face", (-1.0, 1.0), 512, "facexlib")
    x = image()
    expected = (((x * 2 - 1) * 0.5) + 1) / 2
    assert torch.allclose(model(x), expected, atol=1e-6)


def test_restoreformer_matches_spandrels_own_call(tmp_path):
    torch.manual_seed(5)
    net = RestoreFormer(n_embed=32, embed_dim=32, ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(),
                        resolution=32, z_channels=32, head_size=2)
    torch.save(net.state_dict(), tmp_path / "RestoreFormer.pth")
    model = load_model(tmp_path / "RestoreFormer.pth")
    assert (model.name, model.license) == ("restoreformer", "Apache-2.0")
    assert (model.input_range, model.face_size, model.face_template) == ((-1.0, 1.0), 512, "facexlib")
    descriptor = ModelLoader().load_from_file(tmp_path / "RestoreFormer.pth")
    x = image(32)
    with torch.no_grad():
        assert torch.allclose(model(x), descriptor(x), atol=1e-6)


def test_gpen_is_detected_by_default(tmp_path):
    gpen = pytest.importorskip("tessera.models.gpen")
    torch.manual_seed(2)
    net = gpen.GPEN(size=32, style_dim=32, n_mlp=2, channel_multiplier=1, narrow=0.25).eval()
    torch.save(net.state_dict(), tmp_path / "g.pth")
    model = load_model(tmp_path / "g.pth")
    assert (model.architecture, model.task, model.face_size, model.face_template, model.input_range) == \
        ("GPEN", "face", 32, "gpen", (-1.0, 1.0))
    x = image(32)
    with torch.no_grad():
        torch.manual_seed(9)
        got = model(x)
        torch.manual_seed(9)
        expected = ((net(x * 2 - 1) + 1) / 2).clamp(0, 1)
    assert torch.allclose(got, expected, atol=1e-6)
