"""Every check of a request, in one place: what a client sent turned into checked feeds for a model.

The front-ends hand over what the client sent as Python values (:class:`InputTensor`,
:class:`RequestedOutput`, :class:`Profiling`, encoded images); these functions check it against
the loaded version and the server's limits and refuse anything wrong with
:class:`~graphgen_server.core.errors.InvalidArgument`, whose message starts with the field at
fault. :func:`to_array` is the only code that turns a request's tensor data into an array: it
checks the declared shape, the element count and the datatype before anything is allocated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from graphgen.preprocess import ImageError, decode_image, image_to_tensor
from graphgen_server.config import ServerConfig
from graphgen_server.core.batching import Feeds
from graphgen_server.core.errors import InvalidArgument
from graphgen_server.core.loaded import LoadedVersion
from graphgen_server.tensors import BYTES_REFUSED, DATATYPES, InputTensor, TensorInfo, describe

MAX_RANK = 8  # more dimensions than any CNN takes (numpy's own limit is 64)


@dataclass(frozen=True)
class RequestedOutput:
    """An output a client asked for; ``classification``: the raw value of Triton's parameter, if given."""

    name: str
    field: str  # e.g. ``outputs[0]``
    classification: Any = None


@dataclass(frozen=True)
class Profiling:
    """A request's ask for a per-layer profile: ``runs`` measured runs (0: the server's default).

    ``field`` names where the request said how many runs (for messages).
    """

    wanted: bool = False
    runs: int = 0
    field: str = "profile_runs"


NO_PROFILE = Profiling()


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


def _all_finite(array: np.ndarray) -> bool:
    if array.dtype.itemsize < 8:
        # A float64 sum of float16/32 values cannot overflow: it is finite exactly when every value is.
        return bool(np.isfinite(array.sum(dtype=np.float64)))
    return bool(np.isfinite(array).all())


def check_finite(array: np.ndarray, data_field: str) -> None:
    """Refuse NaN and infinity (``--refuse-nonfinite``; Triton takes any value), naming the field holding them."""
    if array.dtype.kind == "f" and not _all_finite(array):
        first = int(np.flatnonzero(~np.isfinite(array))[0])
        raise InvalidArgument(
            data_field,
            f"holds NaN or infinite values (the first at flat index {first}); the server refuses them "
            "(--refuse-nonfinite)",
        )


def check_array(
    array: np.ndarray, info: TensorInfo, fit_field: str, loaded: LoadedVersion, limits: ServerConfig
) -> None:
    """Refuse an array that does not fit the model's input ``info``, naming ``fit_field``."""
    if array.ndim != len(info.shape):
        raise InvalidArgument(
            fit_field, f"shape {list(array.shape)} has rank {array.ndim}, model expects {describe(info.shape)}"
        )
    for axis, (got, want) in enumerate(zip(array.shape, info.shape)):
        if got < 1 or (want is not None and got != want):
            raise InvalidArgument(
                fit_field, f"shape {list(array.shape)} does not fit {describe(info.shape)} (axis {axis})"
            )
    if loaded.batched and array.shape[0] > min(loaded.max_batch_size, limits.max_images):
        limit = (
            f"the limit of {limits.max_images}"
            if limits.max_images <= loaded.max_batch_size
            else f"the model's max_batch_size {loaded.max_batch_size}"
        )
        raise InvalidArgument(fit_field, f"batch of {array.shape[0]} exceeds {limit}")


def checked_feeds(model: str, loaded: LoadedVersion, inputs: Sequence[InputTensor], limits: ServerConfig) -> Feeds:
    """The request's inputs as arrays by input name, each checked against model ``model``'s inputs."""
    expected = [t.name for t in loaded.inputs]
    given = [expected[0] if t.name is None and len(expected) == 1 else t.name or "" for t in inputs]
    if sorted(given) != sorted(expected):
        plural = "input" if len(expected) == 1 else "inputs"
        if len(given) != len(expected):
            raise InvalidArgument(
                "inputs",
                f"model {model} takes {len(expected)} {plural} ({', '.join(expected)}), got {len(given)}",
            )
        position = next(i for i, n in enumerate(given) if n not in expected or given.count(n) > 1)
        raise InvalidArgument(
            f"{inputs[position].field}.name",
            f"model {model} has {plural} {expected}, not {given[position]!r} (or it is given twice)",
        )
    feeds: Feeds = {}
    for tensor, name in zip(inputs, given):
        info = loaded.inputs[expected.index(name)]
        if tensor.datatype != info.datatype:
            raise InvalidArgument(
                f"{tensor.field}.datatype",
                f"model {model}'s input {name!r} takes {info.datatype}, got {tensor.datatype!r}",
            )
        array = to_array(tensor)
        check_array(array, info, tensor.fit_field or f"{tensor.field}.shape", loaded, limits)
        if limits.refuse_nonfinite:
            check_finite(array, tensor.data_field)
        feeds[name] = array
    if loaded.batched and len({a.shape[0] for a in feeds.values()}) > 1:
        rows = {n: a.shape[0] for n, a in feeds.items()}
        raise InvalidArgument("inputs", f"every input must have the same batch size (rows: {rows})")
    return feeds


def checked_outputs(model: str, loaded: LoadedVersion, outputs: Sequence[RequestedOutput]) -> list[tuple[int, int]]:
    """(output index, classification count or 0) per requested output; all outputs if none named."""
    if not outputs:
        return [(i, 0) for i in range(len(loaded.outputs))]
    names = [o.name for o in loaded.outputs]
    wanted = []
    for output in outputs:
        if output.name not in names:
            raise InvalidArgument(
                f"{output.field}.name", f"model {model} has no output {output.name!r} (outputs: {names})"
            )
        k = output.classification
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= loaded.num_classes):
            raise InvalidArgument(
                f"{output.field}.parameters.classification",
                f"must be an integer from 1 to {loaded.num_classes}, got {k!r}",
            )
        wanted.append((names.index(output.name), k or 0))
    return wanted


def check_profile(profile: Profiling, limits: ServerConfig) -> None:
    """Refuse a run count without a profile, or more profiled runs than the server allows (0: its default)."""
    if profile.runs and not profile.wanted:
        raise InvalidArgument(profile.field, "asks how many runs to profile: set profile too")
    if not 0 <= profile.runs <= limits.max_profile_runs:
        raise InvalidArgument(
            profile.field,
            f"{profile.runs} runs: a profile takes 1 to {limits.max_profile_runs} runs (0: the default, "
            f"{limits.profile_runs})",
        )


def check_classify(
    model: str,
    loaded: LoadedVersion,
    images: Sequence[bytes],
    tensor: InputTensor | None,
    top_k: int,
    profile: Profiling,
    limits: ServerConfig,
) -> None:
    """Refuse a Classify call this model cannot answer (before its inputs are read)."""
    if len(loaded.inputs) != 1 or not loaded.num_classes:
        raise InvalidArgument("model", f"model {model} is not a classifier (one input, logits out)")
    if top_k > loaded.num_classes:
        raise InvalidArgument("top_k", f"{top_k} is more than the model's {loaded.num_classes} classes")
    check_profile(profile, limits)
    if images and tensor is not None:
        raise InvalidArgument("images", "send images or a tensor, not both")


def check_images(model: str, loaded: LoadedVersion, images: Sequence[bytes], limits: ServerConfig) -> None:
    """Refuse a list of encoded images this model cannot take (before any is decoded)."""
    if loaded.image_spec is None:
        raise InvalidArgument("images", f"model {model} has no graphgen preprocessing metadata; send a tensor instead")
    if not images:
        raise InvalidArgument("images", "no image given (send images or a tensor)")
    if len(images) > limits.max_images:
        raise InvalidArgument("images", f"{len(images)} images exceed the limit of {limits.max_images}")


def images_to_array(model: str, loaded: LoadedVersion, images: Sequence[bytes], limits: ServerConfig) -> np.ndarray:
    """Decode and preprocess encoded images into one checked batch (blocking: call from a worker)."""
    check_images(model, loaded, images, limits)
    assert loaded.image_spec is not None
    batch = []
    for index, data in enumerate(images):
        try:
            image = decode_image(data, max_pixels=limits.max_image_pixels)
        except ImageError as error:
            raise InvalidArgument(f"images[{index}]", str(error)) from None
        batch.append(image_to_tensor(image, loaded.image_spec))
    array = np.stack(batch)
    check_array(array, loaded.input, "images", loaded, limits)
    return array
