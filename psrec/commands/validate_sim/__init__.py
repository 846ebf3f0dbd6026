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
on (the runners book those apart); comm fraction likewise.

Noise: each run's steps after the warm-up are cut into `RunSpec.segments` (3) equal parts,
whose mean steps are the configuration's samples, pooled over its runs; its noise column is
their 95% half-width over their median. Every configuration is trained `--repeats` times
(default 2), in interleaved passes (so that a slow period of the machine hits different
configurations' runs): segments of one run share whatever slowed that run as a whole, which
only another run shows (the same DeepFM step measured 36 and 53 ms in two runs a minute
apart, each steady within itself). A configuration whose noise is still above
`--noise-target` (default 10%, the median step error the validation targets: a noisier
measurement cannot judge the model) is trained again, noisiest first, while the time budget
lasts (`--budget-min`, default 8 minutes of training; at most `--max-repeats`, 3, runs each).
The picked run is the one with the median step. Whether two modes count as tied in the
ranking is decided by the samples' spread (Welch's t-test, `psrec.sim.validate.pair_tied`;
with fewer than 3 runs the pair must also be 5% apart); a pair the measurement orders is
flipped only by a prediction more than 5% the other way (a closer one claims no order;
`ranking_strict` counts those too). The table and the closing line `median_step_err=R
max_step_err=R max_commfrac_err_pts=R ranking_preserved=0|1 configs=N ranking_strict=0|1` go
to the terminal; `validation.json`, `validation.txt` and each configuration's own run
directory go into the run directory. `--reuse DIR` predicts again from the runs of an
earlier validation without training.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

TABLE_COLUMNS = ["config", "mode", "measured_ms", "noise_pct", "runs", "predicted_ms", "step_err_pct",
                 "comm_measured_pct", "comm_predicted_pct", "comm_err_pts"]
TABLE_HEADERS = ["config", "mode", "measured ms", "noise %", "runs", "predicted ms", "step err %", "comm % meas",
                 "comm % pred", "comm err pts"]
# Without a noise figure a user cannot tell the simulator's error from the machine's: every
# run's segments measure it, and a configuration noisier than the target runs again.
DEFAULT_REPEATS = 2
NOISE_TARGET_PCT = 10.0  # the median step error the validation aims at (issue #21)
BUDGET_MIN = 8.0  # training time for the default set, extra runs included, on a 2-core machine
MAX_REPEATS = 3


def register(sub) -> None:
    p = sub.add_parser("validate-sim", help="predict real runs from the others' calibration and report the error",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--transport", choices=["ray", "inprocess"], default="ray",
                   help="ray (default: actors and gloo, the real path) or inprocess (threads; fast)")
    p.add_argument("--quick", action="store_true",
                   help="three tiny configurations (one per mode) instead of the default fourteen")
    p.add_argument("--steps", type=int, help="steps per worker in every configuration, the warm-up included "
                                             "(default: each configuration's own, 62)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                   help="train every configuration this many times first, in interleaved passes, and keep the "
                        "run with the median measured step (the lower of two: another job's load only adds "
                        f"time); default {DEFAULT_REPEATS}")
    p.add_argument("--noise-target", type=float, default=NOISE_TARGET_PCT, metavar="PCT",
                   help="train a configuration again while its noise (the 95%% half-width of its segments' "
                        f"steps, %% of their median) is above this; default {NOISE_TARGET_PCT:g}")
    p.add_argument("--budget-min", type=float, default=BUDGET_MIN, metavar="MIN",
                   help=f"minutes of training (every run) after which no run is added; default {BUDGET_MIN:g}")
    p.add_argument("--max-repeats", type=int, default=MAX_REPEATS,
                   help=f"runs of one configuration at most; default {MAX_REPEATS}")
    p.add_argument("--only", help="comma list of configuration names to run (default all)")
    p.add_argument("--reuse", metavar="DIR", help="predict from the runs of an earlier validate-sim run directory")
    p.add_argument("--cores", type=float, default=0,
                   help="CPU cores the runs share (default: this machine's, os.cpu_count())")
    p.add_argument("--run-dir", default="runs", metavar="DIR", help="parent of the run directory")
    tb = p.add_argument_group("on a testbed (`psrec cluster up`; root)")
    tb.add_argument("--address", help="a testbed's head: train PS async, PS sync, hybrid and collective there and "
                                      "on one node, calibrate on the one-node runs, predict the testbed's")
    tb.add_argument("--bandwidths", default=",200Mbit", metavar="LIST",
                    help="comma list of link rates to re-shape the testbed to in turn (empty item: the "
                         "testbed's own); default: its own, then 200Mbit")
    tb.add_argument("--batch", type=int, default=2048, help="rows per worker per step on the testbed (default 2048)")
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


def run_configs(runs: Sequence[Any], run_dir: Path, transport: str, log=print, repeats: int = 1,
                noise_target: float = math.inf, budget_s: float = math.inf, max_repeats: int = 1) -> list[list[Path]]:
    """Train every RunSpec into `run_dir/<name>/` (repeats: `<name>-r2/`, ... in interleaved
    passes), then again each whose noise is above `noise_target` (%), noisiest first, while
    `budget_s` seconds of training in all allow (a run is started only where its own earlier
    runs' mean time still fits) and it has fewer than `max_repeats` runs; returns each
    RunSpec's results.json paths."""
    from collective.runner import run_collective
    from psrec.ps.runner import run_ps

    if transport == "ray":
        from psrec.raysession import ensure_ray

        t0 = time.perf_counter()
        ensure_ray()  # once: every configuration's actors join the same session
        log(f"  ray ready ({time.perf_counter() - t0:.0f} s)")
    paths: list[list[Path]] = [[] for _ in runs]
    took: list[list[float]] = [[] for _ in runs]
    samples: list[list[float]] = [[] for _ in runs]  # each configuration's, read once per run
    start = time.perf_counter()

    def train(i: int) -> None:
        rs, k = runs[i], len(paths[i])
        cfg = _config_for(rs, run_dir, transport, repeat_name(rs, k))
        t0 = time.perf_counter()
        res = run_collective(cfg) if rs.mode == "collective" else run_ps(cfg)
        took[i].append(time.perf_counter() - t0)
        paths[i].append(Path(res["run_dir"]) / "results.json")
        samples[i] += _samples(paths[i][-1:], rs.segments)
        noise = noise_of(samples[i])
        log(f"  {repeat_name(rs, k)}: {res['train_seconds']:.1f} s training, {took[i][-1]:.0f} s in all"
            + (f", noise {noise:.1f}%" if noise is not None else ""))

    for _ in range(repeats):
        for i in range(len(runs)):
            train(i)
    while True:
        left = budget_s - (time.perf_counter() - start)
        noisy = [(noise_of(samples[i]), i) for i in range(len(runs)) if len(paths[i]) < max_repeats]
        noisy = sorted(((n, i) for n, i in noisy if n is not None and n > noise_target), reverse=True)
        fits = [i for _, i in noisy if statistics.fmean(took[i]) <= left]
        if not fits:
            if noisy:
                log(f"  {len(noisy)} configuration(s) still above {noise_target:g}% noise; "
                    f"{'budget spent' if left > 0 else 'no budget left'}")
            return paths
        train(fits[0])


def _samples(paths: Sequence[Path], segments: int) -> list[float]:
    """Every segment step (seconds) of every run in `paths` (`psrec.sim.results_map.segment_steps`)."""
    from psrec.sim.results_map import segment_steps

    out: list[float] = []
    for p in paths:
        try:
            out += segment_steps(json.loads(Path(p).read_text()), segments, str(p))
        except (OSError, json.JSONDecodeError):
            continue  # a run without its results counts no samples; load_run reports it
    return out


def noise_of(samples: Sequence[float]) -> float | None:
    """The 95% half-width of `samples`' mean over their median, in % (None under 2)."""
    from psrec.report.intervals import interval

    if len(samples) < 2:
        return None
    iv = interval(samples)
    return 100.0 * iv.half_width / iv.median if iv.median else None


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


def _pick_repeat(mapped: list[dict], samples: Sequence[float] = ()) -> dict:
    """The run with the median measured step (the lower of an even count), with the
    configuration's `samples` (every run's segment steps; a run of one segment: its step) and
    how many `runs` they come from (the ranking's ties: `psrec.sim.validate.pair_tied`)."""
    picked = sorted(mapped, key=lambda m: m["measured"]["step"])[(len(mapped) - 1) // 2]
    return {**picked, "measured_samples": list(samples) or [m["measured"]["step"] for m in mapped],
            "runs": len(mapped)}


def validate(runs: Sequence[Any], paths: Sequence[Sequence[Path]], run_dir: Path, cores: float, transport: str):
    """Map every run (each RunSpec's repeats: the median one), build its spec, predict it
    leave-one-out; returns (mapped, predictions, summary)."""
    from psrec.sim.results_map import load_run
    from psrec.sim.validate import leave_one_out, summarize

    specs = [spec_for(rs, _config_for(rs, run_dir, transport), cores) for rs in runs]
    mapped = [_fill_sync_apply(_pick_repeat([load_run(p, cores) for p in ps],
                                            _samples(ps, rs.segments) if rs.segments > 1 else ()), sp)
              for rs, ps, sp in zip(runs, paths, specs)]
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
    if args.repeats < 1 or args.max_repeats < 1:
        raise ValueError(f"--repeats and --max-repeats must be >= 1, got {args.repeats} and {args.max_repeats}")
    if not args.budget_min >= 0 or not args.noise_target > 0:
        raise ValueError(f"--budget-min must be >= 0 and --noise-target > 0, got {args.budget_min} and "
                         f"{args.noise_target}")
    if len(runs) < 3:
        raise ValueError(f"leave-one-out over {len(runs)} configurations: need at least 3")
    return runs


def noise_pct(pred) -> float | None:
    """A configuration's measurement noise (`noise_of` its samples). A step error below it is
    not the model's."""
    return noise_of(list(getattr(pred, "measured_samples", ()) or ()))


def _new_run_dir(parent: str) -> Path:
    base = Path(parent) / f"{time.strftime('%Y%m%d-%H%M%S')}-validate-sim"
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    run_dir.mkdir(parents=True)
    return run_dir


def run_on_testbed(args: argparse.Namespace) -> int:
    """`--address`: the testbed validation (`psrec.commands.validate_sim.testbed`)."""
    from psrec.cluster.config import TestbedError
    from psrec.cluster.testbed import find_by_address
    from psrec.commands.validate_sim.testbed import prediction_lines, validate_testbed
    from psrec.commands.validate_sim.testbed import summary_line as testbed_line
    from psrec.sim.validate import summary_line

    if find_by_address(args.address) is None:
        print(f"psrec validate-sim: {args.address} is not the head of a testbed this machine runs "
              "(`psrec cluster status`)", file=sys.stderr)
        return 2
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    bands = [b.strip() for b in args.bandwidths.split(",")]
    run_dir = _new_run_dir(args.run_dir)
    print(f"validate-sim: on the testbed at {args.address}; run directory {run_dir}", file=sys.stderr)
    try:
        v = validate_testbed(args.address, run_dir, names, bands, steps=args.steps or 20, batch=args.batch,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
    except (TestbedError, ValueError, RuntimeError, OSError) as e:
        print(f"psrec validate-sim: {e}", file=sys.stderr)
        return 2
    text = "\n".join([*prediction_lines(v), testbed_line(v), summary_line(v.summary)])
    (run_dir / "validation.txt").write_text(text + "\n")
    print(text)
    return 0


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from psrec.report.table import format_table
    from psrec.sim.validate import summary_line

    if args.address:
        return run_on_testbed(args)
    cores = args.cores or float(os.cpu_count() or 1)
    reuse = Path(args.reuse) if args.reuse else None
    try:
        runs = _runs_of(args, reuse)
    except (ValueError, OSError, KeyError) as e:
        print(f"psrec validate-sim: {e}", file=sys.stderr)
        return 2
    run_dir = _new_run_dir(args.run_dir)
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
                            repeats=args.repeats, noise_target=args.noise_target, budget_s=60.0 * args.budget_min,
                            max_repeats=args.max_repeats)
    mapped, preds, summary = validate(runs, paths, run_dir, cores, args.transport)
    # One decimal everywhere: run-to-run noise on a shared machine is larger than that.
    rows = [{k: (f"{v:.1f}" if isinstance(v, float) else v)
             for k, v in {**p.as_row(), "noise_pct": noise_pct(p), "runs": p.runs}.items()} for p in preds]
    table = format_table(rows, TABLE_COLUMNS, TABLE_HEADERS)
    from psrec.sim.validate import ranking_groups, ranking_holds, tie_rule

    lines = [table, ""]
    groups = [rs.group for rs in runs]
    for g, meas, pred in ranking_groups(preds, groups):
        w, b, net = g
        members = [p for p, pg in zip(preds, groups) if pg == g]
        ok, ties = ranking_holds(members)
        strict = ranking_holds(members, strict=True)[0]
        tied = f"; tied ({tie_rule(members)}): {', '.join(f'{x} ~ {y}' for x, y in ties)}" if ties else ""
        lines.append(f"ranking (workers {w}, batch {b}, net {net or 'none'}): measured {' < '.join(meas)}; "
                     f"predicted {' < '.join(pred)}{tied} -> {'holds' if ok else 'FLIPPED'}"
                     f"{' (a reversed pair predicted within 5%: flipped if strict)' if ok and not strict else ''}")
    line = summary_line(summary)
    text = "\n".join(lines + [line])
    (run_dir / "validation.txt").write_text(text + "\n")
    (run_dir / "validation.json").write_text(json.dumps({
        "runs": [dataclasses.asdict(r) for r in runs], "cores": cores, "transport": args.transport,
        "repeats": args.repeats, "runs_each": [len(ps) for ps in paths],
        "noise_target_pct": args.noise_target, "picked": [m["name"] for m in mapped],
        "reused": str(reuse) if reuse else None, "seconds": time.perf_counter() - t0,
        "summary": dataclasses.asdict(summary),
        "predictions": [{**p.as_row(), "cost": p.cost.as_row() if p.cost else None,
                         "calibration": p.calibration.to_dict() if p.calibration else None} for p in preds],
        "mapped": mapped}, indent=1, default=float) + "\n")
    print(text)
    return 0
