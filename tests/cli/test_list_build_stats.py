"""The command line: list, build, stats; user mistakes give a message and exit 2, no traceback."""

from __future__ import annotations

import json
import subprocess
import sys

import onnx
import pytest

from graphgen.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list_names_every_architecture(capsys):
    code, out, _ = run(capsys, "list", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert code == 0
    assert rows["resnet50"]["parameters"] == 25_557_032
    assert rows["efficientnet_lite0"]["resolution"] == 224
    code, out, _ = run(capsys, "list")
    assert "vgg16_bn" in out and "138,365,992" in out


def test_build_writes_a_checked_model(capsys, tmp_path):
    code, out, _ = run(
        capsys, "build", "resnet18", "-o", str(tmp_path / "m.onnx"), "--batch", "4", "--num-classes", "7"
    )
    assert code == 0 and "wrote" in out
    assert "; random weights (built without --weights): its classes mean nothing" in out  # (issue 20)
    model = onnx.load(str(tmp_path / "m.onnx"))
    onnx.checker.check_model(model, full_check=True)
    assert [d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim] == [4, 3, 224, 224]
    assert model.graph.output[0].type.tensor_type.shape.dim[1].dim_value == 7


def test_build_into_a_repository(capsys, tmp_path):
    code, _, _ = run(capsys, "build", "resnet18", "--repository", str(tmp_path))
    assert code == 0 and (tmp_path / "resnet18" / "1" / "model.onnx").is_file()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["build", "resnt50", "-o", "x.onnx"], "did you mean resnet50"),
        (["build", "resnet18"], "-o FILE or --repository DIR"),
        (["build", "resnet18", "-o", "x.onnx", "--weights", "/nonexistent.pth"], "no such file"),
        (["build", "resnet18", "-o", "x.onnx", "--deploy"], "does not take --deploy"),
        (["build", "alexnet", "-o", "x.onnx", "--resolution", "300"], "uneven windows"),
        (["stats", "/nonexistent/model.onnx"], "no such file"),
    ],
)
def test_user_mistakes_exit_2_with_a_message(capsys, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    code, _, err = run(capsys, *argv)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_corrupt_onnx_file(capsys, tmp_path):
    (tmp_path / "bad.onnx").write_bytes(b"\x08\x07 this is not a model")
    code, _, err = run(capsys, "stats", str(tmp_path / "bad.onnx"))
    assert code == 2 and "not a readable ONNX model" in err


def test_bad_option_values_are_usage_errors(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["build", "resnet18", "-o", "x.onnx", "--batch", "0"])
    assert exit_info.value.code == 2
    assert "positive integer" in capsys.readouterr().err


def test_stats_json_of_a_name_and_of_a_file(capsys, tmp_path):
    code, out, _ = run(capsys, "stats", "alexnet", "--json", "--batch", "2")
    data = json.loads(out)
    assert code == 0 and data["batch"] == 2
    assert data["totals"]["macs"] / 2e9 == pytest.approx(0.714, rel=0.01)  # per image: torchvision's 0.714
    run(capsys, "build", "alexnet", "-o", str(tmp_path / "a.onnx"))
    code, out, _ = run(capsys, "stats", str(tmp_path / "a.onnx"))
    assert code == 0 and "61,100,840 parameters" in out


def test_python_dash_m_graphgen():
    result = subprocess.run([sys.executable, "-m", "graphgen", "list"], capture_output=True, text=True, check=False)
    assert result.returncode == 0 and "resnet50" in result.stdout
