"""``graphgen view NAME|FILE [--port P]``: serve a model to Netron on 127.0.0.1 and print the URL.

An architecture name is built first (with the usual build options, ``--functions`` included)
into a temporary directory that is removed when the server stops; an .onnx file is served as it
is, after the same safety checks ``graphgen stats`` applies. Netron is an optional extra
(``pip install 'graphgen-onnx[view]'``). The server listens on the loopback address only; Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import tempfile
import threading
import time
import webbrowser
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from graphgen.cli.common import add_build_arguments, model_file
from graphgen.errors import UserError

HOST = "127.0.0.1"
DEFAULT_PORT = 8080  # Netron's own default
MISSING_NETRON = "graphgen view needs Netron: pip install 'graphgen-onnx[view]'"


def _netron():
    try:
        import netron
    except ImportError:
        raise UserError(MISSING_NETRON) from None
    return netron


@contextmanager
def serving(path: Path, port: int = 0) -> Iterator[str]:
    """Serve ``path`` with Netron on 127.0.0.1:``port`` (0: any free port); yields the URL."""
    netron = _netron()
    logging.getLogger("netron").setLevel(logging.WARNING)  # we print the URL ourselves
    try:
        address = netron.serve(str(path), None, address=(HOST, port), browse=False)
    except OSError as error:
        raise UserError(f"cannot listen on {HOST}:{port} ({error.strerror}); choose another --port, or 0") from None
    try:
        yield f"http://{address[0]}:{address[1]}/"
    finally:
        netron.stop(address)


def _stop_on_sigterm(_signal: int, _frame) -> None:
    raise KeyboardInterrupt  # so `kill` stops the server as Ctrl-C does, removing the built model


def cmd_view(args: argparse.Namespace) -> int:
    _netron()  # a missing extra fails before any build
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
    with tempfile.TemporaryDirectory(prefix="graphgen-view-") as directory:
        path = model_file(args.name, args, Path(directory))
        with serving(path, args.port) as url:
            print(f"Netron is showing {path.name} at {url}  (Ctrl-C to stop)", flush=True)
            if args.browse:
                webbrowser.open(url)
            try:
                while True:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
    return 0


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is 0..65535 (0: any free port), got {text!r}")
    return port


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("view", help="show a model in Netron (served on 127.0.0.1)")
    parser.add_argument("name", metavar="NAME|FILE", help="architecture name (built first) or .onnx file")
    parser.add_argument("--port", type=_port, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free)")
    parser.add_argument("--browse", action="store_true", help="also open the page in the default browser")
    add_build_arguments(parser, batch=False)
    parser.set_defaults(func=cmd_view)
