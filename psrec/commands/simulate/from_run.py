"""`psrec simulate --from-run RUN_DIR`: predict a measured run on the machine it ran on, phase by
phase against its measurement, then (with `--set cluster.*`, `--workers`, ...) anywhere else.

The run's `config.toml` gives the model, tables and key law (`psrec.commands.simulate.spec`), its
`results.json` (`psrec.core.result.RunResult`) the mode, workers, PS, batch and emulated
network; its measurement is mapped as `psrec calibrate` maps it (`psrec.sim.results_map`:
steady steps, spikes above twice the median left out). The constants are, in this order:
`--calibration FILE` (`psrec calibrate` over other runs: a forecast), `--calibration defaults`
(the uncalibrated `Calibration()`), else fitted on this run itself by `psrec calibrate`'s fit
(in-sample: it shows how well the model's form matches the run, not a forecast). The output
says which.

Elsewhere: the same model and batch on a cluster (`cluster.cores` = 0, the PS's own CPU,
a real network) with the `--set` keys applied; a GPU `cluster.hardware` gives the planner's
GPU job (`psrec.sim.placement`). The calibrated software and compute constants come along:
they describe this machine's CPU, so a CPU cluster of other machines is an extrapolation.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any

from psrec.config_io import ConfigError

__all__ = ["load_measured", "calibration_for", "phase_rows", "elsewhere_spec", "run_from"]

PHASE_COLUMNS = ["phase", "measured_ms", "predicted_ms", "err_pct"]


def load_measured(run_dir: str | Path, cores: float) -> tuple[Any, dict[str, Any], Any]:
    """(RunResult, the run mapped as `psrec calibrate` maps it, SimSpec of the run as it ran)."""
    from psrec.commands.simulate.spec import spec_from_config
    from psrec.config import load_config
    from psrec.core.result import RunResult
    from psrec.sim.results_map import load_run

    d = Path(run_dir)
    if not (d / "results.json").is_file() or not (d / "config.toml").is_file():
        raise ConfigError(f"--from-run {d}: expected a run directory with config.toml and results.json")
    res = RunResult.from_path(d)
    if res.mode == "local":
        raise ConfigError(f"--from-run {d}: a local run has no cluster to predict (take a ps-* or collective run)")
    mapped = load_run(d / "results.json", cores)
    cfg = load_config(d / "config.toml")
    net = str(res.extra.get("net") or "")
    spec = spec_from_config(cfg, mode=mapped["mode"], workers=res.workers,
                            ps=int(res.extra.get("num_ps") or cfg.ps.num_ps), batch_size=res.batch_size,
                            net=net, cores=cores, emulated=True, per_mode_compute=True)
    return res, mapped, spec


def calibration_for(choice: str | None, mapped: dict[str, Any], spec: Any) -> tuple[Any, str]:
    """(Calibration, a line saying which) for `--calibration` = FILE, "defaults" or None (module doc)."""
    from psrec.commands.validate_sim import _fill_sync_apply
    from psrec.sim.calibration import Calibration, CalibrationError, fit_calibration, load_calibration

    if choice == "defaults":
        return Calibration(), "calibration: the default constants (uncalibrated placeholders)"
    if choice:
        cal = load_calibration(choice)
        return cal, f"calibration: {choice} ({cal.source})"
    try:
        # One run cannot separate a per-step from a per-sample compute cost: through the origin.
        cal = fit_calibration([_fill_sync_apply(mapped, spec)], compute_intercept=False)
    except CalibrationError as e:
        return Calibration(), f"calibration: the default constants (fitting this run failed: {e})"
    cal = dataclasses.replace(cal, source=f"psrec calibrate's fit on {mapped['name']} alone")
    return cal, ("calibration: fitted on this run itself (psrec calibrate's fit, in-sample: how well the model's "
                 "form matches, not a forecast; --calibration FILE for one fitted on other runs)")


def _err(meas: float, pred: float) -> float:
    return 100 * (pred / meas - 1) if meas > 0 else math.nan


def phase_rows(mapped: dict[str, Any], cost: Any) -> list[dict[str, Any]]:
    """Measured vs predicted per phase (ms per worker step), then the step and comm share.
    Phases are those the mapping measures: PS compute/pull/push/wait; collective compute/
    all-to-all/all-reduce (exposed + hidden)/apply (EV lookup + update)/wait."""
    ph = mapped["phases"]
    if mapped["mode"] == "collective":
        coll = mapped["collective"]
        pairs = [("compute", ph["compute"], cost.compute), ("alltoall", coll["alltoall"]["seconds"], cost.alltoall),
                 ("allreduce (exposed+hidden)", coll["allreduce"]["seconds"], cost.allreduce + cost.hidden),
                 ("apply (lookup+update)", ph["apply"], cost.apply), ("wait", mapped["wait"], cost.wait)]
    else:
        pairs = [("compute", ph["compute"], cost.compute), ("pull", ph["pull"], cost.pull),
                 ("push", ph["push"], cost.push), ("wait", mapped["wait"], cost.wait + cost.apply)]
    m = mapped["measured"]
    rows = [{"phase": n, "measured_ms": 1e3 * a, "predicted_ms": 1e3 * b, "err_pct": _err(a, b)} for n, a, b in pairs]
    rows.append({"phase": "step", "measured_ms": 1e3 * m["step"], "predicted_ms": 1e3 * cost.total,
                 "err_pct": _err(m["step"], cost.total)})
    rows.append({"phase": "comm %", "measured_ms": 100 * m["comm_fraction"], "predicted_ms": 100 * cost.comm_fraction,
                 "err_pct": 100 * (cost.comm_fraction - m["comm_fraction"])})
    return rows


def elsewhere_spec(spec: Any, overrides: list[str]) -> Any:
    """The run's spec on a cluster (no shared cores, the PS's own CPU, a real network), then
    `overrides` (simulator keys, `psrec.sim.sweep.set_input`) and `cluster.hardware` applied."""
    from psrec.config_io import parse_value
    from psrec.sim.hardware import apply_hardware
    from psrec.sim.sweep import set_input

    out = dataclasses.replace(spec, cluster=dataclasses.replace(spec.cluster, cores=0.0),
                              options=dataclasses.replace(spec.options, software_at_server=True, emulated_net=False))
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        try:
            out = set_input(out, key.strip(), parse_value(value))
        except (ValueError, TypeError) as e:
            raise ConfigError(f"--set {item!r}: {e}") from None
    try:
        return apply_hardware(out)
    except ValueError as e:
        raise ConfigError(str(e)) from None


def run_from(args: argparse.Namespace, overrides: list[str]) -> int:
    """The `--from-run` path of `psrec simulate` (module doc)."""
    from psrec.report.table import format_table
    from psrec.sim.calibration import CalibrationError
    from psrec.sim.costs import simulate
    from psrec.sim.hardware import get_hardware
    from psrec.sim.validate import predict

    cores = args.cores or float(os.cpu_count() or 1)
    try:
        res, mapped, spec = load_measured(args.from_run, cores)
        cal, label = calibration_for(args.calibration, mapped, spec)
    except CalibrationError as e:
        raise ConfigError(str(e)) from None
    spec = dataclasses.replace(spec, calibration=cal)
    here = predict(spec, mapped["mode"], cal)
    rows = phase_rows(mapped, here)
    out: dict[str, Any] = {"run": str(args.from_run), "mode": mapped["mode"], "calibration": label,
                           "cores": cores, "here": rows}
    there = None
    if overrides:
        there = elsewhere_spec(spec, overrides)
        hw = get_hardware(there.cluster.hardware, there.hardware) if there.cluster.hardware else None
        if hw is not None and hw.kind == "gpu":
            from psrec.sim.placement import plan, plan_rows

            g = plan(there)
            out["elsewhere"] = {"gpu": {**g.step.as_row(), "step_s": g.step.total}, "fits": g.fits,
                                "problems": list(g.problems), "plan": plan_rows(g)}
        else:
            out["elsewhere"] = {m: {**c.as_row(), "step_s": c.total} for m, c in simulate(there).items()}
    if args.json:
        print(json.dumps(out, indent=2, default=float))
        return 0
    c = spec.cluster
    print(f"{args.from_run}: {res.mode}, {c.workers} workers, {c.ps} PS, batch {spec.model.batch_size}, "
          f"net {c.net.to_string() if c.net.bandwidth != math.inf else 'none'}; {len(spec.model.tables)} sim "
          f"tables, {spec.model.dense_params:,} dense params; on this machine ({cores:g} shared cores)")
    print(label)
    print(format_table(rows, PHASE_COLUMNS, ["phase", "measured ms", "predicted ms", "err % (comm: pts)"]))
    if mapped["measured"].get("emulated"):
        print(f"(the run booked its emulated network's {1e3 * mapped['measured']['emulated']:.2f} ms/step apart: "
              "measured pull/push/all-to-all exclude it, the step includes it; predicted phases include it)")
    if there is None:
        return 0
    tc = there.cluster
    print(f"\nelsewhere: {tc.workers} workers{' x ' + tc.hardware if tc.hardware else ''}, {tc.ps} PS, net "
          f"{tc.net.to_string()}, batch {there.model.batch_size}/worker; this calibration's constants "
          "(software, compute per sample) carried over")
    if "gpu" in out["elsewhere"]:
        e = out["elsewhere"]
        from psrec.commands.simulate import TABLE_COLUMNS

        print(format_table(e["plan"]))
        print(format_table([{k: v for k, v in e["gpu"].items() if k != "step_s"}], TABLE_COLUMNS))
        print("fits" if e["fits"] else "DOES NOT FIT: " + "; ".join(e["problems"][:4]))
    else:
        from psrec.commands.simulate import TABLE_COLUMNS

        print(format_table([{k: v for k, v in r.items() if k != "step_s"} for r in out["elsewhere"].values()],
                           TABLE_COLUMNS))
    return 0
