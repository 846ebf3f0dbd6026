"""`psrec models`: the registered model names, one a line."""
from __future__ import annotations

import argparse


def register(sub) -> None:
    p = sub.add_parser("models", help="list registered model names, one a line")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from psrec.models import model_names

    print("\n".join(model_names()))
    return 0
