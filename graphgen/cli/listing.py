"""``graphgen list``: the architectures, their parameters and the options each takes."""

from __future__ import annotations

import argparse
import json

from graphgen import catalog


def cmd_list(args: argparse.Namespace) -> int:
    rows = catalog.read()  # written from the registry: listing loads no network code (see graphgen.catalog)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(row["name"]) for row in rows)
    print(f"{'name':<{width}}  {'family':<18}  {'parameters':>13}  {'res':>4}  {'options':<34}  description")
    for row in rows:
        params = f"{row['parameters']:,}"
        options = " ".join(row["options"])
        print(
            f"{row['name']:<{width}}  {row['family']:<18}  {params:>13}  {row['resolution']:>4}  {options:<34}  "
            f"{row['description']}"
        )
    print("parameters: as torch counts them (BatchNorm's running statistics excluded), at the defaults")
    return 0


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    listing = subparsers.add_parser("list", help="list the architectures and the options each takes")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(func=cmd_list)
