"""The rules tests/conftest.py marks tests by (tests/support/markers.py), and the guard behind them."""

from __future__ import annotations

import subprocess
import sys

import pytest

from graphgen import registry
from tests.support.markers import covers_the_registry, names_a_server, refusing_servers, starts_a_server
from tests.support.server import ServerProcess

SERVER_COMMAND = [sys.executable, "-m", "graphgen_server"]


def _uses_the_server_class(repository):
    with ServerProcess(repository):
        pass


def _runs_the_server_module(repository):
    subprocess.run([sys.executable, "-m", "graphgen_server", "--repository", str(repository)], check=False)


def _calls_a_helper_that_starts_one(repository):
    _uses_the_server_class(repository)


def _only_logs_under_the_servers_name():
    import logging

    logging.getLogger("graphgen_server").info("graphgen_server")


@pytest.mark.parametrize("function", [_uses_the_server_class, _runs_the_server_module, _calls_a_helper_that_starts_one])
def test_what_starts_a_server_is_named_so(function):
    assert names_a_server(function)


def test_naming_the_server_module_without_running_it_is_not_starting_one():
    assert not names_a_server(_only_logs_under_the_servers_name)
    assert not names_a_server(len)  # not this repository's code


@pytest.mark.parametrize(
    ("argv", "starts"),
    [
        ([sys.executable, "-m", "graphgen_server", "--repository", "r"], True),
        (["/usr/bin/graphgen-server", "--repository", "r"], True),
        ([sys.executable, "-m", "graphgen_client.demo"], True),
        ([sys.executable, "-m", "graphgen", "list"], False),
        ([sys.executable, "-c", "import graphgen_server"], False),
    ],
)
def test_command_lines_that_start_a_server(argv, starts):
    assert starts_a_server(argv) is starts


def test_an_unmarked_test_cannot_start_a_server(tmp_path):
    with refusing_servers("tests/x.py::test_y"), pytest.raises(AssertionError, match="not marked e2e"):
        subprocess.run([*SERVER_COMMAND, "--repository", str(tmp_path)], check=False)
    done = subprocess.run([sys.executable, "-c", "print(1)"], capture_output=True, text=True, check=True)
    assert done.stdout == "1\n"  # other commands run, and the guard is gone after the block


def test_a_sweep_covers_half_the_registry_or_half_its_families():
    architectures = registry.architectures()
    names = [architecture.name for architecture in architectures]
    one_per_family = list({architecture.family: architecture.name for architecture in architectures}.values())
    assert covers_the_registry(names, architectures)
    assert covers_the_registry(architectures, architectures)
    assert covers_the_registry([*names[: len(names) // 2 + 1], "resnet18", 3, None], architectures)
    assert covers_the_registry(one_per_family, architectures)
    assert covers_the_registry(one_per_family[: (len(one_per_family) + 1) // 2], architectures)
    assert not covers_the_registry(one_per_family[: len(one_per_family) // 2 - 1], architectures)
    assert not covers_the_registry(["resnet18", "vgg11_bn", "efficientnet_lite0", "tiny"], architectures)


def test_this_files_marks(request):
    """This file starts no server and sweeps nothing: it runs in `make test-fast`."""
    assert request.node.get_closest_marker("e2e") is None and request.node.get_closest_marker("zoo") is None
