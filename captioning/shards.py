"""A sharded feature store: image features in float16 ``.npy`` shards plus a JSON index,
written a shard at a time and read a few rows at a time, so neither extraction nor
training holds the whole corpus in memory.

Folder layout::

    index.json          {"format", "encoder", "feature_dim", "dtype": "float16",
                         "shards": [{"file", "rows", "sha256", "names"}, ...]}
    shard-00000.npy     float16 (rows, feature_dim), row i is the image shards[0]["names"][i]
    shard-00001.npy     ...

Image name -> (shard, row) is the position of the name in its shard's ``names``; the rows of
the whole store are the shards' rows one after another.  Every shard and every version of the
index is written to a temporary file and moved into place (``os.replace``), the shard first:
a run killed at any moment leaves only finished shards in the index, and the next
:class:`ShardWriter` on the folder checks their checksums and extends them.  Reading checks
each shard's header and size against the index (cheap); the checksums are verified when a
writer opens the store.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

INDEX_FILE = "index.json"
FORMAT = 1
DTYPE = np.dtype("<f2")  # stored dtype; rows are handed out as float32
SHARD_PATTERN = "shard-{:05d}.npy"
DEFAULT_SHARD_SIZE = 4096  # rows per shard: 21 MB of 2560-d features, about two minutes of extraction


class ShardError(ValueError):
    """A store that cannot be used as it is: the message names the file."""


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _save_shard(path: Path, rows: np.ndarray) -> str:
    """Write float16 ``rows`` as a .npy file, atomically; returns the file's SHA-256."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.save(f, rows, allow_pickle=False)
    digest = _file_sha256(tmp)
    os.replace(tmp, path)
    return digest


def read_index(folder: str | Path, encoder_name: str | None = None) -> dict | None:
    """The store's index (validated), or None when ``folder`` holds none.  An index of another
    encoder than ``encoder_name`` (when given) is refused with a :class:`ShardError`."""
    path = Path(folder) / INDEX_FILE
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ShardError(f"{path}: not a readable feature index ({exc})") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        raise ShardError(f"{path}: not a feature index of format {FORMAT}")
    if index.get("dtype") != "float16" or not isinstance(index.get("feature_dim"), int) \
            or not isinstance(index.get("shards"), list):
        raise ShardError(f"{path}: needs dtype 'float16', an integer feature_dim and a list of shards")
    for shard in index["shards"]:
        if not (isinstance(shard, dict) and isinstance(shard.get("file"), str) and isinstance(shard.get("rows"), int)
                and isinstance(shard.get("names"), list) and len(shard["names"]) == shard["rows"]
                and Path(shard["file"]).name == shard["file"]):
            raise ShardError(f"{path}: malformed shard entry {str(shard)[:200]}")
    if encoder_name is not None and index.get("encoder") != encoder_name:
        raise ShardError(f"{path} holds {index.get('encoder')} features, not {encoder_name}")
    return index


def _shard_header(path: Path, rows: int, feature_dim: int) -> int:
    """Byte offset of the data in a shard file, after checking its header and size."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f".npy format version {version}")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) \
                else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(f)
            offset = f.tell()
    except (OSError, ValueError) as exc:
        raise ShardError(f"{path}: missing or not a .npy shard ({exc})") from None
    if shape != (rows, feature_dim) or dtype != DTYPE or fortran:
        raise ShardError(f"{path}: holds {dtype} {shape}, the index expects float16 ({rows}, {feature_dim})")
    size = path.stat().st_size
    if size != offset + rows * feature_dim * DTYPE.itemsize:
        raise ShardError(f"{path}: {size} bytes, expected {offset + rows * feature_dim * DTYPE.itemsize} "
                         "(truncated or damaged; delete it and extract again)")
    return offset


class ShardedFeatures:
    """Read-only view of a store as one (n, feature_dim) float32 matrix.

    ``features[rows]`` for an int, a slice or an int array/list reads only those rows from
    their shards (``os.pread``, no mapping kept: the process's memory does not grow with the
    store), so :class:`captioning.data.CaptionBatches` and the evaluation code use it like an
    array.  ``names`` lists the images in row order, ``index`` maps name -> row.
    """

    def __init__(self, folder: str | Path, encoder_name: str | None = None):
        self.folder = Path(folder)
        index = read_index(self.folder, encoder_name)
        if index is None:
            raise ShardError(f"{self.folder / INDEX_FILE}: no feature index here")
        self.encoder: str = index["encoder"]
        self.feature_dim: int = index["feature_dim"]
        self._paths = [self.folder / s["file"] for s in index["shards"]]
        rows = [s["rows"] for s in index["shards"]]
        self._starts = np.concatenate([[0], np.cumsum(rows, dtype=np.int64)])  # (shards + 1,)
        self._offsets = [_shard_header(p, r, self.feature_dim) for p, r in zip(self._paths, rows)]
        self.names: list[str] = [name for s in index["shards"] for name in s["names"]]
        self.index: dict[str, int] = {name: row for row, name in enumerate(self.names)}
        if len(self.index) != len(self.names):
            raise ShardError(f"{self.folder / INDEX_FILE}: an image is listed in two shards")

    @property
    def shape(self) -> tuple[int, int]:
        return int(self._starts[-1]), self.feature_dim

    dtype = np.dtype(np.float32)
    ndim = 2

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __repr__(self) -> str:
        return f"ShardedFeatures({str(self.folder)!r}, {self.encoder}, shape={self.shape}, {len(self._paths)} shards)"

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        """Every row as one float32 matrix (the whole store in memory: what sharding avoids)."""
        return self[:].astype(dtype or np.float32, copy=False)

    def _rows(self, key) -> tuple[np.ndarray, bool]:
        """(int64 rows, whether ``key`` was a single row)."""
        n = len(self)
        if isinstance(key, slice):
            return np.arange(*key.indices(n), dtype=np.int64), False
        rows = np.asarray(key)
        if rows.dtype == bool or not (np.issubdtype(rows.dtype, np.integer) or rows.size == 0):
            raise TypeError(f"ShardedFeatures takes integer rows or a slice, not {rows.dtype} {type(key).__name__}")
        if rows.ndim > 1:
            raise TypeError(f"ShardedFeatures takes a 1-d list of rows, not an array of shape {rows.shape}")
        rows = rows.astype(np.int64).reshape(-1)
        if rows.size and (rows.min() < -n or rows.max() >= n):
            raise IndexError(f"row out of range for {n} rows")
        return np.where(rows < 0, rows + n, rows), np.ndim(key) == 0

    def __getitem__(self, key) -> np.ndarray:
        """float32 (len(rows), feature_dim), or (feature_dim,) for a single int."""
        rows, single = self._rows(key)
        unique, inverse = np.unique(rows, return_inverse=True)  # sorted: contiguous runs read at once
        out = np.empty((len(unique), self.feature_dim), dtype=DTYPE)
        shard_of = np.searchsorted(self._starts, unique, side="right") - 1
        bounds = np.flatnonzero(np.diff(shard_of)) + 1
        for chunk in np.split(np.arange(len(unique)), bounds) if len(unique) else []:
            self._read_shard(int(shard_of[chunk[0]]), unique[chunk], out, chunk[0])
        result = out[inverse.reshape(-1)].astype(np.float32)
        return result[0] if single else result

    def _read_shard(self, shard: int, rows: np.ndarray, out: np.ndarray, at: int) -> None:
        """Copy the sorted global ``rows`` (all in ``shard``) into ``out[at:]``, one read per contiguous run."""
        path, row_bytes = self._paths[shard], self.feature_dim * DTYPE.itemsize
        local = rows - self._starts[shard]
        runs = np.split(np.arange(len(local)), np.flatnonzero(np.diff(local) != 1) + 1)
        with open(path, "rb", buffering=0) as f:
            for run in runs:
                first, count = int(local[run[0]]), len(run)
                data = os.pread(f.fileno(), count * row_bytes, self._offsets[shard] + first * row_bytes)
                if len(data) != count * row_bytes:
                    raise ShardError(f"{path}: truncated while reading (delete it and extract again)")
                out[at + run[0]:at + run[0] + count] = np.frombuffer(data, dtype=DTYPE).reshape(count, -1)


class ShardWriter:
    """Appends features to a store, a shard at a time.

    Opening a folder that already holds a store resumes it: each finished shard is checked
    against its checksum and kept (:attr:`done`), a damaged or missing one is dropped from the
    index (its images are extracted again), and leftovers of a killed run (temporary files,
    shards written but never indexed) are removed.  :meth:`add` buffers rows and writes every
    full shard; :meth:`finish` writes the last, partial one.
    """

    def __init__(self, folder: str | Path, encoder_name: str, feature_dim: int,
                 shard_size: int = DEFAULT_SHARD_SIZE):
        if shard_size < 1:
            raise ValueError(f"shard_size must be at least 1, not {shard_size}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.shard_size = shard_size
        index = read_index(self.folder, encoder_name)
        if index is not None and index["feature_dim"] != feature_dim:
            raise ShardError(f"{self.folder / INDEX_FILE} holds {index['feature_dim']}-d features, "
                             f"not {feature_dim}-d")
        self.index = {"format": FORMAT, "encoder": encoder_name, "feature_dim": feature_dim,
                      "dtype": "float16", "shards": []}
        found = index["shards"] if index else []
        self.index["shards"] = [shard for shard in found if self._intact(shard)]
        if index is None or len(self.index["shards"]) != len(found):
            self._write_index()
        self._clean_leftovers()
        self.done: set[str] = {name for s in self.index["shards"] for name in s["names"]}
        self._buffer = np.empty((shard_size, feature_dim), dtype=DTYPE)  # the shard being filled
        self._names: list[str] = []  # its images

    def _intact(self, shard: dict) -> bool:
        path = self.folder / shard["file"]
        if path.is_file() and _file_sha256(path) == shard.get("sha256"):
            return True
        log.warning("%s is missing or damaged: its %d images will be extracted again", path, shard["rows"])
        return False

    def _write_index(self) -> None:
        _write_atomic(self.folder / INDEX_FILE, json.dumps(self.index).encode("utf-8"))

    def _clean_leftovers(self) -> None:
        """Remove what a killed run left: temporary files and shards that no index lists."""
        indexed = {s["file"] for s in self.index["shards"]}
        for path in self.folder.glob("shard-*.npy*"):
            if path.name not in indexed:
                path.unlink()
        (self.folder / (INDEX_FILE + ".tmp")).unlink(missing_ok=True)

    def _next_file(self) -> str:
        numbers = [int(s["file"].split("-")[1].split(".")[0]) for s in self.index["shards"]
                   if s["file"].startswith("shard-")]
        return SHARD_PATTERN.format(max(numbers, default=-1) + 1)

    def add(self, names: list[str], features: np.ndarray) -> None:
        """Buffer ``features`` (len(names), feature_dim) and write every shard that fills up."""
        features = np.asarray(features)
        if features.shape != (len(names), self.index["feature_dim"]):
            raise ValueError(f"expected features of shape ({len(names)}, {self.index['feature_dim']}), "
                             f"got {features.shape}")
        start = 0
        while start < len(names):
            filled = len(self._names)
            take = min(self.shard_size - filled, len(names) - start)
            self._buffer[filled:filled + take] = features[start:start + take]
            self._names.extend(names[start:start + take])
            start += take
            if len(self._names) == self.shard_size:
                self._flush()

    def finish(self) -> None:
        """Write the rows still buffered as a last, shorter shard."""
        if self._names:
            self._flush()

    def _flush(self) -> None:
        names, file = self._names, self._next_file()
        digest = _save_shard(self.folder / file, self._buffer[:len(names)])  # the shard, then the index listing it
        self.index["shards"].append({"file": file, "rows": len(names), "sha256": digest, "names": names})
        self._write_index()
        self.done.update(names)
        self._names = []
