"""Tensors on the wire and in the model: KServe datatypes, numpy dtypes, a request's inputs as sent.

The vocabulary below both the front-ends and the core. Every protocol (gRPC Classify and
ModelInfer, HTTP/REST) hands the runtime an :class:`InputTensor` — a name, the datatype and shape
the client declared, and the data as little-endian bytes or as a flat sequence of values — and gets
numpy arrays back (:func:`to_bytes` writes them as KServe sends them). The one conversion of request
data into an array, with its checks, is the core's (:func:`graphgen_server.core.requests.to_array`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

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
    data: bytes | Sequence[Any] | Exception  # (the exception: the core's InvalidArgument)
    field: str
    data_field: str  # where ``data`` came from, e.g. ``raw_input_contents[0]``
    fit_field: str = ""  # the field blamed when the shape does not fit the model (default: <field>.shape)


def little_endian(array: np.ndarray) -> np.ndarray:
    """``array`` as KServe sends it: row-major, little-endian (itself where it is already: no copy)."""
    return np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))


def to_bytes(array: np.ndarray) -> bytes:
    """An output's raw bytes as KServe sends them: row-major, little-endian."""
    return little_endian(array).tobytes()
