"""OPNN (Qu et al. 2016, "Product-based Neural Networks for User Response Prediction")."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from psrec.models.base import CTRModel, FeatureSpec, ModelInput
from psrec.models.dnn import MLPParams
from psrec.models.interactions import pair_indices
from psrec.models.layers import MLP
from psrec.models.registry import register


@dataclass(frozen=True)
class OPNNParams(MLPParams):
    """MLP tower plus the form of the outer-product term."""

    # sum_pooled: the paper's Sec. 3.2 (and Atomu2014/product-nets PNN2), p = vec(z z^T) with
    # z = sum_f e_f, D^2 features in O(F D + D^2). kernel: deepctr-torch's reading,
    # p_ij = e_i^T K_ij e_j, one D x D kernel per pair, P features in O(P D^2).
    product: Literal["sum_pooled", "kernel"] = "sum_pooled"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.product not in ("sum_pooled", "kernel"):
            raise ValueError(f"product must be 'sum_pooled' or 'kernel', got {self.product!r}")


def sum_pooled_outer(emb: torch.Tensor) -> torch.Tensor:
    """p = vec(z z^T), z = sum_f e_f: the paper's superposition of all F^2 outer products.

    emb (B, F, D) -> (B, D * D).
    """
    z = emb.sum(dim=1)  # (B, D)
    return (z.unsqueeze(2) * z.unsqueeze(1)).flatten(start_dim=1)  # (B, D * D)


@register("opnn")
class OPNN(CTRModel):
    """Outer-product PNN: logit = MLP([flat(E) ; p ; dense]).

    p is sum_pooled_outer(E) (B, D^2) by default, or with `product="kernel"` the pairwise
    kernel products p_ij = e_i^T K_ij e_j (B, P), K (P, D, D).
    E (B, F, D) -> (B,).

    Example:
        >>> m = OPNN(FeatureSpec(3, (4, 4, 4), 0))
        >>> m(ModelInput([torch.randn(2, 4)] * 3, torch.zeros(2, 0))).shape
        torch.Size([2])
    """

    Params = OPNNParams

    def __init__(self, spec: FeatureSpec, params: OPNNParams | None = None) -> None:
        super().__init__(spec, params)
        d = spec.embed_dim  # validates uniform width
        if spec.num_fields < 2:
            raise ValueError("OPNN needs at least two fields to form a product")
        p = self.params
        if p.product == "kernel":
            rows, cols = pair_indices(spec.num_fields)
            self.register_buffer("rows", rows, persistent=False)
            self.register_buffer("cols", cols, persistent=False)
            kernel = torch.empty(rows.numel(), d, d)
            for k in kernel:
                nn.init.xavier_uniform_(k)
            self.kernel = nn.Parameter(kernel)  # (P, D, D)
            width = rows.numel()
        else:
            self.kernel = None
            width = d * d
        self.mlp = MLP(spec.flat_dim + width + spec.num_dense, p.hidden, 1, p.dropout, p.batch_norm)

    def products(self, emb: torch.Tensor) -> torch.Tensor:
        """The outer-product term: emb (B, F, D) -> (B, D^2) or (B, P)."""
        if self.kernel is None:
            return sum_pooled_outer(emb)
        return torch.einsum("bpd,pde,bpe->bp", emb[:, self.rows], self.kernel, emb[:, self.cols])

    def forward(self, x: ModelInput) -> torch.Tensor:
        p = self.products(x.stacked())
        return self.mlp(torch.cat([x.flat(), p, x.dense], dim=1)).squeeze(-1)
