"""``graphgen-client classify IMG... --model M [--top-k 5] [--profile [--plot PNG] [--trace FILE.json]]`` (and ``models``, ``health``).

Exit status: 0 done, 1 the server answered with an error (printed as CODE: message), 2 a usage
error or an unreadable image file.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import json_format

from graphgen import __version__
from graphgen.argtypes import positive_int, positive_seconds
from graphgen.files import not_a_file
from graphgen.plots import DEFAULT_SIZE, PlotError, plot_path_argument, size_argument
from graphgen.profiling.chrome_trace import trace_path_argument, write_trace
from graphgen.profiling.plots import ProfileRow, plot_profile
from graphgen_client.client import DEFAULT_ADDRESS, TOKEN_VARIABLE, Client, ClientError
from graphgen_client.tables import classes_table, models_table, profile_table
from graphgen_client.traces import profile_from_message

EXIT_SERVER, EXIT_USAGE = 1, 2


def global_options(suppress: bool) -> argparse.ArgumentParser:
    """The options every command takes, before or after the command's name.

    The commands' copies default to SUPPRESS, so an option given before the command is not reset
    by the command's parser when it is not repeated after it.
    """
    parser = argparse.ArgumentParser(add_help=False)

    def default(value):
        return argparse.SUPPRESS if suppress else value

    parser.add_argument(
        "--address",
        default=default(DEFAULT_ADDRESS),
        help=f"host[:port] (port 8001 unless given), or replicas: ip:port,ip:port,... or dns:///name:port "
        f"(default {DEFAULT_ADDRESS})",
    )
    parser.add_argument("--timeout", type=positive_seconds, default=default(60.0), help="seconds per call (default 60)")
    security = parser.add_argument_group("security")
    security.add_argument(
        "--tls", action="store_true", default=default(False), help="TLS, trusting the system's CAs (or --tls-ca)"
    )
    security.add_argument("--tls-ca", type=Path, metavar="PEM", default=default(None), help="TLS, trusting this CA")
    security.add_argument(
        "--tls-cert", type=Path, metavar="PEM", default=default(None), help="mutual TLS: this client certificate"
    )
    security.add_argument(
        "--tls-key", type=Path, metavar="PEM", default=default(None), help="mutual TLS: its private key"
    )
    security.add_argument(
        "--tls-server-name",
        metavar="NAME",
        default=default(None),
        help="TLS: the name the server's certificate carries, if not the address's host",
    )
    security.add_argument(
        "--token-file",
        type=Path,
        metavar="FILE",
        default=default(None),
        help=f"send the bearer token in FILE (without it: the token held in ${TOKEN_VARIABLE}, if set)",
    )
    return parser


@dataclass(frozen=True)
class Connection:
    """Where the server is and how to reach it: the options every command takes."""

    address: str = DEFAULT_ADDRESS
    timeout: float = 60.0
    tls: bool = False
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_server_name: str | None = None
    token_file: Path | None = None

    def client_options(self) -> dict[str, Any]:
        """``Client``'s keyword arguments, the token and PEM files read now (OSError when one cannot be)."""
        token = self.token_file.read_text(encoding="utf-8").strip() if self.token_file else None
        pems = {
            f"tls_{kind}": path.read_bytes()
            for kind, path in (("ca", self.tls_ca), ("cert", self.tls_cert), ("key", self.tls_key))
            if path is not None
        }
        token = token or os.environ.get(TOKEN_VARIABLE, "").strip() or None
        return {
            "timeout": self.timeout,
            "token": token,
            "tls": self.tls,
            "tls_server_name": self.tls_server_name,
            **pems,
        }


@dataclass(frozen=True)
class Classify:
    """``classify IMG...``: the images, the model, and what to show of the answer."""

    images: list[Path]
    model: str
    version: str = ""
    top_k: int = 5
    profile: bool = False
    profile_runs: int = 0
    json: bool = False
    plot: Path | None = None
    plot_size: tuple[int, int] = DEFAULT_SIZE
    trace: Path | None = None


@dataclass(frozen=True)
class Models:
    """``models``: the server's models and their state."""


@dataclass(frozen=True)
class Health:
    """``health``: the health service's status of the server, or of one service."""

    service: str = ""


Command = Classify | Models | Health


def _typed(kind: type[Any], args: argparse.Namespace) -> Any:
    """``kind`` made from the parsed arguments: each of its fields is the option of the same ``dest``."""
    return kind(**{field.name: vars(args)[field.name] for field in dataclasses.fields(kind)})


def _runs(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of runs, got {text!r}")
    return int(text)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="graphgen-client", description="Talk to a graphgen-server.", parents=[global_options(suppress=False)]
    )
    parser.add_argument("--version", action="version", version=f"graphgen-client {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = [global_options(suppress=True)]

    classify = commands.add_parser("classify", help="classify image files (JPEG, PNG, ...)", parents=common)
    classify.add_argument("images", nargs="+", type=Path, metavar="IMG")
    classify.add_argument("--model", required=True)
    classify.add_argument("--version", default="", help="model version (default: the newest ready one)")
    classify.add_argument("--top-k", type=positive_int, default=5, help="classes shown per image (default 5)")
    classify.add_argument("--profile", action="store_true", help="also print the time of every layer")
    classify.add_argument(
        "--profile-runs",
        type=_runs,
        default=0,
        metavar="N",
        help="with --profile: measured runs (default: the server's, 10)",
    )
    classify.add_argument("--json", action="store_true", help="print the response as JSON")
    classify.add_argument(
        "--plot", type=plot_path_argument, metavar="PNG", help="with --profile: draw the layer times to this PNG"
    )
    classify.add_argument("--plot-size", type=size_argument, default=DEFAULT_SIZE, metavar="WxH", help="in pixels")
    classify.add_argument(
        "--trace",
        type=trace_path_argument,
        metavar="FILE.json",
        help="with --profile: every measured run's layers as Chrome trace events (Perfetto, DevTools)",
    )
    classify.set_defaults(kind=Classify)

    commands.add_parser("models", help="list the server's models and their state", parents=common).set_defaults(
        kind=Models
    )
    health = commands.add_parser("health", help="the health service's status (exit 1 unless SERVING)", parents=common)
    health.add_argument("--service", default="", help="one service (default: the server as a whole)")
    health.set_defaults(kind=Health)
    return parser


def plot_profile_of(response, path: Path, size: tuple[int, int]) -> Path:
    """The per-layer time chart of a profiled response (kernels with no graphgen layer by their op)."""
    profile = response.profile
    device = profile.timing == "device"  # GPU times where CUPTI measured them, else host (or launch) times
    rows = [
        ProfileRow(
            r.layer,
            tuple(r.op_types) if r.mapped else (r.kernel_op,),
            r.device_us if device else (r.min_us if profile.headline == "min" else r.median_us),
            r.share,
            r.device_p10_us if device else r.p10_us,
            r.device_p90_us if device else r.p90_us,
        )
        for r in profile.layers
    ]
    title = (
        f"{response.model} v{response.version} on {profile.provider}, batch {profile.batch_size}, "
        f"{'fastest' if profile.headline == 'min' else 'median'} of {profile.runs} runs "
        f"({profile.timing_text or profile.timing})"
    )
    total = profile.device_run_us if device else profile.inference_us
    spread = f"{profile.spread} over {profile.runs} runs"
    return plot_profile(rows, path, size, title=title, inference_us=total, spread=spread, notes=list(profile.notes))


def parse(argv: Sequence[str] | None = None) -> tuple[Connection, Command]:
    """The command line as typed values; a usage error exits 2 with argparse's message."""
    parser = make_parser()
    args = parser.parse_args(argv)
    connection: Connection = _typed(Connection, args)
    command: Command = _typed(args.kind, args)
    if isinstance(command, Classify):
        if command.plot and not command.profile:
            parser.error("--plot draws the per-layer profile: add --profile")
        if command.profile_runs and not command.profile:
            parser.error("--profile-runs says how many runs to profile: add --profile")
        if command.trace and not command.profile:
            parser.error("--trace writes the profile's runs: add --profile")
    if (connection.tls_cert is None) != (connection.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    return connection, command


def main(argv: Sequence[str] | None = None) -> int:
    connection, command = parse(argv)
    try:  # the files are read now, so that a missing one is a usage error
        options = connection.client_options()
    except OSError as error:
        print(f"graphgen-client: error: {error.filename}: {error.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        with Client(connection.address, **options) as client:
            return run(client, command)
    except ClientError as error:
        if isinstance(command, Health) and error.code.name == "NOT_FOUND" and not error.details:
            # grpcio's health service answers a service it does not know with no message at all
            error = ClientError(error.code, f"the server has no health status for service {command.service!r}")
        print(f"graphgen-client: error: {error}", file=sys.stderr)
        return EXIT_SERVER
    except PlotError as error:
        print(f"graphgen-client: error: {error}", file=sys.stderr)
        return EXIT_USAGE


def run(client: Client, command: Command) -> int:
    """Carry out one command; its exit status."""
    if isinstance(command, Models):
        print(models_table(client.models()))
        return 0
    if isinstance(command, Health):
        status = client.health(command.service)
        print(status)
        return 0 if status == "SERVING" else EXIT_SERVER
    for path in command.images:
        problem = not_a_file(path, "an image file")
        if problem:
            print(f"graphgen-client: error: {problem}", file=sys.stderr)
            return EXIT_USAGE
    response = client.classify(
        command.images,
        model=command.model,
        top_k=command.top_k,
        profile=command.profile,
        version=command.version,
        profile_runs=command.profile_runs,
        profile_timeline=command.trace is not None,
    )
    if command.json:
        print(json.dumps(json_format.MessageToDict(response), indent=2))
    else:
        print(classes_table(response, [str(p) for p in command.images]))
        if command.profile:
            print()
            print(profile_table(response.profile))
    if command.plot:
        written = plot_profile_of(response, command.plot, command.plot_size)
        print(f"wrote {written}", file=sys.stderr if command.json else sys.stdout)
    if command.trace:
        label = f"{response.model} v{response.version} (graphgen-server)"
        written = write_trace(command.trace, [(label, profile_from_message(response.profile))])
        print(f"wrote {written}", file=sys.stderr if command.json else sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
