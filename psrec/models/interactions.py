"""Explicit feature-interaction layers shared by the product, cross, CIN and bilinear models.

Notation: B batch, F fields, D per-field width (uniform), N the width of a flat input
x0 = [flat(E) ; dense], P = F(F-1)/2 field pairs in row-major i < j order.
Every layer here is torch only and holds its own weights; none knows about embedding tables.
"""
from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from psrec.models.layers import MLP

__all__ = ["CrossStructure", "Activation", "BilinearType", "pair_indices", "pairwise_inner",
           "CrossNet", "CrossNetV2", "CrossNetMix", "GatedCrossNet", "CrossTowers", "CIN", "SENet",
           "Bilinear"]

# How a cross network and an MLP are combined (DCN-v2 paper, Fig. 2; FuxiCTR `model_structure`).
CrossStructure = Literal["crossnet_only", "stacked", "parallel", "stacked_parallel"]
# The non-linearity g inside DCN-Mix experts: FuxiCTR / DeepCTR use tanh, torchrec ReLU.
Activation = Literal["tanh", "relu", "none"]
# FiBiNET bilinear weight sharing: one W for all pairs, one per left field, one per pair.
BilinearType = Literal["field_all", "field_each", "field_interaction"]


def pair_indices(num_fields: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols), each (P,): all i < j in row-major order (0,1), (0,2), ..., (F-2,F-1)."""
    idx = torch.triu_indices(num_fields, num_fields, offset=1, device=device)
    return idx[0], idx[1]


def pairwise_inner(emb: torch.Tensor) -> torch.Tensor:
    """<e_i, e_j> for every field pair i < j.  emb (B, F, D) -> (B, P).

    Example:
        >>> pairwise_inner(torch.ones(2, 3, 4)).tolist()
        [[4.0, 4.0, 4.0], [4.0, 4.0, 4.0]]
    """
    rows, cols = pair_indices(emb.shape[1], emb.device)
    return (emb[:, rows] * emb[:, cols]).sum(dim=-1)  # (B, P)


class CrossNet(nn.Module):
    """DCN v1 cross network (Wang et al. 2017, "Deep & Cross Network for Ad Click Predictions").

    x_{l+1} = x0 (x_l^T w_l) + b_l + x_l, with w_l, b_l in R^N: a rank-one cross per layer.
    x0 (B, N) -> x_L (B, N).

    Args:
        dim: N, the width of x0.
        num_layers: L.

    Example:
        >>> CrossNet(5, 2)(torch.randn(3, 5)).shape
        torch.Size([3, 5])
    """

    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        bound = 1.0 / math.sqrt(dim)  # nn.Linear(dim, 1)'s default init, as in FuxiCTR
        self.weight = nn.Parameter(torch.empty(num_layers, dim).uniform_(-bound, bound))  # (L, N)
        self.bias = nn.Parameter(torch.zeros(num_layers, dim))  # (L, N)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for w, b in zip(self.weight, self.bias):
            x = x0 * (x @ w).unsqueeze(-1) + b + x  # (B, N): (B, 1) scalar per row times x0
        return x


class CrossNetV2(nn.Module):
    """DCN-v2 full-rank cross network (Wang et al. 2021, "DCN V2: Improved Deep & Cross Network").

    x_{l+1} = x0 * (W_l x_l + b_l) + x_l, W_l (N, N), * element-wise.  x0 (B, N) -> (B, N).

    Example:
        >>> CrossNetV2(5, 2)(torch.randn(3, 5)).shape
        torch.Size([3, 5])
    """

    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x  # (B, N)
        return x


class CrossNetMix(nn.Module):
    """DCN-Mix: low-rank mixture-of-experts cross network (DCN-v2 paper, Sec. 5.2).

    x_{l+1} = sum_i softmax_i(G_i x_l) * [x0 * (U_li g(C_li g(V_li^T x_l)) + b_l)] + x_l

    U_li, V_li (N, r), C_li (r, r), gates G_i: Linear(N -> 1, no bias). As in the DeepCTR-Torch,
    FuxiCTR and torchrec implementations, the K gates are shared by all layers and b_l by all
    experts of a layer. With K = 1 the gate is constant 1 and is not built (torchrec does the
    same), so it holds no parameter that could never receive a gradient.
    x0 (B, N) -> (B, N).

    Args:
        dim: N.
        num_layers: L.
        low_rank: r.
        num_experts: K.
        activation: g, one of "tanh", "relu", "none".

    Example:
        >>> CrossNetMix(6, 2, low_rank=2, num_experts=3)(torch.randn(4, 6)).shape
        torch.Size([4, 6])
    """

    def __init__(self, dim: int, num_layers: int, low_rank: int, num_experts: int,
                 activation: Activation = "tanh") -> None:
        super().__init__()
        shape = (num_layers, num_experts)
        # xavier-normal per matrix, as the reference implementations initialise U, V, C.
        self.U = nn.Parameter(torch.randn(*shape, dim, low_rank) * math.sqrt(2.0 / (dim + low_rank)))
        self.V = nn.Parameter(torch.randn(*shape, dim, low_rank) * math.sqrt(2.0 / (dim + low_rank)))
        self.C = nn.Parameter(torch.randn(*shape, low_rank, low_rank) * math.sqrt(1.0 / low_rank))
        self.bias = nn.Parameter(torch.zeros(num_layers, dim))  # (L, N)
        self.gate = nn.Linear(dim, num_experts, bias=False) if num_experts > 1 else None
        # A module, not a lambda, so that the model stays picklable (Ray ships models to actors).
        self.g = {"tanh": nn.Tanh, "relu": nn.ReLU, "none": nn.Identity}[activation]()

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for U, V, C, b in zip(self.U, self.V, self.C, self.bias):
            h = self.g(torch.einsum("bn,knr->bkr", x, V))  # (B, K, r): V_i^T x_l
            h = self.g(torch.einsum("bkr,ksr->bks", h, C))  # (B, K, r): C_i h
            u = torch.einsum("bks,kns->bkn", h, U)  # (B, K, N): U_i h
            experts = x0.unsqueeze(1) * (u + b)  # (B, K, N)
            if self.gate is None:
                mixed = experts[:, 0]
            else:
                w = torch.softmax(self.gate(x), dim=1)  # (B, K)
                mixed = (experts * w.unsqueeze(-1)).sum(dim=1)  # (B, N)
            x = mixed + x
        return x


class GatedCrossNet(nn.Module):
    """GDCN gated cross network (Wang et al. 2023, "Towards Deeper, Lighter and Interpretable
    Cross Network for CTR Prediction").

    x_{l+1} = x0 * (W_c x_l + b_l) * sigmoid(W_g x_l) + x_l, W_c, W_g (N, N); the gate has no
    bias, as in anonctr/GDCN and FuxiCTR.  x0 (B, N) -> (B, N).

    Example:
        >>> GatedCrossNet(5, 2)(torch.randn(3, 5)).shape
        torch.Size([3, 5])
    """

    def __init__(self, dim: int, num_layers: int) -> None:
        super().__init__()
        self.cross = nn.ModuleList(nn.Linear(dim, dim) for _ in range(num_layers))
        self.gate = nn.ModuleList(nn.Linear(dim, dim, bias=False) for _ in range(num_layers))

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for cross, gate in zip(self.cross, self.gate):
            x = x0 * cross(x) * torch.sigmoid(gate(x)) + x  # (B, N)
        return x


class CrossTowers(nn.Module):
    """A cross network and an MLP combined into one logit (DCN-v2 paper, Fig. 2).

    crossnet_only:     logit = w^T x_L + b
    stacked:           logit = MLP(x_L)
    parallel:          logit = w^T [x_L ; MLP_h(x0)] + b
    stacked_parallel:  logit = w^T [MLP_h(x_L) ; MLP_h'(x0)] + b
    MLP_h is the hidden stack without its own output layer. Both towers of stacked_parallel get
    the same hidden widths (FuxiCTR lets them differ; one `hidden` keeps the Params small).
    x0 (B, N) -> (B,).

    Args:
        cross: any module mapping x0 (B, N) -> x_L (B, N).
        dim: N.
        structure: see above.
        hidden, dropout, batch_norm: the MLP tower(s).

    Example:
        >>> t = CrossTowers(CrossNet(5, 2), 5, "parallel", (8,), 0.0, False)
        >>> t(torch.randn(3, 5)).shape
        torch.Size([3])
    """

    def __init__(self, cross: nn.Module, dim: int, structure: CrossStructure,
                 hidden: tuple[int, ...], dropout: float, batch_norm: bool) -> None:
        super().__init__()
        self.cross = cross
        self.stacked = (MLP(dim, hidden, None, dropout, batch_norm)
                        if structure in ("stacked", "stacked_parallel") else None)
        self.parallel = (MLP(dim, hidden, None, dropout, batch_norm)
                         if structure in ("parallel", "stacked_parallel") else None)
        width = self.stacked.out_dim if self.stacked is not None else dim
        width += self.parallel.out_dim if self.parallel is not None else 0
        self.fc = nn.Linear(width, 1)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        h = self.cross(x0)  # (B, N)
        if self.stacked is not None:
            h = self.stacked(h)  # (B, H)
        if self.parallel is not None:
            h = torch.cat([h, self.parallel(x0)], dim=1)  # (B, N or H, + H)
        return self.fc(h).squeeze(-1)  # (B,)


class CIN(nn.Module):
    """Compressed interaction network of xDeepFM (Lian et al. 2018).

    X^k_{h,:} = sum_{i<H_{k-1}} sum_{j<F} W^k_{h,i,j} (X^{k-1}_{i,:} * X^0_{j,:}) + b^k_h,
    i.e. the field-wise outer product Z^k (B, H_{k-1} * F, D) compressed by a 1x1 convolution;
    p^k = sum over D of X^k. The bias and the identity activation follow FuxiCTR's Conv1d
    (the paper writes no bias; it reports identity as the best activation).
    emb (B, F, D) -> [p^1 ; ... ; p^L] (B, sum_k H_k).

    Example:
        >>> CIN(3, (4, 2))(torch.randn(5, 3, 8)).shape
        torch.Size([5, 6])
    """

    def __init__(self, num_fields: int, layers: tuple[int, ...]) -> None:
        super().__init__()
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        prev = num_fields
        for h in layers:
            bound = 1.0 / math.sqrt(prev * num_fields)  # Conv1d's default init, fan_in = H_{k-1} F
            self.weights.append(nn.Parameter(torch.empty(h, prev, num_fields).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(h).uniform_(-bound, bound)))
            prev = h
        self.out_dim = sum(layers)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        x0, xk = emb, emb
        pooled = []
        for w, b in zip(self.weights, self.biases):
            z = xk.unsqueeze(2) * x0.unsqueeze(1)  # (B, H_{k-1}, F, D)
            xk = torch.einsum("bifd,hif->bhd", z, w) + b.unsqueeze(-1)  # (B, H_k, D)
            pooled.append(xk.sum(dim=-1))  # (B, H_k)
        return torch.cat(pooled, dim=1)  # (B, sum H_k)


class SENet(nn.Module):
    """Squeeze-and-excitation over fields, as used by FiBiNET (Huang et al. 2019).

    z = mean_D(E) (B, F); a = ReLU(W2 ReLU(W1 z)), W1 (F/r, F), W2 (F, F/r), no biases (as in
    FuxiCTR); V = a * E.  emb (B, F, D) -> (B, F, D).

    Example:
        >>> SENet(6, 3)(torch.randn(2, 6, 4)).shape
        torch.Size([2, 6, 4])
    """

    def __init__(self, num_fields: int, reduction_ratio: int) -> None:
        super().__init__()
        reduced = max(1, num_fields // reduction_ratio)
        self.squeeze_to = nn.Linear(num_fields, reduced, bias=False)
        self.excite = nn.Linear(reduced, num_fields, bias=False)

    def field_weights(self, emb: torch.Tensor) -> torch.Tensor:
        """a (B, F): the per-field importance."""
        z = emb.mean(dim=-1)  # (B, F)
        return torch.relu(self.excite(torch.relu(self.squeeze_to(z))))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return emb * self.field_weights(emb).unsqueeze(-1)  # (B, F, D)


class Bilinear(nn.Module):
    """FiBiNET bilinear interaction: p_ij = (e_i W) * e_j for every pair i < j.

    W is shared by all pairs (field_all), chosen by the left field i (field_each; F - 1 matrices,
    since the last field is never on the left) or one per pair (field_interaction).
    emb (B, F, D) -> (B, P, D).

    Example:
        >>> Bilinear(3, 4, "field_each")(torch.randn(2, 3, 4)).shape
        torch.Size([2, 3, 4])
    """

    def __init__(self, num_fields: int, dim: int, kind: BilinearType) -> None:
        super().__init__()
        rows, cols = pair_indices(num_fields)
        which = {"field_all": torch.zeros_like(rows), "field_each": rows,
                 "field_interaction": torch.arange(rows.numel())}[kind]
        count = int(which.max()) + 1
        w = torch.empty(count, dim, dim)
        for m in w:
            nn.init.xavier_normal_(m)
        self.weight = nn.Parameter(w)  # (count, D, D)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.register_buffer("which", which, persistent=False)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        left = torch.einsum("bpd,pde->bpe", emb[:, self.rows], self.weight[self.which])  # (B, P, D)
        return left * emb[:, self.cols]  # (B, P, D)
