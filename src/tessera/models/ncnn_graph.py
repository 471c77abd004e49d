"""Map an ncnn graph onto spandrel's architectures by its structure, and name its weights as spandrel expects.

A ``.param`` file says how layers connect, not what network they are. Rather than guess from names or counts,
the graph is rebuilt as a small DAG (Split layers dissolved, fused activations kept on their convolutions,
channel counts checked along every edge) and compared node by node with the graph that ESRGAN (RRDBNet) or
Compact (SRVGGNetCompact) of the same size would export. Only an exact match is converted; anything else raises
ModelError naming the first layer that differs. A trailing resize (the x2/x3 animevideov3 models are the x4
network followed by a bicubic 0.5 or 0.75 Interp) is kept aside as the model's output resize.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import ModelError
from .ncnn import NcnnLayer, NcnnModel

_INTERP_MODES = {1: "nearest", 2: "bilinear", 3: "bicubic"}
_LEAKY = 0.2  # RRDBNet's LeakyReLU slope


@dataclass
class Node:
    """One operation of a graph: what it is (``kind`` and ``attrs``), what it reads, and its name in either graph.

    ``inputs`` are node ids; for "sum" nodes they pair with ``coeffs`` and their order does not matter.
    ``layer`` is the ncnn layer (observed graphs); ``key`` the state-dict prefix (template graphs).
    """

    kind: str
    attrs: tuple[Any, ...]
    inputs: tuple[int, ...] = ()
    coeffs: tuple[float, ...] = ()
    layer: NcnnLayer | None = None
    key: str | None = None
    channels: int = 0  # of the node's output
    in_channels: int = 0  # convolutions: the input channels their weights expect

    def describe(self) -> str:
        where = self.layer.describe() if self.layer is not None else self.key or self.kind
        return f"{where}: {self.kind}{list(self.attrs) if self.attrs else ''}"


@dataclass
class Graph:
    nodes: list[Node] = field(default_factory=list)

    def add(self, node: Node) -> int:
        self.nodes.append(node)
        return len(self.nodes) - 1

    # the template builder's vocabulary -------------------------------------------------------------
    def conv(self, source: int, out: int, act: tuple[Any, ...], key: str) -> int:
        return self.add(Node("conv", (out, 3, act), (source,), key=key))

    def prelu(self, source: int, key: str) -> int:
        return self.add(Node("prelu", (), (source,), key=key))

    def concat(self, sources: list[int]) -> int:
        return sources[0] if len(sources) == 1 else self.add(Node("concat", (), tuple(sources)))

    def sum(self, *terms: tuple[int, float]) -> int:
        return self.add(Node("sum", (), tuple(t[0] for t in terms), tuple(t[1] for t in terms)))

    def resize(self, source: int, mode: str, factor: float) -> int:
        return self.add(Node("resize", (mode, factor), (source,)))

    def shuffle(self, source: int, factor: int) -> int:
        return self.add(Node("shuffle", (factor,), (source,)))


@dataclass(frozen=True)
class Conversion:
    """What a converted ncnn model is: spandrel's state dict (numpy arrays), its architecture and factors.

    ``network_scale`` is the factor of the network itself; ``output_resize`` a trailing (mode, factor) resize, so
    that the model's overall factor is ``network_scale * factor``.
    """

    state: dict[str, np.ndarray]
    architecture: str
    network_scale: int
    output_resize: tuple[str, float] | None
    description: str

    @property
    def scale(self) -> float:
        factor = self.output_resize[1] if self.output_resize else 1.0
        return self.network_scale * factor


# ---------------------------------------------------------------------------------------------------- observed
def _conv_node(layer: NcnnLayer, weight_size: int) -> Node:
    out = layer.integer(0, 0)
    k = layer.integer(1, 1)
    if layer.integer(11, k) != k:
        raise ModelError(f"{layer.describe()}: non-square kernels are not supported")
    for key, name in ((2, "dilation"), (12, "dilation"), (3, "stride"), (13, "stride")):
        if layer.integer(key, 1) != 1:
            raise ModelError(f"{layer.describe()}: {name} other than 1 is not supported")
    left = layer.integer(4, 0)
    pads = {left, layer.integer(14, left), layer.integer(15, left), layer.integer(16, layer.integer(14, left))}
    if k % 2 == 0 or not (pads == {k // 2} or pads == {-233}):
        raise ModelError(f"{layer.describe()}: padding {sorted(pads)} is not the 'same' padding of a {k}x{k} kernel")
    if layer.get(18, 0) not in (0, 0.0):
        raise ModelError(f"{layer.describe()}: a non-zero pad value is not supported")
    act_type = layer.integer(9, 0)
    act_params = layer.get(10, [])
    if act_type == 0:
        act: tuple[Any, ...] = ()
    elif act_type == 1:
        act = ("leaky", 0.0)
    elif act_type == 2 and isinstance(act_params, list) and len(act_params) == 1:
        act = ("leaky", round(float(act_params[0]), 6))
    else:
        raise ModelError(f"{layer.describe()}: fused activation {act_type} is not supported")
    if out <= 0 or weight_size % (out * k * k):
        raise ModelError(f"{layer.describe()}: {weight_size} weights do not divide into {out} {k}x{k} filters")
    return Node("conv", (out, k, act), layer=layer, in_channels=weight_size // (out * k * k))


def observe(model: NcnnModel) -> tuple[Graph, int]:
    """The ncnn graph as a DAG of :class:`Node` (channels checked on every edge) and the id of its output."""
    graph = Graph()
    producer: dict[str, int] = {}
    consumed: set[str] = set()
    readers: Counter = Counter()  # node id -> how many layers read its output (through Splits too)

    def source(layer: NcnnLayer, blob: str) -> int:
        if blob not in producer:
            raise ModelError(f"{model.param_path}: {layer.describe()} reads blob {blob!r}, which no earlier layer "
                             f"produces")
        consumed.add(blob)
        if layer.type != "Split":
            readers[producer[blob]] += 1
        return producer[blob]

    for layer in model.layers:
        inputs = tuple(source(layer, blob) for blob in layer.inputs)
        kind = layer.type
        if kind == "Input":
            node = Node("input", ())
        elif kind == "Split":
            for blob in layer.outputs:
                producer[blob] = inputs[0]
            continue
        elif kind == "Convolution":
            weights = model.weights[layer.name].weight
            node = _conv_node(layer, 0 if weights is None else weights.size)
        elif kind == "PReLU":
            node = Node("prelu", (), layer=layer)
        elif kind == "ReLU":
            node = Node("relu", (round(float(layer.get(0, 0.0)), 6),), layer=layer)
        elif kind == "Concat":
            if layer.integer(0, 0) != 0:
                raise ModelError(f"{layer.describe()}: concatenation along another axis than channels")
            node = Node("concat", (), layer=layer)
        elif kind == "Eltwise":
            if layer.integer(0, 1) != 1:
                raise ModelError(f"{layer.describe()}: only Eltwise sums are supported")
            coeffs = layer.get(1, [1.0] * len(inputs))
            if not isinstance(coeffs, list) or len(coeffs) != len(inputs):
                raise ModelError(f"{layer.describe()}: {coeffs!r} are not one coefficient per input")
            node = Node("sum", (), coeffs=tuple(round(float(c), 6) for c in coeffs), layer=layer)
        elif kind == "BinaryOp":
            if layer.integer(0, 0) != 0 or layer.integer(1, 0) != 0 or len(inputs) != 2:
                raise ModelError(f"{layer.describe()}: only the addition of two blobs is supported")
            node = Node("sum", (), coeffs=(1.0, 1.0), layer=layer)
        elif kind == "Interp":
            mode = _INTERP_MODES.get(layer.integer(0, 0))
            heights, widths = float(layer.get(1, 1.0)), float(layer.get(2, 1.0))
            if (mode is None or heights != widths or layer.integer(3, 0) or layer.integer(4, 0)
                    or layer.integer(5, 0) or layer.integer(6, 0)):
                raise ModelError(f"{layer.describe()}: only resizes by one factor, without align_corners, "
                                 f"are supported")
            node = Node("resize", (mode, round(heights, 6)), layer=layer)
        elif kind == "PixelShuffle":
            if layer.integer(1, 0) != 0:
                raise ModelError(f"{layer.describe()}: only the standard pixel-shuffle order is supported")
            node = Node("shuffle", (layer.integer(0, 1),), layer=layer)
        else:
            raise ModelError(f"{model.param_path}: unsupported ncnn layer type {kind!r} ({layer.describe()})")
        if len(layer.outputs) != 1:
            raise ModelError(f"{layer.describe()}: {len(layer.outputs)} outputs where one was expected")
        node.inputs = inputs
        if node.kind == "relu":  # fold a separate (Leaky)ReLU into the convolution it follows
            if readers[inputs[0]] != 1:
                raise ModelError(f"{node.describe()} follows a layer whose output is also read without it")
            _fold_relu(graph, node)
            producer[layer.outputs[0]] = inputs[0]
            continue
        producer[layer.outputs[0]] = graph.add(node)
    outputs = [blob for blob in producer if blob not in consumed]
    inputs = [i for i, n in enumerate(graph.nodes) if n.kind == "input"]
    if len(outputs) != 1 or len(inputs) != 1:
        raise ModelError(f"{model.param_path}: the graph has {len(inputs)} inputs and {len(outputs)} outputs "
                         f"(an image model has one of each)")
    _check_channels(graph, model)
    return graph, producer[outputs[0]]


def _fold_relu(graph: Graph, relu: Node) -> None:
    conv = graph.nodes[relu.inputs[0]]
    if conv.kind != "conv" or conv.attrs[2]:
        raise ModelError(f"{relu.describe()} does not follow a convolution without activation")
    out, k, _ = conv.attrs
    conv.attrs = (out, k, ("leaky", relu.attrs[0]))


def _check_channels(graph: Graph, model: NcnnModel) -> None:
    """Propagate channel counts and check each layer gets what its weights expect (the shapes of the DAG)."""
    in_channels = {n.in_channels for n in graph.nodes
                   if n.kind == "conv" and graph.nodes[n.inputs[0]].kind == "input"}
    if len(in_channels) != 1:
        raise ModelError(f"{model.param_path}: convolutions read the input with {sorted(in_channels)} channels")
    for node in graph.nodes:
        got = [graph.nodes[i].channels for i in node.inputs]
        if node.kind == "input":
            node.channels = in_channels.pop()
            continue
        if node.kind == "conv":
            if got[0] != node.in_channels:
                raise ModelError(f"{node.describe()} has weights for {node.in_channels} input channels but reads "
                                 f"{got[0]}")
            node.channels = node.attrs[0]
        elif node.kind == "concat":
            node.channels = sum(got)
        elif node.kind == "sum":
            if len(set(got)) != 1:
                raise ModelError(f"{node.describe()} adds blobs of {got} channels")
            node.channels = got[0]
        elif node.kind == "shuffle":
            factor = node.attrs[0]
            if factor < 1 or got[0] % (factor * factor):
                raise ModelError(f"{node.describe()}: {got[0]} channels do not shuffle by {factor}")
            node.channels = got[0] // (factor * factor)
        else:  # prelu, resize
            node.channels = got[0]
        if node.kind == "prelu":
            slopes = model.weights[node.layer.name].slope
            if slopes is None or slopes.size not in (1, node.channels):
                raise ModelError(f"{node.describe()}: {0 if slopes is None else slopes.size} slopes for "
                                 f"{node.channels} channels")


# ---------------------------------------------------------------------------------------------------- templates
def esrgan_template(nf: int, gc: int, blocks: int, upsamplings: int, out_ch: int) -> tuple[Graph, int]:
    """The graph an RRDBNet exports: spandrel's new-style key names on its convolutions. (Input channels are not
    part of a template: the channel check of :func:`observe` already tied every convolution to what it reads.)"""
    g = Graph()
    x = g.add(Node("input", ()))
    leaky = ("leaky", _LEAKY)
    first = g.conv(x, nf, (), "conv_first")
    trunk = first
    for b in range(blocks):
        block_in = trunk
        for r in range(1, 4):
            features = [trunk]
            for c in range(1, 5):
                features.append(g.conv(g.concat(features), gc, leaky, f"body.{b}.rdb{r}.conv{c}"))
            last = g.conv(g.concat(features), nf, (), f"body.{b}.rdb{r}.conv5")
            trunk = g.sum((last, _LEAKY), (trunk, 1.0))
        trunk = g.sum((trunk, _LEAKY), (block_in, 1.0))
    out = g.sum((first, 1.0), (g.conv(trunk, nf, (), "conv_body"), 1.0))
    for u in range(1, upsamplings + 1):
        out = g.conv(g.resize(out, "nearest", 2.0), nf, leaky, f"conv_up{u}")
    out = g.conv(g.conv(out, nf, leaky, "conv_hr"), out_ch, (), "conv_last")
    return g, out


def compact_template(nf: int, convs: int, scale: int, out_ch: int) -> tuple[Graph, int]:
    """The graph an SRVGGNetCompact exports (PReLU activations): keys ``body.N`` as in spandrel."""
    g = Graph()
    x = g.add(Node("input", ()))
    body = g.prelu(g.conv(x, nf, (), "body.0"), "body.1")
    for i in range(convs):
        body = g.prelu(g.conv(body, nf, (), f"body.{2 + 2 * i}"), f"body.{3 + 2 * i}")
    body = g.shuffle(g.conv(body, out_ch * scale * scale, (), f"body.{2 * convs + 2}"), scale)
    return g, g.sum((body, 1.0), (g.resize(x, "nearest", float(scale)), 1.0))


# ---------------------------------------------------------------------------------------------------- matching
def _fingerprints(graph: Graph) -> list[int]:
    """A structural hash per node from its kind, settings and inputs (sums: unordered), in topological order."""
    prints: list[int] = []
    for node in graph.nodes:
        if node.kind == "sum":
            ins: Any = tuple(sorted((prints[i], c) for i, c in zip(node.inputs, node.coeffs)))
        else:
            ins = tuple(prints[i] for i in node.inputs)
        prints.append(hash((node.kind, node.attrs, ins)))
    return prints


def _paired_inputs(observed: Graph, obs: Node, template: Graph, tmpl: Node, obs_prints: list[int],
                   tmpl_prints: list[int]) -> list[tuple[int, int]]:
    """Which input of ``obs`` corresponds to which of ``tmpl``: by position, except for sums, whose terms pair by
    coefficient and then by identical structure, by the same kind of operation, and only then by order (so that
    an error names the term that differs, whatever order the exporter wrote them in)."""
    if obs.kind != "sum":
        return list(zip(obs.inputs, tmpl.inputs))
    left = list(zip(obs.inputs, obs.coeffs))
    right = list(zip(tmpl.inputs, tmpl.coeffs))
    pairs = []
    for same in (lambda o, t: obs_prints[o] == tmpl_prints[t],
                 lambda o, t: (observed.nodes[o].kind, observed.nodes[o].attrs)
                 == (template.nodes[t].kind, template.nodes[t].attrs),
                 lambda o, t: True):
        for term in list(left):
            partner = next((r for r in right if r[1] == term[1] and same(term[0], r[0])), None)
            if partner is not None:
                pairs.append((term[0], partner[0]))
                left.remove(term)
                right.remove(partner)
    return pairs


def match(observed: Graph, obs_out: int, template: Graph, tmpl_out: int, family: str) -> dict[int, int]:
    """Map template node ids onto observed ones; ModelError naming the first observed layer that differs."""
    obs_prints, tmpl_prints = _fingerprints(observed), _fingerprints(template)
    mapping: dict[int, int] = {}
    pending = [(obs_out, tmpl_out)]
    while pending:
        o, t = pending.pop()
        if t in mapping:
            if mapping[t] != o:
                raise ModelError(f"{observed.nodes[o].describe()} is wired differently from {family}")
            continue
        obs, tmpl = observed.nodes[o], template.nodes[t]
        if (obs.kind, obs.attrs, len(obs.inputs)) != (tmpl.kind, tmpl.attrs, len(tmpl.inputs)) or (
                obs.kind == "sum" and sorted(obs.coeffs) != sorted(tmpl.coeffs)):
            raise ModelError(f"{obs.describe()} is not what {family} has there ({tmpl.describe()})")
        mapping[t] = o
        pending.extend(_paired_inputs(observed, obs, template, tmpl, obs_prints, tmpl_prints))
    if len(mapping) != len(template.nodes) or len(set(mapping.values())) != len(observed.nodes):
        raise ModelError(f"the graph holds {len(observed.nodes)} operations where {family} has "
                         f"{len(template.nodes)}")
    return mapping


# ---------------------------------------------------------------------------------------------------- conversion
def _kinds(graph: Graph) -> Counter:
    return Counter(node.kind for node in graph.nodes)


def _esrgan(graph: Graph) -> tuple[Graph, int, str]:
    convs = [n for n in graph.nodes if n.kind == "conv"]
    upsamplings = sum(1 for n in graph.nodes if n.kind == "resize" and n.attrs == ("nearest", 2.0))
    blocks, rest = divmod(len(convs) - 4 - upsamplings, 15)
    if rest or blocks < 1:
        raise ModelError(f"{len(convs)} convolutions and {upsamplings} upsamplings are not an ESRGAN "
                         f"(1 + 15 per block + 1 + one per upsampling + 2)")
    growth = min(n.attrs[0] for n in convs if n.attrs[2])
    nf = convs[0].attrs[0]
    template = esrgan_template(nf, growth, blocks, upsamplings, convs[-1].attrs[0])
    return (*template, f"ESRGAN x{2 ** upsamplings}, {blocks} blocks, {nf} features")


def _compact(graph: Graph) -> tuple[Graph, int, str]:
    convs = [n for n in graph.nodes if n.kind == "conv"]
    shuffles = [n for n in graph.nodes if n.kind == "shuffle"]
    if len(shuffles) != 1 or len(convs) < 2:
        raise ModelError("a Compact graph has one pixel shuffle and at least two convolutions")
    scale = shuffles[0].attrs[0]
    out_ch = convs[-1].attrs[0] // (scale * scale)
    template = compact_template(convs[0].attrs[0], len(convs) - 2, scale, out_ch)
    return (*template, f"Compact x{scale}, {len(convs) - 2} convolutions, {convs[0].attrs[0]} features")


def convert(model: NcnnModel) -> Conversion:
    """The spandrel state dict of an ncnn ESRGAN or Compact model; ModelError for any other graph."""
    graph, out = observe(model)
    resize = None
    last = graph.nodes[out]
    if last.kind == "resize" and last.attrs[0] != "nearest":  # x2/x3 variants: the x4 network, then a resize
        if out != len(graph.nodes) - 1:
            raise ModelError(f"{model.param_path}: {last.describe()} ends the graph but is not its last layer")
        resize = (last.attrs[0], float(last.attrs[1]))
        out = last.inputs[0]
        graph.nodes.pop()  # the last node written, so every other id stays valid
    kinds = _kinds(graph)
    if kinds["shuffle"]:
        family, builder, arch = "Compact", _compact, "Compact"
    elif kinds["sum"] and kinds["concat"]:
        family, builder, arch = "ESRGAN", _esrgan, "ESRGAN"
    else:
        raise ModelError(f"{model.param_path}: the graph ({dict(kinds)}) is neither an ESRGAN nor a Compact "
                         f"network, the ncnn architectures tessera converts")
    try:
        template, tmpl_out, description = builder(graph)
        mapping = match(graph, out, template, tmpl_out, family)
    except ModelError as error:
        raise ModelError(f"{model.param_path}: not a {family} graph: {error}") from None
    state: dict[str, np.ndarray] = {}
    for t, o in mapping.items():
        key, node = template.nodes[t].key, graph.nodes[o]
        if key is None:
            continue
        weights = model.weights[node.layer.name]
        if node.kind == "conv":
            out_ch, k, _ = node.attrs
            state[f"{key}.weight"] = weights.weight.reshape(out_ch, node.in_channels, k, k)
            bias = weights.bias if weights.bias is not None else np.zeros(out_ch, np.float32)
            state[f"{key}.bias"] = bias
        else:
            slope = weights.slope
            state[f"{key}.weight"] = np.broadcast_to(slope, (node.channels,)).copy() if slope.size == 1 else slope
    network_scale = _scale_of(graph, family)
    if resize is not None:
        description += f", then a {resize[0]} resize by {resize[1]:g}"
    return Conversion(state, arch, network_scale, resize, description)


def _scale_of(graph: Graph, family: str) -> int:
    if family == "Compact":
        return next(n.attrs[0] for n in graph.nodes if n.kind == "shuffle")
    return 2 ** sum(1 for n in graph.nodes if n.kind == "resize")
