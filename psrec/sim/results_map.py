"""From a run's `results.json` to the fit schema of `psrec.sim.calibration` (one dict per run).

Reads what `psrec.ps.runner.run_ps` and `collective.runner.run_collective` write (also inside
`psrec compare` and `psrec validate-sim` directories). The mapping, per run (seconds are per
worker step: phases summed over workers / worker steps summed, without each worker's first
step when the runner recorded `steady_phases`; counters are per step over all steps):

Robust per-step statistics. When every worker recorded its steps one by one
(`step_seconds`, `step_emulated`: `psrec.core.report`), a phase's seconds per step are its
mean over that worker's steps after its run's `warmup_steps` (lazy tables, first
connections) that took at most `SPIKE` times the worker's median step, averaged over the
workers; the measured step is the sum of those means. On a shared machine another job's
burst stretches a few steps by 2-5x (step_p95 / step_p50 ~ 4 in the runs of issue 8): a
plain mean over 28 steps moves by tens of percent; without those steps it does not. Not a
median per phase: a phase that a worker spends in some steps only is then dropped or
counted in full (a ps-sync worker pushes last, and waits in its push for the apply, in 1/W
of the steps: per-phase medians put the whole apply in push at W = 2 and none of it at
W = 3; replaying five validate-sim runs, per-phase medians gave 3.3-7.5 points of comm
fraction error, the trimmed means 3.3-4.6). Without per-step records the steady totals
(first step left out) or the totals are averaged.

PS modes (ps-async, ps-sync, ps-*-hybrid):
    compute          data + compute (+ the worker's own optimizer step, `apply`: hybrid's
                     dense step) phases: all CPU work per sample on the worker, and the
                     simulator has one compute term. Since the one training step, the
                     batch's dedup and assembly are compute in every mode; earlier runs
                     booked them in pull
    pull, push       the phases as measured (real time; the emulated network is booked apart
                     by the client, so `net` is *not* set: the fit subtracts nothing); they
                     include the shard's lookup, which the fitted software alpha/beta absorb
    bytes, messages  per_worker pull_bytes / push_bytes / pull_messages / push_messages; a
                     pull call is two messages on the wire (request, response) as the
                     simulator counts them, a push one
    apply            the busiest shard's seconds per apply (async: one apply per worker
                     push; sync: one per global step): the mean of its `apply_recent` after
                     the warm-up's applies within `SPIKE` median applies, as the steps are
                     (a run's first applies create its rows: one 62-step run's mean apply
                     was 10.5 ms, its repeat's 3.0, their steady applies alike), else
                     `apply_seconds` / applies
    apply_rows       rows (over tables) the shard applies per apply. psrec's wire format gives
                     them without the config: a push carries (key 8 B, gradient, count 8 B)
                     per row and a pull (key 8 B, row) per row, so rows = (push - pull) / 8
                     bytes, and values = (pull - 8 rows - 4 dense) / 4 + dense / M.
                     ps-sync: the shard concatenates the W pushes of a step and the EV merges
                     duplicate keys before one update, so it updates the distinct rows of the
                     union of W batches, which results.json does not hold: `apply_rows` and
                     `apply_values` are then None (the run does not enter the apply fit) and
                     `sync_apply` gives what is known, {"pushed_rows": W rows / M, "row_width":
                     values / rows, "dense_values": dense / M}; `psrec validate-sim`, which
                     knows the key law, fills them in: rows = the pushed rows (the EV probes
                     and merges every one), values = the key law's distinct rows times
                     row_width, plus the dense slice (`psrec.sim.costs.ps_sync_distinct_rows`)
    lookup_rows      rows the busiest shard looks up for one worker's pull: rows / M times
                     the run's `ps_imbalance.rows` (max/mean over the shards; 1 if absent)
    wait             the sync barrier, per worker step
Collective:
    compute          data + compute phases, under the model name `<model>/collective` (the
                     two paths keep their own compute constants: a rank's backward also
                     fills and launches the dense buckets)
    alltoall         {seconds, bytes, messages, calls} per rank step (ids, rows, gradients,
                     sizes); calls = messages / (W - 1): each call sends one message per peer
    allreduce        {seconds (exposed + hidden; exposed only when the ranks fill every core),
                     bytes, messages, calls} per rank step (dense); calls = `dense_buckets`
    apply            lookup + apply phases: the EV work on the rows a rank owns, per
                     `keys_applied` row (the shard's rows updated, over its tables)
    wait             the first rendezvous, per rank step
Both:
    measured         {"step": mean step seconds + emulated network seconds per step,
                      "comm_fraction": the runner's emulated_comm_fraction}
    cores            CPU cores the run's processes shared (argument; results.json does not say)

A results.json that lacks a key the mapping needs raises `CalibrationError` naming the file
and the key.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from psrec.sim.calibration import CalibrationError

__all__ = ["map_results", "load_run", "find_results", "mode_of", "segment_steps"]

_MODE = {"ps-async": "ps-async", "ps-sync": "ps-sync", "ps-async-hybrid": "hybrid", "ps-sync-hybrid": "hybrid",
         "collective": "collective"}


def mode_of(results: Mapping[str, Any], where: str) -> str:
    """The simulator's mode name of a run (`ps-async-hybrid` -> `hybrid`)."""
    m = _need(results, "mode", where)
    if m not in _MODE:
        raise CalibrationError(f"{where}: mode {m!r} is not a PS or collective run (known: {', '.join(_MODE)})")
    return _MODE[m]


def _need(d: Mapping[str, Any], key: str, where: str, prefix: str = "") -> Any:
    if not isinstance(d, Mapping) or d.get(key) is None:
        raise CalibrationError(f"{where}: missing key {prefix + key!r}")
    return d[key]


def _num(d: Mapping[str, Any], key: str, where: str, prefix: str = "") -> float:
    v = _need(d, key, where, prefix)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise CalibrationError(f"{where}: {prefix + key!r} must be a number, got {v!r}")
    return float(v)


def _workers(results: Mapping[str, Any], where: str) -> list[Mapping[str, Any]]:
    per = _need(results, "per_worker", where)
    live = [w for w in per if isinstance(w, Mapping) and w.get("steps")]
    if not live:
        raise CalibrationError(f"{where}: per_worker has no worker with steps > 0")
    return live


def _steady(live: list[Mapping[str, Any]]) -> bool:
    """Every worker reports its steady-state totals (the first step left out) and has some."""
    return all(isinstance(w.get("steady_phases"), Mapping) and (w.get("steady_steps") or 0) > 0 for w in live)


WARMUP_STEPS = 2  # steps left out of the per-step statistics: lazy set-up shows in the first one or two


def _per_step(live: list[Mapping[str, Any]], warmup: int = WARMUP_STEPS) -> bool:
    """Every worker kept its steps one by one, more of them than the warm-up."""
    return all(isinstance(w.get("step_seconds"), list) and len(w["step_seconds"]) > warmup
               and isinstance(w.get("step_emulated"), list) for w in live)


def _warmup(results: Mapping[str, Any]) -> int:
    """The run's own warm-up steps (`RunResult.warmup_steps`; runs before it: `WARMUP_STEPS`)."""
    w = results.get("warmup_steps")
    return int(w) if isinstance(w, int) and not isinstance(w, bool) and w >= 0 else WARMUP_STEPS


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


SPIKE = 2.0  # a step longer than this many median steps was stretched by something outside the run


def _phase_robust(live: list[Mapping[str, Any]], names: tuple[str, ...], where: str,
                  warmup: int = WARMUP_STEPS) -> dict[str, float]:
    """phase -> the workers' mean of its seconds over their steps after the warm-up that took
    at most `SPIKE` median steps ("emulated" too; module doc)."""
    out = {n: 0.0 for n in (*names, "emulated")}
    for w in live:
        steps = w["step_seconds"][warmup:]
        emus = [float(e) for e in w["step_emulated"][warmup:]]
        for r in steps:
            for n in (*names, *(r if isinstance(r, Mapping) else ())):
                v = r.get(n) if isinstance(r, Mapping) else None
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise CalibrationError(f"{where}: per_worker[].step_seconds[].{n} must be a number")
        keep = _kept_steps(w, warmup)
        for n in names:
            out[n] += sum(float(steps[i][n]) for i in keep) / len(keep) / len(live)
        out["emulated"] += sum(emus[i] for i in keep) / len(keep) / len(live)
    return out


def _kept_steps(w: Mapping[str, Any], warmup: int) -> list[int]:
    """Indices (after the warm-up) of a worker's steps that took at most `SPIKE` median steps."""
    totals = [sum(float(v) for v in r.values()) + float(e)
              for r, e in zip(w["step_seconds"][warmup:], w["step_emulated"][warmup:])]
    cap = SPIKE * _median(totals)
    return [i for i, t in enumerate(totals) if t <= cap] or list(range(len(totals)))


def _call_seconds(live: list[Mapping[str, Any]], tags: Callable[[str], bool], where: str,
                  warmup: int) -> float | None:
    """Seconds per worker step the collectives whose kind passes `tags` blocked inside the
    library (`step_call_seconds`), over the same steps as `_phase_robust`; None when a worker
    did not keep them (runs before psrec.comm.nic)."""
    if not _per_step(live, warmup) or not all(isinstance(w.get("step_call_seconds"), list)
                                              and len(w["step_call_seconds"]) == len(w["step_seconds"]) for w in live):
        return None
    out = 0.0
    for w in live:
        calls = w["step_call_seconds"][warmup:]
        keep = _kept_steps(w, warmup)
        total = 0.0
        for i in keep:
            if not isinstance(calls[i], Mapping):
                raise CalibrationError(f"{where}: per_worker[].step_call_seconds[] must be objects")
            for k, v in calls[i].items():
                if isinstance(v, bool) or not isinstance(v, (int, float)):
                    raise CalibrationError(f"{where}: per_worker[].step_call_seconds[].{k} must be a number")
                total += float(v) if tags(k) else 0.0
        out += total / len(keep) / len(live)
    return out


def segment_steps(results: Mapping[str, Any], segments: int, where: str = "results.json") -> list[float]:
    """The measured step (seconds, emulated network included) of each of `segments` equal
    runs of consecutive steps after the warm-up, spikes left out as in the measured step
    (module doc); the workers' mean per segment. Their spread is the run's own noise
    (`psrec validate-sim`); empty without per-step records or with fewer steps than segments.

    >>> w = {"step_seconds": [{"c": 9.0}, {"c": 1.0}, {"c": 1.2}, {"c": 3.0}, {"c": 9.0}],
    ...      "step_emulated": [0.0, 0.0, 0.0, 1.0, 0.0]}
    >>> segment_steps({"per_worker": [w], "warmup_steps": 1}, 2)   # the last 9.0: over 2x the median, 2.6
    [1.1, 4.0]
    """
    live = [w for w in results.get("per_worker") or () if isinstance(w, Mapping)]
    warmup = _warmup(results)
    if segments < 1 or not live or not _per_step(live, warmup):
        return []
    out = [0.0] * segments
    for w in live:
        totals = [sum(float(v) for v in r.values()) + float(e)
                  for r, e in zip(w["step_seconds"][warmup:], w["step_emulated"][warmup:])]
        if len(totals) < segments:
            return []
        cap = SPIKE * _median(totals)
        for j in range(segments):
            part = totals[j * len(totals) // segments:(j + 1) * len(totals) // segments]
            kept = [t for t in part if t <= cap] or part
            out[j] += sum(kept) / len(kept) / len(live)
    return out


def _phase_means(live: list[Mapping[str, Any]], names: tuple[str, ...], where: str,
                 warmup: int = WARMUP_STEPS) -> tuple[dict[str, float], float]:
    """(phase -> seconds per worker step, summed worker steps): means over the steps without
    spikes when recorded (module doc), else steady-state means when recorded, else means."""
    if _per_step(live, warmup):
        med = _phase_robust(live, names, where, warmup)
        return {n: med[n] for n in names}, float(sum(len(w["step_seconds"]) - warmup for w in live))
    key, steps_key = ("steady_phases", "steady_steps") if _steady(live) else ("phases", "steps")
    steps = sum(_num(w, steps_key, where, "per_worker[].") for w in live)
    out = {}
    for n in names:
        out[n] = sum(_num(_need(w, key, where, f"per_worker[].{key}."), n, where, f"per_worker[].{key}.")
                     for w in live) / steps
    return out, steps


def _measured(results: Mapping[str, Any], live: list[Mapping[str, Any]], comm: tuple[str, ...],
              where: str) -> dict[str, float]:
    """Mean step seconds with the emulated network's seconds added, and the comm fraction
    (comm phases + emulated seconds over the step), as the runners define it. With per-step
    records: over the steps without spikes (module doc)."""
    warmup = _warmup(results)
    if _per_step(live, warmup):
        names = tuple(live[0]["step_seconds"][0].keys()) if live[0]["step_seconds"] else ()
        med = _phase_robust(live, names, where, warmup)
        wall, emu = sum(med[n] for n in names), med["emulated"]
        comm_s = sum(med.get(c, 0.0) for c in comm)
        return {"step": wall + emu, "emulated": emu,
                "comm_fraction": (comm_s + emu) / (wall + emu) if wall + emu > 0 else 0.0, "steady": True,
                "statistic": f"mean over steps after {warmup} within {SPIKE:g}x the median step"}
    steady = _steady(live)
    key, steps_key, emu_key = (("steady_phases", "steady_steps", "steady_emulated_seconds") if steady
                               else ("phases", "steps", "emulated_net_seconds"))
    steps = sum(float(w[steps_key]) for w in live)
    wall = sum(sum(float(v) for v in w[key].values()) for w in live)
    comm_s = sum(float(w[key].get(c, 0.0)) for w in live for c in comm)
    emu = sum(float(w.get(emu_key) or 0.0) for w in live)
    return {"step": (wall + emu) / steps, "emulated": emu / steps,
            "comm_fraction": (comm_s + emu) / (wall + emu) if wall + emu > 0 else 0.0, "steady": steady}


def map_results(results: Mapping[str, Any], where: str = "results.json", cores: float = 0.0) -> dict[str, Any]:
    """One run in the fit schema (module doc). `where` names the file in errors.

    Example (a 1-worker, 1-PS async run, 2 steps; golden values in tests/test_calibrate.py):
        >>> r = {"mode": "ps-async", "model": "lr", "workers": 1, "num_ps": 1, "batch_size": 4,
        ...      "dense_params": 0, "emulated_comm_fraction": 0.5, "net": "",
        ...      "per_worker": [{"steps": 2, "phases": {"data": 0.1, "compute": 0.3, "pull": 0.2, "push": 0.2,
        ...                      "wait": 0, "allreduce": 0}, "pull_bytes": 2000, "push_bytes": 2800,
        ...                      "pull_messages": 2, "push_messages": 2}],
        ...      "per_ps": [{"apply_seconds": 0.02, "bytes_in": 0}]}
        >>> m = map_results(r)
        >>> m["phases"], m["bytes"], m["apply_rows"], m["apply_values"]
        ({'compute': 0.2, 'pull': 0.1, 'push': 0.1, 'apply': 0.01}, {'pull': 1000.0, 'push': 1400.0}, 50.0, 150.0)
    """
    if not isinstance(results, Mapping):
        raise CalibrationError(f"{where}: expected a JSON object")
    mode = mode_of(results, where)
    model = str(results.get("model") or "default")
    workers = int(_num(results, "workers", where))
    batch = _num(results, "batch_size", where)
    live = _workers(results, where)
    warmup = _warmup(results)
    # Counters (bytes, messages, applies) cover every step; phase means may leave the first out.
    all_steps = sum(_num(w, "steps", where, "per_worker[].") for w in live)
    net = results.get("net") or ""
    out: dict[str, Any] = {"name": Path(where).parent.name if where.endswith("results.json") else where,
                           "mode": mode, "model": model, "workers": workers, "batch_size": batch,
                           "cores": float(cores), "emulated_net": net}
    if mode == "collective":
        out["model"] = f"{model}/collective"
        ph, steps = _phase_means(live, ("data", "compute", "wait", "alltoall", "allreduce", "lookup", "apply"), where,
                                 warmup)
        ar_total = sum(_num(w, "allreduce_total_seconds", where, "per_worker[].") for w in live) / all_steps
        if _per_step(live, warmup):
            # The total is only kept summed: the robust exposed part plus the mean hidden part.
            exposed = sum(float((w.get("phases") or {}).get("allreduce", 0.0)) for w in live) / all_steps
            ar_total = ph["allreduce"] + max(0.0, ar_total - exposed)
        if cores and workers >= cores:
            # Every core busy with a rank's compute: the all-reduce cannot hide (the model's
            # `overlap_share` is 0), and its in-flight time is inflated by that same compute,
            # which it waits behind; its software cost is what the step exposes.
            ar_total = ph["allreduce"]
        tags = _need(results, "bytes_per_step_by_kind", where)
        dense_bytes = float(tags.get("dense", 0.0))
        a2a_bytes = sum(float(v) for k, v in tags.items() if k not in ("dense", "control"))
        n = workers
        ar_calls = _num(results, "dense_buckets", where) if n > 1 else 0.0  # one all-reduce per bucket
        ar_msgs = ar_calls * 2 * (n - 1)  # ring: 2(N-1) per call
        a2a_msgs = max(0.0, _num(results, "messages_per_step", where) - ar_msgs)
        a2a_calls = a2a_msgs / (n - 1) if n > 1 else 0.0  # one message to each peer per call
        shards = _need(results, "per_shard", where)
        applied = sum(_num(s, "keys_applied", where, "per_shard[].") for s in shards)
        # the all-to-alls' time inside the library (the part a link's wire overlaps); the
        # size exchange is the step's first rendezvous, booked as `wait`, not `alltoall`
        a2a_call = _call_seconds(live, lambda k: k not in ("sizes", "dense", "control"), where, warmup)
        out.update({
            "ps": 0,
            "phases": {"compute": ph["data"] + ph["compute"], "apply": ph["lookup"] + ph["apply"]},
            "collective": {"alltoall": {"seconds": ph["alltoall"], "bytes": a2a_bytes, "messages": a2a_msgs,
                                        "calls": a2a_calls,
                                        "call_seconds": None if a2a_call is None else min(a2a_call, ph["alltoall"])},
                           "allreduce": {"seconds": ar_total, "bytes": dense_bytes, "messages": ar_msgs,
                                         "calls": ar_calls}},
            # rows (over tables) a rank updates per step: the distinct rows it owns among all
            # ranks' batches (it also looks them up for every rank: one constant per row covers both)
            "apply_rows": applied / all_steps,
            "wait": ph["wait"],
        })
        out["apply_values"] = None  # the collective's apply is fitted per row only (mixed widths)
    else:
        # A worker's own optimizer step (`apply`: hybrid's dense step) is compute on the worker;
        # results written before the one training step have no such phase.
        own_apply = all("apply" in (w.get("phases") or {}) for w in live)
        ph, steps = _phase_means(live, ("data", "compute", "pull", "push", "wait") + (("apply",) if own_apply else ()),
                                 where, warmup)
        m = int(_num(results, "num_ps", where))
        pull_b = sum(_num(w, "pull_bytes", where, "per_worker[].") for w in live) / all_steps
        push_b = sum(_num(w, "push_bytes", where, "per_worker[].") for w in live) / all_steps
        pull_m = sum(_num(w, "pull_messages", where, "per_worker[].") for w in live) / all_steps
        push_m = sum(_num(w, "push_messages", where, "per_worker[].") for w in live) / all_steps
        dense = _num(results, "dense_params", where) if mode != "hybrid" else 0.0
        rows = max(0.0, (push_b - pull_b) / 8)  # one 8-byte count per pushed row (module doc)
        values = max(0.0, (pull_b - 8 * rows - 4 * dense) / 4)
        shards = _need(results, "per_ps", where)
        if not shards:
            raise CalibrationError(f"{where}: per_ps is empty")
        rounds = all_steps / workers  # steps per worker
        sync = mode == "ps-sync"
        applies = rounds if sync else all_steps  # per shard: one per global step (sync) or per push
        per = workers if sync else 1  # worker pushes merged into one apply
        # the warm-up steps' applies: one per step (sync), one per worker push (async)
        apply_s = max(_apply_seconds(s, applies, warmup * (1 if sync else workers), where) for s in shards)
        out.update({
            "ps": m,
            "phases": {"compute": ph["data"] + ph["compute"] + ph.get("apply", 0.0), "pull": ph["pull"],
                       "push": ph["push"],
                       "apply": apply_s},
            "bytes": {"pull": pull_b, "push": push_b},
            "messages": {"pull": 2 * pull_m, "push": push_m},
            # sync: the merged rows of W pushes are not in results.json (module doc)
            "apply_rows": None if sync else rows / m,
            # the busiest shard's rows of one worker's pull (max/mean rows over the shards)
            "lookup_rows": rows / m * _imbalance(results),
            "apply_values": None if sync else (values + dense) / m,
            "wait": ph["wait"],
        })
        if sync:
            out["sync_apply"] = {"pushed_rows": per * rows / m, "row_width": values / rows if rows else 0.0,
                                 "dense_values": dense / m}
    comm = ("alltoall", "allreduce") if mode == "collective" else ("pull", "push", "allreduce")
    out["measured"] = _measured(results, live, comm, where)
    return out


def _apply_seconds(shard: Mapping[str, Any], applies: float, warmup: int, where: str) -> float:
    """A shard's seconds per apply: with its applies one by one (`apply_recent`, the last
    `psrec.ps.shard.APPLY_WINDOW`), their mean after the warm-up's `warmup` applies (when the
    window still holds the first) within `SPIKE` times their median, as the workers' steps
    (module doc); else its `apply_seconds` over `applies`.

    >>> _apply_seconds({"apply_seconds": 0.5, "applies": 6, "apply_recent": [0.4, 0.04, 0.01, 0.01, 0.03, 0.01]},
    ...                6, 1, "r")   # the first apply is left out, the 0.04 and 0.03 are over 2x the median
    0.01
    >>> _apply_seconds({"apply_seconds": 0.5}, 5, 1, "r")
    0.1
    """
    recent = shard.get("apply_recent")
    if isinstance(recent, list) and recent:
        xs = [float(x) for x in recent]
        if not all(math.isfinite(x) and x >= 0 for x in xs):
            raise CalibrationError(f"{where}: per_ps[].apply_recent must hold seconds >= 0")
        if int(shard.get("applies") or 0) <= len(xs):  # the window starts at the first apply
            xs = xs[warmup:] or xs
        cap = SPIKE * _median(xs)
        kept = [x for x in xs if x <= cap] or xs
        return sum(kept) / len(kept)
    return _num(shard, "apply_seconds", where, "per_ps[].") / applies


def _imbalance(results: Mapping[str, Any]) -> float:
    """The busiest shard's rows over the mean shard's (psrec's `ps_imbalance.rows`; 1 if absent)."""
    imb = results.get("ps_imbalance")
    v = imb.get("rows") if isinstance(imb, Mapping) else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 1 else 1.0


def find_results(path: str | Path) -> list[Path]:
    """results.json files under `path`: the file itself, a run directory, or a directory of
    runs (a `psrec compare` or `psrec validate-sim` directory: one level of subdirectories)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise CalibrationError(f"{p}: no such file or directory")
    if (p / "results.json").is_file() and not any(p.glob("*/results.json")):
        return [p / "results.json"]
    found = sorted(p.glob("*/results.json"))
    if not found:
        raise CalibrationError(f"{p}: no results.json in it or in its subdirectories")
    return found


def load_run(path: str | Path, cores: float = 0.0) -> dict[str, Any]:
    """Read one results.json and map it (errors name the file)."""
    where = str(path)
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as e:
        raise CalibrationError(f"{where}: not JSON ({e})") from None
    except OSError as e:
        raise CalibrationError(f"{where}: {e.strerror}") from None
    return map_results(data, where, cores)
