"""Typed architecture options, make()'s Network record, the one parameter count, and the CLI generated from them."""

from __future__ import annotations

import json

import pytest

from graphgen import registry
from graphgen.architecture import Network, Option
from graphgen.build import BuildOptions, build, save
from graphgen.cli import main
from graphgen.errors import GraphgenError, OptionError
from graphgen.onnx_io import load_model
from graphgen.stats import count_parameters, layer_stats


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_options_are_typed_and_checked():
    deploy = Option("deploy", bool, "fused")
    form = Option("form", str, "form", ("grouped", "branches"), "grouped")
    phi = Option("phi", float, "phi", default=0.0)
    assert (deploy.usage, form.usage, phi.usage) == ("--deploy", "--form {grouped,branches}", "--phi FLOAT")
    assert phi.check(2) == 2.0 and isinstance(phi.check(2), float)
    for option, value, says in [
        (deploy, "yes", "is a switch"),
        (form, "stacked", "must be one of grouped, branches"),
        (phi, "big", "takes a float"),
        (phi, float("nan"), "finite"),
    ]:
        with pytest.raises(OptionError, match=says):
            option.check(value)


def test_a_default_must_fit_its_own_option():
    with pytest.raises(OptionError, match="takes a float"):
        Option("phi", float, "phi")  # the default default, False, is no float
    with pytest.raises(OptionError, match="must be one of"):
        Option("form", str, "form", ("grouped", "branches"), "stacked")


def test_one_option_name_means_one_type_everywhere():
    options = registry.all_options()
    assert set(options) == {"phi", "width", "deploy", "form", "aux", "activation"}
    for arch in registry.architectures():
        for option in arch.options:
            assert (option.type, option.choices) == (options[option.name].type, options[option.name].choices)


def test_option_values_fill_defaults_and_refuse_what_is_not_taken():
    arch = registry.get("parnet_s")
    assert arch.option_values({}) == {"activation": "relu", "deploy": False}
    assert arch.option_values({"deploy": True}) == {"activation": "relu", "deploy": True}
    with pytest.raises(OptionError, match=r"resnet18 does not take --deploy \(its options: none\)"):
        registry.get("resnet18").option_values({"deploy": True})
    with pytest.raises(OptionError, match="must be one of relu, silu"):
        arch.option_values({"activation": "gelu"})


@pytest.mark.parametrize(
    ("name", "options", "outputs", "adapts", "resolution", "metadata"),
    [
        ("resnet18", {}, ("logits",), True, None, set()),
        ("googlenet", {"aux": True}, ("logits", "aux_logits2", "aux_logits1"), False, None, set()),
        ("googlenet", {}, ("logits",), True, None, set()),
        ("inception_v3", {"aux": True}, ("logits", "aux_logits"), False, None, set()),
        ("efficientnet", {"phi": 1.0}, ("logits",), False, 256, {"graphgen.scaling"}),
        ("efficientnet_b3", {}, ("logits",), False, None, {"graphgen.scaling"}),
        ("parnet_s", {"deploy": True}, ("logits",), False, None, set()),
    ],
)
def test_make_returns_a_documented_record(name, options, outputs, adapts, resolution, metadata):
    network = registry.get(name).network(10, options)
    assert isinstance(network, Network)
    assert network.output_names == outputs
    assert (network.adapt_state_dict is not None) == adapts
    assert network.resolution == resolution
    assert set(network.metadata) == metadata


def test_one_parameter_count_everywhere(capsys, tmp_path):
    """repvgg_b0 (training form, BatchNorm in every branch): torch's 15,817,960 in list, build, stats, convert."""
    code, out, _ = run(capsys, "list", "--json")
    rows = {row["name"]: row for row in json.loads(out)}
    assert rows["repvgg_b0"]["parameters"] == 15_817_960
    assert rows["repvgg_b0"]["options"] == ["--deploy"] and rows["parnet_s"]["options"] == [
        "--activation {relu,silu}",
        "--deploy",
    ]
    path = tmp_path / "repvgg_b0.onnx"
    code, out, _ = run(capsys, "build", "repvgg_b0", "-o", str(path), "--resolution", "64")
    stored = count_parameters(load_model(path)).initializer_elements  # folded: fewer than the training form's
    assert code == 0 and f"15,817,960 parameters ({stored:,} initializer elements)" in out
    code, out, _ = run(capsys, "stats", str(path))
    assert "15,817,960 parameters" in out
    code, out, _ = run(capsys, "convert", str(path), "-o", str(tmp_path / "fp16.onnx"), "--fp16")
    assert f"15,817,960 parameters ({stored:,} initializer elements)" in out
    model = build("repvgg_b0", BuildOptions(resolution=64, keep_bn=True))
    assert count_parameters(model).parameters == layer_stats(model).params == 15_817_960


def test_compare_takes_onnx_files_beside_names(capsys, tmp_path):
    path = save(build("squeezenet1_1", BuildOptions(resolution=64)), tmp_path / "small.onnx")
    code, out, _ = run(capsys, "compare", "squeezenet1_1", str(path), "--json")
    by_name = {row["name"]: row for row in json.loads(out)}
    assert code == 0
    assert by_name["squeezenet1_1"]["params"] == by_name[str(path)]["params"] == 1_235_496
    assert by_name[str(path)]["resolution"] == 64 and by_name[str(path)]["family"] == "squeezenet"
    code, _, err = run(capsys, "compare", str(tmp_path / "missing.onnx"))
    assert code == 2 and "no such file" in err


def test_a_domain_error_is_reported_anything_else_keeps_its_traceback(capsys, monkeypatch, tmp_path):
    code, _, err = run(capsys, "build", "parnet_s", "-o", str(tmp_path / "x.onnx"), "--resolution", "200")
    assert code == 2 and "divisible by 32" in err

    def broken(name, options=None, **_):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("graphgen.build.build", broken)
    with pytest.raises(ZeroDivisionError):
        main(["stats", "resnet18"])
    assert issubclass(OptionError, GraphgenError)
