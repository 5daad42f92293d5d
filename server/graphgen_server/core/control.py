"""The server-wide control channel: an operation every front-end process runs, and their answers.

With ``--frontends N`` (N > 1) each front-end process is a full replica of the core: its own
sessions, batchers and statistics. What must change in all of them, or be read from all of them,
goes through this channel, relayed by the supervising process (:class:`ControlHub`):

- ``await control.broadcast(op, *args, replay_key=key)``: a change every front-end applies (a
  model loaded or unloaded, a shared-memory region registered). Broadcasts run one at a time
  server-wide. A front-end that joins later (one started in place of a crashed one) is given the
  broadcasts made so far before it serves: the latest one per ``replay_key`` (a later broadcast
  with the same key replaces the earlier one; ``None``: not replayed).
- ``await control.gather(op, *args)``: a reading from every front-end (statistics, queue depths).

Both return the answers in front-end order, once every front-end has answered, and raise the first
failure (by front-end order) if any handler raised. A front-end that exits meanwhile is left out of
the answers. Each operation has one handler per process, registered at start-up, before serving::

    control.handle("statistics", statistics_of)   # async def statistics_of(name, version) -> list[...]
    parts = await control.gather("statistics", name, version)     # one answer per front-end
    await control.broadcast("model.load", name, replay_key=("model", name))

Arguments and answers cross processes pickled (plain values, dataclasses, the core's errors), so
they stay small: no tensors. A handler must not broadcast itself (broadcasts are serialized: it
would wait for its own). With one front-end, :class:`LocalControl` runs the handler in-process, so
callers are the same code either way.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import pickle
import socket
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger("graphgen_server")

Handler = Callable[..., Awaitable[Any]]
Outcome = tuple[bool, Any]  # (True, answer) or (False, the exception the handler raised)
HEADER = 4  # bytes of a message's length, before its pickle


class Control(Protocol):
    """What the core and the front-ends use (see the module's docstring)."""

    @property
    def frontends(self) -> int: ...

    def handle(self, op: str, handler: Handler) -> None: ...

    async def broadcast(self, op: str, *args: Any, replay_key: Hashable | None = None) -> list[Any]: ...

    async def gather(self, op: str, *args: Any) -> list[Any]: ...


class _Handlers:
    def __init__(self) -> None:
        self._handlers: dict[str, Handler] = {}

    def handle(self, op: str, handler: Handler) -> None:
        if op in self._handlers:
            raise ValueError(f"control operation {op!r} has a handler already")
        self._handlers[op] = handler

    async def _outcome(self, op: str, args: tuple[Any, ...]) -> Outcome:
        handler = self._handlers.get(op)
        if handler is None:
            return False, LookupError(f"no handler for control operation {op!r}")
        try:
            return True, await handler(*args)
        except Exception as error:
            return False, error


def answers(outcomes: list[Outcome]) -> list[Any]:
    """The answers, or the first failure raised."""
    for ok, value in outcomes:
        if not ok:
            raise value
    return [value for _, value in outcomes]


class LocalControl(_Handlers):
    """One front-end (``--frontends 1``): every operation runs here, once."""

    frontends = 1

    def __init__(self) -> None:
        super().__init__()
        self._serial = asyncio.Lock()

    async def broadcast(self, op: str, *args: Any, replay_key: Hashable | None = None) -> list[Any]:
        async with self._serial:
            return answers([await self._outcome(op, args)])

    async def gather(self, op: str, *args: Any) -> list[Any]:
        return answers([await self._outcome(op, args)])


# -- the wire: length-prefixed pickles over a socketpair private to the server's processes -----
async def send(writer: asyncio.StreamWriter, message: tuple[Any, ...]) -> None:
    """Write one message (pickled first: one that cannot be pickled raises and writes nothing)."""
    data = pickle.dumps(message)
    writer.write(len(data).to_bytes(HEADER, "big") + data)
    await writer.drain()


async def receive(reader: asyncio.StreamReader) -> tuple[Any, ...]:
    size = int.from_bytes(await reader.readexactly(HEADER), "big")
    return pickle.loads(await reader.readexactly(size))


def _crossing(outcome: Outcome) -> Outcome:
    """The outcome as it can cross: a failure that would not unpickle on the other side becomes a RuntimeError."""
    ok, value = outcome
    if not ok:
        try:
            pickle.loads(pickle.dumps(value))
        except Exception:
            return False, RuntimeError(f"{type(value).__name__}: {value}")
    return outcome


class FrontendControl(_Handlers):
    """A front-end process's end of the channel: runs what the hub sends, and calls through it.

    ``on_lost`` is called once if the supervising process goes away (the front-end then stops).
    """

    def __init__(self, sock: socket.socket, frontends: int, on_lost: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.sock, self.on_lost = sock, on_lost
        self._frontends = frontends
        self._calls: dict[int, asyncio.Future[list[Outcome]]] = {}
        self._ids = itertools.count()
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def frontends(self) -> int:
        return self._frontends

    async def connect(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(sock=self.sock)
        self._reader_task = asyncio.ensure_future(self._read(reader))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                message = await receive(reader)
                if message[0] == "run":  # (run, id, op, args): answer it without blocking the reader
                    task = asyncio.ensure_future(self._answer(message[1], message[2], message[3]))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)
                elif message[0] == "answer":  # (answer, call id, outcomes)
                    future = self._calls.pop(message[1], None)
                    if future is not None and not future.done():
                        future.set_result(message[2])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        for future in self._calls.values():
            if not future.done():
                future.set_exception(ConnectionError("the server's supervising process is gone"))
        self._calls.clear()
        self.on_lost()

    async def _answer(self, run_id: int, op: str, args: tuple[Any, ...]) -> None:
        ok, value = _crossing(await self._outcome(op, args))
        assert self._writer is not None
        try:
            await send(self._writer, ("done", run_id, ok, value))
        except (pickle.PicklingError, TypeError, AttributeError) as error:  # an answer that cannot cross
            await send(self._writer, ("done", run_id, False, RuntimeError(f"{op}: unpicklable answer ({error})")))

    async def _call(self, mode: str, op: str, args: tuple[Any, ...], replay_key: Hashable | None) -> list[Outcome]:
        if self._writer is None:
            raise ConnectionError("the control channel is not connected")
        call_id = next(self._ids)
        future: asyncio.Future[list[Outcome]] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        await send(self._writer, ("call", call_id, mode, op, args, replay_key))
        return await future

    async def broadcast(self, op: str, *args: Any, replay_key: Hashable | None = None) -> list[Any]:
        return answers(await self._call("broadcast", op, args, replay_key))

    async def gather(self, op: str, *args: Any) -> list[Any]:
        return answers(await self._call("gather", op, args, None))

    async def join(self) -> None:
        """Take part in broadcasts and gathers from now on (after the replay of earlier broadcasts)."""
        await self._call("join", "", (), None)

    async def notify(self, kind: str, payload: Any = None) -> None:
        """Tell the supervising process something about this front-end (ready, failed to start)."""
        assert self._writer is not None
        await send(self._writer, ("event", kind, payload))

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._writer is not None:
            self._writer.close()


@dataclass
class _Member:
    index: int
    writer: asyncio.StreamWriter
    runs: dict[int, asyncio.Future[Outcome | None]] = field(default_factory=dict)
    joined: bool = False


class ControlHub:
    """The supervising process's end: relays each call to every joined front-end, in front-end order.

    ``on_event(index, kind, payload)`` receives what front-ends notify (ready, failed).
    """

    def __init__(self, on_event: Callable[[int, str, Any], None]) -> None:
        self.on_event = on_event
        self.members: dict[int, _Member] = {}
        self._serial = asyncio.Lock()  # one broadcast (or join with its replay) at a time
        self._replay: dict[Hashable, tuple[str, tuple[Any, ...]]] = {}  # latest broadcast per key, in order
        self._ids = itertools.count()

    async def serve(self, index: int, sock: socket.socket) -> None:
        """Serve front-end ``index`` over ``sock`` until it goes away."""
        reader, writer = await asyncio.open_unix_connection(sock=sock)
        member = self.members[index] = _Member(index, writer)
        tasks: set[asyncio.Task[None]] = set()
        try:
            while True:
                message = await receive(reader)
                if message[0] == "call":
                    task = asyncio.ensure_future(self._call(member, *message[1:]))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif message[0] == "done":  # (done, run id, ok, value)
                    future = member.runs.pop(message[1], None)
                    if future is not None and not future.done():
                        future.set_result((message[2], message[3]))
                elif message[0] == "event":
                    self.on_event(index, message[1], message[2])
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if self.members.get(index) is member:
                del self.members[index]
            for future in member.runs.values():
                if not future.done():
                    future.set_result(None)  # left out of the answers
            writer.close()

    async def _call(
        self, member: _Member, call_id: int, mode: str, op: str, args: tuple[Any, ...], replay_key: Hashable | None
    ) -> None:
        outcomes: list[Outcome] = []
        if mode == "join":
            async with self._serial:
                for replayed_op, replayed_args in list(self._replay.values()):
                    outcome = await self._run(member, replayed_op, replayed_args)
                    if outcome is not None and not outcome[0]:
                        log.warning("front-end %d: replaying %s failed: %s", member.index, replayed_op, outcome[1])
                member.joined = True
        elif mode == "broadcast":
            async with self._serial:
                outcomes = await self._run_all(op, args)
                if replay_key is not None:
                    self._replay.pop(replay_key, None)
                    self._replay[replay_key] = (op, args)
        else:
            outcomes = await self._run_all(op, args)
        if self.members.get(member.index) is member:
            await send(member.writer, ("answer", call_id, outcomes))

    async def _run_all(self, op: str, args: tuple[Any, ...]) -> list[Outcome]:
        joined = [m for _, m in sorted(self.members.items()) if m.joined]
        outcomes = await asyncio.gather(*(self._run(m, op, args) for m in joined))
        return [outcome for outcome in outcomes if outcome is not None]

    async def _run(self, member: _Member, op: str, args: tuple[Any, ...]) -> Outcome | None:
        run_id = next(self._ids)
        future: asyncio.Future[Outcome | None] = asyncio.get_running_loop().create_future()
        member.runs[run_id] = future
        try:
            await send(member.writer, ("run", run_id, op, args))
        except ConnectionError:
            member.runs.pop(run_id, None)
            return None
        return await future
