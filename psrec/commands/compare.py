"""`psrec compare`: local, PS (async, sync), hybrid and collective training side by side.

Every mode trains the same model from the same seed on the same rows with the same
per-worker batch, then evaluates on the same held-out rows. One table (mode, samples/s,
step time mean/p50/p95, communication %, bytes per step, AUC, logloss) goes to the
terminal; the run directory gets each mode's own results.json (in a subdirectory),
`compare.json`, `report.md` and two pictures: where a step's time goes per mode, and
throughput per mode.

Every figure is the `RunResult`'s, by its one throughput rule: steady state, after
`train.warmup_steps` steps of each worker, start-up excluded (for a distributed mode, rows
over the slowest worker's summed step time). The picture stacks the steady-state mean step
by phase: its bars are the table's "step ms", its communication share the table's "comm %".
Bytes per step are payload bytes sent plus received by one worker in one step.

The embedded default is sized to finish in under 3 minutes on 2 cores, Ray start included
(`DEFAULT_ROWS`).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

from psrec.commands import add_config_args, add_run_args

MODES = ("local", "ps-async", "ps-sync", "hybrid", "collective")
# 40 steps of 1024 rows per worker on 2 workers (80 local steps): 5 modes, Ray start, 4 actor
# groups and 5 evaluations took 100-110 s on 2 cores shared with other jobs (load ~4), so
# the 3-minute budget holds with room; most of it is start-up (~60%), not training. A
# multiple of batch x workers, so that every mode trains exactly the same rows.
DEFAULT_ROWS = 81_920
DEFAULT_EVAL_ROWS = 20_480  # AUC standard error ~0.004 at this size: enough to rank modes 0.01 apart
COMM_PHASES = ("pull", "push", "allreduce", "alltoall")
WAIT_PHASES = ("wait",)
TABLE_COLUMNS = ["mode", "samples_per_s", "step_mean_ms", "step_p50_ms", "step_p95_ms", "comm_pct", "bytes_per_step",
                 "auc", "logloss"]
TABLE_HEADERS = ["mode", "samples/s", "step ms", "p50 ms", "p95 ms", "comm %", "bytes/step", "AUC", "logloss"]
DEFAULT_REPEATS = 3
# the figures a reader ranks modes by: each gets a 95% interval over the repeats, and the table
# marks ("~") a mode whose interval overlaps the next one's in that figure's order
RANKED = {"samples_per_s": "samples/s", "step_mean_ms": "step ms", "comm_pct": "comm %", "auc": "AUC"}
# the time-breakdown picture's parts, in stacking order: (label, phases, colour)
BREAKDOWN = (("data", ("data",), "#937860"), ("lookup / pull", ("lookup", "pull", "alltoall"), "#dd8452"),
             ("compute", ("compute",), "#4c72b0"), ("dense sync", ("allreduce",), "#c44e52"),
             ("push / apply", ("push", "apply"), "#55a868"), ("waiting", ("wait",), "#8c8c8c"))


def register(sub) -> None:
    p = sub.add_parser("compare", help="local vs PS (async, sync, hybrid) vs collective on the same job")
    p.add_argument("--workers", type=int, help="workers of the distributed modes (ps.workers; default 2)")
    p.add_argument("--ps", type=int, help="parameter servers of the PS modes (ps.num_ps; default 2)")
    p.add_argument("--net", help='emulate a network, e.g. "bandwidth=10Gbit,latency=50us" (ps.net)')
    p.add_argument("--model", help="registered model name (see `psrec models`; default deepfm)")
    p.add_argument("--rows", type=int, help=f"training rows (data.train_rows; default {DEFAULT_ROWS:,})")
    p.add_argument("--modes", help=f"comma list, a subset of {','.join(MODES)} (default all)")
    p.add_argument("--sharding", choices=["row", "table"],
                   help="collective mode: embedding sharding (default row)")
    p.add_argument("--no-overlap", action="store_true",
                   help="collective mode: all-reduce after backward instead of overlapping it")
    p.add_argument("--address", help="join this Ray cluster instead of starting a local Ray (ps.address)")
    p.add_argument("--name", help="run directory name (run.name)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS,
                   help=f"run every mode N times: medians with 95%% intervals, and the table marks the differences "
                        f"the repeats do not separate (default {DEFAULT_REPEATS})")
    add_config_args(p)
    add_run_args(p)
    p.set_defaults(func=run)


def _modes(text: str | None) -> list[str]:
    if not text:
        return list(MODES)
    out = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in out if m not in MODES]
    if bad:
        raise ValueError(f"--modes: unknown mode(s) {', '.join(bad)}; known: {', '.join(MODES)}")
    return out


def run(args: argparse.Namespace) -> int:
    from collective.config import collective_config_for
    from psrec.config import ConfigError, load_config
    from psrec.runs import make_run_dir

    extra = []
    if args.model:
        extra.append(f"model.name={args.model}")
    if args.rows:
        extra.append(f"data.train_rows={args.rows}")
    for flag, key in (("workers", "ps.workers"), ("ps", "ps.num_ps")):
        if getattr(args, flag) is not None:
            extra.append(f"{key}={getattr(args, flag)}")
    for flag, key in (("net", "ps.net"), ("address", "ps.address"), ("name", "run.name")):
        if getattr(args, flag):
            extra.append(f'{key}="{getattr(args, flag)}"')
    # The embedded default job: a file or --set may still change any of it.
    base = {"data": {"train_rows": DEFAULT_ROWS, "eval_rows": DEFAULT_EVAL_ROWS},
            "train": {"threads": 1}}  # one intra-op thread per process, as every actor has (ps.threads)
    try:
        modes = _modes(args.modes)
        cfg = load_config(args.config, extra + list(args.overrides), base=base)
        coll = collective_config_for(cfg)
        if args.sharding:
            coll = dataclasses.replace(coll, sharding=args.sharding)
        if args.no_overlap:
            coll = dataclasses.replace(coll, overlap=False)
        if args.repeats < 1:
            raise ValueError(f"--repeats {args.repeats}: need at least 1")
    except ConfigError:
        raise  # the CLI reports it, naming the key
    except ValueError as e:
        print(f"psrec compare: {e}", file=sys.stderr)
        return 2
    run_dir = make_run_dir(cfg, "compare")
    p = cfg.ps
    print(f"compare: {', '.join(modes)}; model {cfg.model.name}, {cfg.data.train_rows:,} training rows, "
          f"batch {cfg.data.batch_size} per worker, {p.workers} workers, {p.num_ps} PS"
          + (f", network {p.net}" if p.net else "") + f"; {args.repeats} repeat(s); run directory {run_dir}",
          file=sys.stderr)
    t0 = time.perf_counter()
    rows = compare(cfg, modes, run_dir, coll, repeats=args.repeats)
    wall = time.perf_counter() - t0
    print(table_text(rows))
    report = write_report(cfg, rows, run_dir, wall)
    print(f"report: {report}  (pictures: {', '.join(str(run_dir / f) for f in PICTURES)})")
    print(f"compare took {wall:.0f} s")
    return 0


# ------------------------------------------------------------------------------ running
def run_modes(cfg, modes: list[str], run_dir: Path, coll=None, log=None) -> dict:
    """Run `modes` one after another on `cfg`; each writes into `run_dir/<mode>/`.
    Returns mode -> `RunResult` (`psrec.compare`)."""
    return run_repeats(cfg, modes, run_dir, coll, log, repeats=1)[0]


def run_repeats(cfg, modes: list[str], run_dir: Path, coll=None, log=None, repeats: int = 1) -> list[dict]:
    """`run_modes` `repeats` times on one Ray and one metrics endpoint; repeat r writes into
    `run_dir/repeat-<r>/<mode>/` (into `run_dir/<mode>/` when there is one). Every repeat is the
    same job (same seed, rows and order): the spread is the run-to-run noise of the figures.
    Returns one mode -> `RunResult` per repeat."""
    import ray

    from collective.config import collective_config_for
    from collective.runner import run_collective
    from psrec.config import with_section
    from psrec.core.local import run_local
    from psrec.metrics.prom import serving
    from psrec.ps.runner import run_ps
    from psrec.raysession import ensure_ray

    p = cfg.ps
    # One cluster for every mode: the settings both architectures share come from [ps]
    # (what --workers, --net and --address set).
    coll = dataclasses.replace(coll or collective_config_for(cfg), workers=p.workers, net=p.net,
                               address=p.address, metrics_port=p.metrics_port)
    bs = cfg.data.batch_size
    # Every mode trains the same rows: the distributed modes take whole rounds of workers x batch.
    rounds = cfg.data.train_rows // (bs * p.workers) * cfg.data.epochs
    if cfg.train.max_steps:
        rounds = min(rounds, cfg.train.max_steps)
    started_ray = False
    if any(m != "local" for m in modes) and not ray.is_initialized():
        ensure_ray(p.address)
        started_ray = True
    out = []
    # one Prometheus endpoint for every mode (each run's series carry its mode and run_id)
    port = -1 if p.metrics_port < 0 else p.metrics_port or cfg.run.metrics_port
    try:
        with serving(port, cfg.run.metrics_address):
            for r in range(repeats):
                base = Path(run_dir) if repeats == 1 else Path(run_dir) / f"repeat-{r + 1}"
                if log is not None and repeats > 1:
                    log(f"repeat {r + 1} of {repeats}")
                results = {}
                for mode in modes:
                    sub = base / mode
                    t0 = time.perf_counter()
                    if mode == "local":
                        res = run_local(cfg, sub, max_steps=rounds * p.workers)
                    elif mode == "collective":
                        res = run_collective(cfg, sub, coll=coll)
                    else:
                        ps = dataclasses.replace(p, sync=mode == "ps-sync",
                                                 dense="allreduce" if mode == "hybrid" else "ps")
                        res = run_ps(with_section(cfg, ps=ps), sub)
                    res.extra["wall_seconds"] = time.perf_counter() - t0
                    results[mode] = res
                    if log is not None:
                        log(f"  {mode}: {res.samples_per_s:,.0f} samples/s, AUC {res.auc:.4f} "
                            f"({res.extra['wall_seconds']:.0f} s)")
                out.append(results)
    finally:
        if started_ray:
            ray.shutdown()
    return out


def compare(cfg, modes: list[str], run_dir: Path, coll=None, repeats: int = 1) -> list[dict[str, Any]]:
    """`run_repeats`, then one summary row per mode (the table's columns plus the time
    breakdown): each figure the median of its repeats, with its 95% interval under
    `intervals` (figure -> [median, low, high]) and each repeat's row under `per_repeat`."""
    runs = run_repeats(cfg, modes, run_dir, coll, log=lambda m: print(m, file=sys.stderr), repeats=repeats)
    rows = []
    for mode in modes:
        reps = []
        for results in runs:
            res = results[mode]
            row = summarize(mode, res)
            row["wall_seconds"] = res.extra["wall_seconds"]
            row["run_dir"] = res.path
            reps.append(row)
        rows.append(combine_repeats(reps))
    mark_unseparated(rows)
    return rows


def combine_repeats(reps: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from a mode's repeat rows: numbers (and the phases' ms) are the repeats' medians
    (integers stay integers), text is the first repeat's; `intervals` holds the ranked figures' 95% intervals."""
    from psrec.report.intervals import interval

    first = reps[0]
    row: dict[str, Any] = {}
    for k, v in first.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            med = interval([r[k] for r in reps]).median
            row[k] = int(round(med)) if isinstance(v, int) and math.isfinite(med) else med
        elif isinstance(v, dict) and all(isinstance(x, (int, float)) for x in v.values()):
            row[k] = {p: interval([r[k].get(p, 0.0) for r in reps]).median for p in v}  # phases_ms
        else:
            row[k] = v
    row["repeats"] = len(reps)
    row["intervals"] = {k: list(interval([r[k] for r in reps])) for k in RANKED}
    row["per_repeat"] = [{k: r[k] for k in (*TABLE_COLUMNS[1:], "wall_seconds", "run_dir")} for r in reps]
    return row


def mark_unseparated(rows: list[dict[str, Any]]) -> None:
    """Sets each row's `unseparated`: the ranked figures in which its repeats do not tell it
    apart from a neighbour (`unseparated_groups`)."""
    groups = unseparated_groups(rows)
    for r in rows:
        r["unseparated"] = [k for k, gs in groups.items() if any(r["mode"] in g for g in gs)]


def unseparated_groups(rows: list[dict[str, Any]]) -> dict[str, list[list[str]]]:
    """figure -> groups of modes the repeats do not separate: modes in that figure's order, a
    group growing while a mode's 95% interval overlaps the previous one's."""
    from psrec.report.intervals import Interval, separated

    out: dict[str, list[list[str]]] = {}
    if not rows or rows[0].get("repeats", 1) < 2:
        return out
    for key in RANKED:
        ranked = sorted((r for r in rows if math.isfinite(r["intervals"][key][0])),
                        key=lambda r: r["intervals"][key][0])
        groups: list[list[str]] = []
        for a, b in zip(ranked, ranked[1:]):
            if separated(Interval(*a["intervals"][key]), Interval(*b["intervals"][key])):
                continue
            if groups and groups[-1][-1] == a["mode"]:
                groups[-1].append(b["mode"])
            else:
                groups.append([a["mode"], b["mode"]])
        if groups:
            out[key] = groups
    return out


def _like(value: float, x: float) -> str:
    """`x` with the decimals `format_cell` gives `value` (a half-width reads like its figure)."""
    if not math.isfinite(x):
        return "-"
    v = abs(value) if math.isfinite(value) else 0.0
    return f"{x:,.0f}" if v >= 1000 else f"{x:.1f}" if v >= 10 else f"{x:.4f}"


def table_text(rows: list[dict[str, Any]]) -> str:
    """The terminal's table: with repeats, each ranked figure is "median ±half-width" (95%),
    "~" marking one the repeats do not separate from its neighbour; then one line per figure
    naming the groups that are not told apart."""
    from psrec.report.intervals import Interval
    from psrec.report.table import format_cell, format_table

    if not rows or rows[0].get("repeats", 1) < 2:
        return format_table(rows, TABLE_COLUMNS, TABLE_HEADERS)
    shown = []
    for r in rows:
        s = dict(r)
        for key in RANKED:
            iv = Interval(*r["intervals"][key])
            hw = iv.half_width if math.isfinite(iv.half_width) else math.nan
            s[key] = f"{format_cell(r[key])} ±{_like(r[key], hw)}" + (" ~" if key in r["unseparated"] else "  ")
        shown.append(s)
    lines = [format_table(shown, TABLE_COLUMNS, TABLE_HEADERS, right=list(RANKED)), "",
             f"medians of {rows[0]['repeats']} repeats, ± the 95% interval's half-width; "
             "~ the repeats do not separate it from its neighbour in that figure:"]
    groups = unseparated_groups(rows)
    for key, label in RANKED.items():
        if key in groups:
            lines.append(f"  {label}: " + "; ".join(" ~ ".join(g) for g in groups[key]))
    if not groups:
        lines.append("  (every ranked figure is separated)")
    return "\n".join(lines)


def summarize(mode: str, res) -> dict[str, Any]:
    """One table row from a mode's `RunResult`, plus its steady-state step split into compute,
    communication and waiting (and the emulated network's extra, when `--net` is set): the
    table and the picture read the same statistic, the steady-state mean step."""
    phases = res.phases  # seconds per worker step, steady state
    comm = sum(v for k, v in phases.items() if k in COMM_PHASES)
    wait = sum(v for k, v in phases.items() if k in WAIT_PHASES)
    compute = sum(v for k, v in phases.items() if k not in COMM_PHASES + WAIT_PHASES)
    live = [w for w in res.per_worker if w.get("steady_steps")]
    steady = sum(w["steady_steps"] for w in live)
    emu = sum(w.get("steady_emulated_seconds", 0.0) for w in live) / steady if steady else 0.0
    return {
        "mode": mode,
        "samples_per_s": res.samples_per_s,
        "step_mean_ms": res.step_mean_ms,
        "step_p50_ms": res.step_p50_ms,
        "step_p95_ms": res.step_p95_ms,
        "comm_pct": 100.0 * res.comm_fraction,
        "bytes_per_step": int(round(res.bytes_per_step)),
        "auc": res.auc,
        "logloss": res.logloss,
        "phases_ms": {k: 1e3 * v for k, v in phases.items()},  # per worker step, steady state
        "compute_ms": 1e3 * compute,  # per worker step, steady state: they sum to step_mean_ms
        "comm_ms": 1e3 * comm,
        "wait_ms": 1e3 * wait,
        "emulated_net_ms": 1e3 * emu,
        "emulated_comm_pct": 100.0 * res.emulated_comm_fraction,
        "warmup_steps": res.warmup_steps,
        "workers": res.workers,
        "train_rows": res.train_rows,
    }


# ------------------------------------------------------------------------------ report
PICTURES = ("time_breakdown.png", "throughput.png")


def write_report(cfg, rows: list[dict[str, Any]], run_dir: Path, wall: float) -> Path:
    """compare.json, report.md and the pictures; returns report.md's path."""
    from psrec.runs import _clean

    run_dir = Path(run_dir)
    (run_dir / "compare.json").write_text(json.dumps(_clean({"modes": rows, "wall_seconds": wall}), indent=2) + "\n")
    _plot_breakdown(rows, run_dir / PICTURES[0])
    _plot_throughput(rows, run_dir / PICTURES[1])
    p = cfg.ps
    emulated = any(r["emulated_net_ms"] > 0 for r in rows)
    lines = [
        f"# psrec compare: {cfg.model.name}",
        "",
        f"{cfg.data.train_rows:,} training rows (batch {cfg.data.batch_size} per worker), "
        f"{rows[0]['train_rows'] if rows else 0:,} trained per mode, "
        f"evaluated on {cfg.data.eval_rows:,} held-out rows; "
        f"{p.workers} workers, {p.num_ps} parameter servers; seed {cfg.train.seed}"
        + (f"; emulated network `{p.net}`" if p.net else "") + f". The whole comparison took {wall:.0f} s.",
        "",
        "```",
        table_text(rows),
        "```",
        "",
        "![where a step's time goes](time_breakdown.png)",
        "",
        "![throughput](throughput.png)",
        "",
        "How to read it:",
        "",
        f"- every figure is steady state: each worker's first {rows[0]['warmup_steps'] if rows else 0} steps "
        "(warm-up) are left out.",
        "- samples/s: training rows per second of training (start-up excluded; for a distributed",
        "  mode, rows over the slowest worker's summed step time).",
        "- step ms: one worker's mean step (the picture's bar), p50/p95 its spread; comm %: communication",
        "  time over step time (PS: pull and push; hybrid: plus the dense all-reduce; collective:",
        "  all-to-all and the exposed all-reduce).",
        "- bytes/step: payload bytes one worker sent and received in one step.",
        "- waiting: sync barriers (PS sync: a shard holding a pull until the step is applied;",
        "  collective: the step's first rendezvous).",
        "- the picture splits each step into data (reading and batching), lookup / pull (the embedding",
        "  rows: a local lookup, a PS pull or the all-to-all), compute (forward and backward), dense sync",
        "  (the all-reduce), push / apply (gradients to the PS, optimizer steps) and waiting.",
    ]
    if rows and rows[0].get("repeats", 1) > 1:
        lines += [f"- repeats: every mode ran {rows[0]['repeats']} times, the same job each time (same seed, rows",
                  "  and order); a figure is the repeats' median, ± the half-width of the 95% t interval of",
                  "  their mean (the picture's whiskers). \"~\" marks a figure the repeats do not separate from",
                  "  the neighbouring mode's: their intervals overlap, so the order between them may be noise.",
                  "  AUC varies only where training is not deterministic (asynchronous updates)."]
    if emulated:
        lines += ["- emulated network: the time the measured bytes would add on the emulated network "
                  "(hatched in the picture; not part of the measured step times)."]
    lines += ["", "Per-mode results (phases, per worker, per shard) are in each mode's `results.json`:", ""]
    lines += [f"- `{r['mode']}`: `{Path(r['run_dir']).name}/results.json`" for r in rows]
    path = run_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _breakdown_ms(row: dict[str, Any]) -> dict[str, float]:
    """The picture's parts of one row's steady-state mean step, in ms (they sum to step ms)."""
    phases = row.get("phases_ms", {})
    out = {label: sum(phases.get(ph, 0.0) for ph in names) for label, names, _ in BREAKDOWN}
    known = {ph for _, names, _ in BREAKDOWN for ph in names}
    out["compute"] += sum(v for ph, v in phases.items() if ph not in known)  # a phase of a new mode
    return out


def _plot_breakdown(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [r["mode"] for r in rows]
    x = range(len(rows))
    parts = [_breakdown_ms(r) for r in rows]
    fig, ax = plt.subplots(figsize=(9.5, 4.6))
    bottom = [0.0] * len(rows)
    top = 0.0
    for label, _, color in BREAKDOWN:
        vals = [p[label] for p in parts]
        if not any(vals):
            continue
        ax.bar(x, vals, bottom=bottom, label=label, color=color, edgecolor="white")
        bottom = [b + v for b, v in zip(bottom, vals)]
    emu = [r["emulated_net_ms"] for r in rows]
    if any(emu):
        ax.bar(x, emu, bottom=bottom, label="emulated network", color="#dd8452", hatch="//", alpha=0.45,
               edgecolor="#8a4a1f")
        bottom = [b + v for b, v in zip(bottom, emu)]
    if rows and rows[0].get("repeats", 1) > 1:  # the step time's 95% interval over the repeats
        lo = [max(0.0, r["step_mean_ms"] - r["intervals"]["step_mean_ms"][1]) for r in rows]
        hi = [max(0.0, r["intervals"]["step_mean_ms"][2] - r["step_mean_ms"]) for r in rows]
        ax.errorbar(x, [r["step_mean_ms"] for r in rows], yerr=[lo, hi], fmt="none", ecolor="black", capsize=4,
                    lw=1, label=f"95% interval ({rows[0]['repeats']} repeats)")
        top = max(r["step_mean_ms"] + h for r, h in zip(rows, hi))
    for i, r in enumerate(rows):
        if r["comm_pct"] > 0:
            ax.text(i + 0.42, bottom[i], f"{r['comm_pct']:.0f}% comm", ha="right", va="bottom", fontsize=8)
    ax.set_xticks(list(x), modes)
    ax.set_ylim(0, max(bottom + [top, 1.0]) * 1.15)  # room for the labels and whiskers
    warm = rows[0]["warmup_steps"] if rows else 0
    ax.set_ylabel(f"ms per worker step (steady-state mean,\nafter {warm} warm-up steps)")
    ax.set_title("Where a step's time goes")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the bars, never over them
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _plot_throughput(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    modes = [r["mode"] for r in rows]
    vals = [r["samples_per_s"] if math.isfinite(r["samples_per_s"]) else 0.0 for r in rows]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    yerr = None
    if rows and rows[0].get("repeats", 1) > 1:
        yerr = [[max(0.0, v - r["intervals"]["samples_per_s"][1]) for v, r in zip(vals, rows)],
                [max(0.0, r["intervals"]["samples_per_s"][2] - v) for v, r in zip(vals, rows)]]
    bars = ax.bar(range(len(rows)), vals, color="#55a868", yerr=yerr, capsize=4)
    for b, v, r in zip(bars, vals, rows):
        ax.text(b.get_x() + b.get_width() / 2, v, f"{v:,.0f}\nAUC {r['auc']:.3f}", ha="center", va="bottom",
                fontsize=8)
    ax.set_xticks(range(len(rows)), modes)
    ax.set_ylabel("training samples / s")
    ax.set_title("Throughput (same model, data, seed and rows)")
    ax.set_ylim(0, max(vals + [1.0]) * 1.2)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
