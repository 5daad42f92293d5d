"""``graphgen-server --frontends N``: N front-end processes on the same ports, started and watched here.

Why processes: one Python process serves requests on about one core (the GIL; gRPC's and
asyncio's own work runs under it), so on a machine with more cores the server, not the model, is
the limit. Each front-end process (:mod:`graphgen_server.frontend_process`) is a full replica of
the server: gRPC, HTTP and metrics listeners, and the core with its share of every model's
instances; the kernel spreads connections over their listening sockets (``SO_REUSEPORT``). What
must be server-wide (statistics, model control, shared-memory regions) goes through the control
channel this process relays (:class:`~graphgen_server.core.control.ControlHub`).

This process:

- reserves the ports first: each is bound *without* ``SO_REUSEPORT`` (so a port another server
  holds, another graphgen-server included, stops this one at once), then marked ``SO_REUSEPORT``
  and listened on, so that the front-ends can listen beside it while nothing else can; once every
  front-end listens it is closed (connections made to it during the start-up are reset);
- starts the front-ends (the configuration goes to each over a pipe, the token included, never on
  a command line), says once where the server listens and prints the chosen ports, as one process
  would;
- forwards SIGTERM/SIGINT to every front-end (each drains as one server does: no call ends
  CANCELLED) and exits 0 once all stopped; a second signal is forwarded too (the pre-stop delay
  ends);
- starts a front-end again in place of one that exits unexpectedly (logged with its status); the
  new one replays the model loads and unloads made meanwhile before it serves. More than
  :data:`RESTARTS` such exits within :data:`RESTART_WINDOW_S` stop the server (exit 1). The
  statistics counted by a front-end that crashed are lost with it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import pickle
import signal
import socket
import sys
import time
from typing import Any

from graphgen_server.app import Ports, announce
from graphgen_server.config import ServerConfig
from graphgen_server.core.control import ControlHub
from graphgen_server.frontends.http_listener import BindError

log = logging.getLogger("graphgen_server")

RESTARTS = 5  # unexpected exits of front-ends within RESTART_WINDOW_S before the server gives up
RESTART_WINDOW_S = 60.0
KILL_AFTER_S = 30.0  # beyond pre-stop delay + grace, a front-end that has not exited is killed
EXIT_USAGE = 2


def reserve(host: str, port: int, what: str = "") -> socket.socket:
    """Hold ``host:port`` for this server's front-ends (port 0: a free one); BindError if it is taken.

    ``what``: the listener named in the error (none: gRPC's, said as one process says it)."""
    where = f"for {what} on" if what else "on"
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        sock = socket.socket(family, socket.SOCK_STREAM)
    except OSError as error:
        raise BindError(f"cannot listen {where} {host}:{port}: {error.strerror or error}") from None
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)  # as gRPC binds [::]
        # SO_REUSEADDR only (as every server sets it): connections of an earlier server in
        # TIME_WAIT do not block the port, a socket listening on it does, SO_REUSEPORT or not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host.strip("[]"), port))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)  # now the front-ends may join it
        sock.listen(1)  # listening: a probe with SO_REUSEADDR alone (another server's) fails too
    except OSError as error:
        sock.close()
        raise BindError(f"cannot listen {where} {host}:{port}: {error.strerror or error}") from None
    return sock


def default_frontends(cpus: float, wants_cuda: bool) -> int:
    """One front-end per CPU this process may use; one on a GPU (one CUDA context, one batcher)."""
    return 1 if wants_cuda else max(1, math.floor(cpus))


@dataclasses.dataclass
class Frontend:
    index: int
    process: asyncio.subprocess.Process
    started: float
    ready: asyncio.Future[tuple[int, int]]  # (models ready, models) once it listens
    failure: str = ""  # what it said when it could not start


class Supervisor:
    def __init__(self, config: ServerConfig, log_level: str) -> None:
        self.config, self.log_level = config, log_level
        self.hub = ControlHub(self._on_event)
        self.frontends: dict[int, Frontend] = {}
        self.ports = Ports(0)
        self.exits: list[float] = []  # when front-ends exited unexpectedly
        self.status = 0
        self._stopping = asyncio.Event()  # a signal came, or the server gives up
        self._done = asyncio.Event()  # stopping, and every front-end has exited
        self._tasks: set[asyncio.Task[Any]] = set()

    async def run(self) -> int:
        config = self.config
        held = [reserve(config.host, config.port)]
        for port, what in ((config.http_port, "KServe v2 HTTP/REST"), (config.metrics_port, "metrics")):
            if port is not None:
                held.append(reserve(config.host, port, what))
        chosen = iter(sock.getsockname()[1] for sock in held)
        self.ports = Ports(
            next(chosen),
            next(chosen) if config.http_port is not None else None,
            next(chosen) if config.metrics_port is not None else None,
        )
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._forward, sig)
        try:
            for index in range(config.frontends):
                if self._stopping.is_set():  # a signal came meanwhile: start no more
                    break
                await self._start(index)
            counts = await self._started()
        finally:
            for sock in held:
                sock.close()
        if counts is not None:
            announce(config, self.ports, *counts)
        await self._done.wait()
        return self.status

    async def _started(self) -> tuple[int, int] | None:
        """(models ready, models) once every front-end listens; None if the server stops first."""
        while not self._stopping.is_set():
            starting = [f.ready for f in self.frontends.values() if not f.ready.done()]
            if not starting:
                return self.frontends[0].ready.result()
            stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stopping.wait())
            await asyncio.wait([*starting, stopping], return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
        return None

    async def _start(self, index: int) -> None:
        parent, child = socket.socketpair()
        command = [sys.executable, "-m", "graphgen_server.frontend_process", str(child.fileno()), self.log_level]
        # A session of its own: a terminal's Ctrl-C (or hang-up) reaches this process only, which
        # forwards it once; a front-end whose supervisor is gone stops by itself (its channel closed).
        process = await asyncio.create_subprocess_exec(
            *command, stdin=asyncio.subprocess.PIPE, pass_fds=(child.fileno(),), start_new_session=True
        )
        child.close()
        ports = self.ports
        config = dataclasses.replace(
            self.config, port=ports.grpc, http_port=ports.http, metrics_port=ports.metrics, frontend_index=index
        )
        assert process.stdin is not None
        process.stdin.write(pickle.dumps(config))
        await process.stdin.drain()
        process.stdin.close()
        frontend = Frontend(index, process, time.monotonic(), asyncio.get_running_loop().create_future())
        self.frontends[index] = frontend
        if self._stopping.is_set():
            # A signal came while it was being started, and was passed on to the front-ends known then:
            # this one must stop too (else it serves on until _kill_late kills it).
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
        self._spawn(self.hub.serve(index, parent))
        self._spawn(self._watch(frontend))

    def _spawn(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_event(self, index: int, kind: str, payload: Any) -> None:
        frontend = self.frontends.get(index)
        if frontend is None:
            return
        if kind == "ready" and not frontend.ready.done():
            frontend.ready.set_result(payload)
        elif kind == "failed":
            frontend.failure = str(payload)

    async def _watch(self, frontend: Frontend) -> None:
        status = await frontend.process.wait()
        replaced = False
        try:
            replaced = await self._after_exit(frontend, status)
        except Exception:  # (a failed restart, say): the server stops rather than run short
            log.exception("front-end %d: handling its exit failed; stopping the server", frontend.index)
            self._stop_all(1)
        finally:
            if not replaced and self.frontends.get(frontend.index) is frontend:
                del self.frontends[frontend.index]
            if self._stopping.is_set() and all(f.process.returncode is not None for f in self.frontends.values()):
                self._done.set()

    async def _after_exit(self, frontend: Frontend, status: int) -> bool:
        """Decide what a front-end's exit means (the decision first, then what is said); True if replaced."""
        pid, index, said = frontend.process.pid, frontend.index, describe_status(status)
        if self._stopping.is_set():
            # (killed by the signal forwarded to it: it had not set its handlers yet, so it served nothing)
            if status not in (0, -signal.SIGTERM, -signal.SIGINT):
                self.status = self.status or 1
                log.warning("front-end %d (pid %d) stopped with %s", index, pid, said)
        elif not frontend.ready.done():  # it could not start: the server does not either
            self._stop_all(EXIT_USAGE if frontend.failure else 1)
            if frontend.failure:
                with contextlib.suppress(OSError):  # (stderr closed: the exit status says it)
                    print(f"graphgen-server: error: {frontend.failure}", file=sys.stderr, flush=True)
            else:
                log.error("front-end %d (pid %d) exited while starting (%s)", index, pid, said)
        elif self._may_restart():
            log.error("front-end %d (pid %d) exited unexpectedly (%s); starting another in its place", index, pid, said)
            await self._start(index)
            return True
        else:
            self._stop_all(1)
            log.error(
                "front-end %d (pid %d) exited (%s): %d unexpected exits within %.0f s, stopping the server",
                index,
                pid,
                said,
                len(self.exits),
                RESTART_WINDOW_S,
            )
        return False

    def _may_restart(self) -> bool:
        now = time.monotonic()
        self.exits = [t for t in self.exits if now - t < RESTART_WINDOW_S] + [now]
        return len(self.exits) <= RESTARTS

    def _forward(self, sig: int) -> None:
        """Pass SIGTERM/SIGINT on to every front-end (a second one too: it ends their pre-stop delay)."""
        if not self._stopping.is_set():
            # Said here, before any front-end closes its gRPC port: the others log warnings only, and
            # gRPC's error line for each closed port must not come unexplained (README).
            log.info(
                "%s: stopping %d front-end process(es); each closes its gRPC port and its connections before "
                "gRPC's stop",
                signal.Signals(sig).name,
                len(self.frontends),
            )
            self._spawn(self._kill_late())
        self._stopping.set()
        for frontend in self.frontends.values():
            with contextlib.suppress(ProcessLookupError):
                frontend.process.send_signal(sig)
        if all(f.process.returncode is not None for f in self.frontends.values()):
            self._done.set()

    def _stop_all(self, status: int) -> None:
        self.status = status
        self._forward(signal.SIGTERM)

    async def _kill_late(self) -> None:
        await asyncio.sleep(self.config.pre_stop_s + self.config.grace_s + KILL_AFTER_S)
        for frontend in self.frontends.values():
            if frontend.process.returncode is None:
                log.error("front-end %d (pid %d) has not stopped: killed", frontend.index, frontend.process.pid)
                frontend.process.kill()


def describe_status(status: int) -> str:
    if status < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-status).name}"
    return f"exit status {status}"


async def supervise(config: ServerConfig, log_level: str) -> int:
    """Run ``config.frontends`` front-end processes until SIGTERM/SIGINT; the exit status."""
    return await Supervisor(config, log_level).run()
