"""Hypothesis strategies for malformed requests to a graphgen-server, each with the answer it must get.

Every case starts from a valid request for the ``tiny`` model (input ``[N, 3, 32, 32]``, 10
classes) and injects one fault, so the status code and the words of the message are known; the
``chaos`` cases combine random fields and only promise a status that is not INTERNAL. The server
under test runs with the limits in :data:`LIMITS`.
"""

from __future__ import annotations

import io
import struct
import zlib
from dataclasses import dataclass

import grpc
import numpy as np
from hypothesis import strategies as st
from PIL import Image

from graphgen_protos import classifier_pb2 as cpb
from graphgen_protos import kserve_v2_pb2 as kpb

SIZE, CLASSES, MAX_IMAGES, MAX_PIXELS, MAX_MESSAGE = 32, 10, 8, 1_000_000, 1 << 20
LIMITS = [
    "--max-images",
    str(MAX_IMAGES),
    "--max-image-pixels",
    str(MAX_PIXELS),
    "--max-message-mib",
    "1",
    "--max-queue",
    "64",
    "--max-batch",
    "4",
]
INVALID, NOT_FOUND, EXHAUSTED = "INVALID_ARGUMENT", "NOT_FOUND", "RESOURCE_EXHAUSTED"
CLASSIFY, INFER = "/graphgen.v1.Classifier/Classify", "/inference.GRPCInferenceService/ModelInfer"
KSERVE_DATATYPES = [
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BYTES",
    "BF16",
]
INT64 = st.integers(-(2**63), 2**63 - 1)


@dataclass(frozen=True)
class Case:
    fault: str
    method: str  # the full method name; the request is sent serialised, so bytes can be sent too
    request: bytes
    codes: frozenset[str]  # statuses it may get (OK only where the fault can leave a valid request)
    words: str = ""  # the message names the problem with these words

    def __repr__(self) -> str:  # hypothesis prints failing cases: the start of the request is enough
        return f"Case({self.fault!r}, {self.method}, {self.request[:120]!r}..., {sorted(self.codes)}, {self.words!r})"


def _case(fault: str, method: str, request, codes: set[str] | str, words: str = "") -> Case:
    data = request if isinstance(request, bytes) else request.SerializeToString()
    return Case(fault, method, data, frozenset({codes} if isinstance(codes, str) else codes), words)


def _encode(image: Image.Image, format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()


def _image_pool() -> list[bytes]:
    """Valid images of many formats, modes and sizes (all within the pixel limit)."""
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 256, (30, 40, 3), np.uint8))
    return [
        _encode(rgb, "PNG"),
        _encode(rgb.resize((47, 33)), "JPEG", quality=80),
        _encode(rgb.convert("P"), "GIF"),
        _encode(rgb, "BMP"),
        _encode(rgb, "WEBP"),
        _encode(rgb, "TIFF"),
        _encode(rgb.convert("L").resize((1, 1)), "PNG"),
        _encode(rgb.convert("RGBA"), "PNG"),
        _encode(rgb.convert("CMYK"), "JPEG"),
        _encode(Image.fromarray(rng.integers(0, 65535, (20, 20), np.uint16)), "PNG"),  # 16-bit grey
        _encode(rgb.convert("1"), "PNG"),
        _encode(rgb.resize((1000, 3)), "PNG"),  # an extreme aspect ratio
    ]


IMAGES = _image_pool()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A PNG that declares a size and holds a few bytes of pixels: a small request for a large image."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(bytes(64))
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b"")


def undecodable(prefix: bytes) -> bytes:
    """Bytes no protobuf parser accepts: a length-delimited field 1 longer than what follows."""
    return b"\x0a\xff\xff\xff\x0f" + prefix


valid_images = st.lists(st.sampled_from(IMAGES), min_size=1, max_size=MAX_IMAGES)
rows = st.integers(1, 4)
unknown_names = st.one_of(
    st.text(min_size=1, max_size=40),
    st.sampled_from(["../tiny", "tiny/../tiny", "/etc/passwd", "tiny/1", "TINY", " tiny", "tiny\x00", "..", "."]),
    st.text(min_size=2000, max_size=6000),
).filter(lambda name: name != "tiny")


def unknown_version_answer(version: str) -> tuple[str, str]:
    """A version number the model lacks: NOT_FOUND; anything else: INVALID_ARGUMENT (Triton's GetModelVersionFromString)."""
    if version.isascii() and version.isdigit():
        return NOT_FOUND, "has no version"
    return INVALID, "is not a version number"


unknown_versions = st.one_of(
    st.text(min_size=1, max_size=20),
    st.sampled_from(["0", "-1", "01", "1.0", " 1", "2", "../1", "99999999999999999999", "1/model.onnx"]),
).filter(lambda version: version != "1")


@st.composite
def finite_batch(draw, batch: int | None = None) -> np.ndarray:
    count = batch or draw(rows)
    seed = draw(st.integers(0, 2**32 - 1))
    return np.random.default_rng(seed).standard_normal((count, 3, SIZE, SIZE), dtype=np.float32)


@st.composite
def bad_shapes(draw) -> tuple[str, list[int]]:
    """(kind, shape): a non-positive dimension, too many dimensions, or a huge declared size."""
    kind = draw(st.sampled_from(["non-positive", "rank", "huge"]))
    if kind == "non-positive":
        shape = draw(st.lists(INT64, min_size=1, max_size=6))
        shape[draw(st.integers(0, len(shape) - 1))] = draw(st.integers(-(2**63), 0))
    elif kind == "rank":
        shape = draw(st.one_of(st.just([]), st.lists(st.integers(1, 2), min_size=9, max_size=40)))
    else:
        shape = draw(
            st.lists(st.integers(1, 2**62), min_size=1, max_size=6).filter(lambda s: np.prod(s, dtype=object) > 2**40)
        )
    return kind, shape


@st.composite
def wrong_shapes(draw) -> list[int]:
    """Positive dimensions with consistent data that the model still cannot take."""
    shape = draw(st.lists(st.integers(1, 40), min_size=1, max_size=5).filter(lambda s: np.prod(s) <= 50_000))
    if len(shape) == 4 and shape[1:] == [3, SIZE, SIZE] and shape[0] <= MAX_IMAGES:
        shape[2] += 1
    return shape


def non_finite(array: np.ndarray, draw) -> np.ndarray:
    array = array.copy()
    flat = array.reshape(-1)
    for _ in range(draw(st.integers(1, 3))):
        flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return array


@st.composite
def bad_image(draw) -> tuple[bytes, bool]:
    """(bytes, certainly bad): empty, random, a header declaring too many pixels, or damaged."""
    kind = draw(st.sampled_from(["empty", "random", "huge", "truncated", "flipped"]))
    if kind == "empty":
        return b"", True
    if kind == "random":
        return b"\x00" + draw(st.binary(max_size=200)), True  # no image format starts with a zero byte
    if kind == "huge":
        width = draw(st.integers(1001, 2**31 - 1))
        return png_declaring(width, draw(st.integers(MAX_PIXELS // width + 1, 2**31 - 1))), True
    data = bytearray(draw(st.sampled_from(IMAGES)))
    position = draw(st.integers(0, len(data) - 1))
    if kind == "truncated":
        return bytes(data[:position]), False
    data[position] ^= 1 << draw(st.integers(0, 7))
    return bytes(data), False


def tensor_message(array: np.ndarray) -> cpb.Tensor:
    return cpb.Tensor(shape=array.shape, data=array.tobytes())


@st.composite
def classify_cases(draw) -> Case:
    fault = draw(st.sampled_from(CLASSIFY_FAULTS))
    request = cpb.ClassifyRequest(
        model="tiny", version=draw(st.sampled_from(["", "1"])), top_k=draw(st.integers(0, 10))
    )
    if draw(st.booleans()):
        request.images.extend(draw(valid_images))
    else:
        request.tensor.CopyFrom(tensor_message(draw(finite_batch())))

    def done(codes, words=""):
        data = undecodable(request.SerializeToString()[:50]) if fault == "undecodable" else request
        return _case(fault, CLASSIFY, data, codes, words)

    if fault == "unknown model":
        request.model = draw(unknown_names)
        return done(NOT_FOUND, "is not in the repository")
    if fault == "no model":
        request.model = ""
        return done(INVALID, "model: no model name")
    if fault == "unknown version":
        request.version = draw(unknown_versions)
        return done(*unknown_version_answer(request.version))
    if fault == "top_k above classes":
        request.top_k = draw(st.integers(CLASSES + 1, 2**32 - 1))
        return done(INVALID, "top_k:")
    if fault == "images and tensor":
        request.images.extend(draw(valid_images))
        request.tensor.CopyFrom(tensor_message(draw(finite_batch())))
        return done(INVALID, "images: send images or a tensor")
    if fault == "nothing to classify":
        request.ClearField("images")
        request.ClearField("tensor")
        return done(INVALID, "images: no image given")
    if fault == "too many images":
        request.ClearField("tensor")
        request.images[:] = draw(st.lists(st.sampled_from(IMAGES[:3]), min_size=MAX_IMAGES + 1, max_size=20))
        return done(INVALID, "images exceed the limit")
    if fault == "bad image":
        request.ClearField("tensor")
        images = draw(valid_images)
        index = draw(st.integers(0, len(images) - 1))
        images[index], certain = draw(bad_image())
        request.images[:] = images
        return done(INVALID if certain else {INVALID, "OK"}, f"images[{index}]")
    if fault == "oversize message":
        request.ClearField("tensor")
        request.images[:] = [b"\x89PNG" + bytes(MAX_MESSAGE + draw(st.integers(0, MAX_MESSAGE)))]
        return done(EXHAUSTED, "larger than max")
    if fault == "undecodable":
        return done(INVALID, "request: not a valid graphgen.v1.ClassifyRequest")
    request.ClearField("images")
    if fault == "bad shape":
        kind, shape = draw(bad_shapes())
        request.tensor.CopyFrom(cpb.Tensor(shape=shape, data=draw(st.binary(max_size=64))))
        return done(INVALID, "tensor.data" if kind == "huge" else "tensor.shape")
    if fault == "empty batch":
        request.tensor.CopyFrom(cpb.Tensor(shape=[0, 3, SIZE, SIZE]))
        return done(INVALID, "tensor.shape")
    if fault == "wrong shape":
        shape = draw(wrong_shapes())
        request.tensor.CopyFrom(tensor_message(np.zeros(shape, np.float32)))
        return done(INVALID, "tensor: shape")
    if fault == "byte count":
        request.tensor.CopyFrom(tensor_message(draw(finite_batch())))
        data = request.tensor.data
        size = draw(st.integers(0, len(data) + 64).filter(lambda n: n != len(data)))
        request.tensor.data = (data * 2)[:size]
        return done(INVALID, "tensor.data")
    if fault == "too many rows":
        request.tensor.CopyFrom(tensor_message(draw(finite_batch(draw(st.integers(MAX_IMAGES + 1, 16))))))
        return done(INVALID, "exceeds the limit")
    if fault == "non-finite":
        request.tensor.CopyFrom(tensor_message(non_finite(draw(finite_batch()), draw)))
        return done(INVALID, "NaN or infinite")
    raise AssertionError(fault)


CLASSIFY_FAULTS = [
    "unknown model",
    "no model",
    "unknown version",
    "top_k above classes",
    "images and tensor",
    "nothing to classify",
    "too many images",
    "bad image",
    "oversize message",
    "undecodable",
    "bad shape",
    "empty batch",
    "wrong shape",
    "byte count",
    "too many rows",
    "non-finite",
]


@st.composite
def infer_cases(draw) -> Case:
    fault = draw(st.sampled_from(INFER_FAULTS))
    array = draw(finite_batch())
    request = kpb.ModelInferRequest(model_name="tiny", model_version=draw(st.sampled_from(["", "1"])))
    tensor = request.inputs.add(name="input", datatype="FP32", shape=array.shape)
    typed = draw(st.booleans())  # the values as fp32_contents instead of raw_input_contents
    if typed:
        tensor.contents.fp32_contents.extend(array.ravel().tolist())
    else:
        request.raw_input_contents.append(array.tobytes())

    def done(codes, words=""):
        data = undecodable(request.SerializeToString()[:50]) if fault == "undecodable" else request
        return _case(fault, INFER, data, codes, words)

    if fault == "unknown model":
        request.model_name = draw(unknown_names)
        return done(NOT_FOUND, "is not in the repository")
    if fault == "unknown version":
        request.model_version = draw(unknown_versions)
        return done(*unknown_version_answer(request.model_version))
    if fault == "input count":
        if draw(st.booleans()):  # none, or two to four
            request.ClearField("inputs")
        for index in range(draw(st.sampled_from([0, 2, 3]) if not request.inputs else st.integers(1, 3))):
            request.inputs.add(name=f"extra{index}", datatype="FP32", shape=[1])
        return done(INVALID, "inputs: model tiny takes 1 input")
    if fault == "input name":
        tensor.name = draw(st.text(max_size=30).filter(lambda n: n != "input"))
        return done(INVALID, "inputs[0].name")
    if fault == "datatype":
        tensor.datatype = draw(
            st.one_of(st.sampled_from(KSERVE_DATATYPES), st.text(max_size=12)).filter(lambda d: d != "FP32")
        )
        return done(INVALID, "inputs[0].datatype")
    if fault == "bad shape":
        kind, shape = draw(bad_shapes())
        tensor.ClearField("shape")
        tensor.shape.extend(shape)
        if kind == "huge":
            request.raw_input_contents[:] = [draw(st.binary(min_size=1, max_size=64))]
            return done(INVALID, "raw_input_contents[0]")
        return done(INVALID, "inputs[0].shape")
    if fault == "wrong shape":
        shape = draw(wrong_shapes())
        tensor.ClearField("shape")
        tensor.shape.extend(shape)
        tensor.ClearField("contents")
        request.raw_input_contents[:] = [np.zeros(shape, np.float32).tobytes()]
        return done(INVALID, "inputs[0].shape")
    if fault == "byte count":
        data = array.tobytes()
        size = draw(st.integers(1, len(data) + 64).filter(lambda n: n != len(data)))
        tensor.ClearField("contents")
        request.raw_input_contents[:] = [(data * 2)[:size]]
        return done(INVALID, "raw_input_contents[0]")
    if fault == "raw entries":
        tensor.ClearField("contents")
        request.raw_input_contents[:] = [array.tobytes()] * draw(st.integers(2, 4))
        return done(INVALID, "raw_input_contents: ")
    if fault == "value count":
        request.ClearField("raw_input_contents")
        tensor.contents.fp32_contents[:] = draw(st.lists(st.floats(-1, 1, width=32), max_size=50))
        return done(INVALID, "fp32_contents")
    if fault == "too many rows":
        big = draw(finite_batch(draw(st.integers(MAX_IMAGES + 1, 16))))
        tensor.ClearField("shape")
        tensor.shape.extend(big.shape)
        tensor.ClearField("contents")
        request.raw_input_contents[:] = [big.tobytes()]
        return done(INVALID, "exceeds the limit")
    if fault == "non-finite":
        bad = non_finite(array, draw)
        if typed:
            tensor.contents.fp32_contents[:] = bad.ravel().tolist()
        else:
            request.raw_input_contents[:] = [bad.tobytes()]
        return done(INVALID, "NaN or infinite")
    if fault == "output name":
        request.outputs.add(name="logits")
        request.outputs.add(name=draw(st.text(max_size=20).filter(lambda n: n != "logits")))
        return done(INVALID, "outputs[1].name")
    if fault == "classification":
        parameter = request.outputs.add(name="logits").parameters["classification"]
        kind = draw(st.sampled_from(["int64", "bool", "string", "double"]))
        if kind == "int64":
            parameter.int64_param = draw(st.one_of(st.integers(-(2**63), 0), st.integers(CLASSES + 1, 2**63 - 1)))
        elif kind == "bool":
            parameter.bool_param = draw(st.booleans())
        elif kind == "string":
            parameter.string_param = draw(st.text(max_size=10))
        else:
            parameter.double_param = draw(st.floats(allow_nan=True))
        return done(INVALID, "outputs[0].parameters.classification")
    if fault == "oversize message":
        request.raw_input_contents[:] = [bytes(MAX_MESSAGE + draw(st.integers(0, MAX_MESSAGE)))]
        return done(EXHAUSTED, "larger than max")
    if fault == "undecodable":
        return done(INVALID, "request: not a valid inference.ModelInferRequest")
    raise AssertionError(fault)


INFER_FAULTS = [
    "unknown model",
    "unknown version",
    "input count",
    "input name",
    "datatype",
    "bad shape",
    "wrong shape",
    "byte count",
    "raw entries",
    "value count",
    "too many rows",
    "non-finite",
    "output name",
    "classification",
    "oversize message",
    "undecodable",
]


@st.composite
def chaos_cases(draw) -> Case:
    """Random fields throughout: anything but INTERNAL (or UNKNOWN) is an acceptable answer."""
    names = st.one_of(st.just("tiny"), unknown_names)
    any_code = {c.name for c in grpc.StatusCode} - {"INTERNAL", "UNKNOWN"}
    if draw(st.booleans()):
        request = cpb.ClassifyRequest(
            model=draw(names), version=draw(st.sampled_from(["", "1", "2"])), top_k=draw(st.integers(0, 2**32 - 1))
        )
        request.images.extend(draw(st.lists(st.one_of(st.sampled_from(IMAGES), st.binary(max_size=100)), max_size=3)))
        if draw(st.booleans()):
            request.tensor.CopyFrom(
                cpb.Tensor(shape=draw(st.lists(INT64, max_size=5)), data=draw(st.binary(max_size=400)))
            )
        return _case("chaos", CLASSIFY, request, any_code)
    request = kpb.ModelInferRequest(model_name=draw(names), model_version=draw(st.sampled_from(["", "1"])))
    for _ in range(draw(st.integers(0, 2))):
        tensor = request.inputs.add(name=draw(st.sampled_from(["input", "x"])), shape=draw(st.lists(INT64, max_size=5)))
        tensor.datatype = draw(st.sampled_from(KSERVE_DATATYPES))
        tensor.contents.fp32_contents.extend(draw(st.lists(st.floats(width=32), max_size=20)))
    request.raw_input_contents.extend(draw(st.lists(st.binary(max_size=200), max_size=2)))
    return _case("chaos", INFER, request, any_code)
