"""A graphgen-server started as a subprocess on this machine, for demos, benchmarks and tests.

It listens on 127.0.0.1 on a port the server picks itself (``--port 0``, read back from its log)
and is stopped with SIGTERM when the ``with`` block ends — killed if it has not exited within a
bound — so nothing is left running.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
# Logged before LISTENING: the HTTP/REST and metrics ports (free ones unless the args say otherwise).
SIDE_PORTS = {
    "http_port": re.compile(r"HTTP/REST on 127\.0\.0\.1:(\d+)"),
    "metrics_port": re.compile(r"metrics.* on 127\.0\.0\.1:(\d+)"),
}


class LocalServer:
    def __init__(
        self,
        repository: Path,
        args: Sequence[str] = (),
        *,
        on_log: Callable[[str], None] | None = None,
        start_timeout: float = 120.0,
        stop_timeout: float = 60.0,
    ) -> None:
        self.repository, self.args = Path(repository), list(args)
        self.on_log = on_log
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.port = 0
        self.http_port = self.metrics_port = 0  # 0: not listening
        self.process: subprocess.Popen | None = None
        self.log_lines: list[str] = []
        self.returncode: int | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def http_address(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    @property
    def log(self) -> str:
        return "\n".join(self.log_lines)

    def __enter__(self) -> LocalServer:
        command = [sys.executable, "-m", "graphgen_server", "--repository", str(self.repository)]
        command += ["--host", "127.0.0.1", "--port", "0", "--http-port", "auto", "--metrics-port", "auto", *self.args]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env)
        listening = threading.Event()

        def read_log() -> None:
            assert self.process is not None and self.process.stderr is not None
            for line in self.process.stderr:
                line = line.rstrip()
                self.log_lines.append(line)
                if self.on_log is not None:
                    self.on_log(line)
                for attribute, pattern in SIDE_PORTS.items():
                    if side := pattern.search(line):
                        setattr(self, attribute, int(side.group(1)))
                match = LISTENING.search(line)
                if match:
                    self.port = int(match.group(1))
                    listening.set()
            listening.set()  # the server exited before listening: port stays 0

        self._reader = threading.Thread(target=read_log, daemon=True)
        self._reader.start()
        listening.wait(self.start_timeout)
        if not self.port:
            self.stop()
            raise RuntimeError(f"graphgen-server did not start (exit status {self.returncode}):\n{self.log}")
        return self

    def signal(self, sig: int = signal.SIGTERM) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float | None = None) -> int:
        """The exit status; kills the server (and raises) if it has not exited within the timeout."""
        assert self.process is not None
        timeout = self.stop_timeout if timeout is None else timeout
        try:
            self.returncode = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.returncode = self.process.wait(10)
            raise TimeoutError(f"graphgen-server did not stop within {timeout}s:\n{self.log}") from None
        self._reader.join(timeout=5)  # the last log lines
        if self.process.stderr is not None and not self._reader.is_alive():
            self.process.stderr.close()
        return self.returncode

    def stop(self) -> int:
        if self.process is not None and self.process.poll() is None:
            self.signal(signal.SIGTERM)
        return self.wait()

    def __exit__(self, *exc) -> None:
        self.stop()
