"""HTTP/REST and /metrics under the gRPC server's TLS settings (mutual TLS here)."""

from __future__ import annotations

import shutil
import ssl
import urllib.error
import urllib.request

import pytest

from tests.server.e2e.test_security import pki  # noqa: F401  (the certificates: a pytest fixture)
from tests.support.server import ServerProcess, add_tiny_model

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")


def _get(url: str, context: ssl.SSLContext | None) -> int:
    with urllib.request.urlopen(url, timeout=30, context=context) as response:
        return response.status


def test_https_with_client_certificates(tmp_path_factory, pki):  # noqa: F811
    repo = tmp_path_factory.mktemp("repository")
    add_tiny_model(repo)
    tls = ["--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")]
    with ServerProcess(repo, [*tls, "--tls-client-ca", str(pki / "ca.pem")]) as server:
        trusted = ssl.create_default_context(cafile=str(pki / "ca.pem"))
        trusted.load_cert_chain(pki / "client.pem", pki / "client.key")
        http, metrics = f"https://{server.http_address}", server.metrics_url.replace("http://", "https://")
        assert _get(f"{http}/v2/models/tiny", trusted) == 200
        assert _get(metrics, trusted) == 200
        anonymous = ssl.create_default_context(cafile=str(pki / "ca.pem"))  # no client certificate
        with pytest.raises((ssl.SSLError, urllib.error.URLError, ConnectionError)):
            _get(f"{http}/v2/models/tiny", anonymous)
        with pytest.raises((urllib.error.URLError, ConnectionError)):
            _get(f"http://{server.http_address}/v2/health/ready", None)  # plaintext is not served
