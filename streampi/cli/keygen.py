"""``streampi keygen``: write a CurveZMQ key pair (docs/security.md)."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("directory", type=Path)
    p.add_argument("--name", default="streampi", help="file name of the pair (e.g. server, cam0)")


def run(args: argparse.Namespace) -> int:
    from ..auth import keygen

    public, secret = keygen(args.directory, args.name)
    print(f"wrote {public} (public: give it to the other side) and {secret} (secret: keep it here)")
    return 0
