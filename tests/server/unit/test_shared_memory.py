"""Shared-memory regions: one process's table (core/shared_memory.Regions), and the same table in
every front-end process through the control channel (SharedMemory over a hub, as ``--frontends N``)."""

from __future__ import annotations

import asyncio
import gc
import mmap
import os
import socket

import numpy as np
import pytest

from graphgen_server.core.control import ControlHub, FrontendControl, LocalControl
from graphgen_server.core.errors import AlreadyExists, InvalidArgument, NotFound, Unsupported
from graphgen_server.core.shared_memory import Regions, RegionSpec, SharedMemory, check_key
from tests.support.shm import shm_object


def spec(name: str, block, offset: int = 0, byte_size: int | None = None) -> RegionSpec:
    return RegionSpec(name, "/" + block.name, offset, block.size - offset if byte_size is None else byte_size)


def test_an_input_is_a_view_of_the_clients_pages_not_a_copy():
    with shm_object(3 * mmap.PAGESIZE) as block:
        regions = Regions()
        offset = mmap.PAGESIZE + 100  # not page-aligned: mapped from the page before it
        regions.register(spec("r", block, offset, 64))
        client = np.ndarray((16,), np.float32, buffer=block.buf, offset=offset)
        client[:] = np.arange(16)
        view = regions.view("r", 8, 32, "inputs[0].parameters")
        server = np.frombuffer(view, np.float32)
        assert server.tolist() == list(range(2, 10))
        client[2] = 42.0  # the client writes after the server took its view: the server sees it
        assert server[0] == 42.0
        np.frombuffer(regions.view("r", 0, 4, "outputs[0].parameters"), np.float32)[:] = -1.0  # and the other way
        assert client[0] == -1.0
        del server, view
        regions.unregister_all()
        del client


@pytest.mark.parametrize(
    ("key", "words"),
    [
        ("", "not a POSIX shared-memory name"),
        ("/", "not a POSIX"),
        ("/a/b", "not a POSIX"),
        ("//x", "not a POSIX"),
        ("/..", "not a POSIX"),
        ("/" + "x" * 255, "not a POSIX"),
        ("/a\0b", "not a POSIX"),
        ("/graphgen_no_such_object", "no POSIX shared-memory object '/graphgen_no_such_object'"),
    ],
)
def test_a_key_that_names_no_shared_memory_object_is_refused_naming_it(key, words):
    with pytest.raises(InvalidArgument) as refused:
        Regions().register(RegionSpec("r", key, 0, 8))
    assert refused.value.field == "key" and words in str(refused.value)


def test_posix_names_taken():
    for key in ("/input0", "input0", "/a.b-c_d", "/" + "x" * 254):
        check_key(key)


def test_a_region_beyond_the_object_is_refused():
    with shm_object(64) as block, pytest.raises(InvalidArgument) as refused:
        Regions().register(spec("r", block, 32, 64))
    assert refused.value.field == "byte_size" and "beyond the 64 bytes" in str(refused.value)


def test_references_outside_the_region_name_the_parameter_at_fault():
    with shm_object(64) as block:
        regions = Regions()
        regions.register(spec("r", block))
        field = "inputs[1].parameters"
        cases = [
            (
                ("nope", 0, 4),
                "shared_memory_region",
                "no system shared-memory region 'nope' is registered (regions: 'r')",
            ),
            (("r", 64, 0), "shared_memory_offset", "64 is outside region 'r' (64 bytes"),
            (("r", 60, 8), "shared_memory_byte_size", "8 bytes from offset 60 go beyond region 'r' (64 bytes)"),
        ]
        for (name, offset, size), parameter, words in cases:
            with pytest.raises(InvalidArgument) as refused:
                regions.view(name, offset, size, field)
            assert refused.value.field == f"{field}.{parameter}" and words in refused.value.problem
        regions.unregister_all()


def test_names_status_and_unregistering_as_triton():
    with shm_object(64) as block:
        regions = Regions()
        regions.register(spec("r", block))
        regions.register(spec("r", block))  # the same registration again (a replay): nothing to do
        with pytest.raises(AlreadyExists, match="shared memory region 'r' already in manager"):
            regions.register(RegionSpec("r", "/" + block.name, 0, 8, token="another"))
        assert [s.name for s in regions.status()] == ["r"] and regions.status("r")[0].byte_size == 64
        with pytest.raises(NotFound, match="Unable to find system shared memory region: 'x'"):
            regions.status("x")
        regions.unregister("x")  # unknown: no error (Triton's UnregisterHelper)
        regions.unregister("r")
        assert regions.status() == []


def test_an_object_truncated_under_its_region_is_refused_not_a_crash():
    with shm_object(3 * mmap.PAGESIZE) as block:
        regions = Regions()
        regions.register(spec("r", block))
        os.ftruncate(block._fd, mmap.PAGESIZE)  # (the client's mistake: reading past the end would be SIGBUS)
        with pytest.raises(InvalidArgument, match="was truncated below the region"):
            regions.view("r", 0, 8, "inputs[0].parameters")
        regions.unregister_all()


def test_a_region_unregistered_while_a_request_reads_it_stays_mapped_until_released():
    with shm_object(64) as block:
        block.buf[:4] = b"\x01\x02\x03\x04"
        regions = Regions()
        regions.register(spec("r", block))
        held = np.frombuffer(regions.view("r", 0, 4, "inputs[0].parameters"), np.uint8)
        regions.unregister("r")
        assert held.tolist() == [1, 2, 3, 4]  # still readable: the mapping outlives the table entry
        with pytest.raises(InvalidArgument):
            regions.view("r", 0, 4, "inputs[0].parameters")
        del held
        gc.collect()


def run(body) -> None:
    asyncio.run(asyncio.wait_for(body(), 20))


def test_registering_needs_allow_client_shm_as_in_triton():
    async def body():
        shared = SharedMemory(LocalControl())
        with pytest.raises(Unsupported, match="--allow-client-shm"):
            await shared.register("r", "/x", 0, 8)
        with pytest.raises(Unsupported, match="--allow-client-shm"):
            await shared.unregister()
        assert shared.status() == []

    run(body)


def test_requests_checked_before_anything_is_mapped():
    async def body():
        shared = SharedMemory(LocalControl(), allowed=True)
        for args, field in [(("", "/x", 0, 8), "name"), (("r", "x/y", 0, 8), "key"), (("r", "/x", 0, 0), "byte_size")]:
            with pytest.raises(InvalidArgument) as refused:
                await shared.register(*args)
            assert refused.value.field == field

    run(body)


class Frontends:
    """A hub and ``n`` front-end processes' SharedMemory, each with its own table, in one event loop."""

    def __init__(self) -> None:
        self.hub = ControlHub(lambda index, kind, payload: None)
        self.ends: list[FrontendControl] = []
        self.shared: list[SharedMemory] = []
        self.serving: list[asyncio.Task[None]] = []

    async def add(self, index: int, regions: Regions | None = None) -> SharedMemory:
        hub_side, frontend_side = socket.socketpair()
        self.serving.append(asyncio.ensure_future(self.hub.serve(index, hub_side)))
        end = FrontendControl(frontend_side, 3)
        shared = SharedMemory(end, allowed=True, regions=regions)
        await end.connect()
        await end.join()
        self.ends.append(end)
        self.shared.append(shared)
        return shared

    def tables(self) -> list[list[tuple[str, str]]]:
        return [sorted((s.name, s.key) for s in shared.status()) for shared in self.shared]

    async def close(self) -> None:
        for shared, end in zip(self.shared, self.ends):
            shared.close()
            await end.close()
        await asyncio.wait_for(asyncio.gather(*self.serving, return_exceptions=True), 5)


def test_a_region_registered_through_one_frontend_is_usable_through_every_one_and_a_later_one():
    async def body():
        with shm_object(64) as a, shm_object(64) as b:
            frontends = Frontends()
            first, second = await frontends.add(0), await frontends.add(1)
            await second.register("a", "/" + a.name, 0, 64)
            await first.register("b", "/" + b.name, 0, 32)
            await first.unregister("a")
            await first.register("a", "/" + a.name, 0, 16)
            a.buf[:2] = b"hi"
            assert bytes(first.view("a", 0, 2, "inputs[0].parameters")) == b"hi"
            late = await frontends.add(2)  # (a front-end restarted after a crash replays what was done)
            assert frontends.tables() == [[("a", "/" + a.name), ("b", "/" + b.name)]] * 3
            assert late.status("a")[0].byte_size == 16 and bytes(late.view("a", 0, 2, "x")) == b"hi"
            await late.unregister()  # every region, in every front-end
            assert frontends.tables() == [[]] * 3
            assert (await frontends.add(3)).status() == []
            await frontends.close()

    run(body)


class FailingRegions(Regions):
    """A front-end whose mapping fails (out of address space, say)."""

    def register(self, spec: RegionSpec) -> None:
        raise InvalidArgument("key", "cannot be mapped here")


def test_a_registration_that_fails_in_one_frontend_is_undone_in_all():
    async def body():
        with shm_object(64) as block:
            frontends = Frontends()
            ok = await frontends.add(0)
            await frontends.add(1, FailingRegions())
            with pytest.raises(InvalidArgument, match="cannot be mapped here"):
                await ok.register("r", "/" + block.name, 0, 64)
            assert frontends.tables() == [[], []]
            assert (await frontends.add(2)).status() == []  # and the replay does not register it either
            await frontends.close()

    run(body)


def test_two_registrations_of_one_name_race_one_wins_everywhere():
    async def body():
        with shm_object(64) as a, shm_object(64) as b:
            frontends = Frontends()
            first, second = await frontends.add(0), await frontends.add(1)
            outcomes = await asyncio.gather(
                first.register("r", "/" + a.name, 0, 64),
                second.register("r", "/" + b.name, 0, 64),
                return_exceptions=True,
            )
            assert sum(isinstance(o, AlreadyExists) for o in outcomes) == 1 and outcomes.count(None) == 1
            winner = "/" + (a if outcomes[0] is None else b).name
            late = await frontends.add(2)
            assert frontends.tables() == [[("r", winner)]] * 3 and late.status("r")[0].key == winner
            await frontends.close()

    run(body)
