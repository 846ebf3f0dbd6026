"""`psrec export RUN_DIR OUT`: copy a run's saved model out, verified (sha256 of every file)."""
from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    p = sub.add_parser("export", help="copy a run's trained model (tables + dense + config) to a new directory",
                       description="Copy the model a run saved (<run dir>/model) to OUT, verifying every file's "
                                   "sha256; load it with psrec.load_model(OUT).")
    p.add_argument("run_dir", metavar="RUN_DIR", help="a run directory (or its model directory)")
    p.add_argument("out", metavar="OUT", help="a new directory to write")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from psrec.core.checkpoint import CheckpointError
    from psrec.core.saved_model import export_model

    try:
        out = export_model(args.run_dir, args.out)
    except (CheckpointError, FileExistsError) as e:
        print(f"psrec export: {e}", file=sys.stderr)
        return 2
    print(f"model exported to {out}")
    return 0
