"""The ``graphgen`` command line.

Every command is listed in :data:`COMMANDS`: its name, its one-line help, and a function that
imports the module defining it. Only the chosen command's module is imported (most of them need
onnx_ir, which takes about a second to load), so ``graphgen --help`` answers at once.

A :class:`~graphgen.errors.GraphgenError` (unknown architecture, unreadable checkpoint, bad
option...) prints one message to stderr and exits with status 2. Any other exception is a bug and
keeps its traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType

from graphgen import __version__
from graphgen.errors import GraphgenError

EXIT_USAGE = 2


@dataclass(frozen=True)
class Command:
    """``load()`` returns the module whose ``add_parser(subparsers)`` defines the command."""

    name: str
    help: str
    load: Callable[[], ModuleType]


# Each loader imports its module only when its command is the one run.
def _listing() -> ModuleType:
    from graphgen.cli import listing

    return listing


def _core() -> ModuleType:
    from graphgen.cli import commands

    return commands


def _compare() -> ModuleType:
    from graphgen import compare

    return compare


def _convert() -> ModuleType:
    from graphgen import convert

    return convert


def _view() -> ModuleType:
    from graphgen import view

    return view


def _profiling() -> ModuleType:
    from graphgen.profiling import commands

    return commands


COMMANDS = (
    Command("list", "list the architectures and the options each takes", _listing),
    Command("build", "build an architecture into an ONNX file", _core),
    Command("stats", "per-layer parameters, MACs/FLOPs, activations and memory", _core),
    Command("compare", "parameters vs MACs of several architectures or .onnx files (table, chart)", _compare),
    Command(
        "convert", "graph conversions: grouped convolutions, RepVGG and BatchNorm folding, new head, float16", _convert
    ),
    Command("view", "show a model in Netron (served on 127.0.0.1)", _view),
    Command("profile", "per-layer time over repeated runs, beside MACs and bytes", _profiling),
    Command("bench", "latency and throughput of architectures on this machine", _profiling),
)


def make_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser, with the full arguments of ``command`` only (the others are named, for --help)."""
    parser = argparse.ArgumentParser(prog="graphgen", description="Classic CNN architectures, straight into ONNX.")
    parser.add_argument("--version", action="version", version=f"graphgen {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    chosen = next((c for c in COMMANDS if c.name == command), None)
    if chosen is not None:
        chosen.load().add_parser(subparsers)  # a module may define several commands (profile, bench)
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


__all__ = ["COMMANDS", "EXIT_USAGE", "Command", "main", "make_parser"]
