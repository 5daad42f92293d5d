"""``graphgen-client classify IMG... --model M [--top-k 5] [--profile]`` (and ``models``, ``health``).

Exit status: 0 done, 1 the server answered with an error (printed as CODE: message), 2 a usage
error or an unreadable image file.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from google.protobuf import json_format

from graphgen_client.client import DEFAULT_ADDRESS, Client, ClientError
from graphgen_client.tables import classes_table, models_table, profile_table

EXIT_SERVER, EXIT_USAGE = 1, 2


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="graphgen-client", description="Talk to a graphgen-server.")
    parser.add_argument("--address", default=DEFAULT_ADDRESS, help=f"host:port (default {DEFAULT_ADDRESS})")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per call (default 60)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    classify = commands.add_parser("classify", help="classify image files (JPEG, PNG, ...)")
    classify.add_argument("images", nargs="+", type=Path, metavar="IMG")
    classify.add_argument("--model", required=True)
    classify.add_argument("--version", default="", help="model version (default: the newest ready one)")
    classify.add_argument("--top-k", type=int, default=5)
    classify.add_argument("--profile", action="store_true", help="also print the time of every layer")
    classify.add_argument("--json", action="store_true", help="print the response as JSON")

    commands.add_parser("models", help="list the server's models and their state")
    health = commands.add_parser("health", help="the health service's status (exit 1 unless SERVING)")
    health.add_argument("--service", default="", help="one service (default: the server as a whole)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    try:
        with Client(args.address, timeout=args.timeout) as client:
            if args.command == "classify":
                for path in args.images:
                    if not path.is_file():
                        print(f"graphgen-client: error: {path}: no such file", file=sys.stderr)
                        return EXIT_USAGE
                response = client.classify(
                    args.images, model=args.model, top_k=args.top_k, profile=args.profile, version=args.version
                )
                if args.json:
                    print(json.dumps(json_format.MessageToDict(response), indent=2))
                    return 0
                print(classes_table(response, [str(p) for p in args.images]))
                if args.profile:
                    print()
                    print(profile_table(response.profile))
            elif args.command == "models":
                print(models_table(client.models()))
            else:
                status = client.health(args.service)
                print(status)
                return 0 if status == "SERVING" else EXIT_SERVER
    except ClientError as error:
        print(f"graphgen-client: error: {error}", file=sys.stderr)
        return EXIT_SERVER
    return 0


if __name__ == "__main__":
    sys.exit(main())
