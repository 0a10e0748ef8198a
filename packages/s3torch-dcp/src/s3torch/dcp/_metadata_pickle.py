"""Reading ``.metadata`` without running code: an unpickler of exactly what a DCP Metadata holds.

torch's ``FileSystemReader`` unpickles ``.metadata`` with plain ``pickle``:
a hostile file runs any code on load. :func:`load_metadata` resolves only
the globals a ``Metadata`` pickle refers to, taken from the installed torch
itself (not a list copied by hand):

* the dataclasses and enums that ``torch.distributed.checkpoint.metadata``
  defines (``Metadata``, ``TensorStorageMetadata``, ``ChunkStorageMetadata``,
  ``TensorProperties``, ``StorageMeta``, ``MetadataIndex``, the memory-format
  encoding...) and those of ``torch.distributed.checkpoint.filesystem``
  (``_StorageInfo``, the per-item record of ``storage_data``);
* ``torch.Size``, and the dtypes, layouts and memory formats torch defines
  (values, not functions), with ``torch.serialization._get_layout``, the
  lookup by name that torch pickles a layout as;
* ``pathlib``'s path classes (a ``StorageMeta.checkpoint_id`` may be a path)
  and ``collections.OrderedDict``.

Each of these, called by a pickle, only builds a value. Anything else is
refused before it is imported or called.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import functools
import inspect
import io
import pathlib
import pickle
from types import ModuleType
from typing import Any

import torch
from torch.distributed.checkpoint import filesystem as _torch_fs
from torch.distributed.checkpoint import metadata as _torch_metadata
from torch.distributed.checkpoint.metadata import Metadata

__all__ = ["RefusedGlobal", "allowed_globals", "load_metadata"]


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle referred to a global outside the allow-list (nothing was imported or called)."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.module = module
        self.name = name


@functools.cache
def allowed_globals() -> dict[tuple[str, str], Any]:
    """``{(module, name): object}`` of every global a DCP ``Metadata`` pickle may refer to."""
    allowed: dict[tuple[str, str], Any] = {}
    for module in (_torch_metadata, _torch_fs):
        allowed.update(_dataclasses_and_enums(module))
    for name, value in vars(torch).items():
        if isinstance(value, (torch.dtype, torch.layout, torch.memory_format)):
            allowed[("torch", name)] = value
    allowed[("torch", "Size")] = torch.Size
    get_layout = getattr(torch.serialization, "_get_layout", None)
    if callable(get_layout):
        allowed[("torch.serialization", "_get_layout")] = get_layout
    for path_class in (
        pathlib.PurePosixPath,
        pathlib.PureWindowsPath,
        pathlib.PosixPath,
        pathlib.WindowsPath,
    ):
        for module_name in {"pathlib", path_class.__module__}:
            allowed[(module_name, path_class.__name__)] = path_class
    allowed[("collections", "OrderedDict")] = collections.OrderedDict
    return allowed


def _dataclasses_and_enums(module: ModuleType) -> dict[tuple[str, str], Any]:
    return {
        (module.__name__, name): value
        for name, value in vars(module).items()
        if inspect.isclass(value)
        and value.__module__ == module.__name__
        and (dataclasses.is_dataclass(value) or issubclass(value, enum.Enum))
    }


class _MetadataUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        found = allowed_globals().get((module, name))
        if found is None:
            raise RefusedGlobal(module, name)
        return found

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError(f"a persistent id ({pid!r}) has no place in DCP metadata")


def load_metadata(data: bytes, uri: str) -> Metadata:
    """The ``Metadata`` pickled in ``data`` (the object at ``uri``), never running its code.

    Raises:
        ValueError: ``data`` refers to a global no DCP ``Metadata`` holds (the
            message names it and ``uri``; it was neither imported nor called),
            is truncated or corrupt, or holds something other than a ``Metadata``.
    """
    try:
        metadata = _MetadataUnpickler(io.BytesIO(data)).load()
    except RefusedGlobal as error:
        raise ValueError(
            f"{uri} is not trusted DCP metadata: it refers to {error.module}.{error.name}, "
            "which no DCP Metadata holds; refused without importing or calling it "
            "(unpickling it could run code)"
        ) from error
    except Exception as error:
        raise ValueError(
            f"{uri} is not a readable DCP metadata file ({len(data)} bytes; truncated or "
            f"corrupt): {type(error).__name__}: {error}"
        ) from error
    if not isinstance(metadata, Metadata):
        raise ValueError(
            f"{uri} is not DCP metadata: it holds a {type(metadata).__name__}, not a Metadata"
        )
    return metadata
