"""The server's event loop: uvloop where installed (auto), or asyncio's own on request."""

from __future__ import annotations

import asyncio
import importlib.util

import pytest

from graphgen_server.app import run_loop
from graphgen_server.cli import config_from_args, make_parser


async def loop_kind() -> int:
    return 1 if type(asyncio.get_running_loop()).__module__.startswith("uvloop") else 0


def test_asyncio_on_request():
    assert run_loop(loop_kind(), "asyncio") == 0


@pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop not installed")
@pytest.mark.parametrize("choice", ["auto", "uvloop"])
def test_uvloop_where_installed(choice):
    assert run_loop(loop_kind(), choice) == 1


def test_the_flag_reaches_the_configuration(tmp_path):
    parse = make_parser().parse_args
    assert config_from_args(parse(["--repository", str(tmp_path)])).event_loop == "auto"
    assert config_from_args(parse(["--repository", str(tmp_path), "--event-loop", "asyncio"])).event_loop == "asyncio"
