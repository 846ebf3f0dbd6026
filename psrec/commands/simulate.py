"""`psrec simulate`: step time, its breakdown and throughput of ps-async, ps-sync, hybrid and
collective training on a cluster described by flags and/or a TOML file; `--sweep` varies one
input and writes a table and a plot into a run directory.

The TOML file has the sections of `psrec.sim.config.SimSpec`:

    [cluster]  workers, ps, workers_per_node, worker_speed, straggler_*, ps_imbalance, cores,
               net = "bandwidth=10Gbit,latency=50us"  (or a [cluster.net] table)
    [model]    name, dense_params, batch_size, compute_per_sample; [[model.tables]] name, rows, dim,
               keys_per_sample, fields
    [data]     zipf, zipf_per_table
    [options]  partitioner, dense_on_ps, allreduce, alltoall, overlap_ps, overlap_allreduce,
               bucket_bytes, alltoall_payload, software_at_server
    [calibration]  alpha, beta, apply_per_row, apply_per_value, lookup_per_row, coll_alpha, coll_beta,
               coll_apply_per_row, jitter, [calibration.compute_per_sample], [calibration.compute_per_step]
               (`--calibration FILE` replaces the section with `psrec calibrate`'s output)

An unknown key is an error naming it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from psrec.config_io import ConfigError, from_mapping, parse_value, to_mapping, to_toml

MODE_NAMES = ("ps-async", "ps-sync", "hybrid", "collective")
TABLE_COLUMNS = ["mode", "step_ms", "compute_ms", "pull_ms", "push_ms", "allreduce_ms", "alltoall_ms",
                 "apply_ms", "wait_ms", "hidden_ms", "comm_pct", "samples_per_s", "mem_GB_per_node",
                 "bottleneck"]
_PRINTED_SWEEP_ROWS = 40  # longer sweeps print a spread of rows; the full table is in the run dir


def register(sub) -> None:
    p = sub.add_parser("simulate", help="cost model: where a PS / hybrid / collective step's time goes",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--config", metavar="FILE", help="TOML file with [cluster] [model] [data] [options] [calibration]")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one input, e.g. cluster.workers=256 or model.tables.0.rows=1e10 (repeatable)")
    p.add_argument("--workers", type=int, help="cluster.workers")
    p.add_argument("--ps", type=int, help="cluster.ps")
    p.add_argument("--net", metavar="SPEC", help="cluster.net, e.g. bandwidth=10Gbit,latency=50us")
    p.add_argument("--rows", type=float, help="total embedding rows (split over the tables)")
    p.add_argument("--batch-size", type=int, help="model.batch_size (per worker)")
    p.add_argument("--calibration", metavar="FILE", help="calibration JSON (psrec calibrate) replacing [calibration]")
    p.add_argument("--mode", action="append", choices=MODE_NAMES, help="only these modes (repeatable)")
    p.add_argument("--sweep", metavar="KEY=VALUES",
                   help="vary one input: workers=1..1024:x2, ps=1,2,4,8, bandwidth=1Gbit,10Gbit, rows=1e6..1e10:x10")
    p.add_argument("--run-dir", default="runs", metavar="DIR", help="parent of the sweep's run directory")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.set_defaults(func=run)


def load_spec(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """SimSpec from defaults <- TOML file <- `section.key=value` overrides (errors name the key)."""
    from psrec.net import NetConfig, NetConfigError
    from psrec.sim.config import SimSpec
    from psrec.sim.sweep import set_input

    data: dict[str, Any] = {}
    if path is not None:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from None
    cluster = data.get("cluster")
    if isinstance(cluster, dict) and "net" in cluster:
        cluster = dict(cluster)
        try:
            cluster["net"] = NetConfig.from_mapping(cluster["net"], where="cluster.net")
        except NetConfigError as e:
            raise ConfigError(str(e)) from None
        data = {**data, "cluster": cluster}
    spec = from_mapping(SimSpec, data)
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        val = parse_value(value)
        try:
            spec = set_input(spec, key.strip(), val)
        except (ValueError, TypeError) as e:
            raise ConfigError(f"--set {item!r}: {e}") from None
    return spec


def spec_to_toml(spec: Any) -> str:
    """The resolved spec as a TOML file that `load_spec` reads back to an equal spec."""
    data = to_mapping(spec)
    data["cluster"]["net"] = spec.cluster.net.to_string()
    tables = data["model"].pop("tables")
    text = to_toml(data)
    for t in tables:  # to_toml writes no arrays of tables
        text += "\n[[model.tables]]\n" + to_toml(t)
    return text


def _describe(spec: Any) -> str:
    from psrec.sim.costs import ps_traffic

    c, m = spec.cluster, spec.model
    t = ps_traffic(spec)
    return (f"{c.workers} workers ({c.workers_per_node}/node), {c.ps} PS, net {c.net.to_string()}; "
            f"{m.total_rows:.3g} rows in {len(m.tables)} table(s), {m.dense_params:,} dense params, "
            f"batch {m.batch_size}/worker; per worker step: {t.keys:,.0f} distinct keys, "
            f"pull {t.request_bytes / 1e6 + t.response_bytes / 1e6:.2f} MB, push {t.push_bytes / 1e6:.2f} MB, "
            f"PS imbalance {t.imbalance:.3f} ({spec.options.partitioner})")


def run(args: argparse.Namespace) -> int:
    from psrec.report.table import format_table
    from psrec.sim.calibration import CalibrationError, load_calibration
    from psrec.sim.costs import simulate

    extra = []
    if args.workers is not None:
        extra.append(f"cluster.workers={args.workers}")
    if args.ps is not None:
        extra.append(f"cluster.ps={args.ps}")
    if args.rows is not None:
        extra.append(f"rows={args.rows!r}")
    if args.batch_size is not None:
        extra.append(f"model.batch_size={args.batch_size}")
    try:
        spec = load_spec(args.config, extra + list(args.overrides))
        if args.net:
            from dataclasses import replace

            from psrec.net import parse_net

            spec = replace(spec, cluster=replace(spec.cluster, net=parse_net(args.net, where="--net")))
        if args.calibration:
            from dataclasses import replace

            spec = replace(spec, calibration=load_calibration(args.calibration))
    except (CalibrationError, ValueError) as e:
        if isinstance(e, ConfigError):
            raise
        raise ConfigError(str(e)) from None
    modes = tuple(args.mode) if args.mode else MODE_NAMES
    if args.sweep:
        return _run_sweep(args, spec, modes)
    costs = simulate(spec, modes)
    if args.json:
        print(json.dumps({m: {**c.as_row(), "step_s": c.total} for m, c in costs.items()}, indent=2))
        return 0
    print(_describe(spec))
    print(format_table([c.as_row() for c in costs.values()], TABLE_COLUMNS))
    return 0


def _run_sweep(args: argparse.Namespace, spec: Any, modes: tuple[str, ...]) -> int:
    from psrec.report.table import format_table
    from psrec.sim.sweep import parse_values, resolve_key, set_input, sweep

    key, sep, text = args.sweep.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--sweep {args.sweep!r}: expected KEY=VALUES, e.g. workers=1..1024:x2")
    try:
        values = parse_values(key, text)
        set_input(spec, key, values[0])  # an unknown key fails here, before the loop
    except (ValueError, TypeError) as e:
        raise ConfigError(f"--sweep {args.sweep!r}: {e}") from None
    t0 = time.perf_counter()
    result = sweep(spec, key, values, modes)
    elapsed = time.perf_counter() - t0
    rows = result.rows()
    base = Path(args.run_dir) / f"{time.strftime('%Y%m%d-%H%M%S')}-simulate-sweep-{key.replace('.', '_')}"
    run_dir, n = base, 1
    while run_dir.exists():  # two sweeps in the same second
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    run_dir.mkdir(parents=True)
    full = format_table(rows)
    (run_dir / "sweep.txt").write_text(full + "\n")
    (run_dir / "spec.toml").write_text(spec_to_toml(spec))
    (run_dir / "results.json").write_text(json.dumps(
        {"key": key, "path": resolve_key(key), "values": list(result.values), "seconds": elapsed,
         "modes": {m: [{**c.as_row(), "step_s": c.total} for c in cs] for m, cs in result.costs.items()}},
        indent=1, default=float) + "\n")
    plot = _plot(result, run_dir / "sweep.png")
    if args.json:
        print(json.dumps(rows, indent=1, default=float))
    else:
        print(_describe(spec))
        shown = rows if len(rows) <= _PRINTED_SWEEP_ROWS else [
            rows[round(i * (len(rows) - 1) / (_PRINTED_SWEEP_ROWS - 1))] for i in range(_PRINTED_SWEEP_ROWS)]
        print(format_table(shown))
        if len(shown) < len(rows):
            print(f"({len(shown)} of {len(rows)} rows shown; all in {run_dir / 'sweep.txt'})")
    print(f"swept {key} over {len(values)} values in {elapsed:.2f} s", file=sys.stderr if args.json else sys.stdout)
    print(f"run directory: {run_dir} (sweep.txt, sweep.png{'' if plot else ' skipped'}, results.json, spec.toml)",
          file=sys.stderr if args.json else sys.stdout)
    return 0


def _plot(result: Any, path: Path) -> Path | None:
    """Throughput and communication fraction of each mode against the swept input."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return None
    xs = list(result.values)
    if not all(isinstance(x, (int, float)) for x in xs):
        xs_plot: list[Any] = list(range(len(xs)))
        labels = [str(x) for x in xs]
    else:
        xs_plot, labels = xs, []
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for mode, cs in result.costs.items():
        ax1.plot(xs_plot, [c.throughput for c in cs], marker="." if len(xs) <= 64 else None, label=mode)
        ax2.plot(xs_plot, [100 * c.comm_fraction for c in cs], marker="." if len(xs) <= 64 else None, label=mode)
    numeric = not labels
    wide = numeric and min(xs) > 0 and max(xs) / min(xs) >= 20
    for ax in (ax1, ax2):
        ax.set_xlabel(result.key)
        if wide:
            ax.set_xscale("log")
        if labels:
            ax.set_xticks(xs_plot, labels, rotation=30)
        ax.grid(True, alpha=0.3)
    ax1.set_ylabel("samples / s (whole job)")
    ax1.set_yscale("log")
    ax2.set_ylabel("communication, % of step time")
    ax2.set_ylim(0, 100)
    ax2.axhline(50, color="grey", lw=0.8, ls="--")
    ax1.legend()
    fig.suptitle(f"psrec simulate: sweep over {result.key}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
