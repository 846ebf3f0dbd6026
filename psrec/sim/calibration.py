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
      "apply_rows": 30000,           # embedding rows updated (or accumulated) per PS per step
      "apply_values": 480000,        # float values updated per PS per step (rows * dim + dense)
      "net": "bandwidth=10Gbit,latency=50us"   # optional: the phases include this emulated
                                               # network's time, which the fit subtracts
    }

A phase that a run did not measure may be missing or null; that run then does not take part
in that phase's fit.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from psrec.net import NetConfig, transfer_time

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
        apply_per_value: seconds per float value updated by the optimizer (PS or local).
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
    source: str = "defaults"

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "apply_per_row", "apply_per_value"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and math.isfinite(v)):
                raise CalibrationError(f"calibration.{name} must be a finite number >= 0, got {v!r}")
        if not isinstance(self.compute_per_sample, Mapping):
            raise CalibrationError("calibration.compute_per_sample must be a table of model -> seconds")
        for k, v in self.compute_per_sample.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not (v >= 0 and math.isfinite(v)):
                raise CalibrationError(f"calibration.compute_per_sample.{k} must be a number >= 0, got {v!r}")

    def compute_for(self, model: str) -> float:
        """Seconds per sample of `model` (falls back to `"default"`)."""
        if model in self.compute_per_sample:
            return float(self.compute_per_sample[model])
        if "default" in self.compute_per_sample:
            return float(self.compute_per_sample["default"])
        raise CalibrationError(f"calibration has no compute_per_sample for model {model!r} and no "
                               f"'default'; known: {', '.join(sorted(self.compute_per_sample))}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "calibration") -> "Calibration":
        known = {f.name for f in fields(cls)}
        for k in data:
            if k not in known:
                raise CalibrationError(f"unknown calibration key {where + '.' + k!r}; known: {', '.join(sorted(known))}")
        kwargs = dict(data)
        if "compute_per_sample" in kwargs:
            kwargs["compute_per_sample"] = dict(kwargs["compute_per_sample"])
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
    """Least squares min ||a x - y|| with x >= 0, for 1-2 unknowns: the unconstrained solution,
    else the best single-column fit with the other at 0 (the KKT points of a 2-variable NNLS)."""
    x, *_ = np.linalg.lstsq(a, y, rcond=None)
    if (x >= 0).all():
        return x
    best, best_err = np.zeros(a.shape[1]), float(np.sum(y ** 2))
    for j in range(a.shape[1]):
        col = a[:, j]
        denom = float(col @ col)
        if denom == 0:
            continue
        c = max(0.0, float(col @ y) / denom)
        cand = np.zeros(a.shape[1])
        cand[j] = c
        err = float(np.sum((a @ cand - y) ** 2))
        if err < best_err:
            best, best_err = cand, err
    return best


def fit_calibration(results: Sequence[Mapping[str, Any]], base: Calibration | None = None) -> Calibration:
    """Least-squares constants from per-run measured phases (schema in the module docstring).

    - communication: every measured pull and push phase is one equation
      `t - t_net = alpha * messages + beta * bytes` (alpha-beta, Hockney 1994), with `t_net`
      the emulated network's own `transfer_time` when the run names its `net`;
    - compute: per model, `t_compute = c * batch_size` (through the origin);
    - apply: `t_apply = apply_per_row * apply_rows + apply_per_value * apply_values`.

    The fits are constrained to constants >= 0. A constant without any equation keeps its
    value from `base` (default: `Calibration()`).

    Example:
        >>> runs = [{"batch_size": b, "phases": {"compute": 2e-5 * b}} for b in (64, 128)]
        >>> round(fit_calibration(runs).compute_per_sample["default"], 12)
        2e-05
    """
    base = base or Calibration()
    comm_rows, comm_y = [], []
    compute: dict[str, tuple[list[float], list[float]]] = {}
    apply_rows, apply_y = [], []
    for i, run in enumerate(results):
        if not isinstance(run, Mapping):
            raise CalibrationError(f"results[{i}]: expected an object, got {type(run).__name__}")
        net = run.get("net")
        netcfg = None
        if net is not None:
            netcfg = NetConfig.from_mapping(net, where=f"results[{i}].net")
        for phase in ("pull", "push"):
            t = _get(run, "phases", phase)
            nbytes = _get(run, "bytes", phase)
            msgs = _get(run, "messages", phase)
            if t is None or nbytes is None or msgs is None:
                continue
            if netcfg is not None:
                t -= transfer_time(netcfg, nbytes, msgs)
            comm_rows.append((msgs, nbytes))
            comm_y.append(t)
        t, b = _get(run, "phases", "compute"), _get(run, "batch_size")
        if t is not None and b is not None:
            xs, ys = compute.setdefault(str(run.get("model", "default")), ([], []))
            xs.append(b)
            ys.append(t)
        t, r, v = _get(run, "phases", "apply"), _get(run, "apply_rows"), _get(run, "apply_values")
        if t is not None and r is not None and v is not None:
            apply_rows.append((r, v))
            apply_y.append(t)

    alpha, beta = base.alpha, base.beta
    if comm_rows:
        a = np.array(comm_rows, dtype=np.float64)
        # Scale the columns: messages ~1-100 and bytes ~1e6 differ by orders of magnitude.
        scale = np.maximum(np.abs(a).max(axis=0), 1e-300)
        x = _nonneg_lstsq(a / scale, np.array(comm_y)) / scale
        alpha, beta = float(x[0]), float(x[1])
    per_sample = dict(base.compute_per_sample)
    for model, (xs, ys) in compute.items():
        bx, ty = np.array(xs), np.array(ys)
        per_sample[model] = max(0.0, float(bx @ ty / (bx @ bx)))
    apply_per_row, apply_per_value = base.apply_per_row, base.apply_per_value
    if apply_rows:
        a = np.array(apply_rows, dtype=np.float64)
        scale = np.maximum(np.abs(a).max(axis=0), 1e-300)
        x = _nonneg_lstsq(a / scale, np.array(apply_y)) / scale
        apply_per_row, apply_per_value = float(x[0]), float(x[1])
    return Calibration(alpha=alpha, beta=beta, compute_per_sample=per_sample,
                       apply_per_row=apply_per_row, apply_per_value=apply_per_value,
                       source=f"fit_calibration over {len(results)} runs")
