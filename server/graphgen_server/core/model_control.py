"""Loading and unloading models while the server serves (KServe's RepositoryModelLoad/Unload).

``load(name)`` brings a model in line with its directory: versions new on disk, or whose file
changed, are loaded on a loader thread while every version goes on serving; then the model's
table of versions is replaced in one step. Versions gone from disk or replaced leave the table
and are closed once the calls holding them have finished, so no call fails because of a reload.
A version that fails to load is listed not ready with its reason, except where an older copy of
it was serving: that copy stays. ``unload(name)`` leaves every version listed not ready
("unloaded") and closes them once their calls have finished.

``load(name, config_json)`` loads with the configuration sent as RepositoryModelLoad's ``config``
parameter (Triton's JSON form) instead of config.pbtxt, checked as config.pbtxt is (a bad one is
refused before anything changes) and logged; it stays until the next load, which without one
reads config.pbtxt again, as in Triton. Uploaded model files (``file:`` parameters) are not taken.

With several front-end processes, ``load`` and ``unload`` are broadcast over the control channel
(:mod:`graphgen_server.core.control`): every front-end applies them to its own table, and one that
starts later (in place of a crashed one) replays the latest per model before it serves.

Names are checked before a path is made of them (one directory name inside the repository), and
a version whose files lead outside the repository through a symlink is refused.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from google.protobuf import text_format

from graphgen_server.core.errors import InvalidArgument, NotFound, Refused
from graphgen_server.core.model_version import ModelVersion
from graphgen_server.core.runtime import LocalRuntime
from graphgen_server.repository.config_json import read_config_json
from graphgen_server.repository.layout import MODEL_FILE, BadModelName, ModelFile, check_model_name
from graphgen_server.repository.model_config import ConfigError, ReadConfig, plan_model

log = logging.getLogger("graphgen_server")

UNLOADED = "unloaded (RepositoryModelUnload); RepositoryModelLoad serves it again"
LOAD, UNLOAD = "model.load", "model.unload"  # the control channel's operations: (model name,) -> None


class ModelControl:
    def __init__(self, runtime: LocalRuntime, on_change: Callable[[], Awaitable[None]]) -> None:
        self.runtime = runtime
        self.on_change = on_change  # after the table changed (the health service follows it)
        self._lock = asyncio.Lock()  # one load or unload at a time
        self._loader = ThreadPoolExecutor(1, thread_name_prefix="load")  # the inference threads stay free
        runtime.channel.handle(LOAD, self._load_here)
        runtime.channel.handle(UNLOAD, self._unload_here)

    async def load(self, name: str, config_json: str | None = None) -> None:
        """(Re)load ``name`` from its directory (with ``config_json`` instead of its config.pbtxt) in every
        front-end process."""
        await self.runtime.channel.broadcast(LOAD, name, config_json, replay_key=("model", name))

    async def unload(self, name: str) -> None:
        """Unload every version of ``name`` in every front-end process."""
        await self.runtime.channel.broadcast(UNLOAD, name, replay_key=("model", name))

    def _files(self, name: str, config_json: str | None = None) -> list[tuple[ModelFile, ReadConfig]]:
        """The versions to serve (the configuration's version policy), each with the model's configuration."""
        try:
            check_model_name(name)
        except BadModelName as error:
            raise InvalidArgument("model_name", str(error)) from None
        override = None
        if config_json is not None:
            try:
                override = read_config_json(config_json, name)
            except ConfigError as error:
                raise InvalidArgument("parameters.config", str(error)) from None
            shown = text_format.MessageToString(override.config, as_one_line=True) or "(empty)"
            log.info(
                "model %s: RepositoryModelLoad sends its configuration, used instead of config.pbtxt: %s", name, shown
            )
        return plan_model(self.runtime.config.repository, name, override)

    async def _load_here(self, name: str, config_json: str | None = None) -> None:
        files = self._files(name, config_json)
        if not files:
            raise NotFound(f"model {name!r}: no <version>/{MODEL_FILE} in the repository's {name!r} directory")
        choice = self.runtime.choice
        if choice is None:
            raise RuntimeError("the runtime chooses its providers in load(), before any model is loaded here")
        loop = asyncio.get_running_loop()
        async with self._lock:
            current = self.runtime.models.get(name, {})
            table: dict[str, ModelVersion] = {}
            failures = []
            for file, settings in files:
                old = current.get(str(file.version))
                if old is not None and old.ready and old.file == file and old.settings == settings:  # unchanged
                    table[old.version] = old
                    continue
                new = ModelVersion(file, self.runtime.config, self.runtime.executor, settings)
                await loop.run_in_executor(self._loader, new.load, choice)
                if not new.ready:
                    failures.append(f"version {new.version}: {new.reason}")
                keep_old = not new.ready and old is not None and old.ready
                table[new.version] = old if keep_old and old is not None else new
            self.runtime.models[name] = table
            await self.on_change()
            await self._retire([m for m in current.values() if table.get(m.version) is not m])
        loaded = ", ".join(v for v, m in table.items() if m.ready) or "none"
        log.info("model %s loaded from the repository: versions ready: %s", name, loaded)
        if failures:
            raise Refused(f"model {name!r} could not be loaded in full: " + "; ".join(failures))

    async def _unload_here(self, name: str) -> None:
        self._files(name)  # the name's check
        async with self._lock:
            current = self.runtime.models.get(name)
            if current is None:  # nothing to unload: success, as Triton answers (LoadUnloadModel)
                log.info("model %s: nothing to unload (not in the repository's table)", name)
                return
            placeholders = {}
            for version, model in current.items():
                placeholders[version] = ModelVersion(
                    model.file, self.runtime.config, self.runtime.executor, model.settings
                )
                placeholders[version].reason = UNLOADED
            self.runtime.models[name] = placeholders
            await self.on_change()
            await self._retire(list(current.values()))
        log.info("model %s unloaded", name)

    async def _retire(self, models: list[ModelVersion]) -> None:
        """Close versions that left the table, each once the calls holding it have finished."""
        self.runtime.retiring.update(models)
        for model in models:
            in_flight = model.users
            await model.unused()
            await model.close()
            self.runtime.retiring.discard(model)
            if model.loaded is not None:  # (placeholders and failed loads held nothing)
                log.info(
                    "model %s v%s closed (after %d calls in flight finished)", model.name, model.version, in_flight
                )

    def close(self) -> None:
        self._loader.shutdown(wait=True, cancel_futures=True)
