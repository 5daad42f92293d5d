"""The control channel: a hub and front-end ends over socketpairs, in one event loop."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from graphgen_server.core.control import ControlHub, FrontendControl, LocalControl
from graphgen_server.core.errors import InvalidArgument, NotFound


class Cluster:
    """A hub and ``n`` front-end controls, each front-end with a little state of its own."""

    def __init__(self, n: int) -> None:
        self.events: list[tuple[int, str, Any]] = []
        self.hub = ControlHub(lambda index, kind, payload: self.events.append((index, kind, payload)))
        self.ends: list[FrontendControl] = []
        self.state: list[dict[str, Any]] = []
        self.lost: list[int] = []
        self.serving: list[asyncio.Task[None]] = []

    async def add(self, index: int, join: bool = True) -> FrontendControl:
        hub_side, frontend_side = socket.socketpair()
        self.serving.append(asyncio.ensure_future(self.hub.serve(index, hub_side)))
        end = FrontendControl(frontend_side, 3, on_lost=lambda: self.lost.append(index))
        state: dict[str, Any] = {"models": set()}

        async def load(name: str) -> str:
            state["models"].add(name)
            return f"loaded {name} in {index}"

        async def unload(name: str) -> None:
            state["models"].discard(name)

        async def count(model: str) -> int:
            if model == "missing":
                raise NotFound(f"model {model!r}")
            if model == "bad":
                raise InvalidArgument("model", "a bad name")
            return index * 10

        end.handle("load", load)
        end.handle("unload", unload)
        end.handle("count", count)
        await end.connect()
        if join:
            await end.join()
        self.ends.append(end)
        self.state.append(state)
        return end

    async def close(self) -> None:
        for end in self.ends:
            await end.close()
        await asyncio.wait_for(asyncio.gather(*self.serving, return_exceptions=True), 5)


def run(body) -> None:
    asyncio.run(asyncio.wait_for(body(), 20))


def test_gather_answers_in_frontend_order_from_every_frontend():
    async def body():
        cluster = Cluster(3)
        for index in (2, 0, 1):
            await cluster.add(index)
        assert await cluster.ends[1].gather("count", "m") == [0, 10, 20]  # front-end 0's end asked
        await cluster.close()

    run(body)


def test_the_first_failure_is_raised_with_its_type_and_field():
    async def body():
        cluster = Cluster(2)
        await cluster.add(0)
        await cluster.add(1)
        with pytest.raises(NotFound, match="missing"):
            await cluster.ends[0].gather("count", "missing")
        with pytest.raises(InvalidArgument) as raised:
            await cluster.ends[1].gather("count", "bad")
        assert raised.value.field == "model" and str(raised.value) == "model: a bad name"
        with pytest.raises(LookupError, match="no handler for control operation 'nothing'"):
            await cluster.ends[0].broadcast("nothing")
        await cluster.close()

    run(body)


def test_broadcast_changes_every_frontend_and_a_later_one_gets_the_latest_per_key():
    async def body():
        cluster = Cluster(3)
        await cluster.add(0)
        await cluster.add(1)
        answers = await cluster.ends[0].broadcast("load", "a", replay_key=("model", "a"))
        assert answers == ["loaded a in 0", "loaded a in 1"]
        await cluster.ends[1].broadcast("load", "b", replay_key=("model", "b"))
        await cluster.ends[1].broadcast("unload", "a", replay_key=("model", "a"))
        await cluster.ends[0].broadcast("load", "c")  # no key: not replayed
        assert [s["models"] for s in cluster.state] == [{"b", "c"}, {"b", "c"}]
        await cluster.add(2)  # a replacement joins: replayed b's load, then a's unload
        assert cluster.state[2]["models"] == {"b"}
        assert await cluster.ends[2].gather("count", "m") == [0, 10, 20]
        await cluster.close()

    run(body)


def test_a_frontend_that_has_not_joined_is_not_asked():
    async def body():
        cluster = Cluster(2)
        await cluster.add(0)
        await cluster.add(1, join=False)
        assert await cluster.ends[0].gather("count", "m") == [0]
        await cluster.close()

    run(body)


def test_a_frontend_that_goes_away_is_left_out_and_the_hub_goes_on():
    async def body():
        cluster = Cluster(2)
        await cluster.add(0)
        gone = await cluster.add(1)
        await gone.close()
        await asyncio.sleep(0.1)
        assert await cluster.ends[0].gather("count", "m") == [0]
        await cluster.close()

    run(body)


def test_a_frontend_learns_when_the_hub_is_gone():
    async def body():
        cluster = Cluster(1)
        end = await cluster.add(0)
        for task in cluster.serving:
            task.cancel()
        await asyncio.gather(*cluster.serving, return_exceptions=True)
        await asyncio.sleep(0.1)
        assert cluster.lost == [0]
        with pytest.raises(ConnectionError):
            await end.gather("count", "m")
        await end.close()

    run(body)


def test_events_reach_the_hub():
    async def body():
        cluster = Cluster(1)
        end = await cluster.add(0)
        await end.notify("ready", {"models": 2})
        await asyncio.sleep(0.1)
        assert cluster.events == [(0, "ready", {"models": 2})]
        await cluster.close()

    run(body)


def test_local_control_runs_the_handler_once_and_raises_its_failure():
    async def body():
        control = LocalControl()
        seen = []

        async def op(value: int) -> int:
            if value < 0:
                raise InvalidArgument("value", "negative")
            seen.append(value)
            return value * 2

        control.handle("op", op)
        with pytest.raises(ValueError):
            control.handle("op", op)
        assert await control.gather("op", 2) == [4]
        assert await control.broadcast("op", 3, replay_key="k") == [6]
        with pytest.raises(InvalidArgument, match="value: negative"):
            await control.gather("op", -1)
        assert seen == [2, 3] and control.frontends == 1

    run(body)
