"""The ``graphgen`` command line.

Every command is listed in :data:`COMMANDS`: its name, the module defining it, and its one-line
help. Only the chosen command's module is imported (most of them need onnx_ir, which takes about a
second to load), so ``graphgen --help`` and ``graphgen list`` answer at once.

A :class:`~graphgen.errors.GraphgenError` (unknown architecture, unreadable checkpoint, bad
option...) prints one message to stderr and exits with status 2. Any other exception is a bug and
keeps its traceback. A closed pipe on stdout (``graphgen list | head``) ends the command quietly.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from graphgen import __version__
from graphgen.errors import GraphgenError

EXIT_USAGE = 2


@dataclass(frozen=True)
class Command:
    """A command: its name, its one-line help, and the module whose ``add_parser(subparsers)`` defines it."""

    name: str
    module: str
    help: str


# Imported only when its command is the one run (as pip does with its commands): most need onnx_ir.
COMMANDS = (
    Command("list", "graphgen.cli.listing", "list the architectures and the options each takes"),
    Command("build", "graphgen.cli.build", "build an architecture into an ONNX file"),
    Command("stats", "graphgen.cli.stats", "per-layer parameters, MACs/FLOPs, activations and memory"),
    Command(
        "compare", "graphgen.cli.compare", "parameters vs MACs of several architectures or .onnx files (table, chart)"
    ),
    Command(
        "convert",
        "graphgen.cli.convert",
        "graph conversions: grouped convolutions, RepVGG and BatchNorm folding, new head, float16",
    ),
    Command("view", "graphgen.cli.view", "show a model in Netron (served on 127.0.0.1)"),
    Command("profile", "graphgen.cli.profile", "per-layer time over repeated runs, beside MACs and bytes"),
    Command("bench", "graphgen.cli.bench", "latency and throughput of architectures on this machine"),
)


def make_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the full arguments of ``command`` only (the others are named, for --help)."""
    parser = argparse.ArgumentParser(prog="graphgen", description="Classic CNN architectures, straight into ONNX.")
    parser.add_argument("--version", action="version", version=f"graphgen {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((c for c in COMMANDS if c.name == command), None)
    if chosen is not None:
        importlib.import_module(chosen.module).add_parser(subparsers)
    for entry in COMMANDS:
        if entry.name not in subparsers.choices:
            subparsers.add_parser(entry.name, help=entry.help)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in arguments if not a.startswith("-")), None)  # graphgen takes no option values
    args = make_parser(command).parse_args(arguments)
    run: Callable[[argparse.Namespace], int] = args.func
    try:
        return run(args)
    except GraphgenError as error:
        print(f"graphgen: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`graphgen list | head`): not an error of ours. Point stdout at devnull so
        # that the interpreter's final flush does not raise again, and exit as `yes | head` does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


__all__ = ["COMMANDS", "EXIT_USAGE", "Command", "main", "make_parser"]
