"""Stop listening and close a port's connections at the socket level, before gRPC's own stop.

Why: gRPC's server shutdown (``grpc.aio.Server.stop``, any grace) turns every call that reached
the server but was not yet handed to a handler — calls waiting in gRPC core's queue, and calls
arriving before the client has read the GOAWAY — into "zombies" that end CANCELLED at the
client. A client cannot tell whether a CANCELLED call ran, so it cannot safely retry it. gRPC
Python has no call that sends GOAWAY without that shutdown. Closing the sockets first instead
ends every call still in transit with UNAVAILABLE at the client (the transport's status for a
lost connection), which it retries elsewhere; once no call is running (the server drained
first) none of them was touched.

``shutdown(2)`` (not ``close``) is used on a duplicate of each descriptor: the socket stays
owned by gRPC, which sees end-of-stream and cleans up; data already written still reaches the
peer before the FIN. Descriptors are listed through ``/dev/fd`` (Linux, macOS); where that is
missing nothing is closed and gRPC's stop behaves as before.
"""

from __future__ import annotations

import contextlib
import os
import socket
import stat

INET = (socket.AF_INET, socket.AF_INET6)


def _socket_descriptors() -> list[int]:
    try:
        names = os.listdir("/dev/fd")
    except OSError:
        return []
    descriptors = []
    for fd in (int(name) for name in names if name.isdigit()):
        with contextlib.suppress(OSError):  # closed since it was listed
            if stat.S_ISSOCK(os.fstat(fd).st_mode):
                descriptors.append(fd)
    return descriptors


def _local_port(sock: socket.socket) -> int | None:
    if sock.family not in INET or sock.type != socket.SOCK_STREAM:
        return None
    try:
        return sock.getsockname()[1]
    except OSError:
        return None


def disconnect_port(port: int) -> int:
    """Shut down the listening socket and every accepted connection on TCP ``port``; how many.

    Only sockets whose *local* port is ``port`` are touched: the server's own, never a client
    socket of the same process (whose local port is an ephemeral one). The listener goes first,
    so a client reconnecting at once is refused rather than accepted again.
    """
    listeners: list[socket.socket] = []
    connections: list[socket.socket] = []
    for fd in _socket_descriptors():
        try:
            duplicate = os.dup(fd)
        except OSError:  # closed since it was listed
            continue
        try:
            sock = socket.socket(fileno=duplicate)
        except OSError:
            os.close(duplicate)
            continue
        if _local_port(sock) == port:
            listening = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
            (listeners if listening else connections).append(sock)
        else:
            sock.close()
    for sock in (*listeners, *connections):
        with contextlib.suppress(OSError):  # already closed by the peer
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()  # the duplicate only
    return len(listeners) + len(connections)
