"""LaMa's two published forms, IOPaint's TorchScript ``big-lama.pt`` and the authors' Lightning ``best.ckpt``,
load through the model loader as one and the same spandrel network (same class, same weights)."""
from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module")
def lama():
    from spandrel import ModelLoader
    from spandrel.architectures.LaMa import LaMa

    torch.manual_seed(0)
    return ModelLoader().load_from_state_dict(LaMa(in_nc=4, out_nc=3).state_dict()).eval()


def test_torchscript_and_lightning_checkpoints_give_the_same_network(lama, tmp_path):
    """IOPaint ships LaMa as TorchScript (big-lama.pt), the LaMa authors as a Lightning checkpoint whose
    generator sits under ``state_dict`` as ``generator.model.*`` beside other networks: both load as one network."""
    import warnings

    from tessera.models.loader import load_model

    network = lama.model
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    m = torch.zeros(1, 1, 64, 64)
    m[..., 20:40, 16:48] = 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(network, (x, m), check_trace=False)
    traced.save(str(tmp_path / "big-lama.pt"))
    generator = {"generator." + k[len("model."):]: v for k, v in network.state_dict().items()}
    junk = {"discriminator.model.0.weight": torch.zeros(2, 2)}
    torch.save({"state_dict": {**generator, **junk}, "epoch": 3}, tmp_path / "best.ckpt")
    expected = network.state_dict()
    for name in ("big-lama.pt", "best.ckpt"):
        model = load_model(tmp_path / name)
        assert model.task == "inpaint" and model.architecture == "LaMa"
        assert type(model.network) is type(network)
        state = model.network.state_dict()
        assert state.keys() == expected.keys(), name
        assert all(torch.equal(state[k], expected[k]) for k in expected), name
