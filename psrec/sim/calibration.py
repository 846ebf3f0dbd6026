"""The simulator's fitted constants, their JSON file, and the least-squares fit from real runs.

The network model (`psrec.net`) gives the wire's latency and bandwidth; a `Calibration` adds
what the software costs on top of it (RPC overhead per message, serialisation per byte),
the compute per sample of each model, and the parameter server's apply cost.

## The results schema `fit_calibration` reads

One dict per run (a `results.json`, or one entry of a list of them). Times are seconds per
step; bytes and messages are per worker per step (both directions summed); apply counts are
per parameter server per step:

    {
      "model": "deepfm",             # the compute constant is per model (default: "default")
      "workers": 4, "ps": 2,         # informative
      "batch_size": 1024,            # samples per worker per step
      "phases":   {"pull": 0.012, "push": 0.009, "compute": 0.051, "apply": 0.004},
      "bytes":    {"pull": 2.1e6, "push": 1.9e6},
      "messages": {"pull": 4, "push": 2},
      "apply_rows": 30000,           # embedding rows a PS probes per apply (ps-sync: all the
                                     # rows of the W pushes it merges)
      "apply_values": 480000,        # float values updated per PS per apply (distinct rows *
                                     # dim + dense)
      "lookup_rows": 15000,          # rows the busiest PS looks up for one worker's pull
      "net": "bandwidth=10Gbit,latency=50us"   # optional: the phases include this emulated
                                               # network's time, which the fit subtracts
    }

A phase that a run did not measure may be missing or null; that run then does not take part
in that phase's fit.

Optional keys (`psrec.sim.results_map` writes them for psrec's own runs):

      "mode": "collective",          # lockstep modes (ps-sync, hybrid, collective) fit `jitter`
      "cores": 2,                    # CPU cores the run's processes shared: with W > cores
                                     # workers every CPU phase ran W / cores times slower
                                     # (processor sharing), which the fit divides out
      "collective": {"alltoall":  {"seconds": 0.02, "bytes": 4e5, "messages": 4, "calls": 4,
                                   "call_seconds": 0.012},
                     "allreduce": {"seconds": 0.01, "bytes": 1.2e6, "messages": 2, "calls": 1}},
                                     # per rank step: fits coll_alpha / coll_beta, and
                                     # coll_call when every all-to-all gives its calls
                                     # (an all-reduce's calls are not packed); with
                                     # call_seconds (inside the library) the library's
                                     # and the packing's constants are fitted apart
      "wait": 0.004,                 # lockstep wait per step (ps-sync: includes the apply)
      "measured": {"step": 0.1}      # seconds per step (for `jitter`: the step without its wait)

For a collective run, `phases.apply` (EV lookup + apply of the rows a rank owns, plus the dense
optimizer) and `apply_rows` (rows it owns and serves per step) fit `coll_apply_per_row`.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from psrec.net import NetConfig, transfer_time
from psrec.sim.contention import busy_processes, cpu_slowdown, expected_max_normal, sync_pull_queue

__all__ = ["Calibration", "fit_calibration", "load_calibration", "save_calibration", "CalibrationError"]


class CalibrationError(ValueError):
    """A calibration file or a results entry that cannot be used (the message names the key)."""


@dataclass(frozen=True)
class Calibration:
    """Fitted constants (seconds). Defaults are order-of-magnitude placeholders until
    `psrec calibrate` fits them from real runs.

    Args:
        alpha: software seconds per message (RPC framing, dispatch), added to the network latency.
        beta: software seconds per byte (serialisation, copies), added to 1/bandwidth.
        compute_per_sample: seconds of forward + backward per sample on one worker, per model
            name; `"default"` is used for a model without its own entry.
        apply_per_row: PS seconds per embedding row updated (hash lookup, version, freq).
        apply_per_call: PS seconds per apply on a shard whatever its size: one EV call per
            table and the dense optimizer's step (psrec: ~0.3 ms a table, ~0.5 ms for a
            75K-value Adam step, measured on this project's 2-core machine).
        apply_per_value: seconds per float value updated by the optimizer (PS or local).
        lookup_per_row: PS seconds per row served in a pull (hash probe, new-row creation,
            gather), on the busiest shard of the pull (`psrec.sim.traffic.ps_serve_time`).
        compute_per_step: seconds per step that do not grow with the batch (Python, op launch),
            per model name like `compute_per_sample`; a model without an entry has 0.
        coll_alpha: collective library (gloo) software seconds per message, on top of the
            network's latency (all-to-all and all-reduce).
        coll_beta: collective library software seconds per byte sent or received.
        coll_call: software seconds per all-to-all call on each rank, whatever the number of
            ranks: the Python around it (splitting and packing the payload by destination,
            the dispatch). `coll_alpha` is per peer message: an all-to-all on n ranks costs
            coll_call + (n - 1) coll_alpha before its bytes. An all-reduce bucket is one flat
            buffer that nothing packs: its calls cost their 2 (n - 1) messages only (fitted
            on psrec's runs, a shared per-call cost charged 1.6 ms to an all-reduce measured
            at 0.5-1.0 ms).
        alltoall_beta: an all-to-all's software seconds per byte on top of `coll_beta`: its
            payload is split by destination and packed before the call and unpacked after it
            (psrec: numpy copies per table and peer), which an all-reduce's flat buffer is not.
        coll_apply_per_row: collective mode, seconds per row a rank owns and serves in a step
            (EV lookup for every rank, then the update); 0 = apply_per_row + dim * apply_per_value.
        coll_apply_per_step: collective mode, a rank's lookup and apply seconds per step whatever
            its rows (per-table calls, the dense optimizer's step); with `coll_apply_per_row`.
        jitter: coefficient of variation of one worker's step; lockstep modes wait for the
            slowest of W, E[max] - mean = jitter * E[max of W standard normals] * step.
        jitter_by_mode: `jitter` per mode ("ps-sync", "hybrid", "collective"), where a mode's
            runs fitted their own: its ranks meet at different points and contend for
            different things (collective ranks for the cores, at every all-to-all; sync
            workers at the PS). One number over all modes charged psrec's 3-rank collective
            3.4 ms of lockstep wait a step where it measured 12-14 ms, and its hybrid runs
            wait at one all-reduce only. A mode without an entry uses `jitter`.
        source: where the numbers come from.

    Example:
        >>> Calibration(compute_per_sample={"default": 1e-4, "dcn": 2e-4}).compute_for("dcn")
        0.0002
    """

    alpha: float = 0.0  # uncalibrated: only the network's own latency counts
    beta: float = 0.0  # uncalibrated: only the network's own bandwidth counts
    # ~0.1 ms/sample: a ~1M-parameter CTR MLP (6 FLOP/param/sample fwd+bwd) on a few cores.
    compute_per_sample: dict[str, float] = field(default_factory=lambda: {"default": 1e-4})
    apply_per_row: float = 2e-7  # ~200 ns: one hash-table lookup plus bookkeeping per row
    apply_per_value: float = 2e-9  # ~2 ns: Adagrad reads 2 and writes 2 floats, memory-bound
    lookup_per_row: float = 0.0  # uncalibrated: the shard's lookup is left inside alpha/beta
    compute_per_step: dict[str, float] = field(default_factory=dict)  # uncalibrated: compute is all per sample
    coll_alpha: float = 0.0  # uncalibrated: only the network's own latency counts
    coll_beta: float = 0.0
    coll_call: float = 0.0  # uncalibrated: a call costs its messages only
    alltoall_beta: float = 0.0  # uncalibrated: an all-to-all's bytes cost what an all-reduce's do
    coll_apply_per_row: float = 0.0  # uncalibrated: the PS's per-row and per-value apply costs
    coll_apply_per_step: float = 0.0
    apply_per_call: float = 0.0  # uncalibrated: an apply costs its rows and values only
    jitter: float = 0.0  # uncalibrated: identical workers, no lockstep wait
    jitter_by_mode: dict[str, float] = field(default_factory=dict)
    source: str = "defaults"

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "apply_per_row", "apply_per_value", "lookup_per_row", "coll_alpha", "coll_beta",
                     "coll_call", "alltoall_beta", "coll_apply_per_row", "coll_apply_per_step", "apply_per_call",
                     "jitter"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and math.isfinite(v)):
                raise CalibrationError(f"calibration.{name} must be a finite number >= 0, got {v!r}")
        if not isinstance(self.compute_per_sample, Mapping):
            raise CalibrationError("calibration.compute_per_sample must be a table of model -> seconds")
        for k, v in self.compute_per_sample.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and math.isfinite(v)):
                raise CalibrationError(f"calibration.compute_per_sample.{k} must be a number >= 0, got {v!r}")
        if not isinstance(self.compute_per_step, Mapping):
            raise CalibrationError("calibration.compute_per_step must be a table of model -> seconds")
        for k, v in self.compute_per_step.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and math.isfinite(v)):
                raise CalibrationError(f"calibration.compute_per_step.{k} must be a number >= 0, got {v!r}")
        if not isinstance(self.jitter_by_mode, Mapping):
            raise CalibrationError("calibration.jitter_by_mode must be a table of mode -> coefficient of variation")
        for k, v in self.jitter_by_mode.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and math.isfinite(v)):
                raise CalibrationError(f"calibration.jitter_by_mode.{k} must be a number >= 0, got {v!r}")

    def compute_for(self, model: str) -> float:
        """Seconds per sample of `model` (falls back to `"default"`)."""
        if model in self.compute_per_sample:
            return float(self.compute_per_sample[model])
        if "default" in self.compute_per_sample:
            return float(self.compute_per_sample["default"])
        raise CalibrationError(f"calibration has no compute_per_sample for model {model!r} and no "
                               f"'default'; known: {', '.join(sorted(self.compute_per_sample))}")

    def compute_step_for(self, model: str) -> float:
        """Seconds per step of `model` that do not grow with the batch (0 without an entry)."""
        return float(self.compute_per_step.get(model, self.compute_per_step.get("default", 0.0)))

    def jitter_for(self, mode: str) -> float:
        """The lockstep jitter of `mode` (falls back to `jitter`)."""
        return float(self.jitter_by_mode.get(mode, self.jitter))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "calibration") -> Calibration:
        known = {f.name for f in fields(cls)}
        for k in data:
            if k not in known:
                raise CalibrationError(f"unknown calibration key {where + '.' + k!r}; "
                                       f"known: {', '.join(sorted(known))}")
        kwargs = dict(data)
        for k in ("compute_per_sample", "compute_per_step", "jitter_by_mode"):
            if k in kwargs:
                if not isinstance(kwargs[k], Mapping):
                    raise CalibrationError(f"{where}.{k}: expected a table of name -> number")
                kwargs[k] = dict(kwargs[k])
        return cls(**kwargs)


def save_calibration(cal: Calibration, path: str | Path) -> Path:
    """Write `cal` as JSON; `load_calibration` reads it back equal."""
    path = Path(path)
    path.write_text(json.dumps(cal.to_dict(), indent=2, sort_keys=True) + "\n")
    return path


def load_calibration(path: str | Path) -> Calibration:
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise CalibrationError(f"{path}: {e}") from None
    if not isinstance(data, dict):
        raise CalibrationError(f"{path}: expected a JSON object")
    return Calibration.from_dict(data, where=str(path))


def _get(run: Mapping[str, Any], *keys: str) -> float | None:
    node: Any = run
    for k in keys:
        if not isinstance(node, Mapping) or node.get(k) is None:
            return None
        node = node[k]
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        raise CalibrationError(f"results.{'.'.join(keys)}: expected a number, got {node!r}")
    return float(node)


def _nonneg_lstsq(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares min ||a x - y|| with x >= 0, for a few unknowns (<= 4): the NNLS optimum is
    the unconstrained least-squares solution on its own support (C. Lawson, R. Hanson, Solving
    Least Squares Problems, 1974, ch. 23), so the best feasible solution over every subset of
    the columns is it (2^n small solves)."""
    n = a.shape[1]
    best, best_err = np.zeros(n), float(np.sum(y ** 2))
    for mask in range(1, 1 << n):
        cols = [j for j in range(n) if mask >> j & 1]
        sub = a[:, cols]
        if not np.any(sub):
            continue
        x, *_ = np.linalg.lstsq(sub, y, rcond=None)
        if (x < 0).any():
            continue
        cand = np.zeros(n)
        cand[cols] = x
        err = float(np.sum((a @ cand - y) ** 2))
        if err < best_err - 1e-12 * max(best_err, 1e-300):
            best, best_err = cand, err
    return best


def _inline_apply(mode: str, apply: float | None, workers: float) -> float:
    """Seconds of a PS run's push phase that are the shard's apply, not communication: the
    whole apply in ps-async and hybrid (applied inline before the push returns), 1/W of the merged apply
    in ps-sync (only the last of W pushes waits for it); see `psrec.sim.costs`."""
    if apply is None:
        return 0.0
    if mode in ("ps-async", "hybrid"):
        return apply
    if mode == "ps-sync":
        return apply / max(workers, 1.0)
    return 0.0


def _scaled_lstsq(rows: list[tuple[float, ...]], y: list[float]) -> np.ndarray:
    a = np.array(rows, dtype=np.float64)
    # Scale the columns: messages ~1-100 and bytes ~1e6 differ by orders of magnitude.
    scale = np.maximum(np.abs(a).max(axis=0), 1e-300)
    return _nonneg_lstsq(a / scale, np.array(y, dtype=np.float64)) / scale


def fit_calibration(results: Sequence[Mapping[str, Any]], base: Calibration | None = None,
                    compute_intercept: bool = False) -> Calibration:
    """Least-squares constants from per-run measured phases (schema in the module docstring).

    Every CPU time t of a run is first divided by its `cpu_slowdown(n, cores)` (1 when the run
    gives no `cores`), n = `busy_processes` of the phase (W, or M for ps-sync's apply), so that
    the constants are those of one process on its own core.

    - communication: every measured pull and push phase is one equation
      `t - t_net = alpha * messages + beta * bytes (+ lookup_per_row * lookup_rows, pulls)`
      (alpha-beta, Hockney 1994; the busiest shard's lookup, `psrec.sim.traffic.ps_serve_time`),
      the push less the shard's apply it waited for (ps-async: the apply; ps-sync: apply / W),
      with `t_net` the emulated network's own `transfer_time` when the run names its `net`;
      `lookup_per_row` is fitted only when every pull gives its `lookup_rows` (else it keeps
      its base value and the lookup stays inside alpha/beta); likewise the collective's
      all-to-all and all-reduce, `t - t_net = coll_call * all-to-all calls + coll_alpha *
      messages + coll_beta * bytes (+ alltoall_beta * all-to-all bytes)`, with `coll_call`
      only when every all-to-all entry gives its `calls` (else it keeps its base value). Runs on one
      number of ranks cannot tell a call from a message (an all-to-all on 2 ranks sends one
      message per call); runs on two can. When every all-to-all entry also gives its
      `call_seconds` (the time inside the library), the two parts are fitted apart:
      `call_seconds = coll_alpha * messages + coll_beta * bytes` (an all-reduce's whole time
      counts as inside) and `t - call_seconds = coll_call * calls + alltoall_beta * bytes`,
      since a link's wire time overlaps the first and not the second (`psrec.comm.nic`);
    - compute: per model, `t_compute = c * batch_size` (through the origin), or with
      `compute_intercept` `t_compute = c0 + c * batch_size` when the model's runs have two or
      more batch sizes (c0 = `compute_per_step`: per-step overhead that a small batch shows);
    - apply: `t_apply = apply_per_row * apply_rows + apply_per_value * apply_values +
      apply_per_call` (PS runs); collective runs: `t_apply = coll_apply_per_row * apply_rows +
      coll_apply_per_step`. The per-call constant is the last column of the non-negative fit,
      so that runs of one size leave it at 0 rather than explain their whole apply by it;
    - jitter: lockstep runs, `wait = jitter * expected_max_normal(W) * (step - wait)`
      (ps-sync: its wait less (W - 1) / W of the apply, which W - 1 workers wait for), over
      all of them (`jitter`) and per mode (`jitter_by_mode`).

    The fits are constrained to constants >= 0. A constant without any equation keeps its
    value from `base` (default: `Calibration()`).

    Example:
        >>> runs = [{"batch_size": b, "phases": {"compute": 2e-5 * b}} for b in (64, 128)]
        >>> round(fit_calibration(runs).compute_per_sample["default"], 12)
        2e-05
    """
    base = base or Calibration()
    comm_rows, comm_y = [], []
    coll_rows, coll_y = [], []
    compute: dict[str, tuple[list[float], list[float]]] = {}
    apply_rows, apply_y = [], []
    capply_x, capply_y = [], []
    jit: dict[str, tuple[list[float], list[float]]] = {}
    for i, run in enumerate(results):
        if not isinstance(run, Mapping):
            raise CalibrationError(f"results[{i}]: expected an object, got {type(run).__name__}")
        net = run.get("net")
        netcfg = None
        if net is not None:
            netcfg = NetConfig.from_mapping(net, where=f"results[{i}].net")
        cores, workers = _get(run, "cores") or 0.0, _get(run, "workers") or 1.0
        slow = cpu_slowdown(workers, cores)
        apply_slow = cpu_slowdown(busy_processes(str(run.get("mode", "")), "apply", workers,
                                                 _get(run, "ps") or 1.0), cores)
        collective = run.get("mode") == "collective"
        mode = str(run.get("mode", ""))
        inline_apply = _inline_apply(mode, _get(run, "phases", "apply"), workers)
        for phase in ("pull", "push"):
            t = _get(run, "phases", phase)
            nbytes = _get(run, "bytes", phase)
            msgs = _get(run, "messages", phase)
            if t is None or nbytes is None or msgs is None:
                continue
            if phase == "push":
                t -= inline_apply  # the push waited for the shard's apply (psrec.sim.costs)
            if netcfg is not None:
                t -= transfer_time(netcfg, nbytes, msgs)
            # The pull waited for the busiest shard's lookup (psrec.sim.traffic.ps_serve_time).
            served = _get(run, "lookup_rows") if phase == "pull" else 0.0
            if served is not None and phase == "pull":
                # The lookups ran with busy_processes(mode, "serve") sharing the cores, and a
                # ps-sync pull also waits for the other released workers' lookups.
                serve_slow = cpu_slowdown(busy_processes(mode, "serve", workers, _get(run, "ps") or 1.0), cores)
                queue = sync_pull_queue(workers) if mode == "ps-sync" else 0.0
                served *= (1 + queue) * serve_slow / slow
            comm_rows.append((msgs, nbytes, served))
            comm_y.append(t / slow)
        for op in ("alltoall", "allreduce"):
            t = _get(run, "collective", op, "seconds")
            nbytes = _get(run, "collective", op, "bytes")
            msgs = _get(run, "collective", op, "messages")
            if t is None or nbytes is None or msgs is None:
                continue
            if netcfg is not None:
                t -= transfer_time(netcfg, nbytes / 2, msgs)  # a NIC sends and receives at once
            # coll_call and alltoall_beta are the all-to-all's packing by destination; an
            # all-reduce bucket is one flat buffer: its calls and bytes pay neither
            a2a = op == "alltoall"
            # the library's own part (inside the call); an all-reduce's is all of it
            call = _get(run, "collective", op, "call_seconds") if a2a else t
            coll_rows.append((msgs, nbytes, nbytes if a2a else 0.0,
                              _get(run, "collective", op, "calls") if a2a else 0.0,
                              None if call is None else min(call, t) / slow))
            coll_y.append(t / slow)
        t, b = _get(run, "phases", "compute"), _get(run, "batch_size")
        if t is not None and b is not None:
            xs, ys = compute.setdefault(str(run.get("model", "default")), ([], []))
            xs.append(b)
            ys.append(t / slow)
        t, r, v = _get(run, "phases", "apply"), _get(run, "apply_rows"), _get(run, "apply_values")
        if collective and t is not None and r is not None:
            capply_x.append((r, 1.0))
            capply_y.append(t / apply_slow)
        elif t is not None and r is not None and v is not None:
            apply_rows.append((r, v, 1.0))
            apply_y.append(t / apply_slow)
        wait, step = _get(run, "wait"), _get(run, "measured", "step")
        if run.get("mode") in ("ps-sync", "hybrid", "collective") and wait is not None and step is not None:
            # ps-sync: W - 1 of W workers wait at their next pull for the apply the last push started
            excess = wait - ((_get(run, "phases", "apply") or 0.0) * (workers - 1) / workers
                             if run.get("mode") == "ps-sync" else 0.0)
            xs, ys = jit.setdefault(mode, ([], []))
            xs.append(expected_max_normal(max(1, round(workers))) * (step - wait))
            ys.append(max(0.0, excess))

    alpha, beta, lookup = base.alpha, base.beta, base.lookup_per_row
    if comm_rows and all(r[2] is not None for r in comm_rows):
        alpha, beta, lookup = (float(x) for x in _scaled_lstsq(comm_rows, comm_y))
    elif comm_rows:  # some pull without its shard's rows: the lookup stays inside alpha/beta
        alpha, beta = (float(x) for x in _scaled_lstsq([r[:2] for r in comm_rows], comm_y))
    coll_alpha, coll_beta, a2a_beta, coll_call = base.coll_alpha, base.coll_beta, base.alltoall_beta, base.coll_call
    if coll_rows and all(r[3] is not None and r[4] is not None for r in coll_rows):
        # the time inside the library and the packing around it, apart: a link's wire time
        # overlaps the first only (psrec.comm.nic, psrec.sim.costs)
        coll_alpha, coll_beta = (float(x) for x in _scaled_lstsq([r[:2] for r in coll_rows], [r[4] for r in coll_rows]))
        a2a = [(r[3], r[2], y - r[4]) for r, y in zip(coll_rows, coll_y) if r[2] > 0]
        if a2a:
            coll_call, a2a_beta = (float(x) for x in _scaled_lstsq([r[:2] for r in a2a], [r[2] for r in a2a]))
    elif coll_rows and all(r[3] is not None for r in coll_rows):
        coll_alpha, coll_beta, a2a_beta, coll_call = (float(x) for x in _scaled_lstsq([r[:4] for r in coll_rows],
                                                                                        coll_y))
    elif coll_rows:  # some all-to-all without its calls: each call is its messages
        coll_alpha, coll_beta, a2a_beta = (float(x) for x in _scaled_lstsq([r[:3] for r in coll_rows], coll_y))
    per_sample = dict(base.compute_per_sample)
    per_step = dict(base.compute_per_step)
    for model, (xs, ys) in compute.items():
        bx, ty = np.array(xs), np.array(ys)
        if compute_intercept and len(set(xs)) >= 2:
            c0, c = _scaled_lstsq([(1.0, x) for x in xs], ys)
            per_step[model], per_sample[model] = float(c0), float(c)
        else:
            per_sample[model] = max(0.0, float(bx @ ty / (bx @ bx)))
    apply_per_row, apply_per_value, apply_call = base.apply_per_row, base.apply_per_value, base.apply_per_call
    if apply_rows:
        apply_per_row, apply_per_value, apply_call = (float(x) for x in _scaled_lstsq(apply_rows, apply_y))
    coll_apply, coll_apply_step = base.coll_apply_per_row, base.coll_apply_per_step
    if capply_x:
        coll_apply, coll_apply_step = (float(x) for x in _scaled_lstsq(capply_x, capply_y))

    def through_origin(xs: list[float], ys: list[float], default: float) -> float:
        x, y = np.array(xs), np.array(ys)
        return max(0.0, float(x @ y / (x @ x))) if len(x) and x @ x > 0 else default

    jitter = through_origin([x for xs, _ in jit.values() for x in xs], [y for _, ys in jit.values() for y in ys],
                            base.jitter)
    jitter_by_mode = dict(base.jitter_by_mode)
    jitter_by_mode.update({m: through_origin(xs, ys, jitter) for m, (xs, ys) in jit.items()})
    return Calibration(alpha=alpha, beta=beta, compute_per_sample=per_sample,
                       apply_per_row=apply_per_row, apply_per_value=apply_per_value, apply_per_call=apply_call,
                       lookup_per_row=lookup,
                       compute_per_step=per_step, coll_alpha=coll_alpha, coll_beta=coll_beta,
                       coll_call=coll_call, alltoall_beta=a2a_beta, coll_apply_per_row=coll_apply,
                       coll_apply_per_step=coll_apply_step, jitter=jitter, jitter_by_mode=jitter_by_mode,
                       source=f"fit_calibration over {len(results)} runs")
