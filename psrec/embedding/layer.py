"""Turns a batch's keys into a `ModelInput`, and gradients back into sparse updates.

Per table the layer gathers every key occurrence (draw) the batch references and asks the
`EmbeddingStore` for their rows, then splits the rows into per-field tensors, pooling
multi-valued fields. Two ways to the rows, one per kind of store:

* raw (`store.raw_batches`, local tables): the store takes the N draws as they are and
  returns one row per draw, its EVs de-duplicating, probing and gathering in one compiled
  call; the rows (N, D) are the autograd leaf, and their per-draw gradients go back with the
  handle the lookup returned (summed per key by its inverse, `psrec.ev.raw`).
* distinct (PS clients, collective shards: a wire carries each key once): the layer dedups
  (`psrec.ev.unique`: a hash pass over the draws, a sort of the distinct keys only), the
  store returns the distinct rows (U, D), the leaf, scattered to the draws by a compiled
  `expand` whose backward `segment_sum`s the draws' gradients by the same inverse; the
  summed gradient goes to the store with each key's occurrence count (for DeepRec's freq).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from psrec.data.base import Batch, Schema
from psrec.embedding.store import EmbeddingStore
from psrec.ev.dedup import expand, segment_sum, unique
from psrec.models.base import CTRModel, ModelInput

__all__ = ["TableSpec", "plan_tables", "EmbeddingLayer", "LookupResult"]

LINEAR_TABLE = "linear"


@dataclass(frozen=True)
class TableSpec:
    """A table: its name, width and the fields (indices into the schema) whose keys it holds."""

    name: str
    dim: int
    fields: tuple[int, ...]
    role: str = "field"  # "field" (per-field embeddings), "linear" (first-order weights) or "extra"


def plan_tables(schema: Schema, model: CTRModel, dims: tuple[int, ...],
                sharing: str = "shared") -> list[TableSpec]:
    """The tables a model needs on a schema.

    dims: per-field embedding width. With `sharing="shared"` fields of equal width share one
    table (keys carry their field, so they never collide); "per_field" gives each its own.
    """
    nf = schema.num_fields
    if len(dims) != nf:
        raise ValueError(f"{len(dims)} embedding widths for {nf} fields")
    tables: list[TableSpec] = []
    if sharing == "per_field":
        tables += [TableSpec(f"emb_{schema.fields[f].name}", dims[f], (f,)) for f in range(nf)]
    else:
        for d in sorted(set(dims)):
            fs = tuple(f for f in range(nf) if dims[f] == d)
            tables.append(TableSpec("emb" if len(set(dims)) == 1 else f"emb_d{d}", d, fs))
    if model.uses_linear:
        tables.append(TableSpec(LINEAR_TABLE, 1, tuple(range(nf)), role="linear"))
    for ex in model.extra_embeddings():
        tables.append(TableSpec(f"extra_{ex.name}", ex.dim, tuple(ex.fields), role="extra"))
    return tables


class _ExpandRows(torch.autograd.Function):
    """Distinct rows (U, D) float32 -> per-draw rows rows[inverse] (N, D); the backward sums
    the draws' gradients per key by the same (N,) int32 inverse (torch's index_select
    backward, an index_add, measured ~5 ms on 128K draws of dim 16; this ~1 ms)."""

    @staticmethod
    def forward(ctx, rows: torch.Tensor, inverse: np.ndarray) -> torch.Tensor:
        ctx.inverse, ctx.num = inverse, rows.shape[0]
        return torch.from_numpy(expand(rows.detach().numpy(), inverse))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        g = grad.detach().to(torch.float32).contiguous().numpy()  # (N, D); a broadcast grad is materialised
        return torch.from_numpy(segment_sum(g, ctx.inverse, ctx.num)), None


@dataclass
class LookupResult:
    """What a forward pass needs to send gradients back, per table: its keys, the rows (the
    leaves with requires_grad) and, on the raw path, the store's handles."""

    keys: dict[str, np.ndarray]  # table -> distinct keys (U_t,) int64; raw: the draws (N_t,)
    counts: dict[str, np.ndarray] | None  # table -> (U_t,) int64 occurrences; raw: None
    rows: dict[str, torch.Tensor]  # table -> (U_t, dim) leaf; raw: (N_t, dim), one row per draw
    handles: dict[str, object] | None = None  # raw: the store's handles for `apply_raw_many`

    def push(self, store: EmbeddingStore, step: int, scale: float = 1.0) -> None:
        """After backward: every table's row gradients to `store`, times `scale` (0 drops them,
        counts included, yet the store is still called: collective ranks keep their exchanges
        matched); a table the model did not use in this batch sends nothing."""
        got = {t: r.grad.numpy() if scale == 1.0 else r.grad.numpy() * np.float32(scale)
               for t, r in self.rows.items() if r.grad is not None and scale}
        if self.handles is not None:
            store.apply_raw_many(self.handles, got, step)
        else:
            store.apply_many({t: (self.keys[t], g, self.counts[t]) for t, g in got.items()}, step)


class EmbeddingLayer:
    """Builds ModelInputs from Batches over any EmbeddingStore.

    Args:
        schema: the data source's schema.
        tables: from `plan_tables`.
        pooling: "sum" or "mean" over a multi-valued field's keys.
    """

    def __init__(self, schema: Schema, tables: list[TableSpec], pooling: str = "sum") -> None:
        self.schema = schema
        self.tables = tables
        self.pooling = pooling
        self._single_col = {f: i for i, f in enumerate(schema.single_fields)}
        self._multi_idx = {f: i for i, f in enumerate(schema.multi_fields)}

    def _field_keys(self, batch: Batch, f: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Keys of field f: (B,) for single-valued; (nnz,) plus (B+1,) offsets for multi-valued."""
        if f in self._single_col:
            return batch.keys[:, self._single_col[f]], None
        r = batch.multi[self._multi_idx[f]]
        return r.values, r.offsets

    def _split(self, t: TableSpec) -> tuple[list[int], list[int]]:
        single = [f for f in t.fields if f in self._single_col]
        return single, [f for f in t.fields if f not in self._single_col]

    def _table_keys(self, batch: Batch, t: TableSpec) -> np.ndarray:
        """Every key occurrence of the table: single-valued fields row-major (B, F_s) first,
        so that gathered rows reshape to (B, F_s, dim) without a copy; then multi-valued ones."""
        single, multi = self._split(t)
        parts = []
        if single:
            cols = [self._single_col[f] for f in single]
            block = batch.keys if cols == list(range(batch.keys.shape[1])) else batch.keys[:, cols]
            parts.append(block.reshape(-1))
        parts += [self._field_keys(batch, f)[0] for f in multi]
        return np.concatenate(parts) if len(parts) > 1 else parts[0]

    def raw_keys(self, batch: Batch) -> dict[str, np.ndarray]:
        """Per table, its draws (N_t,) int64 in `_table_keys` order; tables over the same
        fields get the same array (a raw store de-duplicates it once)."""
        out: dict[str, np.ndarray] = {}
        cache: dict[tuple[int, ...], np.ndarray] = {}
        for t in self.tables:
            if t.fields not in cache:
                cache[t.fields] = np.ascontiguousarray(self._table_keys(batch, t), dtype=np.int64)
            out[t.name] = cache[t.fields]
        return out

    def dedup(self, batch: Batch) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Per table: distinct keys (N,) int64 ascending, occurrence counts (N,) int64, and the
        (nnz,) int32 inverse index of every key occurrence (in `_table_keys` order) into the
        distinct keys: `np.unique`'s answer (`psrec.ev.unique`, without its argsort of the draws)."""
        keys, counts, inverse = {}, {}, {}
        cache: dict[tuple[int, ...], tuple] = {}
        for t in self.tables:
            if t.fields not in cache:
                cache[t.fields] = unique(np.ascontiguousarray(self._table_keys(batch, t), dtype=np.int64))
            keys[t.name], inverse[t.name], counts[t.name] = cache[t.fields]
        return keys, counts, inverse

    def assemble(self, batch: Batch, rows: dict[str, torch.Tensor],
                 inverse: dict[str, np.ndarray] | None = None) -> ModelInput:
        """Rows into per-field tensors: the differentiable half of a lookup. `rows`: per table
        its distinct rows (U_t, D), scattered to the draws by `inverse`; or, with `inverse`
        None (the raw path), one row per draw (N_t, D) already."""
        bsz, nf = len(batch), self.schema.num_fields
        fields: list[torch.Tensor | None] = [None] * nf
        linear_cols: list[torch.Tensor | None] = [None] * nf
        extra: dict[str, list[torch.Tensor]] = {}
        stacked = None
        for t in self.tables:
            r = rows[t.name]
            gathered = r if inverse is None else _ExpandRows.apply(r, inverse[t.name])  # (N_t, dim)
            single, multi = self._split(t)
            n_single = bsz * len(single)
            block = gathered[:n_single].view(bsz, len(single), t.dim)  # (B, F_s, dim)
            per_field = dict(zip(single, block.unbind(1)))
            pos = n_single
            for f in multi:
                values, offsets = self._field_keys(batch, f)
                per_field[f] = self._pool(gathered[pos:pos + len(values)], offsets, bsz)
                pos += len(values)
            if t.role == "field":
                for f in t.fields:
                    fields[f] = per_field[f]
                if len(single) == nf:
                    stacked = block  # every field in this one table: hand the model (B, F, D) as is
            elif t.role == "linear":
                for f in t.fields:
                    linear_cols[f] = per_field[f][:, 0]
                if len(single) == nf:
                    linear_cols = [block[:, :, 0]]
            else:
                extra[t.name.removeprefix("extra_")] = [per_field[f] for f in t.fields]
        if any(e is None for e in fields):
            raise ValueError("every field needs an embedding table")
        if linear_cols[0] is None:
            linear = None
        elif len(linear_cols) == 1:
            linear = linear_cols[0]
        else:
            linear = torch.stack(linear_cols, dim=1)  # (B, F)
        dense = torch.from_numpy(np.ascontiguousarray(batch.dense, dtype=np.float32))
        return ModelInput(fields=fields, dense=dense, linear=linear, extra=extra, emb=stacked)

    def _pool(self, seg: torch.Tensor, offsets: np.ndarray, bsz: int) -> torch.Tensor:
        lengths = np.diff(offsets)
        owner = torch.from_numpy(np.repeat(np.arange(bsz), lengths))
        out = seg.new_zeros((bsz, seg.shape[1])).index_add(0, owner, seg)
        if self.pooling == "mean":
            out = out / torch.from_numpy(np.maximum(lengths, 1).astype(np.float32))[:, None]
        return out

    def lookup(self, store: EmbeddingStore, batch: Batch, train: bool) -> tuple[ModelInput, LookupResult]:
        """Fetch the batch's rows from `store` (raw or distinct, as it takes them) and assemble
        the model input (rows require grad when training)."""
        if store.raw_batches:
            keys = self.raw_keys(batch)
            fetched, handles = store.lookup_raw_many(keys)
            rows = self.leaves(fetched, train)
            return self.assemble(batch, rows), LookupResult(keys, None, rows, handles)
        keys, counts, inverse = self.dedup(batch)
        rows = self.leaves(store.lookup_many(keys, train=train), train)
        return self.assemble(batch, rows, inverse), LookupResult(keys, counts, rows)

    def leaves(self, fetched: dict[str, np.ndarray], train: bool = True) -> dict[str, torch.Tensor]:
        """A store's rows as float32 tensors, the autograd leaves (requires_grad when training)."""
        return {t.name: torch.from_numpy(np.ascontiguousarray(fetched[t.name], dtype=np.float32)).requires_grad_(train)
                for t in self.tables}
