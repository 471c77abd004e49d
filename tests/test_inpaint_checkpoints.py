"""LaMa in every form its users have it loads through the model loader as one and the same spandrel network (same
class, same weights, same output): IOPaint's TorchScript ``big-lama.pt``, the authors' Lightning ``best.ckpt``
(pickle protocol 2, an OmegaConf configuration inside, from ``big-lama.zip``) and the layout of the authors'
``bin/to_jit.py`` export, whose wrapper holds the whole Lightning module."""
from __future__ import annotations

import warnings
import zipfile

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

import test_models_download as downloads
from tessera.models import download
from tessera.models.catalog import get_entry
from tessera.models.loader import load_model
from tessera.models.torchfile import read_torch_file
from tessera.models.unpickler import InertObject

server = downloads.server  # a local HTTP server for the pull, and the guard that nothing else is reached
local_network_only = downloads.local_network_only

MASK_BOX = (slice(20, 40), slice(16, 48))


@pytest.fixture(scope="module")
def lama():
    from spandrel import ModelLoader
    from spandrel.architectures.LaMa import LaMa

    torch.manual_seed(0)
    return ModelLoader().load_from_state_dict(LaMa(in_nc=4, out_nc=3).state_dict()).eval()


@pytest.fixture(scope="module")
def inputs():
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    mask = torch.zeros(1, 1, 64, 64)
    mask[(..., *MASK_BOX)] = 1
    return image, mask


def quietly_traced(module: torch.nn.Module, inputs) -> torch.jit.ScriptModule:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.jit.trace(module, inputs, check_trace=False)


def assert_loads_as(path, network, inputs) -> None:
    """``path`` loads as LaMa with exactly ``network``'s weights, and inpaints as it does."""
    model = load_model(path)
    assert model.task == "inpaint" and model.architecture == "LaMa"
    assert type(model.network) is type(network)
    expected, state = network.state_dict(), model.network.state_dict()
    assert state.keys() == expected.keys(), path.name
    assert all(torch.equal(state[k], expected[k]) for k in expected), path.name
    with torch.no_grad():
        assert torch.equal(model.network(*inputs), network(*inputs)), path.name


# ---------------------------------------------------------------------------------------------------- layouts
class TrainingModule(torch.nn.Module):
    """What LaMa's Lightning module holds: the generator (``generator``) and networks only training uses."""

    def __init__(self, generator: torch.nn.Module) -> None:
        super().__init__()
        self.generator = generator
        self.discriminator = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, stride=2), torch.nn.LeakyReLU(0.2))
        self.loss_resnet_pl = torch.nn.Conv2d(3, 4, 3)

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        predicted = self.generator(image * (1 - mask), mask)
        return mask * predicted + (1 - mask) * image


class ExportWrapper(torch.nn.Module):
    """The module advimman/lama's ``bin/to_jit.py`` traces: the Lightning module once more, as ``.model``."""

    def __init__(self, training_module: torch.nn.Module) -> None:
        super().__init__()
        self.model = training_module

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(image, mask)


def lightning_state_dict(network) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of LaMa's Lightning checkpoint: ``generator.model.*`` beside discriminator and losses."""
    return TrainingModule(network.model).state_dict()


def write_layout(layout: str, network, inputs, folder):
    wrapper = ExportWrapper(TrainingModule(network.model)).eval()
    if layout == "iopaint-torchscript.pt":  # the spandrel network itself, traced
        quietly_traced(network, inputs).save(str(folder / layout))
    elif layout == "lightning.ckpt":
        torch.save({"state_dict": lightning_state_dict(network), "epoch": 3}, folder / layout)
    elif layout == "to-jit-state.pth":  # model.generator.model.*
        torch.save(wrapper.state_dict(), folder / layout)
    elif layout == "to-jit-traced.pt":
        quietly_traced(wrapper, inputs).save(str(folder / layout))
    return folder / layout


@pytest.mark.parametrize("layout", ["iopaint-torchscript.pt", "lightning.ckpt", "to-jit-state.pth",
                                    "to-jit-traced.pt"])
@pytest.mark.slow
def test_every_published_layout_loads_as_the_same_network(lama, inputs, tmp_path, layout):
    path = write_layout(layout, lama.model, inputs, tmp_path)
    if layout.startswith("to-jit"):
        keys = read_torch_file(path).keys()
        assert "model.generator.model.1.bn_l.running_mean" in keys and "model.discriminator.0.weight" in keys
    assert_loads_as(path, lama.model, inputs)


# ---------------------------------------------------------------------------------------------------- best.ckpt
def lama_training_config():
    """An OmegaConf configuration shaped like big-lama's ``config.yaml`` (nested sections, lists, interpolation)."""
    return OmegaConf.create({
        "run_title": "big-lama",
        "training_model": {"kind": "default", "visualize_each_iters": 1000, "concat_mask": True,
                           "store_discr_outputs_for_vis": True},
        "losses": {"l1": {"weight_missing": 0, "weight_known": 10}, "perceptual": {"weight": 0},
                   "adversarial": {"kind": "r1", "weight": 10, "gp_coef": 0.001, "mask_as_fake_target": True},
                   "resnet_pl": {"weight": 30, "weights_path": "${location.models_dir}"}},
        "optimizers": {"generator": {"kind": "adam", "lr": 0.001}, "discriminator": {"kind": "adam", "lr": 1e-4}},
        "generator": {"kind": "ffc_resnet", "input_nc": 4, "output_nc": 3, "ngf": 64, "n_downsampling": 3,
                      "n_blocks": 18, "add_out_act": "sigmoid",
                      "init_conv_kwargs": {"ratio_gin": 0, "ratio_gout": 0, "enable_lfu": False}},
        "location": {"models_dir": "/data/models", "tb_dir": None},
        "trainer": {"kwargs": {"gpus": [0, 1, 2, 3], "max_epochs": 40, "gradient_clip_val": 1.0}},
    })


def write_authors_checkpoint(network, path):
    """best.ckpt as LaMa's training saved it: PyTorch Lightning's checkpoint dict, pickle protocol 2. Lightning
    stores an OmegaConf ``hyper_parameters`` as the object itself and its class as ``hparams_type``."""
    optimizer = {"state": {0: {"step": 10, "exp_avg": torch.zeros(8)}},
                 "param_groups": [{"lr": 0.001, "betas": (0.9, 0.999), "params": [0]}]}
    checkpoint = {"epoch": 39, "global_step": 1_000_000, "pytorch-lightning_version": "1.2.9",
                  "state_dict": lightning_state_dict(network), "optimizer_states": [optimizer, optimizer],
                  "lr_schedulers": [], "hyper_parameters": lama_training_config(), "hparams_type": DictConfig}
    torch.save(checkpoint, path, pickle_protocol=2)
    return path


@pytest.fixture(scope="module")
def authors_checkpoint(lama, tmp_path_factory):
    return write_authors_checkpoint(lama.model, tmp_path_factory.mktemp("big-lama") / "best.ckpt")


@pytest.mark.slow
def test_the_authors_protocol2_checkpoint_with_an_omegaconf_config_loads(lama, inputs, authors_checkpoint,
                                                                         monkeypatch):
    with zipfile.ZipFile(authors_checkpoint) as archive:
        [name] = [n for n in archive.namelist() if n.endswith("/data.pkl")]
        pickled = archive.read(name)
    assert pickled.startswith(b"\x80\x02")  # what the test is about: protocol 2 and a real DictConfig
    assert b"c__builtin__\nlong\n" in pickled and b"comegaconf.dictconfig\nDictConfig\n" in pickled
    rebuilt = []
    monkeypatch.setattr(DictConfig, "__setstate__",
                        lambda self, state: rebuilt.append(state), raising=True)

    content = read_torch_file(authors_checkpoint)

    config = content["hyper_parameters"]
    assert isinstance(config, InertObject) and config.inert_global == "omegaconf.dictconfig.DictConfig"
    assert not rebuilt  # omegaconf's own code never ran ...
    torch.load(authors_checkpoint, weights_only=False)
    assert rebuilt  # ... where torch's loader runs it, so the test can fail
    assert content["hparams_type"].inert_global == "omegaconf.dictconfig.DictConfig"
    assert (content["epoch"], content["pytorch-lightning_version"]) == (39, "1.2.9")
    assert_loads_as(authors_checkpoint, lama.model, inputs)


@pytest.mark.slow
def test_big_lama_original_installs_from_its_zip_and_loads(lama, inputs, authors_checkpoint, server, tmp_path):
    entry = get_entry("big-lama-original")
    body = downloads.zip_with(entry.archive_member, authors_checkpoint.read_bytes())
    mirror = downloads.serve(server, entry.archive, body)

    path = download.pull("big-lama-original", model_dir=tmp_path, urls=[mirror], trust=True)

    assert path.read_bytes() == authors_checkpoint.read_bytes()
    model = load_model("big-lama-original", model_dir=tmp_path)
    assert model.architecture == "LaMa" and model.task == "inpaint"
    with torch.no_grad():
        assert torch.equal(model.network(*inputs), lama.model(*inputs))
