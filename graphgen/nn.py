"""Layers that mirror ``torch.nn`` and emit ONNX through onnxscript's graph builder.

Attribute names follow torchvision/timm, so parameter (initializer) names equal the reference
``state_dict`` keys and a checkpoint loads by name. Every node is named after the module that
emits it (``layer3.1.conv2``), which is what Netron shows and what the profiler reports.
Shapes are inferred op by op while tracing, so every edge of the graph carries one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from enum import Enum

import onnx_ir as ir

from graphgen.errors import UserError
from graphgen.onnxscript_api import Module, OpBuilder, ParameterBase, scope_parts
from graphgen.onnxscript_api import ModuleList as ModuleList  # re-exported: models write nn.ModuleList
from graphgen.onnxscript_api import Sequential as Sequential

IntPair = int | tuple[int, int]


class Init(Enum):
    """How a parameter is initialised when no checkpoint is given (torch's defaults)."""

    FAN_IN_UNIFORM = "fan_in_uniform"  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)): conv/linear weight and bias
    ONES = "ones"
    ZEROS = "zeros"


class Parameter(ParameterBase):
    """A named tensor of the reference ``state_dict``.

    ``trainable`` is False for buffers (BatchNorm running statistics): they are loaded like any
    other entry but not counted as parameters, as torch counts them.
    """

    def __init__(self, shape: Sequence[int], init: Init, *, fan_in: int = 1, trainable: bool = True) -> None:
        super().__init__(list(shape))
        self.init = init
        self.fan_in = fan_in
        self.trainable = trainable


def _pair(value: IntPair) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else (value[0], value[1])


def scope_name(op: OpBuilder) -> str:
    """The dotted path of the module being traced, e.g. ``layer3.1.conv2``."""
    return ".".join(scope_parts(op))


# A node input: a value, absent (None), or a Python constant the builder turns into a shared initializer.
Input = ir.Value | float | Sequence[int] | Sequence[float] | None


def emit(op: OpBuilder, op_type: str, *inputs: Input, suffix: str = "", **attributes) -> ir.Value:
    """Add one node named after the current module (plus ``suffix`` for a module's glue ops).

    Absent trailing optional inputs (a bias-free Conv's bias) are left out, not written as ``""``:
    ``Conv(x, W)`` is what simplifiers and converters expect, and a Conv→BatchNormalization
    pair with an empty bias input is one onnxsim and onnxslim will not fold.
    """
    while inputs and inputs[-1] is None:
        inputs = inputs[:-1]
    name = scope_name(op)
    if suffix:
        name = f"{name}.{suffix}" if name else suffix
    return getattr(op, op_type)(*inputs, _name=name or op_type.lower(), **attributes)


def static_channels(x: ir.Value) -> int:
    """Channels of an NCHW value; static in every graph graphgen builds."""
    channels = x.shape[1] if x.shape is not None else None
    if not isinstance(channels, int):
        raise ValueError(f"the channels of {x.name} must be static, got {x.shape}")
    return channels


def static_spatial(x: ir.Value) -> tuple[int, int]:
    """Height and width of an NCHW value; they are static in every graph graphgen builds."""
    if x.shape is None:
        raise ValueError(f"the shape of {x.name} is unknown")
    height, width = x.shape[2], x.shape[3]
    if not (isinstance(height, int) and isinstance(width, int)):
        raise ValueError(f"spatial size of {x.name} must be static, got {x.shape}")
    return height, width


def tf_same_pads(size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int]) -> list[int]:
    """TensorFlow 'SAME' padding: the odd pixel goes at the end (ONNX pads are [top, left, bottom, right])."""
    begin, end = [], []
    for n, k, s in zip(size, kernel, stride):
        total = max((math.ceil(n / s) - 1) * s + k - n, 0)
        begin.append(total // 2)
        end.append(total - total // 2)
    return begin + end


class Conv2d(Module):
    """``torch.nn.Conv2d``; ``padding="same_tf"`` pads as TensorFlow does (for TF-ported weights)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: IntPair,
        stride: IntPair = 1,
        padding: IntPair | str = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: int = 1,
    ) -> None:
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"channels {in_channels}->{out_channels} not divisible by groups={groups}")
        if isinstance(padding, str) and padding != "same_tf":
            raise ValueError(f"padding must be a size or 'same_tf', got {padding!r}")
        self.kernel, self.stride, self.groups, self.dilation = _pair(kernel_size), _pair(stride), groups, dilation
        self.padding = padding
        self.out_channels = out_channels
        fan_in = in_channels // groups * self.kernel[0] * self.kernel[1]
        shape = [out_channels, in_channels // groups, *self.kernel]
        self.weight = Parameter(shape, Init.FAN_IN_UNIFORM, fan_in=fan_in)
        self.bias = Parameter([out_channels], Init.FAN_IN_UNIFORM, fan_in=fan_in) if bias else None

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        if isinstance(self.padding, str):  # "same_tf"
            pads = tf_same_pads(static_spatial(x), self.kernel, self.stride)
        else:
            pad_h, pad_w = _pair(self.padding)
            pads = [pad_h, pad_w, pad_h, pad_w]
        return emit(
            op,
            "Conv",
            x,
            self.weight,
            self.bias,
            kernel_shape=list(self.kernel),
            strides=list(self.stride),
            pads=pads,
            group=self.groups,
            dilations=[self.dilation] * 2,
        )


class BatchNorm2d(Module):
    """``torch.nn.BatchNorm2d`` in inference mode (running statistics)."""

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = Parameter([num_features], Init.ONES)
        self.bias = Parameter([num_features], Init.ZEROS)
        self.running_mean = Parameter([num_features], Init.ZEROS, trainable=False)
        self.running_var = Parameter([num_features], Init.ONES, trainable=False)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return emit(
            op,
            "BatchNormalization",
            x,
            self.weight,
            self.bias,
            self.running_mean,
            self.running_var,
            epsilon=self.eps,
        )


class Linear(Module):
    """``torch.nn.Linear`` on a [batch, features] input, as one Gemm."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__()
        self.weight = Parameter([out_features, in_features], Init.FAN_IN_UNIFORM, fan_in=in_features)
        self.bias = Parameter([out_features], Init.FAN_IN_UNIFORM, fan_in=in_features) if bias else None

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return emit(op, "Gemm", x, self.weight, self.bias, transB=1)


class ReLU(Module):
    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return emit(op, "Relu", x)


class ReLU6(Module):
    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return emit(op, "Clip", x, 0.0, 6.0)  # the builder makes shared float constants


class Sigmoid(Module):
    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return emit(op, "Sigmoid", x)


class SiLU(Module):
    """x·sigmoid(x) (opset 21 has no Swish op; onnxruntime fuses the pair)."""

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return emit(op, "Mul", x, emit(op, "Sigmoid", x, suffix="sigmoid"))


class Identity(Module):
    """Also stands in for Dropout and stochastic depth, which are the identity at inference."""

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return x


Dropout = Identity


class MaxPool2d(Module):
    def __init__(
        self, kernel_size: IntPair, stride: IntPair | None = None, padding: IntPair = 0, ceil_mode: bool = False
    ) -> None:
        super().__init__()
        self.kernel, self.stride = _pair(kernel_size), _pair(stride if stride is not None else kernel_size)
        self.padding, self.ceil_mode = _pair(padding), ceil_mode

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return emit(
            op,
            "MaxPool",
            x,
            kernel_shape=list(self.kernel),
            strides=list(self.stride),
            pads=list(self.padding) * 2,
            ceil_mode=int(self.ceil_mode),
        )


class AvgPool2d(Module):
    """``torch.nn.AvgPool2d``; note torch counts padding by default and ONNX does not."""

    def __init__(
        self,
        kernel_size: IntPair,
        stride: IntPair | None = None,
        padding: IntPair = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__()
        self.kernel, self.stride = _pair(kernel_size), _pair(stride if stride is not None else kernel_size)
        self.padding, self.ceil_mode, self.count_include_pad = _pair(padding), ceil_mode, count_include_pad

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return emit(
            op,
            "AveragePool",
            x,
            kernel_shape=list(self.kernel),
            strides=list(self.stride),
            pads=list(self.padding) * 2,
            ceil_mode=int(self.ceil_mode),
            count_include_pad=int(self.count_include_pad),
        )


class AdaptiveAvgPool2d(Module):
    """Global pooling, or an exact average pool when the input divides into the output size.

    ONNX has no adaptive pooling; torch's uneven windows cannot be expressed as one pool, so
    those sizes are refused with a clear message rather than approximated.
    """

    def __init__(self, output_size: IntPair) -> None:
        super().__init__()
        self.output_size = _pair(output_size)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        if self.output_size == (1, 1):
            return emit(op, "GlobalAveragePool", x)
        size = static_spatial(x)
        if size == self.output_size:
            return x  # torchvision's AdaptiveAvgPool at the default resolution is the identity
        if any(n % o for n, o in zip(size, self.output_size)):
            raise UserError(
                f"{scope_name(op)}: adaptive pooling {size[0]}x{size[1]} -> "
                f"{self.output_size[0]}x{self.output_size[1]} has uneven windows; "
                "choose a resolution whose feature map divides evenly"
            )
        kernel = [n // o for n, o in zip(size, self.output_size)]
        return emit(op, "AveragePool", x, kernel_shape=kernel, strides=kernel)


class Flatten(Module):
    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return emit(op, "Flatten", x, axis=1)


class LocalResponseNorm(Module):
    """``torch.nn.LocalResponseNorm``: b = a / (k + alpha/n · Σa²)^beta, the same formula as ONNX LRN."""

    def __init__(self, size: int, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0) -> None:
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return emit(op, "LRN", x, size=self.size, alpha=self.alpha, beta=self.beta, bias=self.k)


class ConvBN(Module):
    """A bias-free 'same'-padded convolution and its BatchNorm as one module (keys ``.conv``, ``.bn``)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__()
        self.conv = Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = BatchNorm2d(cout)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return self.bn(op, self.conv(op, x))


class ClassifierHead(Module):
    """Global average pool, flatten, dense layer: timm's ``ClassifierHead`` keys (``global_pool``, ``fc``)."""

    def __init__(self, features: int, num_classes: int) -> None:
        super().__init__()
        self.global_pool = AdaptiveAvgPool2d(1)
        self.flatten = Flatten()
        self.fc = Linear(features, num_classes)

    def forward(self, op: OpBuilder, x: ir.Value) -> ir.Value:
        return self.fc(op, self.flatten(op, self.global_pool(op, x)))


def add(op: OpBuilder, a: ir.Value, b: ir.Value, suffix: str = "add") -> ir.Value:
    """A residual sum, named ``<block>.add``."""
    return emit(op, "Add", a, b, suffix=suffix)


def concat(op: OpBuilder, values: Sequence[ir.Value], suffix: str = "cat") -> ir.Value:
    """Channel concatenation, named ``<block>.cat``."""
    return emit(op, "Concat", *values, suffix=suffix, axis=1)


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None) -> int:
    """Round channels to a multiple of ``divisor``, never more than 10% below ``value``."""
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * value else rounded
