"""``graphgen profile A B …``, ``--runtime``, ``--trace``; ``graphgen bench --runtime``: the commands, in-process."""

from __future__ import annotations

import json

import pytest

from graphgen.build import BuildOptions, build, save
from graphgen.cli import main
from graphgen.profiling import openvino
from tests.support.int8 import quantize
from tests.support.trace_events import format_errors

TINY = ["--resolution", "32", "--num-classes", "10"]
needs_openvino = pytest.mark.skipif(
    openvino.unavailable_reason() is not None, reason=str(openvino.unavailable_reason())
)


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def fp32_and_int8(tmp_path_factory):
    folder = tmp_path_factory.mktemp("forms")
    fp32 = save(build("resnet18", BuildOptions(resolution=32, num_classes=10)), folder / "resnet18.onnx")
    return fp32, quantize(fp32, folder / "resnet18_int8.onnx", (1, 3, 32, 32))


def test_fp32_and_int8_files_give_per_layer_ratios_a_plot_and_a_trace(capsys, tmp_path, fp32_and_int8):
    from PIL import Image

    fp32, int8 = fp32_and_int8
    plot, trace = tmp_path / "compared.png", tmp_path / "compared.json"
    argv = ["profile", str(fp32), str(int8), "--runs", "3", "--threads", "1", "--plot", str(plot)]
    code, out, _ = _run(capsys, *argv, "--trace", str(trace), "--plot-size", "1000x800")
    assert code == 0
    assert f"form 0: {fp32}" in out and f"form 1: {int8}" in out and "1 ÷ 0" in out
    line = next(line for line in out.splitlines() if line.startswith("layer4.0.conv2 + layer4.0.add"))
    assert line.rstrip().endswith("×")  # a ratio for the layer, int8 over fp32
    # each form's median run, or its fastest where a profile's runs were disturbed (then every form's)
    assert (f"total 1 ({int8}): median run" in out or f"total 1 ({int8}): fastest run" in out) and "× form 0" in out
    assert Image.open(plot).size == (1000, 800)
    events = json.loads(trace.read_text())
    assert format_errors(events) == []
    processes = {e["args"]["name"] for e in events["traceEvents"] if e["name"] == "process_name"}
    assert processes == {f"{fp32} — CPUExecutionProvider", f"{int8} — CPUExecutionProvider"}


def test_a_form_is_a_name_with_convert_flags_and_json_gives_the_comparison(capsys):
    code, out, _ = _run(capsys, "profile", "resnet18", "resnet18 --fp16", *TINY, "--runs", "2", "--json")
    assert code == 0
    data = json.loads(out)
    assert [form["label"] for form in data["forms"]] == ["resnet18", "resnet18 --fp16"]
    rows = {row["layer"]: row for row in data["comparison"]["rows"]}
    assert rows["fc"]["ratios"][1] is not None and rows["fc"]["kind"] == "dense"
    assert data["comparison"]["forms"][1]["total_ratio"] > 0


def test_a_folded_repvgg_meets_its_training_form_block_by_block(capsys):
    argv = ["profile", "repvgg_a0", "repvgg_a0 --fold-repvgg --fold-bn", "--keep-bn", *TINY, "--runs", "2", "--json"]
    code, out, _ = _run(capsys, *argv)
    assert code == 0
    rows = {row["layer"]: row for row in json.loads(out)["comparison"]["rows"]}
    block = rows["stages.2.7.* (9 nodes)"]  # 3x3 + 1x1 + identity branches, adds, ReLU → one conv and its ReLU
    assert "stages.2.7.reparam_conv" in block["nodes"] and "stages.2.7.conv_1x1.conv" in block["nodes"]
    assert all(time is not None for time in block["times_us"])
    assert not [row for row in rows.values() if row["only_in"]]  # every row meets the other form


def test_bad_forms_and_impossible_combinations_are_refused(capsys, fp32_and_int8):
    code, _, err = _run(capsys, "profile", "resnet18 --no-such-flag", *TINY, "--runs", "1")
    assert code == 2 and "profile 'resnet18 --no-such-flag'" in err and "--no-such-flag" in err
    code, _, err = _run(capsys, "profile", "resnet18 '--fp16", *TINY)
    assert code == 2 and "No closing quotation" in err
    fp32, int8 = fp32_and_int8
    code, _, err = _run(capsys, "profile", str(fp32), str(int8), "--roofline", "r.png")
    assert code == 2 and "--roofline draws one profile" in err
    with pytest.raises(SystemExit):
        main(["profile", str(fp32), "--trace", "trace.txt"])
    assert "ending in .json" in capsys.readouterr().err


@needs_openvino
def test_two_runtimes_side_by_side_state_openvinos_precision_and_threads(capsys, tmp_path):
    trace = tmp_path / "runtimes.json"
    argv = ["profile", "resnet18", *TINY, "--runtime", "onnxruntime", "--runtime", "openvino", "--threads", "1"]
    code, out, _ = _run(capsys, *argv, "--runs", "3", "--trace", str(trace))
    assert code == 0
    assert "form 0: resnet18 on onnxruntime — CPUExecutionProvider" in out
    assert "form 1: resnet18 on openvino — OpenVINO CPU f32" in out
    assert "INFERENCE_PRECISION_HINT f32 (asked for" in out and "1 thread, pinning off" in out
    line = next(line for line in out.splitlines() if line.startswith("layer4.1.conv2 + layer4.1.add"))
    assert line.rstrip().endswith("×")
    assert format_errors(json.loads(trace.read_text())) == []
    code, _, err = _run(capsys, "profile", "resnet18", *TINY, "--runtime", "openvino", "--device", "cuda")
    assert code == 2 and "OpenVINO's CPU plugin" in err


@needs_openvino
def test_bench_interleaves_the_runtimes_and_names_their_ratio(capsys):
    code, out, _ = _run(
        capsys,
        "bench",
        "resnet18",
        "--runtime",
        "onnxruntime",
        "--runtime",
        "openvino",
        "--threads",
        "1",
        "--runs",
        "2",
        "--openvino-precision",
        "f32",
    )
    assert code == 0
    assert "CPUExecutionProvider" in out and "OpenVINO CPU f32" in out
    assert (
        "resnet18 batch 1: step time ÷ CPUExecutionProvider's: OpenVINO CPU f32" in out and "(runs interleaved)" in out
    )
