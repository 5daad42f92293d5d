"""The ONNX ops that compute each output element from the same element of their input alone.

One list for everyone who needs to know: the passes (one activation node can serve stacked
branches), layer statistics (an activation belongs to the layer before it) and the server's
profile (onnxruntime fuses such ops into the kernel before them). Each adds what its own
purpose needs (BatchNormalization, residual sums) beside it, never a private copy of it.
"""

from __future__ import annotations

# Unary, and no per-channel parameter: attributes (alpha, …) and Clip's scalar bounds only.
ACTIVATIONS = frozenset(
    {
        "Relu",
        "LeakyRelu",
        "Sigmoid",
        "Tanh",
        "Clip",
        "HardSigmoid",
        "HardSwish",
        "Elu",
        "Selu",
        "Celu",
        "Softplus",
        "Softsign",
        "Mish",
        "Gelu",
        "ThresholdedRelu",
    }
)
# Two (or, for Sum, more) inputs combined element by element, with broadcasting.
BINARY = frozenset({"Add", "Sub", "Mul", "Div", "Sum"})
