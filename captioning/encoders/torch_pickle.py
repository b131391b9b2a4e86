"""Read a legacy (pre-zip) PyTorch checkpoint without importing torch.

PyTorch's legacy format is a stream of pickles followed by raw storage bytes:

    magic number, protocol version, sys_info, state dict, storage keys,
    then for each storage key: int64 element count + raw little-endian data.

The state dict pickle refers to tensors through ``persistent_load`` and rebuilds
them with ``torch._utils._rebuild_tensor_v2``.  The restricted unpickler below
resolves exactly those globals (plus ``collections.OrderedDict``) and refuses
everything else, so a hostile file cannot run code.
"""

from __future__ import annotations

import collections
import pickle
from pathlib import Path

import numpy as np

LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C

# Storage class name -> numpy dtype of its raw data.
_STORAGE_TYPES: dict[str, str] = {
    "FloatStorage": "float32",
    "DoubleStorage": "float64",
    "HalfStorage": "float16",
    "IntStorage": "int32",
    # torch stores int64 data whatever sys_info says: this file's sys_info reports
    # 4-byte longs (it was written on Windows) but its LongStorage data is 8 bytes.
    "LongStorage": "int64",
    "ShortStorage": "int16",
    "CharStorage": "int8",
    "ByteStorage": "uint8",
    "BoolStorage": "bool",
}


class CheckpointError(ValueError):
    """The file is not a legacy PyTorch checkpoint we can read safely."""


class _StorageType:
    def __init__(self, name: str):
        self.name = name


class _TensorRef:
    """A tensor still waiting for its storage bytes."""

    def __init__(self, storage_key, storage_offset, size, stride):
        self.storage_key = storage_key
        self.storage_offset = storage_offset
        self.size = tuple(size)
        self.stride = tuple(stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, *_unused):
    return _TensorRef(storage, storage_offset, size, stride)


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_TYPES:
            return _StorageType(name)
        raise CheckpointError(f"refusing to load global {module}.{name} from checkpoint")

    def __init__(self, file, storages: dict):
        super().__init__(file)
        self._storages = storages

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and pid and pid[0] == "storage"):
            raise CheckpointError(f"unexpected persistent id {pid!r}")
        _, storage_type, key, _location, numel, view_metadata = pid
        if view_metadata is not None:
            raise CheckpointError("storage views are not supported")
        self._storages[key] = (storage_type.name, numel)
        return key


def load_legacy_state_dict(path: str | Path) -> dict[str, np.ndarray]:
    """Return ``{name: numpy array}`` for every tensor in a legacy checkpoint."""
    path = Path(path)
    storages: dict[str, tuple[str, int]] = {}
    with open(path, "rb") as f:
        def next_pickle():
            return _RestrictedUnpickler(f, storages).load()

        try:
            if next_pickle() != LEGACY_MAGIC_NUMBER:
                raise CheckpointError(f"{path}: not a legacy PyTorch checkpoint (bad magic number)")
            next_pickle()  # protocol version
            sys_info = next_pickle()
            if not sys_info.get("little_endian", True):
                raise CheckpointError(f"{path}: big-endian checkpoints are not supported")
            state = next_pickle()
            storage_keys = next_pickle()
        except (pickle.UnpicklingError, EOFError) as exc:
            raise CheckpointError(f"{path}: unreadable checkpoint ({exc})") from exc

        arrays: dict[str, np.ndarray] = {}
        for key in storage_keys:
            type_name, numel = storages[key]
            dtype = np.dtype(_STORAGE_TYPES[type_name]).newbyteorder("<")
            count = int(np.frombuffer(f.read(8), dtype="<i8")[0])
            if count != numel:
                raise CheckpointError(f"{path}: storage {key} holds {count} elements, expected {numel}")
            data = f.read(count * dtype.itemsize)
            if len(data) != count * dtype.itemsize:
                raise CheckpointError(f"{path}: truncated storage data for {key}")
            arrays[key] = np.frombuffer(data, dtype=dtype)

    tensors = {}
    for name, ref in state.items():
        flat = arrays[ref.storage_key]
        item = flat.itemsize
        view = np.lib.stride_tricks.as_strided(
            flat[ref.storage_offset:],
            shape=ref.size,
            strides=tuple(s * item for s in ref.stride),
        )
        tensors[name] = np.array(view)  # own, contiguous copy
    return tensors
