"""RepositoryModelLoad's ``config`` (Triton's JSON form of ModelConfig) is read as config.pbtxt is.

Every config.pbtxt case of test_model_config.py is turned into JSON by Triton's own proto
(tritonclient's model_config_pb2, protobuf's JSON mapping: camelCase and proto field names both)
and must give the same configuration, or the same refusal, as the config.pbtxt.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from graphgen_server.repository.config_json import SOURCE, read_config_json
from graphgen_server.repository.model_config import CONFIG_FILE, ConfigError, read_config
from tests.server.unit.test_model_config import CONFIGS, TINY_CONFIG

CASES = {name: config for name, (config, _, _) in CONFIGS.items() if config is not None} | {"tiny": TINY_CONFIG}
TO_JSON = """
import json, sys
from google.protobuf import json_format, text_format
import tritonclient.grpc.model_config_pb2 as m
out = {}
for name, text in json.load(sys.stdin).items():
    try:
        config = text_format.Parse(text, m.ModelConfig())
    except text_format.ParseError:
        out[name] = None  # not Triton's either (a misspelled field)
        continue
    out[name] = [json_format.MessageToJson(config), json_format.MessageToJson(config, preserving_proto_field_name=True)]
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def as_triton_json() -> dict[str, list[str] | None]:
    # tritonclient's protos share the package name 'inference' with graphgen's: their own process.
    done = subprocess.run(
        [sys.executable, "-c", TO_JSON], input=json.dumps(CASES), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _outcome(read, source: str):
    try:
        settings = read()
    except ConfigError as error:
        return "refused", str(error).removeprefix(source)
    return "read", settings.config


@pytest.mark.parametrize("name", sorted(CASES))
def test_json_reads_as_the_config_pbtxt_does(tmp_path, as_triton_json, name):
    (tmp_path / name).mkdir()
    (tmp_path / name / CONFIG_FILE).write_text(CASES[name])
    expected = _outcome(lambda: read_config(tmp_path / name), CONFIG_FILE)
    forms = as_triton_json[name]
    if forms is None:  # Triton refuses the field too: the JSON a user would send has it as well
        assert expected[0] == "refused" and "is not a field of Triton's model configuration" in expected[1]
        return
    for text in forms:
        outcome = _outcome(lambda text=text: read_config_json(text, name), SOURCE)
        if expected[0] == "refused" and re.match(r": \d+:\d+ : ", expected[1]):
            # protobuf's text parser cannot skip a list of messages in a field graphgen's proto lacks
            # (ensemble_scheduling's steps): that config.pbtxt is refused as unparsable, the JSON for its reason.
            assert outcome[0] == "refused", text
        else:
            assert outcome == expected, text


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"max_batch_sise": 8}, "'max_batch_sise' is not a field of Triton's model configuration; did you mean"),
        ({"dynamic_batching": {"max_queue_delay_microsecond": 1}}, "'dynamic_batching.max_queue_delay_microsecond'"),
        ({"name": "other"}, "name 'other' is not the model's directory name 'tiny'"),
        ({"platform": "tensorrt_plan"}, "graphgen serves 'onnxruntime_onnx' only"),
        ({"sequence_batching": {}}, "asks for sequence_batching"),
        ({"max_batch_size": "eight"}, "max_batch_size"),
        ({"max_batch_size": -1}, "max_batch_size -1 is negative"),
        ({"instance_group": [{"kind": "KIND_TPU"}]}, "KIND_TPU"),
    ],
)
def test_a_bad_configuration_is_refused_naming_what_is_wrong(document, message):
    with pytest.raises(ConfigError) as error:
        read_config_json(json.dumps(document), "tiny")
    assert str(error.value).startswith(SOURCE) and message in str(error.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [("{", "is not JSON"), ("[1]", "must be a JSON object"), ("[" * 100_000 + "]" * 100_000, "is not JSON")],
)
def test_what_is_not_a_json_object_is_refused(text, message):
    with pytest.raises(ConfigError, match=message):
        read_config_json(text, "tiny")


def test_model_analyzer_s_configuration_with_triton_s_other_fields():
    """What Model Analyzer sends: the server's configuration with its changes (Triton's field names,
    enums in any case), and fields of Triton's that graphgen ignores, named as config.pbtxt names them."""
    document = {
        "name": "tiny",
        "platform": "onnxruntime_onnx",
        "maxBatchSize": 4,
        "input": [{"name": "input", "data_type": "type_fp32", "dims": ["3", "32", "32"], "format": "FORMAT_NONE"}],
        "instance_group": [{"count": 3, "kind": "kind_cpu"}],
        "dynamic_batching": {},
        "parameters": {"intra_op_thread_count": {"string_value": "1"}},
        "optimization": {"input_pinned_memory": {"enable": True}},
        "model_transaction_policy": {"decoupled": False},
    }
    settings = read_config_json(json.dumps(document), "tiny")
    config = settings.config
    assert (config.max_batch_size, config.instance_group[0].count, config.instance_group[0].kind) == (4, 3, 2)
    assert list(config.input[0].dims) == [3, 32, 32] and config.HasField("dynamic_batching")
    assert config.parameters["intra_op_thread_count"].string_value == "1"
    assert settings.ignored == ["input.format", "model_transaction_policy", "optimization.input_pinned_memory"]
    assert settings.present and settings.source == SOURCE
