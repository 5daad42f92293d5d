"""A model's ``config.pbtxt`` (Triton's model configuration in protobuf text format), read and checked.

:func:`read_config` parses the file into graphgen's :mod:`model_config.proto <graphgen_protos>` (Triton's
message and field numbers, the fields graphgen honours) and lists every other field the file sets
(``ignored``: the model still loads, and the load line names them). Sequence batching and ensembles
cannot be honoured: such a model is not ready, with the reason. :func:`select_versions` applies the
version policy. :func:`serve_tensors` and :func:`batch_limit` check what it says against the ONNX model and fill
what it leaves out (what Triton's auto-complete does); the configuration the server then enforces,
the one ModelConfig returns, is the core's (:func:`graphgen_server.core.loaded.effective_config`).
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from google.protobuf import text_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor

from graphgen_protos import model_config_pb2 as mc
from graphgen_server.repository.layout import MODEL_FILE, ModelFile, scan_model
from graphgen_server.repository.triton_fields import TRITON_FIELDS
from graphgen_server.tensors import TensorInfo, describe

log = logging.getLogger("graphgen_server")

CONFIG_FILE = "config.pbtxt"
PLATFORM, BACKEND = "onnxruntime_onnx", "onnxruntime"
REFUSED_FIELDS = {
    "sequence_batching": "sequence batching (stateful models) is not served by graphgen",
    "ensemble_scheduling": "ensembles are not served by graphgen (serve each model on its own)",
}


class ConfigError(ValueError):
    """A config.pbtxt that cannot be honoured: the model is not ready, with this reason."""


@dataclass
class ReadConfig:
    config: mc.ModelConfig
    present: bool  # a configuration was given (config.pbtxt, or one sent with RepositoryModelLoad)
    ignored: list[str] = field(default_factory=list)  # fields set in it that graphgen does not honour
    source: str = CONFIG_FILE  # where it came from, for messages


def read_config(model_dir: Path) -> ReadConfig:
    """The model directory's config.pbtxt (an empty config where there is none); ConfigError if unusable."""
    path = model_dir / CONFIG_FILE
    if not path.is_file():
        return ReadConfig(mc.ModelConfig(), present=False)
    try:
        text = path.read_text()
        config = text_format.Parse(text, mc.ModelConfig(), allow_unknown_field=True)
        ignored = unknown_fields(text, mc.ModelConfig.DESCRIPTOR)
    except (OSError, UnicodeDecodeError, text_format.ParseError) as error:
        raise ConfigError(f"{path.name}: {error}") from None
    return check_config(config, ignored, path.name, model_dir.name)


def check_config(config: mc.ModelConfig, ignored: list[str], source: str, model_name: str) -> ReadConfig:
    """What a configuration says, checked as Triton checks it (and for what graphgen cannot honour),
    whatever its form: ``ignored`` lists the fields outside graphgen's proto (dotted paths)."""
    for name in ignored:  # Triton refuses a field its configuration does not have: a typo must not pass
        if name not in TRITON_FIELDS:
            close = difflib.get_close_matches(name, TRITON_FIELDS, n=1, cutoff=0.8)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{source}: {name!r} is not a field of Triton's model configuration{hint}")
    for name, reason in REFUSED_FIELDS.items():
        if config.HasField(name):
            raise ConfigError(f"{source} asks for {name}: {reason}")
    if config.platform and config.platform != PLATFORM:
        raise ConfigError(f"{source}: platform {config.platform!r}: graphgen serves {PLATFORM!r} only")
    if config.backend and config.backend != BACKEND:
        raise ConfigError(f"{source}: backend {config.backend!r}: graphgen serves {BACKEND!r} only")
    if config.max_batch_size < 0:
        raise ConfigError(f"{source}: max_batch_size {config.max_batch_size} is negative")
    filename = config.default_model_filename
    if filename and (filename in {".", ".."} or any(c in filename for c in "/\\\0")):
        raise ConfigError(f"{source}: default_model_filename {filename!r} is not a file name")
    if config.name and config.name != model_name:
        raise ConfigError(f"{source}: name {config.name!r} is not the model's directory name {model_name!r}")
    return ReadConfig(config, present=True, ignored=ignored, source=source)


def unknown_fields(text: str, descriptor: Descriptor) -> list[str]:
    """Dotted paths of the fields set in ``text`` that ``descriptor`` does not declare (outermost only)."""
    tokenizer = text_format.Tokenizer(text.splitlines())
    found: list[str] = []
    _walk_message(tokenizer, descriptor, "", found, end=None)
    return sorted(set(found))


def _walk_message(tokenizer, descriptor: Descriptor | None, prefix: str, found: list[str], end: str | None) -> None:
    while not (tokenizer.AtEnd() if end is None else tokenizer.TryConsume(end)):
        if tokenizer.TryConsume("["):  # an extension or Any type URL: never declared here
            name = tokenizer.ConsumeIdentifier()
            while tokenizer.TryConsume(".") or tokenizer.TryConsume("/"):
                name += "." + tokenizer.ConsumeIdentifier()
            tokenizer.Consume("]")
            known = None
        else:
            name = tokenizer.ConsumeIdentifierOrNumber()
            known = descriptor.fields_by_name.get(name) if descriptor is not None else None
        if descriptor is not None and known is None:
            found.append(prefix + name)
        child = known.message_type if known is not None and known.type == FieldDescriptor.TYPE_MESSAGE else None
        tokenizer.TryConsume(":")
        _walk_value(tokenizer, child, f"{prefix}{name}.", found)
        tokenizer.TryConsume(",") or tokenizer.TryConsume(";")


def _walk_value(tokenizer, descriptor: Descriptor | None, prefix: str, found: list[str]) -> None:
    if tokenizer.TryConsume("["):  # a list of values or of messages
        while not tokenizer.TryConsume("]"):
            _walk_value(tokenizer, descriptor, prefix, found)
            tokenizer.TryConsume(",")
        return
    for opening, closing in (("{", "}"), ("<", ">")):
        if tokenizer.TryConsume(opening):
            _walk_message(tokenizer, descriptor, prefix if descriptor is not None else "", found, end=closing)
            return
    if not tokenizer.token or tokenizer.token in "{}[]<>:,;":
        raise text_format.ParseError(f"expected a value, got {tokenizer.token!r}")
    if tokenizer.token.startswith(("'", '"')):
        tokenizer.ConsumeByteString()  # adjacent string literals concatenate
    else:
        tokenizer.NextToken()  # an identifier, enum name or number


# -- versions ------------------------------------------------------------------------------------
def select_versions(versions: Sequence[int], config: ReadConfig) -> list[int]:
    """The versions the policy serves: every version without a config.pbtxt (graphgen's own layout),
    Triton's default (the latest one) with a config.pbtxt that sets no policy."""
    ordered = sorted(versions)
    policy = config.config.version_policy
    choice = policy.WhichOneof("policy_choice")
    if not config.present or choice == "all":
        return ordered
    if choice == "specific":
        return [v for v in ordered if v in set(policy.specific.versions)]
    latest = policy.latest.num_versions if choice == "latest" else 1
    return ordered[-max(latest, 1) :]


def effective_policy(config: ReadConfig) -> mc.ModelVersionPolicy:
    """The policy as enforced (the default spelt out)."""
    policy = mc.ModelVersionPolicy()
    if not config.present:
        policy.all.SetInParent()
    elif config.config.version_policy.WhichOneof("policy_choice"):
        policy.CopyFrom(config.config.version_policy)
    else:
        policy.latest.num_versions = 1
    return policy


# -- tensors -------------------------------------------------------------------------------------
def data_type(datatype: str) -> int:
    return mc.DataType.Value(f"TYPE_{datatype}")


def datatype_of(data_type_value: int) -> str:
    return mc.DataType.Name(data_type_value).removeprefix("TYPE_")


@dataclass(frozen=True)
class ServedTensor:
    """A model input or output as served: ``info`` the shape clients see, ``model_shape`` what the model takes."""

    info: TensorInfo
    model_shape: tuple[int | None, ...] | None = None  # config.pbtxt's reshape (None: no reshape)


def serve_tensors(
    configured: Sequence[mc.ModelInput] | Sequence[mc.ModelOutput],
    model: list[TensorInfo],
    batched: bool,
    kind: str,
) -> list[ServedTensor]:
    """The model's tensors as the config describes them, checked against the model; all of them if none is listed."""
    by_name = {t.name: t for t in model}
    if not configured:
        return [ServedTensor(t) for t in model]
    served = []
    for entry in configured:
        actual = by_name.get(entry.name)
        if actual is None:
            raise ConfigError(f"{kind} {entry.name!r} is not in the model ({kind}s: {', '.join(by_name)})")
        datatype = datatype_of(entry.data_type)
        if datatype != actual.datatype:
            raise ConfigError(f"{kind} {entry.name!r} is {actual.datatype} in the model, not {datatype}")
        batch = (None,) if batched else ()
        dims = batch + tuple(None if d < 0 else int(d) for d in entry.dims)
        reshape = (
            batch + tuple(None if d < 0 else int(d) for d in entry.reshape.shape) if entry.HasField("reshape") else None
        )
        _check_fits(reshape if reshape is not None else dims, actual, entry.name, kind)
        if reshape is not None and None not in dims and None not in reshape and _count(dims) != _count(reshape):
            raise ConfigError(
                f"{kind} {entry.name!r}: dims {describe(dims)} and reshape {describe(reshape)} differ in size"
            )
        served.append(ServedTensor(TensorInfo(entry.name, datatype, dims), reshape))
    if kind == "input" and len(served) != len(model):
        missing = sorted(set(by_name) - {t.info.name for t in served})
        raise ConfigError(f"the config lists {len(served)} inputs; the model also takes {', '.join(missing)}")
    return served


def _count(shape: tuple[int | None, ...]) -> int:
    count = 1
    for d in shape[1:] if shape and shape[0] is None else shape:
        count *= d or 1
    return count


def _check_fits(shape: tuple[int | None, ...], actual: TensorInfo, name: str, kind: str) -> None:
    if len(shape) != len(actual.shape) or any(
        want is not None and got is not None and want != got for want, got in zip(shape, actual.shape)
    ):
        raise ConfigError(
            f"{kind} {name!r}: the config's shape {describe(shape)} does not fit the model's {describe(actual.shape)}"
        )


def batch_limit(settings: ReadConfig, tensors: list[TensorInfo], max_images: int) -> int:
    """max_batch_size as enforced: the config's (checked: the model needs a batch dimension of any
    size first in every input and output), else the server's per-request limit where the model has one."""
    batchable = all(t.shape and t.shape[0] is None for t in tensors)
    if not settings.present:
        return max_images if batchable else 0
    limit = settings.config.max_batch_size
    if limit > 0 and not batchable:
        fixed = [t.name for t in tensors if not (t.shape and t.shape[0] is None)]
        raise ConfigError(
            f"max_batch_size {limit} needs a first dimension of any size (the batch) in every input and output; "
            f"{', '.join(fixed)} have none (use max_batch_size: 0)"
        )
    return limit


def warmup_feeds(entry: mc.ModelWarmup, inputs: list[TensorInfo], batched: bool, files: Path) -> dict[str, np.ndarray]:
    """The inputs of one ``model_warmup`` entry (zeros, random values, or a file of raw bytes under ``warmup/``)."""
    feeds = {}
    rng = np.random.default_rng(0)
    for info in inputs:
        given = entry.inputs.get(info.name)
        if given is None:
            raise ConfigError(f"model_warmup {entry.name!r} gives no input {info.name!r}")
        if datatype_of(given.data_type) != info.datatype:
            raise ConfigError(f"model_warmup {entry.name!r}: input {info.name!r} is {info.datatype}")
        shape = ([max(entry.batch_size, 1)] if batched else []) + [int(d) for d in given.dims]
        source = given.WhichOneof("input_data_type")
        if source == "input_data_file":
            path = files / given.input_data_file
            if path.resolve().parent != files.resolve():
                raise ConfigError(f"model_warmup {entry.name!r}: {given.input_data_file!r} is not a file in warmup/")
            try:
                array = np.frombuffer(path.read_bytes(), info.dtype.newbyteorder("<")).reshape(shape)
            except (OSError, ValueError) as error:
                raise ConfigError(f"model_warmup {entry.name!r}: {given.input_data_file}: {error}") from None
        elif source == "random_data":
            array = rng.standard_normal(shape).astype(info.dtype)
        else:
            array = np.zeros(shape, info.dtype)
        feeds[info.name] = array
    return feeds


def plan_model(repository: Path, name: str, override: ReadConfig | None = None) -> list[tuple[ModelFile, ReadConfig]]:
    """The versions of model ``name`` to load, each with the model's configuration: ``override`` (one
    sent with RepositoryModelLoad, already checked) or else its config.pbtxt.

    A config.pbtxt that cannot be honoured makes every version not ready with the reason (a
    version 1 is listed for it if no model file is found).
    """
    model_dir = repository / name
    try:
        settings = override or read_config(model_dir)
    except ConfigError as error:
        files = scan_model(repository, name) or [ModelFile(name, 1, model_dir / "1" / MODEL_FILE)]
        empty = ReadConfig(mc.ModelConfig(), present=False)
        return [(dataclasses.replace(f, problem=str(error)), empty) for f in files]
    filename = settings.config.default_model_filename or MODEL_FILE
    files = scan_model(repository, name, filename)
    if not files:
        seen = sorted(p.name + "/" * p.is_dir() for p in model_dir.iterdir()) if model_dir.is_dir() else []
        shown = ", ".join(seen[:8]) + (", ..." if len(seen) > 8 else "") if seen else "nothing"
        log.warning(
            "model %s: not served, no version: expected %s/<version number>/%s, found %s", name, name, filename, shown
        )
    chosen = select_versions([f.version for f in files], settings)
    if len(chosen) < len(files):
        log.info("model %s: version_policy serves versions %s of %s", name, chosen, [f.version for f in files])
    return [(f, settings) for f in files if f.version in chosen]
