"""graphgen-server's flags for gRPC connections become the gRPC server's channel arguments."""

from __future__ import annotations

from graphgen_server.app import grpc_options
from graphgen_server.cli import config_from_args, make_parser


def _options(*flags: str) -> dict[str, int]:
    return dict(grpc_options(config_from_args(make_parser().parse_args(["--repository", "r", *flags]))))


def test_connections_do_not_age_unless_asked():
    options = _options()
    assert "grpc.max_connection_age_ms" not in options and "grpc.max_connection_age_grace_ms" not in options
    assert options["grpc.so_reuseport"] == 0 and options["grpc.max_receive_message_length"] == 64 << 20


def test_max_connection_age_and_its_grace_in_milliseconds():
    assert _options("--max-connection-age", "300")["grpc.max_connection_age_ms"] == 300_000
    assert "grpc.max_connection_age_grace_ms" not in _options("--max-connection-age", "300")  # calls finish
    aged = _options("--max-connection-age", "0.5", "--max-connection-age-grace", "30")
    assert (aged["grpc.max_connection_age_ms"], aged["grpc.max_connection_age_grace_ms"]) == (500, 30_000)
