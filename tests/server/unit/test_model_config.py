"""config.pbtxt honoured: each setting has a test that fails if the server ignores it.

A Triton repository written by hand (config.pbtxt files, models written with onnx directly plus a
graphgen tiny model) served in-process; the load log is collected to check what is said.
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest
from onnx import TensorProto, helper

from graphgen_protos import kserve_v2_pb2 as kpb
from graphgen_protos import model_config_pb2 as mc
from graphgen_server.repository.triton_fields import TRITON_FIELDS
from tests.support.server import Aborted, FakeContext, InProcessServer, add_tiny_model, save_onnx_model

SIZE = 32
TINY_CONFIG = """
name: "tiny"
platform: "onnxruntime_onnx"
max_batch_size: 2
input [ { name: "input", data_type: TYPE_FP32, dims: [ 3, 32, 32 ] } ]
output [ { name: "logits", data_type: TYPE_FP32, dims: [ 10 ] } ]
dynamic_batching { preferred_batch_size: [ 2 ] max_queue_delay_microseconds: 300000 }
instance_group [ { count: 2, kind: KIND_CPU } ]
version_policy: { specific: { versions: [ 1 ] } }
"""


def _double(path, first="N", second="W", datatype=TensorProto.FLOAT, filename=None):
    """y = x + x over [first, second] (and z = x for a second output)."""
    x = helper.make_tensor_value_info("x", datatype, [first, second])
    outputs = [
        helper.make_tensor_value_info("y", datatype, [first, second]),
        helper.make_tensor_value_info("z", datatype, [first, second]),
    ]
    nodes = [helper.make_node("Add", ["x", "x"], ["y"]), helper.make_node("Identity", ["x"], ["z"])]
    return save_onnx_model(path if filename is None else path.parent / filename, nodes, [x], outputs)


CONFIGS = {  # model directory: config.pbtxt (None: no file), versions, model file name
    "dims": ('max_batch_size: 8\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ]', [1], None),
    "reshaped": ('max_batch_size: 4\ninput [ { name: "x" data_type: TYPE_FP32 dims: [ 6 ] reshape { shape: [ 2, 3 ] } } ]\n'
                 'output [ { name: "y" data_type: TYPE_FP32 dims: [ 6 ] reshape { shape: [ 2, 3 ] } } ]', [1], "3d"),
    "unbatched": ("max_batch_size: 0", [1], None),
    "derived": (None, [1], None),
    "wrong_type": ('max_batch_size: 8\ninput [ { name: "x" data_type: TYPE_INT64 dims: [ -1 ] } ]', [1], None),
    "wrong_name": ('max_batch_size: 8\ninput [ { name: "pixels" data_type: TYPE_FP32 dims: [ -1 ] } ]', [1], None),
    "queue": ("max_batch_size: 8\ndynamic_batching { default_queue_policy { max_queue_size: 2 } }", [1], None),
    "delay": ("max_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 200000 }", [1], None),
    "no_batching": ("max_batch_size: 8", [1], None),
    "preferred": ("max_batch_size: 8\ndynamic_batching { preferred_batch_size: [ 2 ] max_queue_delay_microseconds: 100000 }", [1], None),
    "latest": ("version_policy { latest { num_versions: 2 } }", [1, 2, 3], None),
    "every": ("version_policy { all { } }", [1, 2, 3], None),
    "default_policy": ('platform: "onnxruntime_onnx"', [1, 2, 3], None),
    "filename": ('default_model_filename: "net.onnx"', [1], "net.onnx"),
    "warm": ('max_batch_size: 4\nmodel_warmup [ { name: "ok" batch_size: 2 count: 3 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 5 ] random_data: true } } } ]', [1], None),
    "cold": ('max_batch_size: 4\nmodel_warmup [ { name: "bad" batch_size: 1 inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 5, 5 ] zero_data: true } } } ]', [1], None),
    "params": ('parameters { key: "intra_op_thread_count" value: { string_value: "1" } }\n'
               'parameters { key: "no_such_knob" value: { string_value: "7" } }', [1], None),
    "accelerated": ('optimization { execution_accelerators { cpu_execution_accelerator : [ { name : "openvino" } ] } }', [1], None),
    "unknown_fields": ('response_cache { enable: true }\nmodel_transaction_policy { decoupled: false }\n'
                       'input [ { name: "x" data_type: TYPE_FP32 dims: [ -1, -1 ] format: FORMAT_NONE } ]', [1], None),
    "ensemble": ('ensemble_scheduling { step [ { model_name: "a" model_version: -1 } ] }', [1], None),
    "sequence": ("sequence_batching { max_sequence_idle_microseconds: 5000 }", [1], None),
    "on_gpu": ("instance_group [ { count: 1 kind: KIND_GPU } ]", [1], None),
    "renamed": ('name: "other"', [1], None),
    "one_instance": ("instance_group [ { count: 1 kind: KIND_CPU } ]", [1], None),
    "misspelled": ("max_batch_sise: 8", [1], None),
    "misspelled_inside": ("dynamic_batching { max_queue_delay_microsecond: 100 }", [1], None),
}  # fmt: skip


class Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.levels: dict[str, int] = {}

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())
        self.levels[record.getMessage()] = record.levelno

    def about(self, model: str) -> str:
        return "\n".join(line for line in self.lines if f"model {model} " in line or f"model {model}:" in line)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_tiny_model(repo)
    add_tiny_model(repo, "tiny_v2_source")
    (repo / "tiny_v2_source" / "1").rename(repo / "tiny" / "2")  # version 2: present, not in the policy
    (repo / "tiny_v2_source").rmdir()
    (repo / "tiny" / "config.pbtxt").write_text(TINY_CONFIG)
    for name, (config, versions, special) in CONFIGS.items():
        for version in versions:
            path = repo / name / str(version) / "model.onnx"
            if special == "3d":
                x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 2, 3])
                y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 2, 3])
                save_onnx_model(path, [helper.make_node("Add", ["x", "x"], ["y"])], [x], [y])
            else:
                _double(path, filename=special)
        if config is not None:
            (repo / name / "config.pbtxt").write_text(config)
    collect = Collect()
    logging.getLogger("graphgen_server").addHandler(collect)
    logging.getLogger("graphgen_server").setLevel(logging.INFO)
    try:
        server = InProcessServer(repo, max_images=8, max_batch=8)
    finally:
        logging.getLogger("graphgen_server").removeHandler(collect)
    server.log = collect
    yield server
    server.close()


def _request(model: str, array: np.ndarray, version: str = "") -> kpb.ModelInferRequest:
    request = kpb.ModelInferRequest(model_name=model, model_version=version)
    name = "input" if model == "tiny" else "x"
    request.inputs.add(name=name, datatype="FP32", shape=array.shape)
    request.raw_input_contents.append(array.astype("<f4").tobytes())
    return request


def _refused(served, request) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(Aborted) as refused:
        served.call("k", "ModelInfer", request)
    return refused.value.code, refused.value.details


def _concurrently(served, requests):
    async def all_of_them():
        servicer = served.servicers["k"]
        return await asyncio.gather(*(servicer.ModelInfer(r, FakeContext()) for r in requests), return_exceptions=True)

    return served.run(all_of_them())


def _config(served, name: str):
    return served.call("k", "ModelConfig", kpb.ModelConfigRequest(name=name)).config


def test_max_batch_size_is_the_limit_of_a_request(served):
    ok = served.call("k", "ModelInfer", _request("tiny", np.zeros((2, 3, SIZE, SIZE))))
    assert list(ok.outputs[0].shape) == [2, 10]
    code, details = _refused(served, _request("tiny", np.zeros((4, 3, SIZE, SIZE))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "max_batch_size 2" in details


def test_version_policy_specific_serves_only_the_versions_named(served):
    assert served.call("k", "ModelInfer", _request("tiny", np.zeros((1, 3, SIZE, SIZE)))).model_version == "1"
    code, details = _refused(served, _request("tiny", np.zeros((1, 3, SIZE, SIZE)), version="2"))
    assert code == grpc.StatusCode.NOT_FOUND and "version '2'" in details
    assert sorted(served.runtime.models["latest"]) == ["2", "3"]
    assert sorted(served.runtime.models["every"]) == ["1", "2", "3"]
    assert sorted(served.runtime.models["default_policy"]) == ["3"]  # Triton's default: the latest one
    assert sorted(served.runtime.models["derived"]) == ["1"]


def test_instance_group_count_two_runs_two_requests_at_once(served):
    def peak(model_name: str, count: int) -> tuple[int, list[int]]:
        model = served.runtime.find(model_name)
        assert len(model.served().instances) == count
        running, most, lock = [0], [0], threading.Lock()
        original = model._run_sync

        def slow(instance, feeds):
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
            time.sleep(0.05)
            with lock:
                running[0] -= 1
            return original(instance, feeds)

        model._run_sync = slow
        before = [i.runs for i in model.served().instances]
        try:
            shape = (1, 3, SIZE, SIZE) if model_name == "tiny" else (1, 2)
            results = _concurrently(served, [_request(model_name, np.zeros(shape)) for _ in range(6)])
        finally:
            del model._run_sync
        assert not [r for r in results if isinstance(r, BaseException)]
        return most[0], [i.runs - b for i, b in zip(model.served().instances, before)]

    most, spread = peak("tiny", 2)
    assert most == 2 and all(runs > 0 for runs in spread)  # both instances used, at the same time
    most, _ = peak("one_instance", 1)
    assert most == 1
    most, _ = peak("derived", 2)  # no instance_group: Triton's default for onnxruntime on CPU, two at once
    assert most == 2


def _batch_sizes(served, model_name: str, requests: list) -> dict[int, int]:
    """Batches run per size while ``requests`` are answered concurrently."""
    model = served.runtime.find(model_name)
    before = {size: d.compute_infer.count for size, d in model.stats.snapshot().batches.items()}
    results = _concurrently(served, requests)
    assert not [r for r in results if isinstance(r, BaseException)]
    after = model.stats.snapshot().batches
    return {
        size: d.compute_infer.count - before.get(size, 0)
        for size, d in after.items()
        if d.compute_infer.count > before.get(size, 0)
    }


def test_dynamic_batching_preferred_size_and_delay(served):
    # Eight single rows at once, max_batch_size 8: batches of the preferred size 2, not one of 8.
    assert _batch_sizes(served, "preferred", [_request("preferred", np.zeros((1, 2))) for _ in range(8)]) == {2: 4}
    assert _batch_sizes(served, "delay", [_request("delay", np.zeros((1, 2))) for _ in range(8)]) == {8: 1}
    tiny = [_request("tiny", np.zeros((1, 3, SIZE, SIZE))) for _ in range(4)]
    assert _batch_sizes(served, "tiny", tiny) == {2: 2}  # never above max_batch_size 2
    started = time.perf_counter()
    lone = served.call("k", "ModelInfer", _request("delay", np.zeros((1, 2))))
    assert time.perf_counter() - started >= 0.15 and lone.outputs  # a lone request waits for company
    started = time.perf_counter()
    served.call("k", "ModelInfer", _request("no_batching", np.zeros((1, 2))))
    assert time.perf_counter() - started < 0.15
    assert served.runtime.find("no_batching").batcher is None  # no dynamic_batching in its config: none


def test_max_queue_size_refuses_what_does_not_fit_the_queue(served):
    results = _concurrently(served, [_request("queue", np.zeros((1, 2))) for _ in range(12)])
    refused = [r for r in results if isinstance(r, Aborted)]
    assert refused and all(r.code == grpc.StatusCode.RESOURCE_EXHAUSTED for r in refused)
    assert "max_queue_size 2" in refused[0].details
    assert len(refused) < 12


def test_dims_and_reshape(served):
    ok = served.call("k", "ModelInfer", _request("dims", np.ones((3, 4))))
    assert list(ok.outputs[0].shape) == [3, 4]
    code, details = _refused(served, _request("dims", np.ones((1, 5))))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "does not fit [N, 4]" in details
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    reshaped = served.call("k", "ModelInfer", _request("reshaped", x))
    assert list(reshaped.outputs[0].shape) == [2, 6]
    np.testing.assert_array_equal(np.frombuffer(reshaped.raw_output_contents[0], "<f4").reshape(2, 6), x + x)
    assert [o.name for o in reshaped.outputs] == ["y"]  # outputs the config lists, and only those


def test_max_batch_size_zero_means_no_batch_dimension(served):
    big = np.ones((9, 2))  # 9 rows: over --max-images 8 for a batched model
    ok = served.call("k", "ModelInfer", _request("unbatched", big))
    assert list(ok.outputs[0].shape) == [9, 2]
    code, details = _refused(served, _request("derived", big))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "exceeds the limit of 8" in details
    assert _config(served, "unbatched").max_batch_size == 0


@pytest.mark.parametrize(
    ("model", "words"),
    [
        ("wrong_type", "input 'x' is FP32 in the model, not INT64"),
        ("wrong_name", "input 'pixels' is not in the model"),
        ("cold", "model_warmup 'bad' failed"),
        ("ensemble", "ensemble_scheduling"),
        ("sequence", "sequence_batching"),
        ("on_gpu", "KIND_GPU, but CUDA cannot be used"),
        ("renamed", "name 'other' is not the model's directory name"),
        (
            "misspelled",
            "'max_batch_sise' is not a field of Triton's model configuration; did you mean 'max_batch_size'?",
        ),
        ("misspelled_inside", "'dynamic_batching.max_queue_delay_microsecond' is not a field"),
    ],
)
def test_what_cannot_be_honoured_leaves_the_model_not_ready_with_the_reason(served, model, words):
    version = served.runtime.find(model)
    assert not version.ready and words in version.reason
    code, details = _refused(served, _request(model, np.zeros((1, 2))))
    assert code == grpc.StatusCode.NOT_FOUND and "has no ready version" in details and words in details  # (Triton's)
    code, details = _refused(served, _request(model, np.zeros((1, 2)), version="1"))
    assert code == grpc.StatusCode.UNAVAILABLE and words in details


def test_default_model_filename_warmup_parameters_accelerators_and_ignored_fields(served):
    assert served.runtime.find("filename").ready and served.runtime.find("filename").path.name == "net.onnx"
    assert "warm-up 'ok': 3 run(s) on each instance" in served.log.about("warm")
    options = served.runtime.find("params").served().instances[0].session.get_session_options()
    assert options.intra_op_num_threads == 1
    assert "parameter 'no_such_knob' ignored" in served.log.about("params")
    assert "execution accelerator 'openvino' not used" in served.log.about("accelerated")
    line = served.log.about("unknown_fields")
    assert "ignored config.pbtxt fields: input.format, model_transaction_policy, response_cache" in line
    warning = next(entry for entry in line.splitlines() if "ignored config.pbtxt fields" in entry)
    assert served.log.levels[warning] == logging.WARNING  # as the README's table says
    assert served.runtime.find("unknown_fields").ready


def test_model_config_answers_what_is_enforced(served):
    tiny = _config(served, "tiny")
    assert (tiny.name, tiny.platform, tiny.backend, tiny.max_batch_size) == (
        "tiny",
        "onnxruntime_onnx",
        "onnxruntime",
        2,
    )
    assert list(tiny.version_policy.specific.versions) == [1]
    assert [(i.name, list(i.dims)) for i in tiny.input] == [("input", [3, 32, 32])]
    assert list(tiny.dynamic_batching.preferred_batch_size) == [2]
    assert tiny.dynamic_batching.max_queue_delay_microseconds == 300000
    assert [(g.count, g.kind) for g in tiny.instance_group] == [(2, 2)]  # KIND_CPU
    derived = _config(served, "derived")  # no config.pbtxt: completed from the model
    assert derived.max_batch_size == 8 and derived.version_policy.HasField("all")
    assert [(i.name, i.data_type, list(i.dims)) for i in derived.input] == [("x", 11, [-1])]  # TYPE_FP32
    assert [o.name for o in derived.output] == ["y", "z"] and derived.default_model_filename == "model.onnx"
    assert [(g.count, g.kind) for g in derived.instance_group] == [(2, mc.ModelInstanceGroup.KIND_CPU)]  # Triton's
    assert derived.HasField("dynamic_batching") == (served.runtime.find("derived").batcher is not None)
    params = _config(served, "params")
    assert list(params.parameters) == ["intra_op_thread_count"]  # the honoured parameter only
    unknown = _config(served, "unknown_fields")
    assert [i.name for i in unknown.input] == ["x"]


def test_triton_field_list_is_tritonclients_model_config():
    """TRITON_FIELDS (typo or Triton's field?) equals every path of tritonclient's ModelConfig."""
    walk = """
import tritonclient.grpc.model_config_pb2 as m
from google.protobuf.descriptor import FieldDescriptor as F
out = set()
def walk(d, prefix, seen):
    for f in d.fields:
        out.add(prefix + f.name)
        if f.type == F.TYPE_MESSAGE and f.message_type.full_name not in seen:
            walk(f.message_type, prefix + f.name + ".", seen | {f.message_type.full_name})
walk(m.ModelConfig.DESCRIPTOR, "", frozenset({m.ModelConfig.DESCRIPTOR.full_name}))
print(" ".join(sorted(out)))
"""
    # tritonclient's protos share the package name 'inference' with graphgen's: their own process.
    listed = subprocess.run([sys.executable, "-c", walk], capture_output=True, text=True, check=True, timeout=120)
    assert set(listed.stdout.split()) == TRITON_FIELDS
