"""Tensors on the wire and in the model: KServe datatypes, numpy dtypes, and the one bytes → array.

Every protocol (gRPC Classify and ModelInfer, HTTP/REST) hands the runtime an :class:`InputTensor`
— a name, the datatype and shape the client declared, and the data as little-endian bytes or as a
flat sequence of values — and gets numpy arrays back. :func:`to_array` is the only code that turns
request data into an array: it checks the declared shape, the element count and the datatype
before anything is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphgen_server.errors import InvalidArgument

MAX_RANK = 8  # more dimensions than any CNN takes (numpy's own limit is 64)

# KServe v2 datatype → numpy dtype, for every type onnxruntime takes as a model input.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
}
DATATYPE_OF: dict[np.dtype, str] = {dtype: name for name, dtype in DATATYPES.items()}
# onnxruntime's type strings (NodeArg.type) → KServe datatype.
ORT_DATATYPES = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
}
BYTES_REFUSED = "BYTES (string) tensors are not served: graphgen serves numeric and BOOL tensors only"


class UnsupportedType(ValueError):
    """A model tensor of a type graphgen does not serve (strings, bfloat16, sequences, maps)."""


@dataclass(frozen=True)
class TensorInfo:
    """A model input or output: its name, KServe datatype and shape (None: any size)."""

    name: str
    datatype: str
    shape: tuple[int | None, ...]

    @property
    def dtype(self) -> np.dtype:
        return DATATYPES[self.datatype]

    @property
    def dims(self) -> list[int]:
        """The shape as KServe writes it (-1 for a dimension of any size)."""
        return [-1 if d is None else d for d in self.shape]

    @classmethod
    def from_ort(cls, arg: Any) -> TensorInfo:
        """From an onnxruntime NodeArg; UnsupportedType for a type no KServe datatype carries."""
        datatype = ORT_DATATYPES.get(arg.type)
        if datatype is None:
            refused = (
                BYTES_REFUSED if arg.type == "tensor(string)" else f"{arg.type} has no KServe datatype served here"
            )
            raise UnsupportedType(f"tensor {arg.name!r} is {arg.type}: {refused}")
        shape = tuple(d if isinstance(d, int) and d > 0 else None for d in arg.shape)
        return cls(arg.name, datatype, shape)


def describe(shape: Sequence[int | None]) -> str:
    return "[" + ", ".join("N" if d is None else str(d) for d in shape) + "]"


@dataclass(frozen=True)
class InputTensor:
    """One input of a request, as the client sent it; ``field`` names it in messages (``inputs[0]``).

    ``data``: the raw little-endian bytes (``raw_input_contents``, HTTP's binary extension, a
    Classify tensor), or the values in row-major order (typed contents, JSON), or the error that
    prevents reading them (raised once the model's inputs have been checked by name). ``name``
    None: the model's only input.
    """

    name: str | None
    datatype: str
    shape: Sequence[int]
    data: bytes | Sequence[Any] | InvalidArgument
    field: str
    data_field: str  # where ``data`` came from, e.g. ``raw_input_contents[0]``
    fit_field: str = ""  # the field blamed when the shape does not fit the model (default: <field>.shape)


def datatype_dtype(datatype: str, field: str) -> np.dtype:
    """The numpy dtype of a KServe datatype the client named; InvalidArgument for any other."""
    if datatype == "BYTES":
        raise InvalidArgument(field, BYTES_REFUSED)
    dtype = DATATYPES.get(datatype)
    if dtype is None:
        raise InvalidArgument(field, f"unknown datatype {datatype!r} (KServe datatypes: {', '.join(DATATYPES)})")
    return dtype


def declared_shape(dims: Sequence[int], field: str) -> tuple[list[int], int]:
    """A request's tensor shape and its element count, refused unless every dimension is positive.

    The count is a Python integer: a shape such as [2**32, 2**32] must not wrap around to a size
    that matches a short buffer.
    """
    shape = list(dims)
    if not shape or len(shape) > MAX_RANK or any(d < 1 for d in shape):
        raise InvalidArgument(field, f"must list 1 to {MAX_RANK} positive dimensions, got {shape}")
    return shape, math.prod(shape)


def to_array(tensor: InputTensor) -> np.ndarray:
    """The request's values as an array of the declared datatype and shape (bytes: without a copy)."""
    if isinstance(tensor.data, InvalidArgument):
        raise tensor.data
    dtype = datatype_dtype(tensor.datatype, f"{tensor.field}.datatype")
    shape, count = declared_shape(tensor.shape, f"{tensor.field}.shape")
    if isinstance(tensor.data, bytes | bytearray | memoryview):
        expected = count * dtype.itemsize
        if len(tensor.data) != expected:
            raise InvalidArgument(
                tensor.data_field,
                f"{len(tensor.data)} bytes, but {tensor.datatype} of shape {shape} needs {expected}",
            )
        return np.frombuffer(tensor.data, dtype=dtype.newbyteorder("<")).reshape(shape)
    if len(tensor.data) != count:
        raise InvalidArgument(tensor.data_field, f"{len(tensor.data)} values, but shape {shape} needs {count}")
    try:
        values = np.asarray(tensor.data)
        if values.dtype.kind == "f" and dtype.kind == "u" and all(type(v) is int for v in tensor.data):
            values = np.array(tensor.data, dtype=object)  # integers past int64 (UINT64's upper half)
        elif values.dtype.kind not in "biuf" or (dtype.kind != "f" and values.dtype.kind == "f"):
            raise TypeError(values.dtype)
        array = values.astype(dtype)
        if dtype.kind in "iub" and not np.array_equal(array, values):
            raise OverflowError
    except (TypeError, ValueError, OverflowError):
        raise InvalidArgument(tensor.data_field, f"values do not fit {tensor.datatype}") from None
    return array.reshape(shape)


def to_bytes(array: np.ndarray) -> bytes:
    """An output's raw bytes as KServe sends them: row-major, little-endian."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
