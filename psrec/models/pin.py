"""Polynomial Interaction Network (PIN) blocks shared by xDeepInt and DynInt.

Yan & Li, "xDeepInt: a hybrid architecture for modeling the vector-wise and bit-wise feature
interactions" (DLP-KDD 2020); author code yanyachen/xDeepInt (TF1). This module registers no
model: it holds the sub-space split, one static PIN layer and the field-wise linear read-out.

Notation: m fields, d embedding width, h sub-spaces, k = d / h, n = m * h.
"""
from __future__ import annotations

import torch
from torch import nn

__all__ = ["subspace_split", "subspace_merge", "PINLayer", "FieldLinearOutput"]


def subspace_split(emb: torch.Tensor, num_subspaces: int) -> torch.Tensor:
    """Sub-space crossing: cut every field vector into h chunks, stack the chunks as extra fields.

    emb (B, m, d) -> (B, h*m, d/h). Chunk s of field f lands on row s*m + f (sub-space major,
    the order of the reference's split-then-concat), so each row of the PIN weight mixes fields
    *and* sub-spaces, while positions inside a chunk are never mixed.

    Example:
        >>> subspace_split(torch.arange(8.).reshape(1, 2, 4), 2)[0].tolist()
        [[0.0, 1.0], [4.0, 5.0], [2.0, 3.0], [6.0, 7.0]]
    """
    b, m, d = emb.shape
    if d % num_subspaces:
        raise ValueError(f"embedding width {d} is not divisible by {num_subspaces} sub-spaces")
    k = d // num_subspaces
    # (B, m, h, k) -> (B, h, m, k) -> (B, h*m, k)
    return emb.reshape(b, m, num_subspaces, k).transpose(1, 2).reshape(b, num_subspaces * m, k)


def subspace_merge(x: torch.Tensor, num_subspaces: int) -> torch.Tensor:
    """Inverse of `subspace_split`: (B, h*m, k) -> (B, m, h*k)."""
    b, n, k = x.shape
    m = n // num_subspaces
    return x.reshape(b, num_subspaces, m, k).transpose(1, 2).reshape(b, m, num_subspaces * k)


class PINLayer(nn.Module):
    """One residual polynomial interaction layer: X_l = X_{l-1} * (W X_0) + X_{l-1}.

    W (n, n) mixes the n = m*h (sub-)fields and is shared over the k positions of a chunk
    (the reference's "vector dense" layer: a bias-free Dense over the field axis). Each layer
    raises the highest interaction order by one, so L layers reach order L+1.

    Args:
        num_rows: n, rows of X_0.

    Shapes: x_prev, x0 (B, n, k) -> (B, n, k).
    """

    def __init__(self, num_rows: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_rows, num_rows))  # (n_out, n_in)
        nn.init.xavier_uniform_(self.weight)  # the reference's glorot_uniform

    def forward(self, x_prev: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        mixed = torch.einsum("ij,bjk->bik", self.weight, x0)  # (B, n, k)
        return x_prev * mixed + x_prev


class FieldLinearOutput(nn.Module):
    """logit = sum_f w_f * sum_k X[f, k] + b + w_d^T dense.

    The reference reads the merged (B, m, d) map out with one weight per field shared over the d
    positions plus a bias added at each position; a bias counted d times is a single scalar, so
    one scalar bias is used here. Dense features, which the reference bins into categorical
    fields instead, enter as a linear term.

    Shapes: x (B, m, d), dense (B, num_dense) -> (B,).
    """

    def __init__(self, num_fields: int, num_dense: int) -> None:
        super().__init__()
        self.field_weight = nn.Parameter(torch.empty(num_fields))
        limit = (6.0 / (num_fields + 1)) ** 0.5  # glorot_uniform of the reference's (m, 1) kernel
        nn.init.uniform_(self.field_weight, -limit, limit)
        self.bias = nn.Parameter(torch.zeros(()))
        self.dense = nn.Linear(num_dense, 1, bias=False) if num_dense else None

    def forward(self, x: torch.Tensor, dense: torch.Tensor) -> torch.Tensor:
        out = torch.einsum("bfd,f->b", x, self.field_weight) + self.bias
        if self.dense is not None:
            out = out + self.dense(dense).squeeze(-1)
        return out
