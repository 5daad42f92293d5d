"""disconnect_port: the server's listener and accepted connections close; nothing else does."""

from __future__ import annotations

import socket

import pytest

from graphgen_server.frontends.disconnect import disconnect_port


def test_listener_and_accepted_connections_close_client_sockets_stay():
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    other = socket.create_server(("127.0.0.1", 0))  # another server of this process: untouched
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    other_client = socket.create_connection(other.getsockname())
    other_accepted, _ = other.accept()
    try:
        accepted.sendall(b"answer")  # written before the close: still delivered

        assert disconnect_port(port) == 2  # the listener and the one accepted connection

        client.settimeout(5)
        assert client.recv(16) == b"answer"
        assert client.recv(16) == b""  # then end-of-stream
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        # The client socket of this process (its local port is an ephemeral one) and the other
        # server's sockets still work; the descriptors themselves stay open for their owner.
        other_client.sendall(b"ping")
        assert other_accepted.recv(4) == b"ping"
        assert accepted.fileno() >= 0 and listener.fileno() >= 0
    finally:
        for sock in (listener, other, client, accepted, other_client, other_accepted):
            sock.close()


def test_a_port_nobody_listens_on_touches_nothing():
    with socket.create_server(("127.0.0.1", 0)) as free:
        port = free.getsockname()[1]
    assert disconnect_port(port) == 0
