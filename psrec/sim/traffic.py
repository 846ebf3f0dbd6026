"""What one PS worker's step sends and how long its pull and push take (per worker step).

The parameter-server building blocks of the cost model (`psrec.sim.costs`, whose module doc
gives the formulas and their sources): per-table key statistics, the worker's and the busiest
shard's bytes and messages (`ps_traffic`), the time a NIC spends on them (`nic_time`), the
busiest shard's lookup per pull (`ps_serve_time`), and the pull and push phases with W
workers at the PS at once (`ps_phases`). Pure functions; units: seconds, bytes.
"""
from __future__ import annotations

from dataclasses import dataclass

from psrec.net import transfer_time
from psrec.sim.config import KEY_BYTES, VALUE_BYTES, SimSpec
from psrec.sim.contention import busy_processes, cpu_slowdown
from psrec.sim.keys import KeyStats, key_stats, shard_load, touched_shards

__all__ = ["PSTraffic", "ps_traffic", "table_stats", "nic_time", "wire_time", "server_nic_time", "slowdown",
           "ps_serve_time", "PSPhases", "ps_phases"]


@dataclass(frozen=True)
class PSTraffic:
    """One worker's step against M parameter servers (bytes and messages per worker step).

    Args:
        keys: distinct keys the worker touches (all tables).
        request_bytes: pull request, keys * 8.
        response_bytes: pull response, rows * dim * 4 (+ the dense parameters, * 4).
        push_bytes: keys * (8 + dim * 4) (+ dense gradients).
        messages: shards the worker sends a request to per phase.
        imbalance: max/mean sparse load over shards (partitioner; see `psrec.sim.keys`).
        shard_request_bytes, shard_response_bytes, shard_push_bytes: the busiest shard's share
            of this worker's bytes (sparse share * imbalance + dense / M).
        shard_messages: messages the busiest shard gets from this worker per phase (<= 1).
        shard_apply_rows, shard_apply_values: rows and float values the busiest shard
            applies for this worker's push.
        shard_lookup_rows: rows the busiest shard looks up for this worker's pull (the same
            keys it later applies: keys * imbalance / M).
    """

    keys: float
    request_bytes: float
    response_bytes: float
    push_bytes: float
    messages: float
    imbalance: float
    shard_request_bytes: float
    shard_response_bytes: float
    shard_push_bytes: float
    shard_messages: float
    shard_apply_rows: float
    shard_apply_values: float
    shard_lookup_rows: float


def table_stats(spec: SimSpec, draws_factor: int = 1) -> list[tuple[KeyStats, int]]:
    """(KeyStats, dim) per table for `draws_factor` workers' batches drawn together."""
    b = spec.model.batch_size * draws_factor
    return [(key_stats(t.rows, s, float(b * t.keys_per_sample)), t.dim)
            for t, s in zip(spec.model.tables, spec.data.exponents(len(spec.model.tables)))]


def ps_traffic(spec: SimSpec, dense_on_ps: bool | None = None) -> PSTraffic:
    """Bytes, messages and per-shard shares of one worker's step (see the module doc).

    Example: one table of 4 rows, uniform keys, dim 2, batch 2 x 1 key, 1 PS, no dense:
        q = 1 - (3/4)^2 = 7/16 per row, D = 4 * 7/16 = 1.75 keys; request 1.75 * 8 = 14 bytes,
        response 1.75 * 2 * 4 = 14 bytes, push 1.75 * (8 + 8) = 28 bytes.
        >>> from psrec.sim.config import *
        >>> spec = SimSpec(cluster=ClusterSpec(workers=1, ps=1), data=DataSpec(zipf=0),
        ...                model=ModelSpec(tables=(TableSpec(rows=4, dim=2, keys_per_sample=1),),
        ...                                dense_params=0, batch_size=2))
        >>> t = ps_traffic(spec)
        >>> round(t.keys, 9), round(t.request_bytes, 9), round(t.response_bytes, 9), round(t.push_bytes, 9)
        (1.75, 14.0, 14.0, 28.0)
    """
    c, o = spec.cluster, spec.options
    dense_on_ps = o.dense_on_ps if dense_on_ps is None else dense_on_ps
    stats = table_stats(spec)
    m, w = c.ps, c.workers
    keys = sum(st.distinct for st, _ in stats)
    row_values = sum(st.distinct * dim for st, dim in stats)  # float values of the rows
    dense = spec.model.dense_params if dense_on_ps else 0
    imbalance = c.ps_imbalance or shard_load([(st, 1.0) for st, _ in stats], m, w, o.partitioner).imbalance
    messages = float(m) if dense > 0 else touched_shards(keys, m)
    sparse_share = imbalance / m  # the busiest shard's share of a worker's sparse traffic
    return PSTraffic(
        keys=keys,
        request_bytes=keys * KEY_BYTES,
        response_bytes=(row_values + dense) * VALUE_BYTES,
        push_bytes=keys * KEY_BYTES + (row_values + dense) * VALUE_BYTES,
        messages=messages,
        imbalance=imbalance,
        shard_request_bytes=keys * KEY_BYTES * sparse_share,
        shard_response_bytes=(row_values * sparse_share + dense / m) * VALUE_BYTES,
        shard_push_bytes=keys * KEY_BYTES * sparse_share + (row_values * sparse_share + dense / m) * VALUE_BYTES,
        shard_messages=min(1.0, messages / m * imbalance),
        shard_apply_rows=keys * sparse_share,
        shard_apply_values=row_values * sparse_share + dense / m,
        shard_lookup_rows=keys * sparse_share,
    )


def nic_time(spec: SimSpec, messages: float, nbytes: float) -> float:
    """Seconds a NIC is busy with `messages` messages and `nbytes` bytes:
    transfer_time(net, nbytes, messages) + messages * alpha_sw + nbytes * beta_sw.

    >>> from psrec.sim.config import *; from psrec.net import NetConfig
    >>> from psrec.sim.calibration import Calibration
    >>> spec = SimSpec(cluster=ClusterSpec(net=NetConfig(bandwidth=1e9, latency=1e-4)),
    ...                calibration=Calibration(alpha=1e-4, beta=1e-9))
    >>> round(nic_time(spec, 2, 1e6), 9)     # 2 * (0.1 + 0.1) ms + 1e6 * (1 + 1) ns
    0.0024
    """
    cal = spec.calibration
    software = slowdown(spec) * (messages * cal.alpha + nbytes * cal.beta)
    return transfer_time(spec.cluster.net, nbytes, messages) + software


def wire_time(spec: SimSpec, messages: float, nbytes: float) -> float:
    """The network's own share of `nic_time` (no software cost): `SimOptions.software_at_server` off."""
    return transfer_time(spec.cluster.net, nbytes, messages)


def server_nic_time(spec: SimSpec, messages: float, nbytes: float) -> float:
    """Seconds the busiest PS's NIC is busy with `messages` and `nbytes` (all the concurrent
    workers' shares): the wire, plus the software cost when `options.software_at_server`.

    Under psrec's `--net` emulation (`options.emulated_net`) no wire is shared: each worker's
    client books the transfer time of its own bytes (`psrec.ps.client`), so the PS end adds no
    wire and W workers pulling at once do not queue behind one another's bytes.

    >>> from psrec.sim.config import *; from psrec.net import NetConfig
    >>> from psrec.sim.calibration import Calibration
    >>> spec = SimSpec(cluster=ClusterSpec(net=NetConfig(bandwidth=1e9, latency=1e-4)),
    ...                calibration=Calibration(alpha=1e-4, beta=1e-9),
    ...                options=SimOptions(software_at_server=False))
    >>> round(server_nic_time(spec, 2, 1e6), 9)     # 2 * 0.1 ms + 1e6 B / 1 GB/s
    0.0012
    >>> import dataclasses
    >>> emu = dataclasses.replace(spec, options=SimOptions(software_at_server=False, emulated_net=True))
    >>> server_nic_time(emu, 2, 1e6)
    0.0
    """
    o = spec.options
    wire = wire_time(spec, messages, nbytes)
    software = nic_time(spec, messages, nbytes) - wire if o.software_at_server else 0.0
    return (0.0 if o.emulated_net else wire) + software


def slowdown(spec: SimSpec) -> float:
    """CPU sharing factor of `spec` (1 on a cluster; W / cores on an oversubscribed machine)."""
    return cpu_slowdown(spec.cluster.workers, spec.cluster.cores)


def ps_serve_time(spec: SimSpec, t: PSTraffic, busy: float | None = None) -> float:
    """Seconds the busiest shard spends serving one worker's pull, between the request's
    arrival and the response's departure: cpu_slowdown(busy, cores) * lookup_per_row *
    shard_lookup_rows, `busy` = processes sharing the cores meanwhile (default W, `slowdown`;
    ps-sync: `busy_processes("ps-sync", "serve", W, M)`).

    What psrec's shard does per pull (`psrec.ps.shard.PSShard.pull`): under its lock, one EV
    lookup per table (hash probe, creation of the rows of new keys, gather into a new array)
    and a copy of its dense slice. The shards of one pull work in parallel, so the worker waits
    for the busiest one: this term is per shard, unlike the software alpha/beta, which the
    worker's own end pays for all its bytes one after another. 0 with an uncalibrated
    `lookup_per_row` (the lookup then stays inside alpha/beta, as before it was fitted).

    Example: 1.75 keys on one shard, 1 ms per row: 1.75 ms.
        >>> from psrec.sim.config import *; from psrec.sim.calibration import Calibration
        >>> spec = SimSpec(cluster=ClusterSpec(workers=1, ps=1), data=DataSpec(zipf=0),
        ...                model=ModelSpec(tables=(TableSpec(rows=4, dim=2, keys_per_sample=1),),
        ...                                dense_params=0, batch_size=2),
        ...                calibration=Calibration(lookup_per_row=1e-3))
        >>> round(ps_serve_time(spec, ps_traffic(spec)), 9)
        0.00175
    """
    n = spec.cluster.workers if busy is None else busy
    return cpu_slowdown(n, spec.cluster.cores) * spec.calibration.lookup_per_row * t.shard_lookup_rows


@dataclass(frozen=True)
class PSPhases:
    """Pull and push seconds with `concurrent` workers at once, and which end limits each."""

    pull: float
    push: float
    pull_worker: float
    pull_server: float
    push_worker: float
    push_server: float
    apply_server: float  # busiest PS's apply seconds for the concurrent workers' pushes
    serve: float = 0.0  # busiest PS's seconds serving one worker's pull (`ps_serve_time`), in `pull`


def ps_phases(spec: SimSpec, t: PSTraffic, concurrent: int, mode: str = "") -> PSPhases:
    """Pull = request + the busiest shard's serve time (`ps_serve_time`) + response, push;
    request, response and push each max(worker NIC, busiest PS NIC with `concurrent` workers'
    shares, `server_nic_time`). Apply = concurrent * (apply_per_call + the busiest shard's rows
    and values). The serve and the apply run at `cpu_slowdown(busy_processes(mode, ...))`: W
    processes unless `mode` says otherwise."""
    cal = spec.calibration
    k = concurrent
    req_w = nic_time(spec, t.messages, t.request_bytes)
    srv = server_nic_time
    req_s = srv(spec, k * t.shard_messages, k * t.shard_request_bytes)
    resp_w = nic_time(spec, t.messages, t.response_bytes)
    resp_s = srv(spec, k * t.shard_messages, k * t.shard_response_bytes)
    push_w = nic_time(spec, t.messages, t.push_bytes)
    push_s = srv(spec, k * t.shard_messages, k * t.shard_push_bytes)
    c = spec.cluster
    apply_s = k * (cal.apply_per_call + t.shard_apply_rows * cal.apply_per_row
                   + t.shard_apply_values * cal.apply_per_value) * cpu_slowdown(
        busy_processes(mode, "apply", c.workers, c.ps), c.cores)
    serve = ps_serve_time(spec, t, busy_processes(mode, "serve", c.workers, c.ps))
    return PSPhases(pull=max(req_w, req_s) + serve + max(resp_w, resp_s), push=max(push_w, push_s),
                    pull_worker=req_w + resp_w, pull_server=req_s + serve + resp_s,
                    push_worker=push_w, push_server=push_s, apply_server=apply_s, serve=serve)
