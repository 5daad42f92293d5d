"""Graph conversions on any ONNX model, as a library: :class:`ConvertOptions` → steps → a new model.

Passes run in a fixed order — local functions inlined, multibranch blocks to grouped
convolutions, RepVGG blocks to one convolution, BatchNorm folding, head surgery, float16, opset —
and each reports what it rewrote, or says plainly that it found nothing. :func:`verify` runs a
reference and the result on onnxruntime (CPU) with the same random inputs and judges every
output against a tolerance. Head surgery changes what the model computes on purpose, so the
reference (:func:`reference_for`) is then the input with the same new head (same seed or
checkpoint) or the same cut.

``graphgen convert`` (:mod:`graphgen.cli.convert`) only parses its flags into a
:class:`ConvertOptions` and prints what these functions return. A new conversion is a field of
:class:`ConvertOptions` (checked in :meth:`ConvertOptions.check`), a :class:`Step` in
:func:`plan`, and the flag of the same name on the command line.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx_ir as ir

from graphgen.errors import UserError
from graphgen.metadata import HEAD
from graphgen.passes import PassResult, cut_head, fold_repvgg, group_branches, inference_form, replace_head, to_fp16
from graphgen.passes.inline import inline_functions
from graphgen.passes.opset import convert_opset

if TYPE_CHECKING:  # graphgen.int8 imports onnxruntime's quantizer: only a --int8 conversion loads it
    from graphgen.int8.pipeline import Int8Outcome, Int8Request

FP32_TOLERANCE = 1e-5
FP16_TOLERANCE = 5e-3  # float16 keeps 11 significant bits; converted CNNs land near 5e-4
NOTHING_TO_DO = (
    "nothing to do: ask for --inline, --group-branches, --fold-repvgg, --fold-bn, --num-classes, --cut, "
    "--fp16, --opset or --int8"
)
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
_INT8_ONLY = {  # field: flag, for the flags that only mean something with --int8
    "calibrate": "--calibrate",
    "per_tensor": "--per-tensor",
    "keep_float": "--keep-float",
    "auto_keep": "--auto-keep",
    "verify_images": "--verify-images",
}


@dataclass(frozen=True)
class ConvertOptions:
    """What to convert, each field named as its ``graphgen convert`` flag; the steps run in :func:`plan`'s order.

    A contradiction (``--cut`` with a new head, ``--keep-io-types`` without ``--fp16``) is a
    :class:`~graphgen.errors.UserError` when the options are made.
    """

    inline: bool = False  # local functions -> one flat graph (first: the other passes read flat graphs)
    group_branches: bool = False  # ResNeXt-style parallel branches -> one grouped convolution
    fold_repvgg: bool = False  # 3x3 + 1x1 + identity branches -> one 3x3 convolution
    fold_bn: bool = False  # the inference form: Conv -> BatchNormalization -> one Conv; nested Concats -> one
    num_classes: int | None = None  # a new, random classifier with this many classes
    head_weights: str | Path | None = None  # a new classifier from a checkpoint's weight/bias
    cut: str | None = None  # drop the head: "features" or a stage's name
    seed: int = 0  # of the random head and of verification's inputs
    fp16: bool = False  # float16 weights and compute
    keep_io_types: bool = False  # with fp16: float32 inputs and outputs
    opset: int | None = None  # write this ONNX opset
    verify: bool = False  # compare the result with the input (see reference_for) on onnxruntime
    tolerance: float | None = None  # largest relative difference; None: by precision (verify_tolerance)
    batch: int = 1  # images in verification's random inputs
    int8: bool = False  # QDQ int8 by onnxruntime's quantizer, calibrated on images (last: after every pass)
    calibrate: tuple[str, ...] = ()  # image files or folders: the calibration images
    calibration_method: str = "minmax"  # minmax, entropy or percentile
    per_tensor: bool = False  # one weight scale per tensor instead of per output channel
    activations: str = "int8"  # int8 (signed) or uint8 activations; weights are signed int8
    keep_float: tuple[str, ...] = ()  # graphgen layer names left float
    auto_keep: int | None = None  # leave this many most sensitive layers float, and report what it bought
    verify_images: tuple[str, ...] = ()  # held-out images that judge int8 (default: every 4th of --calibrate)

    def __post_init__(self) -> None:
        self.check()

    def check(self) -> None:
        """Raise :class:`UserError` when the options contradict one another."""
        if self.cut is not None and (self.num_classes is not None or self.head_weights is not None):
            raise UserError("--cut removes the head: it does not combine with --num-classes or --head-weights")
        if self.keep_io_types and not self.fp16:
            raise UserError("--keep-io-types only applies with --fp16")
        self._check_int8()

    def _check_int8(self) -> None:
        if not self.int8:
            given = [flag for name, flag in _INT8_ONLY.items() if getattr(self, name) not in ((), False, None)]
            given += ["--calibration-method"] if self.calibration_method != "minmax" else []
            given += ["--activations"] if self.activations != "int8" else []
            if given:
                raise UserError(f"{given[0]} only applies with --int8")
            return
        if self.fp16:
            raise UserError("--int8 and --fp16 are two precisions: ask for one")
        if not self.calibrate:
            raise UserError(
                "--int8 needs --calibrate DIR|FILE...: images preprocessed as the model says set the int8 ranges "
                "(a random calibration cannot judge accuracy)"
            )
        if self.calibration_method not in CALIBRATION_METHODS:
            choices = ", ".join(CALIBRATION_METHODS)
            raise UserError(f"--calibration-method {self.calibration_method}: choose one of {choices}")
        if self.tolerance is not None:
            raise UserError("--tolerance judges lossless conversions; --int8 --verify reports agreement instead")

    @property
    def verify_tolerance(self) -> float:
        if self.tolerance is not None:
            return self.tolerance
        return FP16_TOLERANCE if self.fp16 else FP32_TOLERANCE


@dataclass(frozen=True)
class Step:
    """One conversion: its flag, the pass, and how to say what it did."""

    flag: str
    run: Callable[[ir.Model], PassResult]
    did: str  # "{n} ..." what n rewrites mean ({head}: the new head's metadata)
    nothing: str  # what it says when it found nothing


@dataclass(frozen=True)
class StepReport:
    """What one step did: its rewrites, a sentence saying so, and the pass's own notes."""

    flag: str
    rewrites: int
    message: str
    notes: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        return [f"{self.flag}: {self.message}", *(f"{self.flag}: {note}" for note in self.notes)]


@dataclass(frozen=True)
class Conversion:
    """The converted model and, in order, what each step did."""

    model: ir.Model
    reports: list[StepReport] = field(default_factory=list)
    float_model: ir.Model | None = None  # with --int8: the model quantized (after the passes)
    int8: Int8Outcome | None = None


_FP16_ALL = "{n} tensors, casts and inputs/outputs -> float16"
_FP16_KEPT_IO = "{n} tensors and casts -> float16; inputs and outputs kept float32 (--keep-io-types)"


def plan(options: ConvertOptions) -> list[Step]:
    """The steps ``options`` ask for, in the order they run; :data:`NOTHING_TO_DO` when none."""
    steps = []
    if options.inline:
        steps.append(
            Step("inline", inline_functions, "{n} function call(s) inlined: a flat graph", "found no local functions")
        )
    if options.group_branches:
        steps.append(
            Step(
                "group-branches",
                group_branches,
                "{n} multibranch block(s) -> grouped convolution",
                "found no multibranch blocks",
            )
        )
    if options.fold_repvgg:
        steps.append(
            Step("fold-repvgg", fold_repvgg, "{n} RepVGG block(s) -> one convolution each", "found no RepVGG blocks")
        )
    if options.fold_bn:
        steps.append(
            Step(
                "fold-bn",
                inference_form,
                "{n} node(s) folded away (inference form)",
                "found no Conv -> BatchNormalization or constant-scale pairs, no nested Concats",
            )
        )
    head = head_surgery(options)
    if head is not None:
        steps.append(head)
    if options.fp16:
        keep_io_types = options.keep_io_types
        steps.append(
            Step(
                "fp16",
                lambda model: to_fp16(model, keep_io_types=keep_io_types),
                _FP16_KEPT_IO if keep_io_types else _FP16_ALL,
                "found nothing in float32",
            )
        )
    if options.opset is not None:
        opset = options.opset
        steps.append(
            Step(
                "opset",
                lambda model: convert_opset(model, opset),
                f"{{n}} node(s) checked and written at opset {opset}",
                f"already at opset {opset}",
            )
        )
    if not steps and not options.int8:
        raise UserError(NOTHING_TO_DO)
    return steps


def head_surgery(options: ConvertOptions) -> Step | None:
    """The step that cuts or replaces the head, if the options ask for one."""
    cut = options.cut
    if cut is not None:
        return Step(
            "cut", lambda model: cut_head(model, cut), f"cut to {cut!r}: output 'features'", f"already cut to {cut!r}"
        )
    if options.num_classes is None and options.head_weights is None:
        return None
    num_classes, weights, seed = options.num_classes, options.head_weights, options.seed

    def new_head(model: ir.Model) -> PassResult:
        return replace_head(model, num_classes, weights=weights, seed=seed)

    return Step("head", new_head, "new classifier, {head}", "the head already has exactly these weights")


def convert(
    model: ir.Model, options: ConvertOptions, on_step: Callable[[StepReport], None] | None = None
) -> Conversion:
    """Run the steps ``options`` ask for on ``model`` (left untouched); ``on_step`` hears each as it ends.

    ``--int8`` runs last, on the passes' result (:mod:`graphgen.int8.pipeline`).
    """
    reports = []
    for step in plan(options):
        result = step.run(model)
        model = result.model
        if result.rewrites:
            head = model.metadata_props.get(HEAD, "")
            message = step.did.replace("{n}", str(result.rewrites)).replace("{head}", head)
        else:
            message = f"{step.nothing}; nothing changed"
        report = StepReport(step.flag, result.rewrites, message, result.notes)
        reports.append(report)
        if on_step is not None:
            on_step(report)
    if not options.int8:
        return Conversion(model, reports)
    from graphgen.int8.pipeline import run_int8

    outcome = run_int8(model, int8_request(options))
    first, *notes = outcome.lines()
    report = StepReport("int8", len(outcome.result.int8_layers), first.removeprefix("int8: "), tuple(notes))
    reports.append(report)
    if on_step is not None:
        on_step(report)
    return Conversion(outcome.result.model, reports, model, outcome)


def int8_request(options: ConvertOptions) -> Int8Request:
    """The int8 part of ``options`` as :mod:`graphgen.int8.pipeline` takes it."""
    from graphgen.int8.pipeline import Int8Request
    from graphgen.int8.quantize import Int8Options

    return Int8Request(
        calibrate=tuple(map(str, options.calibrate)),
        options=Int8Options(
            options.calibration_method, not options.per_tensor, tuple(options.keep_float), options.activations
        ),
        verify_images=tuple(map(str, options.verify_images)),
        verify=options.verify,
        auto_keep=options.auto_keep,
    )


def reference_for(original: ir.Model, options: ConvertOptions) -> ir.Model:
    """What the converted model must compute: the original, with the same head surgery if any."""
    surgery = head_surgery(options)
    return surgery.run(original).model if surgery is not None else original


@dataclass(frozen=True)
class OutputCheck:
    """One line of a verification: an output compared, or why the outputs cannot be compared."""

    output: str | None  # None: the model as a whole (a different number of outputs)
    ok: bool
    detail: str
    max_abs: float | None = None  # None where no numbers were compared (count or shape differ)
    relative: float | None = None

    @property
    def line(self) -> str:
        return f"verify: {self.output}: {self.detail}" if self.output is not None else f"verify: {self.detail}"


def verify(
    reference: ir.Model, converted: ir.Model, tolerance: float, *, batch: int = 1, seed: int = 0
) -> list[OutputCheck]:
    """Run both on the same random inputs and compare every output; all ``ok`` when within ``tolerance``.

    The relative difference is max |converted − reference| / max |reference| per output:
    elementwise ratios mean nothing where the reference is near zero.
    """
    inputs = _random_inputs(reference, batch, seed)
    expected = _run(reference, inputs)
    cast = {
        value.name: inputs[value.name].astype(value.dtype.numpy())
        for value in converted.graph.inputs
        if value.name in inputs and value.dtype is not None
    }
    actual = _run(converted, cast)
    if len(actual) != len(expected):
        return [OutputCheck(None, False, f"FAILED: {len(actual)} outputs where the reference has {len(expected)}")]
    checks = []
    for value, want, got in zip(reference.graph.outputs, expected, actual):
        name = value.name or ""
        if want.shape != got.shape:
            shapes = f"FAILED: shape {list(got.shape)}, reference {list(want.shape)}"
            checks.append(OutputCheck(name, False, shapes))
            continue
        difference = np.abs(got.astype(np.float64) - want.astype(np.float64))
        max_abs = float(difference.max()) if difference.size else 0.0
        relative = max_abs / max(float(np.abs(want).max()) if want.size else 0.0, 1e-30)
        ok = relative <= tolerance
        verdict = "ok" if ok else "FAILED: beyond tolerance"
        detail = f"max abs diff {max_abs:.3g}, max relative diff {relative:.3g} (tolerance {tolerance:g}): {verdict}"
        checks.append(OutputCheck(name, ok, detail, max_abs, relative))
    return checks


def _random_inputs(model: ir.Model, batch: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    inputs: dict[str, np.ndarray] = {}
    for value in model.graph.inputs:
        if value.is_initializer() or value.name is None:
            continue
        shape = [dim if isinstance(dim, int) else batch for dim in (value.shape or [])]
        dtype = value.dtype.numpy() if value.dtype is not None else np.float32
        if np.issubdtype(dtype, np.floating):
            inputs[value.name] = rng.standard_normal(shape).astype(dtype)
        else:
            inputs[value.name] = rng.integers(0, 2, shape).astype(dtype)
    return inputs


def _run(model: ir.Model, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    from graphgen.onnx_io import save_model

    options = ort.SessionOptions()
    options.log_severity_level = 3
    with tempfile.TemporaryDirectory() as folder:  # a file, not bytes: models may pass protobuf's 2 GB
        path = save_model(model, Path(folder) / "model.onnx")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)
