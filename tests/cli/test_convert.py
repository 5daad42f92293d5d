"""``graphgen convert``: reports per pass, --verify's verdict and exit codes, bad input files."""

from __future__ import annotations

import functools
import hashlib
import operator
from pathlib import Path

import onnx
import onnx_ir as ir
import pytest

from graphgen.build import BuildOptions, build, save
from graphgen.cli import main
from graphgen.onnx_io import load_model
from tests.support.passes import export, op_counts, randomize_batchnorm

torch = pytest.importorskip("torch")


def convert(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["convert", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def resnet18_with_bn(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "resnet18.onnx"
    save(build("resnet18", BuildOptions(keep_bn=True, resolution=32)), path)
    return path


def _path() -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Conv2d(16, 4, 1, bias=False),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, padding=1, bias=False),
        torch.nn.BatchNorm2d(4),
        torch.nn.ReLU(),
        torch.nn.Conv2d(4, 16, 1, bias=False),
    )


class Paths(torch.nn.Module):
    """Four 1×1 → BN → ReLU → 3×3 → BN → ReLU → 1×1 paths summed (ResNeXt form a), then BN."""

    def __init__(self) -> None:
        super().__init__()
        self.branches = torch.nn.ModuleList(_path() for _ in range(4))
        self.bn = torch.nn.BatchNorm2d(16)

    def forward(self, x):
        return torch.relu(self.bn(functools.reduce(operator.add, [path(x) for path in self.branches])) + x)


def test_group_and_fold_then_verify(capsys, tmp_path) -> None:
    module = Paths()
    randomize_batchnorm(module)
    source = tmp_path / "paths.onnx"
    export(module, (1, 16, 8, 8), source, keep_bn=True)
    before = digest(source)
    target = tmp_path / "grouped.onnx"
    code, out, _ = convert(capsys, str(source), "-o", str(target), "--group-branches", "--fold-bn", "--verify")
    assert code == 0, out
    assert "group-branches: 1 multibranch block(s) -> grouped convolution" in out
    assert "fold-bn: 3 node(s) folded away (inference form)" in out
    assert (
        "fold-bn: 3 BatchNormalization(s) and constant scale(s) folded into convolutions" in out
    )  # the two stacked, and the one after the sum
    assert "nodes: " in out and "parameters: " in out
    assert "verify: output: max abs diff" in out and "): ok" in out
    assert digest(source) == before
    result = load_model(target)
    assert op_counts(result) == {"Conv": 3, "Relu": 3, "Add": 1}
    assert [n.attributes.get_int("group", 1) for n in result.graph if n.op_type == "Conv"] == [1, 4, 1]


def test_a_pass_that_finds_nothing_says_so(capsys, resnet18_with_bn: Path, tmp_path) -> None:
    code, out, _ = convert(
        capsys, str(resnet18_with_bn), "-o", str(tmp_path / "out.onnx"), "--fold-repvgg", "--group-branches"
    )
    assert code == 0
    assert "fold-repvgg: found no RepVGG blocks; nothing changed" in out
    assert "group-branches: found no multibranch blocks; nothing changed" in out


def test_fold_bn_fp16_and_new_head_verified(capsys, resnet18_with_bn: Path, tmp_path) -> None:
    target = tmp_path / "out.onnx"
    code, out, _ = convert(
        capsys,
        str(resnet18_with_bn),
        "-o",
        str(target),
        "--fold-bn",
        "--num-classes",
        "10",
        "--fp16",
        "--keep-io-types",
        "--verify",
        "--batch",
        "2",
    )
    assert code == 0, out
    assert "fold-bn: 20 BatchNormalization(s)" in out and "head: new classifier, 10 classes (random, seed 0)" in out
    assert "tolerance 0.005): ok" in out
    result = load_model(target)
    assert list(result.graph.outputs[0].shape)[1] == 10 and "BatchNormalization" not in op_counts(result)


def test_verify_fails_beyond_tolerance(capsys, resnet18_with_bn: Path, tmp_path) -> None:
    code, out, _ = convert(
        capsys, str(resnet18_with_bn), "-o", str(tmp_path / "out.onnx"), "--fp16", "--verify", "--tolerance", "1e-9"
    )
    assert code == 1
    assert "FAILED: beyond tolerance" in out


def test_cut_to_features(capsys, resnet18_with_bn: Path, tmp_path) -> None:
    target = tmp_path / "features.onnx"
    code, out, _ = convert(capsys, str(resnet18_with_bn), "-o", str(target), "--cut", "features", "--verify")
    assert code == 0 and "cut: cut to 'features'" in out and "verify: features:" in out
    assert [v.name for v in load_model(target).graph.outputs] == ["features"]


@pytest.mark.parametrize(
    ("content", "message"),
    [(b"this is not a model", "not a readable ONNX model"), (b"", "not an ONNX model"), (None, "no such file")],
    ids=["text", "empty", "missing"],
)
def test_bad_input_files(capsys, tmp_path, content: bytes | None, message: str) -> None:
    source = tmp_path / "bad.onnx"
    if content is not None:
        source.write_bytes(content)
    code, _, err = convert(capsys, str(source), "-o", str(tmp_path / "out.onnx"), "--fold-bn")
    assert code == 2 and message in err and "Traceback" not in err


def test_truncated_model(capsys, resnet18_with_bn: Path, tmp_path) -> None:
    source = tmp_path / "truncated.onnx"
    source.write_bytes(resnet18_with_bn.read_bytes()[:100_000])
    code, _, err = convert(capsys, str(source), "-o", str(tmp_path / "out.onnx"), "--fold-bn")
    assert code == 2 and "graphgen: error:" in err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ((), "nothing to do"),
        (("--fold-bn", "--same-output"), "refusing to overwrite the input"),
        (("--cut", "features", "--num-classes", "3"), "does not combine"),
        (("--keep-io-types", "--fold-bn"), "only applies with --fp16"),
    ],
    ids=["no-pass", "overwrite", "cut-and-head", "keep-io-alone"],
)
def test_usage_errors(capsys, resnet18_with_bn: Path, tmp_path, extra: tuple[str, ...], message: str) -> None:
    output = str(resnet18_with_bn) if "--same-output" in extra else str(tmp_path / "out.onnx")
    code, _, err = convert(capsys, str(resnet18_with_bn), "-o", output, *(e for e in extra if e != "--same-output"))
    assert code == 2 and message in err


def test_weights_in_external_data(capsys, tmp_path) -> None:
    """An input whose weights sit in a .data file beside it: the result elsewhere holds them itself."""
    source = tmp_path / "in" / "model.onnx"
    source.parent.mkdir()
    model = build("resnet18", BuildOptions(keep_bn=True, resolution=32))
    ir.save(model, source, external_data="model.onnx.data", size_threshold_bytes=0)
    target = tmp_path / "out" / "folded.onnx"
    target.parent.mkdir()  # graphgen creates no folder unasked
    code, out, _ = convert(capsys, str(source), "-o", str(target), "--fold-bn", "--verify")
    assert code == 0 and "): ok" in out
    proto = onnx.load(str(target), load_external_data=False)
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in proto.graph.initializer)


def test_fp16_with_kept_io_types_says_the_io_stays_float32(tmp_path, capsys):
    """`convert --fp16 --keep-io-types` reported 'inputs/outputs -> float16' while it kept them float32."""
    import onnx

    from graphgen.cli import main
    from tests.support.server import add_tiny_model

    source = add_tiny_model(tmp_path / "repository")
    assert main(["convert", str(source), "-o", str(tmp_path / "half.onnx"), "--fp16", "--keep-io-types"]) == 0
    assert "inputs and outputs kept float32" in capsys.readouterr().out
    graph = onnx.load(str(tmp_path / "half.onnx"), load_external_data=False).graph
    assert {value.type.tensor_type.elem_type for value in [*graph.input, *graph.output]} == {onnx.TensorProto.FLOAT}
