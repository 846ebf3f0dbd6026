"""Sweeps: the step costs of every mode as one input varies (workers, PS, bandwidth, rows, ...).

A sweep is a loop over `set_input(spec, key, value)` and `simulate`: every cost function is
closed-form, and the one numerical part (distinct keys of a Zipf batch over up to 1e10 rows,
`psrec.sim.keys`) is memoised, so a 1024-point sweep costs milliseconds per point.

Keys are dotted paths into `SimSpec` (`cluster.workers`, `model.tables.0.rows`,
`cluster.net.bandwidth`, `options.allreduce`) or these short names:

    workers ps workers_per_node bandwidth latency intra_bandwidth intra_latency worker_speed
    batch_size dense_params zipf straggler_fraction straggler_slowdown
    rows (total embedding rows, split over the tables in their current proportions)
    dim keys_per_sample (every table)
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from psrec.net import NetConfig, format_bandwidth, format_duration, parse_bandwidth, parse_duration, parse_net
from psrec.sim.config import SimSpec
from psrec.sim.costs import MODES, StepCost, simulate

__all__ = ["SHORTHANDS", "resolve_key", "set_input", "get_input", "parse_values", "Sweep", "sweep"]

SHORTHANDS = {
    "workers": "cluster.workers", "ps": "cluster.ps", "workers_per_node": "cluster.workers_per_node",
    "bandwidth": "cluster.net.bandwidth", "latency": "cluster.net.latency",
    "intra_bandwidth": "cluster.net.intra_bandwidth", "intra_latency": "cluster.net.intra_latency",
    "worker_speed": "cluster.worker_speed", "straggler_fraction": "cluster.straggler_fraction",
    "straggler_slowdown": "cluster.straggler_slowdown",
    "batch_size": "model.batch_size", "dense_params": "model.dense_params", "zipf": "data.zipf",
    "rows": "model.rows", "dim": "model.dim", "keys_per_sample": "model.keys_per_sample",
}
_ALL_TABLES = ("rows", "dim", "keys_per_sample")  # model.<name>: every table at once


def resolve_key(key: str) -> str:
    """A short name -> its dotted path; dotted paths pass through."""
    return SHORTHANDS.get(key, key)


def _coerce(current: Any, value: Any, path: str) -> Any:
    """`value` converted to the type of the field's `current` value (strings parsed, units read)."""
    last = path.rsplit(".", 1)[-1]
    if isinstance(current, NetConfig):
        if isinstance(value, NetConfig):
            return value
        return parse_net(str(value), where=path)
    if isinstance(value, str) and "bandwidth" in last:
        return parse_bandwidth(value, path)
    if isinstance(value, str) and "latency" in last:
        return parse_duration(value, path)
    if isinstance(current, bool):
        if isinstance(value, str):
            if value.lower() not in ("true", "false"):
                raise ValueError(f"{path}: expected true or false, got {value!r}")
            return value.lower() == "true"
        return bool(value)
    if isinstance(current, int):
        v = float(value)
        if not v.is_integer():
            raise ValueError(f"{path}: expected an integer, got {value!r}")
        return int(v)
    if isinstance(current, float) or current is None:
        return float(value)
    if isinstance(current, str):
        return str(value)
    raise ValueError(f"{path}: cannot sweep a {type(current).__name__} value")


def _set(obj: Any, parts: list[str], value: Any, path: str) -> Any:
    head, rest = parts[0], parts[1:]
    if isinstance(obj, dict):  # e.g. calibration.compute_per_sample.<model>
        if rest:
            raise ValueError(f"{path}: {head!r} is below a plain value")
        return {**obj, head: _coerce(obj.get(head, 0.0), value, path)}
    if isinstance(obj, tuple):
        try:
            i = int(head)
            item = obj[i]
        except (ValueError, IndexError):
            raise ValueError(f"{path}: {head!r} is not an index of a {len(obj)}-item list") from None
        return obj[:i] + (_set(item, rest, value, path) if rest else _coerce(item, value, path),) + obj[i + 1:]
    if not dataclasses.is_dataclass(obj):
        raise ValueError(f"{path}: {head!r} is below a plain value")
    names = [f.name for f in dataclasses.fields(obj)]
    if head not in names:
        if head in _ALL_TABLES and not rest and hasattr(obj, "tables"):
            return _set_all_tables(obj, head, value, path)
        raise ValueError(f"unknown input {path!r}: {head!r} is not one of {', '.join(names)}")
    current = getattr(obj, head)
    new = _set(current, rest, value, path) if rest else _coerce(current, value, path)
    return dataclasses.replace(obj, **{head: new})


def _set_all_tables(model: Any, name: str, value: Any, path: str) -> Any:
    tables = model.tables
    if name == "rows":  # total rows, in the tables' current proportions
        total = float(value)
        have = sum(t.rows for t in tables)
        new = tuple(dataclasses.replace(t, rows=max(1, round(total * t.rows / have))) for t in tables)
    else:
        new = tuple(dataclasses.replace(t, **{name: _coerce(getattr(t, name), value, path)}) for t in tables)
    return dataclasses.replace(model, tables=new)


def set_input(spec: SimSpec, key: str, value: Any) -> SimSpec:
    """`spec` with one input replaced (specs are frozen: a new spec comes back, validated).

    >>> s = set_input(SimSpec(), "bandwidth", "25Gbit")
    >>> s.cluster.net.bandwidth
    3125000000.0
    >>> set_input(SimSpec(), "rows", 1e10).model.total_rows
    10000000000
    >>> set_input(SimSpec(), "cluster.net", "bandwidth=25Gbit,latency=10us").cluster.net.latency
    1e-05
    >>> set_input(SimSpec(), "calibration.compute_per_sample.dcn", 2e-4).calibration.compute_per_sample
    {'default': 0.0001, 'dcn': 0.0002}
    """
    path = resolve_key(key)
    return _set(spec, path.split("."), value, path)


def get_input(spec: SimSpec, key: str) -> Any:
    """The current value of an input (for `rows`: the total rows)."""
    path = resolve_key(key)
    obj: Any = spec
    for part in path.split("."):
        if isinstance(obj, tuple):
            obj = obj[int(part)]
        elif part in _ALL_TABLES and hasattr(obj, "tables"):
            vals = [getattr(t, part) for t in obj.tables]
            return sum(vals) if part == "rows" else vals[0]
        else:
            obj = getattr(obj, part)
    return obj


def _number(text: str, key: str) -> float:
    last = resolve_key(key).rsplit(".", 1)[-1]
    text = text.strip()
    if "bandwidth" in last and not _is_number(text):
        return parse_bandwidth(text, key)
    if "latency" in last and not _is_number(text):
        return parse_duration(text, key)
    try:
        return float(text)
    except ValueError:
        raise ValueError(f"sweep {key}: {text!r} is not a number") from None


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def parse_values(key: str, text: str) -> list[Any]:
    """The values of `--sweep KEY=TEXT`.

    TEXT is a comma list (`1,2,4`, `10Gbit,25Gbit`, `ring,tree`), a range `LO..HI` (every
    integer), `LO..HI:xF` (geometric, factor F) or `LO..HI:+S` (step S); HI is included when
    the steps land on it.

    >>> parse_values("workers", "1..1024:x2")[-3:]
    [256, 512, 1024]
    >>> parse_values("rows", "1e8..1e10:x10")
    [100000000, 1000000000, 10000000000]
    >>> parse_values("bandwidth", "10Gbit,25Gbit")
    [1250000000, 3125000000]
    """
    text = text.strip()
    if ".." in text:
        rng, _, step = text.partition(":")
        lo_s, _, hi_s = rng.partition("..")
        lo, hi = _number(lo_s, key), _number(hi_s, key)
        if hi < lo:
            raise ValueError(f"sweep {key}: range {text!r} goes down")
        vals: list[float] = []
        if not step:
            vals = [float(v) for v in range(math.ceil(lo), math.floor(hi) + 1)]
        elif step.startswith("x"):
            f = float(step[1:])
            if not f > 1 or not lo > 0:
                raise ValueError(f"sweep {key}: a geometric range needs LO > 0 and factor > 1, got {text!r}")
            v = lo
            while v <= hi * (1 + 1e-9):
                vals.append(v)
                v *= f
        elif step.startswith("+"):
            d = float(step[1:])
            if not d > 0:
                raise ValueError(f"sweep {key}: the step must be > 0, got {text!r}")
            n = int(math.floor((hi - lo) / d + 1e-9))
            vals = [lo + i * d for i in range(n + 1)]
        else:
            raise ValueError(f"sweep {key}: range step {step!r} must be xF or +S")
        if len(vals) > 100_000:
            raise ValueError(f"sweep {key}: {len(vals)} values; at most 100000")
        return [_tidy(v) for v in vals]
    out: list[Any] = []
    for item in (t.strip() for t in text.split(",")):
        if not item:
            continue
        try:
            out.append(_tidy(_number(item, key)))
        except ValueError:
            out.append(item)  # a word (an algorithm name, true/false): set_input checks it
    if not out:
        raise ValueError(f"sweep {key}: no values in {text!r}")
    return out


def _tidy(v: float) -> float | int:
    """Whole numbers as int (1e10 -> 10000000000), others as float."""
    r = round(v)
    return int(r) if abs(v - r) <= 1e-9 * max(1.0, abs(v)) else v


@dataclass(frozen=True)
class Sweep:
    """The costs of each mode at each value of one input.

    Args:
        key: the input swept (as given).
        values: its values.
        costs: mode -> one StepCost per value.
    """

    key: str
    values: tuple[Any, ...]
    costs: dict[str, tuple[StepCost, ...]]

    def rows(self) -> list[dict[str, Any]]:
        """One row per value: step ms, comm % and samples/s of every mode."""
        out = []
        last = resolve_key(self.key).rsplit(".", 1)[-1]
        for i, v in enumerate(self.values):
            shown: Any = v
            if "bandwidth" in last and isinstance(v, (int, float)):
                shown = format_bandwidth(v)
            elif "latency" in last and isinstance(v, (int, float)):
                shown = format_duration(v)
            row: dict[str, Any] = {self.key: shown}
            for mode, cs in self.costs.items():
                row[f"{mode} ms"] = cs[i].total * 1e3
            for mode, cs in self.costs.items():
                row[f"{mode} comm%"] = 100 * cs[i].comm_fraction
            for mode, cs in self.costs.items():
                row[f"{mode} samples/s"] = cs[i].throughput
            out.append(row)
        return out


def sweep(spec: SimSpec, key: str, values: list[Any], modes: tuple[str, ...] | None = None,
          progress: Callable[[int], None] | None = None) -> Sweep:
    """`simulate` at each value of input `key` (see the module doc for the keys), with each
    value's `cluster.hardware` applied (its network and node shape: `apply_hardware`). A GPU
    node's job is the placement planner's, not these modes': a sweep refuses it."""
    from psrec.sim.hardware import apply_hardware, get_hardware

    path = resolve_key(key)
    if spec.cluster.hardware and path.startswith(("cluster.net", "cluster.workers_per_node")):
        raise ValueError(f"cluster.hardware {spec.cluster.hardware!r} sets {path}; sweep cluster.hardware "
                         "instead, or leave the hardware out")
    names = modes or tuple(MODES)
    costs: dict[str, list[StepCost]] = {m: [] for m in names}
    for i, v in enumerate(values):
        point = set_input(spec, key, v)
        if point.cluster.hardware and get_hardware(point.cluster.hardware, point.hardware).kind == "gpu":
            raise ValueError(f"{key}={v!r}: cluster.hardware {point.cluster.hardware!r} is a GPU node; a sweep "
                             "covers the CPU modes (GPU jobs: gpu.compare_hardware / gpu.compare_gpus)")
        res = simulate(apply_hardware(point), names)
        for m in names:
            costs[m].append(res[m])
        if progress:
            progress(i)
    return Sweep(key, tuple(values), {m: tuple(c) for m, c in costs.items()})
