"""Embedding placement on GPUs, and the step time of a collective GPU job under a placement.

Each table is sharded one of three ways (TorchRec's sharding types, D. Ivchenko et al.,
"TorchRec: a PyTorch Domain Library for Recommendation Systems", RecSys 2022; DLRM's
model-parallel embeddings, M. Naumov et al., arXiv:1906.00091), on n GPUs of B samples each
(global batch n B), K lookups and P pooled vectors of width D per sample:

    table   one GPU holds it: looks up n B K rows, receives n B K ids, sends n B P D values
    column  k = the largest divisor of D <= min(n, D / 4) shards of D / k columns, each a
            table-wise shard on its own GPU (the ids go to all k)
    row     every GPU holds R / n rows (mod placement): looks up n B K / n rows; its partial
            pools of all n B samples are reduce-scattered, n B P D values in and out per GPU

A TableSpec of f single-valued fields (pooled = f) is f feature tables of R / f rows each, and
table- and column-wise sharding place those; row-wise splits all of them over the n GPUs. Shards
are stored in HBM or in host memory behind an HBM cache (`psrec.sim.embedding_cost`); a
GPU's cache space is the HBM left after its HBM shards and dense state, split among its cached
shards by their size. A row-wise cache holds each shard's hottest rows, together the n c
hottest of the table.

Step (synchronous data-parallel MLP, model-parallel embeddings; the dense all-reduce overlaps
the backward pass as in DDP):

    T = compute + lookup (busiest GPU) + a2a(ids) + 2 a2a(pooled) + max(0, allreduce - backward)

with compute = B flops / (peak * mlp_efficiency) + step_overhead + the dense optimizer's HBM
traffic; each all-to-all takes the busiest GPU's max(sent, received) bytes as every GPU's
(`psrec.sim.collective.alltoall_cost`: it ends when its busiest rank does).

The planner (`plan`) tries every per-table (sharding, storage) choice when there are at most
`EXHAUSTIVE` combinations, else improves one table at a time until no change helps; table-
and column-wise shards go greedily to the least-loaded GPU with room (R. L. Graham's LPT). A
plan that does not fit is kept and reported with its problems: the fastest fitting plan wins,
and when none fits the fastest is returned with `fits = False`.
"""
from __future__ import annotations

import heapq
import itertools
import math
from dataclasses import dataclass, replace
from typing import Any

from psrec.sim.breakdown import BACKWARD_SHARE, StepCost
from psrec.sim.collective import allreduce_cost, alltoall_cost
from psrec.sim.config import KEY_BYTES, VALUE_BYTES, SimSpec
from psrec.sim.embedding_cost import EmbeddingCost, cache_hit_rate, cached_lookup_cost, distinct_misses, hbm_lookup_cost
from psrec.sim.framework_cost import FrameworkCost, framework_cost, get_implementation, host_step
from psrec.sim.hardware import Hardware, get_hardware
from psrec.sim.keys import key_stats

__all__ = ["SHARDINGS", "STORAGES", "EXHAUSTIVE", "Choice", "TableRow", "GPUPlanCost", "column_shards",
           "evaluate_plan", "plan", "plan_rows", "gpu_hardware", "with_gpus"]

SHARDINGS = ("table", "column", "row")
STORAGES = ("hbm", "cache")
EXHAUSTIVE = 4096  # combinations the planner tries one by one (6 options: up to 4 tables)
KEY_INPUT_BYTES = 4  # a key (and the label) as a data file stores it: int32, as Criteo binaries do

Choice = tuple[str, str]  # (sharding, storage) of one table


@dataclass(frozen=True)
class _Shard:
    table: int
    index: int
    rows: int  # rows the shard holds
    dim: int
    lookups: float
    distinct: float
    ids_in: float  # bytes the owner receives in the ids all-to-all
    pooled_out: float  # bytes the owner sends in the pooled all-to-all
    storage: str
    feature_rows: int  # rows of one feature table (the key law's support)
    features: int  # feature tables the shard covers (a row-wise shard: all of them, 1/n each)


@dataclass(frozen=True)
class TableRow:
    """One table of a plan, for the printed plan (like TorchRec's planner stats)."""

    name: str
    sharding: str
    storage: str
    shards: int
    gpus: str
    rows_per_shard: float
    gb_per_shard: float
    hit_rate: float
    lookup_ms: float

    def as_row(self) -> dict[str, Any]:
        return {"table": self.name, "sharding": self.sharding, "storage": self.storage, "shards": self.shards,
                "gpus": self.gpus, "rows/shard": f"{self.rows_per_shard:.3g}", "GB/shard": self.gb_per_shard,
                "hit %": 100 * self.hit_rate, "lookup ms": self.lookup_ms}


@dataclass(frozen=True)
class GPUPlanCost:
    """A placement's step (`step`: mode collective, `apply` = the embedding kernels), memory
    per GPU (bytes, busiest GPU), whether it fits, and why not."""

    step: StepCost
    choices: tuple[Choice, ...]
    tables: tuple[TableRow, ...]
    hbm_per_gpu: float
    host_per_gpu: float
    fits: bool
    problems: tuple[str, ...]
    hardware: str
    gpus: int


def gpu_hardware(spec: SimSpec) -> Hardware:
    """The spec's GPU hardware (`cluster.hardware`); an error if it names none or a CPU."""
    if not spec.cluster.hardware:
        raise ValueError("a GPU plan needs cluster.hardware (e.g. h100-ib400)")
    h = get_hardware(spec.cluster.hardware, spec.hardware)
    if h.kind != "gpu":
        raise ValueError(f"cluster.hardware {h.name!r} is a {h.kind} node, not a GPU one")
    return h


def column_shards(dim: int, gpus: int) -> int:
    """k column shards: the largest divisor of `dim` <= min(gpus, dim // 4) (>= 1).

    >>> column_shards(16, 8), column_shards(16, 3), column_shards(8, 64), column_shards(4, 8)
    (4, 2, 2, 1)
    """
    top = max(1, min(gpus, dim // 4))
    return max(k for k in range(1, top + 1) if dim % k == 0)


def _features(t: Any) -> int:
    """Feature tables in a TableSpec: its pooled vectors (f single-valued fields = f tables), at
    most one per row."""
    return max(1, min(t.pooled, t.rows))


def _shards(spec: SimSpec, n: int, choices: tuple[Choice, ...]) -> list[_Shard]:
    b = spec.model.batch_size
    out = []
    for i, (t, s, (sharding, storage)) in enumerate(zip(spec.model.tables, spec.data.exponents(len(spec.model.tables)),
                                                         choices)):
        f = _features(t)
        frows = max(1, t.rows // f)
        draws = n * b * t.keys_per_sample / f  # per feature table
        distinct = key_stats(frows, s, float(draws)).distinct
        ids, pooled = draws * KEY_BYTES, n * b * t.pooled / f * t.dim * VALUE_BYTES
        if sharding == "row" and n > 1:
            out += [_Shard(i, g, math.ceil(t.rows / n), t.dim, f * draws / n, f * distinct / n, f * ids / n,
                           f * pooled, storage, frows, f) for g in range(n)]
        elif sharding == "column" and n > 1:
            k = column_shards(t.dim, n)
            out += [_Shard(i, j, frows, t.dim // k, draws, distinct, ids, pooled / k, storage, frows, 1)
                    for j in range(f * k)]
        else:
            out += [_Shard(i, j, frows, t.dim, draws, distinct, ids, pooled, storage, frows, 1) for j in range(f)]
    return out


def _state_bytes(spec: SimSpec, rows: float, dim: int) -> float:
    return rows * dim * VALUE_BYTES * spec.options.optimizer_slots


def _place(spec: SimSpec, hw: Hardware, n: int, shards: list[_Shard],
           sharding_of: list[str]) -> dict[tuple[int, int], int]:
    """GPU of each shard: row-wise shard g on GPU g; the others LPT by looked-up values
    (lookups x dim, what the HBM reads), each on the least-loaded GPU with room for it."""
    where: dict[tuple[int, int], int] = {}
    load = [0.0] * n
    hbm = [spec.model.dense_params * spec.gpu.dense_state_bytes] * n
    for sh in shards:
        if sharding_of[sh.table] == "row" and n > 1:
            where[(sh.table, sh.index)] = sh.index
            load[sh.index] += sh.lookups * sh.dim
            if sh.storage == "hbm":
                hbm[sh.index] += _state_bytes(spec, sh.rows, sh.dim)
    free = [s for s in shards if (s.table, s.index) not in where]
    cap = hw.usable_hbm
    heap = [(load[g], hbm[g], g) for g in range(n)]
    heapq.heapify(heap)
    for sh in sorted(free, key=lambda s: (-s.lookups * s.dim, s.table, s.index)):
        need = _state_bytes(spec, sh.rows, sh.dim) if sh.storage == "hbm" else 0.0
        full = []  # least-loaded GPUs without room: skipped, put back after
        while heap and heap[0][1] + need > cap:
            full.append(heapq.heappop(heap))
        ld, used, g = heapq.heappop(heap) if heap else min(full)
        if full and (ld, used, g) in full:
            full.remove((ld, used, g))  # nothing has room: the least loaded takes it (reported later)
        where[(sh.table, sh.index)] = g
        heapq.heappush(heap, (ld + sh.lookups * sh.dim, used + need, g))
        for item in full:
            heapq.heappush(heap, item)
    return where


def evaluate_plan(spec: SimSpec, choices: tuple[Choice, ...],
                  placement: dict[tuple[int, int], int] | None = None) -> GPUPlanCost:
    """Step time, memory and fit of one per-table (sharding, storage) choice on the spec's
    `cluster.workers` GPUs of `cluster.hardware` (module doc). `placement` maps (table, shard) ->
    GPU; None = the greedy placement."""
    hw = gpu_hardware(spec)
    n, m, b = spec.cluster.workers, spec.model, spec.model.batch_size
    if len(choices) != len(m.tables):
        raise ValueError(f"{len(choices)} choices for {len(m.tables)} tables")
    for sh, st in choices:
        if sh not in SHARDINGS or st not in STORAGES:
            raise ValueError(f"unknown choice ({sh!r}, {st!r}); shardings {SHARDINGS}, storages {STORAGES}")
    sharding_of = [c[0] for c in choices]
    shards = _shards(spec, n, choices)
    where = placement if placement is not None else _place(spec, hw, n, shards, sharding_of)
    exps = spec.data.exponents(len(m.tables))
    dense_hbm = m.dense_params * spec.gpu.dense_state_bytes
    hbm = [float(dense_hbm)] * n
    host = [0.0] * n
    for sh in shards:
        g = where[(sh.table, sh.index)]
        if sh.storage == "hbm":
            hbm[g] += _state_bytes(spec, sh.rows, sh.dim)
        else:
            host[g] += _state_bytes(spec, sh.rows, sh.dim)
    problems = []
    free = [hw.usable_hbm - x for x in hbm]
    for g in range(n):
        if free[g] < 0:
            problems.append(f"GPU {g}: {hbm[g] / 1e9:.1f} GB in HBM > {hw.usable_hbm / 1e9:.1f} GB usable")
    host_cap = hw.host_bytes / hw.devices_per_node
    for g in range(n):
        if host[g] > host_cap:
            problems.append(f"GPU {g}: {host[g] / 1e9:.1f} GB of cached tables > {host_cap / 1e9:.1f} GB host share")
    cached_bytes = [0.0] * n
    for sh in shards:
        if sh.storage == "cache":
            cached_bytes[where[(sh.table, sh.index)]] += _state_bytes(spec, sh.rows, sh.dim)
    per_gpu = [0.0] * n
    ids_send, ids_recv, pool_send, pool_recv = [0.0] * n, [0.0] * n, [0.0] * n, [0.0] * n
    ids_all = pool_all = 0.0  # what every GPU sends to / gets from the owners, whoever they are
    rows_out: dict[int, list[tuple[_Shard, int, EmbeddingCost]]] = {}
    for sh in shards:
        g = where[(sh.table, sh.index)]
        t, s = m.tables[sh.table], exps[sh.table]
        row_wise = sharding_of[sh.table] == "row" and n > 1
        if sh.storage == "hbm":
            cost = hbm_lookup_cost(sh.lookups, sh.distinct, sh.dim, hw.hbm_bandwidth, spec.options.optimizer_slots)
        else:
            share = _state_bytes(spec, sh.rows, sh.dim) / cached_bytes[g] if cached_bytes[g] > 0 else 0.0
            cache_rows = max(0.0, free[g]) * share / (sh.dim * VALUE_BYTES * spec.options.optimizer_slots)
            # per feature table: a row-wise cache holds the n c / f hottest rows of each, together
            per_feature = min(sh.feature_rows, cache_rows * (n if row_wise else 1) / sh.features)
            hit = cache_hit_rate(sh.feature_rows, s, per_feature)
            draws = n * b * t.keys_per_sample / _features(t)
            miss = distinct_misses(sh.feature_rows, s, per_feature, draws) * sh.features / (n if row_wise else 1)
            cost = cached_lookup_cost(sh.lookups, sh.distinct, miss, hit, sh.dim, hw.hbm_bandwidth,
                                      hw.host_bandwidth, spec.options.optimizer_slots)
        per_gpu[g] += cost.total
        rows_out.setdefault(sh.table, []).append((sh, g, cost))
        if n == 1:
            continue
        if row_wise:  # bucketised ids both ways; partial pools of all n B samples reduce-scattered
            ids_send[g] += sh.ids_in
            ids_recv[g] += sh.ids_in
            pool_send[g] += sh.pooled_out
            pool_recv[g] += sh.pooled_out
        else:  # every GPU sends its ids to the owner and gets its B samples' pooled vectors back
            ids_all += sh.ids_in / n
            pool_all += sh.pooled_out / n
            ids_recv[g] += sh.ids_in
            pool_send[g] += sh.pooled_out
    o, net, per_node = spec.gpu, spec.cluster.net, hw.devices_per_node
    if n > 1:
        s_ids = max(max(a + ids_all, c) for a, c in zip(ids_send, ids_recv))
        s_pool = max(max(a, c + pool_all) for a, c in zip(pool_send, pool_recv))
        a2a = (alltoall_cost(net, n, s_ids, o.alltoall, per_node).time
               + 2 * alltoall_cost(net, n, s_pool, o.alltoall, per_node).time)
    else:
        a2a = 0.0
    flops = o.flops_per_sample or 6.0 * m.dense_params
    compute = b * flops / (hw.peak_flops * hw.mlp_efficiency) + hw.step_overhead
    compute += 2 * dense_hbm / hw.hbm_bandwidth  # the dense optimizer reads and writes its state
    fw = _framework(spec, hw)
    compute += fw.interaction
    backward = compute * BACKWARD_SHARE
    ar = allreduce_cost(net, n, m.dense_params * VALUE_BYTES, o.allreduce, per_node).time if n > 1 else 0.0
    exposed = max(0.0, ar - backward)
    lookup = max(per_gpu) + fw.pooled
    gpu_busy = compute + a2a + exposed + lookup
    idle = host_step(gpu_busy, fw, get_implementation(o.implementation)) - gpu_busy  # the GPU waits for the host
    step = StepCost("collective", compute=compute, alltoall=a2a, allreduce=exposed, apply=lookup, wait=idle,
                    hidden=ar - exposed, workers=n, batch_size=b, memory_per_node=max(hbm),
                    bottleneck=max({"compute": compute, "alltoall": a2a, "allreduce": exposed,
                                    "embedding lookup": lookup, "host": idle}.items(), key=lambda kv: kv[1])[0])
    tables = []
    for i, t in enumerate(m.tables):
        parts = rows_out[i]
        gpus = sorted({g for _, g, _ in parts})
        tables.append(TableRow(
            t.name, choices[i][0] if n > 1 else "table", choices[i][1], len(parts),
            f"{gpus[0]}-{gpus[-1]}" if len(gpus) > 2 else ",".join(map(str, gpus)),
            parts[0][0].rows, _state_bytes(spec, parts[0][0].rows, parts[0][0].dim) / 1e9,
            min(c.hit_rate for _, _, c in parts), 1e3 * max(c.total for _, _, c in parts)))
    return GPUPlanCost(step, tuple(choices), tuple(tables), max(hbm), max(host), not problems, tuple(problems),
                       hw.name, n)


def _framework(spec: SimSpec, hw: Hardware) -> FrameworkCost:
    """What the spec's `gpu.implementation` adds to one GPU's step (`psrec.sim.framework_cost`):
    its pooled vectors are the B samples' of all tables, whoever looks them up."""
    m, o = spec.model, spec.gpu
    values = sum(t.pooled * t.dim for t in m.tables)
    dim = max((t.dim for t in m.tables), default=0)  # a dot interaction needs one width
    keys = sum(t.keys_per_sample for t in m.tables)
    return framework_cost(get_implementation(o.implementation), batch=m.batch_size,
                          tables=sum(_features(t) for t in m.tables), pooled_values=values, dim=dim,
                          interaction_vectors=o.interaction_vectors,
                          input_bytes_per_sample=o.input_bytes_per_sample or KEY_INPUT_BYTES * (keys + 1),
                          activation_bytes=o.activation_bytes, hbm_bandwidth=hw.hbm_bandwidth,
                          host_bandwidth=hw.host_bandwidth, matmul_flops=hw.peak_flops * hw.mlp_efficiency)


def _options(spec: SimSpec) -> list[Choice]:
    o = spec.gpu
    shardings = SHARDINGS if o.sharding == "auto" else (o.sharding,)
    storages = STORAGES if o.storage == "auto" else (o.storage,)
    return [(a, s) for a in shardings for s in storages]


def _better(a: GPUPlanCost, b: GPUPlanCost | None) -> bool:
    return b is None or (a.fits, -a.step.total) > (b.fits, -b.step.total)


def plan(spec: SimSpec) -> GPUPlanCost:
    """The planner: the per-table choice with the lowest step time that fits (module doc)."""
    opts = _options(spec)
    k = len(spec.model.tables)
    best: GPUPlanCost | None = None
    if len(opts) ** k <= EXHAUSTIVE:
        for combo in itertools.product(opts, repeat=k):
            c = evaluate_plan(spec, combo)
            if _better(c, best):
                best = c
        assert best is not None
        return best
    current = tuple(opts[0] for _ in range(k))
    best = evaluate_plan(spec, current)
    improved = True
    while improved:  # coordinate descent: one table at a time
        improved = False
        for i in range(k):
            for o in opts:
                trial = best.choices[:i] + (o,) + best.choices[i + 1:]
                c = evaluate_plan(spec, trial)
                if _better(c, best):
                    best, improved = c, True
    return best


def plan_rows(cost: GPUPlanCost) -> list[dict[str, Any]]:
    """The printed plan, one row per table."""
    return [t.as_row() for t in cost.tables]


def with_gpus(spec: SimSpec, gpus: int, hardware: str | None = None) -> SimSpec:
    """`spec` on `gpus` GPUs (of `hardware` when given), its network from the hardware."""
    from psrec.sim.hardware import apply_hardware

    c = replace(spec.cluster, workers=gpus, hardware=hardware or spec.cluster.hardware)
    return apply_hardware(replace(spec, cluster=c))
