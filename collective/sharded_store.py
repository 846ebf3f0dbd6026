"""An EmbeddingStore whose rows are sharded across the ranks of a collective group.

Each rank holds one shard: a `LocalStore` of embedding variables for the keys it owns (the
same EV core as local and PS training, so freq/version/admission/eviction behave the same).
Every rank runs the same step at the same time (the TorchRec / HugeCTR pattern):

    lookup_many (forward)
        1. all-to-all of sizes   (N, T) int64: how many keys of each table go to each rank
        2. all-to-all of keys    each rank's distinct keys, grouped by owner
        3. owner: EV lookup      of the distinct keys it received from all ranks
        4. all-to-all of rows    back to the ranks that asked, in the order they asked
    apply_many (backward)
        5. all-to-all of grads   each rank's summed row gradients and occurrence counts, back
                                 to the owners along the reverse of step 4's route
        6. owner: EV apply       gradients of a key from all ranks summed and averaged over the
                                 ranks (the gradient of the mean loss over the union of their
                                 batches; or only summed, when the ranks pre-scale their loss
                                 gradient by 1/N), counts summed (freq), the step as version

Message sizes (bytes, rank r, keys K_t(r->d) of table t it sends rank d != r):

    sizes 8 T per peer;  keys 8 K;  rows 4 dim_t K;  grads (4 dim_t + 4) K

A pipelined step (`train.pipeline`, `prefetch`) runs steps 1-2 of the next batch (and with
"stale1" steps 3-4 as well) on a side group of the same ranks, on the worker's prefetch thread,
while this batch's forward, backward and all-reduce run on the main group; each group keeps
its own order, so the two never interleave their messages.

Counts travel with the gradients, bit-cast into the float32 message as int32 (one message
instead of two; -1 marks a table with no gradient this step, which the owner leaves
untouched, as local training does).
"""
from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

import numpy as np
import torch

from collective.sharding import Sharding
from psrec.comm.collectives import Collectives
from psrec.comm.traffic import Traffic
from psrec.embedding.local import LocalStore
from psrec.embedding.store import BatchedStore
from psrec.ev import EVConfig, expand, segment_sum, unique
from psrec.net import NetConfig

__all__ = ["ShardedStore", "ShardCounters", "exchange_blocks"]


@dataclass
class ShardCounters:
    """What this rank's shard served (keys 8 B, values 4 B per float)."""

    rank: int
    lookups: int = 0  # lookup rounds it took part in
    keys_served: int = 0  # keys other ranks asked it for (with repeats across ranks)
    bytes_served: int = 0  # row bytes sent to other ranks
    keys_applied: int = 0  # gradient rows applied (after summing over ranks)
    rows: dict[str, int] = field(default_factory=dict)  # rows held per table (filled by `stats`)


def exchange_blocks(comm: Collectives, blocks: list[list[np.ndarray]], recv_numels: list[int],
                    dtype, tag: str, workspace: dict | None = None) -> list[np.ndarray]:
    """All-to-all of several arrays per destination: `blocks[d]` go to rank d, flattened and
    concatenated in order; returns what each rank 0..N-1 sent this one, a flat array per
    source (`recv_numels[s]` elements from rank s). The store's key, row and gradient
    exchanges, and the benchmark's measure of them, go through here.

    This rank's own blocks do not go through the transport (a zero-size split there): they
    are handed back as they are (a view, when they are one array), which saves the copy
    into the message and the copy out of it that the transport would make.

    workspace: a dict the caller keeps between calls. The send and receive buffers are then
    reused from it (grow-only, per dtype) instead of allocated per call: a fresh multi-MB
    buffer costs more in page faults than the exchange itself (measured: a 32 MB all-to-all
    takes 3x as long into a new buffer). The arrays returned are then views into the
    workspace, valid until the next exchange of the same dtype through it.
    """
    dtype = np.dtype(dtype)
    r = comm.rank
    send_splits = [0 if d == r else sum(b.size for b in per_dest) for d, per_dest in enumerate(blocks)]
    recv_splits = [0 if s == r else int(m) for s, m in enumerate(recv_numels)]
    send = _buffer(workspace, ("send", dtype), sum(send_splits), dtype)
    pos = 0
    for d, per_dest in enumerate(blocks):
        if d != r:
            for b in per_dest:
                send[pos:pos + b.size] = b.reshape(-1)
                pos += b.size
    out = None
    if workspace is not None:
        out = torch.from_numpy(_buffer(workspace, ("recv", dtype), sum(recv_splits), dtype))
    got = comm.all_to_all_single(torch.from_numpy(send), send_splits, recv_splits, tag, out=out).numpy()
    own = [np.asarray(b, dtype).reshape(-1) for b in blocks[r]]
    parts, pos = [], 0
    for s, m in enumerate(recv_splits):
        if s == r:
            parts.append(own[0] if len(own) == 1 else (np.concatenate(own) if own else np.zeros(0, dtype)))
        else:
            parts.append(got[pos:pos + m])
            pos += m
    return parts


def _buffer(workspace: dict | None, key, size: int, dtype) -> np.ndarray:
    """`size` elements of a grow-only buffer kept in `workspace` (a fresh array without one)."""
    if workspace is None:
        return np.empty(size, dtype)
    buf = workspace.get(key)
    if buf is None or buf.size < size:
        buf = workspace[key] = np.empty(max(size, 2 * (0 if buf is None else buf.size)), dtype)
    return buf[:size]


def wait_for(future: Future, timeout_s: float, what: str):
    """`future.result()` within `timeout_s` seconds, or a TimeoutError naming `what`."""
    try:
        return future.result(timeout=timeout_s)
    except FutureTimeout:
        raise TimeoutError(f"{what} did not finish within {timeout_s:g} s (collective.timeout_s)") from None


@dataclass
class Prefetched:
    """A lookup begun a step ahead (`ShardedStore.prefetch`): the keys it was for (the dict
    itself), their route, their rows when fetched ahead too (one step stale; None: fetched at
    the step), its seconds in flight and the traffic of its exchanges."""

    keys: dict[str, np.ndarray]
    route: _Route
    rows: dict[str, np.ndarray] | None
    seconds: float
    traffic: Traffic


@dataclass
class _Route:
    """Where one training lookup's keys went, kept for the gradients that follow it."""

    keys: dict[str, np.ndarray]  # table -> this rank's distinct keys (as passed in)
    order: dict[str, np.ndarray]  # table -> permutation grouping the keys by owner
    sizes: np.ndarray  # (N, T) keys this rank sent to each rank, per table
    recv_sizes: np.ndarray  # (N, T) keys each rank sent this rank, per table
    owned: dict[str, tuple[np.ndarray, np.ndarray]]  # table -> (distinct keys received, inverse
    # index of every received key (ranks 0..N-1, back to back) into them)


class ShardedStore(BatchedStore):
    """Embedding tables sharded over the ranks of `comm`; every rank calls every method together.

    Args:
        comm: this rank's collectives.
        tables: table name -> EVConfig, the same on every rank and in the same order (the
            same seeds too, so a key's initial row does not depend on its owner).
        sharding: which rank owns which keys (`collective.sharding`).
        average: the owner averages a key's gradients over the ranks (the gradient of the
            mean loss over the union of their batches). False when the ranks already scale
            their loss gradient by 1/N (`collective.dense_sync.DenseSync` does): then it sums.

    Example (one rank; with more, every rank makes the same calls):
        >>> from psrec.comm.collectives import ThreadGroup
        >>> from collective.sharding import RowWise
        >>> store = ShardedStore(ThreadGroup(1).member(0), {"emb": EVConfig(dim=4)}, RowWise(1))
        >>> keys = np.array([7, 9], dtype=np.int64)
        >>> store.lookup_many({"emb": keys})["emb"].shape
        (2, 4)
        >>> store.apply_many({"emb": (keys, np.ones((2, 4), np.float32), np.array([2, 1]))}, step=1)
        >>> store.local.variable("emb").metadata(keys)[0].tolist()
        [2, 1]
    """

    pull_phase = push_phase = "alltoall"  # the calls time their parts; packing is all-to-all work
    meets_at_lookup = True  # every rank leaves the rows' all-to-all together

    def __init__(self, comm: Collectives, tables: Mapping[str, EVConfig], sharding: Sharding,
                 average: bool = True, net: NetConfig | None = None) -> None:
        if sharding.world_size != comm.world_size:
            raise ValueError(f"sharding is for {sharding.world_size} ranks, the group has {comm.world_size}")
        self.comm = comm
        self.net = net  # emulated network for the traffic's seconds (None: real time only)
        self.sharding = sharding
        self.average = average
        self.names = list(tables)
        self.dims = {t: int(c.dim) for t, c in tables.items()}
        held = {t: c for t, c in tables.items() if sharding.holds(comm.rank, t)}
        self.local: LocalStore | None = LocalStore(held) if held else None
        self.counters = ShardCounters(comm.rank)
        # seconds since the last `take_seconds`: wait (size exchange: where ranks meet),
        # alltoall (key/row/gradient exchanges, packing included), lookup and apply (EV work)
        self._seconds = {"wait": 0.0, "alltoall": 0.0, "lookup": 0.0, "apply": 0.0}
        self._route: _Route | None = None
        # buffers of `exchange_blocks`, reused step after step; every result taken from them
        # is consumed (copied or reduced) before the next exchange of its dtype
        self._workspace: dict = {}
        # the pipelined step (`enable_prefetch`): the side group, whether rows come ahead too,
        # the prefetch the next lookup uses, the future of the one in flight (set by the worker)
        self._side: Collectives | None = None
        self._prefetch_rows = False
        self._ahead: Prefetched | None = None
        self.in_flight: Future | None = None
        self.timeout_s = 300.0  # every wait has a deadline (the plan sets collective.timeout_s)
        self._count_lock = threading.Lock()  # counters from the step's thread and the prefetch's

    # ---------------------------------------------------------------- BatchedStore
    def lookup_many(self, keys: dict[str, np.ndarray], train: bool = True) -> dict[str, np.ndarray]:
        """Rows for each table's distinct keys; a table missing from `keys` asks for nothing.
        Keys sent ahead by `prefetch` (the dict `use` was given) are not sent again."""
        unknown = set(keys) - set(self.dims)
        if unknown:
            raise KeyError(f"unknown tables {sorted(unknown)}; tables: {', '.join(self.names)}")
        t_start = time.perf_counter()
        ahead, self._ahead = self._ahead, None
        t_wait = t_lookup = 0.0
        if ahead is not None and (ahead.keys is keys or not (ahead.keys or keys)):  # an empty step's: {}
            route, rows = ahead.route, ahead.rows
        else:
            route, t_wait = self._send_keys(keys, self.comm, self._workspace)
            rows = None
        if rows is None:
            rows, t_lookup = self._fetch_rows(route, train, self.comm, self._workspace)
        if train:
            self._route = route
        s = self._seconds
        s["wait"] += t_wait
        s["lookup"] += t_lookup
        s["alltoall"] += time.perf_counter() - t_start - t_wait - t_lookup
        return {t: rows[t] for t in keys}

    def _send_keys(self, keys: dict[str, np.ndarray], comm: Collectives, workspace: dict) -> tuple[_Route, float]:
        """Steps 1-2 over `comm`: sizes, then keys, to their owners -> (the route, seconds of
        the size exchange: where ranks meet)."""
        n, names = comm.world_size, self.names
        mine = {t: np.ascontiguousarray(keys.get(t, np.zeros(0, np.int64)), dtype=np.int64) for t in names}
        order, sizes = {}, np.zeros((n, len(names)), np.int64)
        for i, t in enumerate(names):
            own = self.sharding.owners(t, mine[t])
            order[t] = np.argsort(own, kind="stable")
            sizes[:, i] = np.bincount(own, minlength=n)
        t0 = time.perf_counter()
        recv_sizes = comm.all_to_all_single(torch.from_numpy(sizes.reshape(-1)), [len(names)] * n,
                                            [len(names)] * n, "sizes").numpy().reshape(n, len(names))
        t_wait = time.perf_counter() - t0
        # keys, grouped by destination, then table
        got = exchange_blocks(comm, self._by_dest({t: mine[t][order[t]] for t in names}, sizes),
                              recv_sizes.sum(1).tolist(), np.int64, "keys", workspace)
        owned = self._by_table(got, recv_sizes, {t: 1 for t in names})
        distinct = {}
        for t in names:
            u = unique(np.ascontiguousarray(owned[t]))  # a key asked for by several ranks: once (no sort of the keys)
            distinct[t] = (u.keys, u.inverse)
        return _Route(mine, order, sizes, recv_sizes, distinct), t_wait

    def _fetch_rows(self, route: _Route, train: bool, comm: Collectives,
                    workspace: dict) -> tuple[dict[str, np.ndarray], float]:
        """Steps 3-4 over `comm`: the owner's EV lookups, rows back -> (table -> rows of this
        rank's keys, seconds of the lookups)."""
        t0 = time.perf_counter()
        served = {}
        for t in self.names:
            uniq, inv = route.owned[t]
            if len(inv):
                served[t] = expand(self.local.lookup(t, uniq, train=train), inv)  # (K_t, dim) in arrival order
            else:
                served[t] = np.zeros((0, self.dims[t]), np.float32)
        t_lookup = time.perf_counter() - t0
        reply = self._by_dest(served, route.recv_sizes)
        got_rows = exchange_blocks(comm, reply, self._numels(route.sizes, 0), np.float32, "rows", workspace)
        out = self._unpack(got_rows, route.sizes, route.order, route.keys)
        with self._count_lock:
            c, r = self.counters, comm.rank
            c.lookups += 1
            c.keys_served += int(route.recv_sizes.sum() - route.recv_sizes[r].sum())
            c.bytes_served += sum(b.nbytes for d, blocks in enumerate(reply) if d != r for b in blocks)
        return out, t_lookup

    # ---------------------------------------------------------------- pipelined step
    def enable_prefetch(self, side: Collectives, rows: bool) -> None:
        """Let `prefetch` send keys (and, with `rows`, fetch their rows: one step stale) over
        `side`, a second group of the same ranks (`Collectives.side`), while this group's
        collectives run. Collective: every rank calls it with the same `rows`."""
        self._side, self._prefetch_rows, self._side_ws = side, rows, {}

    def prefetch(self, keys: dict[str, np.ndarray]) -> Prefetched:
        """The next step's lookup begun now, on another thread than the step's: its keys to
        their owners, and with stale rows their rows too; every rank calls it for its next
        batch. A stale prefetch looks rows up before this step's update of them; the update
        waits for it (`ahead`), so the rows are exactly one step stale, never a mix."""
        t0 = time.perf_counter()
        route, _ = self._send_keys(keys, self._side, self._side_ws)
        rows = self._fetch_rows(route, True, self._side, self._side_ws)[0] if self._prefetch_rows else None
        return Prefetched(keys, route, rows, time.perf_counter() - t0,
                          Traffic.of_records(self._side.log.take(), self.net))

    def use(self, ahead: Prefetched) -> None:
        """The next `lookup_many` of `ahead.keys` (the same dict) takes this prefetch's route
        (and rows) instead of exchanging keys again."""
        self._ahead = ahead

    def apply_many(self, grads: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], step: int) -> None:
        """Send summed row gradients of the last training lookup's keys to their owners, which
        apply them. `grads`: table -> (keys, grads (n, dim), counts); the keys must be the
        ones that lookup asked for (a table may be left out: it had no gradient)."""
        route = self._route
        if route is None:
            raise RuntimeError("apply_many without a training lookup before it")
        self._route = None
        if self.in_flight is not None and self._prefetch_rows:
            # the next step's stale rows are read before this update, never during it
            wait_for(self.in_flight, self.timeout_s, "the next step's prefetched lookup")
        t_start = time.perf_counter()
        n = self.comm.world_size
        payload = {}
        for t in self.names:
            k = route.keys[t]
            if t in grads:
                gk, g, cnt = grads[t]
                if len(gk) != len(k) or (gk is not k and not np.array_equal(gk, k)):
                    raise ValueError(f"table {t!r}: gradients are for other keys than the last lookup's")
                g = np.asarray(g, np.float32).reshape(len(k), self.dims[t])[route.order[t]]
                c = np.asarray(cnt, np.int32)[route.order[t]]
            else:
                g = np.zeros((len(k), self.dims[t]), np.float32)
                c = np.full(len(k), -1, np.int32)
            payload[t] = np.concatenate([g, c.view(np.float32)[:, None]], axis=1)  # (n_t, dim + 1)
        got = exchange_blocks(self.comm, self._by_dest(payload, route.sizes), self._numels(route.recv_sizes, 1),
                              np.float32, "grads", self._workspace)
        widths = {t: self.dims[t] + 1 for t in self.names}
        received = self._by_table(got, route.recv_sizes, widths)
        t_apply = time.perf_counter()
        scale = np.float32(1.0 / n)
        for t in self.names:
            block = received[t]
            if not len(block):
                continue
            counts = np.ascontiguousarray(block[:, -1]).view(np.int32)
            live = counts >= 0
            if not live.any():
                continue
            uniq, inv = route.owned[t]
            # Sum each key's gradients and counts over the ranks that asked for it, then average
            # over ranks: one update per distinct key, with distinct ascending keys, exactly as
            # local training on the union of the ranks' batches makes it.
            if live.all():
                inv_live, g_live, c_live = inv, block[:, :-1], counts
            else:
                inv_live, g_live, c_live = inv[live], block[live, :-1], counts[live]
            g = segment_sum(g_live, inv_live, len(uniq))  # compiled, in arrival order
            c = np.bincount(inv_live, weights=c_live, minlength=len(uniq)).astype(np.int64)
            if n > 1 and self.average:
                g *= scale
            keys_t = uniq
            if len(inv_live) < len(inv):  # a rank sent no gradient for some keys: leave those untouched
                hit = np.bincount(inv_live, minlength=len(uniq)) > 0
                keys_t, g, c = uniq[hit], g[hit], c[hit]
            self.local.apply_gradients(t, keys_t, g, c, step)
            with self._count_lock:
                self.counters.keys_applied += len(keys_t)
        t_apply = time.perf_counter() - t_apply
        self._seconds["apply"] += t_apply
        self._seconds["alltoall"] += time.perf_counter() - t_start - t_apply

    # ---------------------------------------------------------------- shard state
    def take_traffic(self) -> Traffic:
        """The rank's collectives since the last take (the dense all-reduce's too: one log per rank)."""
        return Traffic.of_records(self.comm.log.take(), self.net)

    def take_seconds(self) -> dict[str, float]:
        """Seconds per phase since the last call (wait, alltoall, lookup, apply)."""
        out = dict(self._seconds)
        for k in self._seconds:
            self._seconds[k] = 0.0
        return out

    def stats(self) -> ShardCounters:
        c = self.counters
        c.rows = {t: int(s.rows) for t, s in self.local.stats().items()} if self.local else {}
        return ShardCounters(**c.__dict__)

    def table_values(self, table: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(keys, values, freqs, versions) of every row this shard holds in `table`."""
        if self.local is None or table not in self.local.table_names:
            z = np.zeros(0, np.int64)
            return z, np.zeros((0, self.dims[table]), np.float32), z, z
        snap = self.local.variable(table).snapshot()
        return snap.keys, snap.values, snap.freqs, snap.versions

    def export(self, path) -> None:
        """Write this rank's shard to `path/rank-<r>/<table>/` (format: psrec.ev.export); the
        EV core restores and re-shards such exports (`EmbeddingVariable.restore`)."""
        from pathlib import Path

        if self.local is not None:
            self.local.export(Path(path) / f"rank-{self.comm.rank}", evict=False)

    def evict(self, step: int | None = None) -> dict:
        """Each held table's configured eviction (TTL / L2), on this shard only."""
        return self.local.evict(step) if self.local else {}

    # ---------------------------------------------------------------- packing
    def _by_dest(self, per_table: dict[str, np.ndarray], sizes: np.ndarray) -> list[list[np.ndarray]]:
        """Arrays grouped by destination (rows of every table sorted by destination, `sizes`
        (N, T) of them per destination) -> blocks[d] = [table 0's rows for d, table 1's, ...]."""
        n = sizes.shape[0]
        blocks: list[list[np.ndarray]] = [[] for _ in range(n)]
        for i, t in enumerate(self.names):
            a = per_table[t]
            off = np.concatenate([[0], np.cumsum(sizes[:, i])])
            for d in range(n):
                blocks[d].append(a[off[d]:off[d + 1]])
        return blocks

    def _by_table(self, parts: list[np.ndarray], sizes: np.ndarray, widths: dict[str, int]) -> dict[str, np.ndarray]:
        """Inverse of `_by_dest` on the receiving side: one flat message per source rank, each
        holding its tables' blocks in order (`sizes` (N, T) keys per source and table) ->
        table -> (K_t, width_t) rows from ranks 0..N-1 back to back (1-D when width is 1)."""
        names = self.names
        out: dict[str, list[np.ndarray]] = {t: [] for t in names}
        for s, flat in enumerate(parts):
            pos = 0
            for i, t in enumerate(names):
                m = int(sizes[s, i]) * widths[t]
                out[t].append(flat[pos:pos + m].reshape(-1, widths[t]) if widths[t] > 1 else flat[pos:pos + m])
                pos += m
        return {t: (np.concatenate(p) if len(p) > 1 else p[0]) for t, p in out.items()}

    def _numels(self, sizes: np.ndarray, extra: int) -> list[int]:
        """Elements per peer of a message carrying `dim + extra` floats per key."""
        w = np.array([self.dims[t] + extra for t in self.names], np.int64)
        return (sizes * w).sum(1).tolist()

    def _unpack(self, parts: list[np.ndarray], sizes: np.ndarray, order: dict[str, np.ndarray],
                mine: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        rows = self._by_table(parts, sizes, {t: self.dims[t] for t in self.names})
        out = {}
        for t in self.names:
            o = np.empty((len(mine[t]), self.dims[t]), np.float32)
            o[order[t]] = rows[t].reshape(-1, self.dims[t])
            out[t] = o
        return out
