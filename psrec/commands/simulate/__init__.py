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

    [gpu]      sharding, storage, batch_size, compare_hardware, compare_gpus, ... (`GPUOptions`)
    [[hardware]]  user-defined nodes (`psrec.sim.hardware.Hardware` fields)
    [reference]  samples_per_s, source: a published throughput; the output gives the error against it

`cluster.hardware` names a node preset (`psrec.sim.hardware`): a CPU one sets the network; a GPU
one makes the job a GPU collective whose embedding placement the planner picks (printed per
table). With `gpu.compare_hardware` the CPU table is followed by GPU jobs of `gpu.compare_gpus`
sizes and the GPUs needed to match and double the CPU cluster.

A *training* config (the `psrec train` TOML: [data] [synthetic] [model] [embedding] [train] [ps]
[collective] ...) plus [cluster] (and [gpu] [calibration] [[hardware]]) is read too: tables, dims
and keys per sample from the data spec, dense parameters from the model registry, batch, workers
and PS from [data]/[ps] (`psrec.commands.simulate.spec`). `--from-run RUN_DIR` predicts a measured run
on this machine, phase by phase against its measurement, and with `--set cluster.*` elsewhere
(`psrec.commands.simulate.from_run`).

An unknown key is an error naming it; a key that fits neither schema says so.
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
    p.add_argument("--config", metavar="FILE",
                   help="simulator TOML ([cluster] [model] [data] [options] [calibration]) or a training config "
                        "(psrec train's TOML) plus [cluster]")
    p.add_argument("--from-run", metavar="RUN_DIR",
                   help="predict this measured run (config.toml + results.json) here, measured vs predicted per "
                        "phase; with --set cluster.workers=256 --set cluster.hardware=h100-ib400 also elsewhere")
    p.add_argument("--cores", type=float, default=0,
                   help="--from-run: CPU cores the run shared (default: this machine's, os.cpu_count())")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one input, e.g. cluster.workers=256 or model.tables.0.rows=1e10 (repeatable)")
    p.add_argument("--workers", type=int, help="cluster.workers")
    p.add_argument("--ps", type=int, help="cluster.ps")
    p.add_argument("--net", metavar="SPEC", help="cluster.net, e.g. bandwidth=10Gbit,latency=50us")
    p.add_argument("--rows", type=float, help="total embedding rows (split over the tables)")
    p.add_argument("--batch-size", type=int, help="model.batch_size (per worker)")
    p.add_argument("--calibration", metavar="FILE",
                   help="calibration JSON (psrec calibrate) replacing [calibration]; with --from-run also 'defaults' "
                        "(default there: fitted on the run itself)")
    p.add_argument("--mode", action="append", choices=MODE_NAMES, help="only these modes (repeatable)")
    p.add_argument("--sweep", metavar="KEY=VALUES",
                   help="vary one input: workers=1..1024:x2, ps=1,2,4,8, bandwidth=1Gbit,10Gbit, rows=1e6..1e10:x10")
    p.add_argument("--run-dir", default="runs", metavar="DIR", help="parent of the sweep's run directory")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    p.set_defaults(func=run)


def _read(path: str | Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None


def config_kind_of(path: str | Path | None) -> str:
    """`training` or `simulator` (`psrec.commands.simulate.spec.config_kind`); no file = simulator."""
    from psrec.commands.simulate.spec import config_kind

    data = _read(path)
    return config_kind(data, str(path)) if data else "simulator"


def load_spec(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """SimSpec from defaults <- TOML file <- `section.key=value` overrides (errors name the key).
    The file is a simulator spec or a training config plus [cluster] (module doc)."""
    from psrec.commands.simulate.spec import config_kind, training_spec
    from psrec.net import NetConfig, NetConfigError
    from psrec.sim.config import SimSpec
    from psrec.sim.sweep import set_input

    data = _read(path)
    if data and config_kind(data, str(path)) == "training":
        return training_spec(data, overrides, where=str(path))
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
        training = not args.from_run and config_kind_of(args.config) == "training"
        extra.append(f"{'data' if training else 'model'}.batch_size={args.batch_size}")
    if args.from_run:
        if args.config or args.sweep or args.net or args.rows is not None:
            raise ConfigError("--from-run takes the run's own config: not with --config, --sweep, --net or --rows "
                              "(use --set cluster.net=... for another network)")
        from psrec.commands.simulate.from_run import run_from

        return run_from(args, extra + list(args.overrides))
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
    from psrec.sim.hardware import apply_hardware, get_hardware

    try:
        spec = apply_hardware(spec)
        if args.sweep:
            return _run_sweep(args, spec, modes)
        if spec.cluster.hardware and get_hardware(spec.cluster.hardware, spec.hardware).kind == "gpu":
            return _run_gpu(args, spec)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    costs = simulate(spec, modes)
    if args.json:
        print(json.dumps({m: {**c.as_row(), "step_s": c.total} for m, c in costs.items()}, indent=2))
        return 0
    print(_describe(spec))
    print(format_table([c.as_row() for c in costs.values()], TABLE_COLUMNS))
    if spec.gpu.compare_hardware:
        base = simulate(spec, (spec.gpu.compare_baseline,))[spec.gpu.compare_baseline]
        _print_gpu_comparison(spec, base)
    return 0


def _run_gpu(args: argparse.Namespace, spec: Any) -> int:
    """A GPU job (cluster.hardware is a GPU node): the planner's placement and its step."""
    from psrec.report.table import format_table
    from psrec.sim.placement import plan, plan_rows

    c = plan(spec)
    if args.json:
        ref = spec.reference
        print(json.dumps({"collective": {**c.step.as_row(), "step_s": c.step.total}, "fits": c.fits,
                          "problems": list(c.problems), "plan": plan_rows(c),
                          "reference": {"samples_per_s": ref.samples_per_s, "source": ref.source,
                                        "error": ref.error(c.step.throughput)}}, indent=2, default=float))
        return 0
    h = spec.cluster
    print(f"{h.workers} x {h.hardware} ({h.workers_per_node}/node), batch {spec.model.batch_size}/GPU; "
          f"{spec.model.total_rows:.3g} rows in {len(spec.model.tables)} table(s), "
          f"{spec.model.dense_params:,} dense params")
    print(format_table(plan_rows(c)))
    print(format_table([c.step.as_row()], TABLE_COLUMNS))
    print(f"memory per GPU: {c.hbm_per_gpu / 1e9:.1f} GB HBM, {c.host_per_gpu / 1e9:.1f} GB host; "
          + ("fits" if c.fits else "DOES NOT FIT: " + "; ".join(c.problems[:4])))
    _print_reference(spec, c.step.throughput)
    return 0


def _print_reference(spec: Any, predicted: float) -> None:
    """The `[reference]` published throughput against the prediction (nothing without one)."""
    ref = spec.reference
    if ref.samples_per_s > 0:
        print(f"published {ref.samples_per_s:,.0f} samples/s ({ref.source or 'no source given'}); predicted "
              f"{predicted:,.0f}; error {100 * ref.error(predicted):+.1f}%")


def _print_gpu_comparison(spec: Any, base: Any) -> None:
    """The GPU jobs of `gpu.compare_*` against the CPU cluster's baseline mode."""
    from psrec.report.table import format_table
    from psrec.sim.gpu_compare import gpu_batch, gpu_row, gpus_needed

    gspec = gpu_batch(spec)
    target = base.throughput
    print(f"\nGPU jobs vs the CPU cluster ({spec.gpu.compare_baseline}: {target:,.0f} samples/s, "
          f"{spec.cluster.workers} workers); batch {gspec.model.batch_size}/GPU, planner placement")
    rows = [gpu_row(gspec, hw, n, target).as_row() for hw in spec.gpu.compare_hardware for n in spec.gpu.compare_gpus]
    print(format_table(rows))
    for hw in spec.gpu.compare_hardware:
        match, double = gpus_needed(gspec, hw, target), gpus_needed(gspec, hw, 2 * target)
        print(f"{hw}: {match if match else '> max_gpus'} GPUs match the CPU cluster, "
              f"{double if double else '> max_gpus'} double it")


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
