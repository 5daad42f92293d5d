"""A model configuration sent with RepositoryModelLoad: Triton's JSON form of ``ModelConfig``.

Triton's ``config`` load parameter holds the configuration as JSON (protobuf's JSON mapping of
model_config.proto, what its ModelConfig endpoint answers and Model Analyzer sends), used instead
of the model directory's config.pbtxt. Triton parses it with protobuf's JSON parser, enum names
case-insensitively, unknown fields refused (``JsonToModelConfig`` in its core's
model_config_utils.cc). Here it is parsed into graphgen's model_config.proto and checked exactly as
a config.pbtxt is (:func:`~graphgen_server.repository.model_config.check_config`): Triton's fields
that graphgen does not honour are listed as ignored, a field Triton does not have is refused.
"""

from __future__ import annotations

import json
import re
from typing import Any

from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from graphgen_protos import model_config_pb2 as mc
from graphgen_server.repository.model_config import ConfigError, ReadConfig, check_config

SOURCE = "the configuration sent with RepositoryModelLoad"


def read_config_json(text: str, model_name: str) -> ReadConfig:
    """``text`` as the configuration of model ``model_name``; ConfigError naming what is wrong."""
    try:
        document = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as error:
        raise ConfigError(f"{SOURCE} is not JSON: {error}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{SOURCE} must be a JSON object (a ModelConfig), not {type(document).__name__}")
    ignored: list[str] = []
    known = _known_fields(document, mc.ModelConfig.DESCRIPTOR, "", ignored)
    try:
        config = json_format.ParseDict(known, mc.ModelConfig())
    except json_format.ParseError as error:
        raise ConfigError(f"{SOURCE}: {error}") from None
    return check_config(config, sorted(set(ignored)), SOURCE, model_name)


def _known_fields(document: dict[str, Any], descriptor: Descriptor, prefix: str, ignored: list[str]) -> dict[str, Any]:
    """``document`` without the fields graphgen's proto lacks (their dotted paths go to ``ignored``,
    in text format's spelling: a map's entries as ``.key`` and ``.value``)."""
    fields = {f.name: f for f in descriptor.fields} | {f.json_name: f for f in descriptor.fields}
    known = {}
    for key, value in document.items():
        field = fields.get(key)
        if field is None:  # named as Triton's proto names it (a JSON name is its lowerCamelCase)
            ignored.append(prefix + re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", key).lower())
        else:
            known[key] = _known_value(value, field, f"{prefix}{field.name}.", ignored)
    return known


def _known_value(value: Any, field: FieldDescriptor, prefix: str, ignored: list[str]) -> Any:
    message = field.message_type
    if message is not None and message.GetOptions().map_entry:
        entry = message.fields_by_name["value"]
        if not isinstance(value, dict):
            return value  # protobuf's parser names the mistake
        return {key: _known_value(item, entry, prefix + "value.", ignored) for key, item in value.items()}
    if field.is_repeated and isinstance(value, list):
        return [_known_one(item, field, prefix, ignored) for item in value]
    return _known_one(value, field, prefix, ignored)


def _known_one(value: Any, field: FieldDescriptor, prefix: str, ignored: list[str]) -> Any:
    if field.message_type is not None and isinstance(value, dict):
        return _known_fields(value, field.message_type, prefix, ignored)
    if field.enum_type is not None and isinstance(value, str):
        return value.upper()  # Triton parses enum names case-insensitively (kind_cpu is KIND_CPU)
    return value
