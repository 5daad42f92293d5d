"""graphgen-client's command line parsed into typed values, no server needed."""

from __future__ import annotations

from pathlib import Path

import pytest

from graphgen_client.cli import Classify, Connection, Health, Models, parse
from graphgen_client.client import DEFAULT_ADDRESS, TOKEN_VARIABLE


def test_each_command_is_its_own_type_with_typed_fields(tmp_path) -> None:
    connection, command = parse(
        ["classify", "a.png", "b.jpg", "--model", "m", "--top-k", "3", "--profile", "--plot", str(tmp_path / "p.png")]
    )
    assert connection == Connection()  # every connection option at its default
    assert command == Classify(
        images=[Path("a.png"), Path("b.jpg")], model="m", top_k=3, profile=True, plot=tmp_path / "p.png"
    )
    assert parse(["models"])[1] == Models()
    assert parse(["health", "--service", "graphgen.v1.Classifier"])[1] == Health("graphgen.v1.Classifier")


def test_connection_options_go_before_or_after_the_command() -> None:
    before, _ = parse(["--address", "10.0.0.1:8001", "--timeout", "5", "models"])
    after, _ = parse(["models", "--address", "10.0.0.1:8001", "--timeout", "5"])
    assert before == after == Connection(address="10.0.0.1:8001", timeout=5.0)
    assert parse(["--address", "a:1", "health"])[0].address == "a:1" != DEFAULT_ADDRESS


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["classify", "a.png", "--model", "m", "--plot", "p.png"], "add --profile"),
        (["classify", "a.png", "--model", "m", "--profile-runs", "3"], "add --profile"),
        (["--tls-cert", "c.pem", "models"], "--tls-cert and --tls-key go together"),
    ],
)
def test_contradictions_are_usage_errors(argv, says, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse(argv)
    assert exit_.value.code == 2 and says in capsys.readouterr().err


def test_the_token_and_pem_files_are_read_when_the_client_is_made(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    token, ca = tmp_path / "token", tmp_path / "ca.pem"
    token.write_text(" secret\n")
    ca.write_bytes(b"PEM")
    options = Connection(tls_ca=ca, token_file=token, timeout=3.0).client_options()
    assert options == {"timeout": 3.0, "token": "secret", "tls": False, "tls_server_name": None, "tls_ca": b"PEM"}
    monkeypatch.setenv(TOKEN_VARIABLE, "from-env")
    assert Connection().client_options()["token"] == "from-env"
    with pytest.raises(OSError):
        Connection(token_file=tmp_path / "missing").client_options()


@pytest.mark.parametrize("timeout", ["-1", "0", "nan", "soon"])
def test_a_client_timeout_that_cannot_work_is_refused(timeout, capsys):
    """`graphgen-client --timeout -1` went on to dial the server and failed with a gRPC error."""
    from graphgen_client.cli import main as client_main

    with pytest.raises(SystemExit) as stop:
        client_main(["--timeout", timeout, "health"])
    assert stop.value.code == 2
    assert "expected a positive number of seconds" in capsys.readouterr().err


def test_the_token_file_help_says_the_variable_holds_the_token_itself() -> None:
    from graphgen_client.cli import make_parser

    text = " ".join(make_parser().format_help().split())
    assert f"without it: the token held in ${TOKEN_VARIABLE}" in text  # not a file named by it (issue 20)
    assert f"default: ${TOKEN_VARIABLE}" not in text
    assert "host[:port] (port 8001 unless given)" in text
