"""A request's data checked and turned into arrays: the core's one conversion of request data.

:func:`to_array` is the only code that turns a request's tensor data into an array: it checks the
declared shape, the element count and the datatype before anything is allocated, and names the
field at fault.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from graphgen_server.core.errors import InvalidArgument
from graphgen_server.tensors import BYTES_REFUSED, DATATYPES, InputTensor

MAX_RANK = 8  # more dimensions than any CNN takes (numpy's own limit is 64)


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
    if isinstance(tensor.data, Exception):
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
