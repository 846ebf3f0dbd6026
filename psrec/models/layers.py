"""Building blocks shared by several models."""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLP", "Linear1", "fm_second_order"]


class MLP(nn.Module):
    """Linear -> [BatchNorm] -> ReLU -> [Dropout] stacks.

    Args:
        in_dim: input width.
        hidden: hidden widths, e.g. (400, 400, 400).
        out_dim: width of a final Linear without activation; None ends on the last hidden layer.
        dropout: dropout probability after each hidden activation.
        batch_norm: BatchNorm1d after each hidden Linear.

    Example:
        >>> MLP(8, (16, 4), out_dim=1)(torch.zeros(3, 8)).shape
        torch.Size([3, 1])
    """

    def __init__(self, in_dim: int, hidden: tuple[int, ...], out_dim: int | None = None,
                 dropout: float = 0.0, batch_norm: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for h in hidden:
            layers.append(nn.Linear(d, h))
            if batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            d = h
        if out_dim is not None:
            layers.append(nn.Linear(d, out_dim))
            d = out_dim
        self.out_dim = d
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class Linear1(nn.Module):
    """First-order term: sum of per-field weights (from the embedding layer) + w^T dense + bias.

    linear: (B, F), dense: (B, num_dense) -> (B,)
    """

    def __init__(self, num_dense: int) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(()))
        self.dense = nn.Linear(num_dense, 1, bias=False) if num_dense else None

    def forward(self, linear: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        out = linear.sum(dim=1) + self.bias
        if self.dense is not None:
            out = out + self.dense(dense).squeeze(-1)
        return out


def fm_second_order(emb: torch.Tensor) -> torch.Tensor:
    """Pairwise FM term in O(F D): 1/2 sum_k [(sum_f e_fk)^2 - sum_f e_fk^2].

    emb: (B, F, D) -> (B,). Equals sum_{i<j} <e_i, e_j> (tested against the double sum).
    """
    square_of_sum = emb.sum(dim=1).pow(2)  # (B, D)
    sum_of_square = emb.pow(2).sum(dim=1)  # (B, D)
    return 0.5 * (square_of_sum - sum_of_square).sum(dim=1)
