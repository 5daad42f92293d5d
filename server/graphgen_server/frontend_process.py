"""One front-end process of ``graphgen-server --frontends N`` (started by :mod:`graphgen_server.supervisor`).

    python -m graphgen_server.frontend_process FD LOG_LEVEL     (its configuration pickled on stdin)

``FD`` is its end of the control channel to the supervising process. It serves as one server does
(:func:`graphgen_server.app.serve`) on the ports the supervisor reserved, sharing them with the
other front-ends; it stops on SIGTERM/SIGINT, or when the supervisor is gone. A failure to start
(a port, the repository, the device, TLS files) is told to the supervisor, which says it once.
Front-end 0 logs at the level asked for; the others say warnings and errors only (their model
loads and stops are front-end 0's too), each line naming its front-end.
"""

from __future__ import annotations

import logging
import pickle
import socket
import sys

from graphgen_server.app import BindError, run_loop, serve
from graphgen_server.config import ServerConfig
from graphgen_server.core.control import FrontendControl
from graphgen_server.core.providers import DeviceError
from graphgen_server.frontends.security import SecurityError
from graphgen_server.repository.layout import RepositoryError

EXIT_USAGE = 2


async def run(config: ServerConfig, fd: int) -> int:
    channel = FrontendControl(socket.socket(fileno=fd), config.frontends)
    await channel.connect()
    try:
        return await serve(config, channel=channel)
    except (RepositoryError, DeviceError, BindError, SecurityError) as error:
        await channel.notify("failed", str(error))
        await channel.close()
        return EXIT_USAGE


def main(argv: list[str]) -> int:
    fd, level = int(argv[1]), argv[2]
    config: ServerConfig = pickle.load(sys.stdin.buffer)
    if config.frontend_index > 0 and level == "INFO":
        level = "WARNING"
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s %(name)s [front-end {config.frontend_index}]: %(message)s",
    )
    return run_loop(run(config, fd), config.event_loop)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
