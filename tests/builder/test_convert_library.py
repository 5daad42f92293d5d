"""graphgen.convert as a library: ConvertOptions → steps → a converted model, with no argparse in sight."""

from __future__ import annotations

import dataclasses

import pytest

from graphgen.build import BuildOptions, build
from graphgen.cli import make_parser
from graphgen.cli.convert import options_from
from graphgen.convert import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    NOTHING_TO_DO,
    ConvertOptions,
    convert,
    plan,
    reference_for,
    verify,
)
from graphgen.errors import UserError


@pytest.fixture(scope="module")
def resnet18_with_bn():
    return build("resnet18", BuildOptions(keep_bn=True, resolution=32))


def test_contradictions_are_refused_when_the_options_are_made() -> None:
    with pytest.raises(UserError, match="--cut removes the head"):
        ConvertOptions(cut="features", num_classes=3)
    with pytest.raises(UserError, match="--keep-io-types only applies with --fp16"):
        ConvertOptions(keep_io_types=True)


def test_no_conversion_asked_for_is_nothing_to_do() -> None:
    with pytest.raises(UserError) as raised:
        plan(ConvertOptions(verify=True, seed=3))
    assert str(raised.value) == NOTHING_TO_DO


def test_steps_run_in_the_fixed_order_whatever_the_fields_order() -> None:
    options = ConvertOptions(opset=17, fp16=True, num_classes=5, fold_bn=True, fold_repvgg=True, inline=True)
    assert [step.flag for step in plan(options)] == ["inline", "fold-repvgg", "fold-bn", "head", "fp16", "opset"]
    assert [step.flag for step in plan(ConvertOptions(cut="features", group_branches=True))] == [
        "group-branches",
        "cut",
    ]


def test_tolerance_follows_the_precision_unless_given() -> None:
    assert ConvertOptions(fold_bn=True).verify_tolerance == FP32_TOLERANCE
    assert ConvertOptions(fp16=True).verify_tolerance == FP16_TOLERANCE
    assert ConvertOptions(fp16=True, tolerance=0.1).verify_tolerance == 0.1


def test_convert_reports_each_step_and_leaves_the_input_alone(resnet18_with_bn) -> None:
    nodes = len(resnet18_with_bn.graph)
    heard = []
    options = ConvertOptions(fold_bn=True, num_classes=7, seed=1)
    conversion = convert(resnet18_with_bn, options, on_step=heard.append)
    assert heard == conversion.reports
    assert [report.flag for report in conversion.reports] == ["fold-bn", "head"]
    fold = conversion.reports[0]
    assert fold.rewrites > 0 and fold.message.startswith(f"{fold.rewrites} node(s) folded away")
    assert len(resnet18_with_bn.graph) == nodes  # the input is never touched
    assert len(conversion.model.graph) < nodes
    assert conversion.model.graph.outputs[0].shape[-1] == 7
    # the reference carries the same new head, so the folded model computes what it computes
    checks = verify(reference_for(resnet18_with_bn, options), conversion.model, options.verify_tolerance)
    assert checks and all(check.ok for check in checks), [check.line for check in checks]


def test_verify_names_an_output_beyond_tolerance(resnet18_with_bn) -> None:
    converted = convert(resnet18_with_bn, ConvertOptions(fp16=True)).model
    (check,) = verify(resnet18_with_bn, converted, tolerance=1e-9)
    assert not check.ok and check.relative is not None and check.relative > 1e-9
    assert check.line.endswith("FAILED: beyond tolerance")


def test_every_option_is_a_flag_of_the_convert_command() -> None:
    """options_from reads each field from the parsed flags: a field without its flag would fail here."""
    parser = make_parser("convert")
    plain = parser.parse_args(["convert", "in.onnx", "-o", "out.onnx"])
    assert options_from(plain) == ConvertOptions()  # and each flag's default is the field's
    args = parser.parse_args(["convert", "in.onnx", "-o", "out.onnx", "--fold-bn", "--seed", "4", "--batch", "2"])
    assert options_from(args) == ConvertOptions(fold_bn=True, seed=4, batch=2)
    assert all(hasattr(args, field.name) for field in dataclasses.fields(ConvertOptions))
