"""ncnn models (``.param`` graph text + ``.bin`` weights) read as data, within bounds.

Real-ESRGAN, Upscayl and chaiNNer distribute their networks in this form. The ``.param`` file lists layers in
order (type, name, input and output blobs, ``key=value`` settings); the ``.bin`` holds the weights of the layers
that carry any, in the same order, with no header. This module reads both into plain numpy arrays and never
runs anything; :mod:`tessera.models.ncnn_graph` maps the graph onto spandrel's architectures.

Facts of the format this reader relies on (ncnn's ``ModelBinFromDataReader``): a Convolution's weights start with a
4-byte tag: ``0x01306B47`` fp16, ``0x000D4B38`` int8, ``0`` or ``0x0002C056`` fp32, anything else a 256-entry fp32
table followed by one uint8 index per weight; fp16, int8 and index payloads are padded to 4 bytes. Biases, PReLU
slopes and int8 scales are raw fp32 with no tag. A ``.bin`` must be consumed exactly to its end: a byte short or
left over means the graph and the weights do not belong together.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Union

import numpy as np

from ..errors import ModelError
from ..options import format_bytes
from .torchfile import BUDGET_VARIABLE, weight_budget

PARAM_MAGIC = 7767517
MAX_PARAM_BYTES = 16 << 20  # the x4plus graph (1,000 layers) is 116 KB
MAX_LAYERS = 100_000

TAG_FP16 = 0x01306B47
TAG_INT8 = 0x000D4B38
TAG_FP32 = 0x0002C056

# Layers that carry no weights in the .bin: the reader skips them, the graph mapper decides whether it knows them.
_WEIGHTLESS = {"Input", "Split", "Concat", "Eltwise", "BinaryOp", "Interp", "PixelShuffle", "ReLU", "Sigmoid",
               "Clip", "Noop", "Crop", "Reshape", "Permute", "Flatten", "Pooling", "Softmax", "TanH"}

Value = Union[int, float, list]


@dataclass(frozen=True)
class NcnnLayer:
    """One line of a ``.param`` file: ``type name n_in n_out inputs... outputs... key=value...``."""

    type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    params: dict[int, Value]
    line: int

    def get(self, key: int, default: Value) -> Value:
        return self.params.get(key, default)

    def integer(self, key: int, default: int) -> int:
        """Setting ``key`` (or ``default``), which must be an integer; ModelError naming the layer otherwise."""
        value = self.params.get(key, default)
        if not isinstance(value, int):
            raise ModelError(f"{self.describe()}: setting {key}={value!r} must be an integer")
        return value

    def describe(self) -> str:
        return f"layer {self.name!r} ({self.type}, line {self.line})"


@dataclass
class LayerWeights:
    """The arrays one layer holds in the ``.bin``: conv ``weight`` (flat, fp16 or fp32) and ``bias``, PReLU ``slope``."""

    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    slope: np.ndarray | None = None
    storage: str = "fp32"  # how the conv weights were stored: fp32, fp16, int8, table


@dataclass
class NcnnModel:
    """A parsed ``.param`` and the weights of its ``.bin``, by layer name."""

    param_path: Path
    bin_path: Path
    layers: list[NcnnLayer]
    weights: dict[str, LayerWeights] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------------- .param
def _number(text: str, where: str) -> int | float:
    try:
        return float(text) if any(c in text for c in ".eE") else int(text)
    except ValueError:
        raise ModelError(f"{where}: {text!r} is not a number") from None


def _parse_value(key: int, text: str, where: str) -> tuple[int, Value]:
    """``key=value``; keys at or below -23300 hold arrays ``count,v1,v2,...`` for key ``-23300 - key``."""
    if key <= -23300:
        parts = text.split(",")
        count = _number(parts[0], where)
        if not isinstance(count, int) or count != len(parts) - 1:
            raise ModelError(f"{where}: array {key}={text!r} does not hold the {parts[0]} values it declares")
        return -23300 - key, [_number(p, where) for p in parts[1:]]
    return key, _number(text, where)


def read_param(path: str | os.PathLike[str]) -> list[NcnnLayer]:
    """The layers of an ncnn ``.param`` text file; ModelError (naming the line) for anything malformed."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ncnn graph not found: {path}")
    size = path.stat().st_size
    if size > MAX_PARAM_BYTES:
        raise ModelError(f"{path}: {format_bytes(size)} is too large for an ncnn .param file "
                         f"(at most {format_bytes(MAX_PARAM_BYTES)})")
    try:
        text = path.read_bytes().decode("ascii")
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not an ncnn .param file (binary content; the binary .param.bin form is "
                         f"not supported)") from None
    lines = text.splitlines()
    if not lines or lines[0].strip() != str(PARAM_MAGIC):
        raise ModelError(f"{path}: not an ncnn .param file (the first line is not the magic {PARAM_MAGIC})")
    try:
        layer_count, blob_count = (int(v) for v in lines[1].split())
    except (IndexError, ValueError):
        raise ModelError(f"{path}: line 2 must give the layer and blob counts") from None
    if not 0 < layer_count <= MAX_LAYERS or blob_count <= 0:
        raise ModelError(f"{path}: declares {layer_count} layers and {blob_count} blobs "
                         f"(at most {MAX_LAYERS} layers)")
    layers: list[NcnnLayer] = []
    blobs: set[str] = set()
    for number, raw in enumerate(lines[2:], 3):
        if not raw.strip():
            continue
        layers.append(_parse_layer(raw, number, path))
        blobs.update(layers[-1].outputs)
    if len(layers) != layer_count:
        raise ModelError(f"{path}: declares {layer_count} layers but lists {len(layers)}")
    if len(blobs) != blob_count:
        raise ModelError(f"{path}: declares {blob_count} blobs but its layers produce {len(blobs)}")
    return layers


def _parse_layer(raw: str, number: int, path: Path) -> NcnnLayer:
    where = f"{path}, line {number}"
    tokens = raw.split()
    if len(tokens) < 4:
        raise ModelError(f"{where}: a layer needs a type, a name and its blob counts")
    kind, name = tokens[0], tokens[1]
    try:
        n_in, n_out = int(tokens[2]), int(tokens[3])
    except ValueError:
        raise ModelError(f"{where}: blob counts {tokens[2]!r} {tokens[3]!r} are not integers") from None
    if n_in < 0 or n_out < 0 or len(tokens) < 4 + n_in + n_out:
        raise ModelError(f"{where}: {name} declares {n_in} inputs and {n_out} outputs it does not list")
    inputs = tuple(tokens[4:4 + n_in])
    outputs = tuple(tokens[4 + n_in:4 + n_in + n_out])
    params: dict[int, Value] = {}
    for item in tokens[4 + n_in + n_out:]:
        key_text, sep, value_text = item.partition("=")
        if not sep:
            raise ModelError(f"{where}: {item!r} is not key=value")
        try:
            key = int(key_text)
        except ValueError:
            raise ModelError(f"{where}: key {key_text!r} is not an integer") from None
        key, value = _parse_value(key, value_text, where)
        params[key] = value
    return NcnnLayer(kind, name, inputs, outputs, params, number)


# ---------------------------------------------------------------------------------------------------- .bin
class _BinReader:
    """Reads the ``.bin`` in order, checking every length against what is left of the file before reading."""

    def __init__(self, stream: BinaryIO, size: int, path: Path) -> None:
        self.stream, self.size, self.path = stream, size, path
        self.offset = 0

    def take(self, count: int, layer: NcnnLayer, what: str) -> bytes:
        if count < 0 or count > self.size - self.offset:
            raise ModelError(f"{self.path} is truncated: {layer.describe()} needs {count} more bytes for its "
                             f"{what} at offset {self.offset}, {self.size - self.offset} are left")
        data = self.stream.read(count)
        if len(data) != count:  # the file shrank while being read
            raise ModelError(f"{self.path} is truncated at offset {self.offset}")
        self.offset += count
        return data

    def raw_fp32(self, count: int, layer: NcnnLayer, what: str) -> np.ndarray:
        return np.frombuffer(self.take(4 * count, layer, what), dtype="<f4").copy()

    def tagged(self, count: int, layer: NcnnLayer) -> tuple[np.ndarray, str]:
        """A tagged weight array of ``count`` values: fp16 or fp32 as stored, table-quantized expanded to fp32."""
        tag = int.from_bytes(self.take(4, layer, "weight tag"), "little")
        padded = -(-count // 4) * 4
        if tag == TAG_FP16:
            data = np.frombuffer(self.take(-(-2 * count // 4) * 4, layer, "fp16 weights"), dtype="<f2")
            return data[:count].copy(), "fp16"
        if tag == TAG_INT8:
            data = np.frombuffer(self.take(padded, layer, "int8 weights"), dtype=np.int8)
            return data[:count].astype(np.float32), "int8"
        if tag in (0, TAG_FP32):
            return self.raw_fp32(count, layer, "fp32 weights"), "fp32"
        table = self.raw_fp32(256, layer, "quantization table")
        indices = np.frombuffer(self.take(padded, layer, "quantized weights"), dtype=np.uint8)
        return table[indices[:count]], "table"


def _conv_weights(reader: _BinReader, layer: NcnnLayer) -> LayerWeights:
    num_output = layer.integer(0, 0)
    size = layer.integer(6, 0)
    if num_output <= 0 or size <= 0 or size % num_output:
        raise ModelError(f"{layer.describe()}: weight_data_size {size} does not divide into {num_output} outputs")
    weight, storage = reader.tagged(size, layer)
    bias = reader.raw_fp32(num_output, layer, "bias") if layer.integer(5, 0) else None
    int8_scales = layer.integer(8, 0)
    if storage == "int8":
        if not int8_scales:
            raise ModelError(f"{layer.describe()}: int8 weights without their scales (int8_scale_term)")
        scales = reader.raw_fp32(num_output, layer, "int8 weight scales")
        reader.raw_fp32(1, layer, "int8 input scale")
        if int8_scales > 100:
            reader.raw_fp32(1, layer, "int8 output scale")
        if np.any(scales == 0) or not np.all(np.isfinite(scales)):
            raise ModelError(f"{layer.describe()}: int8 weight scales hold zeros or non-finite values")
        weight = (weight.reshape(num_output, -1) / scales[:, None]).reshape(-1).astype(np.float32)
    elif int8_scales:
        raise ModelError(f"{layer.describe()}: int8 scales (8={int8_scales}) beside {storage} weights")
    return LayerWeights(weight=weight, bias=bias, storage=storage)


def read_bin(layers: list[NcnnLayer], path: str | os.PathLike[str],
             max_bytes: int | str | None = None) -> dict[str, LayerWeights]:
    """The weights of every layer of ``layers`` from ``path``, which must end exactly where the last one does.

    Only Convolution and PReLU layers are read (the layers Real-ESRGAN's models hold); any other layer that
    carries weights in ncnn raises ModelError naming it. The file is refused above the weight budget.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"ncnn weights not found: {path} (the .bin must sit beside the .param)")
    size = path.stat().st_size
    budget = weight_budget(max_bytes)
    if size > budget:
        raise ModelError(f"{path} holds {format_bytes(size)} of weights, over the {format_bytes(budget)} budget "
                         f"(raise it with {BUDGET_VARIABLE}=8G)")
    weights: dict[str, LayerWeights] = {}
    with open(path, "rb") as stream:
        reader = _BinReader(stream, size, path)
        for layer in layers:
            if layer.type == "Convolution":
                weights[layer.name] = _conv_weights(reader, layer)
            elif layer.type == "PReLU":
                count = layer.integer(0, 1)
                if not 0 < count <= 1 << 16:
                    raise ModelError(f"{layer.describe()}: {count} slopes")
                weights[layer.name] = LayerWeights(slope=reader.raw_fp32(count, layer, "slopes"))
            elif layer.type not in _WEIGHTLESS:
                raise ModelError(f"{path}: unsupported ncnn layer type {layer.type!r} ({layer.describe()})")
        if reader.offset != size:
            raise ModelError(f"{path} does not match its graph: {size - reader.offset} bytes are left over after "
                             f"the last layer's weights (offset {reader.offset} of {size})")
    return weights


def bin_beside(param_path: str | os.PathLike[str]) -> Path:
    """The ``.bin`` that belongs to a ``.param``: same folder, same stem."""
    return Path(param_path).with_suffix(".bin")


def read_ncnn(param_path: str | os.PathLike[str], bin_path: str | os.PathLike[str] | None = None,
              max_bytes: int | str | None = None) -> NcnnModel:
    """Parse a ``.param`` and read its ``.bin`` (default: beside it) into an :class:`NcnnModel`."""
    param_path = Path(param_path)
    bin_file = Path(bin_path) if bin_path is not None else bin_beside(param_path)
    layers = read_param(param_path)
    return NcnnModel(param_path, bin_file, layers, read_bin(layers, bin_file, max_bytes))
