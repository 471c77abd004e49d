"""Write small ncnn models (.param + .bin) for tests, in the layout Real-ESRGAN's ncnn release uses.

Only for tests: a random-weight Compact network is exported with each of ncnn's weight storages (fp32 with
either tag, fp16, int8 with scales, a 256-entry table), so the reader is checked on storages the bundled models
do not use, and crafted graphs are easy to derive from the lines this writes.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

TAGS = {"fp32": 0, "fp32-tagged": 0x0002C056, "fp16": 0x01306B47, "int8": 0x000D4B38, "table": 0x00000001}


def _pad4(data: bytes) -> bytes:
    return data + b"\0" * (-len(data) % 4)


def encode_weights(weight: np.ndarray, storage: str) -> tuple[bytes, np.ndarray, np.ndarray | None]:
    """The bytes of one conv weight array (with its tag), the weights ncnn will read back, and int8 scales."""
    flat = weight.astype(np.float32).reshape(-1)
    tag = TAGS[storage].to_bytes(4, "little")
    if storage.startswith("fp32"):
        return tag + flat.astype("<f4").tobytes(), flat, None
    if storage == "fp16":
        half = flat.astype("<f2")
        return tag + _pad4(half.tobytes()), half.astype(np.float32), None
    if storage == "int8":
        out = weight.shape[0]
        rows = flat.reshape(out, -1)
        scales = (127.0 / np.maximum(np.abs(rows).max(axis=1), 1e-6)).astype(np.float32)
        q = np.clip(np.round(rows * scales[:, None]), -127, 127).astype(np.int8)
        return tag + _pad4(q.tobytes()), (q.astype(np.float32) / scales[:, None]).reshape(-1), scales
    table = np.linspace(flat.min(), flat.max(), 256).astype(np.float32)
    indices = np.abs(flat[:, None] - table[None, :]).argmin(axis=1).astype(np.uint8)
    return tag + table.astype("<f4").tobytes() + _pad4(indices.tobytes()), table[indices], None


def write_compact(folder: Path, state: dict[str, np.ndarray], *, num_conv: int, scale: int, storage: str = "fp16",
                  resize: float | None = None, name: str = "compact") -> tuple[Path, dict[str, np.ndarray]]:
    """Export a Compact state dict (spandrel's ``body.N`` keys) as NAME.param/.bin; returns the .param and the
    state dict as ncnn holds it (after the storage's rounding)."""
    lines: list[str] = []
    blobs = 0
    data = bytearray()
    stored: dict[str, np.ndarray] = {}

    def layer(kind: str, lname: str, inputs: list[str], outputs: list[str], params: str = "") -> None:
        nonlocal blobs
        blobs += len(outputs)
        lines.append(f"{kind:<24} {lname:<24} {len(inputs)} {len(outputs)} {' '.join(inputs + outputs)} {params}")

    def conv(index: int, source: str) -> str:
        weight, bias = state[f"body.{index}.weight"], state[f"body.{index}.bias"]
        out, k = weight.shape[0], weight.shape[-1]
        payload, read_back, scales = encode_weights(weight, storage)
        data.extend(payload)
        data.extend(bias.astype("<f4").tobytes())
        extra = ""
        if scales is not None:
            data.extend(scales.astype("<f4").tobytes())
            data.extend(np.float32(1.0).tobytes())
            extra = " 8=1"
        stored[f"body.{index}.weight"] = read_back.reshape(weight.shape)
        stored[f"body.{index}.bias"] = bias
        layer("Convolution", f"conv{index}", [source], [f"c{index}"],
              f"0={out} 1={k} 4={k // 2} 5=1 6={weight.size}{extra}")
        return f"c{index}"

    def prelu(index: int, source: str) -> str:
        slope = state[f"body.{index}.weight"]
        data.extend(slope.astype("<f4").tobytes())
        stored[f"body.{index}.weight"] = slope
        layer("PReLU", f"prelu{index}", [source], [f"p{index}"], f"0={slope.size}")
        return f"p{index}"

    layer("Input", "input", [], ["data"])
    layer("Split", "split", ["data"], ["data_0", "data_1"])
    body = prelu(1, conv(0, "data_1"))
    for i in range(num_conv):
        body = prelu(3 + 2 * i, conv(2 + 2 * i, body))
    body = conv(2 * num_conv + 2, body)
    layer("PixelShuffle", "shuffle", [body], ["shuffled"], f"0={scale}")
    layer("Interp", "base", ["data_0"], ["based"], f"0=1 1={float(scale):e} 2={float(scale):e}")
    layer("BinaryOp", "add", ["shuffled", "based"], ["sum" if resize else "output"], "0=0")
    if resize:
        layer("Interp", "resize", ["sum"], ["output"], f"0=3 1={resize:e} 2={resize:e}")
    param = folder / f"{name}.param"
    param.write_text(f"7767517\n{len(lines)} {blobs}\n" + "\n".join(lines) + "\n")
    (folder / f"{name}.bin").write_bytes(bytes(data))
    return param, stored
