"""A pickle reader that rebuilds weights and plain data and nothing else.

A pickle names the functions it wants called while it loads (``os.system`` is the classic example), and torch
checkpoints are pickles. :class:`RestrictedUnpickler` resolves every name a pickle asks for through one table of
callables written here or known to build only data (containers, numbers, strings, numpy arrays of bounded size),
and turns classes of metadata-only packages (omegaconf, Lightning, argparse, typing, pathlib) and TorchScript's
``__torch__`` module classes into inert stand-ins that record their arguments and run nothing. Any other name is
refused. Protocols 0-2 (``torch.save`` writes protocol 2) may spell names the Python 2 way (``__builtin__.long``,
``copy_reg``): those are looked up under the Python 3 names Python's own unpickler would use. It is built on
Python's own pure-Python unpickler so that no opcode can make it allocate beyond what the pickle holds (the C
unpickler grows its memo table to any index a pickle names).

Tensors never come from torch's own rebuild functions: the archive reader (:mod:`tessera.models.torchfile`) hands
out :class:`StorageRef` objects for the storages a pickle references, and :func:`rebuild_tensor` checks that every
view lies inside its storage before making it, because ``Tensor.set_`` silently grows a storage that is too small.
"""
from __future__ import annotations

import _compat_pickle
import collections
import copyreg
import io
import math
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..errors import ModelError


class UnsafeWeightsError(ModelError):
    """A weight file that asks for code, or for more memory than it holds."""


@dataclass(frozen=True)
class StorageRef:
    """A storage of a torch archive: its raw bytes (a 1-D uint8 tensor) and the element type it was saved with."""

    data: torch.Tensor
    dtype: torch.dtype

    @property
    def nbytes(self) -> int:
        return self.data.numel()


class StorageType:
    """Stands for ``torch.FloatStorage`` and its siblings in a pickle: only the element type is used."""

    def __init__(self, name: str, dtype: torch.dtype) -> None:
        self.name, self.dtype = name, dtype

    def __repr__(self) -> str:
        return f"torch.{self.name}"


STORAGE_TYPES: dict[str, StorageType] = {name: StorageType(name, dtype) for name, dtype in {
    "DoubleStorage": torch.float64, "FloatStorage": torch.float32, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
    "ComplexFloatStorage": torch.complex64, "ComplexDoubleStorage": torch.complex128,
    "UntypedStorage": torch.uint8,
}.items()}


# ---------------------------------------------------------------------------------------------------- tensors
def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, (tuple, list, torch.Size)) or not all(_is_int(v) for v in value):
        raise UnsafeWeightsError(f"tensor {what} is not a tuple of integers: {value!r:.80}")
    return tuple(value)


def element_size(dtype: torch.dtype) -> int:
    """Bytes per element of ``dtype``."""
    return torch.empty((), dtype=dtype).element_size()


def rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any, dtype: torch.dtype | None = None
                   ) -> torch.Tensor:
    """A tensor viewing ``storage``, refused unless every element it can address lies inside the storage."""
    if not isinstance(storage, StorageRef):
        raise UnsafeWeightsError(f"a tensor is built on {type(storage).__name__}, not on a storage of the archive")
    dtype = dtype or storage.dtype
    size, stride = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if not _is_int(offset) or offset < 0 or len(size) != len(stride) or min((*size, *stride), default=0) < 0:
        raise UnsafeWeightsError(f"tensor view out of range (offset {offset!r}, size {size}, stride {stride})")
    itemsize = element_size(dtype)
    elements = storage.nbytes // itemsize
    numel = math.prod(size)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride)) if numel else offset - 1
    if last >= elements or numel > elements:
        raise UnsafeWeightsError(f"a tensor of size {list(size)} does not fit its storage of {elements} elements")
    view = storage.data[: elements * itemsize].view(dtype)
    return view.as_strided(size, stride, offset)


def _rebuild_tensor_v3(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                       hooks: Any = None, dtype: Any = None, *_: Any) -> torch.Tensor:
    if dtype is not None and not isinstance(dtype, torch.dtype):
        raise UnsafeWeightsError(f"tensor dtype {dtype!r:.80} is not a torch dtype")
    return rebuild_tensor(storage, offset, size, stride, dtype=dtype)


def _rebuild_parameter(data: Any, *_: Any) -> torch.Tensor:
    """A parameter is kept as the plain tensor it wraps: loading copies it into the network anyway."""
    if not isinstance(data, torch.Tensor):
        raise UnsafeWeightsError(f"a parameter wraps {type(data).__name__}, not a tensor")
    return data


def _rebuild_from_type(function: Any, _type: Any, args: Any, _state: Any = None) -> torch.Tensor:
    if function not in (rebuild_tensor, _rebuild_tensor_v3, _rebuild_parameter) or not isinstance(args, tuple):
        raise UnsafeWeightsError("a tensor subclass asks for a function that is not a tensor builder")
    return function(*args)


def _tensor_from_numpy(data: Any, dtype: Any, _device: Any = None, _requires_grad: Any = False) -> torch.Tensor:
    if not isinstance(data, np.ndarray) or not _simple_dtype(data.dtype) or not isinstance(dtype, torch.dtype):
        raise UnsafeWeightsError("a tensor saved as a numpy array holds no numbers")
    return torch.from_numpy(np.array(data)).to(dtype)


class TensorType:
    """Stands for ``torch.Tensor`` / ``torch.nn.Parameter`` when a pickle passes them as a type argument."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, data: Any = None, *_: Any) -> torch.Tensor:  # Parameter(tensor, requires_grad)
        return _rebuild_parameter(data)


# ---------------------------------------------------------------------------------------------------- plain data
def _without_length(kind: type) -> Callable[..., Any]:
    """``bytes`` or ``bytearray`` that refuse a length (``bytes(10**12)`` would allocate it)."""
    def build(value: Any = b"", *args: Any) -> Any:
        if _is_int(value):
            raise UnsafeWeightsError("a pickle asks for a block of zero bytes")
        return kind(value, *args)

    return build


def _encode(text: Any, encoding: str = "utf-8") -> bytes:
    """``_codecs.encode`` as protocol 2 uses it for bytes: a str in latin-1."""
    if not isinstance(text, str) or str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1", "utf-8"):
        raise UnsafeWeightsError(f"a pickle asks to encode {type(text).__name__} as {encoding!r:.40}")
    return text.encode(encoding)


_FACTORIES = (None, list, dict, set, int, float, str, tuple, collections.OrderedDict)


def _defaultdict(factory: Any = None, *args: Any) -> collections.defaultdict:
    if factory not in _FACTORIES:
        raise UnsafeWeightsError(f"a defaultdict asks for the factory {factory!r:.80}")
    return collections.defaultdict(factory, *args)


class NumpyArrayType:
    """Stands for ``numpy.ndarray`` as the type argument of numpy's reconstruct call."""


def _simple_dtype(dtype: Any) -> bool:
    """A dtype of plain numbers: no Python objects, no fields (numpy crashes on some crafted object states)."""
    return isinstance(dtype, np.dtype) and not dtype.hasobject and dtype.fields is None and dtype.subdtype is None


def _numpy_dtype(code: Any, *_: Any) -> np.dtype:
    """``numpy.dtype`` for the type codes numpy pickles (``'f8'``, ``'<i4'``...), nothing structured."""
    dtype = np.dtype(code) if isinstance(code, str) and len(code) <= 8 else None
    if not _simple_dtype(dtype):
        raise UnsafeWeightsError(f"numpy dtype {code!r:.40} is not a plain number type")
    return dtype


def _numpy_reconstruct(array_type: Any, shape: Any, dtype_code: Any) -> np.ndarray:
    """numpy's pickle starts from an empty array that BUILD then fills from the pickle's own bytes."""
    if not isinstance(array_type, NumpyArrayType) or tuple(shape) != (0,):
        raise UnsafeWeightsError("a numpy array is rebuilt with an unexpected type or shape")
    return np.empty(0, dtype=np.uint8)


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    if not _simple_dtype(dtype) or not isinstance(data, bytes) or len(data) != dtype.itemsize:
        raise UnsafeWeightsError("a numpy scalar holds no number")
    return np.frombuffer(data, dtype=dtype, count=1)[0]


def _checked_numpy_state(target: Any, state: Any) -> None:
    """Refuse the BUILD states numpy does not check itself: object arrays, fields, sizes that do not match."""
    if isinstance(target, np.dtype):
        simple = (isinstance(state, tuple) and len(state) == 8 and state[1] in ("<", ">", "|", "=")
                  and state[2:5] == (None, None, None))
        if not simple:
            raise UnsafeWeightsError("a numpy dtype state describes a structured or object type")
        return
    ok = isinstance(state, tuple) and len(state) == 5
    if ok:
        _, shape, dtype, _, raw = state
        ok = (_simple_dtype(dtype) and isinstance(raw, bytes) and isinstance(shape, tuple)
              and all(_is_int(n) and n >= 0 for n in shape) and math.prod(shape) * dtype.itemsize == len(raw))
    if not ok:
        raise UnsafeWeightsError("a numpy array state does not describe its own bytes")


def _identity(value: Any, *_: Any) -> Any:
    """TorchScript's list builders and type tags: the value itself is the data."""
    return value


# ---------------------------------------------------------------------------------------------------- stand-ins
class InertObject:
    """Stands in for an instance of a class the restricted unpickler will not import.

    Whatever the pickle does with it (construct, set state, add items) is recorded and nothing else happens;
    ``inert_global`` says which class it replaced.
    """

    inert_global = "?"

    def __new__(cls, *args: Any, **kwargs: Any):  # accepts whatever NEWOBJ passes
        return object.__new__(cls)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.__dict__["inert_args"] = args
        self.__dict__["inert_kwargs"] = kwargs

    def __setstate__(self, state: Any) -> None:
        self.__dict__["inert_state"] = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.__dict__.setdefault("inert_items", {})[key] = value

    def append(self, value: Any) -> None:
        self.__dict__.setdefault("inert_list", []).append(value)

    def extend(self, values: Any) -> None:
        self.__dict__.setdefault("inert_list", []).extend(values)

    def __repr__(self) -> str:
        return f"<inert stand-in for {self.inert_global}>"


# Packages whose pickled objects are metadata (configurations, callbacks, argument namespaces) or, for
# ``__torch__``, TorchScript module objects whose attributes hold the weights: replaced by inert stand-ins.
_INERT_PACKAGES: frozenset[str] = frozenset({
    "omegaconf", "pytorch_lightning", "lightning", "lightning_fabric", "lightning_utilities",
    "argparse", "typing", "pathlib", "__torch__",
})

_NUMPY_ARRAY = NumpyArrayType()

# Every global a weight file may name, and what it gets instead.
_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("collections", "defaultdict"): _defaultdict,
    **{("builtins", kind.__name__): kind for kind in (set, frozenset, dict, list, tuple, int, float, complex, str,
                                                     bool, slice, object)},
    ("builtins", "bytes"): _without_length(bytes),
    ("builtins", "bytearray"): _without_length(bytearray),
    ("_codecs", "encode"): _encode,
    ("copyreg", "_reconstructor"): copyreg._reconstructor,  # only ever meets the classes of this table
    ("torch._utils", "_rebuild_tensor"): rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._utils", "_rebuild_device_tensor_from_numpy"): _tensor_from_numpy,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type,
    ("torch.nn.parameter", "Parameter"): TensorType("Parameter"),
    ("torch", "Tensor"): TensorType("Tensor"),
    ("torch", "Size"): torch.Size,
    ("torch", "device"): torch.device,
    **{("torch", name): kind for name, kind in STORAGE_TYPES.items()},
    ("torch.storage", "UntypedStorage"): STORAGE_TYPES["UntypedStorage"],
    ("numpy", "ndarray"): _NUMPY_ARRAY,
    ("numpy", "dtype"): _numpy_dtype,
    ("numpy.core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _numpy_reconstruct,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    **{("torch.jit._pickle", name): _identity for name in (
        "build_intlist", "build_doublelist", "build_boollist", "build_tensorlist", "restore_type_tag")},
}

_NAME_ALIASES = {("typing", "OrderedDict"): ("collections", "OrderedDict")}


def _python3_spelling(module: str, name: str) -> tuple[str, str]:
    """The Python 3 name of a global as a protocol 0-2 pickle spells it for Python 2 (``__builtin__.long`` is
    ``builtins.int``, ``copy_reg`` is ``copyreg``): Python's own ``_compat_pickle`` tables, the ones its unpickler
    applies to such pickles. Only the lookup changes: what the new name is, is still decided by ``_GLOBALS``."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def _is_plain_constant(name: str) -> bool:
    """Whether ``torch.<name>`` is a dtype, layout or memory format, safe to hand out."""
    value = getattr(torch, name, None) if not name.startswith("_") else None
    return isinstance(value, (torch.dtype, torch.layout, torch.memory_format))


class RestrictedUnpickler(pickle._Unpickler):  # the pure-Python unpickler: see the module docstring
    """An unpickler that rebuilds weights and plain data, stubs metadata classes, and refuses everything else.

    ``storages`` resolves the archive's persistent ids (``('storage', type, key, location, numel, ...)``) to
    :class:`StorageRef`; without it a pickle that references storages is refused.
    """

    def __init__(self, file: io.BufferedIOBase, storages: Callable[[tuple], StorageRef] | None = None) -> None:
        super().__init__(file, encoding="utf-8")
        self._storages = storages
        self._stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        asked = (module, name)
        module, name = _NAME_ALIASES.get(asked, asked)
        if self.proto < 3:  # protocols 0-2 may use Python 2 names (torch.save writes protocol 2)
            module, name = _python3_spelling(module, name)
        if (module, name) in _GLOBALS:
            return _GLOBALS[(module, name)]
        if module == "torch" and _is_plain_constant(name):
            return getattr(torch, name)
        if module == "numpy.dtypes" and name.endswith("DType") and name.isidentifier():
            return getattr(np.dtypes, name, None) or self._refuse(*asked)
        if module.split(".")[0] in _INERT_PACKAGES:
            return self._stand_in(module, name)
        return self._refuse(*asked)

    @staticmethod
    def _refuse(module: str, name: str) -> Any:
        raise UnsafeWeightsError(f"global '{module}.{name}' is not allowed in a weight file")

    def _stand_in(self, module: str, name: str) -> type:
        key = (module, name)
        if key not in self._stand_ins:
            self._stand_ins[key] = type(name, (InertObject,), {"__module__": module,
                                                               "inert_global": f"{module}.{name}"})
        return self._stand_ins[key]

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None or not isinstance(pid, tuple) or not pid or pid[0] != "storage":
            raise UnsafeWeightsError(f"unsupported persistent id {pid!r:.80}")
        return self._storages(pid)

    def load_build(self) -> None:
        """BUILD sets an object's state: allowed on stand-ins, plain containers and checked numpy arrays only.

        (A tensor's ``__setstate__`` would call ``set_``, which resizes storages to whatever it is given.)
        """
        target, state = self.stack[-2:]
        if isinstance(target, (np.ndarray, np.dtype)):
            _checked_numpy_state(target, state)
        elif not isinstance(target, (InertObject, dict)):
            raise UnsafeWeightsError(f"a pickle sets the state of a {type(target).__name__}")
        super().load_build()

    dispatch = dict(pickle._Unpickler.dispatch)
    dispatch[pickle.BUILD[0]] = load_build


def restricted_load(file: io.BufferedIOBase, storages: Callable[[tuple], StorageRef] | None = None) -> Any:
    """Read one pickle from ``file`` through :class:`RestrictedUnpickler`.

    Raises UnsafeWeightsError for a refused global or an impossible tensor, ``pickle.UnpicklingError``,
    ``EOFError`` or ``ValueError`` for a broken stream.
    """
    return RestrictedUnpickler(file, storages).load()
