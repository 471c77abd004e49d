"""Safe reading of pickled checkpoints (.pth, .ckpt, .bin): weights come out, code never runs.

A pickle can name any importable function and have it called while loading (``os.system`` is the classic
example). :func:`load_pickled_checkpoint` first tries ``torch.load(weights_only=True)``, torch's own allow-list.
Training checkpoints such as LaMa's PyTorch Lightning ``best.ckpt`` also pickle their hyper-parameters as OmegaConf
objects and Lightning callbacks, which that allow-list refuses. For those, a second pass uses
:class:`RestrictedUnpickler`: it resolves only the globals needed to rebuild tensors, numpy arrays and plain
containers, and replaces classes of known metadata-only packages (omegaconf, Lightning, argparse, typing, pathlib)
by inert stand-ins that record their arguments and run nothing. Any other global is refused.
"""
from __future__ import annotations

import os
import pickle
from types import SimpleNamespace
from typing import Any

import torch

# Globals that rebuild data and nothing else. Callables here only ever receive objects that came through this
# same find_class, so they cannot be steered into running foreign code.
_SAFE_GLOBALS: frozenset[tuple[str, str]] = frozenset({
    ("collections", "OrderedDict"),
    ("collections", "defaultdict"),
    ("builtins", "set"),
    ("builtins", "frozenset"),
    ("builtins", "dict"),
    ("builtins", "list"),
    ("builtins", "tuple"),
    ("builtins", "int"),
    ("builtins", "float"),
    ("builtins", "complex"),
    ("builtins", "str"),
    ("builtins", "bytes"),
    ("builtins", "bytearray"),
    ("builtins", "bool"),
    ("builtins", "slice"),
    ("builtins", "object"),
    ("_codecs", "encode"),
    ("copyreg", "_reconstructor"),
    ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"),
    ("torch._utils", "_rebuild_meta_tensor_no_storage"),
    ("torch._tensor", "_rebuild_from_type_v2"),
    ("torch.nn.parameter", "Parameter"),
    ("torch", "Tensor"),
    ("torch", "Size"),
    ("torch", "device"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
})

# Packages whose pickled objects are metadata (configurations, callbacks, argument namespaces): their classes are
# replaced by inert stand-ins instead of being imported.
_INERT_PACKAGES: frozenset[str] = frozenset({
    "omegaconf", "pytorch_lightning", "lightning", "lightning_fabric", "lightning_utilities",
    "argparse", "typing", "pathlib",
})

# Renamed or aliased globals, resolved to the real thing.
_ALIASES: dict[tuple[str, str], tuple[str, str]] = {
    ("typing", "OrderedDict"): ("collections", "OrderedDict"),
    ("__builtin__", "set"): ("builtins", "set"),
}


class InertObject:
    """Stands in for an instance of a class the restricted unpickler will not import.

    Whatever the pickle tries to do with it (construct, set state, add items) is recorded and nothing else happens;
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


def _is_torch_constant(name: str) -> bool:
    """Whether ``torch.<name>`` is a plain constant (a dtype, layout or memory format), safe to hand out."""
    value = getattr(torch, name, None)
    return isinstance(value, (torch.dtype, torch.layout, torch.memory_format))


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds tensors and containers, stubs metadata classes, and refuses everything else."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> Any:
        module, name = _ALIASES.get((module, name), (module, name))
        if (module, name) in _SAFE_GLOBALS:
            return super().find_class(module, name)
        if module == "torch" and _is_torch_constant(name):
            return getattr(torch, name)
        if module == "numpy.dtypes" and name.endswith("DType"):
            return super().find_class(module, name)
        if module.split(".")[0] in _INERT_PACKAGES:
            return self._stand_in(module, name)
        raise pickle.UnpicklingError(f"global '{module}.{name}' is not allowed in a weight file")

    def _stand_in(self, module: str, name: str) -> type:
        key = (module, name)
        if key not in self._stand_ins:
            self._stand_ins[key] = type(name, (InertObject,), {"__module__": module,
                                                               "inert_global": f"{module}.{name}"})
        return self._stand_ins[key]


# What ``torch.load(pickle_module=...)`` expects: a module-like object with ``Unpickler`` and ``load``.
RESTRICTED_PICKLE = SimpleNamespace(
    __name__="pickle",
    Unpickler=RestrictedUnpickler,
    load=lambda file, **kwargs: RestrictedUnpickler(file, **kwargs).load(),
    UnpicklingError=pickle.UnpicklingError,
)


def load_pickled_checkpoint(path: str | os.PathLike[str]) -> Any:
    """Read a pickled torch file onto the CPU without running code from it.

    Tries torch's ``weights_only`` loader, then the restricted unpickler (for Lightning-style checkpoints holding
    OmegaConf or callback objects). Raises ``pickle.UnpicklingError`` (refused global, not a pickle),
    ``RuntimeError`` (corrupt archive) or ``OSError`` as the reader met them; the loader turns these into
    ModelError.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        pass
    return torch.load(path, map_location="cpu", pickle_module=RESTRICTED_PICKLE, weights_only=False)
