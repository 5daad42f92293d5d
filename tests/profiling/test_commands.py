"""``graphgen profile`` and ``graphgen bench`` in-process, on small cases; fp16 models profiled too."""

from __future__ import annotations

import json

import pytest

from graphgen.build import BuildOptions, build, save
from graphgen.cli import main
from graphgen.passes import to_fp16
from graphgen_server.core.providers import cuda_unavailable_reason

TINY = ["--resolution", "32", "--num-classes", "10"]


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    model = build("efficientnet_lite0", BuildOptions(resolution=64, num_classes=10))
    paths = {"fp32": save(model, folder / "fp32.onnx")}
    for name, keep in (("fp16", False), ("fp16-io32", True)):
        paths[name] = save(to_fp16(model, keep_io_types=keep).model, folder / f"{name}.onnx")
    return paths


def test_profile_json_gives_time_spread_macs_and_achieved_rates(capsys):
    code, out, _ = _run(capsys, "profile", "efficientnet_lite0", *TINY, "--runs", "4", "--batch", "2", "--json")
    assert code == 0
    profile = json.loads(out)
    assert profile["runs"] == 4 and profile["batch"] == 2 and profile["warmup_runs"] == 2
    assert profile["timing"] == "host" and profile["spread"] == "p10-p90" and profile["setup_us"] > 0
    rows = profile["rows"]
    convs = [r for r in rows if r["macs"]]
    assert len(convs) > 40 and all(r["gmac_per_s"] > 0 and r["gb_per_s"] > 0 for r in convs)
    assert all(r["time"]["p10"] <= r["time"]["median"] <= r["time"]["p90"] for r in rows)
    # Joined with graphgen stats at batch 2: the rows' MACs are the model's.
    code, out, _ = _run(capsys, "stats", "efficientnet_lite0", *TINY, "--batch", "2", "--json")
    assert sum(r["macs"] for r in rows) == json.loads(out)["totals"]["macs"]
    kinds = {r["kind"] for r in convs}
    assert {"depthwise conv", "1x1 conv", "3x3 conv", "dense"} <= kinds
    assert sum(r["share"] for r in rows) == pytest.approx(1.0)


def test_profile_table_plot_and_roofline(capsys, tmp_path):
    from PIL import Image

    plot, roofline = tmp_path / "layers.png", tmp_path / "roofline.png"
    argv = ["profile", "efficientnet_lite0", *TINY, "--runs", "3", "--plot", str(plot), "--roofline", str(roofline)]
    code, out, _ = _run(capsys, *argv, "--plot-size", "900x700")
    assert code == 0
    # "min µs" where the runs were disturbed (each row's fastest run then)
    assert ("median µs" in out or "min µs" in out) and "p10-p90 µs" in out
    assert "GMAC/s" in out and "times: kernel time on the host" in out
    assert "profiling session: built in" in out and "roof:" in out and "GMAC/s peak" in out
    for path in (plot, roofline):
        assert Image.open(path).size == (900, 700)


def test_profile_of_fp16_models_with_and_without_float32_io(capsys, models):
    for name in ("fp16", "fp16-io32"):
        code, out, _ = _run(capsys, "profile", str(models[name]), "--runs", "3", "--json")
        assert code == 0, name
        profile = json.loads(out)
        convs = [r for r in profile["rows"] if r["macs"]]
        assert convs and all(r["weight_bytes"] > 0 for r in convs)
        # Half the weight bytes of the float32 model's: the join reads the element type.
        assert {r["kind"] for r in convs} >= {"depthwise conv", "1x1 conv"}
    code, out, _ = _run(capsys, "profile", str(models["fp32"]), "--runs", "3", "--json")
    fp32 = {r["kernel"]: r["weight_bytes"] for r in json.loads(out)["rows"] if r["macs"]}
    half = {r["kernel"]: r["weight_bytes"] for r in profile["rows"] if r["macs"]}
    common = fp32.keys() & half.keys()
    assert common and sum(half[k] for k in common) < 0.6 * sum(fp32[k] for k in common)


def test_profile_refuses_what_it_cannot_do(capsys, tmp_path):
    code, _, err = _run(capsys, "profile", "resnet5O")
    assert code == 2 and "did you mean" in err
    code, _, err = _run(capsys, "profile", str(tmp_path / "missing.onnx"))
    assert code == 2 and "missing.onnx" in err
    if cuda_unavailable_reason() is not None:
        code, _, err = _run(capsys, "profile", "efficientnet_lite0", *TINY, "--device", "cuda", "--runs", "1")
        assert code == 2 and "--device cuda" in err


@pytest.mark.skipif(cuda_unavailable_reason() is None, reason="CUDA works here: bench runs on it")
def test_bench_on_cuda_refuses_like_profile_where_cuda_does_not_start(capsys):
    # onnxruntime-gpu lists CUDA among its providers here, builds the session on the CPU, and bench
    # used to time that and exit 0 (issue 20).
    code, out, err = _run(capsys, "bench", "squeezenet1_1", "--device", "cuda", "--runs", "1")
    assert code == 2 and "--device cuda: onnxruntime could not start CUDAExecutionProvider" in err
    assert "CPUExecutionProvider" in err and "step" not in out  # no table of CPU times


def test_bench_prints_latency_throughput_gmacs_and_params_and_plots(capsys, tmp_path):
    from PIL import Image

    plot, table = tmp_path / "bench.png", tmp_path / "bench.csv"
    argv = ["bench", "squeezenet1_1", "repvgg_a0", "--deploy", "--batch", "1,2", "--runs", "2"]
    code, out, _ = _run(capsys, *argv, "--csv", str(table), "--plot", str(plot), "--plot-size", "800x600")
    assert code == 0
    lines = out.splitlines()
    assert "samples/s" in lines[0] and "GMACs" in lines[0] and "p10-p90 ms" in lines[0]
    assert any(line.startswith("repvgg_a0 --deploy") and "  2  " in line for line in lines)
    assert any(line.startswith("squeezenet1_1 ") for line in lines)
    header, *rows = table.read_text().splitlines()
    assert header.startswith("model,infer_img_size,infer_samples_per_sec,infer_step_time") and len(rows) == 4
    repvgg = next(r.split(",") for r in rows if r.startswith("repvgg_a0"))
    assert float(repvgg[7]) == pytest.approx(8.31, abs=0.01)  # deploy-form parameters, millions (timm: 9.11 train)
    assert Image.open(plot).size == (800, 600)


def test_a_model_of_functions_is_profiled_under_graphgens_layer_names(capsys):
    code, out, _ = _run(capsys, "profile", "resnet18", *TINY, "--functions", "--runs", "2", "--json")
    assert code == 0
    profile = json.loads(out)
    convs = [r for r in profile["rows"] if r["kernel_op"] in ("Conv", "FusedConv")]
    assert len(convs) == 20 and all(r["mapped"] and r["macs"] for r in convs)
    assert any("inlined for profiling" in note for note in profile["notes"])
