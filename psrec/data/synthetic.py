"""Synthetic CTR data with planted interactions, reproducible row by row.

Row i depends only on (seed, i): every random draw is a counter-based hash (SplitMix64) of
(seed, stream, row, field), so any row range is generated on its own, by any worker, with
the same result as generating the whole table and slicing it.

Each categorical field f has a cardinality N_f and a Zipf exponent s_f. A cell draws a
popularity rank r in [0, N_f) from a bounded Zipf law, the rank names an entity, and the
entity's key is a scrambled 54-bit id tagged with the field (so ids look hashed, as in real
logs, and tables cannot index them densely). Every entity carries planted parameters derived
from a hash of its key: a first-order weight w, a latent vector u (K=4) and a scalar t.
The label is Bernoulli(sigmoid(z)) with the planted logit

    z = b + a1 * sum_f w_f + a_d * v^T x_dense
          + a2 * sum_{(f,g) in P} <u_f, u_g>            (pairwise, FM-shaped)
          + a3 * sum_{(f,g,h) in T} t_f t_g t_h          (third order)

so a model that learns interactions beats logistic regression, and the planted logit's AUC
is the best any model can reach on the same rows (`planted_auc`).

Drift (`day` > 0): on each day d = 1..day every (field, rank) slot is taken over by a new
entity with probability `drift`; new ids appear and popularity moves, as in real daily logs.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np

from psrec.data.base import Batch, DataSource, FieldSpec, Schema
from psrec.data.keys import ID_MASK, make_keys, splitmix64

__all__ = ["SyntheticConfig", "SyntheticSource", "default_cardinalities"]

_LATENT = 4  # width of the planted latent vectors u
_TABLE_MAX = 1 << 21  # fields up to this cardinality get precomputed per-rank tables
_U53 = 2.0 ** -53
_CHUNK = 8192  # rows generated at a time

# Streams: independent hash salts for each kind of draw.
_S_RANK, _S_LABEL, _S_DENSE, _S_DRIFT, _S_ENTITY, _S_PARAM = range(6)


def default_cardinalities(num_fields: int) -> tuple[int, ...]:
    """Log-spaced cardinalities from 10 to 1e9, like Criteo's mix of tiny and huge fields."""
    if num_fields == 1:
        return (1000,)
    exps = np.linspace(1.0, 9.0, num_fields)
    return tuple(int(round(10 ** e, -int(e) + 1)) if e >= 2 else int(round(10 ** e)) for e in exps)


@dataclass(frozen=True)
class SyntheticConfig:
    """The synthetic CTR generator.

    Empty `cardinalities`/`zipf` mean the defaults (log-spaced 10..1e9; exponents 1.05..1.3).
    """

    num_fields: int = 26  # Criteo's 26 categorical fields
    cardinalities: tuple[int, ...] = ()
    zipf: tuple[float, ...] = ()
    num_dense: int = 13  # Criteo's 13 integer features
    num_rows: int = 1 << 40  # effectively unbounded; ranges are generated on demand
    seed: int = 0
    day: int = 0  # 0 = no drift; day d applies d rounds of entity turnover
    drift: float = 0.05  # per day, share of (field, rank) slots taken over by a new entity
    num_pairs: int = 12  # planted pairwise interactions
    num_triples: int = 4  # planted third-order interactions
    # interactions live among the 7 lowest-cardinality fields (<= 1000 ids): learnable in 1M rows
    interaction_fields: int = 7
    # std of the summed first-order part (LR can learn it: the 90%-of-planted target needs it large)
    sigma_first: float = 1.5
    sigma_pair: float = 1.0  # std of the summed pairwise part
    sigma_triple: float = 0.25  # std of the summed third-order part
    sigma_dense: float = 0.3  # std of the dense part
    base_logit: float = -1.3  # gives a click rate near Criteo's ~25%
    head_ranks: float = 1000.0  # an entity at rank r carries (1 + r/head_ranks)^-1/2 of the signal; 0 = flat

    def __post_init__(self) -> None:
        if not 1 <= self.num_fields <= 500:
            raise ValueError(f"num_fields must be in [1, 500], got {self.num_fields}")
        if self.cardinalities and len(self.cardinalities) != self.num_fields:
            raise ValueError(f"cardinalities has {len(self.cardinalities)} entries for {self.num_fields} fields")
        if any(c < 1 or c >= 1 << 40 for c in self.cardinalities):
            raise ValueError("cardinalities must be in [1, 2**40)")
        if self.zipf and len(self.zipf) != self.num_fields:
            raise ValueError(f"zipf has {len(self.zipf)} entries for {self.num_fields} fields")
        if any(s < 0 for s in self.zipf):
            raise ValueError("zipf exponents must be >= 0")
        if self.num_dense < 0 or self.num_rows < 1:
            raise ValueError("num_dense must be >= 0 and num_rows >= 1")
        if not 0 <= self.day < 1024:
            raise ValueError(f"day must be in [0, 1024), got {self.day}")
        if self.head_ranks < 0:
            raise ValueError(f"head_ranks must be >= 0, got {self.head_ranks}")
        if not 0.0 <= self.drift <= 1.0:
            raise ValueError(f"drift must be in [0, 1], got {self.drift}")
        k = min(self.interaction_fields, self.num_fields)
        if self.interaction_fields < 0 or self.num_pairs < 0 or self.num_triples < 0:
            raise ValueError("interaction_fields, num_pairs and num_triples must be >= 0")
        if self.num_pairs > k * (k - 1) // 2:
            raise ValueError(f"num_pairs={self.num_pairs} exceeds the pairs of {k} interaction fields")
        if self.num_triples > k * (k - 1) * (k - 2) // 6:
            raise ValueError(f"num_triples={self.num_triples} exceeds the triples of {k} interaction fields")

    @property
    def field_cardinalities(self) -> tuple[int, ...]:
        return self.cardinalities or default_cardinalities(self.num_fields)

    @property
    def field_zipf(self) -> tuple[float, ...]:
        return self.zipf or tuple(np.round(np.linspace(1.05, 1.3, self.num_fields), 3).tolist())


def _salt(seed: int, stream: int) -> np.uint64:
    return splitmix64(np.array([seed * 1_000_003 + stream], dtype=np.uint64))[0]


def _uniform(h: np.ndarray) -> np.ndarray:
    """uint64 hashes -> float64 uniforms in [0, 1)."""
    return (h >> np.uint64(11)).astype(np.float64) * _U53


def _uniform_pairs(counters: np.ndarray, salt: np.uint64, width: int) -> np.ndarray:
    """(n, ceil(width/2)) counters -> (n, width) float32 uniforms in [0, 1).

    Each 64-bit hash yields two uniforms (its halves): half the hashing of one per value.
    """
    h = splitmix64(counters ^ salt)
    out = np.empty((h.shape[0], 2 * h.shape[1]), dtype=np.float32)
    # 24 bits per value: float32 holds them exactly, so u < 1 strictly.
    out[:, 0::2] = ((h >> np.uint64(8)) & np.uint64(0xFFFFFF)).astype(np.float32)
    out[:, 1::2] = (h >> np.uint64(40)).astype(np.float32)
    out *= np.float32(2.0 ** -24)
    return out[:, :width]


def _rank_groups(cards: np.ndarray, s: np.ndarray):
    """Per kind of Zipf exponent, the columns and a vectorised inverse CDF for them.

    The law is a continuous bounded Zipf/Pareto on [1, N+1) with density ~ x^-s, floored to
    ranks [0, N): exact sampling of a 1e9-id discrete Zipf would need its CDF table; the
    continuous law keeps the heavy head and the long tail.
    """
    # float32 throughout: twice the speed of float64 pow, and a relative error near 1e-6 in a
    # tail rank does not change the law.
    n1 = cards.astype(np.float64) + 1.0
    groups = []
    one = np.abs(s - 1.0) < 1e-9
    flat = s == 0
    powr = ~one & ~flat
    f32 = np.float32
    if powr.any():
        cols = np.flatnonzero(powr)
        e = 1.0 - s[cols]
        c, inv = (np.power(n1[cols], e) - 1.0).astype(f32), (1.0 / e).astype(f32)
        groups.append((cols, lambda u, c=c, inv=inv, n=cards[cols]: _floor_ranks((c * u + f32(1)) ** inv, n)))
    if one.any():
        cols = np.flatnonzero(one)
        groups.append((cols, lambda u, lg=np.log(n1[cols]).astype(f32), n=cards[cols]: _floor_ranks(np.exp(u * lg), n)))
    if flat.any():
        cols = np.flatnonzero(flat)
        groups.append((cols, lambda u, m=cards[cols].astype(f32), n=cards[cols]: _floor_ranks(f32(1) + u * m, n)))
    return groups


def _cols(idx: np.ndarray):
    if len(idx) and np.array_equal(idx, np.arange(idx[0], idx[0] + len(idx))):
        return slice(int(idx[0]), int(idx[0]) + len(idx))
    return idx


def _floor_ranks(x: np.ndarray, n: np.ndarray) -> np.ndarray:
    r = x.astype(np.int64) - 1
    return np.clip(r, 0, n - 1, out=r)


_SQRT12 = np.float32(np.sqrt(12.0))


def _entity_params(keys: np.ndarray, salt: np.uint64, want_u: bool = True):
    """Planted parameters of entities, derived from their keys by hashing.

    keys (n,) int64 -> w (n,) f32, u (n, K) f32 or None, t (n,) f32; each has unit variance
    (uniform on [-sqrt(3), sqrt(3)]). w and t come from the two 32-bit halves of one hash, u
    from four 16-bit lanes of a second, computed only when asked (interaction fields).
    """
    h1 = splitmix64(keys.view(np.uint64) ^ salt)
    w = ((h1 & np.uint64(0xFFFFFFFF)).astype(np.float32) * np.float32(2.0**-32) - np.float32(0.5)) * _SQRT12
    t = ((h1 >> np.uint64(32)).astype(np.float32) * np.float32(2.0**-32) - np.float32(0.5)) * _SQRT12
    u = None
    if want_u:
        h2 = splitmix64(h1)
        lanes = np.stack([(h2 >> np.uint64(16 * k)) & np.uint64(0xFFFF) for k in range(_LATENT)], axis=-1)
        u = ((lanes.astype(np.float32) + np.float32(0.5)) * np.float32(1 / 65536) - np.float32(0.5)) * _SQRT12
    return w, u, t


class SyntheticSource(DataSource):
    """Synthetic CTR rows; see the module docstring for the generative model.

    Example:
        >>> src = SyntheticSource(SyntheticConfig(num_fields=4, num_dense=2))
        >>> b = src.read(0, 8)
        >>> b.keys.shape, b.dense.shape, b.labels.shape
        ((8, 4), (8, 2), (8,))
    """

    def __init__(self, cfg: SyntheticConfig | None = None) -> None:
        self.cfg = cfg = cfg or SyntheticConfig()
        cards, zipf = cfg.field_cardinalities, cfg.field_zipf
        self._cards = np.array(cards, dtype=np.int64)
        self._zipf = zipf
        self.schema = Schema(
            fields=tuple(FieldSpec(f"C{i + 1}", int(c)) for i, c in enumerate(cards)),
            dense_names=tuple(f"I{j + 1}" for j in range(cfg.num_dense)),
        )
        self._salts = {s: _salt(cfg.seed, s) for s in range(6)}
        # The planted structure is drawn once from the seed (config-level, not per row).
        rng = np.random.default_rng([cfg.seed, 7])
        order = np.argsort(self._cards, kind="stable")[: min(cfg.interaction_fields, cfg.num_fields)]
        self.pairs = self._draw_groups(rng, order, 2, cfg.num_pairs)
        self.triples = self._draw_groups(rng, order, 3, cfg.num_triples)
        self._dense_w = rng.standard_normal(cfg.num_dense).astype(np.float32)
        nf, nd = cfg.num_fields, max(cfg.num_dense, 1)
        self._a1 = np.float32(cfg.sigma_first / np.sqrt(nf))
        self._a2 = np.float32(cfg.sigma_pair / np.sqrt(max(len(self.pairs), 1) * _LATENT))
        self._a3 = np.float32(cfg.sigma_triple / np.sqrt(max(len(self.triples), 1)))
        self._ad = np.float32(cfg.sigma_dense / np.sqrt(nd))
        self._field_salt = splitmix64(np.arange(nf, dtype=np.uint64) ^ self._salts[_S_ENTITY])
        self._small = np.flatnonzero(self._cards <= _TABLE_MAX)
        self._big = np.flatnonzero(self._cards > _TABLE_MAX)
        # Column selectors: a slice when the columns are contiguous (no copy), else the indices.
        self._small_cols, self._big_cols = _cols(self._small), _cols(self._big)
        self._need_u = {f for g in self.pairs for f in g}
        self._need_t = {f for g in self.triples for f in g}
        # Interaction fields get compact columns; for each of small/big: (source cols, compact cols).
        self._u_fields = sorted(self._need_u)
        self._t_fields = sorted(self._need_t)

        def route(group: np.ndarray, fields: list[int]):
            src = [j for j, f in enumerate(group) if f in fields]
            return np.array(src, np.int64), np.array([fields.index(group[j]) for j in src], np.int64)

        self._small_u, self._small_t = route(self._small, self._u_fields), route(self._small, self._t_fields)
        self._big_u, self._big_t = route(self._big, self._u_fields), route(self._big, self._t_fields)
        pair_idx = np.array([[self._u_fields.index(f) for f in g] for g in self.pairs], np.int64).reshape(-1, 2)
        self._pair_matrix = np.zeros((len(self._u_fields),) * 2, np.float32)
        self._pair_matrix[pair_idx[:, 0], pair_idx[:, 1]] = 1.0
        idx = [[self._t_fields.index(f) for f in g] for g in self.triples]
        self._triple_idx = np.array(idx, np.int64).reshape(-1, 3)
        self._rank_groups = _rank_groups(self._cards, np.array(zipf, dtype=np.float64))

    @staticmethod
    def _draw_groups(rng, fields: np.ndarray, size: int, count: int) -> tuple[tuple[int, ...], ...]:
        if count == 0 or len(fields) < size:
            return ()
        seen: set[tuple[int, ...]] = set()
        for _ in range(count * 50):
            g = tuple(sorted(int(x) for x in rng.choice(fields, size, replace=False)))
            seen.add(g)
            if len(seen) == count:
                break
        return tuple(sorted(seen))

    @property
    def num_rows(self) -> int:
        return self.cfg.num_rows

    # ----------------------------------------------------------------------------- entities
    def _entity_keys(self, fields: np.ndarray, ranks: np.ndarray) -> np.ndarray:
        """Keys of the entities holding `ranks` of `fields` on this config's day.

        fields: (F',) int field indices; ranks: (..., F') int64 -> keys (..., F') int64.
        """
        cfg = self.cfg
        f = np.asarray(fields, dtype=np.uint64)
        # An entity is (rank, birth day): day-0 entities are (r, 0); a takeover on day d makes (r, d).
        r = ranks.astype(np.uint64) << np.uint64(10)
        ent = r.copy()
        if cfg.day > 0 and cfg.drift > 0:
            slot = (r << np.uint64(10)) | (f << np.uint64(10))
            for d in range(1, cfg.day + 1):
                taken = _uniform(splitmix64((slot | np.uint64(d)) ^ self._salts[_S_DRIFT])) < cfg.drift
                ent[taken] = r[taken] | np.uint64(d)
        ids = splitmix64(ent ^ self._field_salt[f.astype(np.int64)]) & ID_MASK
        return make_keys(f, ids)

    def _entity_cells(self, fields: np.ndarray, ranks: np.ndarray, want_u: bool = True):
        """(keys, w, u, t) of the entities at `ranks` (..., F') of `fields`, signal scaled by popularity."""
        keys = self._entity_keys(fields, ranks)
        w, u, t = _entity_params(keys.reshape(-1), self._salts[_S_PARAM], want_u)
        w, t = w.reshape(keys.shape), t.reshape(keys.shape)
        u = u.reshape(keys.shape + (_LATENT,)) if u is not None else None
        if self.cfg.head_ranks > 0:
            # Rare ids carry weaker signal, as in real logs (and a model could not learn them
            # from a few occurrences anyway): the planted lift stays reachable by training.
            scale = np.float32(1.0) / np.sqrt(
                np.float32(1.0) + ranks.astype(np.float32) * np.float32(1.0 / self.cfg.head_ranks))
            w, t = w * scale, t * scale
            u = u * scale[..., None] if u is not None else None
        return keys, w, u, t

    def describe(self):
        from psrec.data.spec import SourceSpec

        return SourceSpec.of(self, cfg=self.cfg)

    @cache  # noqa: B019 - one source per run; the cache lives as long as it does
    def _tables(self):
        """Per-rank (keys, w, u, t) of all tabulated fields, concatenated; and each field's offset.

        A cell of tabulated field f at rank r is entry `offset[f] + r`, so one gather serves
        all small fields at once.
        """
        small = self._small
        parts = [self._entity_cells(np.array([f]), np.arange(self._cards[f], dtype=np.int64)[:, None])
                 for f in small]
        offsets = np.zeros(self.cfg.num_fields, dtype=np.int64)
        offsets[small] = np.cumsum([0] + [int(self._cards[f]) for f in small])[:-1]
        keys, w, u, t = (np.concatenate([p[i].reshape((-1,) + p[i].shape[2:]) for p in parts]) if parts
                         else np.zeros((0,) + ((_LATENT,) if i == 2 else ()), np.float32) for i in range(4))
        return offsets, keys, w, u, t

    # ----------------------------------------------------------------------------- rows
    def _ranks(self, u: np.ndarray) -> np.ndarray:
        """(n, F) uniforms -> (n, F) Zipf ranks, one vectorised pass per kind of exponent."""
        ranks = np.empty(u.shape, dtype=np.int64)
        for cols, fn in self._rank_groups:
            ranks[:, cols] = fn(u[:, cols])
        return ranks

    def _generate(self, start: int, end: int):
        cfg = self.cfg
        n, nf = end - start, cfg.num_fields
        rows = np.arange(start, end, dtype=np.uint64)
        half = (nf + 1) // 2
        counters = rows[:, None] * np.uint64(half) + np.arange(half, dtype=np.uint64)[None, :]
        ranks = self._ranks(_uniform_pairs(counters, self._salts[_S_RANK], nf))  # (n, F)
        keys = np.empty((n, nf), dtype=np.int64)
        z = np.full(n, cfg.base_logit, dtype=np.float32)
        small, big = self._small, self._big
        # Latent vectors / scalars of the interaction fields only, in compact columns.
        lat = np.empty((n, len(self._u_fields), _LATENT), np.float32)
        tri = np.empty((n, len(self._t_fields)), np.float32)
        if len(small):
            offsets, tk, tw, tu, tt = self._tables()
            idx = ranks[:, self._small_cols] + offsets[small]  # (n, F_small) entries of the tables
            keys[:, self._small_cols] = np.take(tk, idx)  # np.take: faster than fancy indexing
            z += self._a1 * np.take(tw, idx).sum(axis=1)
            (su, du), (st, dt) = self._small_u, self._small_t  # source columns in idx, compact columns
            if len(su):
                lat[:, du] = np.take(tu, idx[:, su], axis=0)
            if len(st):
                tri[:, dt] = np.take(tt, idx[:, st])
        if len(big):
            (bu, du), (bt, dt) = self._big_u, self._big_t
            kb, wb, ub, tb = self._entity_cells(big, ranks[:, self._big_cols], len(bu) > 0)
            keys[:, self._big_cols] = kb
            z += self._a1 * wb.sum(axis=1)
            if len(bu):
                lat[:, du] = ub[:, bu]
            if len(bt):
                tri[:, dt] = tb[:, bt]
        if self.pairs:
            # sum over planted pairs of <u_f, u_g> = sum_k u_k^T A u_k with A the pair matrix:
            # one small matmul instead of gathering both sides of every pair.
            lt = np.ascontiguousarray(lat.transpose(0, 2, 1)).reshape(n * _LATENT, -1)  # (n*K, F_u)
            quad = ((lt @ self._pair_matrix) * lt).sum(axis=1)  # one GEMM for all rows: (n*K,)
            z += self._a2 * quad.reshape(n, _LATENT).sum(axis=1)
        if self.triples:
            t = self._triple_idx
            z += self._a3 * (tri[:, t[:, 0]] * tri[:, t[:, 1]] * tri[:, t[:, 2]]).sum(axis=1)
        if cfg.num_dense:
            half = (cfg.num_dense + 1) // 2
            dc = rows[:, None] * np.uint64(half) + np.arange(half, dtype=np.uint64)[None, :]
            dense = (_uniform_pairs(dc, self._salts[_S_DENSE], cfg.num_dense) - np.float32(0.5)) * _SQRT12
            z += self._ad * (dense @ self._dense_w)
        else:
            dense = np.zeros((n, 0), dtype=np.float32)
        return keys, dense, z

    def _generate_chunked(self, start: int, end: int):
        # Work in cache-sized chunks: the per-field temporaries of a few thousand rows stay in L2.
        if end - start <= _CHUNK:
            return self._generate(start, end)
        n, cfg = end - start, self.cfg
        keys = np.empty((n, cfg.num_fields), np.int64)
        dense = np.empty((n, cfg.num_dense), np.float32)
        z = np.empty(n, np.float32)
        for s in range(start, end, _CHUNK):
            e = min(s + _CHUNK, end)
            keys[s - start:e - start], dense[s - start:e - start], z[s - start:e - start] = self._generate(s, e)
        return keys, dense, z

    def read(self, start: int, end: int) -> Batch:
        self._check_range(start, end)
        keys, dense, z = self._generate_chunked(start, end)
        rows = np.arange(start, end, dtype=np.uint64)
        u = _uniform(splitmix64(rows ^ self._salts[_S_LABEL]))
        labels = (u < 1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(np.float32)
        return Batch(keys=keys, dense=dense, labels=labels, start=start)

    def planted_logits(self, start: int, end: int) -> np.ndarray:
        """The planted logit z of rows [start, end): (n,) float32, the Bayes-optimal score."""
        self._check_range(start, end)
        return self._generate_chunked(start, end)[2]
