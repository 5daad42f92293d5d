"""``graphgen convert --int8``'s work after the graph passes: images, quantization, judgement, auto-keep.

Which images calibrate and which judge is decided once, here: ``--verify-images`` when given
(none of them may also calibrate), else every 4th ``--calibrate`` file is held out for judging
(:func:`~graphgen.int8.images.hold_out`) whenever something is judged (``--verify``, ``--auto-keep``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import onnx_ir as ir

from graphgen.errors import UserError
from graphgen.int8.autokeep import AutoKeep, auto_keep
from graphgen.int8.images import ImageSet, hold_out, image_files
from graphgen.int8.quantize import Int8Model, Int8Options, quantize
from graphgen.int8.report import Int8Report, evaluate
from graphgen.metadata import Preprocess


@dataclass(frozen=True)
class Int8Request:
    """What the user asked of int8: the image paths (files or folders), how to quantize, what to judge."""

    calibrate: tuple[str, ...]
    options: Int8Options = field(default_factory=Int8Options)
    verify_images: tuple[str, ...] = ()
    verify: bool = False
    auto_keep: int | None = None

    @property
    def judges(self) -> bool:
        return self.verify or self.auto_keep is not None


@dataclass(frozen=True)
class Int8Outcome:
    """The int8 model written, the images each side used, and the judgements made."""

    result: Int8Model
    calibration: tuple[Path, ...]
    held_out: tuple[Path, ...]
    report: Int8Report | None  # of the model written (after --auto-keep's layers went float)
    auto: AutoKeep | None

    def lines(self) -> list[str]:
        held = f"; {len(self.held_out)} held out for judging" if self.held_out else ""
        lines = [f"int8: {self.result.describe()}{held}"]
        if self.result.kernels is not None:
            lines.append(self.result.kernels.describe(self.result.kept))
        if self.auto is not None:
            lines += self.auto.lines()
        return lines


def split_images(request: Int8Request) -> tuple[list[Path], list[Path]]:
    """(calibration files, held-out files) as the module's docstring says."""
    calibration = image_files(request.calibrate, "--calibrate")
    if request.verify_images:
        held = image_files(request.verify_images, "--verify-images")
        shared = sorted(set(calibration) & set(held))
        if shared:
            raise UserError(
                f"--verify-images {shared[0]} also calibrates: int8 must be judged on images it was not calibrated on"
            )
        return calibration, held
    if request.judges:
        return hold_out(calibration)
    return calibration, []


def run_int8(model: ir.Model, request: Int8Request) -> Int8Outcome:
    """Quantize ``model`` as ``request`` says, and judge it when asked to."""
    rule = Preprocess.from_metadata(model.metadata_props)
    calibration_files, held_files = split_images(request)
    calibration = ImageSet.load(calibration_files, rule, "--calibrate")
    held = ImageSet.load(held_files, rule, "--verify-images") if held_files else None
    if request.auto_keep is not None and held is not None:
        auto = auto_keep(model, calibration, held, request.options, request.auto_keep)
        return Int8Outcome(auto.kept, tuple(calibration_files), tuple(held_files), auto.kept_report, auto)
    result = quantize(model, calibration, request.options)
    report = evaluate(model, result.model, held) if request.verify and held is not None else None
    return Int8Outcome(result, tuple(calibration_files), tuple(held_files), report, None)
