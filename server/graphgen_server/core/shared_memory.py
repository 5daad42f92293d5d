"""Triton's system shared-memory extension: regions a client registers, and tensors read and written in them.

A client creates a POSIX shared-memory object (``shm_open``: tritonclient's
``utils.shared_memory``, perf_analyzer ``--shared-memory system``), registers ``byte_size`` bytes
of it from ``offset`` on under a region name, and then names the region, an offset into it and a
byte count in place of a tensor's bytes (``shared_memory_region``, ``shared_memory_offset``,
``shared_memory_byte_size``), for inputs and for outputs. Each front-end process maps a region
once, read-write and shared (Triton's ``SharedMemoryManager``: ``shm_open`` + ``mmap``);
:meth:`Regions.view` hands out a memoryview of the mapping, so an input becomes a numpy array
over the client's own pages (no copy) and an output is written straight into them.

:class:`Regions` is one process's table. :class:`SharedMemory` is what the front-ends use: a
registration or unregistration is broadcast over the server-wide control channel
(:mod:`graphgen_server.core.control`) so that every front-end process maps (or unmaps) the region
before the call returns, and one started later replays it; status and views are read locally (all
tables are the same). A region unregistered while a request still reads or writes it is unmapped
once that request lets go of its view (Triton waits for in-flight requests the same way).

Refusals follow Triton's (``shared_memory_manager.cc``): a name registered twice
(AlreadyExists), an unknown region in a status (NotFound); the client's own mistakes are
InvalidArgument naming the field: a key that is not a POSIX shared-memory name or names no object,
a region beyond the object's size, a reference beyond the region's.
"""

from __future__ import annotations

import _posixshmem
import contextlib
import logging
import mmap
import os
import re
import stat
import threading
import uuid
from collections.abc import Hashable
from dataclasses import dataclass

from graphgen_server.core.control import Control
from graphgen_server.core.errors import AlreadyExists, InvalidArgument, NotFound, Unsupported

log = logging.getLogger("graphgen_server")

# A POSIX shared-memory object's name: "/name" (the slash optional, as glibc's shm_open takes
# it), no other slash, at most NAME_MAX - 1 characters after it (glibc's limit), not "." or "..".
KEY = re.compile(r"/?(?P<body>[^/\x00]{1,254})")
# Triton's message when client shared memory is off (its --allow-client-shm, default false).
DISABLED = (
    "client shared memory is disabled: start graphgen-server with --allow-client-shm to register system "
    "shared-memory regions (any client that reaches the server may then have it map shared-memory objects "
    "its user can open)"
)
# The control channel's operations (handled in every front-end process).
REGISTER, SYNC, UNREGISTER_ALL = "shared_memory.register", "shared_memory.sync", "shared_memory.unregister_all"


@dataclass(frozen=True)
class RegionSpec:
    """A registration as the client made it; ``token`` tells one registration of a name from another."""

    name: str
    key: str
    offset: int
    byte_size: int
    token: str = ""


class _Region:
    """One mapped region. The mapping starts at the page boundary at or before ``offset`` (mmap needs one)."""

    def __init__(self, spec: RegionSpec, mapping: mmap.mmap, start: int) -> None:
        self.spec, self.mapping, self.start = spec, mapping, start

    def view(self, offset: int, byte_size: int) -> memoryview:
        begin = self.start + offset
        return memoryview(self.mapping)[begin : begin + byte_size]

    def shrank(self) -> bool:
        """Whether the object was truncated below the region since it was mapped: touching the pages
        beyond its end would kill the process (SIGBUS), so the region is refused instead."""
        return self.mapping.size() < self.spec.offset + self.spec.byte_size  # (mmap.size(): fstat of the object)

    def close(self) -> None:
        # A request still holding a view keeps the mapping: it is unmapped when the last view is released.
        with contextlib.suppress(BufferError):
            self.mapping.close()


def check_key(key: str, field: str = "key") -> None:
    """Refuse what is not a POSIX shared-memory object name (InvalidArgument naming ``field``)."""
    match = KEY.fullmatch(key)
    if match is None or match["body"] in {".", ".."}:
        raise InvalidArgument(
            field,
            f"{key!r} is not a POSIX shared-memory name ('/name': one leading slash, no other, 1 to 254 characters)",
        )


def _open_mapping(spec: RegionSpec) -> _Region:
    """Map the region ``spec`` names, read-write and shared; InvalidArgument for the client's mistakes."""
    check_key(spec.key)
    try:
        fd = _posixshmem.shm_open(spec.key, os.O_RDWR, 0o600)
    except FileNotFoundError:
        raise InvalidArgument("key", f"no POSIX shared-memory object {spec.key!r} (create it first)") from None
    except PermissionError:
        raise InvalidArgument(
            "key", f"shared-memory object {spec.key!r} cannot be opened for reading and writing by the server"
        ) from None
    try:
        status = os.fstat(fd)
        if not stat.S_ISREG(status.st_mode):
            raise InvalidArgument("key", f"{spec.key!r} is not a shared-memory object")
        if spec.offset + spec.byte_size > status.st_size:
            raise InvalidArgument(
                "byte_size",
                f"region '{spec.name}' ({spec.byte_size} bytes from offset {spec.offset}) lies beyond the "
                f"{status.st_size} bytes of {spec.key!r}",
            )
        start = spec.offset % mmap.ALLOCATIONGRANULARITY
        mapping = mmap.mmap(
            fd, start + spec.byte_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=spec.offset - start
        )
    finally:
        os.close(fd)
    return _Region(spec, mapping, start)


class Regions:
    """One process's table of mapped regions (thread-safe: HTTP bodies may be parsed on a worker)."""

    def __init__(self) -> None:
        self._regions: dict[str, _Region] = {}
        self._lock = threading.Lock()

    def register(self, spec: RegionSpec) -> None:
        """Map ``spec`` under its name; the same registration again is a no-op, another of the name AlreadyExists."""
        with self._lock:
            current = self._regions.get(spec.name)
        if current is not None:
            if current.spec == spec:
                return
            raise AlreadyExists(f"shared memory region '{spec.name}' already in manager")
        region = _open_mapping(spec)  # (outside the lock: a syscall or three)
        with self._lock:
            if spec.name in self._regions:
                region.close()
                raise AlreadyExists(f"shared memory region '{spec.name}' already in manager")
            self._regions[spec.name] = region

    def unregister(self, name: str, token: str | None = None) -> None:
        """Unmap region ``name`` (unknown: nothing to do, as Triton); with ``token``, only that registration."""
        with self._lock:
            region = self._regions.get(name)
            if region is None or (token is not None and region.spec.token != token):
                return
            del self._regions[name]
        region.close()

    def unregister_all(self) -> None:
        with self._lock:
            regions, self._regions = list(self._regions.values()), {}
        for region in regions:
            region.close()

    def spec(self, name: str) -> RegionSpec | None:
        with self._lock:
            region = self._regions.get(name)
        return None if region is None else region.spec

    def status(self, name: str = "") -> list[RegionSpec]:
        """Every region (``name`` empty) or the named one; NotFound for an unknown name, in Triton's words."""
        with self._lock:
            if not name:
                return [r.spec for r in self._regions.values()]
            region = self._regions.get(name)
        if region is None:
            raise NotFound(f"Unable to find system shared memory region: '{name}'")
        return [region.spec]

    def view(self, name: str, offset: int, byte_size: int, field: str) -> memoryview:
        """``byte_size`` bytes of region ``name`` from ``offset`` on, writable, without a copy.

        ``field`` is where the reference was given (``inputs[0].parameters``); each refusal names
        the parameter at fault.
        """
        with self._lock:
            region = self._regions.get(name)
            if region is not None:
                size = region.spec.byte_size
                if not 0 <= offset < size:
                    raise InvalidArgument(
                        f"{field}.shared_memory_offset",
                        f"{offset} is outside region '{name}' ({size} bytes; Invalid offset for shared memory region)",
                    )
                if byte_size < 0 or offset + byte_size > size:
                    raise InvalidArgument(
                        f"{field}.shared_memory_byte_size",
                        f"{byte_size} bytes from offset {offset} go beyond region '{name}' ({size} bytes)",
                    )
                if region.shrank():
                    raise InvalidArgument(
                        f"{field}.shared_memory_region",
                        f"the shared-memory object {region.spec.key!r} of region '{name}' was truncated below the "
                        "region since it was registered: unregister and register it again",
                    )
                return region.view(offset, byte_size)  # (taken under the lock: an unregister waits for it)
            known = ", ".join(repr(n) for n in sorted(self._regions)) or "none"
        raise InvalidArgument(
            f"{field}.shared_memory_region",
            f"no system shared-memory region {name!r} is registered (regions: {known})",
        )


class SharedMemory:
    """The server's shared-memory regions, the same in every front-end process.

    ``allowed``: registering and unregistering are taken (``--allow-client-shm``); status and
    the use of regions are always answered (nothing is registered otherwise).
    """

    def __init__(self, control: Control, allowed: bool = False, regions: Regions | None = None) -> None:
        self.control, self.allowed = control, allowed
        self.regions = regions or Regions()
        control.handle(REGISTER, self._register_here)
        control.handle(SYNC, self._sync_here)
        control.handle(UNREGISTER_ALL, self._unregister_all_here)

    async def register(self, name: str, key: str, offset: int, byte_size: int) -> None:
        self.check_allowed()
        if not name:
            raise InvalidArgument("name", "a region needs a name")
        check_key(key)
        if byte_size < 1:
            raise InvalidArgument("byte_size", f"a region holds at least one byte, got {byte_size}")
        if self.regions.spec(name) is not None:
            raise AlreadyExists(f"shared memory region '{name}' already in manager")
        spec = RegionSpec(name, key, offset, byte_size, uuid.uuid4().hex)
        try:
            await self.control.broadcast(REGISTER, spec, replay_key=_replay_key(name))
        except Exception:
            # Some front-ends may have mapped it and others not (or another registration of the name
            # won a race): every process, and the replay for later ones, is set back to what this
            # process's table holds now (the winner's registration, or none).
            await self.control.broadcast(SYNC, name, self._other_than(spec), replay_key=_replay_key(name))
            raise
        log.info(
            "system shared-memory region %r registered: %d bytes of %s from offset %d", name, byte_size, key, offset
        )

    async def unregister(self, name: str = "") -> None:
        """Unmap region ``name`` in every front-end (empty: every region); an unknown name is no error."""
        self.check_allowed()
        if name:
            await self.control.broadcast(SYNC, name, None, replay_key=_replay_key(name))
        else:
            await self.control.broadcast(UNREGISTER_ALL, replay_key=("shared memory",))

    def status(self, name: str = "") -> list[RegionSpec]:
        return self.regions.status(name)

    def view(self, name: str, offset: int, byte_size: int, field: str) -> memoryview:
        return self.regions.view(name, offset, byte_size, field)

    def close(self) -> None:
        self.regions.unregister_all()

    def check_allowed(self) -> None:
        """Unsupported, with how to turn it on, unless clients may register regions."""
        if not self.allowed:
            raise Unsupported(DISABLED)

    def _other_than(self, spec: RegionSpec) -> RegionSpec | None:
        current = self.regions.spec(spec.name)
        return current if current is not None and current.token != spec.token else None

    # -- what each front-end process runs (control channel handlers) ---------------------
    async def _register_here(self, spec: RegionSpec) -> None:
        self.regions.register(spec)

    async def _sync_here(self, name: str, spec: RegionSpec | None) -> None:
        """Make this process's region ``name`` be ``spec`` (None: not registered)."""
        current = self.regions.spec(name)
        if current == spec:
            return
        if current is not None:
            self.regions.unregister(name)
        if spec is not None:
            self.regions.register(spec)

    async def _unregister_all_here(self) -> None:
        self.regions.unregister_all()


def _replay_key(name: str) -> Hashable:
    return ("shared memory", name)
