"""`psrec calibrate`: fit the simulator's constants from the results.json of real PS and
collective runs, into a calibration file for `psrec simulate --calibration FILE`.

RESULTS are results.json files, run directories, or directories of runs (`psrec compare`,
`psrec validate-sim`: every subdirectory with a results.json). Each run is mapped to the fit
schema by `psrec.sim.results_map` (phases per step, bytes, messages, apply counts, batch,
model) and `psrec.sim.calibration.fit_calibration` fits alpha/beta (PS RPC), coll_call /
coll_alpha / coll_beta / alltoall_beta (collective calls, peer messages, bytes), compute per
sample and per step, apply per call, row and value, and the lockstep jitter. `--cores` names
the CPU cores the runs shared (default: this machine's): with more workers than cores, each CPU
phase ran W / cores times slower, which the fit divides out.

No benchmark writes a results file (`benchmarks/*.py` print their tables and a summary line),
so benchmark output is not an input; their per-call figures are what the runs measure anyway.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

SHOWN = ["alpha", "beta", "coll_call", "coll_alpha", "coll_beta", "alltoall_beta", "apply_per_call", "apply_per_row",
         "apply_per_value", "lookup_per_row", "coll_apply_per_step", "coll_apply_per_row", "jitter"]


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="fit the simulator's constants from real runs' results.json",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="results.json files, run directories, or directories of runs")
    p.add_argument("-o", "--output", default="calibration.json", metavar="FILE",
                   help="calibration file to write (default calibration.json)")
    p.add_argument("--cores", type=float, default=0,
                   help="CPU cores the runs shared (default: this machine's, os.cpu_count())")
    p.add_argument("--no-intercept", action="store_true",
                   help="fit compute through the origin (compute per sample only, no per-step overhead)")
    p.set_defaults(func=run)


def calibrate(paths: list[str], cores: float, intercept: bool = True):
    """(calibration, mapped runs) from the results under `paths`; CalibrationError names the file."""
    from psrec.sim.calibration import fit_calibration
    from psrec.sim.results_map import find_results, load_run

    files = [f for p in paths for f in find_results(p)]
    mapped = [load_run(f, cores) for f in files]
    cal = fit_calibration(mapped, compute_intercept=intercept)
    import dataclasses

    cal = dataclasses.replace(cal, source=f"psrec calibrate over {len(files)} runs ({cores:g} shared cores): "
                                          + ", ".join(str(f.parent.name) for f in files))
    return cal, mapped


def run(args: argparse.Namespace) -> int:
    from psrec.report.table import format_table
    from psrec.sim.calibration import CalibrationError, save_calibration

    cores = args.cores or float(os.cpu_count() or 1)
    try:
        cal, mapped = calibrate(args.results, cores, not args.no_intercept)
    except CalibrationError as e:
        print(f"psrec calibrate: {e}", file=sys.stderr)
        return 2
    rows = [{"run": m["name"], "mode": m["mode"], "workers": m["workers"], "ps": m.get("ps", 0),
             "batch": m["batch_size"], "step_ms": 1e3 * m["measured"]["step"],
             "compute_ms": 1e3 * m["phases"]["compute"],
             "comm_pct": 100 * m["measured"]["comm_fraction"]} for m in mapped]
    print(format_table(rows))
    out = save_calibration(cal, args.output)
    consts = {k: getattr(cal, k) for k in SHOWN}
    print(json.dumps({**consts, "compute_per_sample": cal.compute_per_sample,
                      "compute_per_step": cal.compute_per_step}, indent=1))
    print(f"calibration: {out} (use: psrec simulate --calibration {out})")
    return 0
