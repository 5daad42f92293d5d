"""Statistics summed over every front-end process: what ModelStatistics and ``/metrics`` report.

Each front-end process counts the requests it served (:class:`~graphgen_server.core.statistics.ModelStats`
per version); :func:`statistics` gathers every front-end's counts over the control channel
(:mod:`graphgen_server.core.control`) and sums them, so each request is counted once whichever
process served it. With one front-end the channel is local and the sum is that process's own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from graphgen_server.core.control import Control
from graphgen_server.core.errors import NotFound
from graphgen_server.core.statistics import ModelStats, VersionStats, merged

STATISTICS = "statistics"  # the control channel's operation: (model name, version) -> list[VersionStats]


class CountedVersion(Protocol):
    """What is read of a model version (the runtime's ModelVersion)."""

    name: str
    version: str
    pending_rows: int
    stats: ModelStats

    @property
    def ready(self) -> bool: ...

    @property
    def provider(self) -> str: ...


class Versions(Protocol):
    """The versions a process serves (the runtime)."""

    def all(self) -> Sequence[CountedVersion]: ...

    def find(self, name: str, version: str = "") -> CountedVersion: ...


def local_statistics(versions: Versions, name: str, version: str) -> list[VersionStats]:
    """This process's counts of the named version (or every version of ``name``, or of every model
    when no name is given); NotFound for a model or version that is not in the repository."""
    if name and version:
        chosen = [versions.find(name, version)]
    else:
        chosen = [m for m in versions.all() if not name or m.name == name]
        if name and not chosen:
            versions.find(name)  # raises NotFound naming the models there are
            raise NotFound(f"model {name!r} is not in the repository")
    return [VersionStats(m.name, m.version, m.ready, m.provider, m.pending_rows, m.stats.snapshot()) for m in chosen]


def register(channel: Control, versions: Versions) -> None:
    """Answer the channel's statistics readings from ``versions`` (once per process, at start-up)."""

    async def answer(name: str, version: str) -> list[VersionStats]:
        return local_statistics(versions, name, version)

    channel.handle(STATISTICS, answer)


async def statistics(channel: Control, name: str = "", version: str = "") -> list[VersionStats]:
    """Every front-end's counts of the named version(s), summed per version."""
    return merged(await channel.gather(STATISTICS, name, version))
