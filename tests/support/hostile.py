"""Hostile clients for the server's e2e tests: compression bombs over HTTP/1.1 and raw HTTP/2 (gRPC),
a health poller that times every answer of both protocols, and a process's resident memory.

Everything here talks to 127.0.0.1 over plain sockets, with a timeout on every call: a server that
stalls makes a test fail, never hang.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import socket
import struct
import threading
import time
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import h2.config
import h2.connection
import h2.events
from grpc_health.v1 import health_pb2, health_pb2_grpc

MIB = 1 << 20


def gzip_bomb(inflated_bytes: int, encoding: str = "gzip") -> bytes:
    """Zeros compressed at zlib's best ratio (~1:1000): 2 GiB become ~2 MB."""
    wbits = {"gzip": 31, "deflate": 15}[encoding]
    compressor = zlib.compressobj(9, zlib.DEFLATED, wbits)
    zeros = bytes(MIB)
    pieces = [compressor.compress(zeros) for _ in range(inflated_bytes // MIB)]
    return b"".join([*pieces, compressor.flush()])


def rss_bytes(pid: int, children: bool = True) -> int:
    """Resident memory of a process now, and of its descendants unless ``children`` is false
    (graphgen-server's front-end processes are children of the one started), from Linux's /proc."""
    return sum(_own_rss(p) for p in [pid, *(descendants(pid) if children else [])])


def _own_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:  # exited meanwhile
        pass
    return 0


def descendants(pid: int) -> list[int]:
    """The processes started by ``pid``, and by them, now."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parent = int(stat.rsplit(")", 1)[1].split()[1])  # (the name, in parentheses, may hold spaces)
            parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found += children
        todo += children
    return found


@dataclass
class HttpAnswer:
    status: int  # 0: the connection ended without an answer
    headers: dict[str, str]
    body: bytes
    seconds: float  # from the first byte sent to the answer's last


def http_request(
    port: int,
    method: str,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    *,
    send_body: bool = True,
    timeout: float = 30.0,
) -> HttpAnswer:
    """One HTTP/1.1 request on its own connection, written byte for byte as given (a Content-Length
    that lies included: ``headers`` may set it); the answer as soon as it is complete (its
    Content-Length), or what came before the connection closed or ``timeout`` passed."""
    start = time.monotonic()
    fields = {"Host": f"127.0.0.1:{port}", "Content-Length": str(len(body)), "Connection": "close", **(headers or {})}
    head = f"{method} {path} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head.encode("latin-1"))
        received = bytearray()
        done = threading.Event()
        reader = threading.Thread(target=_read_answer, args=(sock, received, start + timeout, done), daemon=True)
        reader.start()
        if send_body:
            with contextlib.suppress(OSError):  # the server may answer (and close) before reading it all
                sock.sendall(body)
        done.wait(max(0.0, start + timeout - time.monotonic()))
        seconds = time.monotonic() - start
    return _parse(bytes(received), seconds)


def _read_answer(sock: socket.socket, into: bytearray, deadline: float, done: threading.Event) -> None:
    try:
        while time.monotonic() < deadline and not _complete(into):
            chunk = sock.recv(1 << 16)
            if not chunk:
                return
            into += chunk
    except OSError:
        return
    finally:
        done.set()


def _complete(raw: bytearray) -> bool:
    head, found, body = bytes(raw).partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return len(body) >= int(value)
    return False  # (no length: complete when the connection closes)


def _parse(raw: bytes, seconds: float) -> HttpAnswer:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/1."):
        return HttpAnswer(0, {}, raw, seconds)
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return HttpAnswer(int(lines[0].split()[1]), headers, body, seconds)


def grpc_raw_call(
    port: int,
    path: str,
    message: bytes,
    *,
    compressed: str = "",
    metadata: tuple[tuple[str, str], ...] = (),
    timeout: float = 60.0,
) -> dict[str, str]:
    """One unary gRPC call whose message goes on the wire as given: ``compressed`` ("gzip") sets the
    message's compressed flag and ``grpc-encoding`` without compressing anything, so a bomb made
    here reaches the server as it is. Returns the answer's headers and trailers (``grpc-status``...),
    ``reset``/``goaway`` when the server cut the stream or connection."""
    deadline = time.monotonic() + timeout
    connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True, header_encoding="utf-8"))
    connection.initiate_connection()
    headers = [
        (":method", "POST"),
        (":scheme", "http"),
        (":path", path),
        (":authority", f"127.0.0.1:{port}"),
        ("content-type", "application/grpc"),
        ("te", "trailers"),
        *(("grpc-encoding", compressed),) * bool(compressed),
        *metadata,
    ]
    stream = connection.get_next_available_stream_id()
    connection.send_headers(stream, headers)
    data = struct.pack(">BI", 1 if compressed else 0, len(message)) + message
    sent, answer = 0, {}
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        while time.monotonic() < deadline:
            while sent < len(data):
                room = min(connection.local_flow_control_window(stream), connection.max_outbound_frame_size)
                if room <= 0:
                    break
                piece = data[sent : sent + room]
                sent += len(piece)
                connection.send_data(stream, piece, end_stream=sent == len(data))
            try:
                sock.sendall(connection.data_to_send())
                received = sock.recv(1 << 16)
            except OSError as error:
                answer["error"] = str(error)
                return answer
            if not received:
                answer.setdefault("closed", "1")
                return answer
            for event in connection.receive_data(received):
                if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
                    answer.update(dict(event.headers))
                    if isinstance(event, h2.events.TrailersReceived) or event.stream_ended:
                        return answer
                elif isinstance(event, h2.events.DataReceived):
                    connection.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
                elif isinstance(event, h2.events.StreamReset):
                    answer["reset"] = str(event.error_code)
                    return answer
                elif isinstance(event, h2.events.ConnectionTerminated):
                    answer["goaway"] = str(event.error_code)
                    return answer
    answer["timeout"] = "1"
    return answer


@dataclass
class HealthPoller:
    """Asks gRPC health and HTTP ``/v2/health/live`` every ``every_s`` until stopped, and keeps how long
    every answer took (a failed or late answer counts as ``inf``).

    The asking runs in a process of its own (spawned: gRPC's threads do not survive a fork), so the
    test's own threads (bomb senders, raw HTTP/2 framing in Python) cannot delay it through this
    process's GIL: the times are the server's."""

    grpc_address: str
    http_port: int
    every_s: float = 0.1
    limit_s: float = 5.0
    grpc_s: list[float] = field(default_factory=list)
    http_s: list[float] = field(default_factory=list)

    def __enter__(self) -> HealthPoller:
        context = multiprocessing.get_context("spawn")
        self._stop, self._started, self._results = context.Event(), context.Event(), context.Queue()
        args = (self.grpc_address, self.http_port, self.every_s, self.limit_s, self._stop, self._started, self._results)
        self._process = context.Process(target=_poll_health, args=args, daemon=True)
        self._process.start()
        if not self._started.wait(60):
            self._process.kill()
            raise RuntimeError("the health poller did not start")
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        try:
            self.grpc_s, self.http_s = self._results.get(timeout=self.limit_s + 30)
        finally:
            self._process.join(10)
            if self._process.is_alive():
                self._process.kill()


def _poll_health(grpc_address, http_port, every_s, limit_s, stop, started, results) -> None:
    times: dict[str, list[float]] = {"grpc": [], "http": []}
    channel = grpc.insecure_channel(grpc_address)
    stub = health_pb2_grpc.HealthStub(channel)

    def ask_grpc() -> bool:
        try:
            stub.Check(health_pb2.HealthCheckRequest(service="live"), timeout=limit_s)
        except grpc.RpcError:
            return False
        return True

    def ask_http() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/live", timeout=limit_s) as answer:
                return answer.status == 200
        except OSError:
            return False

    def poll(kind: str, ask) -> None:
        while not stop.is_set():
            begun = time.monotonic()
            ok = ask()
            took = time.monotonic() - begun
            times[kind].append(took if ok else float("inf"))
            stop.wait(max(0.0, every_s - took))

    ask_grpc(), ask_http()  # connected and warm before the first timed answer
    threads = [
        threading.Thread(target=poll, args=(kind, ask)) for kind, ask in (("grpc", ask_grpc), ("http", ask_http))
    ]
    for thread in threads:
        thread.start()
    started.set()
    for thread in threads:
        thread.join()
    channel.close()
    results.put((times["grpc"], times["http"]))
