"""Face parsing for paste-back (facexlib's ParseNet) and the neighbour-safe paste (issue 11, item 7)."""
from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from test_models_loader import publish_checksum_of
from tessera.engine import Runtime
from tessera.errors import InputError, ModelError, OptionError
from tessera.faces.align import alignment_matrix, face_template, invert
from tessera.faces.detect import detect_faces
from tessera.faces.parsenet import FACE_CLASSES, PARSING_SIZE, ParseNet, load_parsenet, parsing_model
from tessera.faces.paste import (FacePaster, face_parser, parsing_masks, paste_face, soft_mask,
                                 soften_face_region)
from tessera.models.descriptor import Model
from tessera.models.loader import load_model
from tessera.options import FaceOptions, parse_options
from tessera.tasks.faces import enhance_faces

needs_yuface = pytest.mark.skipif(importlib.util.find_spec("yuface") is None, reason="yuface is not installed")


def facexlib_parsenet_keys() -> dict[str, tuple[int, ...]]:
    """The state dict of facexlib's ``ParseNet(in_size=512, out_size=512, parsing_ch=19)`` as its code defines it
    (facexlib/parsing/parsenet.py): ConvLayer -> ``conv2d`` (+ ``norm.norm`` batch norm, then no conv bias),
    ResidualBlock -> ``conv1``, ``conv2`` and, where size or width changes, a biased ``shortcut_func``."""
    keys: dict[str, tuple[int, ...]] = {}

    def conv(prefix: str, cin: int, cout: int, norm: bool) -> None:
        keys[f"{prefix}.conv2d.weight"] = (cout, cin, 3, 3)
        if norm:
            for name in ("weight", "bias", "running_mean", "running_var"):
                keys[f"{prefix}.norm.norm.{name}"] = (cout,)
            keys[f"{prefix}.norm.norm.num_batches_tracked"] = ()
        else:
            keys[f"{prefix}.conv2d.bias"] = (cout,)

    def block(prefix: str, cin: int, cout: int, shortcut: bool) -> None:
        if shortcut:
            conv(f"{prefix}.shortcut_func", cin, cout, norm=False)
        conv(f"{prefix}.conv1", cin, cout, norm=True)
        conv(f"{prefix}.conv2", cout, cout, norm=True)

    conv("encoder.0", 3, 64, norm=False)
    for i, (cin, cout) in enumerate([(64, 128), (128, 256), (256, 256), (256, 256)], 1):  # 512 -> 32 px
        block(f"encoder.{i}", cin, cout, shortcut=True)
    for i in range(10):
        block(f"body.{i}", 256, 256, shortcut=False)
    for i, (cin, cout) in enumerate([(256, 256), (256, 256), (256, 128), (128, 64)]):  # 32 -> 512 px
        block(f"decoder.{i}", cin, cout, shortcut=True)
    conv("out_img_conv", 64, 3, norm=False)
    conv("out_mask_conv", 64, 19, norm=False)
    return keys


def small_parsenet(seed: int = 0) -> ParseNet:
    """A narrow random-weight ParseNet (same structure, 4-8 channels, one body block): fast at 512 px."""
    torch.manual_seed(seed)
    network = ParseNet(base_channels=4, res_depth=1, channel_range=(4, 8))
    with torch.no_grad():
        for module in network.modules():  # random running statistics, so batch norm is not the identity
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
        network.out_mask_conv.conv2d.bias.zero_()  # no class wins everywhere: the parsing map is mixed
    return network.eval()


def cached_parsenet(tmp_path, monkeypatch, network: ParseNet) -> None:
    """``network`` saved as the cached ``facexlib-parsenet`` of model dir ``tmp_path`` (a bare state dict, as the
    official file), its sha256 standing in for the published one."""
    folder = tmp_path / "models"
    folder.mkdir(exist_ok=True)
    torch.save(network.state_dict(), folder / "parsing_parsenet.pth")
    publish_checksum_of(monkeypatch, "facexlib-parsenet", folder / "parsing_parsenet.pth")


def cpu_runtime() -> Runtime:
    return Runtime.create("cpu", "fp32")


# ------------------------------------------------------------------------------------------------ the network
def test_parsenet_has_facexlibs_key_names_and_shapes_and_strict_loads():
    state = ParseNet().state_dict()
    expected = facexlib_parsenet_keys()
    assert {key: tuple(value.shape) for key, value in state.items()} == expected
    random_weights = {key: torch.randn(shape) if shape else torch.tensor(0) for key, shape in expected.items()}
    for key in random_weights:
        if key.endswith("running_var"):
            random_weights[key] = random_weights[key].abs() + 0.5
    network = load_parsenet(random_weights)
    assert all(torch.equal(network.state_dict()[key], value) for key, value in random_weights.items())
    # older checkpoints lack batch norm's counters: torch fills them in
    load_parsenet({key: value for key, value in random_weights.items() if not key.endswith("num_batches_tracked")})
    with pytest.raises(ModelError, match="do not fit ParseNet"):
        load_parsenet({**random_weights, "out_mask_conv.conv2d.weight": torch.zeros(19, 32, 3, 3)})


def mask_from_parsing(parsing: np.ndarray, size: int) -> np.ndarray:
    """The paste mask a parsing Model's output gives for a hand-made class map: its face classes (the selection
    the Model makes from ParseNet's argmax), softened as paste-back softens them."""
    return soften_face_region(np.isin(parsing, FACE_CLASSES), size)


def test_parsenet_maps_512_px_to_a_19_class_map_and_the_model_returns_the_face_region():
    network = small_parsenet()
    image = torch.rand(1, 3, PARSING_SIZE, PARSING_SIZE)
    with torch.no_grad():
        logits, picture = network(image * 2 - 1)
        region = parsing_model(network)(image)
    assert logits.shape == (1, 19, 512, 512) and picture.shape == (1, 3, 512, 512)
    expected = np.isin(logits.argmax(1)[0].numpy(), FACE_CLASSES)  # facexlib's normalisation: mean 0.5, std 0.5
    assert region.shape == (1, 1, 512, 512) and np.array_equal(region[0, 0].numpy() == 1, expected)
    assert 0 < expected.mean() < 1  # a random network gives a mixed map: the check above is not trivial


def test_a_saved_parsenet_loads_by_path_and_by_catalog_name_through_the_restricted_loader(tmp_path, monkeypatch):
    network = small_parsenet()
    torch.save(network.state_dict(), tmp_path / "my_parser.pth")
    by_path = load_model(tmp_path / "my_parser.pth")
    assert (by_path.architecture, by_path.task, by_path.output_channels) == ("ParseNet", "parse", 1)
    assert all(torch.equal(by_path.network.state_dict()[k], v) for k, v in network.state_dict().items())
    cached_parsenet(tmp_path, monkeypatch, network)
    by_name = load_model("parsenet", model_dir=tmp_path)
    assert (by_name.name, by_name.license, by_name.face_size) == ("facexlib-parsenet", "MIT", 512)
    image = torch.rand(1, 3, 512, 512)
    assert torch.equal(by_name(image), by_path(image))
    # a helper network is no face model and no upscaler
    photo = data.astronaut()[:64, :64]
    with pytest.raises(ModelError, match="parse model, not a face model"):
        enhance_faces(photo, model="parsenet", model_dir=tmp_path)
    from tessera.tasks.upscale import upscale

    with pytest.raises(OptionError, match="not an upscaler"):
        upscale(photo, model=by_name)


# ------------------------------------------------------------------------------------------------ the mask
def test_mask_from_a_hand_made_parsing_map_keeps_facexlibs_classes_softened():
    parsing = np.zeros((512, 512), np.uint8)  # background
    cv2.circle(parsing, (256, 250), 150, 1, -1)  # skin
    parsing[60:140, 140:372] = 13  # hair on top: kept by facexlib
    cv2.circle(parsing, (200, 230), 15, 4, -1), cv2.circle(parsing, (312, 230), 15, 5, -1)  # eyes
    parsing[330:350, 220:292] = 11  # upper lip
    parsing[420:512, 200:312] = 17  # neck: dropped
    parsing[470:512, :150] = 18  # cloth: dropped
    parsing[:40, 400:] = 14  # hat: dropped
    mask = mask_from_parsing(parsing, 512)
    assert mask.dtype == np.float32 and mask.shape == (512, 512) and 0 <= mask.min() and mask.max() <= 1
    assert mask[250, 256] == pytest.approx(1.0, abs=1e-3) and mask[100, 256] > 0.99
    assert mask[490, 256] < 0.05 and mask[500, 60] == 0 and mask[15, 480] == 0  # neck, cloth, hat
    assert np.all(mask[:10] == 0) and np.all(mask[:, -10:] == 0)  # facexlib's cleared border
    edge = mask[250, 256 + 150 - 40:256 + 150 + 40]  # across the skin's edge: a smooth fall, no step
    assert edge[0] > 0.9 and edge[-1] < 0.1 and np.all(np.diff(edge) <= 1e-6) and np.abs(np.diff(edge)).max() < 0.05
    small = mask_from_parsing(parsing, 256)  # a 256 px crop gets the same mask resized
    assert small.shape == (256, 256)
    assert np.abs(small - cv2.resize(mask, (256, 256), interpolation=cv2.INTER_LINEAR)).max() < 1e-5


@pytest.mark.slow
def test_a_parsing_mask_paste_changes_exactly_the_pixels_where_the_mask_is_positive(rng):
    parser = parsing_model(small_parsenet())
    crop = rng.uniform(0.2, 1.0, (128, 128, 3)).astype(np.float32)
    matrix = np.array([[0.5, 0.0, -20.0], [0.0, 0.5, -10.0]])  # photo -> 128 px crop
    # the mask by hand: the network's argmax on the crop resized to 512 px, normalised as facexlib does
    big = cv2.resize(crop, (512, 512), interpolation=cv2.INTER_LINEAR)
    with torch.no_grad():
        logits = parser.network(torch.from_numpy(big.transpose(2, 0, 1))[None] * 2 - 1)[0]
    expected_mask = mask_from_parsing(logits.argmax(1)[0].numpy(), 128)
    masks = parsing_masks(parser, [crop], cpu_runtime())
    assert np.abs(masks[0] - expected_mask).max() < 1e-6

    pasted = np.zeros((400, 400, 3), np.float32)
    paster = FacePaster([np.zeros((5, 2))], (1.0, 1.0), parser=parser, runtime=cpu_runtime())
    [box] = paster.paste(pasted, 0, [crop], [matrix])
    alpha = np.zeros((400, 400, 3), np.float32)  # the same mask pasted from a white face onto black: alpha
    paste_face(alpha, np.ones_like(crop), matrix, mask=masks[0])
    assert np.array_equal(np.any(pasted != 0, axis=2), alpha[:, :, 0] > 0)
    square = np.zeros_like(alpha)
    paste_face(square, np.ones_like(crop), matrix)
    assert not np.allclose(alpha, square, atol=0.05)  # the parsing mask, not the square one, was used
    x0, y0, x1, y1 = box
    assert 0 < np.count_nonzero(alpha[y0:y1, x0:x1, 0]) < (x1 - x0) * (y1 - y0)
    with pytest.raises(InputError, match="paste mask is 64x64"):
        paste_face(alpha, crop, matrix, mask=np.ones((64, 64), np.float32))


# ------------------------------------------------------------------------------------------------ neighbours
def _face(offset: tuple[float, float], crop_scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks (photo pixels) and matrix of a face whose 128 px facexlib crop is ``crop_scale`` x photo."""
    matrix = np.array([[crop_scale, 0.0, -crop_scale * offset[0]], [0.0, crop_scale, -crop_scale * offset[1]]])
    points = face_template("facexlib", 128)
    return points @ invert(matrix)[:, :2].T + invert(matrix)[:, 2], matrix


def _pixels(canvas: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The canvas around each landmark (3x3 px)."""
    return np.stack([canvas[int(round(y)) - 1:int(round(y)) + 2, int(round(x)) - 1:int(round(x)) + 2]
                     for x, y in points])


@pytest.mark.parametrize("small_first", [True, False])
def test_a_larger_faces_mask_spares_a_neighbours_features(small_first):
    """A small face inside a big face's crop, away from the big face's features: each face's eyes, nose and
    mouth keep their own restoration, in either paste order (the square masks alone overwrite the small one)."""
    big_points, big_matrix = _face((0.0, 0.0), 0.5)  # a crop of photo 0..256: mask 1 over 32..224
    small_points, small_matrix = _face((10.0, 150.0), 2.0)  # its features at x 34-50, y 180-196
    faces = [(small_points, small_matrix, 0.2), (big_points, big_matrix, 0.8)]
    if not small_first:
        faces.reverse()
    crops = [np.full((128, 128, 3), value, np.float32) for _, _, value in faces]

    plain = np.zeros((300, 300, 3), np.float32)
    for (_, matrix, _), crop in zip(faces, crops):
        paste_face(plain, crop, matrix)
    spared = np.zeros((300, 300, 3), np.float32)
    paster = FacePaster([points for points, _, _ in faces], (1.0, 1.0))
    paster.paste(spared, 0, crops, [matrix for _, matrix, _ in faces])

    if small_first:  # what went wrong before: the big face, pasted last, painted over the small one's eyes
        assert np.all(np.abs(_pixels(plain, small_points) - 0.8) < 1e-6)
    assert np.all(np.abs(_pixels(spared, small_points) - 0.2) < 1e-6)
    assert np.all(np.abs(_pixels(spared, big_points) - 0.8) < 1e-6)
    row = spared[int(small_points[0, 1]), :, 0]  # through the small face's eyes: soft, no step
    assert np.abs(np.diff(row)).max() < 0.2


def test_faces_whose_features_overlap_leave_no_hole():
    """Where two faces' feature regions overlap, each face's own region is exempt from the other's keep-out, so
    the one pasted last covers the overlap instead of neither."""
    first_points, first_matrix = _face((0.0, 0.0), 0.5)
    second_points, second_matrix = _face((40.0, 0.0), 0.5)
    canvas = np.zeros((300, 320, 3), np.float32)
    paster = FacePaster([first_points, second_points], (1.0, 1.0))
    paster.paste(canvas, 0, [np.full((128, 128, 3), 0.3, np.float32), np.full((128, 128, 3), 0.9, np.float32)],
                 [first_matrix, second_matrix])
    between = np.mean([first_points[1], second_points[0]], axis=0)  # in both faces' feature regions
    assert _pixels(canvas, between[None])[0, ..., 0] == pytest.approx(np.full((3, 3), 0.9), abs=1e-6)
    assert np.all(_pixels(canvas, first_points[:1]) > 0.25) and np.all(_pixels(canvas, second_points) > 0.85)


class FlatFaces(torch.nn.Module):
    """A fake face network that paints each face it is given one flat grey, a different one per call."""

    def __init__(self, values: list[float]) -> None:
        super().__init__()
        self.values = list(values)
        self.given: list[float] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        value = self.values[len(self.given) % len(self.values)]
        self.given.append(value)
        return torch.full_like(x, value * 2 - 1)  # the network's own range is [-1, 1]


@needs_yuface
def test_enhance_pastes_each_neighbours_features_from_its_own_restoration():
    """The astronaut with a smaller copy of her head on her helmet, inside her face's crop: the small face's
    landmarks keep the small face's own (flat) result, the big face's its own."""
    photo = data.astronaut().copy()
    head = cv2.resize(photo[30:210, 140:310], (57, 60), interpolation=cv2.INTER_AREA)
    photo[22:82, 190:247] = head
    faces = sorted(detect_faces(photo), key=lambda face: face.size)
    assert len(faces) == 2
    network = FlatFaces([0.2, 0.8])  # the smaller face is pasted first: 0.2, the larger one 0.8
    model = Model(network=network, name="flat", task="face", input_range=(-1.0, 1.0), face_size=64,
                  face_template="facexlib")
    out = enhance_faces(photo, model=model, face_batch=1, parse_mask="box", device="cpu").image
    assert network.given == [0.2, 0.8]
    small, big = faces
    to_big_crop = alignment_matrix(big.landmarks, "facexlib", 64)
    in_big_crop = small.landmarks @ to_big_crop[:, :2].T + to_big_crop[:, 2]
    x, y = np.rint(in_big_crop).astype(int).T
    assert np.all(soft_mask(64)[y, x] > 0.99)  # the big face's square mask alone would paint over them
    assert np.all(_pixels(out, small.landmarks) == 51)  # 0.2 * 255: the small face's own result
    assert np.all(_pixels(out, big.landmarks) == 204)  # 0.8 * 255


# ------------------------------------------------------------------------------------------------ the option
@pytest.mark.slow
def test_parse_mask_option_auto_uses_parsenet_only_when_it_is_cached(tmp_path, monkeypatch):
    assert face_parser("auto", tmp_path) is None and face_parser("box", tmp_path) is None  # nothing cached
    with pytest.raises(ModelError, match="models pull facexlib-parsenet"):
        face_parser("parsenet", tmp_path)
    with pytest.raises(OptionError, match="parse_mask"):
        parse_options(FaceOptions, parse_mask="ellipse")
    network = small_parsenet()
    with torch.no_grad():  # parses everything as skin: the mask is facexlib's softened square, not ours
        network.out_mask_conv.conv2d.bias[1] = 100.0
    cached_parsenet(tmp_path, monkeypatch, network)
    assert face_parser("auto", tmp_path).architecture == "ParseNet" and face_parser("box", tmp_path) is None

    photo = data.astronaut()[::2, ::2].copy()
    box = enhance_faces(photo, parse_mask="box", model_dir=tmp_path).image
    result = enhance_faces(photo, model_dir=tmp_path)  # auto, cached: ParseNet
    parsed, report = result.image, result.report
    assert not np.array_equal(parsed, box)
    changed = np.any(parsed != photo, axis=2)
    inside = np.zeros_like(changed)
    for face in report.faces:
        x0, y0, x1, y1 = face.box
        inside[y0:y1, x0:x1] = True
    assert changed.any() and not changed[~inside].any()
