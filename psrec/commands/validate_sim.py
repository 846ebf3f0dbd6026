"""`psrec validate-sim`: train small real configurations, predict each from a calibration fitted
on the others (leave-one-out), and report how far the simulator is from the measurement.

The configurations (`psrec.sim.validate.DEFAULT_RUNS`) vary workers, PS count, batch size,
the emulated network and the mode (PS async, PS sync, collective); each trains for a few
seconds. They run on Ray by default, the real path (PS and worker actors exchanging real
messages, gloo for the collective), in one Ray session shared by every configuration; `--transport
inprocess` runs the same code on threads (seconds instead of minutes; used by the tests).

Measured step time = the sum of each phase's mean seconds over a worker's steps after a
two-step warm-up, leaving out the steps that another job's load stretched to more than twice
the median step (`psrec.sim.results_map`), plus the emulated network's seconds when `--net` is
on (the runners book those apart); comm fraction likewise. `--repeats R` (default 3) trains every
configuration R times in interleaved passes (so that a slow period of the machine hits
different configurations' repeats) and keeps the repeat with the median step; with 3 repeats or
more, whether two modes count as tied in the ranking is decided by the repeats' spread (a
Welch t-test, `psrec.sim.validate.pair_tied`) instead of a fixed 5% band. The table and the
closing line `median_step_err=R max_step_err=R max_commfrac_err_pts=R ranking_preserved=0|1
configs=N` go to the terminal; `validation.json`, `validation.txt` and each configuration's own run
directory go into the run directory. `--reuse DIR` predicts again from the runs of an
earlier validation without training.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TABLE_COLUMNS = ["config", "mode", "measured_ms", "noise_pct", "predicted_ms", "step_err_pct", "comm_measured_pct",
                 "comm_predicted_pct", "comm_err_pts"]
TABLE_HEADERS = ["config", "mode", "measured ms", "noise %", "predicted ms", "step err %", "comm % meas",
                 "comm % pred", "comm err pts"]
# Without repeats a user cannot tell the simulator's error from the machine's noise: the
# default trains every configuration 3 times (the targets held only with 3 on 2 cores).
DEFAULT_REPEATS = 3


def register(sub) -> None:
    p = sub.add_parser("validate-sim", help="predict real runs from the others' calibration and report the error",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--transport", choices=["ray", "inprocess"], default="ray",
                   help="ray (default: actors and gloo, the real path) or inprocess (threads; fast)")
    p.add_argument("--quick", action="store_true",
                   help="three tiny configurations (one per mode) instead of the default fourteen")
    p.add_argument("--steps", type=int, help="steps per worker in every configuration (default 30)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                   help="train every configuration this many times, in interleaved passes, and keep the "
                        "repeat with the median measured step (the lower of two: another job's load only "
                        f"adds time); its noise column is the repeats' 95%% half-width; default {DEFAULT_REPEATS}")
    p.add_argument("--only", help="comma list of configuration names to run (default all)")
    p.add_argument("--reuse", metavar="DIR", help="predict from the runs of an earlier validate-sim run directory")
    p.add_argument("--cores", type=float, default=0,
                   help="CPU cores the runs share (default: this machine's, os.cpu_count())")
    p.add_argument("--run-dir", default="runs", metavar="DIR", help="parent of the run directory")
    p.set_defaults(func=run)


def _config_for(rs, run_dir: Path, transport: str, name: str | None = None):
    """The psrec Config of one RunSpec: synthetic data, DeepFM, a few seconds of training."""
    from psrec.config import load_config

    sets = [f"data.train_rows={rs.rows}", "data.eval_rows=1024", f"data.batch_size={rs.batch_size}",
            "train.threads=1", "train.progress=false", f'run.dir="{run_dir}"', f'run.name="{name or rs.name}"']
    if rs.mode == "collective":
        sets += [f"collective.workers={rs.workers}", f'collective.net="{rs.net}"',
                 f'collective.transport="{transport}"', "collective.metrics_port=-1"]
    else:
        sets += [f"ps.workers={rs.workers}", f"ps.num_ps={rs.ps}", f"ps.sync={str(rs.mode == 'ps-sync').lower()}",
                 f'ps.net="{rs.net}"', f'ps.transport="{transport}"', "ps.metrics_port=-1"]
    return load_config(None, sets)


def repeat_name(rs, k: int) -> str:
    """Run directory of repeat k (0-based) of RunSpec `rs`: its name, then `<name>-r2`, ..."""
    return rs.name if k == 0 else f"{rs.name}-r{k + 1}"


def run_configs(runs: Sequence[Any], run_dir: Path, transport: str, log=print, repeats: int = 1) -> list[list[Path]]:
    """Train every RunSpec into `run_dir/<name>/` (repeats: `<name>-r2/`, ... in interleaved
    passes); returns each RunSpec's results.json paths."""
    from collective.runner import run_collective
    from psrec.ps.runner import run_ps

    if transport == "ray":
        from psrec.raysession import ensure_ray

        t0 = time.perf_counter()
        ensure_ray()  # once: every configuration's actors join the same session
        log(f"  ray ready ({time.perf_counter() - t0:.0f} s)")
    paths: list[list[Path]] = [[] for _ in runs]
    for k in range(repeats):
        for i, rs in enumerate(runs):
            cfg = _config_for(rs, run_dir, transport, repeat_name(rs, k))
            t0 = time.perf_counter()
            res = run_collective(cfg) if rs.mode == "collective" else run_ps(cfg)
            log(f"  {repeat_name(rs, k)}: {res['train_seconds']:.1f} s training, "
                f"{time.perf_counter() - t0:.0f} s in all")
            paths[i].append(Path(res["run_dir"]) / "results.json")
    return paths


def spec_for(rs, cfg, cores: float):
    """The simulator's description of RunSpec `rs` trained with Config `cfg` on `cores` cores
    (`psrec.commands.simulate.spec.spec_from_config`: one sim table per (model table, field), each
    field its own bounded Zipf law; the emulated network; the collective's own compute constant)."""
    from psrec.commands.simulate.spec import spec_from_config

    if cfg.data.source != "synthetic":
        raise ValueError("validate-sim describes synthetic-data runs only (their key law is known)")
    return spec_from_config(cfg, mode=rs.mode, workers=rs.workers, ps=rs.ps, batch_size=rs.batch_size,
                            net=rs.net, cores=cores, emulated=True, per_mode_compute=True)


def _fit(runs):
    from psrec.sim.calibration import fit_calibration

    return fit_calibration(runs, compute_intercept=True)


def _fill_sync_apply(run: dict, spec) -> dict:
    """A ps-sync run's apply counts: the rows the shard probed and merged are the W pushes'
    (known from the run), the values it updated those of the key law's distinct rows of the
    union of the W batches on the busiest shard (`psrec.sim.costs.ps_sync_distinct_rows`),
    which results.json lacks (`psrec.sim.results_map`), at the run's own values per row, plus
    its dense slice."""
    from psrec.sim.costs import ps_sync_distinct_rows

    known = run.get("sync_apply")
    if run.get("mode") != "ps-sync" or not known or run.get("apply_rows") is not None:
        return run
    distinct = sum(d for d, _ in ps_sync_distinct_rows(spec))
    return {**run, "apply_rows": known["pushed_rows"],
            "apply_values": distinct * known["row_width"] + known["dense_values"]}


def _pick_repeat(mapped: list[dict]) -> dict:
    """The repeat with the median measured step (the lower of an even count), with every
    repeat's step in `measured_repeats` (the ranking's ties: `psrec.sim.validate.pair_tied`)."""
    picked = sorted(mapped, key=lambda m: m["measured"]["step"])[(len(mapped) - 1) // 2]
    return {**picked, "measured_repeats": [m["measured"]["step"] for m in mapped]}


def validate(runs: Sequence[Any], paths: Sequence[Sequence[Path]], run_dir: Path, cores: float, transport: str):
    """Map every run (each RunSpec's repeats: the median one), build its spec, predict it
    leave-one-out; returns (mapped, predictions, summary)."""
    from psrec.sim.results_map import load_run
    from psrec.sim.validate import leave_one_out, summarize

    specs = [spec_for(rs, _config_for(rs, run_dir, transport), cores) for rs in runs]
    mapped = [_fill_sync_apply(_pick_repeat([load_run(p, cores) for p in ps]), sp) for ps, sp in zip(paths, specs)]
    preds = leave_one_out(mapped, specs, fit=_fit, names=[rs.name for rs in runs])
    return mapped, preds, summarize(preds, [rs.group for rs in runs])


def _runs_of(args: argparse.Namespace, reuse: Path | None):
    import dataclasses

    from psrec.sim.validate import DEFAULT_RUNS, QUICK_RUNS, RunSpec

    if reuse is not None and (reuse / "validation.json").is_file():
        saved = json.loads((reuse / "validation.json").read_text())
        runs = [RunSpec(**r) for r in saved["runs"]]
    elif reuse is not None:  # a directory of runs without our summary: the default set's that are there
        runs = [r for r in (*DEFAULT_RUNS, *QUICK_RUNS) if (reuse / r.name / "results.json").is_file()]
    else:
        runs = list(QUICK_RUNS if args.quick else DEFAULT_RUNS)
    if args.steps:
        runs = [dataclasses.replace(r, steps=args.steps) for r in runs]
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = [n for n in names if n not in {r.name for r in runs}]
        if unknown:
            raise ValueError(f"--only: unknown configuration(s) {', '.join(unknown)}; known: "
                             f"{', '.join(r.name for r in runs)}")
        runs = [r for r in runs if r.name in names]
    if args.repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {args.repeats}")
    if len(runs) < 3:
        raise ValueError(f"leave-one-out over {len(runs)} configurations: need at least 3")
    return runs


def noise_pct(pred) -> float | None:
    """A configuration's measurement noise: the 95% half-width of its repeats' steps over their
    median, in % (None with fewer than 2 repeats). A step error below it is not the model's."""
    from psrec.report.intervals import interval

    reps = list(getattr(pred, "measured_repeats", ()) or ())
    if len(reps) < 2:
        return None
    iv = interval(reps)
    return 100.0 * iv.half_width / iv.median if iv.median else None


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from psrec.report.table import format_table
    from psrec.sim.validate import summary_line

    cores = args.cores or float(os.cpu_count() or 1)
    reuse = Path(args.reuse) if args.reuse else None
    try:
        runs = _runs_of(args, reuse)
    except (ValueError, OSError, KeyError) as e:
        print(f"psrec validate-sim: {e}", file=sys.stderr)
        return 2
    base = Path(args.run_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-validate-sim"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    run_dir.mkdir(parents=True)
    t0 = time.perf_counter()
    if reuse is not None:
        paths = [[reuse / repeat_name(rs, k) / "results.json" for k in range(100)
                  if (reuse / repeat_name(rs, k) / "results.json").is_file()] or [reuse / rs.name / "results.json"]
                 for rs in runs]
        print(f"validate-sim: predicting the {len(runs)} runs of {reuse} again; run directory {run_dir}",
              file=sys.stderr)
    else:
        print(f"validate-sim: {len(runs)} configurations on {args.transport}, {cores:g} cores; run directory "
              f"{run_dir}", file=sys.stderr)
        paths = run_configs(runs, run_dir, args.transport, log=lambda m: print(m, file=sys.stderr, flush=True),
                            repeats=args.repeats)
    mapped, preds, summary = validate(runs, paths, run_dir, cores, args.transport)
    # One decimal everywhere: run-to-run noise on a shared machine is larger than that.
    rows = [{k: (f"{v:.1f}" if isinstance(v, float) else v) for k, v in {**p.as_row(), "noise_pct": noise_pct(p)}
             .items()} for p in preds]
    table = format_table(rows, TABLE_COLUMNS, TABLE_HEADERS)
    from psrec.sim.validate import ranking_groups, ranking_holds, tie_rule

    lines = [table, ""]
    groups = [rs.group for rs in runs]
    for g, meas, pred in ranking_groups(preds, groups):
        w, b, net = g
        members = [p for p, pg in zip(preds, groups) if pg == g]
        ok, ties = ranking_holds(members)
        tied = f"; tied ({tie_rule(members)}): {', '.join(f'{x} ~ {y}' for x, y in ties)}" if ties else ""
        lines.append(f"ranking (workers {w}, batch {b}, net {net or 'none'}): measured {' < '.join(meas)}; "
                     f"predicted {' < '.join(pred)}{tied} -> {'holds' if ok else 'FLIPPED'}")
    line = summary_line(summary)
    text = "\n".join(lines + [line])
    (run_dir / "validation.txt").write_text(text + "\n")
    (run_dir / "validation.json").write_text(json.dumps({
        "runs": [dataclasses.asdict(r) for r in runs], "cores": cores, "transport": args.transport,
        "repeats": args.repeats, "picked": [m["name"] for m in mapped],
        "reused": str(reuse) if reuse else None, "seconds": time.perf_counter() - t0,
        "summary": dataclasses.asdict(summary),
        "predictions": [{**p.as_row(), "cost": p.cost.as_row() if p.cost else None,
                         "calibration": p.calibration.to_dict() if p.calibration else None} for p in preds],
        "mapped": mapped}, indent=1, default=float) + "\n")
    print(text)
    return 0
