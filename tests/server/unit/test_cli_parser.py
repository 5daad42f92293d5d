"""graphgen-server's command line parsed, no server started: port ranges, and every option's default in --help."""

from __future__ import annotations

import pytest

from graphgen_server.cli import make_parser as server_parser


@pytest.mark.parametrize("option", ["--port", "--http-port", "--metrics-port"])
def test_a_port_beyond_65535_is_refused(option, capsys):
    with pytest.raises(SystemExit) as stop:
        server_parser().parse_args(["--repository", ".", option, "99999"])
    assert stop.value.code == 2
    assert "a port is 0 to 65535, not 99999" in capsys.readouterr().err


def test_ports_in_range_still_parse():
    args = server_parser().parse_args(["--repository", ".", "--port", "65535", "--http-port", "0"])
    assert args.port == 65535 and args.http_port is None


def test_every_server_option_says_its_default():
    """--help named no default for --grace (10 s) nor --max-image-pixels."""
    text = server_parser().format_help()
    assert "SIGTERM (default 10)" in text and "(default 40M)" in text
