"""The architectures tessera detects in a state dict: a private spandrel registry built per load.

It holds, in order of precedence, the architectures registered with :func:`register_architecture`, tessera's own
(GPEN), spandrel's, and spandrel_extra_arches' where that package is installed. spandrel's global
``MAIN_REGISTRY`` is never modified, so registering an architecture here changes nothing for other users of
spandrel in the same process.
"""
from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

from spandrel import MAIN_REGISTRY, ArchId, Architecture, ArchRegistry, ArchSupport

_OWN_ARCHITECTURES: list[ArchSupport] = []


def register_architecture(arch: Architecture[Any] | ArchSupport, *, before: Sequence[str] = ()) -> None:
    """Make ``load_model`` detect one more architecture (detected before spandrel's own).

    ``arch`` is a spandrel ``Architecture`` (detected by its ``detect`` method) or an ``ArchSupport``. Registering
    an id again replaces the earlier registration. GPEN (``tessera.models.gpen.GPENArch``) is included by default
    and needs no registration.
    """
    if isinstance(arch, ArchSupport):
        support = arch
    else:
        support = ArchSupport.from_architecture(arch, tuple(ArchId(b) for b in before))
    kept = [s for s in _OWN_ARCHITECTURES if s.architecture.id != support.architecture.id]
    _OWN_ARCHITECTURES[:] = [*kept, support]


def _default_architectures() -> list[ArchSupport]:
    """tessera's built-in architectures; a module that is not there (yet) is skipped."""
    try:
        from .gpen import GPENArch
    except ImportError:
        return []
    return [ArchSupport.from_architecture(GPENArch())]


def _extra_architectures() -> list[ArchSupport]:
    """spandrel_extra_arches' architectures (CodeFormer, MAT, ...) when the package is installed."""
    try:
        with warnings.catch_warnings():  # it scripts modules at import, which newer torch flags as deprecated
            warnings.simplefilter("ignore", FutureWarning)
            from spandrel_extra_arches import EXTRA_REGISTRY
    except ImportError:
        return []
    return list(EXTRA_REGISTRY)


def build_registry() -> ArchRegistry:
    """A fresh private registry: registered and built-in tessera architectures, spandrel's, spandrel_extra_arches'.

    Built per load (a fraction of a millisecond) so it always reflects :func:`register_architecture`; spandrel's
    global ``MAIN_REGISTRY`` is never modified. On duplicate ids the first one wins, so tessera's come first.
    """
    registry = ArchRegistry()
    registry.add(*_OWN_ARCHITECTURES)
    registry.add(*_default_architectures(), ignore_duplicates=True)
    registry.add(*MAIN_REGISTRY, ignore_duplicates=True)
    registry.add(*_extra_architectures(), ignore_duplicates=True)
    return registry
