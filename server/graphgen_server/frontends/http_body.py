"""A REST request's body, read under limits before anything else is done with it.

aiohttp would inflate a ``Content-Encoding: gzip`` body in its parser, on the event loop, as the
bytes arrive and whether or not the caller is authenticated: a 2 MB body inflating to 2 GiB held
the whole process (gRPC health included) for seconds. The listener turns that off
(``auto_decompress=False``, :mod:`graphgen_server.frontends.http_listener`) and the routes read
bodies here, after the token and the admission checks:

- a ``Content-Length`` over the limit is answered 413 before a byte of the body is read;
- the bytes on the wire count against the limit as they arrive (chunked bodies too);
- the whole body must arrive within ``body_timeout_s`` (408 and the connection closed);
- gzip and deflate are inflated on a thread, one body at a time, in pieces, and never beyond the
  limit: 413 the moment the output passes it, the output counted before it is kept (a bomb costs
  tens of megabytes, not a limit's worth, however many front-end processes inflate at once);
- other encodings are refused with 415.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import threading
import zlib
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web

__all__ = ["BodyReader", "BodyRefused"]

# Output inflated per zlib call. zlib gives the GIL back around each block it writes and takes it
# again after: larger pieces mean fewer handovers with the event loop (on this 2-core machine at
# load 10-16, four bombs delayed health answers up to ~1 s with 1 MiB pieces, 65-350 ms with 8 MiB;
# noisy figures). A bomb holds about two pieces while it is counted.
PIECE = 8 << 20
# zlib's window bits: gzip's header and trailer; deflate is zlib's format (RFC 1950), or raw
# deflate from clients that send that (as aiohttp and browsers accept it).
GZIP, ZLIB, RAW_DEFLATE = 16 + zlib.MAX_WBITS, zlib.MAX_WBITS, -zlib.MAX_WBITS
ENCODINGS = ("gzip", "deflate", "identity")
INFLATE_NICE = 10  # added to the inflating thread's nice value


class BodyRefused(Exception):
    """A body that is not read (or not kept), with its HTTP status and the reason.

    The answer ends its connection ("Connection: close"): the rest of an unread body would be read
    as the next request. aiohttp then reads and drops what the client still sends for a few seconds
    (its lingering close) so that the client sees the answer instead of a reset; ``hang_up``: not
    even that, the connection closes once the answer is written (a client too slow to wait for).
    """

    def __init__(self, status: int, message: str, *, hang_up: bool = False) -> None:
        super().__init__(message)
        self.status, self.message, self.hang_up = status, message, hang_up


class BodyReader:
    """Reads bodies of at most ``limit`` bytes (on the wire and inflated) within ``timeout_s``."""

    def __init__(self, limit: int, timeout_s: float) -> None:
        self.limit, self.timeout_s = limit, timeout_s
        # One thread inflates, one body after another, at a lower CPU priority than the event loop:
        # bombs sent at once take one core at most, and health and calls are served first (the
        # event loop never inflates).
        self._inflating = asyncio.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="http-inflate", initializer=_lower_priority)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def refuse_early(self, request: web.Request) -> None:
        """What can be refused from the header alone: a declared length over the limit, an encoding."""
        encoding = _encoding(request)
        if encoding not in ENCODINGS:
            raise BodyRefused(415, f"Content-Encoding {encoding!r} is not supported (gzip, deflate or none)")
        length = request.content_length
        if length is not None and length > self.limit:
            raise BodyRefused(413, self._too_large(f"Content-Length {length}"))

    async def read(self, request: web.Request) -> bytes | bytearray:
        """The body, inflated: BodyRefused (413, 408, 415, 400) instead when it cannot be had."""
        self.refuse_early(request)
        raw = await self._receive(request)
        encoding = _encoding(request)
        if encoding == "identity" or not raw:
            return raw
        async with self._inflating:
            return await asyncio.get_running_loop().run_in_executor(self._pool, self._inflate, raw, encoding)

    async def _receive(self, request: web.Request) -> bytes:
        chunks, size = [], 0
        try:
            async with asyncio.timeout(self.timeout_s):
                while chunk := await request.content.readany():
                    chunks.append(chunk)
                    size += len(chunk)
                    if size > self.limit:
                        raise BodyRefused(413, self._too_large(f"the body (over {self.limit} bytes sent)"))
        except TimeoutError:
            raise BodyRefused(
                408,
                f"the body did not arrive within {self.timeout_s:g}s ({size} bytes received; --http-body-timeout)",
                hang_up=True,
            ) from None
        return b"".join(chunks)

    def _inflate(self, raw: bytes, encoding: str) -> bytearray:
        """``raw`` inflated, or BodyRefused: 413 as soon as the output passes the limit.

        Two passes: the first only counts (each piece is dropped), so a bomb is refused having held
        a few pieces (:data:`PIECE`) of output, whatever the limit and however many front-end processes
        inflate at once; the second keeps the output of a body known to fit. An honest body is
        inflated twice (zlib writes hundreds of MB/s: milliseconds for a tensor)."""
        wbits = GZIP if encoding == "gzip" else ZLIB if raw[0] & 0x0F == 8 else RAW_DEFLATE
        self._pass(raw, encoding, wbits, keep=None)
        body = bytearray()
        self._pass(raw, encoding, wbits, keep=body)
        return body  # (not copied into bytes: that would hold the body twice)

    def _pass(self, raw: bytes, encoding: str, wbits: int, keep: bytearray | None) -> None:
        inflater = zlib.decompressobj(wbits)
        size, pending = 0, raw
        try:
            while pending and not inflater.eof:
                piece = inflater.decompress(pending, min(PIECE, self.limit + 1 - size))
                size += len(piece)
                if size > self.limit:
                    raise BodyRefused(413, self._too_large(f"the {encoding} body inflated"))
                if keep is not None:
                    keep += piece
                pending = inflater.unconsumed_tail
        except zlib.error as error:
            raise BodyRefused(400, f"the body is not valid {encoding} data ({error})") from None
        if not inflater.eof:
            raise BodyRefused(400, f"the {encoding} body ends before its compressed stream does")
        if inflater.unused_data:
            raise BodyRefused(400, f"{len(inflater.unused_data)} bytes follow the end of the {encoding} stream")

    def _too_large(self, what: str) -> str:
        mib = f"{self.limit >> 20} MiB, " if self.limit % (1 << 20) == 0 else ""
        return f"{what} is over the server's limit of {self.limit} bytes ({mib}--max-message-mib)"


def _lower_priority() -> None:
    """This thread at nice +INFLATE_NICE (Linux sets a thread's nice value by its thread id): a
    core shared with the event loop goes to the event loop ~90% of the time (CFS weights)."""
    if sys.platform == "linux":
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), INFLATE_NICE)


def _encoding(request: web.Request) -> str:
    return request.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
