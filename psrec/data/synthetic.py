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
from functools import lru_cache

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
    interaction_fields: int = 7  # interactions live among the 7 lowest-cardinality fields (<= 1000 ids): learnable in 1M rows
    sigma_first: float = 1.5  # std of the summed first-order part (LR can learn it: the 90%-of-planted target needs it large)
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


def _zipf_ranks(u: np.ndarray, n: int, s: float) -> np.ndarray:
    """Inverse CDF of a continuous bounded Zipf/Pareto on [1, n+1), floored to ranks [0, n).

    Continuous approximation of P(r) ~ (r+1)^-s: exact sampling of a 1e9-id discrete Zipf
    would need its CDF table; the continuous law keeps the heavy head and long tail.
    """
    if n == 1:
        return np.zeros(u.shape, np.int64)
    if abs(s - 1.0) < 1e-9:
        x = np.exp(u * np.log(n + 1.0))
    elif s == 0:
        x = 1.0 + u * n
    else:
        e = 1.0 - s
        x = ((np.power(n + 1.0, e) - 1.0) * u + 1.0) ** (1.0 / e)
    r = x.astype(np.int64) - 1
    np.clip(r, 0, n - 1, out=r)
    return r


class _EntityParams:
    """Planted parameters of entities of one field, derived from their keys by hashing."""

    @staticmethod
    def compute(keys: np.ndarray, param_salt: np.uint64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """keys (n,) int64 -> w (n,) f32, u (n, K) f32, t (n,) f32, each with unit variance."""
        h1 = splitmix64(keys.view(np.uint64) ^ param_salt)
        h2 = splitmix64(h1)
        # Four 16-bit lanes of h1 give u; uniform on [-sqrt(3), sqrt(3)] has variance 1.
        lanes = np.stack([(h1 >> np.uint64(16 * k)) & np.uint64(0xFFFF) for k in range(_LATENT)], axis=-1)
        u = ((lanes.astype(np.float32) + 0.5) / 65536.0 - 0.5) * np.float32(np.sqrt(12.0))
        w = ((h2 & np.uint64(0xFFFFFFFF)).astype(np.float32) / np.float32(2**32) - 0.5) * np.float32(np.sqrt(12.0))
        t = ((h2 >> np.uint64(32)).astype(np.float32) / np.float32(2**32) - 0.5) * np.float32(np.sqrt(12.0))
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
    def _entity_keys(self, f: int, ranks: np.ndarray) -> np.ndarray:
        """Keys of the entities holding `ranks` of field f on this config's day."""
        cfg = self.cfg
        # An entity is (rank, birth day): day-0 entities are (r, 0); a takeover on day d makes (r, d).
        r = ranks.astype(np.uint64) << np.uint64(10)
        ent = r.copy()
        if cfg.day > 0 and cfg.drift > 0:
            slot = (r << np.uint64(10)) | np.uint64(f << 10)
            for d in range(1, cfg.day + 1):
                taken = _uniform(splitmix64((slot | np.uint64(d)) ^ self._salts[_S_DRIFT])) < cfg.drift
                ent[taken] = r[taken] | np.uint64(d)
        ids = splitmix64(ent ^ self._field_salt[f]) & ID_MASK
        return make_keys(f, ids)

    def _entity_cells(self, f: int, ranks: np.ndarray):
        """(keys, w, u, t) of the entities at `ranks` of field f, signal scaled by popularity."""
        keys = self._entity_keys(f, ranks)
        w, u, t = _EntityParams.compute(keys, self._salts[_S_PARAM])
        if self.cfg.head_ranks > 0:
            # Rare ids carry weaker signal, as in real logs (and a model could not learn them
            # from a few occurrences anyway): the planted lift stays reachable by training.
            scale = (1.0 + ranks.astype(np.float32) / np.float32(self.cfg.head_ranks)) ** np.float32(-0.5)
            w, u, t = w * scale, u * scale[:, None], t * scale
        return keys, w, u, t

    @lru_cache(maxsize=64)
    def _tables(self, f: int):
        """Per-rank (keys, w, u, t) for a field small enough to tabulate."""
        return self._entity_cells(f, np.arange(self._cards[f], dtype=np.int64))

    def _field_cells(self, f: int, ranks: np.ndarray, want_u: bool, want_t: bool):
        """(keys, w, u or None, t or None) of the cells holding `ranks` of field f."""
        if self._cards[f] <= _TABLE_MAX:
            keys, w, u, t = self._tables(f)
            return (keys[ranks], w[ranks], u[ranks] if want_u else None, t[ranks] if want_t else None)
        return self._entity_cells(f, ranks)

    # ----------------------------------------------------------------------------- rows
    def _generate(self, start: int, end: int):
        cfg = self.cfg
        n, nf = end - start, cfg.num_fields
        rows = np.arange(start, end, dtype=np.uint64)
        counters = rows[:, None] * np.uint64(nf) + np.arange(nf, dtype=np.uint64)[None, :]  # (n, F)
        u_rank = _uniform(splitmix64(counters ^ self._salts[_S_RANK]))
        keys = np.empty((n, nf), dtype=np.int64)
        w_sum = np.zeros(n, dtype=np.float32)
        need_u = {f for g in self.pairs for f in g}
        need_t = {f for g in self.triples for f in g}
        lat: dict[int, np.ndarray] = {}
        tri: dict[int, np.ndarray] = {}
        for f in range(nf):
            ranks = _zipf_ranks(u_rank[:, f], int(self._cards[f]), self._zipf[f])
            k, w, u, t = self._field_cells(f, ranks, f in need_u, f in need_t)
            keys[:, f] = k
            w_sum += w
            if f in need_u:
                lat[f] = u
            if f in need_t:
                tri[f] = t
        z = np.full(n, cfg.base_logit, dtype=np.float32) + self._a1 * w_sum
        for f, g in self.pairs:
            z += self._a2 * np.einsum("nk,nk->n", lat[f], lat[g])
        for f, g, h in self.triples:
            z += self._a3 * tri[f] * tri[g] * tri[h]
        if cfg.num_dense:
            dc = rows[:, None] * np.uint64(cfg.num_dense) + np.arange(cfg.num_dense, dtype=np.uint64)[None, :]
            dense = ((_uniform(splitmix64(dc ^ self._salts[_S_DENSE])) - 0.5) * np.sqrt(12.0)).astype(np.float32)
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
