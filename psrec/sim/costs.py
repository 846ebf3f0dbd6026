"""Step-time cost model of the four training modes: ps-async, ps-sync, hybrid, collective.

Every function is pure and returns a breakdown dataclass (`psrec.sim.breakdown`). Units: seconds, bytes.
A PS worker's traffic and its pull and push phases are computed in `psrec.sim.traffic`.

Endpoints (alpha-beta per NIC). A NIC that handles k messages of n bytes in total is busy

    k (latency + alpha_sw) + n (1/bandwidth + beta_sw)

(Hockney's model, `psrec.net.transfer_time`, plus the calibrated software cost per message and
per byte, `Calibration.alpha/beta`). Messages on one NIC are charged one after another (the
per-message overhead of LogP, D. Culler et al., PPoPP 1993), which is what makes a PS NIC
that serves W workers at once slow: incast.

Parameter servers (DeepRec / TensorFlow PS). A worker deduplicates its batch's keys
(`psrec.sim.keys`), sends one request to each shard it touches, concurrently, and gets the
rows back; it pushes (key, gradient) pairs the same way. A phase lasts as long as its slower
end: the worker's NIC (all its bytes) or the busiest PS NIC (its share of every concurrent
worker's bytes, times the partitioner's imbalance). Between a pull's request and its
response the busiest shard looks the rows up (`ps_serve_time`: `lookup_per_row` per row; the
shards of one pull work in parallel, so only the busiest one's rows count). The dense
parameters live on the PS too (`SimOptions.dense_on_ps`, split evenly) and are pulled and
pushed whole every step. A PS
applies every received gradient row, `apply_per_row + dim * apply_per_value` each, and its
slice of the dense parameters (`apply_per_value` each). Async: each push is applied on its
own. Sync: the shard concatenates the W pushes of a step and merges duplicate keys (psrec's
EV: sort + reduceat, `psrec.ps.shard`) before one update, so it updates the distinct rows of
the union of the W batches, D(W B keys) from `psrec.sim.keys`, not W D(B keys), and the dense
slice once (`ps_sync_apply_load`); the merge itself is vectorised and left in the per-row cost.

A push returns when the shard has taken it in: in async mode after the shard applied it
(psrec's `PSShard.push` applies inline, as TF's apply ops complete before the worker's train
op does), so the worker's push includes the busiest shard's apply of its rows; in sync mode
the last of the W pushes triggers the merged apply and returns after it, and the other W - 1
workers wait for it at their next pull (the pull is held until the step is applied). Per
worker and step that is apply / W inside the push and (W - 1) / W apply as waiting.

- ps-sync: all W workers pull, compute, push in lockstep; the step waits for the slowest
  worker and the slowest shard, then for the apply:
  T = compute + wait + pull(W concurrent) + push(W concurrent) + apply(union of W batches),
  the apply booked 1/W in `push` and (W-1)/W in `apply` (above). The apply releases the W - 1
  workers held at their next pull at once, and the shard serves them one after another under
  its lock: the pull also holds their mean queue, `sync_pull_queue(W)` serve times
  ((W-1)(W-2)/(2W): none at W = 2, where the last pusher's own pull comes later).
- ps-async: each worker runs on its own: T_w = compute + pull + push + its apply with no
  contention (or max(compute, pull + push + apply) with prefetch, `overlap_ps`); the apply is
  booked in `push`, where the worker waits for it. The PS's NIC and CPU are shared. The
  workers' TCP flows share the busiest PS's link (in and out) like processor-sharing
  stations of a closed network, T = its mean cycle by exact MVA (M. Reiser and S. Lavenberg,
  J. ACM 1980; `psrec.sim.queueing`), which tends to the asymptotic bound T >= W * (NIC
  demand per worker step) of operational analysis (E. Lazowska et al., Quantitative System
  Performance, 1984, ch. 5) near saturation and queues below it too (3 workers, 1 PS, real
  200 Mbit links: 406 ms measured, MVA 339, the bound 262). The CPU's lock work is charged
  by its bound alone, T >= W * (lookup + apply): below it async workers on one shard fall
  into alternation (psrec's Ray runs, 2 workers on 1 PS: the async pull measured 12.5-15.9 ms,
  the sync pull, which never meets another worker's apply, 14.4-15.6 ms). The excess over
  T_w is queueing, shown in pull/push: a worker waits for the busy NIC, or for the shard's
  lock, inside its own pull or push call.
- hybrid (Persia, X. Lian et al., KDD 2022): embeddings on the PS, pulled/pushed as in sync
  (the dense all-reduce keeps workers in lockstep), dense parameters all-reduced among the
  workers; embedding updates are applied asynchronously on the PS (bounded like ps-async).
- collective (DLRM, M. Naumov et al., arXiv:1906.00091, 2019; TorchRec): embeddings sharded
  over the workers, ids and pooled embeddings exchanged by all-to-all (forward: ids, then
  pooled vectors; backward: their gradients), dense parameters all-reduced. Each owner
  applies the distinct rows it owns among all W batches.

Overlap: a dense all-reduce in k buckets overlaps the backward pass (PyTorch DDP, S. Li et al.,
VLDB 2020), all but its last bucket: (k-1)/k of it hides, at most the backward. Backward =
2/3 of compute (2N forward and 4N backward FLOPs per sample for N parameters: J. Kaplan et
al., "Scaling Laws for Neural Language Models", 2020, sec. 2.1).

Stragglers: a worker is slowed by `straggler_slowdown` with probability `straggler_fraction`
per step. Lockstep modes wait for the slowest of W: E[max slowdown] = 1 + (k-1)(1 - (1-f)^W);
ps-async workers do not wait, and run at the mean 1 + f (k-1).

Calibrated extras (all 0 until `psrec calibrate` fits them, so the formulas above stand alone):
per-step compute overhead (`compute_per_step`, T_compute = c0 + B c); collective library
software cost per message and per byte (`coll_alpha`, `coll_beta`) on every all-to-all and
all-reduce (an all-reduce is one ring per gradient bucket, `allreduce_calls`), and per
all-to-all call and byte for the packing by destination (`coll_call`, `alltoall_beta`);
lockstep jitter: W workers whose step varies with coefficient of variation j wait for the
slowest, E[max] - mean = j * E[max of W std normals] * step (`expected_max_normal`).
Shared CPUs (`ClusterSpec.cores` > 0): a CPU part runs `cpu_slowdown(n, cores)` =
max(1, n / cores) times slower (processor sharing), n = the processes busy during it: W for
compute, the software alpha/beta and the collective's apply (every worker or rank works at
once; in ps-async a worker waiting on a PS has the PS working for it); the PS count M for
ps-sync's apply and lookups, which the shards run while the workers wait (at the barrier, or
in line at the shard); W - 1 + M for a ps-async push's apply and a pull's lookups, which all
M shards run at once for one worker while the other W - 1 go on
(`psrec.sim.contention.busy_processes`). The network's wire time is not CPU.

Links and library software: a collective's wire time overlaps the library's own time inside
the call (`coll_alpha`, `coll_beta`: the NIC sends while gloo copies and waits), not the
packing around it (`coll_call`, `alltoall_beta`): a call costs pack + max(library, wire). psrec's
`--net` emulation replays the calls on the same model (`psrec.comm.nic`).

Emulated networks (`SimOptions.emulated_net`, psrec's `--net`): each PS worker books its own
bytes only, so no PS NIC is shared (`server_nic_time`): W workers pulling at once do not queue
behind one another's bytes as they do on a real link. A PS call's wire time is added to its
real time (the shard's work sits between the request's bytes and the reply's).
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Callable

from psrec.sim.breakdown import ComputeCost, StepCost, compute_cost
from psrec.sim.collective import allreduce_cost, alltoall_cost
from psrec.sim.config import KEY_BYTES, VALUE_BYTES, SimSpec
from psrec.sim.contention import busy_processes, cpu_slowdown, expected_max_normal, sync_pull_queue
from psrec.sim.fair_share import arrival_offsets, fair_share_durations
from psrec.sim.keys import shard_load
from psrec.sim.queueing import mva_cycle
from psrec.sim.traffic import (
    PSTraffic,
    nic_time,
    ps_phases,
    ps_serve_time,
    ps_traffic,
    server_nic_time,
    slowdown,
    table_stats,
)

# PS traffic and phases live in psrec.sim.traffic; re-exported here, the model's one entry point.
__all__ = ["ComputeCost", "compute_cost", "StepCost", "PSTraffic", "ps_traffic", "nic_time", "ps_serve_time",
           "ps_phases", "slowdown", "straggler_factors", "ps_sync_apply_load", "ps_sync_distinct_rows", "ps_sync_step",
           "ps_async_step", "overlap_share", "allreduce_calls", "hybrid_step", "collective_step", "MODES", "simulate"]


# --- shared ----------------------------------------------------------------------------


def _largest(parts: dict[str, float]) -> str:
    return max(parts.items(), key=lambda kv: kv[1])[0] if parts else ""


def _compute(spec: SimSpec) -> ComputeCost:
    c = spec.cluster
    return compute_cost(spec.model.batch_size, spec.compute_per_sample(), c.worker_speed / slowdown(spec),
                        spec.compute_per_step())


def _jitter_wait(spec: SimSpec, mode: str, step: float) -> float:
    """Lockstep wait for the slowest of W workers whose step time varies (`mode`'s calibrated jitter)."""
    return spec.calibration.jitter_for(mode) * expected_max_normal(spec.cluster.workers) * step


def straggler_factors(spec: SimSpec) -> tuple[float, float]:
    """(E[max slowdown over W workers], E[slowdown of one worker]) for the lockstep and async modes.

    >>> from psrec.sim.config import *
    >>> straggler_factors(SimSpec(cluster=ClusterSpec(workers=2, straggler_fraction=0.5, straggler_slowdown=3)))
    (2.5, 2.0)
    """
    c = spec.cluster
    k, f, w = c.straggler_slowdown, c.straggler_fraction, c.workers
    return 1 + (k - 1) * (1 - (1 - f) ** w), 1 + f * (k - 1)


def _memory(spec: SimSpec, holders: int) -> float:
    return spec.model.embedding_bytes(spec.options.optimizer_slots) / holders


# --- parameter servers (their traffic and phases: psrec.sim.traffic) -------------------------


def _ps_label(worker: float, server: float) -> str:
    return "ps nic" if server >= worker else "worker nic"


def ps_sync_apply_load(spec: SimSpec) -> tuple[float, float]:
    """(rows, float values) of the busiest shard's apply in one ps-sync step. Rows: the W
    pushes' rows, W times one worker's rows on the shard (`ps_traffic`), since the EV probes
    and merges every pushed row before it updates each distinct row once
    (`psrec.ev.variable`: find, then `merge_duplicates`). Values: those it updates, the
    distinct rows of the union of the W workers' batches, D_t(W B keys_t) per table, times the
    busiest shard's share imbalance / M (hash-mod placement of one merged batch,
    `psrec.sim.keys.shard_load`), times dim, plus its dense slice once, dense / M (when the
    dense parameters live on the PS).

    Example: one table of 4 rows, uniform keys, dim 2, 2 workers x batch 2 x 1 key, 1 PS, no dense:
        each worker pushes D = 4 (1 - (3/4)^2) = 1.75 rows: 2 D = 3.5 = 224/64 probed; the union
        is 4 draws, 4 (1 - (3/4)^4) = 175/64 distinct rows (not 3.5), 2 * 175/64 values.
        >>> from psrec.sim.config import *
        >>> spec = SimSpec(cluster=ClusterSpec(workers=2, ps=1), data=DataSpec(zipf=0),
        ...                model=ModelSpec(tables=(TableSpec(rows=4, dim=2, keys_per_sample=1),),
        ...                                dense_params=0, batch_size=2))
        >>> [round(x * 64, 9) for x in ps_sync_apply_load(spec)]
        [224.0, 350.0]
    """
    c = spec.cluster
    dense = spec.model.dense_params if spec.options.dense_on_ps else 0
    rows = c.workers * ps_traffic(spec).shard_apply_rows  # every pushed row is probed and merged
    values = sum(d * dim for d, dim in ps_sync_distinct_rows(spec)) + dense / c.ps
    return rows, values


def ps_sync_distinct_rows(spec: SimSpec) -> list[tuple[float, int]]:
    """(distinct rows, dim) per table that the busiest shard updates in one ps-sync step: the
    distinct rows of the union of the W workers' batches, D_t(W B keys_t), times the shard's
    share imbalance / M (`ps_sync_apply_load`)."""
    c, o = spec.cluster, spec.options
    union = table_stats(spec, draws_factor=c.workers)
    imbalance = c.ps_imbalance or shard_load([(st, 1.0) for st, _ in union], c.ps, 1, o.partitioner).imbalance
    return [(st.distinct * imbalance / c.ps, dim) for st, dim in union]


def ps_sync_step(spec: SimSpec) -> StepCost:
    """ps-sync: T = compute + wait + pull + push + apply, all W workers at once (module doc).

    pull includes the busiest shard's serve time s (`ps_serve_time`) and the mean queue of the
    workers the apply releases together, `sync_pull_queue(W)` * s. push is a worker's mean
    push at the busiest PS's link, max(alone, the mean of `fair_share_durations` of the W
    pushes' phase / W each, started at `arrival_offsets(W, jitter * compute)`), and the rest
    of that phase is wait. (4-node testbed, 3 workers, 1 PS, 200 Mbit: push measured 176.8 ms
    a step, the model's phase of the 3 pushes 197.5 ms; as turns, (W + 1) / (2 W) of the
    phase, it was 136.1 ms and the comm share 7.2 points low, as fair shares 188.2 ms, 2.8
    points high, with the step unchanged.)

    apply = cpu_slowdown(M, cores) * (apply_per_call + rows * apply_per_row + values *
    apply_per_value) with
    (rows, values) = `ps_sync_apply_load` (the pushed rows, the distinct rows' values): the M shards
    apply while the workers wait."""
    c, m, cal = spec.cluster, spec.model, spec.calibration
    comp = _compute(spec).total
    slowest, _ = straggler_factors(spec)
    t = ps_traffic(spec)
    ph = ps_phases(spec, t, c.workers, "ps-sync")
    pull = ph.pull + sync_pull_queue(c.workers) * ph.serve  # the released waiters queue at the shard
    # The last push of a step ends after all W have crossed the busiest PS's link (ph.push); a
    # worker's own push shares the link with those in flight (`psrec.sim.fair_share`) from
    # when it gets there. The pulls share the link too and end together, so what spreads the
    # pushes' starts is the compute's jitter. The early pushers spend the rest held at their
    # next pull (waiting).
    w = c.workers
    starts = arrival_offsets(w, cal.jitter_for("ps-sync") * comp)
    push = max(ps_phases(spec, t, 1, "ps-sync").push,
               statistics.fmean(fair_share_durations(ph.push / w, starts)) if w > 1 else ph.push)
    rows, values = ps_sync_apply_load(spec)
    apply = (cal.apply_per_call + rows * cal.apply_per_row + values * cal.apply_per_value) * cpu_slowdown(
        busy_processes("ps-sync", "apply", c.workers, c.ps), c.cores)
    parts = {"compute": comp, "pull": pull, "push": push, "apply": apply,
             "wait": (comp * (slowest - 1) + _jitter_wait(spec, "ps-sync", comp + pull + ph.push + apply)
                      + ph.push - push)}
    label = _largest(parts)
    if label in ("pull", "push"):
        label += f" ({_ps_label(ph.pull_worker + ph.push_worker, ph.pull_server + ph.push_server)})"
    return StepCost("ps-sync", compute=comp, pull=pull, push=push + apply / w, apply=apply * (w - 1) / w,
                    wait=parts["wait"], workers=c.workers, batch_size=m.batch_size,
                    memory_per_node=_memory(spec, c.ps), bottleneck=label)


def ps_async_step(spec: SimSpec) -> StepCost:
    """ps-async: T = max(the mean cycle of W workers in a closed queueing network (`mva_cycle`:
    stations the busiest PS's NIC in and out, `server_nic_time`; delay T_worker - their
    demands), W * the PS CPU's demand (serve + apply)) (module doc).

    T_worker = compute + pull + push + apply (uncontended; the push waits for the shard's apply,
    booked in `push`) or, with prefetch, max(compute, pull + push + apply). The time in line at
    the PS goes to pull and push, in their uncontended proportion.
    """
    c, m, o = spec.cluster, spec.model, spec.options
    _, mean_slow = straggler_factors(spec)
    comp = _compute(spec).total * mean_slow
    t = ps_traffic(spec)
    alone = ps_phases(spec, t, 1, "ps-async")  # no other worker at the PS
    comm = alone.pull + alone.push + alone.apply_server  # the push returns after the shard's apply
    hidden = min(comp, comm) if o.overlap_ps else 0.0
    pull_share = alone.pull / comm if comm > 0 else 0.5
    pull, push = (comm - hidden) * pull_share, (comm - hidden) * (1 - pull_share)
    own = comp + pull + push
    # The busiest PS's demand per worker step: its NIC, in and out (separate directions; none
    # under the --net emulation, `server_nic_time`), where the workers' flows queue; and its
    # CPU, whose shard lock serialises every worker's lookups and applies (`psrec.ps.shard`).
    nic = [server_nic_time(spec, 2 * t.shard_messages, t.shard_request_bytes + t.shard_push_bytes),
           server_nic_time(spec, t.shard_messages, t.shard_response_bytes)]
    bound_nic = c.workers * max(nic)
    bound_cpu = c.workers * (alone.apply_server + alone.serve)
    cycle = max(mva_cycle(nic, max(0.0, own - sum(nic)), c.workers), bound_cpu)
    label = _largest({"compute": comp, "pull": pull, "push": push})
    if label in ("pull", "push"):
        label += " (worker nic)"
    if cycle > own:
        excess = cycle - own
        # The worker waits inside its own calls: for the NIC, or for the shard's lock, which a
        # pull or push takes before its lookup or apply (`psrec.ps.shard`).
        pull, push = pull + excess * pull_share, push + excess * (1 - pull_share)
    if max(bound_nic, bound_cpu) > own:  # the PS saturates: its busiest resource sets the pace
        label = "ps nic (incast)" if bound_nic >= bound_cpu else "ps cpu (lookup + apply)"
    return StepCost("ps-async", compute=comp, pull=pull, push=push, hidden=hidden,
                    workers=c.workers, batch_size=m.batch_size, memory_per_node=_memory(spec, c.ps),
                    bottleneck=label)


# --- all-reduce, hybrid, collective ------------------------------------------------------


def overlap_share(workers: float, cores: float) -> float:
    """Share of a rank's communication *software* (the all-reduce's reductions and copies on
    gloo's threads) that can run beside its backward pass: it needs a core that no rank's
    compute occupies. With `cores` > 0 shared by `workers` computing ranks: min(1, max(0,
    (cores - workers) / workers)), each rank's communication thread needing a core of its own;
    1 when cores are not shared (0). On a saturated CPU an overlapped all-reduce only moves
    (processor sharing, `cpu_slowdown`): the backward slows by what it would hide. Wire time
    needs no CPU and overlaps regardless. psrec's 2-rank runs on 2 cores measure the bucketed
    all-reduce exposed: 3.3-4.7 ms a step, where the model hid all of it.

    >>> overlap_share(2, 2), overlap_share(2, 8), overlap_share(2, 3), overlap_share(64, 0)
    (0.0, 1.0, 0.5, 1.0)
    """
    if cores <= 0:
        return 1.0
    return min(1.0, max(0.0, (cores - workers) / workers))


def allreduce_calls(spec: SimSpec) -> int:
    """All-reduce calls per step: one per bucket of about `options.bucket_bytes` of dense
    gradients (0 without dense parameters or with one rank).

    >>> from psrec.sim.config import ModelSpec, SimOptions, ClusterSpec
    >>> allreduce_calls(SimSpec(cluster=ClusterSpec(workers=4), model=ModelSpec(dense_params=3_000_000)))
    3
    """
    size = spec.model.dense_params * VALUE_BYTES
    if spec.cluster.workers < 2 or size <= 0:
        return 0
    return max(1, math.ceil(size / spec.options.bucket_bytes))


def _dense_allreduce(spec: SimSpec, backward: float) -> tuple[float, float]:
    """(exposed, hidden) seconds of the dense all-reduce. Its k = `allreduce_calls` rings take
    max(wire, software) in all: the link sends while the library reduces and copies
    (`psrec.comm.nic`). With bucketing (`overlap_allreduce`) the wire part and the
    `overlap_share` of the software part of all buckets but the last hide under the backward
    pass, (k - 1) / k of them; the exposed time is the larger remainder. A bucket is
    reduced once the backward has filled it, and nothing of the backward is left to hide the
    last one (DDP, S. Li et al., VLDB 2020, sec. 3.2.3). One bucket hides nothing: psrec's
    DeepFM (0.6 MB of dense gradients in one 4 MiB bucket, 3 ranks on tc-shaped 200 Mbit links)
    measured 29 ms of its all-reduce exposed a step and 3 ms hidden."""
    c, o, cal = spec.cluster, spec.options, spec.calibration
    size = spec.model.dense_params * VALUE_BYTES
    k = allreduce_calls(spec)
    one = allreduce_cost(c.net, c.workers, size, o.allreduce, c.workers_per_node)
    wire = max(1, k) * one.latency + one.transfer  # each bucket is its own all-reduce: its latency steps again
    soft = 0.0
    if c.workers > 1:  # software of k rings: 2(n-1) messages each, 2 * 2(n-1)/n S bytes in + out
        n = c.workers
        soft = slowdown(spec) * (k * cal.coll_alpha * 2 * (n - 1)
                                 + cal.coll_beta * 2 * 2 * (n - 1) / n * size)
    # The link sends while the library works (psrec.comm.nic): a ring costs the larger of the two.
    total = max(wire, soft)
    if not o.overlap_allreduce or not k:
        return total, 0.0
    # Buckets launched during backward: their wire needs no CPU and hides; their software only
    # where a core is free (overlap_share).
    exposed = max(soft - min(soft * overlap_share(c.workers, c.cores) * (k - 1) / k, backward),
                  wire - min(wire * (k - 1) / k, backward))
    return exposed, total - exposed


def hybrid_step(spec: SimSpec) -> StepCost:
    """hybrid: embeddings on the PS (W concurrent), dense all-reduced; the PS applies embedding
    updates asynchronously (T >= W * apply demand), each push inline before it returns (as in
    ps-async: the push holds its own apply), the dense update is local. The W pushes of a
    step are not charged a queue at the shard's lock (3 workers, 1 PS, gRPC, the 4-node testbed
    at 1 Gbit: 149.7 ms measured; 150.7 predicted with the apply, 173 with a (W+1)/2 queue)."""
    c, m, cal = spec.cluster, spec.model, spec.calibration
    cc = _compute(spec)
    slowest, _ = straggler_factors(spec)
    t = ps_traffic(spec, dense_on_ps=False)
    ph = ps_phases(spec, t, c.workers)
    ar, hidden = _dense_allreduce(spec, cc.backward)
    apply = m.dense_params * cal.apply_per_value * slowdown(spec)
    push = ph.push + ph.apply_server / c.workers  # the shard applies a push inline before it returns
    parts = {"compute": cc.total, "pull": ph.pull, "push": push, "allreduce": ar,
             "wait": cc.total * (slowest - 1) + _jitter_wait(spec, "hybrid", cc.total + ph.pull + push + ar + apply),
             "apply": apply}
    own = sum(parts.values())
    if ph.apply_server > own:  # the PS CPU cannot keep up with W workers' embedding updates
        parts["apply"] += ph.apply_server - own
    label = _largest(parts)
    if label in ("pull", "push"):
        label += f" ({_ps_label(ph.pull_worker + ph.push_worker, ph.pull_server + ph.push_server)})"
    return StepCost("hybrid", compute=parts["compute"], pull=ph.pull, push=push, allreduce=ar,
                    wait=parts["wait"], apply=parts["apply"], hidden=hidden, workers=c.workers,
                    batch_size=m.batch_size, memory_per_node=_memory(spec, c.ps), bottleneck=label)


def collective_step(spec: SimSpec) -> StepCost:
    """collective: ids + pooled embeddings all-to-all forward, their gradients backward, dense
    all-reduce; owners apply the distinct rows among all W batches, the dense update is local.

    Per rank: S_ids = B * sum_t keys_t * 8; S_emb = B * sum_t pooled_t * dim_t * 4;
    alltoall = a2a(S_ids) + 2 a2a(S_emb); apply = sum_t D_t(W B keys_t) / W * (apply_per_row +
    dim_t apply_per_value) + dense * apply_per_value.

    With `options.alltoall_payload = "rows"` (psrec's collective: deduplicate, then exchange
    rows), with D_t = distinct keys of one rank's batch: a2a(sizes, 8 n bytes) + a2a(S_keys =
    sum_t D_t * 8) + a2a(S_rows = sum_t D_t dim_t 4) + a2a(S_rows + sum_t D_t * 4 counts).
    Each call adds the calibrated software cost slowdown * (coll_call + (n-1) coll_alpha +
    2 (n-1)/n S (coll_beta + alltoall_beta)) (bytes sent plus received). With a calibrated
    `coll_apply_per_row` the apply is
    slowdown * coll_apply_per_row * sum_t D_t(W B keys_t) / W (lookups, updates and the dense
    optimizer, as measured together), plus `coll_apply_per_step`.
    """
    c, m, o, cal = spec.cluster, spec.model, spec.options, spec.calibration
    n = c.workers
    cc = _compute(spec)
    slowest, _ = straggler_factors(spec)
    if o.alltoall_payload == "rows":
        own = table_stats(spec)
        s_keys = sum(st.distinct for st, _ in own) * KEY_BYTES
        s_rows = sum(st.distinct * dim for st, dim in own) * VALUE_BYTES
        s_grads = s_rows + sum(st.distinct for st, _ in own) * 4
        sizes = [KEY_BYTES * n, s_keys, s_rows, s_grads]
    else:
        s_ids = m.batch_size * sum(t.keys_per_sample for t in m.tables) * KEY_BYTES
        s_emb = m.batch_size * sum(t.pooled * t.dim for t in m.tables) * VALUE_BYTES
        sizes = [s_ids, s_emb, s_emb]
    a2a = 0.0
    for sz in sizes:
        wire = alltoall_cost(c.net, n, sz, o.alltoall, c.workers_per_node).time
        if n > 1:  # the link sends while the library works, not while the payload is packed
            moved = 2 * (n - 1) / n * sz
            lib = slowdown(spec) * (cal.coll_alpha * (n - 1) + cal.coll_beta * moved)
            pack = slowdown(spec) * (cal.coll_call + cal.alltoall_beta * moved)
            a2a += pack + max(lib, wire)
        else:
            a2a += wire
    ar, hidden = _dense_allreduce(spec, cc.backward)
    union = table_stats(spec, draws_factor=n)
    if cal.coll_apply_per_row > 0:
        apply = slowdown(spec) * (cal.coll_apply_per_step
                                  + cal.coll_apply_per_row * sum(st.distinct / n for st, _ in union))
    else:
        apply = sum(st.distinct / n * (cal.apply_per_row + dim * cal.apply_per_value) for st, dim in union)
        apply += m.dense_params * cal.apply_per_value + cal.apply_per_call
        apply *= slowdown(spec)
    wait = cc.total * (slowest - 1) + _jitter_wait(spec, "collective", cc.total + a2a + ar + apply)
    parts = {"compute": cc.total, "alltoall": a2a, "allreduce": ar, "wait": wait, "apply": apply}
    return StepCost("collective", compute=cc.total, alltoall=a2a, allreduce=ar, wait=wait,
                    apply=apply, hidden=hidden, workers=c.workers, batch_size=m.batch_size,
                    memory_per_node=_memory(spec, c.workers), bottleneck=_largest(parts))


MODES: dict[str, Callable[[SimSpec], StepCost]] = {
    "ps-async": ps_async_step,
    "ps-sync": ps_sync_step,
    "hybrid": hybrid_step,
    "collective": collective_step,
}


def simulate(spec: SimSpec, modes: tuple[str, ...] | None = None) -> dict[str, StepCost]:
    """StepCost of each mode (default: all four) for `spec`."""
    names = modes or tuple(MODES)
    for n in names:
        if n not in MODES:
            raise ValueError(f"unknown mode {n!r}; known: {', '.join(MODES)}")
    return {n: MODES[n](spec) for n in names}
