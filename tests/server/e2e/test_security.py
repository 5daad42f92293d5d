"""TLS, mutual TLS and the bearer token, with certificates made here by the openssl command;
the token never reaches the log, and the server warns where it listens beyond loopback unprotected."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from graphgen_client import Client, ClientError
from graphgen_client.cli import main as client_main
from graphgen_server.frontends.security import exposure_warnings, is_loopback
from tests.support.server import ServerProcess, add_tiny_model

pytestmark = pytest.mark.skipif(
    shutil.which("openssl") is None, reason="needs the openssl command to make certificates"
)
TOKEN = "s3cr3t-token-7f1d9c2b"
EC_KEY = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def _openssl(*args: str, cwd) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def _ca(directory, name: str) -> None:
    _openssl(
        "req",
        "-x509",
        *EC_KEY,
        "-keyout",
        f"{name}.key",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
        cwd=directory,
    )


def _signed(directory, name: str, ca: str, extensions: str) -> None:
    (directory / f"{name}.ext").write_text(extensions)
    _openssl("req", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        f"{ca}.pem",
        "-CAkey",
        f"{ca}.key",
        "-CAcreateserial",
        "-out",
        f"{name}.pem",
        "-days",
        "2",
        "-extfile",
        f"{name}.ext",
        cwd=directory,
    )


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    """A CA, a server certificate for 127.0.0.1, a client certificate, and a client of another CA."""
    directory = tmp_path_factory.mktemp("pki")
    _ca(directory, "ca")
    _ca(directory, "rogue")
    _signed(directory, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    _signed(directory, "client", "ca", "extendedKeyUsage=clientAuth\n")
    _signed(directory, "intruder", "rogue", "extendedKeyUsage=clientAuth\n")
    _signed(directory, "named", "ca", "subjectAltName=DNS:models.example\nextendedKeyUsage=serverAuth\n")
    token = directory / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    return directory


@pytest.fixture(scope="module")
def repository(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repository")
    add_tiny_model(repo)
    return repo


def _tls_args(pki, *, client_ca: bool = False) -> list[str]:
    args = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")]
    return args + (["--tls-client-ca", str(pki / "ca.pem")] if client_ca else [])


def _works(address: str, **options) -> str:
    """OK, or the status code the call ended with."""
    try:
        with Client(address, timeout=10, **options) as client:
            client.classify_tensor(np.zeros((1, 3, 32, 32), np.float32), model="tiny", top_k=1)
    except ClientError as error:
        return error.code.name
    return "OK"


def test_tls(repository, pki):
    with ServerProcess(repository, _tls_args(pki)) as server:
        assert _works(server.address, tls_ca=pki / "ca.pem") == "OK"
        assert _works(server.address) == "UNAVAILABLE"  # plaintext to a TLS port
        assert _works(server.address, tls_ca=pki / "rogue.pem") == "UNAVAILABLE"  # a server it cannot verify
        assert _works(server.address, tls=True) == "UNAVAILABLE"  # the system's CAs do not know ours
    assert "(TLS;" in server.log


def test_a_certificate_for_another_name_needs_that_name(repository, pki):
    args = ["--tls-cert", str(pki / "named.pem"), "--tls-key", str(pki / "named.key")]
    with ServerProcess(repository, args) as server:
        assert _works(server.address, tls_ca=pki / "ca.pem") == "UNAVAILABLE"  # it does not name 127.0.0.1
        assert _works(server.address, tls_ca=pki / "ca.pem", tls_server_name="models.example") == "OK"
        health = ["--address", server.address, "--tls-ca", str(pki / "ca.pem"), "--tls-server-name", "models.example"]
        assert client_main([*health, "health"]) == 0  # a container health check dials 127.0.0.1


def test_mutual_tls_takes_only_clients_with_a_certificate_of_its_ca(repository, pki):
    with ServerProcess(repository, _tls_args(pki, client_ca=True)) as server:
        ca = pki / "ca.pem"
        assert _works(server.address, tls_ca=ca, tls_cert=pki / "client.pem", tls_key=pki / "client.key") == "OK"
        assert _works(server.address, tls_ca=ca) == "UNAVAILABLE"  # no client certificate
        intruder = dict(tls_cert=pki / "intruder.pem", tls_key=pki / "intruder.key")
        assert _works(server.address, tls_ca=ca, **intruder) == "UNAVAILABLE"
    assert "(mutual TLS;" in server.log


def test_bearer_token(repository, pki):
    with ServerProcess(repository, ["--token-file", str(pki / "token"), "--log-level", "DEBUG"]) as server:
        assert _works(server.address, token=TOKEN) == "OK"
        with pytest.raises(ClientError, match="no bearer token") as missing:
            Client(server.address, timeout=10).models()
        assert missing.value.code == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(ClientError, match="wrong bearer token") as wrong:
            Client(server.address, timeout=10, token=TOKEN + "x").models()
        assert wrong.value.code == grpc.StatusCode.UNAUTHENTICATED
        with grpc.insecure_channel(server.address) as channel:
            # Health stays open (probes carry no credentials); reflection (a stream) does not.
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            reflect = channel.stream_stream("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
            with pytest.raises(grpc.RpcError) as refused:
                list(reflect(iter([b""]), timeout=10))
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            garbage = channel.unary_unary("/graphgen.v1.Classifier/Classify")
            with pytest.raises(grpc.RpcError) as unparsed:
                garbage(b"\xff\xff", timeout=10)  # refused before any parsing
            assert unparsed.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert server.returncode == 0
    assert TOKEN not in server.log and "refused a call to /graphgen.v1.Classifier/ListModels" in server.log


def test_token_over_tls_with_the_client_cli(repository, pki, capsys, monkeypatch):
    with ServerProcess(repository, [*_tls_args(pki), "--token-file", str(pki / "token")]) as server:
        base = ["--address", server.address, "--tls-ca", str(pki / "ca.pem")]
        assert client_main([*base, "--token-file", str(pki / "token"), "models"]) == 0
        assert "tiny" in capsys.readouterr().out
        monkeypatch.delenv("GRAPHGEN_TOKEN", raising=False)
        assert client_main([*base, "models"]) == 1
        assert "UNAUTHENTICATED" in capsys.readouterr().err
        monkeypatch.setenv("GRAPHGEN_TOKEN", TOKEN)
        assert client_main([*base, "models"]) == 0
        assert client_main([*base, "--token-file", str(pki / "absent"), "models"]) == 2
    assert TOKEN not in server.log


def _server(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "graphgen_server", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tls-cert", "{pki}/server.pem"], "--tls-cert and --tls-key go together"),
        (["--tls-client-ca", "{pki}/ca.pem"], "--tls-client-ca needs --tls-cert"),
        (
            ["--tls-cert", "{pki}/absent.pem", "--tls-key", "{pki}/server.key"],
            "--tls-cert {pki}/absent.pem: cannot read",
        ),
        (["--tls-cert", "{pki}/server.ext", "--tls-key", "{pki}/server.key"], "not a PEM file"),
        (["--token-file", "{pki}/absent"], "--token-file {pki}/absent: cannot read it"),
        (["--token-file", "{pki}/empty"], "the file is empty"),
        (["--token-file", "{pki}/two"], "found spaces or control characters inside"),
    ],
    ids=[
        "cert without key",
        "client CA without TLS",
        "missing cert",
        "not PEM",
        "missing token",
        "empty token",
        "two tokens",
    ],
)
def test_unusable_security_settings_stop_with_exit_2(repository, pki, args, message):
    (pki / "empty").write_text("\n")
    (pki / "two").write_text("one two\n")
    with socket.socket() as taken:  # the settings are judged before any port: a busy one does not hide them
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = str(taken.getsockname()[1])
        ports = ["--port", busy, "--http-port", busy, "--metrics-port", busy]
        done = _server("--repository", str(repository), *ports, *(a.format(pki=pki) for a in args))
    assert done.returncode == 2 and message.format(pki=pki) in done.stderr, done.stderr
    assert "Traceback" not in done.stderr


def test_loopback_by_default_and_warnings_beyond_it():
    from graphgen_server.cli import make_parser
    from graphgen_server.config import ServerConfig

    assert make_parser().get_default("host") == "127.0.0.1" and ServerConfig(repository=".").host == "127.0.0.1"
    assert all(is_loopback(h) for h in ["127.0.0.1", "::1", "[::1]", "localhost", "127.0.0.2"])
    assert not any(is_loopback(h) for h in ["0.0.0.0", "::", "10.0.0.5", "example.org"])
    assert exposure_warnings("127.0.0.1", tls=False, token=False) == []
    assert len(exposure_warnings("0.0.0.0", tls=False, token=False)) == 2
    assert "without --token-file" in exposure_warnings("0.0.0.0", tls=True, token=False)[0]
    assert "in clear" in exposure_warnings("0.0.0.0", tls=False, token=True)[0]
    assert exposure_warnings("0.0.0.0", tls=True, token=True) == []
    assert TOKEN not in repr(ServerConfig(repository=".", token=TOKEN))
