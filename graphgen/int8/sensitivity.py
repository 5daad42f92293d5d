"""Per-layer SQNR of an int8 model against its float model, three ways, under graphgen's layer names.

For each graphgen layer (a node and the activations that only transform its output,
:func:`graphgen.stats.layers`), on the held-out images, as SQNR = 10·log10(Σ float² / Σ error²) dB:

* **SQNR** — the layer's output in the int8 model against the float model: how much error has
  arrived by this layer. The int8 value is the one the next layer reads, after the layer's
  QuantizeLinear/DequantizeLinear pair (they belong to the layer they surround).
* **own** — the layer alone in int8, fed the float model's inputs: the int8 model's nodes from
  the layer's float inputs to its dequantized output (its input Q/DQ, its int8 weights, its output
  Q/DQ), cut out of the int8 graph and run as onnxruntime runs them.
* **at logits** — the logits' SQNR when this layer alone is int8: its own output fed to the rest of
  the float network. Quantization errors of different layers add at the output roughly as
  independent noises, so the layers with the lowest figure here are the ones whose int8 costs the
  most; ``--auto-keep`` keeps those. A layer's own error can look small and still cost most at
  the logits when the layers after it amplify it (EfficientNet-Lite0's first depthwise
  convolution: 32 dB own, 16–21 dB at the logits).

Cumulative SQNRs come from one run of copies of both models that also output every layer's value
(which holds a few of onnxruntime's fusions back: a close estimate); the other two cost one small
session per layer and one session of the float network downstream of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import onnx
import onnx.utils
import onnx_ir as ir

from graphgen.int8.images import ImageSet
from graphgen.int8.quantize import computing_layers, input_name
from graphgen.stats import Layer


@dataclass(frozen=True)
class LayerSQNR:
    """One layer's three SQNRs in dB (inf: exact; None: could not be measured)."""

    name: str
    op: str
    sqnr_db: float
    own_db: float | None = None
    at_logits_db: float | None = None


class _Power:
    """Σ reference² and Σ (value − reference)², accumulated image by image."""

    def __init__(self) -> None:
        self.signal = self.noise = 0.0

    def add(self, value: np.ndarray, reference: np.ndarray) -> None:
        reference64 = reference.astype(np.float64)
        self.signal += float(np.square(reference64).sum())
        self.noise += float(np.square(value.astype(np.float64) - reference64).sum())

    @property
    def db(self) -> float:
        if self.noise <= 0.0:
            return math.inf
        return 10.0 * math.log10(max(self.signal, 1e-300) / self.noise)


Session = Callable[[onnx.ModelProto], object]


@dataclass(frozen=True)
class Measured:
    """The logits of both models on every held-out image, and every layer's SQNRs."""

    float_logits: np.ndarray
    int8_logits: np.ndarray
    layers: tuple[LayerSQNR, ...]


def measure(
    float_model: ir.Model, int8_model: ir.Model, images: ImageSet, session: Session, *, per_layer: bool = True
) -> Measured:
    """Run both models on ``images``; ``per_layer=False`` skips the own / at-logits figures (one session a layer)."""
    name = input_name(float_model)
    layers = computing_layers(float_model)
    float_proto = onnx.shape_inference.infer_shapes(ir.serde.serialize_model(float_model))
    int8_proto = onnx.shape_inference.infer_shapes(ir.serde.serialize_model(int8_model))
    read = _ReadValues(int8_proto.graph)
    wanted = list(dict.fromkeys([*(layer.output.name or "" for layer in layers), *_inputs(layers)]))
    float_run = session(_with_outputs(float_proto, wanted))
    int8_run = session(int8_proto)
    probes = {value: read(value) for value in [name, *(layer.output.name or "" for layer in layers)]}
    probe_run = session(_with_outputs(int8_proto, [v for v in probes.values() if v is not None]))
    float_names = [output.name for output in float_run.get_outputs()]  # type: ignore[attr-defined]
    probe_names = [output.name for output in probe_run.get_outputs()]  # type: ignore[attr-defined]
    logits = float_names[0]

    values: list[dict[str, np.ndarray]] = []  # per image: every float value the layers read or write
    int8_logits, cumulative = [], {value: _Power() for value, probe in probes.items() if probe is not None}
    for feed in images.feeds(name):
        expected = dict(zip(float_names, float_run.run(None, feed))) | feed  # type: ignore[attr-defined]
        values.append(expected)
        int8_logits.append(int8_run.run(None, feed)[0])  # type: ignore[attr-defined]
        probed = dict(zip(probe_names, probe_run.run(None, feed))) | feed  # type: ignore[attr-defined]
        for value, power in cumulative.items():
            power.add(probed[probes[value] or value], expected[value])
    float_logits = np.concatenate([v[logits].reshape(len(v[logits]), -1) for v in values])

    rows = [LayerSQNR(name, "Input", cumulative[name].db if name in cumulative else math.inf)]
    float_cut, int8_cut = onnx.utils.Extractor(float_proto), onnx.utils.Extractor(int8_proto)
    for layer in layers:
        output = layer.output.name or ""
        if output not in cumulative:
            continue
        own = at_logits = None
        if per_layer:
            own, at_logits = _alone(layer, values, logits, name, read, int8_cut, float_cut, session)
        rows.append(LayerSQNR(layer.name, layer.op, cumulative[output].db, own, at_logits))
    batch_logits = np.concatenate([logit.reshape(len(logit), -1) for logit in int8_logits])
    return Measured(float_logits, batch_logits, tuple(rows))


def _alone(
    layer: Layer,
    values: list[dict[str, np.ndarray]],
    logits: str,
    image_input: str,
    read: _ReadValues,
    int8_cut: onnx.utils.Extractor,
    float_cut: onnx.utils.Extractor,
    session: Session,
) -> tuple[float | None, float | None]:
    """(own, at logits) SQNR of ``layer`` alone in int8; None where the int8 graph lacks its values."""
    inputs = list(dict.fromkeys(value.name or "" for value in layer.inputs))
    output = layer.output.name or ""
    int8_output = read(output)
    if int8_output is None or any(read(value) is None for value in inputs):
        return None, None
    try:
        cut = int8_cut.extract_model(inputs, [int8_output])
    except Exception:  # onnx's extractor refuses cuts it cannot make (a value it has no type for)
        return None, None
    own_run = session(cut)
    downstream = None
    if output != logits:
        downstream = session(float_cut.extract_model(list(dict.fromkeys([image_input, output])), [logits]))
    own, at_logits = _Power(), _Power()
    for expected in values:
        alone = own_run.run(None, {value: expected[value] for value in inputs})[0]  # type: ignore[attr-defined]
        own.add(alone, expected[output])
        if downstream is None:
            result = alone
        else:
            feed = {image_input: expected[image_input], output: alone}
            wanted = {value.name for value in downstream.get_inputs()}  # type: ignore[attr-defined]
            result = downstream.run(None, {k: v for k, v in feed.items() if k in wanted})[0]  # type: ignore[attr-defined]
        at_logits.add(result, expected[logits])
    return own.db, at_logits.db


def _inputs(layers: Sequence[Layer]) -> list[str]:
    return [value.name or "" for layer in layers for value in layer.inputs]


class _ReadValues:
    """The int8 graph's value the next layer reads for a float value: after its Q/DQ pair, if any."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for value in node.input:
                self.consumers.setdefault(value, []).append(node)
        self.known = {output for node in graph.node for output in node.output} | {v.name for v in graph.input}

    def __call__(self, value: str) -> str | None:
        if value not in self.known:
            return None
        for quantize in self.consumers.get(value, []):
            if quantize.op_type != "QuantizeLinear":
                continue
            for dequantize in self.consumers.get(quantize.output[0], []):
                if dequantize.op_type == "DequantizeLinear":
                    return dequantize.output[0]
        return value


def _with_outputs(proto: onnx.ModelProto, values: Sequence[str]) -> onnx.ModelProto:
    """A copy of ``proto`` that also outputs ``values`` (graph inputs and outputs already there left out)."""
    augmented = onnx.ModelProto()
    augmented.CopyFrom(proto)
    present = {output.name for output in augmented.graph.output} | {value.name for value in augmented.graph.input}
    for value in values:
        if value not in present:
            augmented.graph.output.append(onnx.ValueInfoProto(name=value))
            present.add(value)
    return augmented
