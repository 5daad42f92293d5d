"""Typed seams of the builder: every ``make`` fits MakeNetwork (the class count, then exactly its declared options,
no defaults), and every module's ``forward`` is annotated (so mypy checks what flows between layers)."""

from __future__ import annotations

import ast
from pathlib import Path

from graphgen import registry
from graphgen.architecture import Architecture, Network, Option, imagenet_eval
from graphgen.models.resnet import ResNet

DEPLOY = Option("deploy", bool, "fused form")
WIDTH = Option("width", float, "width multiplier", default=1.0)


def test_every_make_takes_exactly_its_declared_options_without_defaults() -> None:
    problems = [problem for arch in registry.architectures() for problem in arch.make_problems()]
    assert not problems, "\n".join(problems)


def _row(make, options: tuple[Option, ...] = ()) -> Architecture:
    return Architecture(
        name="probe",
        family="probe",
        make=make,
        resolution=224,
        preprocess=imagenet_eval(224),
        head="fc",
        reference="prose",
        paper="paper",
        options=options,
    )


def test_each_way_a_make_can_depart_is_named() -> None:
    def network(_num_classes: int) -> Network:
        raise AssertionError("never built")

    cases = {
        "has a default; the Option's declaration holds it": (lambda n, deploy=False: network(n), (DEPLOY,)),
        "does not take the declared option(s) deploy": (lambda n: network(n), (DEPLOY,)),
        "takes width, which the row does not declare": (lambda n, width: network(n), ()),
        "takes *options; it takes the declared options only": (lambda n, **options: network(n), (DEPLOY,)),
        "takes the number of classes as its first, positional parameter": (lambda *, deploy: network(1), (DEPLOY,)),
    }
    for says, (make, options) in cases.items():
        problems = _row(make, options).make_problems()
        assert any(says in problem for problem in problems), (says, problems)


def test_an_annotation_must_be_the_options_type() -> None:
    def make(num_classes: int, width: int) -> Network:  # the option is a float
        raise AssertionError("never built")

    def fitting(num_classes: int, width: float) -> Network:
        raise AssertionError("never built")

    assert _row(make, (WIDTH,)).make_problems() == ["probe: make's width is annotated int, its option is a float"]
    assert _row(fitting, (WIDTH,)).make_problems() == []


def test_the_declared_default_is_the_one_make_gets() -> None:
    resnext = registry.get("resnext50_32x4d")
    (form,) = resnext.options
    default = resnext.network(10).module
    assert isinstance(default, ResNet) and default.config.form == form.default == "grouped"
    branches = resnext.network(10, {"form": "branches"}).module
    assert isinstance(branches, ResNet) and branches.config.form == "branches"


def test_every_forward_is_annotated() -> None:
    """``forward(self, op: OpBuilder, x: ir.Value) -> ir.Value`` (or what the module really takes and gives)."""
    package = Path(__file__).resolve().parents[2] / "graphgen"
    bare = []
    for path in sorted(package.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.name == "forward":
                arguments = node.args.args[1:]  # after self
                if node.returns is None or any(argument.annotation is None for argument in arguments):
                    bare.append(f"{path.relative_to(package.parent)}:{node.lineno}")
    assert not bare, bare
    assert len(list(package.rglob("*.py"))) > 50  # the walk saw the package
