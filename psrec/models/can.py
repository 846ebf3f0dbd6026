"""CAN, the Co-Action Network (Zhou et al., "CAN: Feature Co-Action Network for Click-Through
Rate Prediction", WSDM 2022; reference CAN-Paper/Co-Action-Network `script/model.py`, TF1).

For a (feed field, induction field) pair, the induction key owns a second, "co-action" row
(served as an `ExtraEmbedding`, not the field's normal embedding) that is cut into the weights
of a small MLP; the feed field's embedding f (width d_feed) runs through it, once per order:

    [W_1 (d_feed x s_1) | b_1 | W_2 (s_1 x s_2) | b_2 | ...] = co-action row of the induction key
    for o = 1..orders:   h_0 = f ** o (element-wise)
                         h_j = tanh(h_{j-1} W_j + b_j)  for hidden layers, the last one linear
                         out_o = [h_1 ; h_2 ; ... ]     (every layer's output, as the reference)
    coaction(pair) = [out_1 ; ... ; out_orders]         (B, orders * sum(s))
    logit = MLP([flat(E) ; dense ; coaction(pair_1) ; ... ])

With the reference's layers [[16, 8], [8, 4]] and no biases a co-action row is 16*8 + 8*4 = 160
wide. Independence options (the paper's "multi-level independence"; the co-action rows are
always apart from the normal embeddings, the paper's parameter independence):
  * separate_tables ("definition"): every pair has its own co-action table;
  * separate_pairs ("combination"): one table per induction field whose row holds one weight
    set per pair that field induces (the reference's INDEP_NUM == 2 branch);
  * separate_orders ("order"): one weight set per order (the reference's `order_indep`).
Without separate_tables/separate_pairs, pairs that share an induction field share its weights.

Departures: the reference sums co-actions over a behaviour sequence; tabular fields are single
rows (or already pooled), so there is nothing to sum. Its feed side is a dedicated "input"
embedding table; here the feed field's normal embedding is used, as the project's design note
describes. Its DNN is BN -> 200 PReLU -> 80 PReLU; the project MLP uses ReLU.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from psrec.models.base import CTRModel, ExtraEmbedding, FeatureSpec, ModelInput
from psrec.models.layers import MLP
from psrec.models.registry import register

__all__ = ["CANParams", "CAN", "coaction"]


@dataclass(frozen=True)
class CANParams:
    """Hyperparameters of CAN. Pair i is (feed_fields[i], induction_fields[i])."""

    feed_fields: tuple[int, ...] = (0,)  # tabular data has no fixed item/history roles: configure
    induction_fields: tuple[int, ...] = (1,)
    coaction_hidden: tuple[int, ...] = (8, 4)  # reference [[16, 8], [8, 4]] after the 16-wide feed
    orders: int = 3  # reference: orders = 3
    coaction_bias: bool = False  # reference: weight_emb_b = [0, 0]
    separate_tables: bool = False  # reference: one co-action table per induction feature, shared by its pairs
    separate_pairs: bool = False  # reference default INDEP_NUM = 1
    separate_orders: bool = False  # reference default order_indep = False
    hidden: tuple[int, ...] = (200, 80)  # reference DNN 200 -> 80
    dropout: float = 0.0  # the reference uses none
    batch_norm: bool = False  # the reference normalises the DNN input only; kept off like MLPParams

    def __post_init__(self) -> None:
        if not self.feed_fields or len(self.feed_fields) != len(self.induction_fields):
            raise ValueError(f"feed_fields {self.feed_fields} and induction_fields {self.induction_fields} "
                             "must be non-empty and of equal length")
        pairs = list(zip(self.feed_fields, self.induction_fields))
        if any(f < 0 or i < 0 for f, i in pairs):
            raise ValueError(f"field indices must be >= 0, got pairs {pairs}")
        if any(f == i for f, i in pairs):
            raise ValueError(f"a field cannot co-act with itself, got pairs {pairs}")
        if len(set(pairs)) != len(pairs):
            raise ValueError(f"duplicate (feed, induction) pair in {pairs}")
        if not self.coaction_hidden or any(s <= 0 for s in self.coaction_hidden):
            raise ValueError(f"coaction_hidden must be non-empty positive widths, got {self.coaction_hidden}")
        if self.orders < 1:
            raise ValueError(f"orders must be >= 1, got {self.orders}")
        if self.separate_tables and self.separate_pairs:
            raise ValueError("separate_tables already gives every pair its own weights; "
                             "separate_pairs would have no effect")
        if not self.hidden or any(h <= 0 for h in self.hidden):
            raise ValueError(f"hidden must be non-empty positive widths, got {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    @property
    def pairs(self) -> tuple[tuple[int, int], ...]:
        return tuple(zip(self.feed_fields, self.induction_fields))


@dataclass(frozen=True)
class _PairPlan:
    """Where a pair finds its weights: columns [offset, offset + width) of table `table`'s row."""

    feed: int
    induction: int
    table: str
    offset: int
    width: int  # one weight set, times `orders` with order independence
    sizes: tuple[int, ...]  # (d_feed, s_1, s_2, ...)


def _weight_width(sizes: tuple[int, ...], bias: bool) -> int:
    """Floats in one weight set: sum of s_j * s_{j+1} (+ s_{j+1} with biases)."""
    return sum(a * b + (b if bias else 0) for a, b in zip(sizes[:-1], sizes[1:]))


def coaction(feed: torch.Tensor, row: torch.Tensor, sizes: tuple[int, ...], orders: int,
             bias: bool, per_order: bool) -> torch.Tensor:
    """Co-action of one pair: the feed embedding through the MLP its induction row encodes.

    feed (B, d_feed), row (B, W) with W = weight width (times `orders` when per_order), laid out
    [W_1 row-major (d_feed x s_1), b_1, W_2, b_2, ...] per order set -> (B, orders * sum(s)).
    """
    b = feed.shape[0]
    width = _weight_width(sizes, bias)
    outs = []
    for o in range(orders):
        base = width * o if per_order else 0
        h = feed.pow(o + 1)  # (B, d_feed)
        idx = base
        for j, (a, c) in enumerate(zip(sizes[:-1], sizes[1:])):
            w = row[:, idx:idx + a * c].view(b, a, c)  # (B, a, c)
            idx += a * c
            h = torch.bmm(h.unsqueeze(1), w).squeeze(1)  # (B, c)
            if bias:
                h = h + row[:, idx:idx + c]
                idx += c
            if j < len(sizes) - 2:
                h = torch.tanh(h)
            outs.append(h)
    return torch.cat(outs, dim=1)


@register("can")
class CAN(CTRModel):
    """Co-action features for configured field pairs, concatenated with the embeddings into a DNN.

    Input: fields (B, D_f) each, dense (B, num_dense), extra[table] per `extra_embeddings()`.
    Output: logits (B,).

    Example:
        >>> m = CAN(FeatureSpec(2, (4, 4)), CANParams(coaction_hidden=(2,), hidden=(8,)))
        >>> [(t.name, t.fields, t.dim) for t in m.extra_embeddings()]
        [('can_coaction_f1', (1,), 8)]
        >>> x = ModelInput([torch.randn(3, 4)] * 2, torch.zeros(3, 0), extra={"can_coaction_f1": [torch.randn(3, 8)]})
        >>> m(x).shape
        torch.Size([3])
    """

    Params = CANParams

    def __init__(self, spec: FeatureSpec, params: CANParams | None = None) -> None:
        super().__init__(spec, params)
        p = self.params
        for f, i in p.pairs:
            if f >= spec.num_fields or i >= spec.num_fields:
                raise ValueError(f"pair ({f}, {i}) names a field beyond the {spec.num_fields} fields")
        order_sets = p.orders if p.separate_orders else 1
        plans: list[_PairPlan] = []
        dims: dict[str, int] = {}  # table -> row width
        fields: dict[str, int] = {}  # table -> the induction field it serves
        for k, (f, i) in enumerate(p.pairs):
            sizes = (spec.embed_dims[f], *p.coaction_hidden)
            width = _weight_width(sizes, p.coaction_bias) * order_sets
            table = f"can_coaction_p{k}" if p.separate_tables else f"can_coaction_f{i}"
            if p.separate_pairs:  # append this pair's block to its induction field's row
                offset = dims.get(table, 0)
                dims[table] = offset + width
            else:  # share the block with the field's other pairs (if any)
                offset = 0
                if dims.setdefault(table, width) != width:
                    raise ValueError(f"pairs sharing table {table} have feed fields of different widths "
                                     "and so cannot share weights; set separate_pairs or separate_tables")
            fields[table] = i
            plans.append(_PairPlan(f, i, table, offset, width, sizes))
        self._plans = tuple(plans)
        self._tables = tuple(ExtraEmbedding(name, (fields[name],), dim) for name, dim in dims.items())
        coaction_dim = len(plans) * p.orders * sum(p.coaction_hidden)
        self.mlp = MLP(spec.flat_dim + spec.num_dense + coaction_dim, p.hidden, 1, p.dropout, p.batch_norm)

    def extra_embeddings(self) -> tuple[ExtraEmbedding, ...]:
        return self._tables

    def coaction_features(self, x: ModelInput) -> torch.Tensor:
        """All pairs' co-actions concatenated: (B, num_pairs * orders * sum(coaction_hidden))."""
        p = self.params
        outs = []
        for pl in self._plans:
            row = x.extra[pl.table][0][:, pl.offset:pl.offset + pl.width]  # (B, width)
            outs.append(coaction(x.fields[pl.feed], row, pl.sizes, p.orders, p.coaction_bias, p.separate_orders))
        return torch.cat(outs, dim=1)

    def forward(self, x: ModelInput) -> torch.Tensor:
        z = torch.cat([x.flat(), x.dense, self.coaction_features(x)], dim=1)
        return self.mlp(z).squeeze(-1)
